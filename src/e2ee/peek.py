"""Read what a wire message is without decrypting it or changing anything."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from e2ee.wire.messages import parse_message


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """What :func:`peek` can tell from a message's public fields (nothing is authenticated)."""

    kind: Literal["initial", "normal"]
    session_id: bytes
    header_encrypted: bool
    signed_prekey_id: int | None = None
    one_time_prekey_id: int | None = None

    @property
    def is_initial(self) -> bool:
        return self.kind == "initial"


def peek(message: bytes) -> MessageInfo:
    """Classify a message for routing: an initial message whose ``session_id`` the client
    already holds goes to that session's ``decrypt``; a new one to ``accept_session``.

    Raises :class:`e2ee.errors.DecodeError` (or ``UnsupportedVersionError``) on malformed input.
    """
    parsed = parse_message(message)
    if parsed.initial is None:
        return MessageInfo("normal", parsed.session_id, parsed.header_encrypted)
    return MessageInfo(
        "initial",
        parsed.session_id,
        parsed.header_encrypted,
        signed_prekey_id=parsed.initial.signed_prekey_id,
        one_time_prekey_id=parsed.initial.one_time_prekey_id,
    )
