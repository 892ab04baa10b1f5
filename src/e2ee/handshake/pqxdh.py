"""PQXDH (hybrid X25519 + ML-KEM-1024) and X3DH key agreement.

One function per side for both protocols: the presence of an ML-KEM ciphertext is what makes
it PQXDH. The secret input is ``F || DH1 || DH2 || DH3 [|| DH4] [|| SS]``; the HKDF info is the
protocol label followed by the hash of the *transcript*: every public value of the handshake,
including the ML-KEM public key and ciphertext (binding them, as the PQXDH analysis requires),
both identity keys, the signed prekey's time and the header-encryption choice. Since the
transcript also names the keys the responder used, any change to an initial field yields a
different secret and the first message fails to authenticate.

Output (96 bytes): the first root key, the initiator's first header key and the responder's
first next-header key. The session id is a hash of the transcript hash, so anyone holding the
initial message's public fields can route it, but it reveals nothing secret.
"""

from __future__ import annotations

from dataclasses import dataclass

from e2ee.crypto import primitives
from e2ee.limits import (
    HASH_LABEL_SESSION_ID,
    HASH_LABEL_TRANSCRIPT,
    HKDF_ZERO_SALT,
    KDF_INFO_PQXDH,
    KDF_INFO_X3DH,
    KEY_TYPE_ED25519,
    KEY_TYPE_MLKEM1024,
    KEY_TYPE_X25519,
    PROTOCOL_VERSION,
    SESSION_ID_SIZE,
    X3DH_F,
)
from e2ee.wire import codec


@dataclass(frozen=True, slots=True)
class HandshakeSecrets:
    """What a completed key agreement hands to the Double Ratchet."""

    root_key: bytes
    header_key: bytes
    next_header_key: bytes
    session_id: bytes
    associated_data: bytes

    def __repr__(self) -> str:
        return f"HandshakeSecrets(session_id={self.session_id.hex()})"


@dataclass(frozen=True, slots=True)
class Transcript:
    """Every public value of one handshake, in a fixed order."""

    initiator_identity_key: bytes
    responder_identity_key: bytes
    signed_prekey_id: int
    signed_prekey: bytes
    signed_prekey_timestamp: int
    one_time_prekey_id: int | None
    one_time_prekey: bytes | None
    kem_prekey_id: int | None
    kem_prekey: bytes | None
    kem_ciphertext: bytes | None
    base_key: bytes
    header_encryption: bool

    def digest(self) -> bytes:
        def tagged(prefix: bytes, key: bytes | None) -> bytes | None:
            return None if key is None else prefix + key

        encoded = codec.encode(
            [
                PROTOCOL_VERSION,
                self.kem_ciphertext is not None,
                self.header_encryption,
                KEY_TYPE_ED25519 + self.initiator_identity_key,
                KEY_TYPE_ED25519 + self.responder_identity_key,
                self.signed_prekey_id,
                KEY_TYPE_X25519 + self.signed_prekey,
                self.signed_prekey_timestamp,
                self.one_time_prekey_id,
                tagged(KEY_TYPE_X25519, self.one_time_prekey),
                self.kem_prekey_id,
                tagged(KEY_TYPE_MLKEM1024, self.kem_prekey),
                self.kem_ciphertext,
                KEY_TYPE_X25519 + self.base_key,
            ]
        )
        return primitives.sha256(HASH_LABEL_TRANSCRIPT + encoded)


def associated_data(initiator_identity_key: bytes, responder_identity_key: bytes) -> bytes:
    """AD = Encode(IK_A) || Encode(IK_B), each with its key-type prefix."""
    return KEY_TYPE_ED25519 + initiator_identity_key + KEY_TYPE_ED25519 + responder_identity_key


def derive(
    transcript: Transcript, dh_outputs: list[bytes], kem_secret: bytes | None
) -> HandshakeSecrets:
    """The KDF shared by both sides."""
    transcript_hash = transcript.digest()
    ikm = X3DH_F + b"".join(dh_outputs)
    if kem_secret is None:
        info = KDF_INFO_X3DH
    else:
        ikm += kem_secret
        info = KDF_INFO_PQXDH
    out = primitives.hkdf_sha256(HKDF_ZERO_SALT, ikm, info + transcript_hash, 96)
    return HandshakeSecrets(
        root_key=out[:32],
        header_key=out[32:64],
        next_header_key=out[64:],
        session_id=primitives.sha256(HASH_LABEL_SESSION_ID + transcript_hash)[:SESSION_ID_SIZE],
        associated_data=associated_data(
            transcript.initiator_identity_key, transcript.responder_identity_key
        ),
    )


def initiator_dh(
    *,
    identity_dh_private: bytes,
    base_private: bytes,
    responder_identity_dh: bytes,
    signed_prekey: bytes,
    one_time_prekey: bytes | None,
) -> list[bytes]:
    """DH1..DH4 as the initiator computes them."""
    outputs = [
        primitives.x25519(identity_dh_private, signed_prekey),
        primitives.x25519(base_private, responder_identity_dh),
        primitives.x25519(base_private, signed_prekey),
    ]
    if one_time_prekey is not None:
        outputs.append(primitives.x25519(base_private, one_time_prekey))
    return outputs


def responder_dh(
    *,
    identity_dh_private: bytes,
    signed_prekey_private: bytes,
    one_time_prekey_private: bytes | None,
    initiator_identity_dh: bytes,
    base_key: bytes,
) -> list[bytes]:
    """DH1..DH4 as the responder computes them."""
    outputs = [
        primitives.x25519(signed_prekey_private, initiator_identity_dh),
        primitives.x25519(identity_dh_private, base_key),
        primitives.x25519(signed_prekey_private, base_key),
    ]
    if one_time_prekey_private is not None:
        outputs.append(primitives.x25519(one_time_prekey_private, base_key))
    return outputs


def check_identity_key(identity_key: bytes) -> bytes:
    """Validate an Ed25519 identity key and return its X25519 form."""
    return primitives.ed25519_identity_to_x25519(identity_key)
