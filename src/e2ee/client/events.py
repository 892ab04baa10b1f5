"""What the client tells the application. Every event is also appended, in the same
transaction as the change it reports, to the store's ``events`` table (see
:meth:`e2ee.client.Client.take_events`), so an event is never lost to a crash."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from e2ee.errors import DecodeError, StateError
from e2ee.wire import codec


@dataclass(frozen=True, slots=True)
class Message:
    """A delivered message. ``outgoing`` is True for a copy of a message one of our own other
    devices sent to ``conversation``."""

    sender_user: str
    sender_device: int
    conversation: str
    message_id: bytes
    body: bytes
    outgoing: bool = False

    def __repr__(self) -> str:
        return (
            f"Message({self.sender_user!r}/{self.sender_device} in {self.conversation!r}, "
            f"id={self.message_id.hex()}, {len(self.body)} bytes)"
        )


EventKind = Literal[
    "identity_new",
    "identity_changed",
    "device_list_changed",
    "session_new",
    "session_replaced",
    "peer_reinstalled",
]


@dataclass(frozen=True, slots=True)
class Event:
    """``kind`` is one of :data:`EventKind`; ``user_id`` the user concerned; ``device_id`` the
    device (or None); ``detail`` a short human-readable note (never key material)."""

    kind: EventKind
    user_id: str
    device_id: int | None = None
    detail: str = ""

    def to_bytes(self) -> bytes:
        return codec.encode(
            [self.kind.encode(), self.user_id.encode(), self.device_id, self.detail.encode()]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Event:
        """Raises :class:`e2ee.errors.StateError` on a corrupt event record."""
        try:
            kind, user, device, detail = codec.decode(data, max_size=4096)
            if device is not None and type(device) is not int:
                raise TypeError("device id")
            return cls(kind.decode(), user.decode(), device, detail.decode())
        except (DecodeError, ValueError, TypeError, AttributeError):
            raise StateError("corrupt event record") from None


@dataclass(frozen=True, slots=True)
class ReceiveResult:
    """The outcome of :meth:`e2ee.client.Client.receive`: ``message`` is None for a duplicate
    (already processed: acknowledge it and move on)."""

    message: Message | None
    events: tuple[Event, ...] = ()
    duplicate: bool = False
