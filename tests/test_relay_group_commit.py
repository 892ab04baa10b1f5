"""SQLite group commit (spec/relay.md, REQ-RL-29): jobs queued together share one transaction
and one fsync, each job stays atomic on its own, a transaction that fails fails every job in
it and changes nothing, and the WAL stays bounded while a relay writes without pause.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import pytest

from e2ee.errors import RelayForbiddenError, RelayUnavailableError
from e2ee.relay import api
from e2ee.relay.app import create_app
from e2ee.relay.sqlite import CHECKPOINT_EVERY, SQLiteStorage, _SQLiteTx
from e2ee.relay.storage import Tx
from tests.relay_support import User, login, make_relay, make_storage, one_batch, send_body


def put(key: bytes, value: float = 1.0) -> Callable[[Tx], bytes]:
    def job(tx: Tx) -> bytes:
        tx.put_bucket(key, value, 0.0)
        return key

    return job


def put_then_refuse(key: bytes) -> Callable[[Tx], None]:
    def job(tx: Tx) -> None:
        tx.put_bucket(key, 1.0, 0.0)
        raise RelayForbiddenError("refused after a write")

    return job


def buckets(storage: SQLiteStorage) -> list[bytes]:
    """The keys of the buckets stored (the jobs here write buckets 0..39)."""

    def job(tx: Tx) -> list[bytes]:
        return [bytes([i]) for i in range(40) if tx.bucket(bytes([i])) is not None]

    return storage.run(job)


def file_rows(path: Path) -> list[Any]:
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return [(t, sorted(conn.execute(f"SELECT * FROM {t}").fetchall())) for t in tables]


@pytest.fixture
def storage(tmp_path: Path) -> Any:
    opened = SQLiteStorage(tmp_path / "relay.sqlite", busy_timeout=0.05)
    yield opened
    opened.close()


def test_jobs_queued_in_one_turn_share_one_commit(storage: SQLiteStorage) -> None:
    before = storage.commits
    assert one_batch(storage, [put(bytes([i])) for i in range(20)]) == [
        bytes([i]) for i in range(20)
    ]
    assert storage.commits == before + 1
    assert buckets(storage) == [bytes([i]) for i in range(20)]


@pytest.mark.parametrize(("gather_turns", "commits"), [(2, 1), (0, 2)])
def test_a_job_queued_a_turn_later_joins_the_batch_while_it_gathers(
    tmp_path: Path, gather_turns: int, commits: int
) -> None:
    storage = SQLiteStorage(tmp_path / "relay.sqlite", gather_turns=gather_turns)

    async def main() -> None:
        first = storage.submit(put(b"\x01"))
        await asyncio.sleep(0)  # one turn of the loop: a request read a little later
        second = storage.submit(put(b"\x02"))
        assert await first == b"\x01"
        assert await second == b"\x02"

    before = storage.commits
    asyncio.run(main())
    assert storage.commits == before + commits
    storage.close()


def test_a_refused_job_is_rolled_back_alone_and_the_others_commit(storage: SQLiteStorage) -> None:
    first, refused, third = one_batch(
        storage, [put(b"\x01"), put_then_refuse(b"\x02"), put(b"\x03")]
    )
    assert (first, third) == (b"\x01", b"\x03")
    assert isinstance(refused, RelayForbiddenError)
    assert buckets(storage) == [b"\x01", b"\x03"]


def test_a_job_refused_before_writing_leaves_the_batch_alone(storage: SQLiteStorage) -> None:
    def refuse(tx: Tx) -> None:
        tx.bucket(b"\x07")  # reads only
        raise RelayForbiddenError("refused before any write")

    first, refused, third = one_batch(storage, [put(b"\x01"), refuse, put(b"\x03")])
    assert (first, third) == (b"\x01", b"\x03")
    assert isinstance(refused, RelayForbiddenError)
    assert buckets(storage) == [b"\x01", b"\x03"]


def test_a_storage_error_inside_a_job_fails_that_job_alone(storage: SQLiteStorage) -> None:
    def broken(tx: Tx) -> None:
        tx.put_bucket(b"\x02", 1.0, 0.0)
        assert isinstance(tx, _SQLiteTx)
        tx.c.execute("INSERT INTO no_such_table VALUES (1)")

    first, failed, third = one_batch(storage, [put(b"\x01"), broken, put(b"\x03")])
    assert (first, third) == (b"\x01", b"\x03")
    assert isinstance(failed, RelayUnavailableError)
    assert buckets(storage) == [b"\x01", b"\x03"]


def test_a_transaction_that_cannot_begin_fails_every_job_and_changes_nothing(
    storage: SQLiteStorage,
) -> None:
    storage.run(put(b"\x09"))
    before = file_rows(Path(storage.path))
    other = sqlite3.connect(storage.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock past the busy timeout

    outcomes = one_batch(storage, [put(bytes([i])) for i in range(3)])
    assert all(isinstance(o, RelayUnavailableError) for o in outcomes), outcomes
    with pytest.raises(RelayUnavailableError):
        storage.run(put(b"\x04"))
    other.execute("ROLLBACK")
    other.close()
    assert file_rows(Path(storage.path)) == before
    # and the storage works again once the lock is free
    assert storage.run(put(b"\x05")) == b"\x05"
    assert buckets(storage) == [b"\x05", b"\x09"]


def test_a_transaction_that_cannot_commit_fails_every_job_and_changes_nothing(
    storage: SQLiteStorage,
) -> None:
    """[REQ-RL-29] SQLite refuses the COMMIT itself (here a deferred foreign key that one job
    broke, checked only at commit; a full disk or an I/O error fails a commit the same way):
    every job of the batch fails with RelayUnavailableError, none is answered as stored, and
    the file holds what it held before."""
    storage.run(put(b"\x09"))
    with sqlite3.connect(storage.path) as conn:
        conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        conn.execute(
            "CREATE TABLE child (parent INTEGER REFERENCES parent (id) "
            "DEFERRABLE INITIALLY DEFERRED)"
        )
    conn.close()
    storage._conn.execute("PRAGMA foreign_keys = ON")  # only takes effect outside a transaction
    before = file_rows(Path(storage.path))

    def orphan(tx: Tx) -> None:
        assert isinstance(tx, _SQLiteTx)
        tx.c.execute("INSERT INTO child VALUES (7)")  # no parent 7: the commit will fail

    outcomes = one_batch(storage, [put(b"\x01"), orphan, put(b"\x03")])
    assert all(isinstance(o, RelayUnavailableError) for o in outcomes), outcomes
    with pytest.raises(RelayUnavailableError):
        storage.run(orphan)
    assert not storage._conn.in_transaction
    assert file_rows(Path(storage.path)) == before
    # and the storage goes on committing once no job breaks the constraint
    assert storage.run(put(b"\x05")) == b"\x05"
    assert buckets(storage) == [b"\x05", b"\x09"]


def test_a_cancelled_request_does_not_stop_the_batch(storage: SQLiteStorage) -> None:
    async def main() -> bytes:
        gone = storage.submit(put(b"\x01"))
        kept = storage.submit(put(b"\x02"))
        gone.cancel()  # the client went away; its job still runs (it was accepted to run)
        return await kept

    assert asyncio.run(main()) == b"\x02"
    assert buckets(storage) == [b"\x01", b"\x02"]


def test_the_wal_stays_bounded_while_a_writer_never_pauses(tmp_path: Path) -> None:
    """Without the checkpointer's pass under the write lock, a PASSIVE checkpoint never catches
    up with a writer that never pauses, and the WAL grows with every commit."""
    storage = SQLiteStorage(tmp_path / "relay.sqlite")
    wal = Path(storage.path + "-wal")
    commits = 30 * CHECKPOINT_EVERY
    blob = b"x" * 3000  # about one page of its own per commit

    def job(i: int) -> Callable[[Tx], None]:
        return lambda tx: tx.put_result("send", i.to_bytes(8, "big"), ("u", 1), blob, 2**40)

    for i in range(commits):
        storage.run(job(i))
    unbounded = commits * 4096  # at least one new page per commit if nothing is checkpointed
    assert wal.stat().st_size < unbounded / 2
    storage.close()


def test_without_its_checkpointer_thread_the_writer_checkpoints_by_itself(tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path / "relay.sqlite")
    assert storage._checkpointer is not None
    storage._checkpointer.stop()  # as if the thread could not open the file
    wal = Path(storage.path + "-wal")
    commits = 30 * CHECKPOINT_EVERY
    for i in range(commits):
        storage.run(put(i.to_bytes(2, "big")))
    assert wal.stat().st_size < commits * 4096 / 2
    storage.close()


def test_close_stops_the_checkpointer_thread(tmp_path: Path) -> None:
    def checkpointers() -> int:
        return sum(t.name == "e2ee-relay-checkpoint" for t in threading.enumerate())

    before = checkpointers()
    storage = SQLiteStorage(tmp_path / "relay.sqlite")
    assert checkpointers() == before + 1
    storage.close()
    assert checkpointers() == before


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_send_is_answered_only_once_another_connection_can_read_it(
    backend: str, tmp_path: Path
) -> None:
    """[REQ-RL-21] The ASGI app driven directly with 12 sends in flight (so that SQLite groups
    them): at the moment each 200 starts, a second connection to the database already sees that
    send's envelope. The SIGKILL test can only catch an answer sent a few milliseconds before
    its commit; this one catches any answer sent before it."""
    storage = make_storage(backend, tmp_path)
    if isinstance(storage, SQLiteStorage):
        path = storage.path
        reader: Any = sqlite3.connect(path)
        count = "SELECT count(*) FROM messages WHERE envelope = ?"
    else:
        import psycopg

        from e2ee.relay.postgres import PostgresStorage

        assert isinstance(storage, PostgresStorage)
        reader = psycopg.connect(storage._url, autocommit=True)
        count = "SELECT count(*) FROM messages WHERE envelope = %s"
    relay = make_relay(storage)
    alice, bob = User.make("alice"), User.make("bob")
    for user in (alice, bob):
        storage.run(relay.publish_device_list(user.list_body()))
    token = api.encode_token(login(relay, storage, alice.devices[0])).encode()
    app = create_app(relay, storage, sweep=False)
    answered: list[tuple[int, int]] = []  # (status, rows already readable with the envelope)

    async def post(body: bytes, envelope: bytes) -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": api.MESSAGES,
            "raw_path": api.MESSAGES.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"authorization", b"Bearer " + token),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        parts = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            return parts.pop(0) if parts else {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                (seen,) = reader.execute(count, (envelope,)).fetchone()
                answered.append((message["status"], seen))

        await app(scope, receive, send)

    async def main() -> None:
        sends = []
        for _ in range(12):
            message_id = os.urandom(16)
            envelope = alice.devices[0].envelope(bob.devices[0], message_id)
            sends.append(post(send_body(bob, message_id, alice.devices[0]), envelope))
        await asyncio.gather(*sends)

    before = getattr(storage, "commits", 0)
    asyncio.run(main())
    assert answered == [(200, 1)] * 12
    if isinstance(storage, SQLiteStorage):
        assert storage.commits - before < 12  # they did share commits
    reader.close()
    storage.close()
