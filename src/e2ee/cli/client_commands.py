"""The chat client on the command line: ``e2ee --home DIR init|send|receive|contacts|devices|
fingerprint|verify``.

A home directory holds one device: ``config.json`` (relay URL and user name, nothing secret) and
``device.sqlite`` (the client store of spec/client.md: keys, sessions, trust; the directory and
files are created readable by the owner only). ``config.json`` exists only once the device is
registered. A relay that registers new users only with a ticket from its operator (spec/relay.md
section 4.1) makes ``init`` two steps: the first keeps the store and writes ``pending.json``
(relay URL, user name and the public user key the operator's ticket must name) instead of
``config.json``; ``init --ticket FILE`` registers with the ticket, writes ``config.json`` and
removes ``pending.json``. Every other command refuses a pending home
(:data:`EXIT_REGISTRATION_PENDING`). The client runs with the ``block`` trust policy:
when a contact's user identity key changes, sending to them and reading from them stop until
the new safety number is compared and accepted with ``verify``.

Errors are one line on stderr and a distinct exit status (:data:`EXIT_CODES`). Nothing printed
is secret: user names, device ids, message texts, safety numbers and public-key fingerprints.
Every text from the network, the store or the command line is printed through
:func:`e2ee.terminal.clean`, which escapes control characters: a user id, conversation name,
message text or event detail can neither add a line to the output nor send the terminal an
escape sequence.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import hashlib
import hmac
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from e2ee.cli.files import read_bounded, write_whole
from e2ee.client import Client, Message, ReceiveResult
from e2ee.client import trust as _trust
from e2ee.client.envelope import MAX_BODY_SIZE
from e2ee.errors import (
    E2EEError,
    MismatchedDevicesError,
    RelayBadRequestError,
    RelayConflictError,
    RelayError,
    RelayForbiddenError,
    RelayUnavailableError,
    UntrustedIdentityError,
)
from e2ee.relay import tickets
from e2ee.relay.client import RelayClient, origin_of
from e2ee.safety import safety_number
from e2ee.terminal import clean

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_RELAY_UNREACHABLE = 3
EXIT_UNKNOWN_USER = 4
EXIT_IDENTITY_CHANGED = 5
EXIT_NOTHING_TO_RECEIVE = 6
EXIT_MISMATCH = 7
EXIT_NOT_INITIALISED = 8
EXIT_REGISTRATION_PENDING = 9

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_ERROR: "any other error (the message says which)",
    EXIT_USAGE: "bad command line",
    EXIT_RELAY_UNREACHABLE: "relay unreachable",
    EXIT_UNKNOWN_USER: "unknown user (not registered on the relay)",
    EXIT_IDENTITY_CHANGED: "a contact's identity key changed: compare and `verify` first",
    EXIT_NOTHING_TO_RECEIVE: "receive: nothing to receive",
    EXIT_MISMATCH: "verify: the safety number does not match",
    EXIT_NOT_INITIALISED: "no device in the home directory (run init)",
    EXIT_REGISTRATION_PENDING: "registration waits for a ticket from the relay's operator "
    "(then: init --ticket FILE)",
}

CLIENT_COMMANDS = ("init", "send", "receive", "contacts", "devices", "fingerprint", "verify")
CONFIG = "config.json"
PENDING = "pending.json"
STORE = "device.sqlite"
MAX_NAME = 64


def exit_codes_help() -> str:
    return "exit status:\n" + "\n".join(f"  {c}  {t}" for c, t in EXIT_CODES.items())


class CommandError(Exception):
    """A failure with its exit status; the message is one line and holds nothing secret."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# --- argparse ---------------------------------------------------------------------------------


def add_global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--home",
        type=Path,
        metavar="DIR",
        help="the client's home directory (default: $E2EE_HOME, else ~/.e2ee)",
    )


def add_parsers(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    seconds: Callable[[str], float],
) -> None:
    """The client commands' parsers; ``seconds`` is the argparse type of a wait (a finite
    number above 0 with an upper bound: ``float()`` also reads "nan", "inf" and "1e300")."""

    def add(name: str, help_text: str, description: str, examples: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=help_text,
            description=description,
            epilog=f"examples:\n{examples}\n\n{exit_codes_help()}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    init = add(
        "init",
        "create this device's identity in --home and register it with a relay",
        "Create a new user (user identity key, device key, signed device list) in the home "
        "directory, register it with the relay and publish prekeys.\n\n"
        "A relay that registers new users only with a ticket from its operator: init keeps "
        "the new\nuser in the home, prints 'user id: NAME' and 'user key: HEX' (the public user "
        "identity key)\nand a line saying what to do, and exits with status 9. Send both to the "
        "operator, who\nissues a ticket file (e2ee relay ticket); then `init --ticket FILE` "
        "registers. A refused\nticket leaves the home as it was, to try another one; to start "
        "over, delete the home.",
        "  e2ee --home ~/.e2ee-alice init --relay http://127.0.0.1:8080 --name alice\n"
        "  e2ee --home ~/.e2ee-alice init --ticket alice.ticket",
    )
    init.add_argument("--relay", metavar="URL", help="the relay's base URL")
    init.add_argument("--name", help="your user name on the relay")
    init.add_argument(
        "--ticket",
        type=Path,
        metavar="FILE",
        help="finish a pending registration with the ticket file the relay's operator issued "
        "(the ticket's bytes as `e2ee relay ticket` writes them; no --relay or --name)",
    )

    send = add(
        "send",
        "encrypt a message to every device of NAME (and your other devices)",
        "Encrypt TEXT (or standard input when TEXT is '-' or absent) to every device of NAME "
        "and store it on the relay. Sessions are set up from claimed prekey bundles (PQXDH).",
        "  e2ee send bob 'hello Bob'\n  echo 'hello Bob' | e2ee send bob",
    )
    send.add_argument("name", metavar="NAME", help="the recipient user")
    send.add_argument("text", nargs="?", default="-", metavar="TEXT", help="the message")

    receive = add(
        "receive",
        "fetch, decrypt and print queued messages",
        "Fetch every queued message from the relay, decrypt it, print one line per message "
        "('sender/device: text') and acknowledge it. With --follow keep listening.",
        "  e2ee receive\n  e2ee receive --follow\n  e2ee receive --follow --idle 30",
    )
    receive.add_argument("--follow", action="store_true", help="keep listening (Ctrl-C stops)")
    receive.add_argument(
        "--idle",
        type=seconds,
        metavar="SECONDS",
        help="with --follow: stop after SECONDS without a message, above 0, at most 86400 "
        "(default: never)",
    )

    add(
        "contacts",
        "list the users this device knows, with their verification state",
        "List every user whose identity key this device knows: verified or not, and whether "
        "their identity key changed.",
        "  e2ee contacts",
    )

    devices = add(
        "devices",
        "list the devices of your user (or of NAME)",
        "List the devices on a user's signed device list (refreshed from the relay): device id "
        "and a fingerprint of the device's public identity key.",
        "  e2ee devices\n  e2ee devices bob",
    )
    devices.add_argument("name", nargs="?", metavar="NAME", help="another user (default: you)")

    fingerprint = add(
        "fingerprint",
        "show the safety number you and NAME compare",
        "Show the 60-digit safety number of you and NAME; both of you see the same number. "
        "Compare it in person or over a trusted channel, then run verify.",
        "  e2ee fingerprint bob",
    )
    fingerprint.add_argument("name", metavar="NAME", help="the contact")

    verify = add(
        "verify",
        "mark NAME verified after comparing the safety number",
        "Check NUMBER (the 60 digits NAME's device shows; spaces allowed) against your own "
        "safety number with NAME and mark NAME verified if it matches. After an identity "
        "change, a matching number accepts NAME's new identity key.",
        "  e2ee verify bob '12345 67890 ... 12345'",
    )
    verify.add_argument("name", metavar="NAME", help="the contact")
    verify.add_argument("number", nargs="+", metavar="NUMBER", help="the 60-digit safety number")


# --- home directory ---------------------------------------------------------------------------


def home_dir(option: Path | None) -> Path:
    """``--home``, else ``$E2EE_HOME``, else ``~/.e2ee``, with ``~`` expanded. A ``~user`` of
    no such user (or a home directory nobody can tell) is a bad command line, not a
    ``RuntimeError``."""
    env = os.environ.get("E2EE_HOME")
    given, source = (option, "--home") if option is not None else (env, "E2EE_HOME")
    try:
        if given:
            return Path(given).expanduser()
        return Path.home() / ".e2ee"
    except RuntimeError:
        where = f"{source} {str(given)!r}" if given else "~/.e2ee (the default home)"
        raise CommandError(
            EXIT_USAGE, f"{where}: cannot expand ~ (no such user, or no home directory)"
        ) from None


class Home:
    def __init__(self, path: Path) -> None:
        self.path = path
        config = path / CONFIG
        if not config.is_file() and (path / PENDING).exists():
            pending = _read_pending(path)
            raise CommandError(
                EXIT_REGISTRATION_PENDING,
                f"the registration of {pending.name} at {pending.relay} in {path} is pending; "
                f"finish it with: e2ee --home {path} init --ticket FILE",
            )
        if not config.is_file() or not (path / STORE).is_file():
            raise CommandError(
                EXIT_NOT_INITIALISED, f"no device in {path}; run: e2ee --home {path} init"
            )
        data = _read_home_file(config, ("relay", "name"))
        self.relay_url, self.name = data["relay"], data["name"]
        self.client = Client.open(path / STORE, policy="block")
        self.relay = RelayClient(self.relay_url, self.client)

    def close(self) -> None:
        self.relay.close()
        self.client.close()


@contextlib.contextmanager
def _open(args: argparse.Namespace) -> Iterator[Home]:
    home = Home(home_dir(args.home))
    try:
        yield home
    finally:
        home.close()


NAME_RULE = f"a user name is 1 to {MAX_NAME} printable characters"


def valid_name(name: str) -> bool:
    """What ``init --name`` takes (and ``relay ticket --user`` issues tickets for): 1 to
    MAX_NAME printable characters, no leading or trailing space."""
    return 0 < len(name) <= MAX_NAME and name.isprintable() and name == name.strip()


def _check_name(name: str) -> str:
    if not valid_name(name):
        raise CommandError(EXIT_USAGE, NAME_RULE)
    return name


@dataclasses.dataclass(frozen=True)
class _Pending:
    """A registration waiting for a ticket: ``pending.json`` (nothing secret in it)."""

    relay: str
    name: str
    user_key: bytes


MAX_HOME_FILE = 64 * 1024
"""``config.json`` and ``pending.json`` hold a URL, a name and a key: far less than this."""


def _read_home_file(file: Path, fields: tuple[str, ...]) -> dict[str, str]:
    """The string ``fields`` of a JSON object in ``file``: read from disk, so untrusted like
    any input (bounded, and anything else is one line saying the file is unreadable, never a
    traceback). ``relay`` must be an http(s) URL the relay client accepts."""
    try:
        raw = read_bounded(file, MAX_HOME_FILE)
        if len(raw) > MAX_HOME_FILE:
            raise ValueError("too large")
        data = json.loads(raw.decode("utf-8"))
        values = {name: data[name] for name in fields}
        if not all(isinstance(value, str) for value in values.values()):
            raise ValueError("not a string")
        if "relay" in values:
            origin_of(values["relay"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        raise CommandError(EXIT_ERROR, f"{file} is unreadable") from None
    return values


def _read_pending(path: Path) -> _Pending:
    file = path / PENDING
    data = _read_home_file(file, ("relay", "name", "user_key"))
    try:
        pending = _Pending(data["relay"], data["name"], bytes.fromhex(data["user_key"]))
    except ValueError:
        raise CommandError(EXIT_ERROR, f"{file} is unreadable") from None
    if len(pending.user_key) != 32:
        raise CommandError(EXIT_ERROR, f"{file} is unreadable")
    return pending


def _write_json(file: Path, data: dict[str, str]) -> None:
    """Write ``file`` whole or not at all (:func:`e2ee.cli.files.write_whole`)."""
    write_whole(file, (json.dumps(data) + "\n").encode())


def _pending_lines(path: Path, pending: _Pending) -> None:
    """What the operator needs (the user id and the PUBLIC user key) and what to do next."""
    print(clean(f"user id: {pending.name}"))
    print(f"user key: {pending.user_key.hex()}")
    print(
        clean(
            "next: send these two lines to the relay's operator; with the ticket file they "
            f"send back, run: e2ee --home {path} init --ticket FILE"
        )
    )


def _note(text: str) -> None:
    """One line on stderr; ``text`` may hold user ids and error messages from the network."""
    print(f"e2ee: {clean(text)}", file=sys.stderr)


# --- commands ---------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    path = home_dir(args.home)
    if args.ticket is not None:
        if args.relay is not None or args.name is not None:
            raise CommandError(
                EXIT_USAGE, "init --ticket finishes the pending registration: no --relay or --name"
            )
        return _finish_init(path, args.ticket)
    if args.relay is None or args.name is None:
        raise CommandError(EXIT_USAGE, "init needs --relay URL and --name NAME (or --ticket FILE)")
    name = _check_name(args.name)
    relay_url = args.relay.rstrip("/")
    if (path / PENDING).exists() and not (path / CONFIG).exists():
        waiting = _read_pending(path)
        _pending_lines(path, waiting)
        raise CommandError(
            EXIT_REGISTRATION_PENDING,
            f"the registration of {waiting.name} at {waiting.relay} in {path} is pending (its "
            f"user key is kept); finish it with --ticket FILE, or delete {path} to start over",
        )
    if (path / CONFIG).exists():
        raise CommandError(EXIT_ERROR, f"{path} already holds a device")
    resumed = (path / STORE).exists()
    if resumed:
        # neither config.json nor pending.json: an init that stopped after it made the store
        # (interrupted, or config.json could not be written); the relay may hold its user key
        # already, and a new store would lose the name: finish with this one
        client = Client.open(path / STORE, policy="block")
        if client.user_id != name:
            client.close()
            raise CommandError(
                EXIT_ERROR,
                f"{path} holds an unfinished registration of {client.user_id!r}, not {name!r}; "
                f"run init with --name {client.user_id}, or delete {path} to start over",
            )
    else:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(OSError):
            path.chmod(0o700)
        client = Client.create(path / STORE, name, policy="block")
    keep = resumed  # a store the relay may know is never deleted
    pending: _Pending | None = None
    try:
        for file in path.iterdir():
            if file.name.startswith(STORE):
                file.chmod(0o600)
        with RelayClient(relay_url, client) as relay:
            try:
                relay.publish_device_list()
            except RelayForbiddenError as exc:
                if exc.code != "ticket_required":
                    raise CommandError(
                        EXIT_ERROR, f"the name {name!r} is taken on this relay"
                    ) from None
                user_key = client.user_key
                assert user_key is not None  # Client.create trusts its own user key
                pending = _Pending(relay_url, name, user_key)
                _write_json(
                    path / PENDING,
                    {"relay": relay_url, "name": name, "user_key": user_key.hex()},
                )
                keep = True
            else:
                keep = True  # the relay holds this user key now: never delete it
                _publish_first_prekeys(relay)
                _write_json(path / CONFIG, {"relay": relay_url, "name": name})
    finally:
        client.close()
        if not keep:  # leave nothing half made: init can simply be run again
            for file in path.iterdir():
                if file.name.startswith(STORE):
                    file.unlink()
    if pending is not None:
        _note(
            "this relay registers new users only with a registration ticket from its operator; "
            "the registration is pending"
        )
        _pending_lines(path, pending)
        return EXIT_REGISTRATION_PENDING
    print(clean(f"{name}: device 1 registered at {relay_url} (home {path})"))
    return EXIT_OK


def _read_ticket_file(file: Path) -> bytes:
    """The ticket file's bytes (untrusted: bounded, and parsed before anything is sent)."""
    try:
        data = read_bounded(file, tickets.MAX_TICKET_SIZE)
    except OSError as exc:
        raise CommandError(EXIT_ERROR, f"cannot read {file}: {exc.strerror or exc}") from None
    if len(data) > tickets.MAX_TICKET_SIZE:
        raise CommandError(
            EXIT_ERROR,
            f"{file} is not a registration ticket (over {tickets.MAX_TICKET_SIZE} bytes)",
        )
    return data


def _publish_first_prekeys(relay: RelayClient) -> None:
    """Upload the prekeys of a device whose registration the relay accepted. A failure does
    not undo the registration (the relay holds the user key, and deleting the store would
    lose the name): the home is kept and the next `e2ee receive` uploads them (REQ-RL-43)."""
    try:
        relay.publish_prekeys()
    except E2EEError as exc:
        _note(
            f"registered, but the prekeys could not be uploaded ({exc.category}); until "
            "`e2ee receive` uploads them, no one can start a conversation with this device"
        )


def _registered_already(relay: RelayClient) -> bool:
    """Whether the relay takes this user's device list without a ticket: it already holds
    this user key (an earlier `init --ticket` got as far as that), or registers without
    tickets now. A registration must not depend on a ticket that was used or has expired."""
    try:
        relay.publish_device_list()
    except RelayError:
        return False
    return True


def _finish_init(path: Path, ticket_file: Path) -> int:
    if (path / CONFIG).exists():
        raise CommandError(EXIT_ERROR, f"{path} already holds a registered device")
    if not (path / PENDING).exists() or not (path / STORE).is_file():
        raise CommandError(
            EXIT_NOT_INITIALISED,
            f"no registration is pending in {path}; run: e2ee --home {path} init --relay URL "
            "--name NAME",
        )
    pending = _read_pending(path)
    data = _read_ticket_file(ticket_file)
    try:
        said = tickets.parse_unverified_ticket(data)
    except RelayBadRequestError:
        raise CommandError(EXIT_ERROR, f"{ticket_file} is not a registration ticket") from None
    client = Client.open(path / STORE, policy="block")
    try:
        user_key = client.user_key
        if (
            pending.name != client.user_id
            or user_key is None
            or not hmac.compare_digest(pending.user_key, user_key)
        ):
            raise CommandError(
                EXIT_ERROR,
                f"{path / PENDING} does not match the device store in {path}; delete {path} "
                "and run init again",
            )
        if said.user_id != client.user_id or not hmac.compare_digest(said.user_key, user_key):
            raise CommandError(
                EXIT_ERROR,
                f"{ticket_file} is a ticket for another user or user key (it names "
                f"{said.user_id!r}); the registration stays pending",
            )
        with RelayClient(pending.relay, client) as relay:
            try:
                relay.publish_device_list(ticket=data)
            except (RelayForbiddenError, RelayBadRequestError) as exc:
                if exc.code == "user_key_mismatch":
                    raise CommandError(
                        EXIT_ERROR,
                        f"the name {pending.name!r} is taken on this relay; delete {path} and "
                        "run init with another name",
                    ) from None
                if exc.code != "bad_ticket" or not _registered_already(relay):
                    raise CommandError(
                        EXIT_ERROR,
                        f"the relay refused the ticket ({exc.code}: {exc}); the registration "
                        "stays pending: try another ticket",
                    ) from None
            _publish_first_prekeys(relay)
        _write_json(path / CONFIG, {"relay": pending.relay, "name": pending.name})
    finally:
        client.close()
    (path / PENDING).unlink()
    print(clean(f"{pending.name}: device 1 registered at {pending.relay} (home {path})"))
    return EXIT_OK


def _read_stdin() -> str:
    """Standard input, one final newline dropped; at most MAX_BODY_SIZE + 2 characters are
    read (a character is at least one byte of the body, and one more is the newline), so a
    message too large for the client is refused without reading the rest."""
    if sys.stdin is None:  # closed (e2ee send bob <&-)
        return ""
    text = sys.stdin.read(MAX_BODY_SIZE + 2)
    return text[:-1] if text.endswith("\n") else text


def cmd_send(args: argparse.Namespace) -> int:
    text = _read_stdin() if args.text == "-" else args.text
    if not text:
        raise CommandError(EXIT_USAGE, "nothing to send (empty message)")
    if len(text) > MAX_BODY_SIZE or len(text.encode()) > MAX_BODY_SIZE:
        raise CommandError(EXIT_USAGE, f"body is larger than {MAX_BODY_SIZE} bytes")
    with _open(args) as home:
        if home.relay.device_list(args.name) is None:
            raise CommandError(EXIT_UNKNOWN_USER, f"unknown user {args.name!r} on this relay")
        try:
            home.relay.send(args.name, text.encode())
        except MismatchedDevicesError:  # the device list moved on between fetch and send
            home.relay.send(args.name, text.encode())
        _report_events(home.client)
    print(clean(f"sent to {args.name}"))
    return EXIT_OK


def _format(message: Message, own: str) -> str:
    """One line: sender user, conversation and text all come from the network."""
    text = message.body.decode("utf-8", errors="replace")
    if message.outgoing:
        return clean(f"{own}/{message.sender_device} -> {message.conversation}: {text}")
    return clean(f"{message.sender_user}/{message.sender_device}: {text}")


def _show_inbox(home: Home) -> int:
    """Print every message the client store delivered and this command has not shown yet,
    oldest first, and only then take them out of the store; the number printed.

    The store's inbox is the durable record of what was received (spec/client.md): a
    ``Client.receive`` commits the message there in the transaction that decrypts it, before
    the relay client acknowledges it and long before ``RelayClient.receive`` returns its
    report. Printing from the report lost a message for good when anything failed in between
    (an acknowledgement or a later page, Ctrl-C): the relay redelivers it, the store calls it a
    duplicate, and nothing prints it. The inbox is read first and emptied only after every
    line was written: a crash or a broken pipe in between leaves the messages there, and the
    next receive prints them again. Printing a message twice is the lesser evil.

    ``Client.inbox(take=True)`` removes every row it returns, so a message another process of
    this home committed between the read and the take (two receives at once) is removed too:
    it comes back from the take and is printed right after it. Only a crash in that instant
    loses it from view; closing that window would need a client call that removes given
    messages only."""
    shown = home.client.inbox()
    if not shown:
        return 0
    for message in shown:
        print(_format(message, home.name), flush=True)
    printed = collections.Counter(_inbox_key(message) for message in shown)
    count = len(shown)
    del shown
    for message in home.client.inbox(take=True):
        key = _inbox_key(message)
        if printed[key]:
            printed[key] -= 1
            continue
        print(_format(message, home.name), flush=True)
        count += 1
    return count


def _inbox_key(message: Message) -> tuple[str, int, bytes]:
    """What tells one delivered message from another: the store delivers a (sender user,
    device, message id) once (the ``processed`` table)."""
    return (message.sender_user, message.sender_device, message.message_id)


def _show_inbox_after_failure(home: Home) -> None:
    """Print what was delivered before a receive failed; the receive's own error is what the
    command reports, so a failure to read the inbox now leaves it for the next receive."""
    with contextlib.suppress(E2EEError):
        _show_inbox(home)


def _report_events(client: Client) -> None:
    for event in client.take_events():
        if event.kind == "identity_changed":
            _note(f"the identity key of {event.user_id} changed ({event.detail})")
        elif event.kind == "peer_reinstalled":
            _note(f"{event.user_id}/{event.device_id} was reinstalled (device key changed)")
        elif event.kind == "device_list_changed":
            _note(f"{event.user_id}'s devices changed: {event.detail}")


def _pending(client: Client) -> list[str]:
    return [known.user_id for known in client.known_identities() if known.pending]


PREKEY_CHECK_INTERVAL = 3600.0
"""How often ``receive --follow`` refills prekeys when no new session asked for it sooner."""


def _refill_prekeys(home: Home) -> None:
    """Rotate the signed prekey when due and replace the one-time keys the relay handed out
    (:meth:`RelayClient.publish_prekeys`). Without it a device would be reachable only with
    the keys of its ``init``: initiators refuse a signed prekey over 30 days old. A failure
    is noted and leaves the receive's outcome alone: the next receive tries again."""
    try:
        home.relay.publish_prekeys()
    except E2EEError as exc:
        _note(
            f"could not refill this device's prekeys at the relay ({exc.category}); "
            "the next receive tries again"
        )


def _started_session(result: ReceiveResult) -> bool:
    return any(e.kind in ("session_new", "session_replaced") for e in result.events)


def cmd_receive(args: argparse.Namespace) -> int:
    with _open(args) as home:
        try:
            report = home.relay.receive()
        except BaseException:  # what was committed before the failure is shown all the same
            _show_inbox_after_failure(home)
            raise
        _refill_prekeys(home)  # first: a damaged inbox row fails _show_inbox on every run
        count = _show_inbox(home)
        for _, category in report.refused:
            _note(f"a message could not be read ({category}); dropped")
        _report_events(home.client)
        if report.more:  # the relay client stops after MAX_PAGES pages (REQ-RL-33)
            _note("more messages are queued than one receive takes; run `e2ee receive` again")
        pending = _pending(home.client) if report.kept else []
        if pending:
            names = ", ".join(pending)
            raise CommandError(
                EXIT_IDENTITY_CHANGED,
                f"identity key of {names} changed; messages wait until you compare "
                f"`e2ee fingerprint NAME` and run `e2ee verify NAME NUMBER`",
            )
        if report.kept:  # a local failure (StateError, LocalError): not "nothing to receive"
            kept, stay = (
                (f"{report.kept} messages", "stay") if report.kept > 1 else ("1 message", "stays")
            )
            problem = (
                f"{kept} could not be processed on this device (a local failure, such as a "
                f"damaged store) and {stay} queued at the relay"
            )
            if not args.follow:
                raise CommandError(EXIT_ERROR, problem)
            _note(problem)  # --follow still delivers everything else
        if not args.follow:
            if count == 0 and not report.more:
                raise CommandError(EXIT_NOTHING_TO_RECEIVE, "nothing to receive")
            return EXIT_OK
        return _follow(home, args.idle)


MAX_RECONNECT_PAUSE = 10.0
"""Longest wait of ``receive --follow`` before it reopens a stream the relay kept closing."""


def _follow(home: Home, idle: float | None) -> int:
    """Print what the stream pushes, reopening it when it ends, until ``idle`` seconds pass
    without a message (forever without ``idle``). A stream that ends within a second with
    nothing pushed (the relay cannot serve it now) is reopened after a pause that doubles up
    to MAX_RECONNECT_PAUSE. A stream replaced by a newer one of this device (another
    ``receive --follow`` of the same home) ends the command: reopening it would push that one
    out in turn, and the two would take turns for ever. Messages are printed from the store's
    inbox (:func:`_show_inbox`), after each push and once more however the command ends, so
    one committed just before Ctrl-C or a failure of the stream is printed too."""
    try:
        return _follow_stream(home, idle)
    except KeyboardInterrupt:
        _show_inbox_after_failure(home)
        return EXIT_OK
    except BaseException:
        _show_inbox_after_failure(home)
        raise


def _follow_stream(home: Home, idle: float | None) -> int:
    last = refilled = time.monotonic()
    window = 30.0 if idle is None else max(0.1, idle)
    pause = 0.0
    while True:
        opened, pushed = time.monotonic(), False
        if opened - refilled >= PREKEY_CHECK_INTERVAL:
            _refill_prekeys(home)
            refilled = opened
        try:
            for _, result in home.relay.stream(idle_timeout=window):
                pushed = True
                if result is not None:
                    _show_inbox(home)
                    _report_events(home.client)
                    last = time.monotonic()
                # after a first message (it used a one-time key), and hourly also on a stream
                # that never goes quiet long enough to be reopened
                if (result is not None and _started_session(result)) or (
                    time.monotonic() - refilled >= PREKEY_CHECK_INTERVAL
                ):
                    _refill_prekeys(home)
                    refilled = time.monotonic()
                if idle is not None and time.monotonic() - last >= idle:
                    return EXIT_OK
        except RelayConflictError as exc:
            if exc.code != "stream_superseded":
                raise
            raise CommandError(
                EXIT_ERROR,
                "another `receive --follow` of this device took over its stream from the "
                "relay; this one stops",
            ) from None
        left = None if idle is None else idle - (time.monotonic() - last)
        if left is not None and left <= 0:
            return EXIT_OK
        if pushed or time.monotonic() - opened >= 1.0:
            pause = 0.0
            continue
        pause = min(max(2 * pause, 0.5), MAX_RECONNECT_PAUSE)
        if left is not None and left <= pause:  # --idle ends during this pause
            time.sleep(left)
            return EXIT_OK
        time.sleep(pause)


def cmd_contacts(args: argparse.Namespace) -> int:
    with _open(args) as home:
        contacts = [k for k in home.client.known_identities() if k.user_id != home.name]
        if not contacts:
            print("no contacts yet (send or receive a message first)")
        for contact in contacts:
            state = "verified" if contact.verified else "not verified"
            if contact.pending:
                state = "IDENTITY CHANGED (compare `e2ee fingerprint` and `verify`)"
            print(f"{clean(contact.user_id)}\t{state}")
    return EXIT_OK


def _refresh(home: Home, name: str) -> bool:
    """Fetch ``name``'s device list from the relay into the store; False if the relay has none.
    An identity change is recorded as pending (and reported by the caller)."""
    data = home.relay.device_list(name)
    if data is None:
        return False
    with contextlib.suppress(UntrustedIdentityError):
        home.client.process_device_list(data, name)
    return True


def cmd_devices(args: argparse.Namespace) -> int:
    from e2ee.client import devices as _devices

    with _open(args) as home:
        name = args.name or home.name
        if not _refresh(home, name) and home.client.identity_key_of(name) is None:
            raise CommandError(EXIT_UNKNOWN_USER, f"unknown user {name!r} on this relay")
        with home.client.store.transaction() as conn:
            listed = _devices.stored_list(conn, name)
        if listed is None:
            raise CommandError(EXIT_UNKNOWN_USER, f"no device list known for {name!r}")
        own = home.client.device_id
        print(clean(f"{name}: device list #{listed.counter}"))
        for device, key in listed.devices:
            marker = "  (this device)" if name == home.name and device == own else ""
            print(f"  {device}\tkey {hashlib.sha256(key).hexdigest()[:16]}{marker}")
    return EXIT_OK


@dataclasses.dataclass(frozen=True)
class _Numbers:
    """A contact's safety numbers, read in one transaction, with the keys they were computed
    for (so that what the user compared is what gets approved and verified)."""

    current: str
    key: bytes
    pending: str | None = None
    pending_key: bytes | None = None


def _numbers(home: Home, name: str) -> _Numbers | None:
    with home.client.store.transaction() as conn:
        known = _trust.identity(conn, name)
        own = _trust.identity(conn, home.name)
    if known is None or own is None:
        return None
    current = safety_number(own[0], home.name, known[0], name).digits
    if known[2] is None:
        return _Numbers(current, known[0])
    pending = safety_number(own[0], home.name, known[2], name).digits
    return _Numbers(current, known[0], pending, known[2])


def _groups(digits: str) -> str:
    return " ".join(digits[i : i + 5] for i in range(0, len(digits), 5))


def cmd_fingerprint(args: argparse.Namespace) -> int:
    with _open(args) as home:
        if args.name == home.name:
            raise CommandError(EXIT_USAGE, "a safety number is between you and another user")
        if not _refresh(home, args.name) and home.client.identity_key_of(args.name) is None:
            raise CommandError(EXIT_UNKNOWN_USER, f"unknown user {args.name!r} on this relay")
        numbers = _numbers(home, args.name)
        if numbers is None:
            raise CommandError(EXIT_UNKNOWN_USER, f"no identity key known for {args.name!r}")
        if numbers.pending is not None:
            print(_groups(numbers.pending))
            raise CommandError(
                EXIT_IDENTITY_CHANGED,
                f"the identity key of {args.name} changed: compare the new number above, then "
                f"`e2ee verify {args.name} NUMBER` to accept it",
            )
        print(_groups(numbers.current))
        state = "verified" if home.client.is_verified(args.name) else "not verified"
        _note(f"{args.name} is {state}; both of you should see this number")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    digits = "".join(args.number).replace(" ", "").replace("-", "")
    # ASCII only: str.isdigit() also takes "\u0661" and "\u00b2", which compare_digest refuses
    if len(digits) != 60 or not (digits.isascii() and digits.isdigit()):
        raise CommandError(EXIT_USAGE, "a safety number is 60 digits")
    with _open(args) as home:
        with contextlib.suppress(RelayUnavailableError):
            _refresh(home, args.name)  # verifying in person works offline too
        numbers = _numbers(home, args.name)
        if numbers is None:
            raise CommandError(EXIT_UNKNOWN_USER, f"no identity key known for {args.name!r}")
        # Approve and verify exactly the key whose number was compared: another key that
        # became pending meanwhile (a concurrent receive) is neither accepted nor verified.
        key = numbers.key
        if numbers.pending is not None and numbers.pending_key is not None:
            if not hmac.compare_digest(numbers.pending, digits):
                raise CommandError(EXIT_MISMATCH, f"safety number does not match {args.name}'s")
            key = numbers.pending_key
            if not home.client.approve_identity(args.name, key=key):
                raise CommandError(EXIT_MISMATCH, f"{args.name}'s identity key changed meanwhile")
            home.client.take_events()
        elif not hmac.compare_digest(numbers.current, digits):
            raise CommandError(EXIT_MISMATCH, f"safety number does not match {args.name}'s")
        if not home.client.mark_verified(args.name, key=key):
            raise CommandError(EXIT_MISMATCH, f"{args.name}'s identity key changed meanwhile")
    accepted = " (new identity key accepted)" if numbers.pending else ""
    print(clean(f"{args.name} verified{accepted}"))
    return EXIT_OK


COMMANDS = {
    "init": cmd_init,
    "send": cmd_send,
    "receive": cmd_receive,
    "contacts": cmd_contacts,
    "devices": cmd_devices,
    "fingerprint": cmd_fingerprint,
    "verify": cmd_verify,
}


def run(args: argparse.Namespace) -> int:
    """Run one client command; every failure is one line on stderr and its exit status."""
    relay = getattr(args, "relay", None)
    try:
        return COMMANDS[args.command](args)
    except CommandError as exc:
        _note(str(exc))
        return exc.code
    except RelayUnavailableError:
        where = relay or _configured_relay(args)
        _note(f"relay unreachable{' at ' + where if where else ''}")
        return EXIT_RELAY_UNREACHABLE
    except UntrustedIdentityError as exc:
        user = exc.user_id or "a contact"
        _note(
            f"the identity key of {user} changed; compare `e2ee fingerprint {user}` with them "
            f"and run `e2ee verify {user} NUMBER` to accept it"
        )
        return EXIT_IDENTITY_CHANGED
    except RelayError as exc:
        _note(f"relay refused: {exc.category}: {exc}")
        return EXIT_ERROR
    except E2EEError as exc:
        _note(f"{exc.category}: {exc}")
        return EXIT_ERROR
    except ValueError as exc:
        _note(str(exc))
        return EXIT_USAGE
    except OSError as exc:
        _note(f"{type(exc).__name__}: {exc.strerror or exc}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def _configured_relay(args: argparse.Namespace) -> str | None:
    for name in (CONFIG, PENDING):
        with contextlib.suppress(CommandError):
            return _read_home_file(home_dir(args.home) / name, ("relay",))["relay"]
    return None
