"""The SQLite relay storage's own file format: schema versions and the migration between them.

Schema 1 (the first relay) kept one-time keys and idempotent results in WITHOUT ROWID tables;
schema 2 keeps them in rowid tables behind unique indexes (claims write fewer, smaller pages).
A relay must open a schema-1 file, keep every row, and go on handing out each key once.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from e2ee.errors import RelayUnavailableError
from e2ee.relay.sqlite import SQLiteStorage
from e2ee.wire import codec
from tests.helpers import table_reads_without_index
from tests.relay_support import Clock, User, make_relay, send_body
from tests.test_relay_rules import register, upload

# The two tables as schema 1 created them (a historical fixture, not the code under test).
SCHEMA_1_TABLES = {
    "one_time": (
        "CREATE TABLE one_time (user TEXT NOT NULL, device INTEGER NOT NULL, "
        "kind INTEGER NOT NULL, id INTEGER NOT NULL, public BLOB NOT NULL, "
        "signature BLOB NOT NULL, PRIMARY KEY (user, device, kind, id)) WITHOUT ROWID"
    ),
    "results": (
        "CREATE TABLE results (kind TEXT NOT NULL, key BLOB NOT NULL, user TEXT NOT NULL, "
        "device INTEGER NOT NULL, body BLOB NOT NULL, expires INTEGER NOT NULL, "
        "PRIMARY KEY (kind, key)) WITHOUT ROWID"
    ),
}


def rows(path: Path) -> dict[str, list[Any]]:
    """Every row of every table, but the schema version itself."""
    with sqlite3.connect(path) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'sqlite_sequence'"
            )
        ]
        found = {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall()) for t in tables}
    found["meta"] = [r for r in found["meta"] if r[0] != "schema_version"]
    return found


def schema_version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
        return int.from_bytes(row[0], "big")


def without_rowid(path: Path, table: str) -> bool:
    with sqlite3.connect(path) as conn:
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()
        return "WITHOUT ROWID" in sql[0].upper()


EXPIRY_INDEXES = {"challenges_by_expiry", "tokens_by_expiry", "results_by_expiry"}
"""What schema 3 added: the sweep's batches walk them (REQ-RL-41)."""


def indexes(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}


def rewrite_as_schema_2(path: Path) -> None:
    """Turn a closed relay file back into the schema-2 layout (no expiry indexes but the
    messages'), rows unchanged."""
    conn = sqlite3.connect(path, isolation_level=None)
    for index in EXPIRY_INDEXES:
        conn.execute(f"DROP INDEX {index}")
    conn.execute(
        "UPDATE meta SET value = ? WHERE name = 'schema_version'", ((2).to_bytes(4, "big"),)
    )
    conn.close()


def rewrite_as_schema_1(path: Path) -> None:
    """Turn a closed relay file back into the schema-1 layout, rows unchanged."""
    rewrite_as_schema_2(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    for table, create in SCHEMA_1_TABLES.items():
        conn.execute(f"ALTER TABLE {table} RENAME TO old_{table}")
        conn.execute(create)
        conn.execute(f"INSERT INTO {table} SELECT * FROM old_{table}")
        conn.execute(f"DROP TABLE old_{table}")
    conn.execute(
        "UPDATE meta SET value = ? WHERE name = 'schema_version'", ((1).to_bytes(4, "big"),)
    )
    conn.execute("COMMIT")
    conn.close()


def populate(path: Path, clock: Clock) -> tuple[User, User, bytes, bytes]:
    """A closed relay file holding two users, bob's three keys of each kind less the one
    alice claimed, that claim's stored result and a message to bob: (alice, bob, the claim
    request, its answer)."""
    storage = SQLiteStorage(path)
    relay = make_relay(storage, clock)
    alice, bob = User.make("alice"), User.make("bob")
    register(relay, storage, alice)
    register(relay, storage, bob)
    upload(relay, storage, bob, ec=3, kem=3)
    claim = codec.encode({0: b"bob", 1: b"c" * 16})
    first = storage.run(relay.claim(alice.devices[0].token, claim))
    storage.run(relay.send(alice.devices[0].token, send_body(bob, b"m" * 16, alice.devices[0])))
    storage.close()
    return alice, bob, claim, first


def test_a_schema_1_file_is_migrated_with_every_row_and_claims_go_on(tmp_path: Path) -> None:
    path = tmp_path / "relay.sqlite"
    clock = Clock()
    alice, bob, claim, first = populate(path, clock)

    rewrite_as_schema_1(path)
    assert schema_version(path) == 1
    assert without_rowid(path, "one_time")
    assert not EXPIRY_INDEXES & indexes(path)
    before = rows(path)

    storage = SQLiteStorage(path)
    try:
        assert schema_version(path) == 3
        assert indexes(path) >= EXPIRY_INDEXES
        assert not without_rowid(path, "one_time")
        assert not without_rowid(path, "results")
        assert rows(path) == before  # every row of every table kept
        relay = make_relay(storage, clock)
        # The stored claim result survived: a retry is answered with the same bundle.
        assert storage.run(relay.claim(alice.devices[0].token, claim)) == first
        # The queued message is still there for bob.
        fetched = codec.decode(
            storage.run(relay.fetch(bob.devices[0].token, 0, 10)), max_size=1 << 20
        )
        assert len(fetched[0]) == 1
        # The remaining keys go out once each, lowest id first, then none.
        handed: list[int | None] = []
        for _ in range(3):
            body = codec.encode({0: b"bob", 1: os.urandom(16)})
            bundle = codec.decode(
                codec.decode(
                    storage.run(relay.claim(alice.devices[0].token, body)), max_size=1 << 20
                )[0][0][1],
                max_size=1 << 16,
            )
            handed.append(bundle.get(9))
        claimed_first = codec.decode(
            codec.decode(first, max_size=1 << 20)[0][0][1], max_size=1 << 16
        )[9]
        assert claimed_first not in handed
        remaining = [i for i in handed[:2] if i is not None]
        assert remaining == sorted(remaining)
        assert len(remaining) == 2
        assert handed[2] is None
    finally:
        storage.close()


def test_a_schema_2_file_gains_the_expiry_indexes_with_every_row_kept(tmp_path: Path) -> None:
    """[REQ-RL-28] Schema 2 to 3 adds the challenges', tokens' and results' expiry indexes in
    the migration's one transaction; nothing else changes."""
    path = tmp_path / "relay.sqlite"
    populate(path, Clock())
    rewrite_as_schema_2(path)
    before = rows(path)
    assert not EXPIRY_INDEXES & indexes(path)

    SQLiteStorage(path).close()
    assert schema_version(path) == 3
    assert indexes(path) >= EXPIRY_INDEXES
    assert rows(path) == before


def test_every_sweep_statement_walks_an_expiry_index(tmp_path: Path) -> None:
    """[REQ-RL-41] A sweep batch is bounded in the rows it reads, not only in those it
    deletes: every statement of a sweep job searches an index on ``expires``. Without one, a
    sweep that found nothing expired read every result of the last day (KiB per claim)."""
    storage = SQLiteStorage(tmp_path / "relay.sqlite")
    relay = make_relay(storage)
    alice, bob = User.make("alice"), User.make("bob")
    register(relay, storage, alice)
    register(relay, storage, bob)
    storage.run(relay.send(alice.devices[0].token, send_body(bob, b"m" * 16, alice.devices[0])))
    conn = storage._conn
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        storage.run(relay.sweep())
    finally:
        conn.set_trace_callback(None)
    swept = {
        table
        for table in ("messages", "challenges", "tokens", "results")
        for statement in statements
        if f"FROM {table} WHERE" in statement and "expires <=" in statement
    }
    assert swept == {"messages", "challenges", "tokens", "results"}
    for statement in statements:
        if "expires <=" not in statement:
            continue
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + statement)]
        walks = [step for step in plan if "expires<?" in step]
        assert walks, (statement, plan)
        assert all("_by_expiry" in step for step in walks), (statement, plan)
    storage.close()


def relay_file_with_version(path: Path, value: object, journal_mode: str = "wal") -> bytes:
    """A closed relay file whose ``meta.schema_version`` is ``value``, in the given journal
    mode; returns its bytes."""
    SQLiteStorage(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE meta SET value = ? WHERE name = 'schema_version'", (value,))
    assert conn.execute(f"PRAGMA journal_mode={journal_mode}").fetchone()[0] == journal_mode
    conn.close()
    assert not path.with_name(path.name + "-wal").exists()
    return path.read_bytes()


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_a_newer_schema_is_refused_and_left_alone(tmp_path: Path, journal_mode: str) -> None:
    """[REQ-RL-28] Refused without a single byte of the file changed: the version is read
    before anything that writes (the relay switched a rollback-journal file to WAL, which
    rewrites the file header, before it looked at the version)."""
    path = tmp_path / "relay.sqlite"
    image = relay_file_with_version(path, (4).to_bytes(4, "big"), journal_mode)
    before = rows(path)
    with pytest.raises(RelayUnavailableError, match="newer"):
        SQLiteStorage(path)
    assert path.read_bytes() == image
    assert rows(path) == before
    assert schema_version(path) == 4


@pytest.mark.parametrize(
    "value",
    [2, "2", 2.0, b"\x02", b"\x00\x00\x00\x00\x02"],
    ids=["integer", "text", "real", "short", "long"],
)
def test_a_damaged_schema_version_is_refused_with_a_typed_error(
    tmp_path: Path, value: object
) -> None:
    """[REQ-RL-28] A version that is not the 4-byte big-endian integer the relay writes (here
    of another SQLite type, or of another length) marks a damaged or foreign file: it is
    refused as unavailable, unchanged (an INTEGER or TEXT value raised a bare TypeError)."""
    path = tmp_path / "relay.sqlite"
    image = relay_file_with_version(path, value, "delete")
    with pytest.raises(RelayUnavailableError, match="damaged"):
        SQLiteStorage(path)
    assert path.read_bytes() == image


def test_a_file_that_is_not_a_relay_database_is_refused_with_a_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "relay.sqlite"
    junk = b"not a database" * 1000
    path.write_bytes(junk)
    with pytest.raises(RelayUnavailableError, match="cannot be opened"):
        SQLiteStorage(path)
    assert path.read_bytes() == junk


def test_no_request_reads_a_whole_table(tmp_path: Path) -> None:
    """A request's work does not grow with what the relay holds: every step of every
    statement that publishing a list, logging in, uploading keys, counting them, claiming,
    sending, fetching and acknowledging run is an index search with a constraint (the query
    plans, not a timing). The one-time key claim, for instance, must not scan the device's
    keys, and nothing may read all messages or all results."""
    storage = SQLiteStorage(tmp_path / "relay.sqlite")
    relay = make_relay(storage)
    alice, bob = User.make("alice", devices=2), User.make("bob")
    register(relay, storage, bob)
    upload(relay, storage, bob, ec=3, kem=3)
    conn = storage._conn
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        register(relay, storage, alice)  # publish a list, challenge and login for two devices
        upload(relay, storage, alice, ec=2, kem=2)
        storage.run(relay.key_counts(alice.devices[0].token))
        claim = codec.encode({0: b"bob", 1: b"c" * 16})
        storage.run(relay.claim(alice.devices[0].token, claim))
        storage.run(relay.claim(alice.devices[0].token, claim))  # the stored result
        body = send_body(bob, b"m" * 16, alice.devices[0])
        storage.run(relay.send(alice.devices[0].token, body))
        storage.run(relay.send(alice.devices[0].token, body))  # the stored result
        page = storage.run(relay.fetch(bob.devices[0].token, 0, 10))
        ids = [row[0] for row in codec.decode(page, max_size=1 << 20)[0]]
        storage.run(relay.ack(bob.devices[0].token, codec.encode({0: ids})))
    finally:
        conn.set_trace_callback(None)
    assert any("INTO messages" in s for s in statements)
    assert any("FROM one_time" in s for s in statements)
    # equality required: a range alone (rowid > ?) may be every message
    assert table_reads_without_index(conn, statements, ranges=False) == []
    storage.close()
