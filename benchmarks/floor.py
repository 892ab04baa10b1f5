"""The bare-primitive floor: the `cryptography` / pynacl calls the protocol cannot avoid.

Each ``prepare_*`` function does its key material set-up untimed and returns a zero-argument
callable that performs ``n`` units of work (messages, or session set-ups) with nothing but the
primitive calls, and returns the last plaintext it decrypted (so a test can check that the
floor is a working protocol and not dead code). The floor is a correct, minimal Double Ratchet
/ X3DH / PQXDH: two parties really derive the same keys and really decrypt each other's
messages. There is no framing, no state object beyond a few slots, no validation beyond what
the primitives do themselves, and always the fastest call the libraries offer:

* HMAC-SHA-256: ``hmac.digest`` (one shot, OpenSSL).
* HKDF-SHA-256: ``cryptography``'s ``HKDF(...).derive`` (faster than a pure-Python HKDF over
  ``hmac.digest`` for these output lengths).
* AES-256-CBC: ``cryptography``'s ``Cipher(AES, CBC)`` with PKCS#7 padding done by hand.
* X25519: ``nacl.bindings.crypto_scalarmult`` / ``crypto_scalarmult_base`` (libsodium; key
  generation through it is about twice as fast as through ``cryptography``).
* Ed25519 verification: ``nacl.bindings.crypto_sign_open``; the identity key's X25519 form:
  ``crypto_sign_ed25519_pk_to_curve25519``.
* ML-KEM-1024: ``cryptography``'s ``mlkem``. A one-time ML-KEM private key is stored as its
  64-byte seed (the only private form ``cryptography`` can load) and is used exactly once, so
  the responder's ``from_seed_bytes`` is part of the floor; so is the initiator's
  ``from_public_bytes`` (which also runs FIPS 203's encapsulation-key check).
* Header encryption: XChaCha20-Poly1305 from libsodium with a fresh random 24-byte nonce.

Per message of a one-direction stream (header encryption off), the floor does on each side
KDF_CK (two HMACs), HKDF to 80 bytes, AES-256-CBC and the HMAC tag (the receiver verifies the
tag in constant time and then decrypts). A ping-pong message (every message starts a new
chain) adds on the receiving side the DH ratchet step of the Signal spec: one X25519 key
generation, two X25519 exchanges and two KDF_RK (HKDF to 64 bytes; 96 with header encryption).
With header encryption the sender also draws a nonce and seals the 40-byte header; the stream
receiver opens it under its current header key, the ping-pong receiver first tries its current
header key (which fails: the spec tries HKr before NHKr) and then the next header key.

A session set-up is the initiator verifying every signature of the bundle, converting the
peer's Ed25519 identity key, generating its base key, X25519 DH1..DH4, ML-KEM encapsulation for
PQXDH, the handshake HKDF, the initiator's first ratchet step (key generation, one X25519, one
KDF_RK) and the first message; then the responder converting the initiator's identity key,
DH1..DH4, ML-KEM decapsulation, the handshake HKDF, the DH ratchet step and decrypting the
first message. One-time EC and ML-KEM prekeys are used (four DHs per side, three signatures
with PQXDH, two with X3DH). Key generation on the responder's side (prekeys and their
signatures) happens before a bundle is fetched and is not timed, as in the e2ee benchmark.

The associated data the floor authenticates has the same length as e2ee's (the two identity
keys plus the message prefix and header), so the hashing work is the same. The stream loop is
written out inline (its per-message cost is small enough that call overhead would show); the
ping-pong and set-up floors use a few small helpers, whose call overhead is well under 1% of
their per-message cost.
"""

from __future__ import annotations

import hmac
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

import nacl.bindings as sodium
import nacl.exceptions
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from e2ee import limits

Workload = Callable[[], bytes]
"""A prepared benchmark body: does its ``n`` units of work and returns the last plaintext."""

_SHA256 = hashes.SHA256()
_AES = algorithms.AES
_CBC = modes.CBC
_MK = limits.KDF_CK_MESSAGE_KEY_BYTE
_CK = limits.KDF_CK_CHAIN_KEY_BYTE
_ZERO_SALT = limits.HKDF_ZERO_SALT
_INFO_MESSAGE = limits.KDF_INFO_MESSAGE_KEYS
_INFO_ROOT = limits.KDF_INFO_ROOT
_INFO_ROOT_HE = limits.KDF_INFO_ROOT_HE
_TAG = limits.MESSAGE_TAG_SIZE
_COUNTERS = struct.Struct(">II")

# Lengths of what e2ee authenticates (so that the floor hashes as many bytes):
# AD = two identity keys with type prefixes; a normal message's prefix is array head, version,
# type and the 16-byte session id; the header is a 40-byte (80 with header encryption) byte
# string with a 2-byte CBOR head.
_AD_SIZE = 2 * (1 + limits.ED25519_KEY_SIZE)
_PREFIX_SIZE = 3 + 1 + limits.SESSION_ID_SIZE
HEADER_AD_SIZE = _AD_SIZE + _PREFIX_SIZE
MAC_AD_SIZE = HEADER_AD_SIZE + 2 + limits.HEADER_PLAINTEXT_SIZE
MAC_AD_SIZE_HE = HEADER_AD_SIZE + 2 + limits.ENCRYPTED_HEADER_SIZE


def _seal(message_key: bytes, ad: bytes, plaintext: bytes) -> bytes:
    """ENCRYPT of the spec (5.2): HKDF to 80 bytes, AES-256-CBC, truncated HMAC tag."""
    okm = HKDF(algorithm=_SHA256, length=80, salt=_ZERO_SALT, info=_INFO_MESSAGE).derive(
        message_key
    )
    encryptor = Cipher(_AES(okm[:32]), _CBC(okm[64:])).encryptor()
    pad = 16 - len(plaintext) % 16
    ciphertext = encryptor.update(plaintext + bytes((pad,)) * pad) + encryptor.finalize()
    return ciphertext + hmac.digest(okm[32:64], ad + ciphertext, "sha256")[:_TAG]


def _open(message_key: bytes, ad: bytes, wire: bytes) -> bytes:
    """DECRYPT: verify the tag in constant time, then decrypt and strip the padding."""
    okm = HKDF(algorithm=_SHA256, length=80, salt=_ZERO_SALT, info=_INFO_MESSAGE).derive(
        message_key
    )
    body = wire[:-_TAG]
    if not hmac.compare_digest(hmac.digest(okm[32:64], ad + body, "sha256")[:_TAG], wire[-_TAG:]):
        raise ValueError("floor: message authentication failed")
    decryptor = Cipher(_AES(okm[:32]), _CBC(okm[64:])).decryptor()
    padded = decryptor.update(body) + decryptor.finalize()
    return padded[: -padded[-1]]


def _keypair() -> tuple[bytes, bytes]:
    private = os.urandom(32)
    return private, sodium.crypto_scalarmult_base(private)


def _kdf_rk(root_key: bytes, dh_output: bytes, header_encryption: bool) -> bytes:
    """KDF_RK (64 bytes) or KDF_RK_HE (96 bytes): root key || chain key [|| next header key]."""
    if header_encryption:
        return HKDF(algorithm=_SHA256, length=96, salt=root_key, info=_INFO_ROOT_HE).derive(
            dh_output
        )
    return HKDF(algorithm=_SHA256, length=64, salt=root_key, info=_INFO_ROOT).derive(dh_output)


# --- one-direction stream ---------------------------------------------------------------------


def prepare_stream(n: int, plaintext: bytes, *, header_encryption: bool = False) -> Workload:
    """``n`` messages from one sender to one receiver on the same chain."""
    chain_key = os.urandom(32)
    ad = bytes(MAC_AD_SIZE_HE if header_encryption else MAC_AD_SIZE)
    header_ad = bytes(HEADER_AD_SIZE)
    header_key = os.urandom(32) if header_encryption else None
    ratchet_public = _keypair()[1]

    def run() -> bytes:
        digest = hmac.digest
        compare = hmac.compare_digest
        hkdf, sha256, cipher, aes, cbc = HKDF, _SHA256, Cipher, _AES, _CBC
        zero, info, mk_byte, ck_byte, tag_size = _ZERO_SALT, _INFO_MESSAGE, _MK, _CK, _TAG
        urandom, pack = os.urandom, _COUNTERS.pack
        seal_header = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt
        open_header = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt
        cks = ckr = chain_key
        out = b""
        for i in range(n):
            # Sender: KDF_CK, [HENCRYPT of the header under a fresh nonce,] ENCRYPT.
            mk = digest(cks, mk_byte, "sha256")
            cks = digest(cks, ck_byte, "sha256")
            if header_key is not None:
                nonce = urandom(24)
                sealed = seal_header(ratchet_public + pack(0, i), header_ad, nonce, header_key)
            okm = hkdf(algorithm=sha256, length=80, salt=zero, info=info).derive(mk)
            encryptor = cipher(aes(okm[:32]), cbc(okm[64:])).encryptor()
            pad = 16 - len(plaintext) % 16
            ct = encryptor.update(plaintext + bytes((pad,)) * pad) + encryptor.finalize()
            wire = ct + digest(okm[32:64], ad + ct, "sha256")[:tag_size]
            # Receiver: [HDECRYPT under the current header key,] KDF_CK, DECRYPT.
            if header_key is not None:
                open_header(sealed, header_ad, nonce, header_key)
            mk = digest(ckr, mk_byte, "sha256")
            ckr = digest(ckr, ck_byte, "sha256")
            okm = hkdf(algorithm=sha256, length=80, salt=zero, info=info).derive(mk)
            body = wire[:-tag_size]
            if not compare(digest(okm[32:64], ad + body, "sha256")[:tag_size], wire[-tag_size:]):
                raise ValueError("floor: message authentication failed")
            decryptor = cipher(aes(okm[:32]), cbc(okm[64:])).decryptor()
            padded = decryptor.update(body) + decryptor.finalize()
            out = padded[: -padded[-1]]
        return out

    return run


# --- ping-pong: every message is a DH ratchet step --------------------------------------------


@dataclass(slots=True)
class _Party:
    root_key: bytes
    private: bytes
    public: bytes
    cks: bytes
    hks: bytes | None
    hkr: bytes | None
    nhks: bytes | None
    nhkr: bytes | None


def _new_pair(header_encryption: bool) -> tuple[_Party, _Party]:
    """Alice (who sends first) and Bob right after the handshake (spec 3.3 / 4.3)."""
    root_key, hk_a, nhk_b = os.urandom(32), os.urandom(32), os.urandom(32)
    bob_private, bob_public = _keypair()
    alice_private, alice_public = _keypair()
    out = _kdf_rk(root_key, sodium.crypto_scalarmult(alice_private, bob_public), header_encryption)
    alice = _Party(out[:32], alice_private, alice_public, out[32:64], None, None, None, None)
    bob = _Party(root_key, bob_private, bob_public, b"", None, None, None, None)
    if header_encryption:
        alice.hks, alice.nhks, alice.nhkr = hk_a, out[64:], nhk_b
        bob.nhks, bob.nhkr = nhk_b, hk_a
    return alice, bob


def _send(party: _Party, ad: bytes, header_ad: bytes, plaintext: bytes) -> tuple[bytes, bytes]:
    """The first message of the sender's current chain: (header as sent, ciphertext)."""
    chain_key = party.cks
    mk = hmac.digest(chain_key, _MK, "sha256")
    party.cks = hmac.digest(chain_key, _CK, "sha256")
    header = party.public
    if party.hks is not None:
        nonce = os.urandom(24)
        header = nonce + sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
            header + _COUNTERS.pack(0, 0), header_ad, nonce, party.hks
        )
    return header, _seal(mk, ad, plaintext)


def _receive(party: _Party, header: bytes, wire: bytes, ad: bytes, header_ad: bytes) -> bytes:
    """A message on a new chain: (HDECRYPT,) DH ratchet step, KDF_CK, DECRYPT."""
    header_encryption = party.nhkr is not None
    if header_encryption:
        nonce, sealed = header[:24], header[24:]
        if party.hkr is not None:
            try:  # the current header key is tried first and fails: this is a new chain
                sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
                    sealed, header_ad, nonce, party.hkr
                )
            except nacl.exceptions.CryptoError:
                pass
            else:  # pragma: no cover - ping-pong never reuses a chain
                raise ValueError("floor: header opened under the current header key")
        assert party.nhkr is not None
        header = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
            sealed, header_ad, nonce, party.nhkr
        )
    peer_public = header[:32]
    out = _kdf_rk(
        party.root_key,
        sodium.crypto_scalarmult(party.private, peer_public),
        header_encryption,
    )
    ckr = out[32:64]
    party.private, party.public = _keypair()
    out2 = _kdf_rk(
        out[:32], sodium.crypto_scalarmult(party.private, peer_public), header_encryption
    )
    party.root_key, party.cks = out2[:32], out2[32:64]
    if header_encryption:
        party.hks, party.hkr = party.nhks, party.nhkr
        party.nhkr, party.nhks = out[64:], out2[64:]
    mk = hmac.digest(ckr, _MK, "sha256")
    hmac.digest(ckr, _CK, "sha256")  # the next receiving chain key, kept by a real receiver
    return _open(mk, ad, wire)


def prepare_pingpong(n: int, plaintext: bytes, *, header_encryption: bool = False) -> Workload:
    """``n`` messages alternating between the two parties (``n`` is rounded up to even)."""
    alice, bob = _new_pair(header_encryption)
    ad = bytes(MAC_AD_SIZE_HE if header_encryption else MAC_AD_SIZE)
    header_ad = bytes(HEADER_AD_SIZE)
    turns = (n + 1) // 2

    def run() -> bytes:
        out = b""
        for _ in range(turns):
            header, wire = _send(alice, ad, header_ad, plaintext)
            out = _receive(bob, header, wire, ad, header_ad)
            header, wire = _send(bob, ad, header_ad, plaintext)
            out = _receive(alice, header, wire, ad, header_ad)
        return out

    return run


# --- session set-up -------------------------------------------------------------------------


@dataclass(slots=True)
class _Bundle:
    """The responder's public and private prekeys for one session."""

    spk_payload: bytes
    spk_signature: bytes
    opk_payload: bytes
    opk_signature: bytes
    okem_payload: bytes | None
    okem_signature: bytes | None
    spk_private: bytes
    spk_public: bytes
    opk_private: bytes
    opk_public: bytes
    okem_seed: bytes | None
    okem_public: bytes | None


def _sign(secret: bytes, payload: bytes) -> bytes:
    return bytes(sodium.crypto_sign(payload, secret)[:64])


def _make_bundle(
    identity_secret: bytes, spk: tuple[bytes, bytes], post_quantum: bool, spk_kem: bytes | None
) -> _Bundle:
    # Payloads as long as e2ee's: label || id (u32) || [time (u64)] || typed key [|| KEM key].
    spk_payload = limits.SIG_LABEL_SIGNED_PREKEY + bytes(12) + b"\x01" + spk[1]
    if spk_kem is not None:
        spk_payload += bytes(4) + b"\x03" + spk_kem
    opk_private, opk_public = _keypair()
    opk_payload = limits.SIG_LABEL_ONE_TIME_PREKEY + bytes(4) + b"\x01" + opk_public
    okem_seed = okem_public = okem_payload = okem_signature = None
    if post_quantum:
        okem_seed = os.urandom(64)
        okem_public = (
            mlkem.MLKEM1024PrivateKey.from_seed_bytes(okem_seed).public_key().public_bytes_raw()
        )
        okem_payload = limits.SIG_LABEL_ONE_TIME_KEM_PREKEY + bytes(4) + b"\x03" + okem_public
        okem_signature = _sign(identity_secret, okem_payload)
    return _Bundle(
        spk_payload=spk_payload,
        spk_signature=_sign(identity_secret, spk_payload),
        opk_payload=opk_payload,
        opk_signature=_sign(identity_secret, opk_payload),
        okem_payload=okem_payload,
        okem_signature=okem_signature,
        spk_private=spk[0],
        spk_public=spk[1],
        opk_private=opk_private,
        opk_public=opk_public,
        okem_seed=okem_seed,
        okem_public=okem_public,
    )


def _identity() -> tuple[bytes, bytes, bytes]:
    """An Ed25519 identity: (public key, secret key, X25519 private key)."""
    public, secret = sodium.crypto_sign_seed_keypair(os.urandom(32))
    return public, secret, sodium.crypto_sign_ed25519_sk_to_curve25519(secret)


def prepare_setup(
    n: int, plaintext: bytes, *, post_quantum: bool = True, header_encryption: bool = False
) -> Workload:
    """``n`` session set-ups: verify the bundle, PQXDH/X3DH on both sides, first message."""
    bob_identity, bob_secret, bob_identity_x = _identity()
    alice_identity, _alice_secret, alice_identity_x = _identity()
    spk = _keypair()
    spk_kem = (
        mlkem.MLKEM1024PrivateKey.from_seed_bytes(os.urandom(64)).public_key().public_bytes_raw()
        if post_quantum
        else None
    )
    bundles = [_make_bundle(bob_secret, spk, post_quantum, spk_kem) for _ in range(n)]
    ad = bytes(MAC_AD_SIZE_HE if header_encryption else MAC_AD_SIZE)
    header_ad = bytes(HEADER_AD_SIZE)
    info = limits.KDF_INFO_PQXDH if post_quantum else limits.KDF_INFO_X3DH

    def run() -> bytes:
        x25519 = sodium.crypto_scalarmult
        verify = sodium.crypto_sign_open
        to_x25519 = sodium.crypto_sign_ed25519_pk_to_curve25519
        out = b""
        for bundle in bundles:
            # --- initiator (Alice): verify the bundle, agree, first ratchet step, encrypt.
            verify(bundle.spk_signature + bundle.spk_payload, bob_identity)
            verify(bundle.opk_signature + bundle.opk_payload, bob_identity)
            if bundle.okem_payload is not None:
                assert bundle.okem_signature is not None
                verify(bundle.okem_signature + bundle.okem_payload, bob_identity)
            ik_b = to_x25519(bob_identity)
            base_private, base_public = _keypair()
            ikm = (
                limits.X3DH_F
                + x25519(alice_identity_x, bundle.spk_public)
                + x25519(base_private, ik_b)
                + x25519(base_private, bundle.spk_public)
                + x25519(base_private, bundle.opk_public)
            )
            kem_ciphertext = None
            if bundle.okem_public is not None:
                kem_secret, kem_ciphertext = mlkem.MLKEM1024PublicKey.from_public_bytes(
                    bundle.okem_public
                ).encapsulate()
                ikm += kem_secret
            secret = HKDF(algorithm=_SHA256, length=96, salt=_ZERO_SALT, info=info).derive(ikm)
            ratchet_private, ratchet_public = _keypair()
            chain = _kdf_rk(
                secret[:32], x25519(ratchet_private, bundle.spk_public), header_encryption
            )
            mk = hmac.digest(chain[32:64], _MK, "sha256")
            hmac.digest(chain[32:64], _CK, "sha256")  # Alice's next sending chain key
            header = ratchet_public
            if header_encryption:
                nonce = os.urandom(24)
                header = nonce + sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
                    ratchet_public + _COUNTERS.pack(0, 0), header_ad, nonce, secret[32:64]
                )
            wire = _seal(mk, ad, plaintext)

            # --- responder (Bob): agree, DH ratchet step, decrypt.
            ik_a = to_x25519(alice_identity)
            ikm = (
                limits.X3DH_F
                + x25519(bundle.spk_private, ik_a)
                + x25519(bob_identity_x, base_public)
                + x25519(bundle.spk_private, base_public)
                + x25519(bundle.opk_private, base_public)
            )
            if kem_ciphertext is not None:
                assert bundle.okem_seed is not None
                ikm += mlkem.MLKEM1024PrivateKey.from_seed_bytes(bundle.okem_seed).decapsulate(
                    kem_ciphertext
                )
            secret = HKDF(algorithm=_SHA256, length=96, salt=_ZERO_SALT, info=info).derive(ikm)
            if header_encryption:
                header = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
                    header[24:], header_ad, header[:24], secret[32:64]
                )
            peer_ratchet = header[:32]
            out1 = _kdf_rk(secret[:32], x25519(bundle.spk_private, peer_ratchet), header_encryption)
            new_private, _new_public = _keypair()
            _kdf_rk(out1[:32], x25519(new_private, peer_ratchet), header_encryption)
            mk = hmac.digest(out1[32:64], _MK, "sha256")
            hmac.digest(out1[32:64], _CK, "sha256")  # Bob's next receiving chain key
            out = _open(mk, ad, wire)
        return out

    return run


__all__ = [
    "HEADER_AD_SIZE",
    "MAC_AD_SIZE",
    "MAC_AD_SIZE_HE",
    "Workload",
    "prepare_pingpong",
    "prepare_setup",
    "prepare_stream",
]
