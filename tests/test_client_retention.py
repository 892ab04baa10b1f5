"""The client store as input from disk, its schema migration, and the retention of `processed`
(spec/client.md, [REQ-CL-39], [REQ-CL-40], [REQ-CL-41]).

Every test runs on real SQLite files under ``tmp_path``. Times are explicit (``now=``), so the
pruning boundary is exact and nothing depends on the wall clock.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from e2ee.client import Client
from e2ee.client.client import PROCESSED_RETENTION
from e2ee.client.envelope import Envelope
from e2ee.errors import (
    AuthenticationError,
    DuplicateMessageError,
    HandshakeError,
    RemoteError,
    StateError,
    StoreError,
)
from tests.client_support import World, snapshot

START = int(time.time())
RETENTION = 100


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def processed_ids(client: Client) -> set[bytes]:
    rows = client.store.conn.execute("SELECT message_id FROM processed").fetchall()
    return {row[0] for row in rows}


def inbox_count(client: Client, message_id: bytes) -> int:
    row = client.store.conn.execute(
        "SELECT COUNT(*) FROM inbox WHERE message_id = ?", (message_id,)
    ).fetchone()
    return int(row[0])


def pair(world: World, retention: int = RETENTION) -> tuple[Client, Client]:
    """Alice, and Bob whose client forgets processed ids after ``retention`` seconds."""
    [alice] = world.user("alice")
    [bob] = world.user("bob", processed_retention=retention)
    return alice, bob


def one(alice: Client, world: World, body: bytes) -> Envelope:
    [envelope] = alice.send("bob", body, world.directory)
    return envelope


# --- retention of processed ids -----------------------------------------------------------------


def test_the_default_retention_outlives_the_relays_default_message_ttl() -> None:
    """REQ-CL-41: the relay keeps a message 30 days (RelayConfig.message_ttl); one more day."""
    from e2ee.relay.rules import RelayConfig

    assert PROCESSED_RETENTION == 31 * 24 * 3600
    assert RelayConfig().message_ttl < PROCESSED_RETENTION


@pytest.mark.parametrize("retention", [0, -1, True, 1.5, "100"])
def test_a_retention_that_is_not_a_positive_integer_is_refused(
    world: World, retention: object
) -> None:
    """REQ-CL-41"""
    [bob] = world.user("bob")
    with pytest.raises(ValueError, match="processed_retention"):
        Client(bob.store, processed_retention=retention)  # type: ignore[arg-type]


def test_a_receive_forgets_ids_older_than_the_retention_and_keeps_the_boundary(
    world: World,
) -> None:
    """REQ-CL-41: a row at exactly the retention's age is kept, one second older is deleted;
    within the retention a redelivery is still a duplicate."""
    alice, bob = pair(world)
    first, second, third = (one(alice, world, b) for b in (b"one", b"two", b"three"))
    assert bob.receive(first.to_bytes(), now=START).message is not None
    assert bob.receive(second.to_bytes(), now=START + RETENTION).message is not None
    assert processed_ids(bob) == {first.message_id, second.message_id}
    assert bob.receive(first.to_bytes(), now=START + RETENTION).duplicate

    assert bob.receive(third.to_bytes(), now=START + RETENTION + 1).message is not None
    assert processed_ids(bob) == {second.message_id, third.message_id}
    assert bob.receive(second.to_bytes(), now=START + RETENTION + 1).duplicate


def test_a_duplicate_or_a_failed_receive_prunes_nothing(world: World) -> None:
    """REQ-CL-41 with REQ-CL-07 and REQ-CL-12: only a successful receive deletes rows."""
    alice, bob = pair(world)
    first, second = one(alice, world, b"one"), one(alice, world, b"two")
    assert bob.receive(first.to_bytes(), now=START).message is not None
    late = START + 10 * RETENTION
    before = snapshot(bob)
    assert bob.receive(first.to_bytes(), now=late).duplicate
    tampered = Envelope(
        second.sender_user,
        second.sender_device,
        second.recipient_user,
        second.recipient_device,
        second.message_id,
        second.payload[:-1] + bytes([second.payload[-1] ^ 1]),
    )
    with pytest.raises(AuthenticationError):
        bob.receive(tampered.to_bytes(), now=late)
    assert snapshot(bob) == before
    assert bob.receive(second.to_bytes(), now=late).message is not None
    assert processed_ids(bob) == {second.message_id}


def test_the_ids_a_receive_forgets_go_with_its_commit(world: World) -> None:
    """[REQ-CL-41] A receive deletes the rows older than the retention in its own transaction,
    with the rest of the receive: once it committed they are gone, whatever happens next (here
    the store's checkpoint hook fails right after the commit, as a crash would there). Deleted
    in a transaction of their own after the commit, they outlived such a failure."""
    alice, bob = pair(world)
    first, second = one(alice, world, b"one"), one(alice, world, b"two")
    assert bob.receive(first.to_bytes(), now=START).message is not None

    def crash(point: str) -> None:
        if point == "after_commit":
            raise RuntimeError("stopped right after the commit")

    bob.store.checkpoint_hook = crash
    with pytest.raises(RuntimeError):
        bob.receive(second.to_bytes(), now=START + RETENTION + 1)
    bob.store.checkpoint_hook = None
    assert processed_ids(bob) == {second.message_id}
    assert inbox_count(bob, second.message_id) == 1


@given(gaps=st.lists(st.integers(min_value=0, max_value=3 * RETENTION), min_size=1, max_size=6))
def test_processed_holds_exactly_the_ids_within_the_retention(
    tmp_path_factory: pytest.TempPathFactory, gaps: list[int]
) -> None:
    """REQ-CL-41 against a model: after receives at increasing times, `processed` holds the id
    of every message received no earlier than the last receive's time minus the retention."""
    world = World(tmp_path_factory.mktemp("retention"))
    alice, bob = pair(world)
    received: list[tuple[int, bytes]] = []
    now = START
    for index, gap in enumerate(gaps):
        now += gap
        envelope = one(alice, world, b"m%d" % index)
        assert bob.receive(envelope.to_bytes(), now=now).message is not None
        received.append((now, envelope.message_id))
    assert processed_ids(bob) == {m for at, m in received if at >= now - RETENTION}


def test_a_pruned_envelope_delivered_again_is_refused_and_changes_nothing(world: World) -> None:
    """REQ-CL-41: the retention is not the replay defence. Once its row is pruned, a normal
    message and an initial message delivered again are refused by the session (their keys were
    consumed), and an initial message whose session is gone by the handshake (its one-time
    prekey was used); the store is unchanged and the inbox holds each message once."""
    alice, bob = pair(world)
    initial, normal, later = (one(alice, world, b) for b in (b"one", b"two", b"three"))
    assert initial.sender_device_list is not None  # the initial form
    assert bob.receive(initial.to_bytes(), now=START).message is not None
    assert bob.receive(normal.to_bytes(), now=START).message is not None
    assert bob.receive(later.to_bytes(), now=START + RETENTION + 1).message is not None
    assert processed_ids(bob) == {later.message_id}

    for envelope in (normal, initial):
        before = snapshot(bob)
        with pytest.raises(DuplicateMessageError):
            bob.receive(envelope.to_bytes(), now=START + RETENTION + 2)
        assert snapshot(bob) == before
        assert inbox_count(bob, envelope.message_id) == 1

    bob.store.conn.execute("DELETE FROM sessions")  # as if the session had been replaced since
    before = snapshot(bob)
    with pytest.raises(HandshakeError):
        bob.receive(initial.to_bytes(), now=START + RETENTION + 2)
    assert snapshot(bob) == before
    assert inbox_count(bob, initial.message_id) == 1


def test_the_refusal_of_a_pruned_redelivery_is_a_remote_error(world: World) -> None:
    """REQ-CL-41: the relay client acknowledges a RemoteError as refused for good (and keeps a
    LocalError such as StoreError for a retry), so a redelivery after pruning leaves the queue."""
    alice, bob = pair(world)
    envelope = one(alice, world, b"one")
    assert bob.receive(envelope.to_bytes(), now=START).message is not None
    assert bob.receive(one(alice, world, b"two").to_bytes(), now=START + 2 * RETENTION).message
    with pytest.raises(RemoteError):
        bob.receive(envelope.to_bytes(), now=START + 2 * RETENTION)
    assert not issubclass(StoreError, RemoteError)


# --- schema migration ---------------------------------------------------------------------------


def schema_sql(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    rows = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name"
    ).fetchall()
    return [(row[0], row[1]) for row in rows]


def make_schema_1(path: Path) -> None:
    """Turn a store into the schema-1 layout: `processed` without its date or index."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.execute("DROP INDEX processed_by_age")
        conn.execute("ALTER TABLE processed RENAME TO processed_2")
        conn.execute(
            "CREATE TABLE processed (sender_user TEXT NOT NULL, sender_device INTEGER NOT NULL,"
            " message_id BLOB NOT NULL, PRIMARY KEY (sender_user, sender_device, message_id))"
            " WITHOUT ROWID"
        )
        conn.execute(
            "INSERT INTO processed SELECT sender_user, sender_device, message_id FROM processed_2"
        )
        conn.execute("DROP TABLE processed_2")
        conn.execute("UPDATE meta SET value = 1 WHERE name = 'schema'")
        conn.execute("COMMIT")
    finally:
        conn.close()


def test_a_schema_1_store_is_migrated_keeping_every_processed_id(world: World) -> None:
    """REQ-CL-40: rows are kept and dated with the migration's time; the tables are then defined
    exactly as in a new store; a redelivery is still a duplicate until the retention ends."""
    alice, bob = pair(world)
    envelope = one(alice, world, b"one")
    assert bob.receive(envelope.to_bytes(), now=START).message is not None
    path = Path(bob.store.conn.execute("PRAGMA database_list").fetchone()[2])
    bob.close()
    make_schema_1(path)

    migrated_at = START + 5 * RETENTION
    bob = Client.open(path, now=migrated_at, processed_retention=RETENTION)
    conn = bob.store.conn
    assert conn.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()[0] == 3
    assert conn.execute("SELECT message_id, received FROM processed").fetchall() == [
        (envelope.message_id, migrated_at)
    ]
    [fresh] = world.user("carol")
    assert schema_sql(conn) == schema_sql(fresh.store.conn)
    assert bob.receive(envelope.to_bytes(), now=migrated_at + RETENTION).duplicate
    assert bob.receive(one(alice, world, b"two").to_bytes(), now=migrated_at + RETENTION + 1)
    assert envelope.message_id not in processed_ids(bob)


def test_a_schema_1_store_is_migrated_in_one_transaction(world: World) -> None:
    """[REQ-CL-40] Both steps from schema 1, 1 to 2 and 2 to 3, are one transaction: when the
    second refuses (a pending link code schema 2 could not have written: a BLOB, not TEXT), the
    first is undone too, and the file is still the schema-1 store it was."""
    waiting = Client.create_linked(world.path("alice"), "alice")
    path = Path(waiting.store.conn.execute("PRAGMA database_list").fetchone()[2])
    waiting.close()
    make_schema_1(path)  # its pending link code stays the BLOB schema 3 writes
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    before = file_bytes(path)
    with pytest.raises(StateError, match="link code"):
        Client.open(path, now=START)
    assert file_bytes(path) == before
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone() == (1,)
        columns = [row[1] for row in conn.execute("PRAGMA table_info(processed)")]
        assert "received" not in columns
    finally:
        conn.close()


def file_bytes(path: Path) -> bytes:
    return path.read_bytes()


@pytest.mark.parametrize("value", [4, 0, -1, "2", b"\x02", 2.0, None])
def test_a_schema_this_code_does_not_know_is_refused_and_the_file_is_unchanged(
    world: World, value: object
) -> None:
    """REQ-CL-39"""
    [bob] = world.user("bob")
    path = Path(bob.store.conn.execute("PRAGMA database_list").fetchone()[2])
    bob.store.conn.execute("UPDATE meta SET value = ? WHERE name = 'schema'", (value,))
    bob.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    before = file_bytes(path)
    with pytest.raises(StateError, match="schema"):
        Client.open(path)
    assert file_bytes(path) == before


# --- the store file as untrusted input ------------------------------------------------------


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    """REQ-CL-39"""
    path = tmp_path / "garbage.sqlite"
    path.write_bytes(b"not a database at all " * 300)
    before = file_bytes(path)
    with pytest.raises(StoreError, match="SQLITE_NOTADB") as caught:
        Client.open(path)
    assert not isinstance(caught.value.__cause__, sqlite3.Error)
    assert file_bytes(path) == before


def test_creating_a_client_over_a_file_that_is_not_a_database_is_a_store_error(
    tmp_path: Path,
) -> None:
    """[REQ-CL-39] Client.create opens the file too (it may exist): one that is not a SQLite
    database is a StoreError naming SQLite's code, not the sqlite3 exception, and the file is
    left as it was."""
    path = tmp_path / "garbage.sqlite"
    path.write_bytes(b"not a database at all " * 300)
    before = file_bytes(path)
    with pytest.raises(StoreError, match="SQLITE_NOTADB") as caught:
        Client.create(path, "bob")
    assert caught.value.__cause__ is None
    assert file_bytes(path) == before


def test_a_damaged_store_is_a_store_error(world: World) -> None:
    """REQ-CL-39: pages after the first overwritten (the schema page is intact, the tables are
    not): whichever read meets the damage raises StoreError, never a sqlite3 exception."""
    [bob] = world.user("bob")
    path = Path(bob.store.conn.execute("PRAGMA database_list").fetchone()[2])
    bob.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    bob.close()
    data = bytearray(path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    data[page_size:] = b"\xa5" * (len(data) - page_size)
    path.write_bytes(bytes(data))

    def open_and_read() -> None:
        Client.open(path).prekey_counts()

    with pytest.raises(StoreError, match="SQLITE_CORRUPT"):
        open_and_read()


def test_a_failing_transaction_is_rolled_back_and_raised_as_a_store_error(world: World) -> None:
    """REQ-CL-39 with REQ-CL-04: a statement SQLite refuses inside a transaction rolls back
    everything the transaction wrote (SQLite itself undoes only the refused statement)."""
    [bob] = world.user("bob")
    before = snapshot(bob)
    assert before["device_lists"]  # so deleting them is a change a rollback must undo

    def write_then_fail() -> None:
        with bob.store.transaction() as conn:
            conn.execute("DELETE FROM device_lists")
            conn.execute("INSERT INTO meta VALUES ('schema', 2)")  # the key exists

    with pytest.raises(StoreError, match="SQLITE_CONSTRAINT") as caught:
        write_then_fail()
    assert caught.value.__cause__ is None
    assert snapshot(bob) == before
    assert not bob.store.conn.in_transaction
