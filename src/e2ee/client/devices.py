"""Device lists in the store, and linking a new device with a short code.

Accepting a signed device list (from a directory or attached to an initial message):

1. it must parse and verify under the user key it names (:class:`e2ee.identity.SignedDeviceList`)
   and name the expected user;
2. that user key goes through the trust policy (:mod:`e2ee.client.trust`);
3. its counter must be above the stored list's (equal: byte-identical or refused; lower:
   refused as a replay);
4. sessions with devices that left the list, or whose key changed, are deleted; events
   ``device_list_changed`` (and ``peer_reinstalled`` for a device id whose key changed).

Only devices of the newest accepted list are ever encrypted to or accepted from.

Linking (spec/client.md, "Linking"): the new device draws a 50-bit secret and shows it as a
10-character code; it sends a *link request* (its device identity key, a 16-byte nonce, and a
32-byte MAC under a key derived from the code). The user types the code on a device holding
the user key, which checks the MAC (so a request swapped in transit is refused), adds the
device to a new signed list and returns a *link approval* MACed under the same key (so the new
device knows the list came from a device that saw its code, and trusts the user key in it).
"""

from __future__ import annotations

import functools
import sqlite3
from dataclasses import dataclass

from e2ee.client import trust
from e2ee.client.events import Event
from e2ee.client.store import column
from e2ee.crypto import primitives
from e2ee.errors import DecodeError, DeviceListError, LinkError
from e2ee.identity import (
    MAX_DEVICE_ID,
    MAX_SIGNED_DEVICE_LIST_SIZE,
    MAX_USER_ID_SIZE,
    DeviceList,
    SignedDeviceList,
)
from e2ee.limits import ED25519_KEY_SIZE, TYPE_LINK_APPROVAL, TYPE_LINK_REQUEST
from e2ee.wire import codec

LINK_VERSION = 1
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32
CODE_LENGTH = 10
LINK_NONCE_SIZE = 16
LINK_TAG_SIZE = 32  # HMAC-SHA-256
_LINK_LABEL = b"e2ee/v1/link"
_MAX_LINK_SIZE = 16 * 1024


def stored_list(conn: sqlite3.Connection, user_id: str) -> DeviceList | None:
    row = conn.execute("SELECT signed FROM device_lists WHERE user_id = ?", (user_id,)).fetchone()
    return None if row is None else _parsed(column(row[0], bytes, "device list"))


@functools.lru_cache(maxsize=256)
def _parsed(data: bytes) -> DeviceList:
    """Verified parse, memoised by the exact bytes (a content-addressed cache: the same bytes
    always verify the same way), so the hot path does not re-verify a signature per message."""
    return SignedDeviceList.from_bytes(data).device_list


def accept(
    conn: sqlite3.Connection,
    data: bytes,
    expected_user: str,
    policy: trust.TrustPolicy,
    *,
    ignore_older: bool = False,
) -> tuple[DeviceList, list[Event]]:
    """Verify, apply trust, check the counter and store (inside a transaction).

    With ``ignore_older`` (a list attached to an initial message, which may have been sent
    before a newer list was accepted) an older list is ignored instead of refused."""
    signed = SignedDeviceList.from_bytes(data)
    new = signed.device_list
    if new.user_id != expected_user:
        raise DeviceListError("device list is for another user")
    events = trust.check(conn, new.user_id, new.user_key, policy)
    row = conn.execute(
        "SELECT counter, signed FROM device_lists WHERE user_id = ?", (new.user_id,)
    ).fetchone()
    old: DeviceList | None = None
    if row is not None:
        counter = column(row[0], int, "device list counter")
        stored = column(row[1], bytes, "device list")
        if new.counter < counter:
            if ignore_older:
                return _parsed(stored), events
            raise DeviceListError("device list is older than the one already accepted")
        if new.counter == counter:
            if stored != data:
                raise DeviceListError("two different device lists with the same counter")
            return new, events
        old = _parsed(stored)
    conn.execute(
        "INSERT OR REPLACE INTO device_lists (user_id, counter, signed) VALUES (?, ?, ?)",
        (new.user_id, new.counter, data),
    )
    old_devices = dict(old.devices) if old is not None else {}
    new_devices = dict(new.devices)
    # Sessions with devices not in the new list, or under another key, are never used again.
    for device_value, key_value in conn.execute(
        "SELECT DISTINCT peer_device, peer_key FROM sessions WHERE peer_user = ?", (new.user_id,)
    ).fetchall():
        peer_device = column(device_value, int, "session peer device")
        peer_key = column(key_value, bytes, "session peer key")
        if new_devices.get(peer_device) != peer_key:
            conn.execute(
                "DELETE FROM sessions WHERE peer_user = ? AND peer_device = ? AND peer_key = ?",
                (new.user_id, peer_device, peer_key),
            )
    added = sorted(set(new_devices) - set(old_devices))
    removed = sorted(set(old_devices) - set(new_devices))
    changed = sorted(d for d in new_devices if old_devices.get(d, new_devices[d]) != new_devices[d])
    for device_id in changed:
        events.append(Event("peer_reinstalled", new.user_id, device_id, "device key changed"))
    if old is not None and (added or removed or changed):
        events.append(
            Event(
                "device_list_changed",
                new.user_id,
                detail=f"counter {new.counter}; added {added}; removed {removed}",
            )
        )
    return new, events


# --- linking -----------------------------------------------------------------------------


def new_code(random: bytes) -> str:
    """A 10-character code from 7 random bytes (the top 50 bits are used)."""
    value = int.from_bytes(random[:7], "big") >> 6
    chars = [CODE_ALPHABET[(value >> (5 * i)) & 31] for i in reversed(range(CODE_LENGTH))]
    return "".join(chars[:5]) + "-" + "".join(chars[5:])


def normalize_code(code: str) -> bytes:
    cleaned = code.upper().replace("-", "").replace(" ", "")
    cleaned = cleaned.replace("O", "0").replace("I", "1").replace("L", "1")
    return cleaned.encode()


def _link_key(code: str, nonce: bytes) -> bytes:
    return primitives.hkdf_sha256(nonce, normalize_code(code), _LINK_LABEL, 32)


@dataclass(frozen=True, slots=True)
class LinkRequest:
    user_id: str
    device_key: bytes
    nonce: bytes
    tag: bytes

    def to_bytes(self) -> bytes:
        return codec.encode(
            {
                0: LINK_VERSION,
                1: TYPE_LINK_REQUEST,
                2: self.user_id.encode(),
                3: self.device_key,
                4: self.nonce,
                5: self.tag,
            }
        )

    @staticmethod
    def _body(user_id: str, device_key: bytes, nonce: bytes) -> bytes:
        return codec.encode([b"request", user_id.encode(), device_key, nonce])

    @classmethod
    def make(cls, user_id: str, device_key: bytes, nonce: bytes, code: str) -> LinkRequest:
        tag = primitives.hmac_sha256(_link_key(code, nonce), cls._body(user_id, device_key, nonce))
        return cls(user_id, device_key, nonce, tag)

    @classmethod
    def from_bytes(cls, data: bytes) -> LinkRequest:
        try:
            v = codec.decode(data, max_size=_MAX_LINK_SIZE)
        except DecodeError:
            raise LinkError("malformed link request") from None
        if (
            not isinstance(v, dict)
            or set(v) != set(range(6))
            or not codec.is_int(v[0], LINK_VERSION)
            or not codec.is_int(v[1], TYPE_LINK_REQUEST)
        ):
            raise LinkError("not a link request of this version")
        if (
            not all(type(v[i]) is bytes for i in (2, 3, 4, 5))
            or not 0 < len(v[2]) <= MAX_USER_ID_SIZE
            or len(v[3]) != ED25519_KEY_SIZE
            or len(v[4]) != LINK_NONCE_SIZE
            or len(v[5]) != LINK_TAG_SIZE
        ):
            raise LinkError("malformed link request")
        try:
            user_id = v[2].decode()
        except UnicodeDecodeError:
            raise LinkError("malformed link request") from None
        return cls(user_id, v[3], v[4], v[5])

    def check(self, code: str) -> None:
        expected = primitives.hmac_sha256(
            _link_key(code, self.nonce), self._body(self.user_id, self.device_key, self.nonce)
        )
        if not primitives.constant_time_equal(expected, self.tag):
            raise LinkError("the code does not match this link request")


@dataclass(frozen=True, slots=True)
class LinkApproval:
    device_id: int
    signed_device_list: bytes
    tag: bytes

    @staticmethod
    def _body(request: LinkRequest, device_id: int, signed_device_list: bytes) -> bytes:
        return codec.encode([b"approval", request.to_bytes(), device_id, signed_device_list])

    @classmethod
    def make(
        cls, request: LinkRequest, code: str, device_id: int, signed_device_list: bytes
    ) -> LinkApproval:
        tag = primitives.hmac_sha256(
            _link_key(code, request.nonce), cls._body(request, device_id, signed_device_list)
        )
        return cls(device_id, signed_device_list, tag)

    def to_bytes(self) -> bytes:
        return codec.encode(
            {
                0: LINK_VERSION,
                1: TYPE_LINK_APPROVAL,
                2: self.device_id,
                3: self.signed_device_list,
                4: self.tag,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> LinkApproval:
        try:
            v = codec.decode(data, max_size=_MAX_LINK_SIZE)
        except DecodeError:
            raise LinkError("malformed link approval") from None
        if (
            not isinstance(v, dict)
            or set(v) != set(range(5))
            or not codec.is_int(v[0], LINK_VERSION)
            or not codec.is_int(v[1], TYPE_LINK_APPROVAL)
            or type(v[2]) is not int
            or type(v[3]) is not bytes
            or type(v[4]) is not bytes
        ):
            raise LinkError("not a link approval of this version")
        if (
            not 0 <= v[2] <= MAX_DEVICE_ID
            or not 0 < len(v[3]) <= MAX_SIGNED_DEVICE_LIST_SIZE
            or len(v[4]) != LINK_TAG_SIZE
        ):
            raise LinkError("malformed link approval")
        return cls(v[2], v[3], v[4])

    def check(self, request: LinkRequest, code: str) -> None:
        expected = primitives.hmac_sha256(
            _link_key(code, request.nonce),
            self._body(request, self.device_id, self.signed_device_list),
        )
        if not primitives.constant_time_equal(expected, self.tag):
            raise LinkError("the link approval does not match this device's code")
