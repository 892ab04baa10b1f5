"""Layouts of the prekey bundle and of the two message kinds.

Messages are flat canonical CBOR arrays (CDDL in spec/wire.cddl)::

    initial-message = [version, 2, session_id, identity_key, base_key, signed_prekey_id,
                       one_time_prekey_id / null, kem_prekey_id / null,
                       kem_ciphertext / null, header_encryption, header, ciphertext]
    normal-message  = [version, 3, session_id, header, ciphertext]

``header`` is 40 bytes in clear (ratchet key || PN u32 || N u32) or, with header encryption,
80 bytes (nonce 24 || XChaCha20-Poly1305 of those 40 bytes). ``ciphertext`` is AES-256-CBC
output followed by a 16-byte truncated HMAC-SHA-256 tag.

Because the decoder accepts only canonical encodings, a message's bytes are a function of its
fields; authenticating the exact wire prefix therefore authenticates every byte.
"""

from __future__ import annotations

from dataclasses import dataclass

from e2ee.errors import DecodeError, UnsupportedVersionError
from e2ee.limits import (
    ED25519_KEY_SIZE,
    ED25519_SIGNATURE_SIZE,
    ENCRYPTED_HEADER_SIZE,
    HEADER_PLAINTEXT_SIZE,
    MAX_BUNDLE_SIZE,
    MAX_COUNTER,
    MAX_MESSAGE_SIZE,
    MAX_PLAINTEXT_SIZE,
    MESSAGE_TAG_SIZE,
    MLKEM1024_CIPHERTEXT_SIZE,
    MLKEM1024_PUBLIC_KEY_SIZE,
    PROTOCOL_VERSION,
    SESSION_ID_SIZE,
    TYPE_INITIAL_MESSAGE,
    TYPE_NORMAL_MESSAGE,
    TYPE_PREKEY_BUNDLE,
    X25519_KEY_SIZE,
)
from e2ee.wire import codec

# --- prekey bundle -------------------------------------------------------------------------

_B_VERSION, _B_TYPE, _B_IDENTITY = 0, 1, 2
_B_SPK_ID, _B_SPK, _B_SPK_TIME, _B_SPK_SIG = 3, 4, 5, 6
_B_KEM_ID, _B_KEM = 7, 8
_B_OPK_ID, _B_OPK, _B_OPK_SIG = 9, 10, 11
_B_OKEM_ID, _B_OKEM, _B_OKEM_SIG = 12, 13, 14


@dataclass(frozen=True, slots=True)
class PreKeyBundle:
    """What a device publishes so that others can start sessions with it.

    Every key carries an identity-key signature: the signed prekey's signature also covers its
    creation time and its last-resort ML-KEM companion (so the post-quantum part cannot be
    stripped); each one-time EC and one-time ML-KEM prekey has its own signature. Only public
    keys are in a bundle; :func:`e2ee.Account.start_session` verifies every signature.
    """

    identity_key: bytes
    signed_prekey_id: int
    signed_prekey: bytes
    signed_prekey_timestamp: int
    signed_prekey_signature: bytes
    kem_prekey_id: int | None = None
    kem_prekey: bytes | None = None
    one_time_prekey_id: int | None = None
    one_time_prekey: bytes | None = None
    one_time_prekey_signature: bytes | None = None
    one_time_kem_prekey_id: int | None = None
    one_time_kem_prekey: bytes | None = None
    one_time_kem_prekey_signature: bytes | None = None

    def __post_init__(self) -> None:
        _check_bytes(self.identity_key, ED25519_KEY_SIZE, "identity_key")
        _check_id(self.signed_prekey_id, "signed_prekey_id")
        _check_bytes(self.signed_prekey, X25519_KEY_SIZE, "signed_prekey")
        _check_uint(self.signed_prekey_timestamp, 2**63 - 1, "signed_prekey_timestamp")
        _check_bytes(self.signed_prekey_signature, ED25519_SIGNATURE_SIZE, "signature")
        _check_group(
            "kem_prekey",
            (self.kem_prekey_id, self.kem_prekey),
            (None, MLKEM1024_PUBLIC_KEY_SIZE),
        )
        _check_group(
            "one_time_prekey",
            (self.one_time_prekey_id, self.one_time_prekey, self.one_time_prekey_signature),
            (None, X25519_KEY_SIZE, ED25519_SIGNATURE_SIZE),
        )
        _check_group(
            "one_time_kem_prekey",
            (
                self.one_time_kem_prekey_id,
                self.one_time_kem_prekey,
                self.one_time_kem_prekey_signature,
            ),
            (None, MLKEM1024_PUBLIC_KEY_SIZE, ED25519_SIGNATURE_SIZE),
        )
        if self.one_time_kem_prekey_id is not None and self.kem_prekey_id is None:
            raise DecodeError("one-time ML-KEM prekey without a last-resort ML-KEM prekey")

    @property
    def post_quantum(self) -> bool:
        """True when the signed prekey has an ML-KEM companion (PQXDH is possible)."""
        return self.kem_prekey is not None

    def to_bytes(self) -> bytes:
        fields: dict[int, object] = {
            _B_VERSION: PROTOCOL_VERSION,
            _B_TYPE: TYPE_PREKEY_BUNDLE,
            _B_IDENTITY: self.identity_key,
            _B_SPK_ID: self.signed_prekey_id,
            _B_SPK: self.signed_prekey,
            _B_SPK_TIME: self.signed_prekey_timestamp,
            _B_SPK_SIG: self.signed_prekey_signature,
        }
        optional = {
            _B_KEM_ID: self.kem_prekey_id,
            _B_KEM: self.kem_prekey,
            _B_OPK_ID: self.one_time_prekey_id,
            _B_OPK: self.one_time_prekey,
            _B_OPK_SIG: self.one_time_prekey_signature,
            _B_OKEM_ID: self.one_time_kem_prekey_id,
            _B_OKEM: self.one_time_kem_prekey,
            _B_OKEM_SIG: self.one_time_kem_prekey_signature,
        }
        fields.update({k: v for k, v in optional.items() if v is not None})
        return codec.encode(fields)

    @classmethod
    def from_bytes(cls, data: bytes) -> PreKeyBundle:
        """Parse a bundle (untrusted input); raises :class:`e2ee.errors.DecodeError`.

        Signatures are not checked here but by :meth:`e2ee.Account.start_session`.
        """
        value = codec.decode(data, max_size=MAX_BUNDLE_SIZE)
        if not isinstance(value, dict):
            raise DecodeError("a prekey bundle is a map")
        check_version_and_type(value.get(_B_VERSION), value.get(_B_TYPE), TYPE_PREKEY_BUNDLE)
        allowed = set(range(_B_VERSION, _B_OKEM_SIG + 1))
        if not set(value) <= allowed:
            raise DecodeError("unknown field in prekey bundle")
        if any(item is None for item in value.values()):
            raise DecodeError("absent fields are left out, never null")
        try:
            return cls(
                identity_key=value[_B_IDENTITY],
                signed_prekey_id=value[_B_SPK_ID],
                signed_prekey=value[_B_SPK],
                signed_prekey_timestamp=value[_B_SPK_TIME],
                signed_prekey_signature=value[_B_SPK_SIG],
                kem_prekey_id=value.get(_B_KEM_ID),
                kem_prekey=value.get(_B_KEM),
                one_time_prekey_id=value.get(_B_OPK_ID),
                one_time_prekey=value.get(_B_OPK),
                one_time_prekey_signature=value.get(_B_OPK_SIG),
                one_time_kem_prekey_id=value.get(_B_OKEM_ID),
                one_time_kem_prekey=value.get(_B_OKEM),
                one_time_kem_prekey_signature=value.get(_B_OKEM_SIG),
            )
        except KeyError:
            raise DecodeError("prekey bundle lacks a required field") from None

    def __repr__(self) -> str:
        return (
            f"PreKeyBundle(signed_prekey_id={self.signed_prekey_id}, "
            f"kem_prekey_id={self.kem_prekey_id}, one_time_prekey_id={self.one_time_prekey_id}, "
            f"one_time_kem_prekey_id={self.one_time_kem_prekey_id})"
        )


def check_version_and_type(version: object, kind: object, expected: int) -> None:
    """spec/wire.md [REQ-WIRE-05]: a version that is missing or not an unsigned integer (a
    CBOR negative integer included) is a DecodeError; only an unsigned one other than
    PROTOCOL_VERSION is unsupported."""
    if type(version) is not int or version < 0:
        raise DecodeError("missing version, or not an unsigned integer")
    if version != PROTOCOL_VERSION:
        raise UnsupportedVersionError(f"unsupported protocol version {version}", version=version)
    if not codec.is_int(kind, expected):
        raise DecodeError("unexpected structure type")


def _check_bytes(value: object, size: int, name: str) -> None:
    if type(value) is not bytes or len(value) != size:
        raise DecodeError(f"{name} must be {size} bytes")


def _check_uint(value: object, maximum: int, name: str) -> None:
    if type(value) is not int or not 0 <= value <= maximum:
        raise DecodeError(f"{name} out of range")


def _check_id(value: object, name: str) -> None:
    _check_uint(value, MAX_COUNTER, name)


def _check_group(name: str, values: tuple[object, ...], sizes: tuple[int | None, ...]) -> None:
    present = [v is not None for v in values]
    if not any(present):
        return
    if not all(present):
        raise DecodeError(f"{name} fields must be all present or all absent")
    for value, size in zip(values, sizes, strict=True):
        if size is None:
            _check_id(value, f"{name} id")
        else:
            _check_bytes(value, size, name)


# --- messages ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InitialFields:
    """The handshake fields an initiator sends with every message until the first reply."""

    identity_key: bytes
    base_key: bytes
    signed_prekey_id: int
    one_time_prekey_id: int | None
    kem_prekey_id: int | None
    kem_ciphertext: bytes | None
    header_encryption: bool

    def encode(self) -> bytes:
        """Canonical encoding of these fields as they appear inside an initial message."""
        return b"".join(
            (
                codec.encode_bytes(self.identity_key),
                codec.encode_bytes(self.base_key),
                codec.encode_uint(self.signed_prekey_id),
                codec.ENCODED_NULL
                if self.one_time_prekey_id is None
                else codec.encode_uint(self.one_time_prekey_id),
                codec.ENCODED_NULL
                if self.kem_prekey_id is None
                else codec.encode_uint(self.kem_prekey_id),
                codec.ENCODED_NULL
                if self.kem_ciphertext is None
                else codec.encode_bytes(self.kem_ciphertext),
                codec.ENCODED_TRUE if self.header_encryption else codec.ENCODED_FALSE,
            )
        )

    def __repr__(self) -> str:
        return (
            f"InitialFields(signed_prekey_id={self.signed_prekey_id}, "
            f"one_time_prekey_id={self.one_time_prekey_id}, "
            f"kem_prekey_id={self.kem_prekey_id}, header_encryption={self.header_encryption})"
        )


MIN_CIPHERTEXT_SIZE = 16 + MESSAGE_TAG_SIZE
MAX_CIPHERTEXT_SIZE = (MAX_PLAINTEXT_SIZE // 16 + 1) * 16 + MESSAGE_TAG_SIZE
"""A padded maximum-size plaintext plus the tag: larger ciphertexts are refused unread."""

_NORMAL_HEAD = codec.encode_array_head(5) + codec.encode_uint(PROTOCOL_VERSION)
_INITIAL_HEAD = codec.encode_array_head(12) + codec.encode_uint(PROTOCOL_VERSION)
_NORMAL_TYPE = codec.encode_uint(TYPE_NORMAL_MESSAGE)
_INITIAL_TYPE = codec.encode_uint(TYPE_INITIAL_MESSAGE)


def message_prefix(session_id: bytes, encoded_initial: bytes | None) -> bytes:
    """Wire bytes before the header: what the header AEAD authenticates."""
    if encoded_initial is None:
        return _NORMAL_HEAD + _NORMAL_TYPE + codec.encode_bytes(session_id)
    return _INITIAL_HEAD + _INITIAL_TYPE + codec.encode_bytes(session_id) + encoded_initial


def normal_message_layout(session_id: bytes, header_encryption: bool) -> bytes:
    """The fixed bytes every normal message of one session starts with: array head, version,
    type, session id and the header's byte-string head. Input to
    :func:`split_normal_message`."""
    size = ENCRYPTED_HEADER_SIZE if header_encryption else HEADER_PLAINTEXT_SIZE
    return message_prefix(session_id, None) + codec.encode_bytes(bytes(size))[:-size]


def split_normal_message(data: bytes, layout: bytes, header_size: int) -> tuple[int, int] | None:
    """Fast path of :func:`parse_message` for the one layout a session expects.

    Returns (offset of the header, offset of the ciphertext bytes) when ``data`` is exactly a
    normal message of that layout, as :func:`parse_message` would accept it; otherwise
    ``None``, and the caller uses :func:`parse_message` (which then reports the error). The
    tests fuzz this against :func:`parse_message`.
    """
    if type(data) is not bytes or not data.startswith(layout):
        return None
    header_start = len(layout)
    head_at = header_start + header_size
    size = len(data)
    if size > MAX_MESSAGE_SIZE or size <= head_at + 1:
        return None
    head = data[head_at]
    if head == 0x58:
        body, length, minimum = head_at + 2, data[head_at + 1], 24
    elif head == 0x59:
        body, length, minimum = head_at + 3, int.from_bytes(data[head_at + 1 : head_at + 3]), 256
    elif head == 0x5A:
        body, length, minimum = head_at + 5, int.from_bytes(data[head_at + 1 : head_at + 5]), 65536
    else:
        return None
    if (
        length < minimum
        or body + length != size
        or not MIN_CIPHERTEXT_SIZE <= length <= MAX_CIPHERTEXT_SIZE
        or (length - MESSAGE_TAG_SIZE) % 16
    ):
        return None
    return header_start, body


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """A structurally valid message; nothing in it is authenticated yet."""

    session_id: bytes
    initial: InitialFields | None
    header: bytes
    ciphertext: bytes
    header_prefix: bytes
    """Wire bytes before the header (associated data of the header AEAD)."""
    mac_prefix: bytes
    """Wire bytes before the ciphertext (covered by the message MAC)."""

    @property
    def header_encrypted(self) -> bool:
        return len(self.header) == ENCRYPTED_HEADER_SIZE


def parse_message(data: bytes) -> ParsedMessage:
    """Parse a wire message (untrusted input); raises :class:`DecodeError` subclasses."""
    items, offsets = codec.read_flat_array(data, MAX_MESSAGE_SIZE)
    if len(items) < 2:
        raise DecodeError("message too short")
    kind = items[1]
    check_version_and_type(items[0], kind, kind if kind in _KINDS else -1)
    if kind == TYPE_NORMAL_MESSAGE:
        if len(items) != 5:
            raise DecodeError("a normal message has 5 fields")
        session_id, header, ciphertext = items[2], items[3], items[4]
        initial = None
        header_index = 3
    else:
        if len(items) != 12:
            raise DecodeError("an initial message has 12 fields")
        session_id, header, ciphertext = items[2], items[10], items[11]
        initial = _parse_initial(items[3:10])
        header_index = 10
        if (len(header) if type(header) is bytes else -1) != (
            ENCRYPTED_HEADER_SIZE if initial.header_encryption else HEADER_PLAINTEXT_SIZE
        ):
            raise DecodeError("header size does not match the header-encryption flag")
    _check_bytes(session_id, SESSION_ID_SIZE, "session_id")
    if type(header) is not bytes or len(header) not in (
        HEADER_PLAINTEXT_SIZE,
        ENCRYPTED_HEADER_SIZE,
    ):
        raise DecodeError("header has the wrong size")
    if (
        type(ciphertext) is not bytes
        or not MIN_CIPHERTEXT_SIZE <= len(ciphertext) <= MAX_CIPHERTEXT_SIZE
        or (len(ciphertext) - MESSAGE_TAG_SIZE) % 16
    ):
        raise DecodeError("ciphertext has an impossible length")
    return ParsedMessage(
        session_id=session_id,  # type: ignore[arg-type]
        initial=initial,
        header=header,
        ciphertext=ciphertext,
        header_prefix=data[: offsets[header_index]],
        mac_prefix=data[: offsets[header_index + 1]],
    )


_KINDS = (TYPE_INITIAL_MESSAGE, TYPE_NORMAL_MESSAGE)


def parse_initial_fields(encoded: bytes) -> InitialFields:
    """Parse the output of :meth:`InitialFields.encode` (as kept in session state)."""
    # The array head says 7 and read_flat_array refuses missing or trailing items.
    items, _ = codec.read_flat_array(codec.encode_array_head(7) + encoded, MAX_MESSAGE_SIZE)
    return _parse_initial(items)


def _parse_initial(items: list[int | bytes | bool | None]) -> InitialFields:
    identity_key, base_key, spk_id, opk_id, kem_id, kem_ct, header_encryption = items
    _check_bytes(identity_key, ED25519_KEY_SIZE, "identity_key")
    _check_bytes(base_key, X25519_KEY_SIZE, "base_key")
    _check_id(spk_id, "signed_prekey_id")
    if opk_id is not None:
        _check_id(opk_id, "one_time_prekey_id")
    if (kem_id is None) != (kem_ct is None):
        raise DecodeError("kem_prekey_id and kem_ciphertext go together")
    if kem_id is not None:
        _check_id(kem_id, "kem_prekey_id")
        _check_bytes(kem_ct, MLKEM1024_CIPHERTEXT_SIZE, "kem_ciphertext")
    if type(header_encryption) is not bool:
        raise DecodeError("header_encryption must be a boolean")
    return InitialFields(
        identity_key=identity_key,  # type: ignore[arg-type]
        base_key=base_key,  # type: ignore[arg-type]
        signed_prekey_id=spk_id,  # type: ignore[arg-type]
        one_time_prekey_id=opk_id,  # type: ignore[arg-type]
        kem_prekey_id=kem_id,  # type: ignore[arg-type]
        kem_ciphertext=kem_ct,  # type: ignore[arg-type]
        header_encryption=header_encryption,
    )
