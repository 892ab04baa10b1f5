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


class LinkError(RemoteError):
    """A device-linking request or approval is malformed, or its short code does not match."""

    category = "link_failed"


__all__ += [
    "DeviceListError",
    "LinkError",
    "NoSessionError",
    "UnknownDeviceError",
    "UntrustedIdentityError",
]
