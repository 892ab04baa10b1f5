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

_digest = primitives.hmac_digest
_hkdf = primitives.hkdf_sha256
_equal = primitives.constant_time_equal
_cbc_encrypt = primitives.aes256_cbc_encrypt
_cbc_decrypt = primitives.aes256_cbc_decrypt
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
    return _digest(chain_key, _CK, "sha256"), _digest(chain_key, _MK, "sha256")


def next_chain_key(chain_key: bytes) -> bytes:
    return _digest(chain_key, _CK, "sha256")


def message_key(chain_key: bytes) -> bytes:
    return _digest(chain_key, _MK, "sha256")


def _expand(message_key: bytes) -> tuple[bytes, bytes, bytes]:
    out = _hkdf(HKDF_ZERO_SALT, message_key, KDF_INFO_MESSAGE_KEYS, 80)
    return out[:32], out[32:64], out[64:]


def seal(chain_key: bytes, plaintext: bytes, associated_data: bytes) -> tuple[bytes, bytes]:
    """KDF_CK then ENCRYPT (section 5.2): (next chain key, ciphertext || tag).

    AES-256-CBC under the expanded message key, then HMAC-SHA-256 over ad || ciphertext,
    truncated to 16 bytes. One function for the hot path: fewer Python frames per message.
    """
    okm = _hkdf(HKDF_ZERO_SALT, _digest(chain_key, _MK, "sha256"), KDF_INFO_MESSAGE_KEYS, 80)
    ciphertext = _cbc_encrypt(okm[:32], okm[64:], plaintext)
    tag = _digest(okm[32:64], associated_data + ciphertext, "sha256")[:MESSAGE_TAG_SIZE]
    return _digest(chain_key, _CK, "sha256"), ciphertext + tag


def open_(chain_key: bytes, ciphertext: bytes, associated_data: bytes) -> tuple[bytes, bytes]:
    """KDF_CK then DECRYPT: (next chain key, plaintext). The tag is verified, in constant
    time, before anything is decrypted; nothing is returned unless it verifies."""
    plaintext = decrypt(_digest(chain_key, _MK, "sha256"), ciphertext, associated_data)
    return _digest(chain_key, _CK, "sha256"), plaintext


def encrypt(message_key: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """ENCRYPT (section 5.2) with an explicit message key."""
    okm = _hkdf(HKDF_ZERO_SALT, message_key, KDF_INFO_MESSAGE_KEYS, 80)
    ciphertext = _cbc_encrypt(okm[:32], okm[64:], plaintext)
    return (
        ciphertext + _digest(okm[32:64], associated_data + ciphertext, "sha256")[:MESSAGE_TAG_SIZE]
    )


def decrypt(message_key: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
    """DECRYPT: verify the tag in constant time first, only then decrypt."""
    okm = _hkdf(HKDF_ZERO_SALT, message_key, KDF_INFO_MESSAGE_KEYS, 80)
    body = ciphertext[:-MESSAGE_TAG_SIZE]
    expected = _digest(okm[32:64], associated_data + body, "sha256")[:MESSAGE_TAG_SIZE]
    if not _equal(expected, ciphertext[-MESSAGE_TAG_SIZE:]):
        raise AuthenticationError("message authentication failed")
    return _cbc_decrypt(okm[:32], okm[64:], body)
