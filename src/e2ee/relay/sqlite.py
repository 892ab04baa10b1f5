"""SQLite relay storage: WAL, ``synchronous=FULL``, AUTOINCREMENT message ids, single-statement
claims, and group commit.

Group commit (:meth:`SQLiteStorage.submit`): a job submitted from the event loop is queued,
and the first job of a batch schedules the flush ``gather_turns`` (2) turns of the event loop
later. Requests that arrive together are read, parsed and submitted over a few turns; waiting
for them lets them share the batch, and costs an idle relay only a few empty loop turns. The
flush runs every job waiting (up to ``batch_max``), each atomic on its own (a job that raises
leaves no trace: failed operations change nothing; see :meth:`SQLiteStorage._execute` for how
this avoids a SAVEPOINT per job), then commits, all on the event-loop thread, and resolves each
job's future only after the commit. A request is therefore answered "accepted" only once it
is on disk (``synchronous=FULL`` in WAL mode syncs the WAL on every commit); one fsync covers
the whole batch.

Measured on the 2-core development machine (same-run A/B, ``benchmarks/bench_relay.py`` sends,
16 connections, medians of 5-6 interleaved rounds; rates move by +-10 % between rounds):

* Committing in a worker thread, so that the loop reads requests during the fsync, cost more
  than the blocked fsync saves: 345 against 287 us of relay CPU per send (the GIL changes hands
  around every commit: 7,500 against 1,600 context switches per second). Measured again on
  this design (jobs on the loop, only the ``COMMIT`` in a dedicated thread, the next batch
  being whatever arrived during it): the loop's CPU per send fell from 220 to 188 us, but with
  16 connections all waiting on commits it sat idle 15 % of the time; sends/s +2.5 % in one
  A/B and -5.6 % in the next.
* Extra loop turns before a flush, 0 / 1 / 2 / 3: 0.39 / 0.43 / 0.47 / 0.44 of the no-storage
  ceiling (batches of 5 with none, about 12 with two).
* Running the jobs as well as the commit in a worker thread: 2,300 against 3,000 sends/s.
* ``synchronous=NORMAL`` with our own fsync of the WAL in a sync thread, so that the loop never
  waits for an fsync: 0.48 against 0.47 of the ceiling on top of this design (within the
  noise; with the earlier worker-thread commit it was 2,620 against 2,930 sends/s), not worth
  a second thread and a durability path of our own.
* The storage in a second process (a prototype: the HTTP process forwards each call over a
  socket pair, the storage process batches whatever arrived during its last commit): 0.56
  against 0.50 of the ceiling in one A/B and 0.47 in the next, for 322 against 283 us of CPU
  per send; the relay's two processes and the load generator then preempt each other on the
  two cores at every socket wake-up.
* Page sizes 1,024 / 2,048 / 4,096: 310-340 / 310-380 / 300 us of CPU per commit of 13 sends,
  most of it writing the ~40 WAL frames (the fdatasync is 55-85 us), three-quarters of which
  are leaves of the idempotency index (random keys) and of the recipients' queue indexes.
* A larger gen-0 GC threshold (10,000) with ``gc.freeze()`` in both the relay and the ceiling:
  the ceiling gained 12 %, the relay nothing measurable, so the ratio fell.

Checkpoints: SQLite's automatic checkpoint runs inside whichever commit crosses 1,000 WAL pages
and also syncs the database file, on the event loop. Here :class:`_Checkpointer` copies the bulk
in its own thread and the writer completes it right after a later commit (a few pages), which
lets the next commit restart the WAL from its beginning.

Schema 2 (see :func:`_migrate`) keeps one-time keys and idempotent results, whose rows are
large (an ML-KEM key is 1,568 bytes, a claim result several KiB), in rowid tables behind unique
indexes; schema 1's WITHOUT ROWID tables made a claim two deep b-tree searches. Schema 3 adds
an index on ``expires`` to challenges, tokens and results, so that a sweep batch walks the
index instead of reading the whole table: with 300,000 results (claims' bodies are KiB), a
sweep that found nothing expired read them all, 44 ms on the event loop every minute, against
0.2 ms with the index. Each send and claim pays one more index entry, at the index's right
edge (``expires`` grows with time).

Why AUTOINCREMENT: a plain INTEGER PRIMARY KEY may reuse the id of a deleted last row, and a
client paging with ``after=<id>`` would then miss a message. The claim statement is one
``DELETE ... RETURNING`` on the lowest id, exact even with several writer processes; one
connection serialises the jobs of this process anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from e2ee.errors import RelayUnavailableError
from e2ee.identity import SignedDeviceList
from e2ee.relay.storage import RowLock, StoredList, Swept, TokenRow, Tx

T = TypeVar("T")
log = logging.getLogger("e2ee.relay")

SCHEMA_VERSION = 3
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
CREATE INDEX IF NOT EXISTS challenges_by_expiry ON challenges (expires);
CREATE INDEX IF NOT EXISTS tokens_by_expiry ON tokens (expires);
CREATE INDEX IF NOT EXISTS results_by_expiry ON results (expires);
"""


# The tables schema 2 rebuilt as rowid tables (module docstring); same columns, same order.
_REBUILT_IN_2 = ("one_time", "results")


def _schema_version(conn: sqlite3.Connection) -> int:
    """The file's ``meta.schema_version`` (0 for a file without one, such as a new file). A
    schema newer than this code, or a value that is not the 4-byte big-endian integer this
    code writes (a damaged or foreign file), is refused with :class:`RelayUnavailableError`.
    Only reads."""
    if not _has_table(conn, "meta"):
        return 0
    row = conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
    if row is None:
        return 0
    value = row[0]
    if type(value) is not bytes or len(value) != 4:
        raise RelayUnavailableError("relay database schema version is damaged")
    version = int.from_bytes(value, "big")
    if version > SCHEMA_VERSION:
        raise RelayUnavailableError(
            f"relay database schema {version} is newer than this relay ({SCHEMA_VERSION})"
        )
    return version


def _migrate(conn: sqlite3.Connection) -> None:
    """Create the schema, or bring an older one up to :data:`SCHEMA_VERSION`, in one
    transaction. A schema newer than this code is refused."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _schema_version(conn)  # again, now under the write lock
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


CACHE_ENTRIES = 4096
"""Most token rows and device lists :class:`_SQLiteTx` keeps in memory (each cache is emptied
when full)."""


class _SQLiteTx:
    """The :class:`Tx` of one connection. Statements run on one reused cursor (except
    :meth:`fetch`, which steps and closes a cursor of its own), and the two rows
    every authenticated request reads, its token and the recipient's (or claim target's) device
    list, are kept in read-through caches. A cached row is exactly the stored one as long as
    nothing else changed it, so the caches are emptied whenever that may have happened: by a
    write of this connection to those tables (:meth:`put_device_list`, :meth:`purge_device`,
    :meth:`sweep`), by a rollback (a cached row may have been read from a write that is
    undone), and when another connection committed (``PRAGMA data_version``, checked at the
    start of every transaction); see :meth:`SQLiteStorage._execute`."""

    __slots__ = ("c", "cur", "data_version", "lists", "tokens")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.c = conn
        self.cur = conn.cursor()
        self.tokens: dict[bytes, TokenRow] = {}
        self.lists: dict[str, StoredList] = {}
        self.data_version = -1

    def forget(self) -> None:
        self.tokens.clear()
        self.lists.clear()

    def revalidate(self) -> None:
        """Forget the cached rows if another connection committed since the last call. Called
        right after ``BEGIN IMMEDIATE``, while no other writer can commit, so it is exact."""
        version = self.cur.execute("PRAGMA data_version").fetchone()[0]
        if version != self.data_version:
            self.data_version = version
            self.forget()

    def _one(self, sql: str, args: tuple[Any, ...]) -> Any:
        return self.cur.execute(sql, args).fetchone()

    def secret(self, name: str, fresh: bytes) -> bytes:
        self.cur.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (name, fresh))
        value: bytes = self._one("SELECT value FROM meta WHERE name = ?", (name,))[0]
        return value

    def device_list(self, user: str, *, lock: RowLock | None = None) -> StoredList | None:
        # one writer connection, BEGIN IMMEDIATE: no other transaction runs meanwhile, so
        # there is nothing to lock (lock is for storages shared by several processes)
        cached = self.lists.get(user)
        if cached is not None:
            return cached
        row = self._one("SELECT user_key, counter, signed FROM users WHERE user = ?", (user,))
        if row is None:
            return None
        entry = StoredList(user, row[0], row[1], row[2], dict(_devices(row[2])))
        if len(self.lists) >= CACHE_ENTRIES:
            self.lists.clear()
        self.lists[user] = entry
        return entry

    def put_device_list(self, entry: StoredList) -> None:
        self.lists.pop(entry.user, None)
        self.cur.execute(
            "INSERT OR REPLACE INTO users VALUES (?, ?, ?, ?)",
            (entry.user, entry.user_key, entry.counter, entry.signed),
        )
        self.cur.executemany(
            "INSERT OR IGNORE INTO devices (user, device) VALUES (?, ?)",
            [(entry.user, d) for d in entry.devices],
        )

    def purge_device(self, user: str, device: int) -> None:
        self.tokens.clear()  # the device's tokens (by hash) are among them
        args = (user, device)
        for table in ("messages", "one_time", "tokens", "results", "devices"):
            self.cur.execute(f"DELETE FROM {table} WHERE user = ? AND device = ?", args)  # noqa: S608

    def use_challenge(self, nonce: bytes, expires: int) -> bool:
        cur = self.cur.execute("INSERT OR IGNORE INTO challenges VALUES (?, ?)", (nonce, expires))
        return cur.rowcount == 1

    def put_token(self, token_hash: bytes, row: TokenRow) -> None:
        self.cur.execute(
            "INSERT INTO tokens VALUES (?, ?, ?, ?, ?)",
            (token_hash, row.user, row.device, row.device_key, row.expires),
        )

    def token(self, token_hash: bytes, *, lock: Literal["share"] | None = None) -> TokenRow | None:
        # nothing to lock either (see device_list)
        cached = self.tokens.get(token_hash)
        if cached is not None:
            return cached
        row = self._one(
            "SELECT user, device, device_key, expires FROM tokens WHERE hash = ?", (token_hash,)
        )
        if row is None:
            return None
        found = TokenRow(row[0], row[1], row[2], row[3])
        if len(self.tokens) >= CACHE_ENTRIES:
            self.tokens.clear()
        self.tokens[token_hash] = found
        return found

    def signed_bundle(self, user: str, device: int) -> bytes | None:
        row = self._one("SELECT bundle FROM devices WHERE user = ? AND device = ?", (user, device))
        return None if row is None else row[0]

    def put_signed_bundle(self, user: str, device: int, bundle: bytes) -> None:
        self.cur.execute(
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
        self.cur.executemany(
            "INSERT INTO one_time VALUES (?, ?, ?, ?, ?, ?)",
            [(user, device, kind, i, p, s) for i, p, s in keys],
        )
        self.cur.execute(
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
        self.cur.execute(
            "INSERT INTO results VALUES (?, ?, ?, ?, ?, ?)",
            (kind, key, owner[0], owner[1], body, expires),
        )

    def bucket(self, key: bytes) -> tuple[float, float] | None:
        row = self._one("SELECT tokens, updated FROM buckets WHERE key = ?", (key,))
        return None if row is None else (row[0], row[1])

    def put_bucket(self, key: bytes, tokens: float, updated: float) -> None:
        self.cur.execute("INSERT OR REPLACE INTO buckets VALUES (?, ?, ?)", (key, tokens, updated))

    def drop_buckets(self, updated_before: float, limit: int) -> int:
        cur = self.cur.execute(
            "DELETE FROM buckets WHERE key IN (SELECT key FROM buckets WHERE updated < ? LIMIT ?)",
            (updated_before, limit),
        )
        return cur.rowcount

    def queue_length(self, user: str, device: int) -> int:
        row = self._one("SELECT queued FROM devices WHERE user = ? AND device = ?", (user, device))
        return 0 if row is None else int(row[0])

    def enqueue(self, user: str, device: int, envelope: bytes, expires: int) -> int:
        cur = self.cur.execute(
            "INSERT INTO messages (user, device, expires, envelope) VALUES (?, ?, ?, ?)",
            (user, device, expires, envelope),
        )
        self.cur.execute(
            "UPDATE devices SET queued = queued + 1 WHERE user = ? AND device = ?", (user, device)
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def fetch(
        self, user: str, device: int, after: int, limit: int, now: int, max_bytes: int
    ) -> list[tuple[int, bytes]]:
        # A cursor of its own, stepped one row at a time and closed (which resets the statement)
        # as soon as the envelopes read pass the budget (from the second one on: the first never
        # ends the read on its own, see Tx.fetch): the rest of the page is never loaded.
        cur = self.c.execute(
            "SELECT id, envelope FROM messages WHERE user = ? AND device = ? AND id > ? "
            "AND expires > ? ORDER BY id LIMIT ?",
            (user, device, after, now, limit),
        )
        try:
            out: list[tuple[int, bytes]] = []
            total = 0
            for mid, envelope in cur:
                out.append((mid, envelope))
                total += len(envelope)
                if total > max_bytes and len(out) > 1:
                    break
            return out
        finally:
            cur.close()

    def ack(self, user: str, device: int, ids: Sequence[int]) -> int:
        removed = 0
        for mid in set(ids):
            cur = self.cur.execute(
                "DELETE FROM messages WHERE id = ? AND user = ? AND device = ?", (mid, user, device)
            )
            removed += cur.rowcount
        if removed:
            self.cur.execute(
                "UPDATE devices SET queued = queued - ? WHERE user = ? AND device = ?",
                (removed, user, device),
            )
        return removed

    def sweep(self, now: int, limit: int) -> Swept:
        self.tokens.clear()  # expired tokens are deleted
        # The batch: the first ``limit`` expired messages in (expires, id) order, a walk of the
        # expiry index (its entries end with the rowid) that stops after ``limit`` rows. The
        # order is total, so both statements below, in one transaction, name the same rows.
        args = (now, limit)
        expired = self.cur.execute(
            f"SELECT user, device, COUNT(*) FROM messages WHERE id IN ({_EXPIRED_MESSAGES}) "  # noqa: S608
            "GROUP BY user, device",
            args,
        ).fetchall()
        self.cur.execute(f"DELETE FROM messages WHERE id IN ({_EXPIRED_MESSAGES})", args)  # noqa: S608
        self.cur.executemany(
            "UPDATE devices SET queued = queued - ? WHERE user = ? AND device = ?",
            [(n, u, d) for u, d, n in expired],
        )
        deleted = sum(n for _, _, n in expired)
        full = deleted >= limit
        for table, key in (("challenges", "nonce"), ("tokens", "hash"), ("results", "rowid")):
            cur = self.cur.execute(
                f"DELETE FROM {table} WHERE {key} IN "  # noqa: S608
                f"(SELECT {key} FROM {table} WHERE expires <= ? LIMIT ?)",
                args,
            )
            full = full or cur.rowcount >= limit
        return Swept(deleted, full)


_EXPIRED_MESSAGES = "SELECT id FROM messages WHERE expires <= ? ORDER BY expires, id LIMIT ?"
"""The ids of one sweep batch of messages (:meth:`_SQLiteTx.sweep`)."""


@functools.lru_cache(maxsize=1024)
def _devices(signed: bytes) -> tuple[tuple[int, bytes], ...]:
    """Devices of a stored list, memoised by its exact bytes (verified once per content)."""
    return SignedDeviceList.from_bytes(signed).device_list.devices


CHECKPOINT_EVERY = 50
"""Commits between two WAL checkpoints (a commit of a batch writes some 10 to 40 pages; SQLite's
own automatic checkpoint would run every 1,000 pages, inside whichever commit crossed it)."""


class _Checkpointer:
    """Copies the WAL back into the database file on its own connection in its own thread, so
    that no request's commit pays for copying pages.

    A checkpoint is complete only when it has copied every frame; only then can the next commit
    restart the WAL from its beginning. A checkpoint in another thread never catches up with a
    writer that does not pause, so the work is split: this thread copies the bulk (``PASSIVE``:
    it never blocks the writer) and then sets :attr:`caught_up`; the writer, right after its next
    commit, runs one more ``PASSIVE`` checkpoint itself, which copies only the few frames
    committed meanwhile (see :meth:`SQLiteStorage._after_commit`)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._due = threading.Event()
        self._stop = False
        self.caught_up = False
        self._thread = threading.Thread(
            target=self._loop, name="e2ee-relay-checkpoint", daemon=True
        )
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def wake(self) -> None:
        self._due.set()

    def _loop(self) -> None:
        try:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:  # the writer then checkpoints by itself (see ``alive``)
            log.warning("relay WAL checkpointer cannot open the database")
            return
        try:
            while True:
                self._due.wait()
                self._due.clear()
                if self._stop:
                    return
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:  # a failing disk: the writer's own pass still runs
                    log.warning("relay WAL checkpoint failed")
                self.caught_up = True
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop = True
        self._due.set()
        self._thread.join()


class SQLiteStorage:
    """The default relay storage (one file). Safe to use from any thread and from asyncio."""

    def __init__(
        self,
        path: str | Path,
        *,
        batch_max: int = 256,
        gather_turns: int = 2,
        busy_timeout: float = 5.0,
    ) -> None:
        self.path = str(path)
        self.batch_max = batch_max
        self.gather_turns = gather_turns
        self.commits = 0
        self.jobs = 0
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            raise RelayUnavailableError("relay database cannot be opened") from None
        try:
            conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            # The version is checked before anything that writes (journal_mode=WAL rewrites the
            # file header): a newer or damaged file is refused without being changed.
            _schema_version(conn)
            wal = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
            conn.execute("PRAGMA synchronous=FULL")
            if wal:  # checkpoints run in the checkpointer thread, not in a request's commit
                conn.execute("PRAGMA wal_autocheckpoint=0")
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
        self._closed = False
        self._checkpointer = _Checkpointer(self.path) if wal else None

    def __repr__(self) -> str:
        return f"SQLiteStorage({self.path!r})"

    def run(self, job: Callable[[Tx], T]) -> T:
        """One job in its own transaction, in the calling thread (tests, start-up, tools)."""
        if self._closed:
            raise RelayUnavailableError("storage is closed")
        value, error = self._transaction([job])[0]
        if error is not None:
            raise error
        result: T = value
        return result

    def submit(self, job: Callable[[Tx], T]) -> asyncio.Future[T]:
        """Group commit: queue the job; the first job of a batch schedules its flush
        ``gather_turns`` turns of the event loop later, so the requests read meanwhile share its
        transaction and its fsync. The returned future is resolved only after that commit."""
        if self._closed:
            raise RelayUnavailableError("storage is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((job, future))
        if not self._flushing:
            self._flushing = True
            loop.call_soon(self._wait_turns, loop, self.gather_turns)
        return future

    def _wait_turns(self, loop: asyncio.AbstractEventLoop, turns: int) -> None:
        if turns > 0:
            loop.call_soon(self._wait_turns, loop, turns - 1)
        else:
            self._flush()

    def _flush(self) -> None:
        """Run the queued jobs and commit them on the event-loop thread (the module docstring
        says why not in a worker thread), then resolve their futures."""
        pending, self._pending = self._pending, []
        self._flushing = False
        for first in range(0, len(pending), self.batch_max):
            batch = pending[first : first + self.batch_max]
            outcomes = self._transaction([job for job, _ in batch])
            for (_, future), (value, error) in zip(batch, outcomes, strict=True):
                if future.done():  # the request was cancelled (client gone)
                    continue
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(value)

    def _transaction(
        self, jobs: list[Callable[[Tx], Any]]
    ) -> list[tuple[Any, BaseException | None]]:
        """Run jobs in one transaction, each atomic on its own (a job that raises is rolled
        back alone: failed operations change nothing), and commit. If the transaction itself
        fails (cannot begin, cannot commit), it is rolled back and every job fails with
        :class:`RelayUnavailableError`: nothing is answered "accepted" that is not on disk."""
        with self._lock:
            try:
                outcomes = self._execute(jobs)
                self._conn.execute("COMMIT")
            except BaseException as error:
                if self._conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._conn.execute("ROLLBACK")
                self._tx.forget()
                if not isinstance(error, sqlite3.Error):
                    raise  # (KeyboardInterrupt and the like) after leaving no transaction open
                failed = RelayUnavailableError("storage commit failed")
                return [(None, failed) for _ in jobs]
            self.commits += 1
            self._after_commit()
        return outcomes

    def _after_commit(self) -> None:
        checkpointer = self._checkpointer
        if checkpointer is None:
            return
        if checkpointer.caught_up:  # copy the rest: the next commit restarts the WAL
            checkpointer.caught_up = False
            try:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error:  # a failing disk: the next round tries again
                log.warning("relay WAL checkpoint failed")
        elif self.commits % CHECKPOINT_EVERY == 0:
            if checkpointer.alive:
                checkpointer.wake()
            else:  # its thread is gone (it could not open the file): checkpoint here instead
                checkpointer.caught_up = True

    def _execute(self, jobs: list[Callable[[Tx], Any]]) -> list[tuple[Any, BaseException | None]]:
        """Run the jobs in one open transaction (the caller commits), each atomic on its own:
        a job that raises leaves no trace. Jobs normally either succeed or refuse before they
        write, and then need no SAVEPOINT; the rare job that raises after writing makes the
        whole batch start over with a SAVEPOINT around each job (jobs are functions of the
        transaction alone, so running them again from the same state is the same run)."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        self._tx.revalidate()
        outcomes = self._run_plain(jobs)
        if outcomes is None:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._tx.forget()
            conn.execute("BEGIN IMMEDIATE")
            outcomes = self._run_in_savepoints(jobs)
        self.jobs += len(jobs)
        return outcomes

    def _run_plain(
        self, jobs: list[Callable[[Tx], Any]]
    ) -> list[tuple[Any, BaseException | None]] | None:
        """None when a job raised after it had changed a row (or raised a storage error)."""
        conn = self._conn
        outcomes: list[tuple[Any, BaseException | None]] = []
        for job in jobs:
            changes = conn.total_changes
            try:
                value = job(self._tx)
            except sqlite3.Error:
                return None
            except Exception as exc:  # the job's own (typed) refusal
                if conn.total_changes != changes:
                    return None
                outcomes.append((None, exc))
            else:
                outcomes.append((value, None))
        return outcomes

    def _run_in_savepoints(
        self, jobs: list[Callable[[Tx], Any]]
    ) -> list[tuple[Any, BaseException | None]]:
        conn = self._conn
        outcomes: list[tuple[Any, BaseException | None]] = []
        for job in jobs:
            conn.execute("SAVEPOINT job")
            try:
                value = job(self._tx)
            except sqlite3.Error:
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                self._tx.forget()
                outcomes.append((None, RelayUnavailableError("storage failed")))
            except Exception as exc:  # the job's own (typed) refusal
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                self._tx.forget()
                outcomes.append((None, exc))
            else:
                conn.execute("RELEASE job")
                outcomes.append((value, None))
        return outcomes

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._checkpointer is not None:
                self._checkpointer.stop()
            with self._lock:
                self._conn.close()  # the last connection to close checkpoints the WAL
