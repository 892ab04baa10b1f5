"""The client commands as subprocesses: two homes (alice, bob) against a real relay process:
init, send and receive both ways, fingerprints, a verify round and the error exit codes."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2ee.cli.client_commands import (
    EXIT_ERROR,
    EXIT_IDENTITY_CHANGED,
    EXIT_MISMATCH,
    EXIT_NOT_INITIALISED,
    EXIT_NOTHING_TO_RECEIVE,
    EXIT_RELAY_UNREACHABLE,
    EXIT_UNKNOWN_USER,
    EXIT_USAGE,
)
from e2ee.client import Client
from e2ee.relay import tickets
from e2ee.relay.client import RelayClient
from tests.client_support import SMALL_PREKEYS
from tests.relay_support import PROJECT_ROOT, RelayProcess, free_port, relay_process


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    with relay_process(tmp_path_factory.mktemp("relay") / "relay.sqlite") as srv:
        yield srv


def e2ee(
    home: Path | None, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT / "src"))
    env.pop("E2EE_HOME", None)
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


def test_init_on_a_relay_that_needs_a_ticket_says_so_and_leaves_nothing(tmp_path: Path) -> None:
    """[REQ-RL-39] A relay with a registration authority refuses the CLI's ticketless
    registration: one line naming the reason (not "name taken"), exit 1, no half-made home."""
    authority = tickets.authority_public_key(bytes(range(32))).hex()
    server = RelayProcess(tmp_path / "relay.sqlite", "--registration-key", authority)
    server.start()
    try:
        refused = e2ee(tmp_path / "a", "init", "--relay", server.url, "--name", "alice")
    finally:
        server.stop()
    assert refused.returncode == 1
    assert refused.stderr == (
        "e2ee: this relay registers new users only with a registration ticket from its operator\n"
    )
    assert [p.name for p in (tmp_path / "a").iterdir()] == []


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
