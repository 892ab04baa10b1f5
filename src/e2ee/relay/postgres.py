"""PostgreSQL relay storage: several stateless relay processes over one database.

Selected with ``e2ee relay serve --db postgresql://...`` (spec/relay.md, "PostgreSQL storage").

- **Jobs.** Every job runs in its own ``READ COMMITTED`` transaction on a pooled connection, in
  a worker thread (psycopg 3 is blocking; the event loop never waits on the database). A job that
  raises is rolled back whole (failed operations change nothing). A deadlock, serialization
  failure or unique-key race (two processes storing the same idempotent result) rolls the job
  back and runs it again from the start, a few times, then answers "unavailable". The commit
  returns once PostgreSQL has flushed the WAL (``synchronous_commit`` on), so "accepted" means
  durable; PostgreSQL groups the WAL flushes of concurrent commits itself. Both the isolation
  level and ``synchronous_commit`` are set on every pooled connection (:func:`_configure`),
  whatever the server's defaults.
- **Claims.** ``DELETE ... WHERE key = (SELECT ... ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
  RETURNING``: a concurrent claimer skips a key another transaction holds instead of waiting for
  it and then finding it gone (PROTOCOL-NOTES.md: SELECT-then-DELETE double-issues, DELETE ...
  RETURNING without SKIP LOCKED answers "none left" while keys remain).
- **Rate limits.** A claim locks its (claimer, target) bucket row ``FOR UPDATE``; when there is
  no row, which ``FOR UPDATE`` cannot lock, it inserts a placeholder row with ``ON CONFLICT DO
  UPDATE``, so concurrent first claims of a pair also take tokens one by one.
- **Message ids.** Per device, from a counter row (``counters.seq``) incremented by the
  enqueuing transaction, not from a sequence: the row lock is held to commit, so the message
  with id n+1 cannot commit before the one with id n, and a reader paging with ``after=n``
  never skips a late commit (a sequence hands out ids at once, and commits may then land out
  of order). The counter row survives a device's purge, so ids are never reused.
- **Device lists.** A job that stores something for a device on the strength of its user's
  list or of its token locks that user's row until it commits: a login (its token) and a send
  (the recipient's messages) read the list ``FOR SHARE``; a send and a claim (their results,
  owned by the sending or claiming device) and a key upload (the device's keys) read their
  token joined with its users row, both ``FOR SHARE`` (one statement, users row first). A
  publication reads the list it replaces ``FOR UPDATE`` before it purges. So a purge waits for
  every such job and then deletes what it stored, or the job waits for the publication and then
  sees the new list (or its token gone) and is refused. Under READ COMMITTED nothing else would
  order them: a purge deletes only rows it can see, not those of a job still running. The
  other reads take no lock: a fetch, the WebSocket's pending read, a list or key-count read and
  an authentication check only read, an ack only deletes its own device's messages, and a
  claim only deletes its target's one-time keys (``SKIP LOCKED``), so none of them stores
  anything a purge could miss. A lock is not free: PostgreSQL records it in the row, so a
  locking read takes a transaction id and writes WAL (a read-only job would then write a
  commit record and wait for a WAL flush), and many transactions share-locking one row make a
  MultiXact. A job that locks writes anyway, and its lock records go with that commit.
- **Wake-ups.** The enqueuing transaction calls ``pg_notify`` (delivered at commit, never for
  a rolled-back job); every relay process LISTENs on one connection and wakes the WebSocket of
  that device if it holds it (:class:`PostgresNotifier`).
- **Migrations.** ``schema_version`` records applied versions; :data:`MIGRATIONS` are applied
  in order on start under a transaction-scoped advisory lock, so processes starting together
  migrate once.

The connection string (it may hold a password) never appears in a log line, a ``repr`` or an
exception text; storage failures become :class:`~e2ee.errors.RelayUnavailableError`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

import psycopg
import psycopg_pool
from psycopg import errors as pgerrors

from e2ee.errors import RelayError, RelayUnavailableError
from e2ee.identity import SignedDeviceList
from e2ee.relay.storage import (
    LocalNotifier,
    RowLock,
    StoredList,
    Swept,
    TokenRow,
    Tx,
    _LocalSubscription,
)

T = TypeVar("T")
log = logging.getLogger("e2ee.relay.postgres")

CHANNEL = "e2ee_relay"
"""The LISTEN/NOTIFY channel; the payload is ``"<device>:<user>"``."""
MIGRATION_LOCK = 0x6532_6565_7265_6C61  # pg_advisory_xact_lock key ("e2eerela")
RETRIES = 8
RETRYABLE = (
    pgerrors.SerializationFailure,
    pgerrors.DeadlockDetected,
    pgerrors.UniqueViolation,
    pgerrors.LockNotAvailable,
)

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE meta (name TEXT PRIMARY KEY, value BYTEA NOT NULL);
        CREATE TABLE users (
            usr TEXT PRIMARY KEY, user_key BYTEA NOT NULL, counter BIGINT NOT NULL,
            signed BYTEA NOT NULL
        );
        CREATE TABLE devices (
            usr TEXT NOT NULL, device BIGINT NOT NULL,
            hw0 BIGINT NOT NULL DEFAULT 0, hw1 BIGINT NOT NULL DEFAULT 0, bundle BYTEA,
            PRIMARY KEY (usr, device)
        );
        CREATE TABLE counters (
            usr TEXT NOT NULL, device BIGINT NOT NULL,
            seq BIGINT NOT NULL DEFAULT 0, queued BIGINT NOT NULL DEFAULT 0,
            PRIMARY KEY (usr, device)
        );
        CREATE TABLE one_time (
            usr TEXT NOT NULL, device BIGINT NOT NULL, kind SMALLINT NOT NULL, id BIGINT NOT NULL,
            public BYTEA NOT NULL, signature BYTEA NOT NULL, PRIMARY KEY (usr, device, kind, id)
        );
        CREATE TABLE challenges (nonce BYTEA PRIMARY KEY, expires BIGINT NOT NULL);
        CREATE TABLE tokens (
            hash BYTEA PRIMARY KEY, usr TEXT NOT NULL, device BIGINT NOT NULL,
            device_key BYTEA NOT NULL, expires BIGINT NOT NULL
        );
        CREATE INDEX tokens_by_device ON tokens (usr, device);
        CREATE TABLE results (
            kind TEXT NOT NULL, key BYTEA NOT NULL, usr TEXT NOT NULL, device BIGINT NOT NULL,
            body BYTEA NOT NULL, expires BIGINT NOT NULL, PRIMARY KEY (kind, key)
        );
        CREATE INDEX results_by_device ON results (usr, device);
        CREATE TABLE buckets (
            key BYTEA PRIMARY KEY, tokens DOUBLE PRECISION NOT NULL,
            updated DOUBLE PRECISION NOT NULL
        );
        CREATE TABLE messages (
            usr TEXT NOT NULL, device BIGINT NOT NULL, id BIGINT NOT NULL,
            expires BIGINT NOT NULL, envelope BYTEA NOT NULL, PRIMARY KEY (usr, device, id)
        );
        CREATE INDEX messages_by_expiry ON messages (expires);
        """,
    ),
    (
        2,
        # The sweep's batches (REQ-RL-41) walk these instead of reading whole tables: results
        # hold a day of sends and claims (claims' bodies are KiB), tokens every logged-in device.
        """
        CREATE INDEX challenges_by_expiry ON challenges (expires);
        CREATE INDEX tokens_by_expiry ON tokens (expires);
        CREATE INDEX results_by_expiry ON results (expires);
        """,
    ),
)
"""(version, SQL) in order; a new schema change is appended, never edited in place."""


def migrate(conn: psycopg.Connection[Any]) -> int:
    """Apply the missing migrations in one transaction; returns the schema version."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            "version INTEGER PRIMARY KEY, applied TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
        current = int(row[0]) if row else 0
        for version, sql in MIGRATIONS:
            if version > current:
                conn.execute(sql.encode())
                conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
                current = version
    return current


_NO_BUCKET = float("-inf")
"""``updated`` of a placeholder bucket row: no bucket yet (full; the sweep drops it)."""
_LIST = "SELECT user_key, counter, signed FROM users WHERE usr = %s"
_LISTS: dict[RowLock | None, str] = {
    None: _LIST,
    "share": _LIST + " FOR SHARE",
    "update": _LIST + " FOR UPDATE",
}
_AUTH_ROW = "SELECT usr, device, device_key, expires FROM tokens WHERE hash = %s"
_AUTH_ROW_FOR_SHARE = (
    # users first in FROM: its row is locked first, so an authentication waiting for a
    # publication holds no token lock the publication's purge would wait for (no deadlock);
    # the token row is locked too, so one the publication deleted meanwhile is not returned
    "SELECT t.usr, t.device, t.device_key, t.expires FROM users u "
    "JOIN tokens t ON t.usr = u.usr WHERE t.hash = %s FOR SHARE"
)


class _PostgresTx:
    __slots__ = ("_unregistered", "c")

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.c = conn
        # users a publication found without a list, so without a row it could lock
        self._unregistered: set[str] = set()

    def _one(self, sql: str, args: tuple[Any, ...]) -> Any:
        return self.c.execute(sql.encode(), args).fetchone()

    def _do(self, sql: str, args: tuple[Any, ...]) -> int:
        return self.c.execute(sql.encode(), args).rowcount

    def secret(self, name: str, fresh: bytes) -> bytes:
        self._do("INSERT INTO meta VALUES (%s, %s) ON CONFLICT DO NOTHING", (name, fresh))
        value: bytes = self._one("SELECT value FROM meta WHERE name = %s", (name,))[0]
        return value

    def device_list(self, user: str, *, lock: RowLock | None = None) -> StoredList | None:
        # a user row lock orders a job that stores something on the strength of the list
        # before or after the job that replaces it (a publication reads FOR UPDATE before its
        # purge); read-only jobs take none: a row lock is a write here (see the module)
        row = self._one(_LISTS[lock], (user,))
        if row is None:
            if lock == "update":
                self._unregistered.add(user)
            return None
        return StoredList(user, row[0], row[1], row[2], dict(_devices(row[2])))

    def put_device_list(self, entry: StoredList) -> None:
        # A first registration found no row to lock: a plain INSERT, so a concurrent one of the
        # same user blocks here and then fails on the key, and the job runs again and is
        # checked against the stored registration (an upsert replaced its user key)
        self._do(
            "INSERT INTO users VALUES (%s, %s, %s, %s)"
            if entry.user in self._unregistered
            else "INSERT INTO users VALUES (%s, %s, %s, %s) ON CONFLICT (usr) DO UPDATE SET "
            "user_key = EXCLUDED.user_key, counter = EXCLUDED.counter, signed = EXCLUDED.signed",
            (entry.user, entry.user_key, entry.counter, entry.signed),
        )
        rows = [(entry.user, d) for d in sorted(entry.devices)]
        with self.c.cursor() as cur:
            cur.executemany(
                b"INSERT INTO devices (usr, device) VALUES (%s, %s) ON CONFLICT DO NOTHING", rows
            )
            cur.executemany(
                b"INSERT INTO counters (usr, device) VALUES (%s, %s) ON CONFLICT DO NOTHING", rows
            )

    def purge_device(self, user: str, device: int) -> None:
        args = (user, device)
        for table in ("messages", "one_time", "tokens", "results", "devices"):
            self._do(f"DELETE FROM {table} WHERE usr = %s AND device = %s", args)  # noqa: S608
        # the counter row stays (ids are never reused); its queue is empty now
        self._do("UPDATE counters SET queued = 0 WHERE usr = %s AND device = %s", args)

    def use_challenge(self, nonce: bytes, expires: int) -> bool:
        return (
            self._do(
                "INSERT INTO challenges VALUES (%s, %s) ON CONFLICT DO NOTHING", (nonce, expires)
            )
            == 1
        )

    def put_token(self, token_hash: bytes, row: TokenRow) -> None:
        self._do(
            "INSERT INTO tokens VALUES (%s, %s, %s, %s, %s)",
            (token_hash, row.user, row.device, row.device_key, row.expires),
        )

    def token(self, token_hash: bytes, *, lock: Literal["share"] | None = None) -> TokenRow | None:
        row = self._one(_AUTH_ROW if lock is None else _AUTH_ROW_FOR_SHARE, (token_hash,))
        return None if row is None else TokenRow(row[0], row[1], row[2], row[3])

    def signed_bundle(self, user: str, device: int) -> bytes | None:
        row = self._one("SELECT bundle FROM devices WHERE usr = %s AND device = %s", (user, device))
        return None if row is None else row[0]

    def put_signed_bundle(self, user: str, device: int, bundle: bytes) -> None:
        self._do(
            "UPDATE devices SET bundle = %s WHERE usr = %s AND device = %s", (bundle, user, device)
        )

    def one_time_count(self, user: str, device: int, kind: int) -> int:
        row = self._one(
            "SELECT COUNT(*) FROM one_time WHERE usr = %s AND device = %s AND kind = %s",
            (user, device, kind),
        )
        return int(row[0])

    def high_water(self, user: str, device: int, kind: int) -> int:
        # FOR UPDATE: two concurrent uploads of one device serialise on the device row, so the
        # second sees the first one's mark
        row = self._one(
            f"SELECT hw{int(kind)} FROM devices WHERE usr = %s AND device = %s "  # noqa: S608
            "FOR UPDATE",
            (user, device),
        )
        return 0 if row is None else int(row[0])

    def add_one_time(
        self, user: str, device: int, kind: int, keys: Sequence[tuple[int, bytes, bytes]]
    ) -> None:
        if not keys:
            return
        with self.c.cursor() as cur:
            cur.executemany(
                b"INSERT INTO one_time VALUES (%s, %s, %s, %s, %s, %s)",
                [(user, device, kind, i, p, s) for i, p, s in keys],
            )
        self._do(
            f"UPDATE devices SET hw{int(kind)} = GREATEST(hw{int(kind)}, %s) "  # noqa: S608
            "WHERE usr = %s AND device = %s",
            (max(k[0] for k in keys), user, device),
        )

    def claim_one_time(self, user: str, device: int, kind: int) -> tuple[int, bytes, bytes] | None:
        row = self._one(
            "DELETE FROM one_time WHERE (usr, device, kind, id) = ("
            "SELECT usr, device, kind, id FROM one_time "
            "WHERE usr = %s AND device = %s AND kind = %s "
            "ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) "
            "RETURNING id, public, signature",
            (user, device, kind),
        )
        return None if row is None else (int(row[0]), row[1], row[2])

    def result(self, kind: str, key: bytes) -> bytes | None:
        row = self._one("SELECT body FROM results WHERE kind = %s AND key = %s", (kind, key))
        return None if row is None else row[0]

    def put_result(
        self, kind: str, key: bytes, owner: tuple[str, int], body: bytes, expires: int
    ) -> None:
        # a plain INSERT: a concurrent identical request in another process blocks here until
        # the first commits, then fails with a unique violation and is run again (and finds
        # the stored result), so an idempotent request takes effect once
        self._do(
            "INSERT INTO results VALUES (%s, %s, %s, %s, %s, %s)",
            (kind, key, owner[0], owner[1], body, expires),
        )

    def bucket(self, key: bytes) -> tuple[float, float] | None:
        # FOR UPDATE: concurrent claims through different processes take tokens one by one
        row = self._one("SELECT tokens, updated FROM buckets WHERE key = %s FOR UPDATE", (key,))
        if row is None:
            # nothing to lock (a new pair, or a bucket the sweep dropped): insert a placeholder
            # standing for a full bucket, locked until commit; a concurrent claim's insert
            # waits for it, then locks and reads the bucket this job stored (ON CONFLICT DO
            # UPDATE acts on the committed row its snapshot does not see)
            row = self._one(
                "INSERT INTO buckets AS b VALUES (%s, 0, '-Infinity') "
                "ON CONFLICT (key) DO UPDATE SET tokens = b.tokens RETURNING tokens, updated",
                (key,),
            )
        if row[1] == _NO_BUCKET:
            return None  # the placeholder (put_bucket replaces it; a refused job rolls it back)
        return float(row[0]), float(row[1])

    def drop_buckets(self, updated_before: float, limit: int) -> int:
        # by key, the condition checked again on the row deleted: a bucket a concurrent claim
        # refilled meanwhile (a new row version) is kept
        return self._do(
            "DELETE FROM buckets WHERE key = ANY(ARRAY("
            "SELECT key FROM buckets WHERE updated < %s LIMIT %s)) AND updated < %s",
            (updated_before, limit, updated_before),
        )

    def put_bucket(self, key: bytes, tokens: float, updated: float) -> None:
        self._do(
            "INSERT INTO buckets VALUES (%s, %s, %s) ON CONFLICT (key) DO UPDATE SET "
            "tokens = EXCLUDED.tokens, updated = EXCLUDED.updated",
            (key, tokens, updated),
        )

    def queue_length(self, user: str, device: int) -> int:
        # locks the counter row: the queue limit holds across processes, and a send locks its
        # recipient's devices in ascending order (the rules ask in sorted order): no deadlock
        row = self._one(
            "SELECT queued FROM counters WHERE usr = %s AND device = %s FOR UPDATE",
            (user, device),
        )
        return 0 if row is None else int(row[0])

    def enqueue(self, user: str, device: int, envelope: bytes, expires: int) -> int:
        row = self._one(
            "INSERT INTO counters AS c (usr, device, seq, queued) VALUES (%s, %s, 1, 1) "
            "ON CONFLICT (usr, device) DO UPDATE SET seq = c.seq + 1, queued = c.queued + 1 "
            "RETURNING seq",
            (user, device),
        )
        seq = int(row[0])
        self._do(
            "INSERT INTO messages VALUES (%s, %s, %s, %s, %s)",
            (user, device, seq, expires, envelope),
        )
        self._do("SELECT pg_notify(%s, %s)", (CHANNEL, f"{device}:{user}"))
        return seq

    def fetch(
        self, user: str, device: int, after: int, limit: int, now: int, max_bytes: int
    ) -> list[tuple[int, bytes]]:
        # psycopg receives a whole result at once, so the budget is applied in the query: a
        # row is sent only if it is the first or the second (the first never ends the read on
        # its own, see Tx.fetch) or the envelopes before it total at most max_bytes
        # (octet_length reads a TOASTed value's size without loading it; only the rows sent
        # are detoasted).
        rows = self.c.execute(
            b"SELECT id, envelope FROM ("
            b"SELECT id, envelope, ROW_NUMBER() OVER (ORDER BY id) AS n, "
            b"SUM(octet_length(envelope)) OVER (ORDER BY id ROWS "
            b"UNBOUNDED PRECEDING) - octet_length(envelope) AS before FROM messages "
            b"WHERE usr = %s AND device = %s AND id > %s AND expires > %s ORDER BY id LIMIT %s"
            b") AS page WHERE n <= 2 OR before <= %s ORDER BY id",
            (user, device, after, now, limit, max_bytes),
        ).fetchall()
        return [(int(r[0]), r[1]) for r in rows]

    def ack(self, user: str, device: int, ids: Sequence[int]) -> int:
        wanted = sorted(set(ids))
        if not wanted:
            return 0
        removed = self._do(
            "DELETE FROM messages WHERE usr = %s AND device = %s AND id = ANY(%s)",
            (user, device, wanted),
        )
        if removed:
            self._do(
                "UPDATE counters SET queued = queued - %s WHERE usr = %s AND device = %s",
                (removed, user, device),
            )
        return removed

    def sweep(self, now: int, limit: int) -> Swept:
        # One batch: at most ``limit`` messages, earliest expiry first (an index scan of
        # messages_by_expiry that stops there), deleted by ctid (messages are never updated);
        # the database counts them per device, so this process receives one row per device
        # of the batch, never one per message.
        counts = self.c.execute(
            b"WITH gone AS (DELETE FROM messages WHERE ctid = ANY(ARRAY("
            b"SELECT ctid FROM messages WHERE expires <= %s ORDER BY expires LIMIT %s)) "
            b"AND expires <= %s RETURNING usr, device) "
            b"SELECT usr, device, COUNT(*) FROM gone GROUP BY usr, device ORDER BY usr, device",
            (now, limit, now),
        ).fetchall()
        with self.c.cursor() as cur:
            # in ascending (user, device) order, as a send locks its recipient's counters
            cur.executemany(
                b"UPDATE counters SET queued = queued - %s WHERE usr = %s AND device = %s",
                [(int(n), u, int(d)) for u, d, n in counts],
            )
        deleted = sum(int(n) for _, _, n in counts)
        full = deleted >= limit
        for table in ("challenges", "tokens", "results"):
            removed = self._do(
                f"DELETE FROM {table} WHERE ctid = ANY(ARRAY("  # noqa: S608
                f"SELECT ctid FROM {table} WHERE expires <= %s LIMIT %s)) AND expires <= %s",
                (now, limit, now),
            )
            full = full or removed >= limit
        return Swept(deleted, full)


def _configure(conn: psycopg.Connection[Any]) -> None:
    """Set up a new pooled connection: its jobs run READ COMMITTED and their commit returns only
    once the WAL is flushed, whatever the server's, the database's or the role's defaults say
    (REQ-RL-23; a default of ``serializable`` or ``synchronous_commit = off`` was taken as it
    was). A ``synchronous_commit`` that also waits for standbys is kept: only ``off`` is not."""
    conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED  # named in every BEGIN
    with conn.transaction():
        row = conn.execute(b"SELECT current_setting('synchronous_commit')").fetchone()
        if row is not None and row[0] == "off":
            conn.execute(b"SET synchronous_commit = on")


@functools.lru_cache(maxsize=1024)
def _devices(signed: bytes) -> tuple[tuple[int, bytes], ...]:
    """Devices of a stored list, memoised by its exact bytes (verified once per content)."""
    return SignedDeviceList.from_bytes(signed).device_list.devices


class PostgresStorage:
    """Relay storage in PostgreSQL, shared by any number of relay processes."""

    def __init__(self, url: str, *, pool_size: int = 8, timeout: float = 10.0) -> None:
        self._url = url
        self.pool_size = pool_size
        self.commits = 0
        self.jobs = 0
        self.retries = 0
        self._closed = False
        try:
            with psycopg.connect(url, connect_timeout=int(timeout)) as conn:
                self.schema_version = migrate(conn)
            self._pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
                url,
                min_size=1,
                max_size=pool_size,
                timeout=timeout,
                open=True,
                name="e2ee-relay",
                configure=_configure,
            )
        except (psycopg.Error, psycopg_pool.PoolTimeout):
            # the driver's message may name the host and user; never the password, but say less
            raise RelayUnavailableError("cannot open the PostgreSQL relay database") from None
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=pool_size, thread_name_prefix="e2ee-pg"
        )

    def __repr__(self) -> str:
        return f"PostgresStorage(pool_size={self.pool_size})"

    def notifier(self) -> PostgresNotifier:
        """A notifier that listens on its own connection to this database."""
        return PostgresNotifier(self._url)

    def run(self, job: Callable[[Tx], T]) -> T:
        """One job in its own transaction, in the calling thread; retried on a lock conflict."""
        if self._closed:
            raise RelayUnavailableError("storage is closed")
        for attempt in range(RETRIES):
            try:
                with self._pool.connection() as conn:
                    try:
                        with conn.transaction():
                            value = job(_PostgresTx(conn))
                    finally:
                        self.jobs += 1
                self.commits += 1
                return value
            except RETRYABLE:
                self.retries += 1
                if attempt == RETRIES - 1:
                    raise RelayUnavailableError("storage is busy") from None
            except RelayError:
                raise
            except (psycopg.Error, psycopg_pool.PoolTimeout):
                raise RelayUnavailableError("storage failed") from None
        raise RelayUnavailableError("storage is busy")  # pragma: no cover

    async def submit(self, job: Callable[[Tx], T]) -> T:
        """Run the job in a worker thread on a pooled connection; returns after the commit."""
        if self._closed:
            raise RelayUnavailableError("storage is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.run, job)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._executor.shutdown(wait=True)
            self._pool.close()


class PostgresNotifier(LocalNotifier):
    """Wakes this process's WebSockets, and those of every other relay process on the database.

    A message committed here wakes local subscribers at once (:meth:`notify`); its ``pg_notify``
    reaches the other processes, whose listener thread (one connection, ``LISTEN``) wakes their
    subscribers on their event loop. If the listening connection drops, every subscriber is woken
    (it re-reads its queue) and the listener reconnects.
    """

    def __init__(self, url: str) -> None:
        super().__init__()
        self._url = url
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.received = 0
        self._thread = threading.Thread(target=self._listen, name="e2ee-pg-listen", daemon=True)
        self._thread.start()
        if not self._ready.wait(10.0):
            self._stop.set()
            raise RelayUnavailableError("cannot listen on the PostgreSQL relay database")

    def __repr__(self) -> str:
        return "PostgresNotifier()"

    def subscribe(self, user: str, device: int) -> _LocalSubscription:
        self._loop = asyncio.get_running_loop()
        return super().subscribe(user, device)

    def _wake(self, key: tuple[str, int] | None) -> None:
        if key is None:
            for user, device in list(self._subs):
                LocalNotifier.notify(self, user, device)
        else:
            LocalNotifier.notify(self, *key)

    def _dispatch(self, key: tuple[str, int] | None) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake, key)

    def _listen(self) -> None:
        first = True
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {CHANNEL}".encode())
                    self._ready.set()
                    if not first:
                        self._dispatch(None)  # anything sent while we were away
                    first = False
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            device, _, user = note.payload.partition(":")
                            if device.isdigit():
                                self.received += 1
                                self._dispatch((user, int(device)))
            except psycopg.Error:
                log.warning("relay notification listener lost its connection; reconnecting")
                self._stop.wait(0.5)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
