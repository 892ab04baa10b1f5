"""Several sessions per peer device, as Sesame describes, bounded.

For each (peer user, peer device) the store keeps the *active* session (the one used most
recently: highest ``last_used``, a counter of that peer device's sessions) and at most
:data:`MAX_PREVIOUS_SESSIONS` previous ones.

* Sending uses the active session; with none, a new one is started from a fresh bundle.
* Receiving picks the session by the session id every e2ee message carries in clear (so "try the
  active one, then the previous ones" is one indexed lookup instead of trial decryptions). A
  message that decrypts on a previous session makes it active again; an initial message with an
  unknown session id creates a new session, which becomes active (both sides starting at once,
  or the peer reinstalled). Both ends converge on the session used last.
* Beyond the bound, the least recently used sessions are deleted.
"""

from __future__ import annotations

import sqlite3

from e2ee.client.store import Store, column
from e2ee.errors import StateError
from e2ee.session import Session

MAX_PREVIOUS_SESSIONS = 4
_MAX_LAST_USED = 2**63 - 1
"""SQLite's largest integer."""


def by_id(
    conn: sqlite3.Connection, store: Store, user: str, device: int, session_id: bytes
) -> Session | None:
    row = conn.execute(
        "SELECT state FROM sessions WHERE peer_user = ? AND peer_device = ? AND session_id = ?",
        (user, device, session_id),
    ).fetchone()
    return None if row is None else _load(row[0], store)


def active(conn: sqlite3.Connection, store: Store, user: str, device: int) -> Session | None:
    _check_last_used(conn, user, device)
    row = conn.execute(
        "SELECT state FROM sessions WHERE peer_user = ? AND peer_device = ? "
        "ORDER BY last_used DESC LIMIT 1",
        (user, device),
    ).fetchone()
    return None if row is None else _load(row[0], store)


def by_use(conn: sqlite3.Connection, store: Store, user: str, device: int) -> list[Session]:
    """Every session held with one peer device, the active one first."""
    _check_last_used(conn, user, device)
    rows = conn.execute(
        "SELECT state FROM sessions WHERE peer_user = ? AND peer_device = ? "
        "ORDER BY last_used DESC",
        (user, device),
    ).fetchall()
    return [_load(row[0], store) for row in rows]


def _load(state: object, store: Store) -> Session:
    return Session.from_bytes(column(state, bytes, "session state"), key=store.key)


def count(conn: sqlite3.Connection, user: str, device: int) -> int:
    row = conn.execute(
        "SELECT COUNT(*) FROM sessions WHERE peer_user = ? AND peer_device = ?", (user, device)
    ).fetchone()
    return int(row[0])


def save(
    conn: sqlite3.Connection,
    store: Store,
    user: str,
    device: int,
    session: Session,
    *,
    make_active: bool,
) -> None:
    state = session.to_bytes(key=store.key, provider=store.provider)
    if make_active:
        next_used = _next_used(conn, user, device)  # checks every row _prune orders
        conn.execute(
            "INSERT OR REPLACE INTO sessions "
            "(peer_user, peer_device, session_id, peer_key, last_used, state) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (user, device, session.session_id, session.peer_identity_key, next_used, state),
        )
        _prune(conn, user, device)
    else:
        conn.execute(
            "UPDATE sessions SET state = ? "
            "WHERE peer_user = ? AND peer_device = ? AND session_id = ?",
            (state, user, device, session.session_id),
        )


def _next_used(conn: sqlite3.Connection, user: str, device: int) -> int:
    """One more than the highest ``last_used`` of the peer device's sessions. ``last_used``
    only orders the sessions of one peer device (the active one, the ones kept), so it counts
    per peer device: one index search over at most ``1 + MAX_PREVIOUS_SESSIONS`` rows per
    message received, where a maximum over the whole table read every session held. Read and
    checked here rather than computed in SQL, which would turn a tampered value (text, a blob, a
    real) into a number and store it (REQ-CL-45); a value with no successor SQLite can hold is
    refused too."""
    latest = max(_check_last_used(conn, user, device), default=0)
    if latest >= _MAX_LAST_USED:
        raise StateError("malformed session last use in the client store")
    return latest + 1


def _check_last_used(conn: sqlite3.Connection, user: str, device: int) -> list[int]:
    """Every ``last_used`` of one peer device's sessions, each checked to be an integer
    (REQ-CL-45) before a query orders them by it: ``ORDER BY`` sorts other types by SQLite's
    type order (INTEGER and REAL < TEXT < BLOB), so a tampered row, not only the highest,
    would choose the active session or the ones pruned. One index search over the peer
    device's sessions (at most ``1 + MAX_PREVIOUS_SESSIONS``), reading no session state."""
    return [
        column(last_used, int, "session last use")
        for (last_used,) in conn.execute(
            "SELECT last_used FROM sessions WHERE peer_user = ? AND peer_device = ?",
            (user, device),
        )
    ]


def delete_device(conn: sqlite3.Connection, user: str, device: int) -> None:
    conn.execute("DELETE FROM sessions WHERE peer_user = ? AND peer_device = ?", (user, device))


def _prune(conn: sqlite3.Connection, user: str, device: int) -> None:
    conn.execute(
        "DELETE FROM sessions WHERE peer_user = ? AND peer_device = ? AND session_id NOT IN ("
        " SELECT session_id FROM sessions WHERE peer_user = ? AND peer_device = ?"
        " ORDER BY last_used DESC LIMIT ?)",
        (user, device, user, device, 1 + MAX_PREVIOUS_SESSIONS),
    )
