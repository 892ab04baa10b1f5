"""The client store as input from disk (spec/client.md REQ-CL-39, REQ-CL-45, REQ-CL-46): rows of
the wrong SQLite type, a wrong store key, files that hold no client, and reads that delete.

Every refusal is a typed error and leaves the store as it was (rule 1 and rule 2).
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from e2ee.client import Client
from e2ee.errors import LocalError, StateError, StoreError
from tests.client_support import World, snapshot

STORE_KEY = bytes(range(32))


@dataclass(frozen=True)
class Reference:
    """bob's first device, after a conversation with alice: sessions, an inbox, events, the
    user key and two devices. ``alice_list`` is alice's signed device list; ``from_alice`` a
    message from alice to bob's first device that it has not received."""

    path: Path
    alice_list: bytes
    from_alice: bytes


def build(root: Path, key: bytes | None) -> Reference:
    world = World(root)
    [alice] = world.user("alice")
    bob = Client.create(world.path("bob"), "bob", key=key)
    world.publish(bob)
    world.link(bob, "bob")
    world.send(alice, "bob", b"first")
    world.send(alice, "bob", b"second")
    assert len(world.deliver(bob)) == 2
    world.send(bob, "alice", b"reply")
    world.send(alice, "bob", b"unread")
    assert bob.device_id is not None
    [from_alice] = world.transport.fetch("bob", bob.device_id)
    path = Path(bob.store.conn.execute("PRAGMA database_list").fetchone()[2])
    bob.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    bob.close()
    return Reference(path, alice.device_list(), from_alice)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    return build(tmp_path_factory.mktemp("plain"), None)


@pytest.fixture(scope="module")
def sealed_reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    return build(tmp_path_factory.mktemp("sealed"), STORE_KEY)


def copy(reference: Reference, tmp_path: Path) -> Path:
    path = tmp_path / "bob.sqlite"
    shutil.copy(reference.path, path)
    return path


def tamper(path: Path, sql: str, value: object) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute(sql, (value,))
        conn.commit()
    finally:
        conn.close()


def approve_a_new_device(client: Client, reference: Reference) -> bytes:
    """approve_link for a device waiting to be linked (its store beside the client's)."""
    waiting = Client.create_linked(reference.path.with_name("waiting.sqlite"), client.user_id)
    try:
        return client.approve_link(waiting.link_request(), waiting.link_code)
    finally:
        waiting.close()


@dataclass(frozen=True)
class Case:
    sql: str
    value: object
    call: Callable[[Client, Reference], object]


CASES = {
    "session state is text": Case(
        "UPDATE sessions SET state = ?", "x", lambda c, r: c.sessions_with("alice", 1)
    ),
    "session state on send": Case(
        "UPDATE sessions SET state = ?", 7, lambda c, r: c.send("alice", b"x")
    ),
    "user identity state is an integer": Case(
        "UPDATE user_identity SET state = ?", 7, lambda c, r: c.remove_device(2)
    ),
    "identity key of 31 bytes": Case(
        "UPDATE identities SET identity_key = ? WHERE user_id = 'alice'",
        bytes(31),
        lambda c, r: c.safety_number("alice"),
    ),
    "identity key is text": Case(
        "UPDATE identities SET identity_key = ? WHERE user_id = 'alice'",
        "x" * 32,
        lambda c, r: c.mark_verified("alice"),
    ),
    "verified flag is text": Case(
        "UPDATE identities SET verified = ? WHERE user_id = 'alice'",
        "yes",
        lambda c, r: c.is_verified("alice"),
    ),
    "pending key of 5 bytes": Case(
        "UPDATE identities SET pending_key = ? WHERE user_id = 'alice'",
        bytes(5),
        lambda c, r: c.approve_identity("alice"),
    ),
    "identity user id is a blob": Case(
        "UPDATE identities SET user_id = ? WHERE user_id = 'alice'",
        b"alice",
        lambda c, r: c.known_identities(),
    ),
    "pending key of 5 bytes, listed": Case(
        "UPDATE identities SET pending_key = ? WHERE user_id = 'alice'",
        bytes(5),
        lambda c, r: c.known_identities(),
    ),
    "verified flag is text, listed": Case(
        "UPDATE identities SET verified = ? WHERE user_id = 'alice'",
        "yes",
        lambda c, r: c.known_identities(),
    ),
    "identity key of 31 bytes, listed": Case(
        "UPDATE identities SET identity_key = ? WHERE user_id = 'alice'",
        bytes(31),
        lambda c, r: c.known_identities(),
    ),
    "device list is text": Case(
        "UPDATE device_lists SET signed = ? WHERE user_id = 'alice'",
        "x",
        lambda c, r: c.send("alice", b"x"),
    ),
    "own device list is text": Case(
        "UPDATE device_lists SET signed = ? WHERE user_id = 'bob'",
        "x",
        lambda c, r: c.device_list(),
    ),
    "device id is text": Case(
        "UPDATE meta SET value = ? WHERE name = 'device_id'", "1", lambda c, r: c.device_id
    ),
    "device id is a blob on send": Case(
        "UPDATE meta SET value = ? WHERE name = 'device_id'",
        b"\x01",
        lambda c, r: c.send("alice", b"x"),
    ),
    "next device id is text": Case(
        "UPDATE meta SET value = ? WHERE name = 'next_device_id'",
        "9",
        approve_a_new_device,
    ),
    "session peer device is text": Case(
        "UPDATE sessions SET peer_device = ? WHERE peer_user = 'bob'",
        "two",
        lambda c, r: c.remove_device(2),
    ),
    # The next last_used of a session made active is read and checked in Python: computed in
    # SQL (MAX(last_used) + 1) it turned text into 1, a real into a real, and 2^63 - 1 into a
    # real, and stored that.
    "session last used is text": Case(
        "UPDATE sessions SET last_used = ? WHERE peer_user = 'alice'",
        "x",
        lambda c, r: c.receive(r.from_alice),
    ),
    "session last used is a blob": Case(
        "UPDATE sessions SET last_used = ? WHERE peer_user = 'alice'",
        b"\x01",
        lambda c, r: c.receive(r.from_alice),
    ),
    "session last used is a real": Case(
        "UPDATE sessions SET last_used = ?", 2.5, lambda c, r: c.receive(r.from_alice)
    ),
    "session last used has no successor": Case(
        "UPDATE sessions SET last_used = ? WHERE peer_user = 'alice'",
        2**63 - 1,
        lambda c, r: c.receive(r.from_alice),
    ),
    "session peer key is text": Case(
        "UPDATE sessions SET peer_key = ? WHERE peer_user = 'bob'",
        "k" * 32,
        lambda c, r: c.remove_device(2),
    ),
    "device list counter is text": Case(
        "UPDATE device_lists SET counter = ? WHERE user_id = 'alice'",
        "one",  # text that does not look like a number keeps its type under INTEGER affinity
        lambda c, r: c.process_device_list(r.alice_list, "alice"),
    ),
    "device list counter is a blob": Case(
        "UPDATE device_lists SET counter = ? WHERE user_id = 'alice'",
        b"\x01",
        lambda c, r: c.process_device_list(r.alice_list, "alice"),
    ),
    "inbox sender is a blob": Case(
        "UPDATE inbox SET sender_user = ?", b"alice", lambda c, r: c.inbox()
    ),
    "inbox sender device is text": Case(
        "UPDATE inbox SET sender_device = ?", "one", lambda c, r: c.inbox()
    ),
    "inbox conversation is a blob": Case(
        "UPDATE inbox SET conversation = ?", b"bob", lambda c, r: c.inbox(take=True)
    ),
    "inbox message id is an integer": Case(
        "UPDATE inbox SET message_id = ?", 7, lambda c, r: c.inbox(take=True)
    ),
    "inbox direction is a blob": Case(
        "UPDATE inbox SET outgoing = ?", b"\x00", lambda c, r: c.inbox(take=True)
    ),
    "inbox body is an integer": Case(
        "UPDATE inbox SET body = ?", 7, lambda c, r: c.inbox(take=True)
    ),
    "event is an integer": Case(
        "UPDATE events SET event = ? WHERE seq = (SELECT max(seq) FROM events)",
        7,
        lambda c, r: c.take_events(),
    ),
    "event is garbage": Case(
        "UPDATE events SET event = ? WHERE seq = (SELECT max(seq) FROM events)",
        b"\xff",
        lambda c, r: c.take_events(),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_row_of_the_wrong_type_is_a_state_error_and_changes_nothing(
    reference: Reference, tmp_path: Path, name: str
) -> None:
    """REQ-CL-45: SQLite lets any column hold any type; each read checks the type (and the size
    of keys) and refuses with StateError, never TypeError or AttributeError, with the store
    unchanged. A plain store's inbox body of the wrong type is refused too, not returned."""
    case = CASES[name]
    path = copy(reference, tmp_path)
    tamper(path, case.sql, case.value)
    client = Client.open(path)
    before = snapshot(client)
    with pytest.raises(StateError, match=r"client store|event"):
        case.call(client, reference)
    assert snapshot(client) == before


# A second session with alice whose last_used is not an integer (alice's own session has 2; each
# peer device counts its own). Only the highest last_used was checked, when a session was made
# active, but ORDER BY last_used sorts by SQLite's type order (INTEGER and REAL < TEXT < BLOB):
# text or a blob became alice's active session for send and headed the list, and a real below
# the integer maximum was never checked at all.
ANOTHER_SESSION = (
    "INSERT INTO sessions SELECT peer_user, peer_device, zeroblob(16), peer_key, ?, state "
    "FROM sessions WHERE peer_user = 'alice'"
)
SESSION_READS: dict[str, Callable[[Client, Reference], object]] = {
    "active session on send": lambda c, r: c.send("alice", b"x"),
    "sessions listed": lambda c, r: c.sessions_with("alice", 1),
    "session made active on receive": lambda c, r: c.receive(r.from_alice),
}


@pytest.mark.parametrize("value", [1.5, "x", b"\x09"], ids=["real", "text", "blob"])
@pytest.mark.parametrize("read", list(SESSION_READS))
def test_a_session_last_used_of_another_type_below_the_maximum_is_a_state_error(
    reference: Reference, tmp_path: Path, read: str, value: object
) -> None:
    """REQ-CL-45: every read that orders a peer device's sessions by last_used (the active one
    for sending, the list, the pruning when one is made active) refuses a last_used that is
    not an integer in any of them, not only in the highest, with the store unchanged."""
    path = copy(reference, tmp_path)
    tamper(path, ANOTHER_SESSION, value)
    client = Client.open(path)
    before = snapshot(client)
    with pytest.raises(StateError, match="session last use in the client store"):
        SESSION_READS[read](client, reference)
    assert snapshot(client) == before


@pytest.mark.parametrize("value", ["x", 7, None])
def test_an_account_row_of_the_wrong_type_or_missing_fails_at_open(
    reference: Reference, tmp_path: Path, value: object
) -> None:
    path = copy(reference, tmp_path)
    if value is None:
        tamper(path, "DELETE FROM account WHERE id = 1 OR ? IS NULL", None)
    else:
        tamper(path, "UPDATE account SET state = ?", value)
    with pytest.raises(StateError, match="account"):
        Client.open(path)


@pytest.mark.parametrize(("name", "value"), [("user_id", b"bob"), ("device_key", "k" * 32)])
def test_a_client_row_of_the_wrong_type_fails_at_open(
    reference: Reference, tmp_path: Path, name: str, value: object
) -> None:
    """[REQ-CL-45] The store holds a client (its meta rows are there), but the user id is not
    text or the device key not a blob: a StateError naming the role, not the LocalError of a
    file that holds no client, and the file is left as it was."""
    path = copy(reference, tmp_path)
    tamper(path, f"UPDATE meta SET value = ? WHERE name = '{name}'", value)
    before = path.read_bytes()
    with pytest.raises(StateError, match="client store"):
        Client.open(path)
    assert path.read_bytes() == before


# --- reads that delete -----------------------------------------------------------------------


def test_taking_the_inbox_deletes_nothing_when_one_body_does_not_open(
    sealed_reference: Reference, tmp_path: Path
) -> None:
    """REQ-CL-46: inbox(take=True) opens every body before it deletes any; one that does not open
    (here the last byte of its tag flipped) leaves every message in place."""
    path = copy(sealed_reference, tmp_path)
    conn = sqlite3.connect(path)
    seq, body = conn.execute("SELECT seq, body FROM inbox ORDER BY seq DESC").fetchone()
    conn.close()
    tamper(path, f"UPDATE inbox SET body = ? WHERE seq = {seq}", body[:-1] + bytes([body[-1] ^ 1]))
    client = Client.open(path, key=STORE_KEY)
    before = snapshot(client)
    with pytest.raises(StateError, match="inbox"):
        client.inbox(take=True)
    assert snapshot(client) == before
    assert len(before["inbox"]) == 2


def test_taking_events_deletes_nothing_when_one_does_not_load(
    reference: Reference, tmp_path: Path
) -> None:
    """REQ-CL-46 for take_events."""
    path = copy(reference, tmp_path)
    tamper(path, "INSERT INTO events (event) VALUES (?)", b"\x80")
    client = Client.open(path)
    before = snapshot(client)
    with pytest.raises(StateError):
        client.take_events()
    assert snapshot(client) == before
    assert len(before["events"]) > 1


# --- the store key is checked when the store is opened -----------------------------------------


@pytest.mark.parametrize(
    ("sealed", "key"),
    [
        pytest.param(True, bytes(32), id="wrong-key"),
        pytest.param(True, None, id="no-key-for-a-sealed-store"),
        pytest.param(False, STORE_KEY, id="a-key-for-a-plain-store"),
    ],
)
def test_a_store_opened_with_the_wrong_key_is_refused_at_open(
    reference: Reference,
    sealed_reference: Reference,
    tmp_path: Path,
    sealed: bool,
    key: bytes | None,
) -> None:
    """REQ-CL-45: the account is loaded when the store is opened, so a wrong key (or a missing
    one) is a StateError before any call can act on the store: before this, a wrong key
    opened, and the first inbox(take=True) raised only after deleting every message."""
    path = copy(sealed_reference if sealed else reference, tmp_path)
    before = path.read_bytes()
    with pytest.raises(StateError):
        Client.open(path, key=key)
    assert path.read_bytes() == before


# --- files that hold no client --------------------------------------------------------------


def test_opening_a_missing_file_creates_nothing(tmp_path: Path) -> None:
    """REQ-CL-39: Client.open does not create; a mistyped path leaves no empty store behind."""
    path = tmp_path / "typo.sqlite"
    with pytest.raises(StoreError, match="SQLITE_CANTOPEN"):
        Client.open(path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", ["other-application", "empty"])
def test_opening_a_file_that_holds_no_client_writes_nothing_into_it(
    tmp_path: Path, content: str
) -> None:
    """REQ-CL-39: another application's database (in its own journal mode) or an empty file is a
    LocalError, and no table, row or journal-mode change is written into it."""
    path = tmp_path / "notes.sqlite"
    if content == "empty":
        path.write_bytes(b"")
    else:
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE notes (text TEXT)")
        conn.execute("INSERT INTO notes VALUES ('keep me')")
        conn.commit()
        conn.close()
    before = path.read_bytes()
    with pytest.raises(LocalError, match="holds no client"):
        Client.open(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.sqlite"]
