"""Registration tickets: how a platform decides who may register a user id on its relay.

By default the first validly self-signed device list of a user id registers it (open
registration: for a demo or a closed test). A platform whose users already have accounts
configures its relay with a *registration authority* key (``RelayConfig.registration_key``,
``e2ee relay serve --registration-key``). The relay then registers a new user id only with a
ticket the platform signed after checking, with its own login, that the caller owns that
account (spec/relay.md, section 4, REQ-RL-38..40)::

    registration-ticket = {0: 1, 1: 38, 2: origin (UTF-8), 3: user id (UTF-8),
                           4: user identity key, 5: issued (s), 6: expires (s)}
    signed-registration-ticket = {0: 1, 1: 39, 2: bstr .cbor registration-ticket,
                                  3: signature}

The signature is Ed25519 by the authority key over ``SIG_LABEL_REGISTRATION_TICKET || field 2``.

A ticket names the user identity key it admits, so a ticket that leaks (a log, a proxy) only
lets someone register the key its owner already chose, and the relay's origin, so a ticket made
for one relay is useless at another. Pure and sans-IO: time comes in as a parameter.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from e2ee.crypto import primitives
from e2ee.errors import DecodeError, RelayBadRequestError, RelayForbiddenError, SignatureError
from e2ee.identity import MAX_USER_ID_SIZE
from e2ee.limits import (
    ED25519_KEY_SIZE,
    ED25519_SIGNATURE_SIZE,
    MAX_COUNTER,
    SIG_LABEL_REGISTRATION_TICKET,
    TYPE_REGISTRATION_TICKET,
    TYPE_SIGNED_REGISTRATION_TICKET,
)
from e2ee.wire import codec

TICKET_VERSION = 1
MAX_TICKET_SIZE = 1024
"""Bytes a signed ticket may take (an origin of up to 512 bytes fits)."""
MAX_ORIGIN_SIZE = 512
CLOCK_SKEW = 300
"""Seconds a ticket's ``issued`` may lie ahead of the relay's clock."""


@dataclass(frozen=True, slots=True)
class RegistrationTicket:
    """A verified ticket (public data: it holds no secret)."""

    origin: str
    user_id: str
    user_key: bytes
    issued: int
    expires: int

    def __repr__(self) -> str:
        return (
            f"RegistrationTicket(user_id={self.user_id!r}, issued={self.issued}, "
            f"expires={self.expires})"
        )


def issue_ticket(
    authority_seed: bytes,
    *,
    origin: str,
    user_id: str,
    user_key: bytes,
    issued: int,
    expires: int,
) -> bytes:
    """A signed ticket admitting ``user_key`` as the user key of ``user_id`` at the relay of
    ``origin`` (``scheme://host:port``, as in ``RelayConfig.origin``) from ``issued`` until
    ``expires`` (Unix seconds). The platform's side: call it only after the caller proved,
    with the platform's own login, that it owns the account ``user_id``."""
    if len(authority_seed) != ED25519_KEY_SIZE:
        raise ValueError("the authority seed is 32 bytes")
    if len(user_key) != ED25519_KEY_SIZE:
        raise ValueError("a user identity key is 32 bytes")
    if not 0 < len(user_id.encode()) <= MAX_USER_ID_SIZE:
        raise ValueError(f"a user id is 1..{MAX_USER_ID_SIZE} bytes of UTF-8")
    if not 0 < len(origin.encode()) <= MAX_ORIGIN_SIZE:
        raise ValueError(f"an origin is 1..{MAX_ORIGIN_SIZE} bytes of UTF-8")
    if not 0 <= issued < expires <= MAX_COUNTER:
        raise ValueError("need 0 <= issued < expires <= 2^32 - 1")
    body = codec.encode(
        {
            0: TICKET_VERSION,
            1: TYPE_REGISTRATION_TICKET,
            2: origin.encode(),
            3: user_id.encode(),
            4: user_key,
            5: issued,
            6: expires,
        }
    )
    signature = primitives.ed25519_sign(authority_seed, SIG_LABEL_REGISTRATION_TICKET + body)
    return codec.encode(
        {0: TICKET_VERSION, 1: TYPE_SIGNED_REGISTRATION_TICKET, 2: body, 3: signature}
    )


def authority_public_key(authority_seed: bytes) -> bytes:
    """The public key a relay is configured with, for the platform's authority seed."""
    if len(authority_seed) != ED25519_KEY_SIZE:
        raise ValueError("the authority seed is 32 bytes")
    return primitives.ed25519_public_key(authority_seed)


def read_ticket(data: bytes, authority_key: bytes) -> RegistrationTicket:
    """Parse a signed ticket strictly and verify it under ``authority_key``. A malformed ticket
    is :class:`RelayBadRequestError` (``bad_ticket``); a signature that does not verify is
    :class:`RelayForbiddenError` (``bad_ticket``). What the ticket says is checked by
    :func:`check_ticket`."""
    ticket, body, signature = _parse(data)
    try:
        primitives.ed25519_verify(authority_key, SIG_LABEL_REGISTRATION_TICKET + body, signature)
    except SignatureError:
        raise RelayForbiddenError(
            "registration ticket is not signed by this relay's authority", code="bad_ticket"
        ) from None
    return ticket


def parse_unverified_ticket(data: bytes) -> RegistrationTicket:
    """What a signed ticket says, parsed as strictly as :func:`read_ticket` (malformed:
    :class:`RelayBadRequestError`, ``bad_ticket``) but NOT verified: for a client, which does
    not hold the authority key, to see before sending whether a ticket names its user id and
    user key. Only the relay's :func:`read_ticket` decides whether a ticket is genuine."""
    return _parse(data)[0]


def _parse(data: bytes) -> tuple[RegistrationTicket, bytes, bytes]:
    try:
        outer = codec.decode(data, max_size=MAX_TICKET_SIZE)
        if (
            not isinstance(outer, dict)
            or set(outer) != {0, 1, 2, 3}
            or not codec.is_int(outer[0], TICKET_VERSION)
            or not codec.is_int(outer[1], TYPE_SIGNED_REGISTRATION_TICKET)
            or type(outer[2]) is not bytes
            or type(outer[3]) is not bytes
            or len(outer[3]) != ED25519_SIGNATURE_SIZE
        ):
            raise DecodeError("not a signed registration ticket of this version")
        body = outer[2]
        inner = codec.decode(body, max_size=MAX_TICKET_SIZE)
        if (
            not isinstance(inner, dict)
            or set(inner) != {0, 1, 2, 3, 4, 5, 6}
            or not codec.is_int(inner[0], TICKET_VERSION)
            or not codec.is_int(inner[1], TYPE_REGISTRATION_TICKET)
            or type(inner[2]) is not bytes
            or not 0 < len(inner[2]) <= MAX_ORIGIN_SIZE
            or type(inner[3]) is not bytes
            or not 0 < len(inner[3]) <= MAX_USER_ID_SIZE
            or type(inner[4]) is not bytes
            or len(inner[4]) != ED25519_KEY_SIZE
            or type(inner[5]) is not int
            or type(inner[6]) is not int
            or not 0 <= inner[5] < inner[6] <= MAX_COUNTER
        ):
            raise DecodeError("malformed registration ticket")
        origin, user_id = inner[2].decode(), inner[3].decode()
    except (DecodeError, UnicodeDecodeError):
        raise RelayBadRequestError("malformed registration ticket", code="bad_ticket") from None
    return RegistrationTicket(origin, user_id, inner[4], inner[5], inner[6]), body, outer[3]


def check_ticket(
    ticket: RegistrationTicket,
    *,
    origin: str,
    user_id: str,
    user_key: bytes,
    now: int,
    max_lifetime: int,
) -> None:
    """Refuse (:class:`RelayForbiddenError`, ``bad_ticket``) a verified ticket that is not for
    this relay, this user id and this user key, not yet or no longer valid at ``now``, or
    valid for longer than ``max_lifetime`` seconds in all."""
    if ticket.origin != origin:
        raise RelayForbiddenError("registration ticket is for another relay", code="bad_ticket")
    if ticket.user_id != user_id or not hmac.compare_digest(ticket.user_key, user_key):
        raise RelayForbiddenError(
            "registration ticket is for another user or user key", code="bad_ticket"
        )
    if ticket.expires - ticket.issued > max_lifetime:
        raise RelayForbiddenError("registration ticket is valid for too long", code="bad_ticket")
    if not ticket.issued - CLOCK_SKEW <= now < ticket.expires:
        raise RelayForbiddenError(
            "registration ticket is not valid at this time", code="bad_ticket"
        )


__all__ = [
    "MAX_TICKET_SIZE",
    "RegistrationTicket",
    "authority_public_key",
    "check_ticket",
    "issue_ticket",
    "parse_unverified_ticket",
    "read_ticket",
]
