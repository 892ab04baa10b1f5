"""The cryptographic primitives e2ee uses, as plain functions over ``bytes``.

This is the only module that imports ``cryptography`` and ``nacl``. Every exception those
libraries raise on untrusted input is translated here into an :mod:`e2ee.errors` type.

Key-validation rules (spec/primitives.md states them normatively):

* X25519 public keys must be canonical: 32 bytes whose little-endian value is below
  2^255 - 19 (so the unused top bit is clear). A shared secret that is all zero (the peer key
  has small order) is rejected.
* Ed25519 signatures are verified with libsodium's strict verification: non-canonical ``S``,
  non-canonical or small-order public keys and small-order ``R`` are rejected.
* ML-KEM-1024 public keys must pass FIPS 203's encapsulation-key check (done by OpenSSL when the
  key is loaded); ciphertexts must be exactly 1,568 bytes. Decapsulation uses implicit
  rejection: a wrong ciphertext yields an unrelated secret and fails later authentication.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

import nacl.bindings as _sodium
import nacl.exceptions as _nacl_exceptions
from cryptography.hazmat.primitives import hashes as _hashes
from cryptography.hazmat.primitives.asymmetric import mlkem as _mlkem
from cryptography.hazmat.primitives.ciphers import Cipher as _Cipher
from cryptography.hazmat.primitives.ciphers import CipherContext as _CipherContext
from cryptography.hazmat.primitives.ciphers import algorithms as _algorithms
from cryptography.hazmat.primitives.ciphers import modes as _modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF as _HKDF

from e2ee.errors import AuthenticationError, HandshakeError, SignatureError
from e2ee.limits import (
    ED25519_KEY_SIZE,
    ED25519_SIGNATURE_SIZE,
    MLKEM1024_CIPHERTEXT_SIZE,
    MLKEM1024_PUBLIC_KEY_SIZE,
    MLKEM1024_SEED_SIZE,
    X25519_KEY_SIZE,
)

_P25519 = 2**255 - 19
_ZERO32 = bytes(32)
_SHA256 = _hashes.SHA256()

# --- hashing / MAC / KDF -----------------------------------------------------------------


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _bind_hmac_digest() -> Callable[[bytes, bytes, str], bytes]:
    """The one-shot OpenSSL HMAC: CPython's ``_hashlib.hmac_digest``, which is what
    ``hmac.digest`` calls after its argument checks (the same OpenSSL HMAC, one Python frame
    less per call); ``hmac.digest`` itself where that is missing."""
    try:
        from _hashlib import hmac_digest
    except ImportError:  # pragma: no cover - CPython without OpenSSL hashlib
        return hmac.digest
    if hmac_digest(b"k", b"m", "sha256") != hmac.digest(b"k", b"m", "sha256"):  # pragma: no cover
        return hmac.digest
    return hmac_digest


hmac_digest = _bind_hmac_digest()
"""``hmac_digest(key, data, "sha256")``: one-shot HMAC (hot paths call it directly)."""
_digest = hmac_digest


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    return _digest(key, data, "sha256")


constant_time_equal = hmac.compare_digest
"""Constant-time comparison of two byte strings."""

_AES = _algorithms.AES
_CBC = _modes.CBC
_PADDING = [bytes((i,)) * i for i in range(17)]


_CipherFactory = Callable[[_algorithms.AES, _modes.CBC], _CipherContext]


def _bind_cbc() -> tuple[_CipherFactory, _CipherFactory]:
    """(encryption, decryption) context factories for AES-CBC.

    ``Cipher(AES(key), CBC(iv)).encryptor()`` re-checks the algorithm and mode types on every
    call and then calls cryptography's ``create_encryption_ctx``; the ratchet always passes a
    32-byte key and a 16-byte IV sliced from its own KDF output, so the hot path calls the
    factory directly (the same OpenSSL cipher; ``AES`` and ``CBC`` still check key and IV
    sizes). Checked against the public API at import; the public API where it differs.
    """

    def public_encrypt(algorithm: _algorithms.AES, mode: _modes.CBC) -> _CipherContext:
        return _Cipher(algorithm, mode).encryptor()

    def public_decrypt(algorithm: _algorithms.AES, mode: _modes.CBC) -> _CipherContext:
        return _Cipher(algorithm, mode).decryptor()

    try:
        from cryptography.hazmat.bindings._rust import openssl as _rust_openssl

        encrypt = _rust_openssl.ciphers.create_encryption_ctx
        decrypt = _rust_openssl.ciphers.create_decryption_ctx
        key, iv, block = bytes(range(32)), bytes(range(16)), bytes(range(32))
        expected = public_encrypt(_AES(key), _CBC(iv)).update(block)
        if (
            encrypt(_AES(key), _CBC(iv)).update(block) != expected
            or decrypt(_AES(key), _CBC(iv)).update(expected) != block
        ):  # pragma: no cover - a cryptography release that changed its internals
            raise AttributeError("context factory disagrees with Cipher")
    except (ImportError, AttributeError, TypeError):  # pragma: no cover
        return public_encrypt, public_decrypt
    return encrypt, decrypt


def _bind_cbc_on_first_use() -> None:
    """Bind the factories at the first message, not at import: while some import hooks run
    (coverage's, for one) cryptography's cipher registry is not ready yet."""
    global _cbc_encryptor, _cbc_decryptor
    _cbc_encryptor, _cbc_decryptor = _bind_cbc()


def _first_encryptor(algorithm: _algorithms.AES, mode: _modes.CBC) -> _CipherContext:
    _bind_cbc_on_first_use()
    return _cbc_encryptor(algorithm, mode)


def _first_decryptor(algorithm: _algorithms.AES, mode: _modes.CBC) -> _CipherContext:
    _bind_cbc_on_first_use()
    return _cbc_decryptor(algorithm, mode)


_cbc_encryptor: _CipherFactory = _first_encryptor
_cbc_decryptor: _CipherFactory = _first_decryptor


def hkdf_sha256(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    return _HKDF(algorithm=_SHA256, length=length, salt=salt, info=info).derive(ikm)


# --- X25519 ------------------------------------------------------------------------------


def x25519_is_canonical(public_key: bytes) -> bool:
    """True when ``public_key`` is 32 bytes encoding an integer below 2^255 - 19."""
    return len(public_key) == X25519_KEY_SIZE and int.from_bytes(public_key, "little") < _P25519


def x25519_public_key(private_key: bytes) -> bytes:
    """The public key of a 32-byte X25519 private key (clamped as RFC 7748 says)."""
    return bytes(_sodium.crypto_scalarmult_base(private_key))


def x25519(private_key: bytes, public_key: bytes) -> bytes:
    """X25519(private, public); rejects non-canonical keys and all-zero (small-order) results.

    Raises :class:`HandshakeError`; callers on an established session translate it.
    """
    if not x25519_is_canonical(public_key):
        raise HandshakeError("X25519 public key is not canonical")
    try:
        shared = bytes(_sodium.crypto_scalarmult(private_key, public_key))
    except _nacl_exceptions.CryptoError:
        raise HandshakeError("X25519 public key has small order") from None
    if hmac.compare_digest(shared, _ZERO32):  # pragma: no cover - libsodium already refuses
        raise HandshakeError("X25519 public key has small order")
    return shared


# --- Ed25519 -----------------------------------------------------------------------------


def ed25519_public_key(seed: bytes) -> bytes:
    public, _secret = _sodium.crypto_sign_seed_keypair(seed)
    return bytes(public)


def ed25519_sign(seed: bytes, message: bytes) -> bytes:
    _public, secret = _sodium.crypto_sign_seed_keypair(seed)
    return bytes(_sodium.crypto_sign(message, secret)[:ED25519_SIGNATURE_SIZE])


def ed25519_verify(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Strict Ed25519 verification; raises :class:`SignatureError`."""
    if len(public_key) != ED25519_KEY_SIZE or len(signature) != ED25519_SIGNATURE_SIZE:
        raise SignatureError("signature or key has the wrong length")
    try:
        _sodium.crypto_sign_open(signature + message, public_key)
    except (_nacl_exceptions.CryptoError, ValueError):
        raise SignatureError("signature does not verify") from None


def ed25519_public_to_x25519(public_key: bytes) -> bytes:
    """The birational map from an Ed25519 public key to its X25519 form."""
    try:
        return bytes(_sodium.crypto_sign_ed25519_pk_to_curve25519(public_key))
    except (_nacl_exceptions.CryptoError, ValueError):
        raise HandshakeError("identity key is not a valid Ed25519 point") from None


def ed25519_seed_to_x25519(seed: bytes) -> bytes:
    """The X25519 private key matching :func:`ed25519_public_to_x25519` of the same key."""
    _public, secret = _sodium.crypto_sign_seed_keypair(seed)
    return bytes(_sodium.crypto_sign_ed25519_sk_to_curve25519(secret))


def ed25519_is_valid_public_key(public_key: bytes) -> bool:
    """True for a canonical Ed25519 point of large order (usable as an identity key)."""
    try:
        ed25519_identity_to_x25519(public_key)
    except HandshakeError:
        return False
    return True


def ed25519_identity_to_x25519(public_key: bytes) -> bytes:
    """Validate an Ed25519 identity key and return its X25519 form, in one libsodium call.

    Rejected: a wrong length, a non-canonical encoding (y >= p), and everything libsodium's
    ``crypto_sign_ed25519_pk_to_curve25519`` refuses: points off the curve, of small order, or
    outside the prime-order subgroup. Together this is what ``crypto_core_ed25519_is_valid_point``
    accepts (checked against it in the tests), at half the cost.
    """
    if (
        len(public_key) != ED25519_KEY_SIZE
        or int.from_bytes(public_key, "little") & ((1 << 255) - 1) >= _P25519
    ):
        raise HandshakeError("identity key is not a valid Ed25519 public key")
    try:
        return bytes(_sodium.crypto_sign_ed25519_pk_to_curve25519(public_key))
    except (_nacl_exceptions.CryptoError, ValueError):
        raise HandshakeError("identity key is not a valid Ed25519 public key") from None


def ed25519_is_valid_point_libsodium(public_key: bytes) -> bool:
    """libsodium's own point validation (used by tests to cross-check the rule above)."""
    return len(public_key) == ED25519_KEY_SIZE and bool(
        _sodium.crypto_core_ed25519_is_valid_point(public_key)
    )


# --- ML-KEM-1024 -------------------------------------------------------------------------


def mlkem1024_public_key(seed: bytes) -> bytes:
    if len(seed) != MLKEM1024_SEED_SIZE:
        raise ValueError("ML-KEM seed must be 64 bytes")
    return _mlkem.MLKEM1024PrivateKey.from_seed_bytes(seed).public_key().public_bytes_raw()


def mlkem1024_check_public_key(public_key: bytes) -> None:
    """FIPS 203 encapsulation-key check; raises :class:`HandshakeError`."""
    if len(public_key) != MLKEM1024_PUBLIC_KEY_SIZE:
        raise HandshakeError("ML-KEM-1024 public key has the wrong length")
    try:
        _mlkem.MLKEM1024PublicKey.from_public_bytes(public_key)
    except ValueError:
        raise HandshakeError("ML-KEM-1024 public key fails the encapsulation-key check") from None


def mlkem1024_encapsulate(public_key: bytes) -> tuple[bytes, bytes]:
    """(shared_secret, ciphertext) for a public key; raises :class:`HandshakeError`.

    Loading the key runs the same checks as :func:`mlkem1024_check_public_key`."""
    if len(public_key) != MLKEM1024_PUBLIC_KEY_SIZE:
        raise HandshakeError("ML-KEM-1024 public key has the wrong length")
    try:
        key = _mlkem.MLKEM1024PublicKey.from_public_bytes(public_key)
    except ValueError:
        raise HandshakeError("ML-KEM-1024 public key fails the encapsulation-key check") from None
    shared, ciphertext = key.encapsulate()
    return shared, ciphertext


def mlkem1024_decapsulate(seed: bytes, ciphertext: bytes) -> bytes:
    """Decapsulate with implicit rejection; a malformed ciphertext raises HandshakeError."""
    if len(ciphertext) != MLKEM1024_CIPHERTEXT_SIZE:
        raise HandshakeError("ML-KEM-1024 ciphertext has the wrong length")
    if len(seed) != MLKEM1024_SEED_SIZE:
        raise ValueError("ML-KEM seed must be 64 bytes")
    return _mlkem.MLKEM1024PrivateKey.from_seed_bytes(seed).decapsulate(ciphertext)


# --- symmetric encryption ----------------------------------------------------------------


def aes256_cbc_encrypt(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    """AES-256-CBC with PKCS#7 padding."""
    encryptor = _cbc_encryptor(_AES(key), _CBC(iv))
    return encryptor.update(plaintext + _PADDING[16 - len(plaintext) % 16]) + encryptor.finalize()


def aes256_cbc_decrypt(key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    """Inverse of :func:`aes256_cbc_encrypt`. Call only on authenticated ciphertext."""
    if not ciphertext or len(ciphertext) % 16:
        raise AuthenticationError("ciphertext length is not a multiple of the block size")
    decryptor = _cbc_decryptor(_AES(key), _CBC(iv))
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    pad = padded[-1]
    if not 1 <= pad <= 16 or not padded.endswith(_PADDING[pad]):
        raise AuthenticationError("invalid padding")
    return padded[:-pad]


def xchacha20poly1305_encrypt(key: bytes, nonce: bytes, plaintext: bytes, ad: bytes) -> bytes:
    return bytes(_sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, nonce, key))


def xchacha20poly1305_try_decrypt(
    key: bytes, nonce: bytes, ciphertext: bytes, ad: bytes
) -> bytes | None:
    """Like :func:`xchacha20poly1305_decrypt`, but ``None`` on failure (header-key trials)."""
    try:
        return bytes(_sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, ad, nonce, key))
    except (_nacl_exceptions.CryptoError, ValueError, TypeError):
        return None


def xchacha20poly1305_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    """Decrypt and verify; raises :class:`AuthenticationError`."""
    try:
        return bytes(_sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, ad, nonce, key))
    except (_nacl_exceptions.CryptoError, ValueError, TypeError):
        raise AuthenticationError("AEAD authentication failed") from None
