"""Envelopes: what the client hands to a transport, and the authenticated content inside.

An envelope is addressed to one device (canonical CBOR, spec/client.md)::

    envelope = {0: 1, 1: 34, 2: sender user, 3: sender device, 4: recipient user,
                5: recipient device, 6: message id (16 bytes), 7: e2ee wire message,
                8: sender's signed device list / null}

The routing fields are in clear for the transport. The wire message encrypts the *content*::

    content = {0: 2, 1: 35, 2: message id, 3: conversation user, 4: body, 5: sender user,
               6: sender device}

The receiver checks that the content's message id and sender equal the envelope's, and that
the conversation user is its own user (a message to it) or, when the sender is its own user,
any user (a copy of a message its other device sent). A transport that rewrites the routing
fields therefore gets the message refused, never delivered under another id, from another
sender or to another conversation. (A device key is public: without the sender in the content,
a relay could register a user id whose list names another user's device key and hand that
device's first message over as that user's.)
"""

from __future__ import annotations

from dataclasses import dataclass

from e2ee.errors import DecodeError
from e2ee.identity import MAX_DEVICE_ID, MAX_SIGNED_DEVICE_LIST_SIZE, MAX_USER_ID_SIZE
from e2ee.limits import MAX_MESSAGE_SIZE, MAX_PLAINTEXT_SIZE, TYPE_CONTENT, TYPE_ENVELOPE
from e2ee.wire import codec

ENVELOPE_VERSION = 1
CONTENT_VERSION = 2
"""Version 1 content did not name its sender (spec/client.md section 3); it is refused."""
MESSAGE_ID_SIZE = 16
MAX_BODY_SIZE = MAX_PLAINTEXT_SIZE - 1024
MAX_ENVELOPE_SIZE = MAX_MESSAGE_SIZE + MAX_SIGNED_DEVICE_LIST_SIZE + 1024


@dataclass(frozen=True, slots=True)
class Envelope:
    sender_user: str
    sender_device: int
    recipient_user: str
    recipient_device: int
    message_id: bytes
    payload: bytes
    sender_device_list: bytes | None = None

    def __repr__(self) -> str:
        return (
            f"Envelope({self.sender_user!r}/{self.sender_device} -> "
            f"{self.recipient_user!r}/{self.recipient_device}, id={self.message_id.hex()}, "
            f"{len(self.payload)} bytes)"
        )

    def to_bytes(self) -> bytes:
        return codec.encode(
            {
                0: ENVELOPE_VERSION,
                1: TYPE_ENVELOPE,
                2: self.sender_user.encode(),
                3: self.sender_device,
                4: self.recipient_user.encode(),
                5: self.recipient_device,
                6: self.message_id,
                7: self.payload,
                8: self.sender_device_list,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        """Raises :class:`e2ee.errors.DecodeError`."""
        value = codec.decode(data, max_size=MAX_ENVELOPE_SIZE)
        if (
            not isinstance(value, dict)
            or set(value) != set(range(9))
            or not codec.is_int(value[0], ENVELOPE_VERSION)
            or not codec.is_int(value[1], TYPE_ENVELOPE)
            or type(value[6]) is not bytes
            or len(value[6]) != MESSAGE_ID_SIZE
            or type(value[7]) is not bytes
            or not (value[8] is None or type(value[8]) is bytes)
        ):
            raise DecodeError("not an envelope of this version")
        return cls(
            sender_user=_user(value[2]),
            sender_device=_device(value[3]),
            recipient_user=_user(value[4]),
            recipient_device=_device(value[5]),
            message_id=value[6],
            payload=value[7],
            sender_device_list=value[8],
        )


@dataclass(frozen=True, slots=True)
class Content:
    message_id: bytes
    conversation: str
    body: bytes
    sender_user: str
    sender_device: int

    def __repr__(self) -> str:
        return (
            f"Content(id={self.message_id.hex()}, conversation={self.conversation!r}, "
            f"sender={self.sender_user!r}/{self.sender_device})"
        )

    def to_bytes(self) -> bytes:
        return codec.encode(
            {
                0: CONTENT_VERSION,
                1: TYPE_CONTENT,
                2: self.message_id,
                3: self.conversation.encode(),
                4: self.body,
                5: self.sender_user.encode(),
                6: self.sender_device,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Content:
        value = codec.decode(data, max_size=MAX_PLAINTEXT_SIZE)
        if (
            not isinstance(value, dict)
            or set(value) != set(range(7))
            or not codec.is_int(value[0], CONTENT_VERSION)
            or not codec.is_int(value[1], TYPE_CONTENT)
            or type(value[2]) is not bytes
            or len(value[2]) != MESSAGE_ID_SIZE
            or type(value[4]) is not bytes
        ):
            raise DecodeError("not message content of this version")
        return cls(value[2], _user(value[3]), value[4], _user(value[5]), _device(value[6]))


def _user(value: object) -> str:
    if type(value) is not bytes or not 0 < len(value) <= MAX_USER_ID_SIZE:
        raise DecodeError("malformed user id")
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise DecodeError("user id is not UTF-8") from None


def _device(value: object) -> int:
    if type(value) is not int or not 0 <= value <= MAX_DEVICE_ID:
        raise DecodeError("malformed device id")
    return value
