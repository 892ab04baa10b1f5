"""What identity keys sign: every payload starts with a purpose label from limits.py.

Payloads are fixed-width concatenations (ids as big-endian u32, times as u64, keys with their
one-byte type prefix), so two different payloads never encode to the same bytes.
"""

from __future__ import annotations

import struct

from e2ee.crypto import primitives
from e2ee.limits import (
    KEY_TYPE_MLKEM1024,
    KEY_TYPE_X25519,
    SIG_LABEL_ONE_TIME_KEM_PREKEY,
    SIG_LABEL_ONE_TIME_PREKEY,
    SIG_LABEL_RELAY_LOGIN,
    SIG_LABEL_SIGNED_PREKEY,
)

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def signed_prekey_payload(
    prekey_id: int,
    timestamp: int,
    public_key: bytes,
    kem_prekey_id: int | None,
    kem_public_key: bytes | None,
) -> bytes:
    """The signed prekey, its creation time and its last-resort ML-KEM companion (if any)."""
    payload = (
        SIG_LABEL_SIGNED_PREKEY
        + _U32.pack(prekey_id)
        + _U64.pack(timestamp)
        + KEY_TYPE_X25519
        + public_key
    )
    if kem_prekey_id is not None and kem_public_key is not None:
        payload += _U32.pack(kem_prekey_id) + KEY_TYPE_MLKEM1024 + kem_public_key
    return payload


def one_time_prekey_payload(prekey_id: int, public_key: bytes) -> bytes:
    return SIG_LABEL_ONE_TIME_PREKEY + _U32.pack(prekey_id) + KEY_TYPE_X25519 + public_key


def one_time_kem_prekey_payload(prekey_id: int, public_key: bytes) -> bytes:
    return SIG_LABEL_ONE_TIME_KEM_PREKEY + _U32.pack(prekey_id) + KEY_TYPE_MLKEM1024 + public_key


def relay_login_payload(challenge: bytes) -> bytes:
    """A relay's login challenge (spec/relay.md, "Authentication"): whatever bytes the relay
    chose, the label keeps the signature from being valid for any other purpose."""
    return SIG_LABEL_RELAY_LOGIN + challenge


def sign(identity_seed: bytes, payload: bytes) -> bytes:
    return primitives.ed25519_sign(identity_seed, payload)


def verify(identity_key: bytes, payload: bytes, signature: bytes) -> None:
    """Raises :class:`e2ee.errors.SignatureError`."""
    primitives.ed25519_verify(identity_key, payload, signature)
