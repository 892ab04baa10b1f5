"""The relay's HTTP API description, shared by the server (:mod:`e2ee.relay.app`) and the
client (:mod:`e2ee.relay.client`): routes, limits, and the bodies' encodings.

Every body is one canonical CBOR map with small integer keys (the codec of :mod:`e2ee.wire`;
spec/relay.md explains why CBOR and lists every field). Text (user ids, error codes) travels
as UTF-8 byte strings, as in envelopes. Decoding is strict: a body that is not exactly the
expected shape raises :class:`~e2ee.errors.RelayBadRequestError`, never anything else.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from e2ee.errors import (
    DecodeError,
    MismatchedDevicesError,
    QueueFullError,
    RelayAuthError,
    RelayBadRequestError,
    RelayConflictError,
    RelayError,
    RelayForbiddenError,
    RelayMethodNotAllowedError,
    RelayNotFoundError,
    RelayRateLimitedError,
    RelayTooLargeError,
    RelayUnavailableError,
)
from e2ee.identity import MAX_DEVICE_ID, MAX_DEVICES, MAX_USER_ID_SIZE
from e2ee.limits import MAX_COUNTER
from e2ee.wire import codec

CONTENT_TYPE = "application/cbor"
API_VERSION = 1

# --- routes --------------------------------------------------------------------------------
CHALLENGE = "/v1/auth/challenge"
LOGIN = "/v1/auth/login"
DEVICE_LIST = "/v1/device-list"  # PUT (publish) and GET ?user= (fetch)
KEYS = "/v1/keys"  # PUT (upload) and GET (counts)
CLAIM = "/v1/claim"
MESSAGES = "/v1/messages"  # POST (send) and GET ?after=&limit= (fetch)
ACK = "/v1/messages/ack"
STREAM = "/v1/stream"  # WebSocket
STREAM_SUPERSEDED = 4409
"""The close code of a stream the same device's newer streams pushed out (REQ-RL-42)."""
HEALTH = "/v1/health"

CHALLENGE_SIZE = 48  # nonce 16 || expiry u64 8 || HMAC-SHA-256 truncated to 24
TOKEN_SIZE = 32
CLAIM_ID_SIZE = 16
CLIENT_MESSAGE_ID_SIZE = 16
MAX_SMALL_BODY = 16 * 1024
"""Bodies of challenge, login, claim and ack requests."""
MAX_ACK_IDS = 1000
MAX_FETCH = 500
WS_ACK_MAX = 64 * 1024

Value = Any


def login_payload(origin: str, challenge: bytes, user: str, device: int) -> bytes:
    """What a device signs (after ``SIG_LABEL_RELAY_LOGIN``) to log in: the relay's origin as
    the client sees it, the challenge, and who logs in. Canonical CBOR, so unambiguous."""
    return codec.encode([origin.encode(), challenge, user.encode(), device])


def encode_token(token: bytes) -> str:
    return base64.urlsafe_b64encode(token).decode().rstrip("=")


def decode_token(text: str) -> bytes | None:
    if len(text) != 43 or not text.isascii():
        return None
    try:
        token = base64.urlsafe_b64decode(text + "=")
    except ValueError:
        return None
    return token if len(token) == TOKEN_SIZE else None


# --- strict field readers --------------------------------------------------------------------


def decode_map(
    data: bytes, keys: set[int], optional: frozenset[int] = frozenset(), *, limit: int
) -> dict[int, Value]:
    try:
        value = codec.decode(data, max_size=limit)
    except DecodeError:
        raise RelayBadRequestError("body is not canonical CBOR", code="malformed") from None
    if not isinstance(value, dict) or not keys <= set(value) <= keys | optional:
        raise RelayBadRequestError("body has missing or unknown fields", code="malformed")
    return value


def user_field(value: Value) -> str:
    if type(value) is not bytes or not 0 < len(value) <= MAX_USER_ID_SIZE:
        raise RelayBadRequestError("malformed user id", code="malformed")
    try:
        return check_user_id(value.decode())
    except UnicodeDecodeError:
        raise RelayBadRequestError("user id is not UTF-8", code="malformed") from None


def check_user_id(user: str) -> str:
    """A user id the relay stores: no U+0000 (REQ-RL-44). PostgreSQL's text cannot hold it, so
    such an id failed there as a storage error (503) while SQLite registered it; both refuse
    it now, before any storage is asked."""
    if "\x00" in user:
        raise RelayBadRequestError("a user id must not contain U+0000", code="malformed")
    return user


def device_field(value: Value) -> int:
    if type(value) is not int or not 0 <= value <= MAX_DEVICE_ID:
        raise RelayBadRequestError("malformed device id", code="malformed")
    return value


def bytes_field(value: Value, size: int | None = None, *, maximum: int | None = None) -> bytes:
    if type(value) is not bytes or (size is not None and len(value) != size):
        raise RelayBadRequestError("malformed byte string field", code="malformed")
    if maximum is not None and len(value) > maximum:
        raise RelayTooLargeError("a field is over its size limit", code="message_too_large")
    return value


def ack_ids(data: bytes, *, limit: int) -> list[int]:
    """The message ids of an acknowledgement ``{0: [id*]}``, an HTTP body or a WebSocket
    frame: at most ``MAX_ACK_IDS`` integers from 0 to 2^63 - 1; anything else is refused."""
    value = decode_map(data, {0}, limit=limit)
    return [uint_field(i, 2**63 - 1) for i in list_field(value[0], MAX_ACK_IDS)]


def uint_field(value: Value, maximum: int = MAX_COUNTER) -> int:
    if type(value) is not int or not 0 <= value <= maximum:
        raise RelayBadRequestError("malformed integer field", code="malformed")
    return value


def list_field(value: Value, maximum: int, *, code: str = "too_large") -> list[Value]:
    if type(value) is not list:
        raise RelayBadRequestError("expected an array", code="malformed")
    if len(value) > maximum:
        raise RelayTooLargeError(f"more than {maximum} items", code=code)
    return value


def user_query(value: str | None) -> str:
    if value is None or not 0 < len(value.encode()) <= MAX_USER_ID_SIZE:
        raise RelayBadRequestError("missing or malformed user parameter", code="malformed")
    return check_user_id(value)


# --- request bodies --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OneTimeKey:
    key_id: int
    public: bytes
    signature: bytes

    def __repr__(self) -> str:
        return f"OneTimeKey(id={self.key_id})"


@dataclass(frozen=True, slots=True)
class KeyUpload:
    signed_bundle: bytes
    one_time: tuple[OneTimeKey, ...]
    one_time_kem: tuple[OneTimeKey, ...]

    def __repr__(self) -> str:
        return f"KeyUpload({len(self.one_time)} EC, {len(self.one_time_kem)} ML-KEM)"

    def to_bytes(self) -> bytes:
        return codec.encode(
            {
                0: self.signed_bundle,
                1: [[k.key_id, k.public, k.signature] for k in self.one_time],
                2: [[k.key_id, k.public, k.signature] for k in self.one_time_kem],
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes, *, max_batch: int, limit: int) -> KeyUpload:
        v = decode_map(data, {0, 1, 2}, limit=limit)
        bundle = bytes_field(v[0])
        kinds: list[tuple[OneTimeKey, ...]] = []
        for field in (1, 2):
            keys = []
            for item in list_field(v[field], max_batch, code="too_many_keys"):
                if type(item) is not list or len(item) != 3:
                    raise RelayBadRequestError("malformed one-time key", code="malformed")
                keys.append(
                    OneTimeKey(uint_field(item[0]), bytes_field(item[1]), bytes_field(item[2], 64))
                )
            if len({k.key_id for k in keys}) != len(keys):
                raise RelayBadRequestError("duplicate one-time key id", code="malformed")
            kinds.append(tuple(keys))
        return cls(bundle, kinds[0], kinds[1])


@dataclass(frozen=True, slots=True)
class SendRequest:
    recipient: str
    client_message_id: bytes
    messages: tuple[tuple[int, bytes, bytes], ...]
    """(device id, the device identity key the sender encrypted to, envelope)."""

    def __repr__(self) -> str:
        return f"SendRequest(to={self.recipient!r}, devices={[m[0] for m in self.messages]})"

    def to_bytes(self) -> bytes:
        return codec.encode(
            {
                0: self.recipient.encode(),
                1: self.client_message_id,
                2: [[d, k, e] for d, k, e in self.messages],
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes, *, max_envelope: int, limit: int) -> SendRequest:
        v = decode_map(data, {0, 1, 2}, limit=limit)
        recipient = user_field(v[0])
        client_id = bytes_field(v[1], CLIENT_MESSAGE_ID_SIZE)
        messages = []
        for item in list_field(v[2], MAX_DEVICES):
            if type(item) is not list or len(item) != 3:
                raise RelayBadRequestError("malformed message entry", code="malformed")
            envelope = bytes_field(item[2], maximum=max_envelope)
            messages.append((device_field(item[0]), bytes_field(item[1], 32), envelope))
        ids = [m[0] for m in messages]
        if not messages or len(set(ids)) != len(ids):
            raise RelayBadRequestError("no devices, or a device named twice", code="malformed")
        return cls(recipient, client_id, tuple(messages))


# --- errors on the wire ----------------------------------------------------------------------

ERROR_CLASSES: dict[str, type[RelayError]] = {
    cls.code: cls
    for cls in (
        RelayBadRequestError,
        RelayMethodNotAllowedError,
        RelayAuthError,
        RelayForbiddenError,
        RelayNotFoundError,
        RelayConflictError,
        MismatchedDevicesError,
        RelayTooLargeError,
        RelayRateLimitedError,
        QueueFullError,
        RelayUnavailableError,
    )
}
STATUS_CLASSES: dict[int, type[RelayError]] = {
    400: RelayBadRequestError,
    401: RelayAuthError,
    403: RelayForbiddenError,
    404: RelayNotFoundError,
    405: RelayMethodNotAllowedError,
    409: RelayConflictError,
    413: RelayTooLargeError,
    429: RelayRateLimitedError,
    507: QueueFullError,
    503: RelayUnavailableError,
}


def error_body(error: RelayError) -> bytes:
    """``{0: code, 1: message, ...}``; mismatched devices add ``2: missing, 3: extra,
    4: stale``, rate limits ``5: retry after (s)``, a full queue ``6: devices``."""
    body: dict[int, Value] = {0: error.code.encode(), 1: str(error).encode()[:200]}
    if isinstance(error, MismatchedDevicesError):
        body.update({2: list(error.missing), 3: list(error.extra), 4: list(error.stale)})
    if isinstance(error, RelayRateLimitedError):
        body[5] = error.retry_after
    if isinstance(error, QueueFullError):
        body[6] = list(error.devices)
    return codec.encode(body)


def _ints(value: Value) -> tuple[int, ...]:
    if type(value) is not list or not all(type(i) is int for i in value):
        return ()
    return tuple(value)


def error_from_response(status: int, data: bytes) -> RelayError:
    """The typed error for an error response of the relay (client side)."""
    cls = STATUS_CLASSES.get(status, RelayUnavailableError if status >= 500 else RelayError)
    try:
        v = codec.decode(data, max_size=MAX_SMALL_BODY)
    except (DecodeError, TypeError):
        v = None
    if not isinstance(v, dict) or type(v.get(0)) is not bytes or type(v.get(1)) is not bytes:
        return cls(f"relay answered HTTP {status}")
    code = v[0].decode(errors="replace")
    message = f"relay answered HTTP {status}: {v[1].decode(errors='replace')}"
    cls = ERROR_CLASSES.get(code, cls)
    if cls is MismatchedDevicesError:
        return MismatchedDevicesError(
            message, missing=_ints(v.get(2)), extra=_ints(v.get(3)), stale=_ints(v.get(4))
        )
    if cls is RelayRateLimitedError:
        retry = v.get(5)
        return RelayRateLimitedError(message, retry_after=retry if type(retry) is int else 1)
    if cls is QueueFullError:
        return QueueFullError(message, devices=_ints(v.get(6)))
    return cls(message, code=code)
