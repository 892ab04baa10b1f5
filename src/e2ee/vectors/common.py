"""What the generator and the verifier share: the file envelope, hex, JSON output, error
categories, snapshots of a session's internal ratchet state and the handshake capture.

Nothing here computes an expected value: the generator computes them (from
:mod:`e2ee.vectors.reference` or by running the library), the verifier recomputes them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from e2ee.errors import E2EEError
from e2ee.handshake import pqxdh
from e2ee.limits import PROTOCOL_VERSION
from e2ee.ratchet.double_ratchet import RatchetState
from e2ee.session import Session

JSON = dict[str, Any]

SCHEMA_VERSION = 1
"""Version of the vector file formats (the JSON Schemas under test_vectors/schemas/)."""
SPEC_VERSION = PROTOCOL_VERSION
NOW = 1_800_000_000
"""The fixed clock of every vector (2027-01-15T08:00:00Z)."""
MANIFEST_NAME = "MANIFEST.json"
SCHEMA_DIR = "schemas"
ENV_DIR = "E2EE_VECTORS_DIR"


def hx(data: bytes) -> str:
    return data.hex()


def unhex(text: str) -> bytes:
    return bytes.fromhex(text)


def dump_json(value: Any) -> bytes:
    """The one serialisation of every file: sorted keys, one-space indent, final newline."""
    return (json.dumps(value, indent=1, sort_keys=True) + "\n").encode("ascii")


def category(exc: BaseException) -> str:
    """The e2ee error category of an exception (``"unexpected:<Type>"`` for anything else)."""
    if isinstance(exc, E2EEError):
        return exc.category
    return f"unexpected:{type(exc).__name__}"


def default_dir() -> Path:
    """The bundled vectors: ``$E2EE_VECTORS_DIR``, then a copy inside the installed package
    (``e2ee/vectors/test_vectors``), then ``test_vectors/`` of the source checkout."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    packaged = here / "test_vectors"
    if (packaged / MANIFEST_NAME).exists():
        return packaged
    return here.parent.parent.parent / "test_vectors"


def envelope(
    *,
    schema: str,
    algorithm: str,
    header: list[str],
    notes: dict[str, JSON],
    groups: list[JSON],
) -> JSON:
    """Number the tests 1..N, check flags against notes, and wrap them Wycheproof-style."""
    tc_id = 0
    used: set[str] = set()
    for group in groups:
        for test in group["tests"]:
            tc_id += 1
            test["tcId"] = tc_id
            used.update(test["flags"])
            if test["result"] == "invalid" and "error" not in test:
                raise ValueError(f"{schema}: invalid test {tc_id} names no error")
    missing = used - set(notes)
    if missing:
        raise ValueError(f"{schema}: flags without notes: {sorted(missing)}")
    return {
        "algorithm": algorithm,
        "header": header,
        "notes": {name: notes[name] for name in sorted(used)},
        "numberOfTests": tc_id,
        "schema": schema,
        "schemaVersion": SCHEMA_VERSION,
        "specVersion": SPEC_VERSION,
        "testGroups": groups,
    }


def note(bug_type: str, description: str) -> JSON:
    return {"bugType": bug_type, "description": description}


# --- introspection of a session (read-only) -----------------------------------------------


def _opt(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


def ratchet_snapshot(session: Session) -> JSON:
    """The Double Ratchet state of a session after a step, for debugging and comparison.

    Keys are the state variables of the Signal Double Ratchet specification (RK, CKs, CKr,
    DHs = our current ratchet public key, DHr, Ns, Nr, PN, HKs, HKr, NHKs, NHKr), plus
    ``awaitingReply`` (the initiator still sends the initial form), ``skippedCount`` and
    ``skipped``: the stored skipped message keys (chain reference = the peer's ratchet key, or
    the chain's header key with header encryption), listed only when there are few.
    """
    r: RatchetState = session._ratchet
    skipped = [
        {"chain": reference.hex(), "n": number, "mk": key.hex()}
        for reference, keys in r.skipped._chains.items()
        for number, key in keys.items()
    ]
    return {
        "RK": r.root_key.hex(),
        "CKs": _opt(r.cks),
        "CKr": _opt(r.ckr),
        "DHs": r.dhs_public.hex(),
        "DHr": _opt(r.dhr),
        "Ns": r.ns,
        "Nr": r.nr,
        "PN": r.pn,
        "HKs": _opt(r.hks),
        "HKr": _opt(r.hkr),
        "NHKs": _opt(r.nhks),
        "NHKr": _opt(r.nhkr),
        "awaitingReply": session.awaiting_reply,
        "skippedCount": len(r.skipped),
        "skipped": skipped if len(skipped) <= SKIPPED_KEYS_LISTED else None,
    }


SKIPPED_KEYS_LISTED = 24
"""Snapshots list the skipped keys themselves only up to this many (else null)."""


def sending_message_key(session: Session) -> bytes | None:
    """The message key the next ``encrypt`` will use (None when the session cannot send)."""
    from e2ee.ratchet import chains

    cks = session._ratchet.cks
    return None if cks is None else chains.message_key(cks)


@contextmanager
def capture_handshake() -> Iterator[list[JSON]]:
    """Record every call of :func:`e2ee.handshake.pqxdh.derive` (inputs and outputs).

    The account calls ``pqxdh.derive`` through the module attribute, so swapping it for a
    recording wrapper for the duration of one step observes the key agreement without
    changing it.
    """
    original = pqxdh.derive
    calls: list[JSON] = []

    def recording(
        transcript: pqxdh.Transcript, dh_outputs: list[bytes], kem_secret: bytes | None
    ) -> pqxdh.HandshakeSecrets:
        secrets = original(transcript, dh_outputs, kem_secret)
        calls.append(
            {
                "dhOutputs": [d.hex() for d in dh_outputs],
                "kemSharedSecret": _opt(kem_secret),
                "transcriptHash": transcript.digest().hex(),
                "rootKey": secrets.root_key.hex(),
                "headerKey": secrets.header_key.hex(),
                "nextHeaderKey": secrets.next_header_key.hex(),
                "sessionId": secrets.session_id.hex(),
                "associatedData": secrets.associated_data.hex(),
            }
        )
        return secrets

    pqxdh.derive = recording
    try:
        yield calls
    finally:
        pqxdh.derive = original


# Vector field names of a decoded prekey bundle -> PreKeyBundle attributes (wire_bundle.json).
BUNDLE_FIELD_ATTRIBUTES = {
    "identityKey": "identity_key",
    "signedPrekeyId": "signed_prekey_id",
    "signedPrekey": "signed_prekey",
    "signedPrekeyTimestamp": "signed_prekey_timestamp",
    "signedPrekeySignature": "signed_prekey_signature",
    "kemPrekeyId": "kem_prekey_id",
    "kemPrekey": "kem_prekey",
    "oneTimePrekeyId": "one_time_prekey_id",
    "oneTimePrekey": "one_time_prekey",
    "oneTimePrekeySignature": "one_time_prekey_signature",
    "oneTimeKemPrekeyId": "one_time_kem_prekey_id",
    "oneTimeKemPrekey": "one_time_kem_prekey",
    "oneTimeKemPrekeySignature": "one_time_kem_prekey_signature",
}
