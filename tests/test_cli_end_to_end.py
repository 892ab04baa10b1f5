"""The client commands as subprocesses: two homes (alice, bob) against a real relay process:
init, send and receive both ways, fingerprints, a verify round and the error exit codes."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2ee.cli.client_commands import (
    EXIT_ERROR,
    EXIT_IDENTITY_CHANGED,
    EXIT_MISMATCH,
    EXIT_NOT_INITIALISED,
    EXIT_NOTHING_TO_RECEIVE,
    EXIT_REGISTRATION_PENDING,
    EXIT_RELAY_UNREACHABLE,
    EXIT_UNKNOWN_USER,
    EXIT_USAGE,
)
from e2ee.client import Client
from e2ee.client.envelope import MAX_BODY_SIZE
from e2ee.relay import tickets
from e2ee.relay.client import RelayClient
from tests.client_support import SMALL_PREKEYS
from tests.relay_support import PROJECT_ROOT, RelayProcess, free_port, relay_process


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    with relay_process(tmp_path_factory.mktemp("relay") / "relay.sqlite") as srv:
        yield srv


def e2ee(
    home: Path | None, *args: str, stdin: str | None = None, e2ee_home: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT / "src"))
    env.pop("E2EE_HOME", None)
    if e2ee_home is not None:
        env["E2EE_HOME"] = e2ee_home
    command = [sys.executable, "-m", "e2ee.cli"]
    if home is not None:
        command += ["--home", str(home)]
    return subprocess.run(
        [*command, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_two_homes_talk_verify_and_fail_clearly(server: RelayProcess, tmp_path: Path) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    assert "registered" in ok(e2ee(alice, "init", "--relay", server.url, "--name", "alice"))
    ok(e2ee(bob, "init", "--relay", server.url, "--name", "bob"))
    assert (alice / "device.sqlite").stat().st_mode & 0o077 == 0

    # send and receive both ways (argument and stdin)
    ok(e2ee(alice, "send", "bob", "hello bob"))
    ok(e2ee(alice, "send", "bob", stdin="second line from stdin\n"))
    assert ok(e2ee(bob, "receive")).splitlines() == [
        "alice/1: hello bob",
        "alice/1: second line from stdin",
    ]
    ok(e2ee(bob, "send", "alice", "hi alice"))
    assert ok(e2ee(alice, "receive")).splitlines() == ["bob/1: hi alice"]

    # nothing left: a distinct exit status and a one-line message
    empty = e2ee(bob, "receive")
    assert empty.returncode == EXIT_NOTHING_TO_RECEIVE
    assert empty.stdout == ""
    assert empty.stderr.strip() == "e2ee: nothing to receive"

    # --follow prints what arrives and stops after --idle seconds without a message
    ok(e2ee(alice, "send", "bob", "while following"))
    assert ok(e2ee(bob, "receive", "--follow", "--idle", "1")).splitlines() == [
        "alice/1: while following"
    ]

    # both sides see the same safety number; verify accepts it and refuses a wrong one
    number_a = ok(e2ee(alice, "fingerprint", "bob")).strip()
    number_b = ok(e2ee(bob, "fingerprint", "alice")).strip()
    assert number_a == number_b
    assert len(number_a.replace(" ", "")) == 60
    wrong = "".join(str((int(c) + 1) % 10) for c in number_a.replace(" ", ""))
    refused = e2ee(alice, "verify", "bob", wrong)
    assert refused.returncode == EXIT_MISMATCH
    assert "does not match" in refused.stderr
    unverified = e2ee(alice, "fingerprint", "bob")
    assert unverified.returncode == 0
    assert "bob is not verified" in unverified.stderr
    assert "bob verified" in ok(e2ee(alice, "verify", "bob", *number_a.split()))
    ok(e2ee(bob, "verify", "alice", number_b))
    assert ok(e2ee(alice, "contacts")).split() == ["bob", "verified"]
    assert e2ee(alice, "verify", "bob", "123").returncode == EXIT_USAGE

    devices = ok(e2ee(alice, "devices"))
    assert "1\tkey" in devices
    assert "(this device)" in devices
    assert "bob: device list #1" in ok(e2ee(alice, "devices", "bob"))

    # error exit codes
    unknown = e2ee(alice, "send", "carol", "anyone there?")
    assert unknown.returncode == EXIT_UNKNOWN_USER
    assert unknown.stderr.strip() == "e2ee: unknown user 'carol' on this relay"
    assert e2ee(alice, "fingerprint", "carol").returncode == EXIT_UNKNOWN_USER
    dead = f"http://127.0.0.1:{free_port()}"
    unreachable = e2ee(tmp_path / "nobody", "init", "--relay", dead, "--name", "zed")
    assert unreachable.returncode == EXIT_RELAY_UNREACHABLE
    assert unreachable.stderr.strip() == f"e2ee: relay unreachable at {dead}"
    assert not list((tmp_path / "nobody").iterdir())  # nothing half made
    assert e2ee(tmp_path / "empty", "receive").returncode == EXIT_NOT_INITIALISED
    taken = e2ee(tmp_path / "bob2", "init", "--relay", server.url, "--name", "bob")
    assert taken.returncode == 1
    assert "taken" in taken.stderr


def test_relay_down_after_init_is_reported(tmp_path: Path) -> None:
    server = RelayProcess(tmp_path / "relay.sqlite")
    server.start()
    try:
        ok(e2ee(tmp_path / "a", "init", "--relay", server.url, "--name", "alice"))
    finally:
        server.stop()
    down = e2ee(tmp_path / "a", "receive")
    assert down.returncode == EXIT_RELAY_UNREACHABLE
    assert down.stderr.strip() == f"e2ee: relay unreachable at {server.url}"
    assert e2ee(tmp_path / "a", "send", "bob", "x").returncode == EXIT_RELAY_UNREACHABLE


@dataclasses.dataclass(frozen=True)
class TicketRelay:
    server: RelayProcess
    key_file: Path
    seed: bytes
    public: bytes


@pytest.fixture(scope="module")
def ticket_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TicketRelay]:
    """A relay process with a registration authority made by ``e2ee relay ticket-key``."""
    where = tmp_path_factory.mktemp("ticket-relay")
    key_file = where / "authority.key"
    made = e2ee(None, "relay", "ticket-key", "--out", str(key_file))
    assert made.returncode == 0, made.stderr
    seed = bytes.fromhex(key_file.read_text().strip())
    public = tickets.authority_public_key(seed)
    assert made.stdout == public.hex() + "\n"  # the public key, and nothing else
    assert made.stderr == ""
    with relay_process(where / "relay.sqlite", "--registration-key", made.stdout.strip()) as srv:
        yield TicketRelay(srv, key_file, seed, public)


def snapshot(home: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(home.iterdir())}


def pending_init(
    relay: TicketRelay, home: Path, name: str
) -> tuple[bytes, subprocess.CompletedProcess[str]]:
    """The first step of init on a relay that needs a ticket: the user key it printed."""
    result = e2ee(home, "init", "--relay", relay.server.url, "--name", name)
    assert result.returncode == EXIT_REGISTRATION_PENDING, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"user id: {name}"
    assert lines[1].startswith("user key: ")
    assert lines[2] == (
        "next: send these two lines to the relay's operator; with the ticket file they send "
        f"back, run: e2ee --home {home} init --ticket FILE"
    )
    assert len(lines) == 3
    assert result.stderr == (
        "e2ee: this relay registers new users only with a registration ticket from its "
        "operator; the registration is pending\n"
    )
    return bytes.fromhex(lines[1].removeprefix("user key: ")), result


def issue(
    relay: TicketRelay, out: Path, name: str, user_key: bytes, *extra: str
) -> subprocess.CompletedProcess[str]:
    result = e2ee(
        None,
        "relay",
        "ticket",
        "--key",
        str(relay.key_file),
        "--origin",
        relay.server.url,
        "--user",
        name,
        "--user-key",
        user_key.hex(),
        "--out",
        str(out),
        *extra,
    )
    assert result.returncode == 0, result.stderr
    return result


def test_two_step_init_with_an_operator_ticket_registers_and_talks(
    ticket_relay: TicketRelay, tmp_path: Path
) -> None:
    """[REQ-RL-39] On a relay that needs a ticket, init keeps the new user (store 0600 in a 0700
    home, no config.json), prints the user id and PUBLIC user key and exits 9; the operator's
    ``relay ticket`` signs a ticket for them, ``init --ticket`` registers, and two users so
    made talk. No private key appears in any output, and the authority key file is 0600."""
    assert ticket_relay.key_file.stat().st_mode & 0o777 == 0o600
    outputs: list[str] = []
    keys = {}
    for name in ("tia", "teo"):
        home = tmp_path / name
        user_key, first = pending_init(ticket_relay, home, name)
        outputs += [first.stdout, first.stderr]
        assert home.stat().st_mode & 0o777 == 0o700
        assert (home / "device.sqlite").stat().st_mode & 0o777 == 0o600
        assert not (home / "config.json").exists()
        assert (home / "pending.json").exists()

        ticket_file = tmp_path / f"{name}.ticket"
        issued = issue(ticket_relay, ticket_file, name, user_key)
        outputs += [issued.stdout, issued.stderr]
        assert issued.stdout.startswith(f"ticket for {name} at {ticket_relay.server.url}, valid")
        # the ticket file, read independently: signed by the authority, for this relay, user
        # and user key, valid for the default hour from now
        ticket = tickets.read_ticket(ticket_file.read_bytes(), ticket_relay.public)
        assert ticket.expires - ticket.issued == 3600
        tickets.check_ticket(
            ticket,
            origin=ticket_relay.server.url,
            user_id=name,
            user_key=user_key,
            now=int(time.time()),
            max_lifetime=24 * 3600,
        )

        done = e2ee(home, "init", "--ticket", str(ticket_file))
        outputs += [done.stdout, done.stderr]
        assert done.returncode == 0, done.stderr
        assert (
            done.stdout == f"{name}: device 1 registered at {ticket_relay.server.url} "
            f"(home {home})\n"
        )
        assert (home / "config.json").exists()
        assert not (home / "pending.json").exists()
        keys[name] = user_key

    ok(e2ee(tmp_path / "teo", "send", "tia", "hello tia"))
    assert ok(e2ee(tmp_path / "tia", "receive")).splitlines() == ["teo/1: hello tia"]
    ok(e2ee(tmp_path / "tia", "send", "teo", "hello teo"))
    assert ok(e2ee(tmp_path / "teo", "receive")).splitlines() == ["tia/1: hello teo"]

    # the user key printed is the one the store holds, and the relay registered
    client = Client.open(tmp_path / "tia" / "device.sqlite")
    try:
        assert client.user_key == keys["tia"]
    finally:
        client.close()
    text = "".join(outputs).lower()
    assert ticket_relay.seed.hex() not in text
    assert "traceback" not in text


def test_a_pending_home_refuses_everything_but_a_ticket_and_changes_nothing(
    ticket_relay: TicketRelay, tmp_path: Path
) -> None:
    """A pending home: init again (same or another name) does not make a second user key,
    other commands say the registration is pending (exit 9, not "no device"), and a malformed,
    mismatched or refused ticket is one line, exit 1 and leaves every file byte for byte; then
    a good ticket registers."""
    home = tmp_path / "pia"
    user_key, _ = pending_init(ticket_relay, home, "pia")
    before = snapshot(home)

    for name in ("pia", "someone"):
        again = e2ee(home, "init", "--relay", ticket_relay.server.url, "--name", name)
        assert again.returncode == EXIT_REGISTRATION_PENDING
        assert again.stdout.splitlines()[:2] == ["user id: pia", f"user key: {user_key.hex()}"]
        assert again.stderr == (
            f"e2ee: the registration of pia at {ticket_relay.server.url} in {home} is pending "
            f"(its user key is kept); finish it with --ticket FILE, or delete {home} to start "
            "over\n"
        )
        assert snapshot(home) == before

    number = "0" * 60
    for command in (
        ["send", "tia", "hi"],
        ["receive"],
        ["contacts"],
        ["devices"],
        ["fingerprint", "tia"],
        ["verify", "tia", number],
    ):
        refused = e2ee(home, *command)
        assert refused.returncode == EXIT_REGISTRATION_PENDING, command
        assert refused.stdout == ""
        assert refused.stderr == (
            f"e2ee: the registration of pia at {ticket_relay.server.url} in {home} is pending; "
            f"finish it with: e2ee --home {home} init --ticket FILE\n"
        ), command
        assert snapshot(home) == before

    garbage = tmp_path / "garbage.ticket"
    garbage.write_bytes(b"\xa2\x00\x01" + bytes(range(256)))
    malformed = e2ee(home, "init", "--ticket", str(garbage))
    assert malformed.returncode == EXIT_ERROR
    assert malformed.stderr == f"e2ee: {garbage} is not a registration ticket\n"
    huge = tmp_path / "huge.ticket"
    huge.write_bytes(b"\x00" * (tickets.MAX_TICKET_SIZE + 1))
    assert e2ee(home, "init", "--ticket", str(huge)).stderr == (
        f"e2ee: {huge} is not a registration ticket (over {tickets.MAX_TICKET_SIZE} bytes)\n"
    )
    missing = e2ee(home, "init", "--ticket", str(tmp_path / "nowhere"))
    assert missing.returncode == EXIT_ERROR
    assert missing.stderr.startswith(f"e2ee: cannot read {tmp_path / 'nowhere'}: ")
    assert snapshot(home) == before

    # a ticket for another user key: refused here, before it is sent
    other = tmp_path / "other.ticket"
    issue(ticket_relay, other, "pia", tickets.authority_public_key(bytes(32)))
    mismatched = e2ee(home, "init", "--ticket", str(other))
    assert mismatched.returncode == EXIT_ERROR
    assert "is a ticket for another user or user key (it names 'pia')" in mismatched.stderr
    assert snapshot(home) == before

    # tickets the relay refuses: for another relay's origin, and signed by another authority
    wrong_origin = tmp_path / "origin.ticket"
    wrong_origin.write_bytes(
        tickets.issue_ticket(
            ticket_relay.seed,
            origin="https://elsewhere.example",
            user_id="pia",
            user_key=user_key,
            issued=int(time.time()),
            expires=int(time.time()) + 600,
        )
    )
    wrong_authority = tmp_path / "authority.ticket"
    wrong_authority.write_bytes(
        tickets.issue_ticket(
            bytes(range(32)),
            origin=ticket_relay.server.url,
            user_id="pia",
            user_key=user_key,
            issued=int(time.time()),
            expires=int(time.time()) + 600,
        )
    )
    for bad, reason in (
        (wrong_origin, "registration ticket is for another relay"),
        (wrong_authority, "registration ticket is not signed by this relay's authority"),
    ):
        refused = e2ee(home, "init", "--ticket", str(bad))
        assert refused.returncode == EXIT_ERROR
        assert refused.stderr == (
            f"e2ee: the relay refused the ticket (bad_ticket: relay answered HTTP 403: {reason}); "
            "the registration stays pending: try another ticket\n"
        )
        assert snapshot(home) == before
    assert e2ee(home, "receive").returncode == EXIT_REGISTRATION_PENDING

    good = tmp_path / "good.ticket"
    issue(ticket_relay, good, "pia", user_key, "--lifetime", "60")
    assert "pia: device 1 registered" in ok(e2ee(home, "init", "--ticket", str(good)))
    assert e2ee(home, "receive").returncode == EXIT_NOTHING_TO_RECEIVE
    again = e2ee(home, "init", "--ticket", str(good))
    assert again.returncode == EXIT_ERROR
    assert again.stderr == f"e2ee: {home} already holds a registered device\n"


def test_a_pending_home_whose_files_disagree_is_refused(
    ticket_relay: TicketRelay, tmp_path: Path
) -> None:
    """``init --ticket`` registers the store's user key under pending.json's name: a
    pending.json edited (or copied from another home) to name someone else is refused before
    anything is sent, and nothing changes."""
    home = tmp_path / "home"
    user_key, _ = pending_init(ticket_relay, home, "quin")
    pending = home / "pending.json"
    pending.write_text(pending.read_text().replace('"quin"', '"quincy"'))
    ticket = tmp_path / "t.ticket"
    issue(ticket_relay, ticket, "quincy", user_key)
    before = snapshot(home)
    refused = e2ee(home, "init", "--ticket", str(ticket))
    assert refused.returncode == EXIT_ERROR
    assert refused.stderr == (
        f"e2ee: {pending} does not match the device store in {home}; delete {home} and run "
        "init again\n"
    )
    assert snapshot(home) == before


def test_a_registration_the_relay_took_finishes_without_a_usable_ticket(
    ticket_relay: TicketRelay, tmp_path: Path
) -> None:
    """An ``init --ticket`` that stopped after the relay registered the user (the prekey upload
    or writing config.json failed) is finished by running it again, even with a ticket that
    can no longer be used (here: one for another relay's origin, as an expired or used one
    would be): the relay already holds this user key and needs no ticket for it."""
    home = tmp_path / "home"
    user_key, _ = pending_init(ticket_relay, home, "rue")
    good = tmp_path / "good.ticket"
    issue(ticket_relay, good, "rue", user_key)
    pending = (home / "pending.json").read_bytes()
    ok(e2ee(home, "init", "--ticket", str(good)))
    (home / "config.json").unlink()  # as if it had stopped right after the registration
    (home / "pending.json").write_bytes(pending)
    unusable = tmp_path / "unusable.ticket"
    unusable.write_bytes(
        tickets.issue_ticket(
            ticket_relay.seed,
            origin="http://elsewhere.example:1",
            user_id="rue",
            user_key=user_key,
            issued=int(time.time()),
            expires=int(time.time()) + 600,
        )
    )
    assert "rue: device 1 registered" in ok(e2ee(home, "init", "--ticket", str(unusable)))
    assert e2ee(home, "receive").returncode == EXIT_NOTHING_TO_RECEIVE


def test_a_name_taken_while_pending_says_how_to_start_over(
    ticket_relay: TicketRelay, tmp_path: Path
) -> None:
    """Two pending homes for one name: the first ticket used wins; the other home's own valid
    ticket is then refused with the way out (delete the home, pick another name), and the
    home stays as it was."""
    first, second = tmp_path / "first", tmp_path / "second"
    first_key, _ = pending_init(ticket_relay, first, "sol")
    second_key, _ = pending_init(ticket_relay, second, "sol")
    for home, key in ((first, first_key), (second, second_key)):
        issue(ticket_relay, home.with_suffix(".ticket"), "sol", key)
    ok(e2ee(first, "init", "--ticket", str(first.with_suffix(".ticket"))))
    before = snapshot(second)
    taken = e2ee(second, "init", "--ticket", str(second.with_suffix(".ticket")))
    assert taken.returncode == EXIT_ERROR
    assert taken.stderr == (
        f"e2ee: the name 'sol' is taken on this relay; delete {second} and run init with "
        "another name\n"
    )
    assert snapshot(second) == before


def test_an_init_whose_prekey_upload_fails_keeps_the_registered_home(
    server: RelayProcess,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Once the relay accepted the device list, it holds the user key: deleting the store
    because the prekey upload then failed lost the name for good (init again makes a new key,
    which the relay refuses). The home is kept, registered, with a note; `e2ee receive`
    uploads the prekeys."""
    from e2ee.cli import client_commands
    from e2ee.errors import RelayUnavailableError

    def fail(self: RelayClient, **_: object) -> tuple[int, int]:
        raise RelayUnavailableError("connection reset")

    home = tmp_path / "home"
    with monkeypatch.context() as patch:
        patch.setattr(RelayClient, "publish_prekeys", fail)
        args = argparse.Namespace(home=home, relay=server.url, name="tam", ticket=None)
        assert client_commands.cmd_init(args) == 0
    err = capsys.readouterr().err
    assert "registered, but the prekeys could not be uploaded (relay_unavailable)" in err
    assert json.loads((home / "config.json").read_text()) == {"relay": server.url, "name": "tam"}
    assert e2ee(home, "receive").returncode == EXIT_NOTHING_TO_RECEIVE
    client = Client.open(home / "device.sqlite")
    try:
        with RelayClient(server.url, client) as relay:
            assert relay.key_counts() == (100, 100)  # uploaded by the receive
    finally:
        client.close()


def test_an_init_that_stopped_after_the_relay_registered_it_is_finished_by_init_again(
    server: RelayProcess, tmp_path: Path
) -> None:
    """An init interrupted after it made the store (Ctrl-C, or config.json that could not be
    written) left a home with neither config.json nor pending.json: `init` said "already holds
    a device", every other command "run init", and the relay held the name under that store's
    key. `init` with the same name now finishes the registration with that store; another
    name is refused, and nothing changes."""
    home = tmp_path / "home"
    ok(e2ee(home, "init", "--relay", server.url, "--name", "uma"))
    (home / "config.json").unlink()  # as if init had stopped right after the relay took it
    before = snapshot(home)
    other = e2ee(home, "init", "--relay", server.url, "--name", "ulla")
    assert other.returncode == EXIT_ERROR
    assert other.stderr == (
        f"e2ee: {home} holds an unfinished registration of 'uma', not 'ulla'; run init with "
        f"--name uma, or delete {home} to start over\n"
    )
    assert snapshot(home) == before
    assert "uma: device 1 registered" in ok(
        e2ee(home, "init", "--relay", server.url, "--name", "uma")
    )
    assert e2ee(home, "receive").returncode == EXIT_NOTHING_TO_RECEIVE
    again = e2ee(home, "init", "--relay", server.url, "--name", "uma")
    assert again.returncode == EXIT_ERROR
    assert again.stderr == f"e2ee: {home} already holds a device\n"


def test_a_ticket_needs_a_pending_home(tmp_path: Path) -> None:
    """``init --ticket`` on an empty home: nothing is pending (exit 8), nothing is made."""
    ticket = tmp_path / "t"
    ticket.write_bytes(b"x")
    result = e2ee(tmp_path / "empty", "init", "--ticket", str(ticket))
    assert result.returncode == EXIT_NOT_INITIALISED
    assert "no registration is pending" in result.stderr
    assert not (tmp_path / "empty").exists()


def test_relay_ticket_key_never_overwrites_and_a_bad_key_file_is_one_line(
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "authority.key"
    key_file.write_text("precious\n")
    key_file.chmod(0o600)
    refused = e2ee(None, "relay", "ticket-key", "--out", str(key_file))
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr.startswith(f"e2ee relay ticket-key: cannot create {key_file}: ")
    assert key_file.read_text() == "precious\n"

    out = tmp_path / "t.ticket"
    bad = e2ee(
        None,
        "relay",
        "ticket",
        "--key",
        str(key_file),
        "--origin",
        "http://x:1",
        "--user",
        "a",
        "--user-key",
        tickets.authority_public_key(bytes(32)).hex(),
        "--out",
        str(out),
    )
    assert bad.returncode == 1
    assert bad.stderr == (
        f"e2ee relay ticket: {key_file} is not an authority key file (64 hex digits)\n"
    )
    assert not out.exists()


def test_relay_ticket_refuses_a_key_file_others_can_read_and_a_name_init_refuses(
    tmp_path: Path,
) -> None:
    """Whoever reads the authority key can register any user id, so a key file open to other
    users is refused, as ssh refuses such a private key (the message names the fix, not the
    key). A ticket for a name ``init`` would refuse could never be used: a usage error."""
    key_file = tmp_path / "authority.key"
    ok(e2ee(None, "relay", "ticket-key", "--out", str(key_file)))
    secret = key_file.read_text().strip()
    out = tmp_path / "t.ticket"
    user_key = tickets.authority_public_key(bytes(32)).hex()

    def ticket(user: str) -> subprocess.CompletedProcess[str]:
        return e2ee(
            None,
            "relay",
            "ticket",
            "--key",
            str(key_file),
            "--origin",
            "http://x:1",
            "--user",
            user,
            "--user-key",
            user_key,
            "--out",
            str(out),
        )

    for mode in (0o640, 0o604, 0o620):
        key_file.chmod(mode)
        refused = ticket("ann")
        assert refused.returncode == 1
        assert refused.stderr == (
            f"e2ee relay ticket: {key_file} is open to other users (mode {mode:03o}); the "
            f"authority key admits anyone who reads it: run chmod 600 {key_file}\n"
        )
        assert secret not in refused.stdout + refused.stderr
        assert not out.exists()
    key_file.chmod(0o600)
    for name in (" ann", "ann ", "", "a\tb", "x" * 65):
        usage = ticket(name)
        assert usage.returncode == EXIT_USAGE
        assert "argument --user: a user name is 1 to 64 printable characters" in usage.stderr
        assert not out.exists()
    assert ticket("x" * 64).returncode == 0


def test_a_relay_that_serves_another_key_for_a_contact_stops_the_send(
    server: RelayProcess, tmp_path: Path
) -> None:
    """Exit status 5: Ada talked to Bo through one relay; another relay (a compromised or
    impostor one, here simply a second relay process where someone else registered "bo") serves
    a different identity key for "bo". Under the CLI's "block" policy the send stops before
    anything is encrypted for the new key, with the one-line advice to compare safety numbers,
    and the impostor receives nothing. (Names of their own: the relay is shared by the module.)"""
    ada, bo, impostor = tmp_path / "ada", tmp_path / "bo", tmp_path / "impostor"
    ok(e2ee(ada, "init", "--relay", server.url, "--name", "ada"))
    ok(e2ee(bo, "init", "--relay", server.url, "--name", "bo"))
    ok(e2ee(ada, "send", "bo", "hello bo"))
    assert ok(e2ee(bo, "receive")).splitlines() == ["ada/1: hello bo"]

    with relay_process(tmp_path / "other.sqlite") as other:
        ok(e2ee(impostor, "init", "--relay", other.url, "--name", "bo"))
        client = Client.open(ada / "device.sqlite")
        try:
            with RelayClient(other.url, client) as relay:  # Ada's device, known there too
                relay.publish_device_list()
                relay.publish_prekeys()
        finally:
            client.close()
        config = ada / "config.json"
        config.write_text(config.read_text().replace(server.url, other.url))

        changed = e2ee(ada, "send", "bo", "for bo only")
        assert changed.returncode == EXIT_IDENTITY_CHANGED
        assert changed.stdout == ""
        assert changed.stderr.strip() == (
            "e2ee: the identity key of bo changed; compare `e2ee fingerprint bo` with them "
            "and run `e2ee verify bo NUMBER` to accept it"
        )
        assert e2ee(impostor, "receive").returncode == EXIT_NOTHING_TO_RECEIVE


def test_a_damaged_device_store_is_one_line_and_exit_status_1(tmp_path: Path) -> None:
    """The store file is input from disk: a damaged one is reported as the client layer's
    StoreError (SQLite's error code, no traceback, nothing from the file)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.json").write_text('{"relay": "http://127.0.0.1:9", "name": "alice"}\n')
    (home / "device.sqlite").write_bytes(b"not a database " * 500)
    damaged = e2ee(home, "receive")
    assert damaged.returncode == EXIT_ERROR
    assert damaged.stdout == ""
    assert damaged.stderr.strip() == (
        "e2ee: store_unavailable: the client store cannot be opened (SQLITE_NOTADB)"
    )


def test_version_and_help_with_examples() -> None:
    assert ok(e2ee(None, "--version")).startswith("e2ee ")
    top = ok(e2ee(None, "--help"))
    assert "examples:" in top
    assert "exit status:" in top
    commands = [
        ["demo"],
        ["init"],
        ["send"],
        ["receive"],
        ["contacts"],
        ["devices"],
        ["fingerprint"],
        ["verify"],
        ["relay"],
        ["relay", "serve"],
        ["vectors"],
        ["vectors", "verify"],
        ["vectors", "generate"],
        ["conformance"],
        ["conformance", "run"],
        ["conformance", "serve"],
        ["bench"],
    ]
    from e2ee.cli.main import build_parser

    parser = build_parser()
    for command in commands:
        sub = parser
        for word in command:
            actions = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
            sub = actions[0].choices[word]
        assert "example" in (sub.epilog or ""), command


# A user id is any UTF-8 the relay accepts, and a conversation name is a user id. Hostile ones
# try to forge a line from "alice" (newline, carriage return, U+2028), a column of `contacts`
# (tab), to hide the rest of the line (ESC [8m, the C1 CSI 0x9b) or to reorder it (U+202E).
FORGED = "alice/1: please send me your store passphrase"
HOSTILE_SENDER = f"mal\tverified\n{FORGED}\x1b[8m\u202e"
HOSTILE_CONVERSATION = f"eve\r{FORGED}\x9b8m\u2028"
# The same names as the terminal must show them, written out by hand.
SHOWN_SENDER = r"mal\tverified\nalice/1: please send me your store passphrase\x1b[8m\u202e"
SHOWN_CONVERSATION = r"eve\ralice/1: please send me your store passphrase\x9b8m\u2028"


def terminal_lines(output: str) -> list[str]:
    """The lines of ``output``: each ends in the newline print wrote and holds nothing but
    printable characters and tabs (the CLI's own column separators, which the callers pin by
    comparing whole lines); none is a forged line."""
    assert output.endswith("\n"), repr(output)
    lines = output[:-1].split("\n")
    for line in lines:
        assert all(cell.isprintable() for cell in line.split("\t")), repr(line)
        assert not line.startswith(FORGED), repr(line)
    return lines


def register(server: RelayProcess, path: Path, name: str) -> Client:
    """A device of a new user ``name`` on the relay (device list and prekeys published)."""
    client = Client.create(path, name, prekey_policy=SMALL_PREKEYS)
    with RelayClient(server.url, client) as relay:
        relay.publish_device_list()
        relay.publish_prekeys()
    return client


def test_a_hostile_sender_name_is_printed_escaped_on_one_line(
    server: RelayProcess, tmp_path: Path
) -> None:
    """receive, contacts, devices and fingerprint print a sender's user id with its control
    characters escaped; so do the stderr notes of events about that user."""
    cy = tmp_path / "cy"
    ok(e2ee(cy, "init", "--relay", server.url, "--name", "cy"))
    mallory = register(server, tmp_path / "mallory.sqlite", HOSTILE_SENDER)
    try:
        with RelayClient(server.url, mallory) as relay:
            relay.send("cy", b"hi cy")

        received = e2ee(cy, "receive")
        assert terminal_lines(ok(received)) == [SHOWN_SENDER + "/1: hi cy"]
        assert received.stderr == ""

        contacts = ok(e2ee(cy, "contacts"))
        assert terminal_lines(contacts) == [SHOWN_SENDER + "\tnot verified"]

        devices = terminal_lines(ok(e2ee(cy, "devices", HOSTILE_SENDER)))
        assert devices[0] == SHOWN_SENDER + ": device list #1"
        assert len(devices) == 2
        assert devices[1].startswith("  1\tkey ")

        fingerprint = e2ee(cy, "fingerprint", HOSTILE_SENDER)
        assert fingerprint.returncode == 0, fingerprint.stderr
        assert terminal_lines(fingerprint.stderr) == [
            f"e2ee: {SHOWN_SENDER} is not verified; both of you should see this number"
        ]

        # mallory links a second device: cy's next receive reports the changed device list
        second = Client.create_linked(
            tmp_path / "mallory2.sqlite", HOSTILE_SENDER, prekey_policy=SMALL_PREKEYS
        )
        try:
            second.complete_link(mallory.approve_link(second.link_request(), second.link_code))
            with RelayClient(server.url, mallory) as relay:
                relay.publish_device_list()
            with RelayClient(server.url, second) as relay:
                relay.publish_prekeys()
                relay.send("cy", b"from my laptop")
        finally:
            second.close()
        changed = e2ee(cy, "receive")
        assert terminal_lines(ok(changed)) == [SHOWN_SENDER + "/2: from my laptop"]
        assert terminal_lines(changed.stderr) == [
            f"e2ee: {SHOWN_SENDER}'s devices changed: counter 2; added [2]; removed []"
        ]
    finally:
        mallory.close()


def test_a_hostile_conversation_name_is_printed_escaped_on_one_line(
    server: RelayProcess, tmp_path: Path
) -> None:
    """The copy of a message one of our own other devices sent shows the conversation (the
    recipient's user id) with its control characters escaped."""
    dee = tmp_path / "dee"
    ok(e2ee(dee, "init", "--relay", server.url, "--name", "dee"))
    holder = Client.open(dee / "device.sqlite")
    laptop = Client.create_linked(tmp_path / "dee2.sqlite", "dee", prekey_policy=SMALL_PREKEYS)
    try:
        laptop.complete_link(holder.approve_link(laptop.link_request(), laptop.link_code))
        with RelayClient(server.url, holder) as relay:
            relay.publish_device_list()
        register(server, tmp_path / "eve.sqlite", HOSTILE_CONVERSATION).close()
        with RelayClient(server.url, laptop) as relay:
            relay.publish_prekeys()
            relay.send(HOSTILE_CONVERSATION, b"see you")
    finally:
        holder.close()
        laptop.close()

    received = e2ee(dee, "receive")
    assert terminal_lines(ok(received)) == [f"dee/2 -> {SHOWN_CONVERSATION}: see you"]


DAMAGED_HOME_FILES = {
    "over 64 KiB": b'{"relay": "http://127.0.0.1:9", "name": "alice"}' + b" " * 65536,
    "nested deeper than the parser recurses": b"[" * 100_000 + b"]" * 100_000,
    "not UTF-8": b'{"relay": "http://127.0.0.1:9", "name": "\xff"}',
    "not an object": b'["http://127.0.0.1:9", "alice"]',
    "a field missing": b'{"relay": "http://127.0.0.1:9"}',
    "a field not a string": b'{"relay": "http://127.0.0.1:9", "name": {"x": 1}}',
    "a relay that is not an http(s) URL": b'{"relay": "ftp://x", "name": "alice"}',
}


@pytest.mark.parametrize("content", list(DAMAGED_HOME_FILES.values()), ids=list(DAMAGED_HOME_FILES))
@pytest.mark.parametrize("file", ["config.json", "pending.json"])
def test_a_damaged_home_file_is_one_line_and_exit_status_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], file: str, content: bytes
) -> None:
    """config.json and pending.json are input from disk: read bounded, and anything but an
    object of strings naming an http(s) relay is one line, never a traceback. Before, a
    deeply nested file was a RecursionError and a relay URL of another scheme a ValueError."""
    from e2ee.cli.main import main

    home = tmp_path / "home"
    home.mkdir()
    (home / "device.sqlite").write_bytes(b"")
    if file == "pending.json":  # it also holds the public user key
        content = content.replace(b'"alice"', b'"alice", "user_key": "' + b"ab" * 32 + b'"')
    (home / file).write_bytes(content)
    assert main(["--home", str(home), "receive"]) == EXIT_ERROR
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == f"e2ee: {home / file} is unreadable\n"


def test_files_the_cli_reads_that_are_fifos_are_refused_without_blocking(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A FIFO (or a device) in place of a home file, a ticket or a key file made the command
    wait for ever in open() (review finding): each is now one line, status 1, before any
    byte is read."""
    from e2ee.cli.main import main

    home = tmp_path / "fifo"
    home.mkdir()
    (home / "device.sqlite").write_bytes(b"")
    os.mkfifo(home / "pending.json")  # (a config.json that is no regular file: "no device")
    assert main(["--home", str(home), "receive"]) == EXIT_ERROR
    assert capsys.readouterr().err == f"e2ee: {home / 'pending.json'} is unreadable\n"

    home = tmp_path / "pending"
    home.mkdir()
    (home / "device.sqlite").write_bytes(b"")
    pending = {"relay": "http://127.0.0.1:9", "name": "alice", "user_key": "ab" * 32}
    (home / "pending.json").write_text(json.dumps(pending))
    fifo = tmp_path / "ticket"
    os.mkfifo(fifo)
    assert main(["--home", str(home), "init", "--ticket", str(fifo)]) == EXIT_ERROR
    assert capsys.readouterr().err.startswith(f"e2ee: cannot read {fifo}: ")

    key = tmp_path / "authority.key"
    os.mkfifo(key, 0o600)
    user_key = tickets.authority_public_key(bytes(32)).hex()
    ticket = ["relay", "ticket", "--origin", "http://x:1", "--user", "a", "--user-key", user_key]
    assert main([*ticket, "--key", str(key), "--out", str(tmp_path / "t")]) == 1
    assert capsys.readouterr().err.startswith(f"e2ee relay ticket: cannot read {key}: ")


@pytest.mark.parametrize("out", ["/", ".", "DIR"])
def test_relay_ticket_to_a_path_that_is_no_file_is_one_line_and_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, out: str
) -> None:
    """`--out /` or `--out .` was a ValueError traceback from Path.with_name, and a directory
    left `<out>.tmp` behind (review finding)."""
    from e2ee.cli.main import main

    monkeypatch.chdir(tmp_path)
    key = tmp_path / "authority.key"
    key.write_text("00" * 32 + "\n")
    key.chmod(0o600)
    target = str(tmp_path / "dir") if out == "DIR" else out
    if out == "DIR":
        (tmp_path / "dir").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    user_key = tickets.authority_public_key(bytes(32)).hex()
    argv = ["relay", "ticket", "--key", str(key), "--origin", "http://x:1", "--user", "a"]
    assert main([*argv, "--user-key", user_key, "--out", target]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"e2ee relay ticket: cannot write {target}: ")
    assert captured.err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_messages_a_damaged_session_keeps_queued_are_an_error_not_nothing_to_receive(
    server: RelayProcess, tmp_path: Path
) -> None:
    """[REQ-RL-22] Review finding: a session row the client cannot load (StateError) keeps the
    envelope queued, and `e2ee receive` said "nothing to receive" (exit 6) on every run while
    the message sat at the relay. It now exits 1 saying how many stay queued, every run."""
    kim, lou = tmp_path / "kim", tmp_path / "lou"
    ok(e2ee(kim, "init", "--relay", server.url, "--name", "kim"))
    ok(e2ee(lou, "init", "--relay", server.url, "--name", "lou"))
    ok(e2ee(kim, "send", "lou", "one"))
    assert ok(e2ee(lou, "receive")).splitlines() == ["kim/1: one"]
    with contextlib.closing(sqlite3.connect(lou / "device.sqlite")) as db, db:
        db.execute("UPDATE sessions SET state = x'00'")
    ok(e2ee(kim, "send", "lou", "two"))
    for _ in range(2):
        kept = e2ee(lou, "receive")
        assert kept.returncode == EXIT_ERROR
        assert kept.stdout == ""
        assert kept.stderr == (
            "e2ee: 1 message could not be processed on this device (a local failure, such as "
            "a damaged store) and stays queued at the relay\n"
        )


def test_verify_takes_ascii_digits_only(server: RelayProcess, tmp_path: Path) -> None:
    """Review finding: str.isdigit() took "\u0661" (ARABIC-INDIC DIGIT ONE) and "\u00b2", and
    hmac.compare_digest then raised TypeError on the non-ASCII text: a traceback. Any number
    that is not 60 ASCII digits is a bad command line (exit 2), as a short one was."""
    vic, wes = tmp_path / "vic", tmp_path / "wes"
    ok(e2ee(vic, "init", "--relay", server.url, "--name", "vic"))
    ok(e2ee(wes, "init", "--relay", server.url, "--name", "wes"))
    ok(e2ee(vic, "send", "wes", "hello"))
    for number in ("\u0661" * 60, "\u00b2" * 60, "1" * 59 + "\uff11"):
        refused = e2ee(vic, "verify", "wes", number)
        assert refused.returncode == EXIT_USAGE
        assert refused.stderr == "e2ee: a safety number is 60 digits\n"
    assert ok(e2ee(vic, "contacts")).split() == ["wes", "not", "verified"]


def test_a_home_under_the_home_of_no_such_user_is_a_bad_command_line(tmp_path: Path) -> None:
    """Review finding: `--home ~nosuchuser/x` (or E2EE_HOME so) raised RuntimeError from
    Path.expanduser(): a traceback. It is one line and exit status 2."""
    given = "~nosuchuser-e2ee-test/x"
    by_option = e2ee(Path(given), "contacts")
    assert by_option.returncode == EXIT_USAGE
    assert by_option.stderr == (
        f"e2ee: --home '{given}': cannot expand ~ (no such user, or no home directory)\n"
    )
    by_env = e2ee(None, "receive", e2ee_home=given)
    assert by_env.returncode == EXIT_USAGE
    assert by_env.stderr == (
        f"e2ee: E2EE_HOME '{given}': cannot expand ~ (no such user, or no home directory)\n"
    )


def test_send_reads_standard_input_only_up_to_the_message_limit(tmp_path: Path) -> None:
    """Review finding: `send` read all of standard input before the size check. It reads at
    most MAX_BODY_SIZE + 2 characters (the limit, one more, and a final newline) and refuses
    more with the client's message-too-large error without waiting for the end of the input.
    Here the input is never closed: a command that read to its end would wait for ever."""
    command = [sys.executable, "-m", "e2ee.cli", "--home", str(tmp_path / "none"), "send", "bob"]
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT / "src"))
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    ) as process:
        assert process.stdin is not None
        assert process.stderr is not None
        process.stdin.write(b"x" * (MAX_BODY_SIZE + 2))  # no newline, and stdin stays open
        process.stdin.flush()
        try:
            assert process.wait(timeout=60) == EXIT_USAGE
        finally:
            process.kill()
        assert (
            process.stderr.read() == f"e2ee: body is larger than {MAX_BODY_SIZE} bytes\n".encode()
        )
    # the limit itself (and a final newline, which is not sent) gets past the check: to the home
    at_limit = e2ee(tmp_path / "none", "send", "bob", stdin="x" * MAX_BODY_SIZE + "\n")
    assert at_limit.returncode == EXIT_NOT_INITIALISED
    for over in ("x" * (MAX_BODY_SIZE + 1) + "\n", "\u00e9" * (MAX_BODY_SIZE // 2 + 1)):
        refused = e2ee(tmp_path / "none", "send", "bob", stdin=over)
        assert refused.returncode == EXIT_USAGE
        assert refused.stderr == f"e2ee: body is larger than {MAX_BODY_SIZE} bytes\n"
