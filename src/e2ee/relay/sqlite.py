"""SQLite relay storage: WAL, ``synchronous=FULL``, AUTOINCREMENT message ids, single-statement
claims, and group commit.

Group commit (:meth:`SQLiteStorage.submit`): jobs submitted from the event loop are queued; a
flush takes every job waiting (up to ``batch_max``), runs each inside its own SAVEPOINT on the
event-loop thread (a job that raises is rolled back alone: failed operations change nothing;
the statements take microseconds), then hands only the ``COMMIT`` -- the fsync -- to a worker
thread. Jobs submitted meanwhile wait for the next flush. A job's future is resolved only after
its commit, so a request is answered "accepted" only once it is on disk (``synchronous=FULL`` in
WAL mode syncs the WAL on every commit); one fsync covers the whole batch.

Two other designs were measured worse on the 2-core development machine (same-run A/B,
``benchmarks/bench_relay.py`` load, 16 connections): running the batch's jobs *and* the commit
in a worker thread (every statement re-takes the GIL from a busy event loop: 2,300 against
3,000 sends/s), and ``synchronous=NORMAL`` with our own fsync of the WAL in a sync thread, so
that the next batch runs while the previous one syncs (batches shrink to one loop turn and the
fsyncs per send nearly double: 2,620 against 2,930 sends/s).

Schema 2 (see :func:`_migrate`) keeps one-time keys and idempotent results, whose rows are
large (an ML-KEM key is 1,568 bytes, a claim result several KiB), in rowid tables behind unique
indexes; schema 1's WITHOUT ROWID tables made a claim two deep b-tree searches.

Why AUTOINCREMENT: a plain INTEGER PRIMARY KEY may reuse the id of a deleted last row, and a
client paging with ``after=<id>`` would then miss a message. The claim statement is one
``DELETE ... RETURNING`` on the lowest id, exact even with several writer processes; one
connection serialises the jobs of this process anyway.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from e2ee.errors import RelayUnavailableError
from e2ee.identity import SignedDeviceList
from e2ee.relay.storage import StoredList, TokenRow, Tx

T = TypeVar("T")

SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    user TEXT PRIMARY KEY, user_key BLOB NOT NULL, counter INTEGER NOT NULL, signed BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS devices (
    user TEXT NOT NULL, device INTEGER NOT NULL, queued INTEGER NOT NULL DEFAULT 0,
    hw0 INTEGER NOT NULL DEFAULT 0, hw1 INTEGER NOT NULL DEFAULT 0, bundle BLOB,
    PRIMARY KEY (user, device)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS one_time (
    user TEXT NOT NULL, device INTEGER NOT NULL, kind INTEGER NOT NULL, id INTEGER NOT NULL,
    public BLOB NOT NULL, signature BLOB NOT NULL, UNIQUE (user, device, kind, id)
);
CREATE TABLE IF NOT EXISTS challenges (nonce BLOB PRIMARY KEY, expires INTEGER NOT NULL)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tokens (
    hash BLOB PRIMARY KEY, user TEXT NOT NULL, device INTEGER NOT NULL, device_key BLOB NOT NULL,
    expires INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS results (
    kind TEXT NOT NULL, key BLOB NOT NULL, user TEXT NOT NULL, device INTEGER NOT NULL,
    body BLOB NOT NULL, expires INTEGER NOT NULL, UNIQUE (kind, key)
);
CREATE TABLE IF NOT EXISTS buckets (key BLOB PRIMARY KEY, tokens REAL NOT NULL,
    updated REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT NOT NULL, device INTEGER NOT NULL,
    expires INTEGER NOT NULL, envelope BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_device ON messages (user, device, id);
CREATE INDEX IF NOT EXISTS messages_by_expiry ON messages (expires);
"""


# The tables schema 2 rebuilt as rowid tables (module docstring); same columns, same order.
_REBUILT_IN_2 = ("one_time", "results")


def _migrate(conn: sqlite3.Connection) -> None:
    """Create the schema, or bring an older one up to :data:`SCHEMA_VERSION`, in one
    transaction. A schema newer than this code is refused."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = 0
        if _has_table(conn, "meta"):
            row = conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
            version = 0 if row is None else int.from_bytes(row[0], "big")
        if version > SCHEMA_VERSION:
            raise RelayUnavailableError(
                f"relay database schema {version} is newer than this relay ({SCHEMA_VERSION})"
            )
        if version == 1:
            for table in _REBUILT_IN_2:
                conn.execute(f"ALTER TABLE {table} RENAME TO {table}_v1")
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        if version == 1:
            for table in _REBUILT_IN_2:
                conn.execute(f"INSERT INTO {table} SELECT * FROM {table}_v1")  # noqa: S608
                conn.execute(f"DROP TABLE {table}_v1")
        conn.execute(
            "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
            (SCHEMA_VERSION.to_bytes(4, "big"),),
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # BEGIN itself may be what failed (not a database)
            conn.execute("ROLLBACK")
        raise


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    return found is not None


class _SQLiteTx:
    __slots__ = ("c",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.c = conn

    def _one(self, sql: str, args: tuple[Any, ...]) -> Any:
        return self.c.execute(sql, args).fetchone()

    def secret(self, name: str, fresh: bytes) -> bytes:
        self.c.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (name, fresh))
        value: bytes = self._one("SELECT value FROM meta WHERE name = ?", (name,))[0]
        return value

    def device_list(self, user: str) -> StoredList | None:
        row = self._one("SELECT user_key, counter, signed FROM users WHERE user = ?", (user,))
        if row is None:
            return None
        return StoredList(user, row[0], row[1], row[2], dict(_devices(row[2])))

    def put_device_list(self, entry: StoredList) -> None:
        self.c.execute(
            "INSERT OR REPLACE INTO users VALUES (?, ?, ?, ?)",
            (entry.user, entry.user_key, entry.counter, entry.signed),
        )
        self.c.executemany(
            "INSERT OR IGNORE INTO devices (user, device) VALUES (?, ?)",
            [(entry.user, d) for d in entry.devices],
        )

    def purge_device(self, user: str, device: int) -> None:
        args = (user, device)
        for table in ("messages", "one_time", "tokens", "results", "devices"):
            self.c.execute(f"DELETE FROM {table} WHERE user = ? AND device = ?", args)  # noqa: S608

    def use_challenge(self, nonce: bytes, expires: int) -> bool:
        cur = self.c.execute("INSERT OR IGNORE INTO challenges VALUES (?, ?)", (nonce, expires))
        return cur.rowcount == 1

    def put_token(self, token_hash: bytes, row: TokenRow) -> None:
        self.c.execute(
            "INSERT INTO tokens VALUES (?, ?, ?, ?, ?)",
            (token_hash, row.user, row.device, row.device_key, row.expires),
        )

    def token(self, token_hash: bytes) -> TokenRow | None:
        row = self._one(
            "SELECT user, device, device_key, expires FROM tokens WHERE hash = ?", (token_hash,)
        )
        return None if row is None else TokenRow(row[0], row[1], row[2], row[3])

    def signed_bundle(self, user: str, device: int) -> bytes | None:
        row = self._one("SELECT bundle FROM devices WHERE user = ? AND device = ?", (user, device))
        return None if row is None else row[0]

    def put_signed_bundle(self, user: str, device: int, bundle: bytes) -> None:
        self.c.execute(
            "UPDATE devices SET bundle = ? WHERE user = ? AND device = ?", (bundle, user, device)
        )

    def one_time_count(self, user: str, device: int, kind: int) -> int:
        row = self._one(
            "SELECT COUNT(*) FROM one_time WHERE user = ? AND device = ? AND kind = ?",
            (user, device, kind),
        )
        return int(row[0])

    def high_water(self, user: str, device: int, kind: int) -> int:
        row = self._one(
            f"SELECT hw{int(kind)} FROM devices WHERE user = ? AND device = ?",  # noqa: S608
            (user, device),
        )
        return 0 if row is None else int(row[0])

    def add_one_time(
        self, user: str, device: int, kind: int, keys: Sequence[tuple[int, bytes, bytes]]
    ) -> None:
        if not keys:
            return
        self.c.executemany(
            "INSERT INTO one_time VALUES (?, ?, ?, ?, ?, ?)",
            [(user, device, kind, i, p, s) for i, p, s in keys],
        )
        self.c.execute(
            f"UPDATE devices SET hw{int(kind)} = MAX(hw{int(kind)}, ?) "  # noqa: S608
            "WHERE user = ? AND device = ?",
            (max(k[0] for k in keys), user, device),
        )

    def claim_one_time(self, user: str, device: int, kind: int) -> tuple[int, bytes, bytes] | None:
        row = self._one(
            "DELETE FROM one_time WHERE rowid = (SELECT rowid FROM one_time WHERE user = ?1 "
            "AND device = ?2 AND kind = ?3 ORDER BY id LIMIT 1) RETURNING id, public, signature",
            (user, device, kind),
        )
        return None if row is None else (row[0], row[1], row[2])

    def result(self, kind: str, key: bytes) -> bytes | None:
        row = self._one("SELECT body FROM results WHERE kind = ? AND key = ?", (kind, key))
        return None if row is None else row[0]

    def put_result(
        self, kind: str, key: bytes, owner: tuple[str, int], body: bytes, expires: int
    ) -> None:
        self.c.execute(
            "INSERT INTO results VALUES (?, ?, ?, ?, ?, ?)",
            (kind, key, owner[0], owner[1], body, expires),
        )

    def bucket(self, key: bytes) -> tuple[float, float] | None:
        row = self._one("SELECT tokens, updated FROM buckets WHERE key = ?", (key,))
        return None if row is None else (row[0], row[1])

    def put_bucket(self, key: bytes, tokens: float, updated: float) -> None:
        self.c.execute("INSERT OR REPLACE INTO buckets VALUES (?, ?, ?)", (key, tokens, updated))

    def drop_buckets(self, updated_before: float) -> int:
        cur = self.c.execute("DELETE FROM buckets WHERE updated < ?", (updated_before,))
        return cur.rowcount

    def queue_length(self, user: str, device: int) -> int:
        row = self._one("SELECT queued FROM devices WHERE user = ? AND device = ?", (user, device))
        return 0 if row is None else int(row[0])

    def enqueue(self, user: str, device: int, envelope: bytes, expires: int) -> int:
        cur = self.c.execute(
            "INSERT INTO messages (user, device, expires, envelope) VALUES (?, ?, ?, ?)",
            (user, device, expires, envelope),
        )
        self.c.execute(
            "UPDATE devices SET queued = queued + 1 WHERE user = ? AND device = ?", (user, device)
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def fetch(
        self, user: str, device: int, after: int, limit: int, now: int
    ) -> list[tuple[int, bytes]]:
        rows = self.c.execute(
            "SELECT id, envelope FROM messages WHERE user = ? AND device = ? AND id > ? "
            "AND expires > ? ORDER BY id LIMIT ?",
            (user, device, after, now, limit),
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def ack(self, user: str, device: int, ids: Sequence[int]) -> int:
        removed = 0
        for mid in set(ids):
            cur = self.c.execute(
                "DELETE FROM messages WHERE id = ? AND user = ? AND device = ?", (mid, user, device)
            )
            removed += cur.rowcount
        if removed:
            self.c.execute(
                "UPDATE devices SET queued = queued - ? WHERE user = ? AND device = ?",
                (removed, user, device),
            )
        return removed

    def sweep(self, now: int) -> int:
        expired = self.c.execute(
            "SELECT user, device, COUNT(*) FROM messages WHERE expires <= ? GROUP BY user, device",
            (now,),
        ).fetchall()
        self.c.execute("DELETE FROM messages WHERE expires <= ?", (now,))
        self.c.executemany(
            "UPDATE devices SET queued = queued - ? WHERE user = ? AND device = ?",
            [(n, u, d) for u, d, n in expired],
        )
        for table in ("challenges", "tokens", "results"):
            self.c.execute(f"DELETE FROM {table} WHERE expires <= ?", (now,))  # noqa: S608
        return sum(n for _, _, n in expired)


@functools.lru_cache(maxsize=1024)
def _devices(signed: bytes) -> tuple[tuple[int, bytes], ...]:
    """Devices of a stored list, memoised by its exact bytes (verified once per content)."""
    return SignedDeviceList.from_bytes(signed).device_list.devices


class SQLiteStorage:
    """The default relay storage (one file). Safe to use from any thread and from asyncio."""

    def __init__(self, path: str | Path, *, batch_max: int = 256) -> None:
        self.path = str(path)
        self.batch_max = batch_max
        self.commits = 0
        self.jobs = 0
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            raise RelayUnavailableError("relay database cannot be opened") from None
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=5000")
            _migrate(conn)
        except sqlite3.Error:  # not a relay database, damaged, or locked for too long
            conn.close()
            raise RelayUnavailableError("relay database cannot be opened") from None
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._tx = _SQLiteTx(conn)
        self._lock = threading.Lock()
        self._pending: list[tuple[Callable[[Tx], Any], asyncio.Future[Any]]] = []
        self._flushing = False
        self._flush_task: asyncio.Task[None] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"SQLiteStorage({self.path!r})"

    def run(self, job: Callable[[Tx], T]) -> T:
        """One job in its own transaction, in the calling thread (tests, start-up, tools)."""
        if self._closed:
            raise RelayUnavailableError("storage is closed")
        with self._lock:
            outcomes = self._execute([job])
            if not self._commit():
                raise RelayUnavailableError("storage commit failed")
        value, error = outcomes[0]
        if error is not None:
            raise error
        result: T = value
        return result

    async def submit(self, job: Callable[[Tx], T]) -> T:
        """Group commit: jobs submitted while a commit is in flight run together in the next
        transaction, which is committed (fsync) in a worker thread while the event loop goes
        on accepting requests; each job's future is resolved only after its commit."""
        if self._closed:
            raise RelayUnavailableError("storage is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((job, future))
        if not self._flushing:
            self._flushing = True
            self._flush_task = loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self.batch_max]
                del self._pending[: self.batch_max]
                if not self._lock.acquire(blocking=False):
                    await asyncio.to_thread(self._lock.acquire)
                try:
                    outcomes = self._execute([job for job, _ in batch])
                    committed = await asyncio.to_thread(self._commit)
                finally:
                    self._lock.release()
                for (_, future), (value, error) in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if not committed:
                        future.set_exception(RelayUnavailableError("storage commit failed"))
                    elif error is not None:
                        future.set_exception(error)
                    else:
                        future.set_result(value)
        finally:
            self._flushing = False

    def _execute(self, jobs: list[Callable[[Tx], Any]]) -> list[tuple[Any, BaseException | None]]:
        """Run jobs in one open transaction, each in its own SAVEPOINT (a job that raises is
        rolled back alone: failed operations change nothing). The caller commits."""
        conn = self._conn
        outcomes: list[tuple[Any, BaseException | None]] = []
        conn.execute("BEGIN IMMEDIATE")
        for job in jobs:
            conn.execute("SAVEPOINT job")
            try:
                value = job(self._tx)
            except sqlite3.Error:
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                outcomes.append((None, RelayUnavailableError("storage failed")))
            except Exception as exc:  # the job's own (typed) refusal
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                outcomes.append((None, exc))
            else:
                conn.execute("RELEASE job")
                outcomes.append((value, None))
        self.jobs += len(jobs)
        return outcomes

    def _commit(self) -> bool:
        try:
            self._conn.execute("COMMIT")
        except sqlite3.Error:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            return False
        self.commits += 1
        return True

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with self._lock:
                self._conn.close()
