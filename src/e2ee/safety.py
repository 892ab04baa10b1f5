"""Safety numbers: a 60-digit number two users compare to verify each other's identity keys.

Pure functions, no state. The algorithm (spec/client.md, "Safety numbers"), per side::

    h = SHA-512(LABEL || u16be(VERSION) || identity_key || stable_id)
    repeat ITERATIONS times:  h = SHA-512(h || identity_key)
    fingerprint = h[:30]
    digits = for each of the six 5-byte chunks c of fingerprint: "%05d" % (u40be(c) % 100000)

The two 30-digit halves are sorted (as strings) and concatenated, so both sides compute the
same 60 digits. The scannable payload (for a QR code) is canonical CBOR
``{0: VERSION, 1: local fingerprint, 2: remote fingerprint}`` with 32-byte fingerprints (the
first 32 bytes of the same hash); a scanned payload matches when its local half is our remote
half and vice versa.

As in libsignal, the iteration count makes grinding a key whose number collides with a given
one more expensive; ``identity_key`` is the *user* identity key (one number per contact, not
per device) and ``stable_id`` the user id.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from e2ee.crypto.primitives import constant_time_equal
from e2ee.errors import DecodeError
from e2ee.limits import ED25519_KEY_SIZE
from e2ee.wire import codec

SAFETY_NUMBER_VERSION = 1
ITERATIONS = 5_200
LABEL = b"e2ee/v1/safety-number\x00"
DISPLAY_FINGERPRINT_SIZE = 30
SCAN_FINGERPRINT_SIZE = 32
MAX_SCAN_PAYLOAD_SIZE = 128


def _fingerprint(identity_key: bytes, stable_id: bytes) -> bytes:
    if not isinstance(identity_key, bytes) or len(identity_key) != ED25519_KEY_SIZE:
        raise TypeError("identity_key must be 32 bytes")
    if not isinstance(stable_id, bytes):
        raise TypeError("stable_id must be bytes")
    digest = hashlib.sha512(
        LABEL + SAFETY_NUMBER_VERSION.to_bytes(2, "big") + identity_key + stable_id
    ).digest()
    for _ in range(ITERATIONS):
        digest = hashlib.sha512(digest + identity_key).digest()
    return digest


def _digits(fingerprint: bytes) -> str:
    chunks = (fingerprint[i : i + 5] for i in range(0, DISPLAY_FINGERPRINT_SIZE, 5))
    return "".join(f"{int.from_bytes(c, 'big') % 100_000:05d}" for c in chunks)


@dataclass(frozen=True, slots=True)
class SafetyNumber:
    """The number both users see, and the payload one of them scans from the other's screen."""

    digits: str
    """60 decimal digits (two sorted 30-digit halves)."""
    scannable: bytes
    """Canonical CBOR ``{0: version, 1: local fingerprint, 2: remote fingerprint}``."""

    @property
    def groups(self) -> list[str]:
        """The twelve 5-digit groups, as they are shown."""
        return [self.digits[i : i + 5] for i in range(0, 60, 5)]

    def __str__(self) -> str:
        return " ".join(self.groups)

    def matches_scanned(self, payload: bytes) -> bool:
        """True if ``payload`` (scanned from the peer's screen) names the same two keys.

        Raises :class:`e2ee.errors.DecodeError` if the payload is malformed or of another
        version (the caller shows "cannot compare" rather than "mismatch")."""
        value = codec.decode(payload, max_size=MAX_SCAN_PAYLOAD_SIZE)
        if (
            not isinstance(value, dict)
            or set(value) != {0, 1, 2}
            or not codec.is_int(value[0], SAFETY_NUMBER_VERSION)
            or not all(
                isinstance(value[i], bytes) and len(value[i]) == SCAN_FINGERPRINT_SIZE
                for i in (1, 2)
            )
        ):
            raise DecodeError("not a safety-number payload of this version")
        ours = codec.decode(self.scannable, max_size=MAX_SCAN_PAYLOAD_SIZE)
        # Their local side is our remote side and vice versa; compare both without early exit.
        a = constant_time_equal(value[1], ours[2])
        b = constant_time_equal(value[2], ours[1])
        return a and b


def safety_number(
    local_identity_key: bytes,
    local_id: str,
    remote_identity_key: bytes,
    remote_id: str,
) -> SafetyNumber:
    """The safety number of two users (their user identity keys and stable user ids).

    Both users get the same ``digits``; each gets a ``scannable`` payload from their side.
    """
    local = _fingerprint(local_identity_key, local_id.encode())
    remote = _fingerprint(remote_identity_key, remote_id.encode())
    halves = sorted((_digits(local), _digits(remote)))
    payload = codec.encode(
        {
            0: SAFETY_NUMBER_VERSION,
            1: local[:SCAN_FINGERPRINT_SIZE],
            2: remote[:SCAN_FINGERPRINT_SIZE],
        }
    )
    return SafetyNumber(digits=halves[0] + halves[1], scannable=payload)
