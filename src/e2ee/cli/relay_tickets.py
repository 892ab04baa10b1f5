"""The operator's side of registration tickets (spec/relay.md section 4.1):
``e2ee relay ticket-key`` and ``e2ee relay ticket``.

``ticket-key --out FILE`` makes a registration authority: 32 random bytes (the Ed25519 seed)
written as 64 hex digits and a newline to a new FILE, readable by its owner only; it prints the
public key, the value of ``e2ee relay serve --registration-key``. ``ticket`` reads that file
(key material never goes on the command line, where ``ps`` shows it) and writes one ticket, the
signed CBOR bytes as they are, which is what ``e2ee init --ticket FILE`` reads. Nothing printed
is secret. Exit status: 0 done, 1 a file could not be read or written (one line on stderr),
2 a bad command line.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from e2ee.cli.client_commands import NAME_RULE, valid_name
from e2ee.cli.files import read_bounded, write_whole
from e2ee.crypto.provider import SystemProvider
from e2ee.limits import ED25519_KEY_SIZE
from e2ee.relay import tickets
from e2ee.relay.rules import RelayConfig
from e2ee.terminal import clean

DEFAULT_LIFETIME = 3600
MAX_LIFETIME = RelayConfig().max_ticket_lifetime
"""A relay refuses a ticket valid for longer (24 h unless its configuration says otherwise)."""


class _Failure(Exception):
    """One line for stderr; never holds key material."""


def add_parsers(
    actions: argparse._SubParsersAction[argparse.ArgumentParser],
    public_key: Callable[[str], bytes],
    integer: Callable[[int, int], Callable[[str], int]],
) -> None:
    key = actions.add_parser(
        "ticket-key",
        help="create a registration authority key file; print its public key",
        description=(
            "Create a registration authority: write its private key (64 hex digits) to FILE, "
            "which must not exist yet and is made readable by its owner only, and print its "
            "public key on stdout, for `e2ee relay serve --registration-key HEX`. The private "
            "key is never printed."
        ),
        epilog="example:\n  e2ee relay ticket-key --out authority.key",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    key.add_argument("--out", type=Path, required=True, metavar="FILE", help="the key file")
    ticket = actions.add_parser(
        "ticket",
        help="issue a registration ticket for a user id and user key",
        description=(
            "Sign a registration ticket with the authority key in KEYFILE, admitting the user "
            "key HEX (what a pending `e2ee init` printed) as the user key of USER at the relay "
            "whose origin is ORIGIN (its --origin; default http://HOST:PORT), valid from now "
            "for SECONDS. Issue one only after your own login checked that the caller owns the "
            "account USER. Writes the ticket's bytes to FILE, for `e2ee init --ticket FILE`."
        ),
        epilog=(
            "example:\n  e2ee relay ticket --key authority.key --origin http://127.0.0.1:8080 "
            "--user alice --user-key 3b6a...c1 --out alice.ticket"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ticket.set_defaults(relay_ticket_parser=ticket)
    ticket.add_argument(
        "--key", type=Path, required=True, metavar="KEYFILE", help="the authority key file"
    )
    ticket.add_argument("--origin", required=True, help="the relay's origin (scheme://host:port)")
    ticket.add_argument("--user", required=True, help="the user id the ticket admits")
    ticket.add_argument(
        "--user-key",
        type=public_key,
        required=True,
        metavar="HEX",
        help="the user's identity public key (64 hex digits)",
    )
    ticket.add_argument(
        "--lifetime",
        type=integer(1, MAX_LIFETIME),
        default=DEFAULT_LIFETIME,
        metavar="SECONDS",
        help=f"seconds the ticket is valid, 1 to {MAX_LIFETIME} (default: {DEFAULT_LIFETIME})",
    )
    ticket.add_argument("--out", type=Path, required=True, metavar="FILE", help="the ticket file")


def run_ticket_key(args: argparse.Namespace) -> int:
    seed = SystemProvider().random_bytes(ED25519_KEY_SIZE)
    try:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        return _fail("ticket-key", f"cannot create {args.out}: {exc.strerror or exc}")
    try:
        with os.fdopen(fd, "w") as file:
            os.fchmod(file.fileno(), 0o600)
            file.write(seed.hex() + "\n")
    except OSError as exc:
        args.out.unlink(missing_ok=True)
        return _fail("ticket-key", f"cannot write {args.out}: {exc.strerror or exc}")
    print(tickets.authority_public_key(seed).hex())
    return 0


def run_ticket(args: argparse.Namespace) -> int:
    if not valid_name(args.user):  # a ticket for a name `init` refuses could never be used
        args.relay_ticket_parser.error(f"argument --user: {NAME_RULE}")
    try:
        seed = _read_key(args.key)
        issued = int(time.time())
        try:
            data = tickets.issue_ticket(
                seed,
                origin=args.origin,
                user_id=args.user,
                user_key=args.user_key,
                issued=issued,
                expires=issued + args.lifetime,
            )
        except ValueError as exc:  # the messages name no key material
            args.relay_ticket_parser.error(str(exc))
        try:
            write_whole(args.out, data)
        except OSError as exc:
            raise _Failure(f"cannot write {args.out}: {exc.strerror or exc}") from None
    except _Failure as exc:
        return _fail("ticket", str(exc))
    until = datetime.datetime.fromtimestamp(issued + args.lifetime, datetime.UTC)
    print(
        clean(
            f"ticket for {args.user} at {args.origin}, valid until "
            f"{until.isoformat(timespec='seconds')}, written to {args.out}"
        )
    )
    return 0


def _read_key(file: Path) -> bytes:
    """The authority seed from its key file: 64 hex digits, surrounding whitespace allowed.
    Like ssh with a private key, a file other users may read or write is refused: whoever
    reads it can register any user id on the relay."""
    try:
        mode = file.stat().st_mode
        if mode & 0o077:
            raise _Failure(
                f"{file} is open to other users (mode {mode & 0o777:03o}); the authority key "
                f"admits anyone who reads it: run chmod 600 {file}"
            )
        text = read_bounded(file, 4 * ED25519_KEY_SIZE)
    except OSError as exc:
        raise _Failure(f"cannot read {file}: {exc.strerror or exc}") from None
    try:
        seed = bytes.fromhex(text.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        seed = b""
    if len(seed) != ED25519_KEY_SIZE:
        raise _Failure(f"{file} is not an authority key file (64 hex digits)")
    return seed


def _fail(command: str, message: str) -> int:
    print(clean(f"e2ee relay {command}: {message}"), file=sys.stderr)
    return 1
