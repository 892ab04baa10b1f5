"""The ratchet's key derivation functions and message encryption (spec sections 5.2, 4)."""

from __future__ import annotations

from e2ee.crypto import primitives
from e2ee.errors import AuthenticationError
from e2ee.limits import (
    HKDF_ZERO_SALT,
    KDF_CK_CHAIN_KEY_BYTE,
    KDF_CK_MESSAGE_KEY_BYTE,
    KDF_INFO_MESSAGE_KEYS,
    KDF_INFO_ROOT,
    KDF_INFO_ROOT_HE,
    MESSAGE_TAG_SIZE,
)

_hmac = primitives.hmac_sha256
_MK = KDF_CK_MESSAGE_KEY_BYTE
_CK = KDF_CK_CHAIN_KEY_BYTE


def kdf_rk(root_key: bytes, dh_output: bytes) -> tuple[bytes, bytes]:
    """KDF_RK: (new root key, new chain key) = HKDF(salt=root_key, ikm=dh_output)."""
    out = primitives.hkdf_sha256(root_key, dh_output, KDF_INFO_ROOT, 64)
    return out[:32], out[32:]


def kdf_rk_he(root_key: bytes, dh_output: bytes) -> tuple[bytes, bytes, bytes]:
    """KDF_RK_HE: (new root key, new chain key, next header key)."""
    out = primitives.hkdf_sha256(root_key, dh_output, KDF_INFO_ROOT_HE, 96)
    return out[:32], out[32:64], out[64:]


def kdf_ck(chain_key: bytes) -> tuple[bytes, bytes]:
    """KDF_CK: (next chain key, message key) = HMAC(ck, 0x02), HMAC(ck, 0x01)."""
    return _hmac(chain_key, _CK), _hmac(chain_key, _MK)


def next_chain_key(chain_key: bytes) -> bytes:
    return _hmac(chain_key, _CK)


def message_key(chain_key: bytes) -> bytes:
    return _hmac(chain_key, _MK)


def _expand(message_key: bytes) -> tuple[bytes, bytes, bytes]:
    out = primitives.hkdf_sha256(HKDF_ZERO_SALT, message_key, KDF_INFO_MESSAGE_KEYS, 80)
    return out[:32], out[32:64], out[64:]


def encrypt(message_key: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """ENCRYPT (section 5.2): AES-256-CBC, then a truncated HMAC over ad || ciphertext."""
    enc_key, auth_key, iv = _expand(message_key)
    ciphertext = primitives.aes256_cbc_encrypt(enc_key, iv, plaintext)
    tag = _hmac(auth_key, associated_data + ciphertext)[:MESSAGE_TAG_SIZE]
    return ciphertext + tag


def decrypt(message_key: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
    """DECRYPT: verify the tag in constant time first, only then decrypt."""
    enc_key, auth_key, iv = _expand(message_key)
    body, tag = ciphertext[:-MESSAGE_TAG_SIZE], ciphertext[-MESSAGE_TAG_SIZE:]
    expected = _hmac(auth_key, associated_data + body)[:MESSAGE_TAG_SIZE]
    if not primitives.constant_time_equal(expected, tag):
        raise AuthenticationError("message authentication failed")
    return primitives.aes256_cbc_decrypt(enc_key, iv, body)
