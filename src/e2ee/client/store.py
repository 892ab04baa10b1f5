"""The durable client store: one SQLite file per device (schema in spec/client.md).

* WAL journal, ``synchronous=FULL``: a committed transaction survives power loss.
  ``secure_delete`` zeroes what a change deletes or overwrites.
* Every change is one ``BEGIN IMMEDIATE`` transaction, which takes SQLite's write lock at the
  start. Together with the store's re-entrant thread lock this serialises all work on the store
  across threads (the lock) and processes (the write lock): a session is read, used and written
  back inside one transaction, never cached across transactions.
* With a 32-byte ``key`` the account, session and user-identity blobs are sealed with the
  core's ``to_bytes(key=...)``; delivered message bodies in ``inbox`` and a pending link code
  are sealed with XChaCha20-Poly1305, each under its own subkey. Routing metadata (user and
  device ids, message ids, public keys) stays in clear.
* :meth:`Store.checkpoint` calls an optional hook with a named point; the crash test uses it to
  kill the process between the steps of a receive. It does nothing in normal use.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from e2ee.account import Account
from e2ee.crypto import primitives
from e2ee.crypto.provider import Provider, default_provider
from e2ee.errors import AuthenticationError, LocalError, StateError, StoreError
from e2ee.limits import HEADER_NONCE_SIZE, HKDF_ZERO_SALT

SCHEMA_VERSION = 3
"""Schema 2 dates each ``processed`` row (``received``) so that old rows can be pruned; schema 3
keeps a pending link code sealed (a BLOB) instead of as clear TEXT."""
BUSY_TIMEOUT_MS = 60_000
_INBOX_LABEL = b"e2ee/v1/client-store/inbox"
_LINK_CODE_LABEL = b"e2ee/v1/client-store/link-code"
LINK_CODE_AD = b"link_code"
"""The associated data of the sealed link code: its ``meta`` name."""

PROCESSED = """
CREATE TABLE IF NOT EXISTS processed (
    sender_user TEXT NOT NULL,
    sender_device INTEGER NOT NULL,
    message_id BLOB NOT NULL,
    received INTEGER NOT NULL,
    PRIMARY KEY (sender_user, sender_device, message_id)
) WITHOUT ROWID
"""
PROCESSED_INDEX = "CREATE INDEX IF NOT EXISTS processed_by_age ON processed (received)"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value BLOB
);
CREATE TABLE IF NOT EXISTS account (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    state BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS user_identity (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    state BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    peer_user TEXT NOT NULL,
    peer_device INTEGER NOT NULL,
    session_id BLOB NOT NULL,
    peer_key BLOB NOT NULL,
    last_used INTEGER NOT NULL,
    state BLOB NOT NULL,
    PRIMARY KEY (peer_user, peer_device, session_id)
);
CREATE TABLE IF NOT EXISTS identities (
    user_id TEXT PRIMARY KEY,
    identity_key BLOB NOT NULL,
    verified INTEGER NOT NULL DEFAULT 0,
    pending_key BLOB
);
CREATE TABLE IF NOT EXISTS device_lists (
    user_id TEXT PRIMARY KEY,
    counter INTEGER NOT NULL,
    signed BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS inbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    sender_user TEXT NOT NULL,
    sender_device INTEGER NOT NULL,
    conversation TEXT NOT NULL,
    message_id BLOB NOT NULL,
    outgoing INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event BLOB NOT NULL
);
"""


def _migrate_1_to_2(conn: sqlite3.Connection, now: int) -> None:
    """Schema 1 kept ``processed`` rows without a date. They are stamped with ``now``, the time
    of the migration: the latest they can have been received, so each is kept for at least the
    full retention from then on and none is pruned early."""
    conn.execute("ALTER TABLE processed RENAME TO processed_1")
    conn.execute(PROCESSED)
    conn.execute(
        "INSERT INTO processed SELECT sender_user, sender_device, message_id, ? FROM processed_1",
        (now,),
    )
    conn.execute("DROP TABLE processed_1")
    conn.execute("UPDATE meta SET value = 2 WHERE name = 'schema'")


def _migrate_2_to_3(conn: sqlite3.Connection, store: Store) -> None:
    """Schema 2 kept a pending link code as clear TEXT, also in an encrypted store: it is
    sealed now, in the same transaction, so no later commit leaves it in clear."""
    row = conn.execute("SELECT value FROM meta WHERE name = 'link_code'").fetchone()
    if row is not None:
        if type(row[0]) is not str:
            raise StateError("malformed pending link code")
        store.set_meta(conn, "link_code", store.seal_link_code(row[0]))
    conn.execute("UPDATE meta SET value = 3 WHERE name = 'schema'")


T = TypeVar("T", bytes, int, str)


def column(value: object, kind: type[T], what: str) -> T:
    """A value read from the store, which is input from disk (SQLite lets any column hold any
    type): ``value`` if it is of ``kind``, else :class:`StateError` naming ``what`` only."""
    if not isinstance(value, kind):
        raise StateError(f"malformed {what} in the client store")
    return value


def _subkey(key: bytes | None, label: bytes) -> bytes | None:
    return primitives.hkdf_sha256(HKDF_ZERO_SALT, key, label, 32) if key else None


def _name(error: sqlite3.Error) -> str:
    """SQLite's name for the error (``SQLITE_NOTADB``, ...): it never carries row values."""
    return str(getattr(error, "sqlite_errorname", type(error).__name__))


class Store:
    """A connection to one device's SQLite store, shareable between threads."""

    def __init__(
        self,
        path: str | Path,
        *,
        key: bytes | None = None,
        provider: Provider | None = None,
        now: int | None = None,
        create: bool = True,
    ) -> None:
        """Open (or, with ``create``, create) the store at ``path``. Without ``create`` the file
        must exist and already hold a client, else :class:`StoreError` or :class:`LocalError`
        before anything is written to it. An older schema is migrated in one transaction;
        ``now`` is the time a migration stamps on the ``processed`` rows it cannot date (see
        :func:`_migrate_1_to_2`; the wall clock if None)."""
        if key is not None and (not isinstance(key, bytes) or len(key) != 32):
            raise TypeError("the store key must be 32 bytes")
        self.key = key
        self.provider = provider or default_provider()
        self.lock = threading.RLock()
        self.checkpoint_hook: Callable[[str], None] | None = None
        self._inbox_key = _subkey(key, _INBOX_LABEL)
        self._link_code_key = _subkey(key, _LINK_CODE_LABEL)
        # Without ``create``, SQLite's read-write mode refuses a missing file (no typo leaves
        # an empty store behind).
        target = str(path) if create else Path(path).resolve().as_uri() + "?mode=rw"
        try:
            self.conn = sqlite3.connect(
                target, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                check_same_thread=False, uri=not create,
            )  # fmt: skip
        except sqlite3.Error as error:
            raise StoreError(f"the client store cannot be opened ({_name(error)})") from None
        try:
            if not create:
                self._require_client()
            self._open(now)
        except BaseException:
            self.conn.close()
            raise

    def _require_client(self) -> None:
        """Read only: a file that is not a client store (another application's database, an
        empty file) is refused before the schema, or WAL mode, is written into it."""
        try:
            tables = self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            held = ("meta",) in tables.fetchall() and self.conn.execute(
                "SELECT 1 FROM meta WHERE name = 'user_id'"
            ).fetchone() is not None
        except sqlite3.Error as error:
            raise StoreError(f"the client store cannot be opened ({_name(error)})") from None
        if not held:
            raise LocalError("this store holds no client; use Client.create or create_linked")

    def _open(self, now: int | None) -> None:
        try:
            self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = self.conn.execute("PRAGMA journal_mode = WAL").fetchone()
            self.conn.execute("PRAGMA synchronous = FULL")
            # Deleted and overwritten content (earlier session states with their chain keys, a
            # used link code, deleted inbox rows) is zeroed in the file, whatever the SQLite
            # build's default: forward secrecy must not depend on free pages being reused.
            self.conn.execute("PRAGMA secure_delete = ON")
        except sqlite3.Error as error:  # not a database at all, say
            raise StoreError(f"the client store cannot be opened ({_name(error)})") from None
        if mode is None or str(mode[0]).lower() != "wal":
            # Durability and multi-process safety are argued for WAL (spec/client.md): refuse
            # to run in whatever journal mode SQLite fell back to (a database in memory, say).
            raise StoreError("the client store needs SQLite's WAL journal mode")
        with self.transaction() as conn:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            row = conn.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            elif type(row[0]) is not int or not 1 <= row[0] <= SCHEMA_VERSION:
                raise StateError("unsupported client store schema")
            elif row[0] < SCHEMA_VERSION:
                self._check_key(conn)  # a store that cannot be opened is not migrated either
                if row[0] == 1:
                    _migrate_1_to_2(conn, int(time.time()) if now is None else now)
                _migrate_2_to_3(conn, self)
            conn.execute(PROCESSED)  # a new store's (the migration made its own already)
            conn.execute(PROCESSED_INDEX)

    def _check_key(self, conn: sqlite3.Connection) -> None:
        """The account must open under the key given (a wrong key, no key for an encrypted
        store, a key for a plain one: :class:`StateError`). Run before a migration writes, so
        that such an open fails with the file unchanged rather than a pending link code sealed
        under the wrong key."""
        row = conn.execute("SELECT state FROM account WHERE id = 1").fetchone()
        if row is not None:
            Account.from_bytes(column(row[0], bytes, "account state"), key=self.key)

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    def __repr__(self) -> str:
        return f"Store(encrypted={self.key is not None})"

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` under the thread lock; rolled back on any error.
        An error of SQLite itself (a damaged file, a full disk, a lock held for longer than the
        busy timeout) is raised as :class:`StoreError` after the rollback."""
        with self.lock:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self.conn
                    self.conn.execute("COMMIT")
                except BaseException:
                    if self.conn.in_transaction:
                        self.conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as error:
                raise StoreError(f"the client store failed ({_name(error)})") from None

    def checkpoint(self, point: str) -> None:
        if self.checkpoint_hook is not None:
            self.checkpoint_hook(point)

    # --- meta -----------------------------------------------------------------------------

    def get_meta(self, conn: sqlite3.Connection, name: str) -> object:
        row = conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, conn: sqlite3.Connection, name: str, value: object) -> None:
        conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))

    # --- sealing of inbox bodies and of the link code ------------------------------------------

    def seal(self, body: bytes, ad: bytes) -> bytes:
        """An inbox body as stored: sealed under the inbox subkey, or as it is without a key."""
        return self._seal_under(self._inbox_key, body, ad)

    def open(self, sealed: bytes, ad: bytes) -> bytes:
        return self._open_under(self._inbox_key, sealed, ad, "inbox entry")

    def seal_link_code(self, code: str) -> bytes:
        """A pending link code as stored: its UTF-8 bytes, sealed under their own subkey with
        the store key."""
        return self._seal_under(self._link_code_key, code.encode(), LINK_CODE_AD)

    def open_link_code(self, stored: object) -> str:
        """The pending link code from its stored form; anything else is a ``StateError``."""
        if type(stored) is not bytes:
            raise StateError("malformed pending link code")
        try:
            return self._open_under(self._link_code_key, stored, LINK_CODE_AD, "link code").decode()
        except UnicodeDecodeError:
            raise StateError("malformed pending link code") from None

    def _seal_under(self, key: bytes | None, body: bytes, ad: bytes) -> bytes:
        if key is None:
            return body
        nonce = self.provider.random_bytes(HEADER_NONCE_SIZE)
        return nonce + primitives.xchacha20poly1305_encrypt(key, nonce, body, ad)

    @staticmethod
    def _open_under(key: bytes | None, sealed: bytes, ad: bytes, what: str) -> bytes:
        if key is None:
            return sealed
        try:
            return primitives.xchacha20poly1305_decrypt(
                key, sealed[:HEADER_NONCE_SIZE], sealed[HEADER_NONCE_SIZE:], ad
            )
        except AuthenticationError:
            raise StateError(f"{what} does not decrypt under this key") from None
