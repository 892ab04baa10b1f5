"""The durable client store: one SQLite file per device (schema in spec/client.md).

* WAL journal, ``synchronous=FULL``: a committed transaction survives power loss.
* Every change is one ``BEGIN IMMEDIATE`` transaction, which takes SQLite's write lock at the
  start. Together with the store's re-entrant thread lock this serialises all work on the store
  across threads (the lock) and processes (the write lock): a session is read, used and written
  back inside one transaction, never cached across transactions.
* With a 32-byte ``key`` the account, session and user-identity blobs are sealed with the
  core's ``to_bytes(key=...)``; delivered message bodies in ``inbox`` are sealed with
  XChaCha20-Poly1305 under a subkey. Routing metadata (user and device ids, message ids,
  public keys) stays in clear.
* :meth:`Store.checkpoint` calls an optional hook with a named point; the crash test uses it to
  kill the process between the steps of a receive. It does nothing in normal use.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from e2ee.crypto import primitives
from e2ee.crypto.provider import Provider, default_provider
from e2ee.errors import AuthenticationError, StateError, StoreError
from e2ee.limits import HEADER_NONCE_SIZE, HKDF_ZERO_SALT

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 60_000
_INBOX_LABEL = b"e2ee/v1/client-store/inbox"

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
CREATE TABLE IF NOT EXISTS processed (
    sender_user TEXT NOT NULL,
    sender_device INTEGER NOT NULL,
    message_id BLOB NOT NULL,
    PRIMARY KEY (sender_user, sender_device, message_id)
) WITHOUT ROWID;
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


class Store:
    """A connection to one device's SQLite store, shareable between threads."""

    def __init__(
        self,
        path: str | Path,
        *,
        key: bytes | None = None,
        provider: Provider | None = None,
    ) -> None:
        if key is not None and (not isinstance(key, bytes) or len(key) != 32):
            raise TypeError("the store key must be 32 bytes")
        self.key = key
        self.provider = provider or default_provider()
        self.lock = threading.RLock()
        self.checkpoint_hook: Callable[[str], None] | None = None
        self._inbox_key = (
            primitives.hkdf_sha256(HKDF_ZERO_SALT, key, _INBOX_LABEL, 32) if key else None
        )
        self.conn = sqlite3.connect(
            str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
            check_same_thread=False,
        )  # fmt: skip
        self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = self.conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            # Durability and multi-process safety are argued for WAL (spec/client.md): refuse
            # to run in whatever journal mode SQLite fell back to (a database in memory, say).
            self.conn.close()
            raise StoreError("the client store needs SQLite's WAL journal mode")
        self.conn.execute("PRAGMA synchronous = FULL")
        with self.transaction() as conn:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            row = conn.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            elif row[0] != SCHEMA_VERSION:
                raise StateError(f"unsupported client store schema {row[0]}")

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    def __repr__(self) -> str:
        return f"Store(encrypted={self.key is not None})"

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` under the thread lock; rolled back on any error."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def checkpoint(self, point: str) -> None:
        if self.checkpoint_hook is not None:
            self.checkpoint_hook(point)

    # --- meta -----------------------------------------------------------------------------

    def get_meta(self, conn: sqlite3.Connection, name: str) -> object:
        row = conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, conn: sqlite3.Connection, name: str, value: object) -> None:
        conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))

    # --- sealing of inbox bodies -------------------------------------------------------------

    def seal(self, body: bytes, ad: bytes) -> bytes:
        if self._inbox_key is None:
            return body
        nonce = self.provider.random_bytes(HEADER_NONCE_SIZE)
        return nonce + primitives.xchacha20poly1305_encrypt(self._inbox_key, nonce, body, ad)

    def open(self, sealed: bytes, ad: bytes) -> bytes:
        if self._inbox_key is None:
            return sealed
        try:
            return primitives.xchacha20poly1305_decrypt(
                self._inbox_key, sealed[:HEADER_NONCE_SIZE], sealed[HEADER_NONCE_SIZE:], ad
            )
        except AuthenticationError:
            raise StateError("inbox entry does not decrypt under this key") from None
