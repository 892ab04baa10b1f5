"""The e2ee exception tree.

Every exception the library raises on purpose derives from :class:`E2EEError`.

Two branches, in the spirit of h11's local/remote protocol errors:

* :class:`LocalError` -- the caller asked for something the current state cannot do
  (encrypting on a session whose sending chain is exhausted, more one-time prekeys than an
  account may hold). Nothing was changed.
* :class:`RemoteError` -- bytes from the network or from disk were rejected. These are raised only
  on the receive/load path (``from_bytes``, ``decrypt``, ``accept_session``, ``peek``) and the
  object they were called on is left exactly as it was before the call: its ``to_bytes()`` is
  byte-identical.

Each remote leaf has a stable ``category`` string; the test vectors name these as the expected
error of an invalid case. Messages and fields never contain key material.

``TypeError``/``ValueError`` are raised only for programming mistakes of the caller (a ``str``
where ``bytes`` belong, a negative count), never for untrusted input.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "DecodeError",
    "DuplicateMessageError",
    "E2EEError",
    "ExhaustedError",
    "HandshakeError",
    "LocalError",
    "RemoteError",
    "SignatureError",
    "StateError",
    "TooManySkippedError",
    "UnsupportedVersionError",
]


class E2EEError(Exception):
    """Root of every error e2ee raises on purpose."""

    category: str = "e2ee_error"


class LocalError(E2EEError):
    """The caller asked for something the current state cannot do; nothing changed."""

    category = "local_error"


class ExhaustedError(LocalError):
    """A counter or capacity the protocol bounds is used up: prekey ids, the one-time prekey
    cap, or a sending chain's message counter (start a new session)."""

    category = "exhausted"


class RemoteError(E2EEError):
    """Untrusted input (network or disk) was rejected; the receiving object is unchanged."""

    category = "remote_error"


class DecodeError(RemoteError):
    """Bytes are not a well-formed, canonical e2ee structure (or exceed a size limit)."""

    category = "decode_error"


class UnsupportedVersionError(DecodeError):
    """The structure names a protocol or state version this implementation does not speak."""

    category = "unsupported_version"

    def __init__(self, message: str, *, version: int | None = None) -> None:
        super().__init__(message)
        self.version = version


class HandshakeError(RemoteError):
    """A bundle or initial message cannot start a session (unknown prekey, bad key, downgrade)."""

    category = "handshake_failed"


class SignatureError(HandshakeError):
    """A signature made by an identity key does not verify."""

    category = "signature_invalid"


class AuthenticationError(RemoteError):
    """A message failed authentication (forged, tampered, or for another session)."""

    category = "auth_failed"


class DuplicateMessageError(RemoteError):
    """The message key for this message was already used (or discarded): a replay or duplicate."""

    category = "duplicate_message"

    def __init__(self, message: str, *, counter: int | None = None) -> None:
        super().__init__(message)
        self.counter = counter


class TooManySkippedError(RemoteError):
    """Accepting the message would derive more message keys than the limits allow."""

    category = "too_many_skipped"

    def __init__(self, message: str, *, counter: int, limit: int) -> None:
        super().__init__(message)
        self.counter = counter
        self.limit = limit


class StateError(RemoteError):
    """Persisted state is corrupt, truncated, of an unknown version, or under the wrong key."""

    category = "state_corrupt"


# --- client layer (e2ee.client) ------------------------------------------------------------


class UntrustedIdentityError(RemoteError):
    """A known user's identity key changed and the trust policy says block: nothing from or to
    that user is accepted under the new key until the application approves the change."""

    category = "untrusted_identity"

    def __init__(self, message: str, *, user_id: str) -> None:
        super().__init__(message)
        self.user_id = user_id


class DeviceListError(RemoteError):
    """A signed device list is malformed, not signed by the user's identity key, for another
    user, or older than (or conflicting with) the newest list already accepted."""

    category = "device_list_invalid"


class UnknownDeviceError(RemoteError):
    """A message claims a sender device that is not in the sender's newest signed device list,
    or whose identity key differs from the one that list names."""

    category = "unknown_device"


class NoSessionError(RemoteError):
    """A normal message names a session this device does not hold (lost or never created)."""

    category = "no_session"


class StoreError(LocalError):
    """The client store cannot be used: SQLite did not enter WAL journal mode (a database in
    memory, say), the file is not a database or is damaged, the disk is full, or the lock was
    held longer than the busy timeout. The transaction was rolled back: nothing was written."""

    category = "store_unavailable"


class LinkError(RemoteError):
    """A device-linking request or approval is malformed, or its short code does not match."""

    category = "link_failed"


__all__ += [
    "DeviceListError",
    "LinkError",
    "NoSessionError",
    "StoreError",
    "UnknownDeviceError",
    "UntrustedIdentityError",
]


# --- relay (e2ee.relay) --------------------------------------------------------------------


class RelayError(RemoteError):
    """The relay refused a request (raised by the relay's rules, and by the relay client when
    the relay answered with this error). ``status`` is the HTTP status, ``code`` the stable
    machine-readable reason of spec/relay.md; the message never holds tokens or key material."""

    category = "relay_error"
    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class RelayBadRequestError(RelayError):
    """A request body or parameter is malformed, or a signature on uploaded data is invalid."""

    category = "relay_bad_request"
    status = 400
    code = "bad_request"


class RelayMethodNotAllowedError(RelayBadRequestError):
    """The route exists but does not take this HTTP method (the answer's ``Allow`` header
    lists the ones it takes)."""

    category = "relay_method_not_allowed"
    status = 405
    code = "method_not_allowed"


class RelayAuthError(RelayError):
    """Authentication failed: no, unknown or expired token; stale, replayed or forged challenge
    response; a device not on its user's newest device list."""

    category = "relay_unauthorized"
    status = 401
    code = "unauthorized"


class RelayForbiddenError(RelayError):
    """The request is authenticated but not allowed (another user's key, another device)."""

    category = "relay_forbidden"
    status = 403
    code = "forbidden"


class RelayNotFoundError(RelayError):
    """The named user (or route) is unknown to the relay."""

    category = "relay_not_found"
    status = 404
    code = "not_found"


class RelayConflictError(RelayError):
    """The request conflicts with stored state (an older or conflicting device list)."""

    category = "relay_conflict"
    status = 409
    code = "conflict"


class MismatchedDevicesError(RelayConflictError):
    """A send did not address exactly the recipient's current devices: ``missing`` devices
    were left out, ``extra`` ones do not exist, ``stale`` ones have another identity key."""

    category = "relay_mismatched_devices"
    code = "mismatched_devices"

    def __init__(
        self,
        message: str,
        *,
        missing: tuple[int, ...] = (),
        extra: tuple[int, ...] = (),
        stale: tuple[int, ...] = (),
    ) -> None:
        super().__init__(message)
        self.missing = missing
        self.extra = extra
        self.stale = stale


class RelayTooLargeError(RelayError):
    """A body, message, batch or stored count is over its limit (code ``too_large``,
    ``message_too_large`` or ``too_many_keys``); nothing was stored."""

    category = "relay_too_large"
    status = 413
    code = "too_large"


class RelayRateLimitedError(RelayError):
    """Too many requests of this kind (claims per claimer and target); retry after
    ``retry_after`` seconds."""

    category = "relay_rate_limited"
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QueueFullError(RelayError):
    """A recipient device's queue is full; nothing was stored for any device."""

    category = "relay_queue_full"
    status = 507
    code = "queue_full"

    def __init__(self, message: str, *, devices: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.devices = devices


class RelayUnavailableError(RelayError):
    """The relay's storage failed or the relay could not be reached; nothing was stored."""

    category = "relay_unavailable"
    status = 503
    code = "unavailable"


__all__ += [
    "MismatchedDevicesError",
    "QueueFullError",
    "RelayAuthError",
    "RelayBadRequestError",
    "RelayConflictError",
    "RelayError",
    "RelayForbiddenError",
    "RelayMethodNotAllowedError",
    "RelayNotFoundError",
    "RelayRateLimitedError",
    "RelayTooLargeError",
    "RelayUnavailableError",
]
