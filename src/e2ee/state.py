"""Versioned persistence: canonical CBOR maps, migrate-on-load, optional encryption at rest.

Every persisted object is a CBOR map whose key 0 is its layout version and key 1 its type.
:func:`load` is the single entry point: it opens the optional sealed envelope, decodes
strictly, checks the type, and runs the migrations from the stored version up to
``STATE_VERSION``. Any failure is a :class:`~e2ee.errors.StateError`.

The sealed envelope (key supplied by the caller, 32 bytes) is XChaCha20-Poly1305 under a key
derived with HKDF, with the envelope version, the object's type, its layout version and its id
(account identity key or session id) as associated data; the loader checks that the id in the
envelope is the id inside the decrypted state. This stops one object's sealed state from being
passed off as another's; it cannot stop an older copy of the *same* object from being
restored (see spec/ratchet.md, "Rollback").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from e2ee.crypto import primitives
from e2ee.crypto.provider import Provider
from e2ee.errors import AuthenticationError, DecodeError, StateError
from e2ee.limits import (
    HEADER_NONCE_SIZE,
    HKDF_ZERO_SALT,
    KDF_INFO_STATE_AT_REST,
    MAX_STATE_SIZE,
    SEALED_STATE_VERSION,
    STATE_VERSION,
    TYPE_SEALED_STATE,
)
from e2ee.wire import codec

StateMap = dict[int, Any]

MIGRATIONS: dict[tuple[int, int], Callable[[StateMap], StateMap]] = {}
"""(type, from_version) -> function producing the map of version from_version + 1."""


def dump(
    kind: int, fields: StateMap, object_id: bytes, key: bytes | None, provider: Provider
) -> bytes:
    body = codec.encode({0: STATE_VERSION, 1: kind, **fields})
    if key is None:
        return body
    _check_key(key)
    nonce = provider.random_bytes(HEADER_NONCE_SIZE)
    sealed = primitives.xchacha20poly1305_encrypt(
        _subkey(key), nonce, body, _sealed_ad(kind, STATE_VERSION, object_id)
    )
    return codec.encode(
        {
            0: SEALED_STATE_VERSION,
            1: TYPE_SEALED_STATE,
            2: kind,
            3: STATE_VERSION,
            4: object_id,
            5: nonce,
            6: sealed,
        }
    )


def load(data: bytes, kind: int, key: bytes | None) -> tuple[StateMap, bytes | None]:
    """Decode, open and migrate; returns the map and the sealed envelope's object id (None for
    unsealed state), which the caller MUST compare with the id inside the map."""
    if not isinstance(data, bytes):
        raise TypeError("state must be bytes")
    try:
        value = codec.decode(data, max_size=MAX_STATE_SIZE)
    except DecodeError as exc:
        raise StateError(f"state does not decode: {exc}") from None
    if not isinstance(value, dict) or type(value.get(0)) is not int:
        raise StateError("state is not a versioned map")
    envelope_id: bytes | None = None
    if codec.is_int(value.get(1), TYPE_SEALED_STATE):
        if key is None:
            raise StateError("state is encrypted; a key is required")
        envelope_id = value.get(4)
        value = _open(value, kind, key)
    elif key is not None:
        raise StateError("state is not encrypted but a key was given")
    if not codec.is_int(value.get(1), kind):
        raise StateError("state is of another type")
    version = value[0]
    if not 1 <= version <= STATE_VERSION:
        raise StateError(f"unsupported state version {version}")
    while version < STATE_VERSION:
        value = MIGRATIONS[(kind, version)](value)
        version += 1
    loaded: StateMap = value
    return loaded, envelope_id


def _open(envelope: StateMap, kind: int, key: bytes) -> StateMap:
    _check_key(key)
    if set(envelope) != {0, 1, 2, 3, 4, 5, 6} or not codec.is_int(
        envelope[0], SEALED_STATE_VERSION
    ):
        raise StateError("unsupported sealed-state envelope")
    inner_kind, version, object_id, nonce, sealed = (envelope[i] for i in range(2, 7))
    if not codec.is_int(inner_kind, kind):
        raise StateError("state is of another type")
    if (
        type(version) is not int
        or not all(isinstance(v, bytes) for v in (object_id, nonce, sealed))
        or len(nonce) != HEADER_NONCE_SIZE
    ):
        raise StateError("malformed sealed-state envelope")
    try:
        body = primitives.xchacha20poly1305_decrypt(
            _subkey(key), nonce, sealed, _sealed_ad(kind, version, object_id)
        )
    except AuthenticationError:
        raise StateError("state does not decrypt under this key") from None
    try:
        value = codec.decode(body, max_size=MAX_STATE_SIZE)
    except DecodeError as exc:
        raise StateError(f"state does not decode: {exc}") from None
    if not isinstance(value, dict) or not codec.is_int(value.get(0), version):
        raise StateError("sealed state does not match its envelope")
    result: StateMap = value
    return result


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != 32:
        raise TypeError("the state key must be 32 bytes")


def _subkey(key: bytes) -> bytes:
    return primitives.hkdf_sha256(HKDF_ZERO_SALT, key, KDF_INFO_STATE_AT_REST, 32)


def _sealed_ad(kind: int, version: int, object_id: bytes) -> bytes:
    return codec.encode([SEALED_STATE_VERSION, TYPE_SEALED_STATE, kind, version, object_id])


class Fields:
    """Typed accessors over a loaded state map; every mismatch is a StateError."""

    __slots__ = ("_map",)

    def __init__(self, value: StateMap) -> None:
        self._map = value

    def _get(self, index: int) -> Any:
        try:
            return self._map[index]
        except KeyError:
            raise StateError(f"state lacks field {index}") from None

    def bytes_(self, index: int, size: int | None = None) -> bytes:
        value = self._get(index)
        if type(value) is not bytes or (size is not None and len(value) != size):
            raise StateError(f"state field {index} is malformed")
        return value

    def optional_bytes(self, index: int, size: int | None = None) -> bytes | None:
        return None if self._get(index) is None else self.bytes_(index, size)

    def uint(self, index: int, maximum: int = 2**64 - 1) -> int:
        value = self._get(index)
        if type(value) is not int or not 0 <= value <= maximum:
            raise StateError(f"state field {index} is malformed")
        return value

    def optional_uint(self, index: int, maximum: int = 2**64 - 1) -> int | None:
        return None if self._get(index) is None else self.uint(index, maximum)

    def boolean(self, index: int) -> bool:
        value = self._get(index)
        if type(value) is not bool:
            raise StateError(f"state field {index} is malformed")
        return value

    def array(self, index: int) -> list[Any]:
        value = self._get(index)
        if type(value) is not list:
            raise StateError(f"state field {index} is malformed")
        return value


def check_bytes(value: Any, size: int) -> bytes:
    if type(value) is not bytes or len(value) != size:
        raise StateError("state holds a malformed key")
    return value


def check_uint(value: Any, maximum: int = 2**64 - 1) -> int:
    if type(value) is not int or not 0 <= value <= maximum:
        raise StateError("state holds a malformed number")
    return value
