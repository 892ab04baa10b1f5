"""Identity trust: trust on first use of a *user* identity key, then a policy on change.

* First key seen for a user: recorded and trusted (event ``identity_new``), not verified.
* Same key again: nothing happens.
* Another key for a known user:

  - policy ``"block"``: :class:`~e2ee.errors.UntrustedIdentityError`; nothing is accepted from
    or sent to that user under the new key (existing sessions with the old key's devices keep
    delivering). The new key is remembered as *pending* (in its own transaction, after the
    failed one rolled back); :meth:`e2ee.client.Client.approve_identity` accepts it and deletes
    every session with that user.
  - policy ``"warn"``: the new key replaces the old one, event ``identity_changed``; sessions are
    then pruned against the new list (a device listed again under the same key keeps its).

  In both cases "verified" is cleared when the key is replaced and the old key's device list is
  dropped (spec/client.md, REQ-CL-30).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Literal

from e2ee.client.events import Event
from e2ee.client.store import column
from e2ee.errors import StateError, UntrustedIdentityError
from e2ee.limits import ED25519_KEY_SIZE

TrustPolicy = Literal["block", "warn"]


def identity(conn: sqlite3.Connection, user_id: str) -> tuple[bytes, bool, bytes | None] | None:
    row = conn.execute(
        "SELECT identity_key, verified, pending_key FROM identities WHERE user_id = ?", (user_id,)
    ).fetchone()
    if row is None:
        return None
    pending = None if row[2] is None else _key(row[2], "pending identity key")
    return _key(row[0], "identity key"), bool(column(row[1], int, "verified flag")), pending


@dataclass(frozen=True, slots=True)
class KnownIdentity:
    """A user whose identity key the store holds: ``verified`` after a safety-number
    comparison, ``pending`` while another key waits for ``approve_identity`` (under
    ``"block"``). No key material: a key is asked for by user id."""

    user_id: str
    verified: bool
    pending: bool


def known(conn: sqlite3.Connection) -> list[KnownIdentity]:
    """Every identity the store holds, in user-id order, each value checked (REQ-CL-45)."""
    rows = conn.execute(
        "SELECT user_id, identity_key, verified, pending_key FROM identities ORDER BY user_id"
    ).fetchall()
    out = []
    for user_id, key, verified, pending in rows:
        _key(key, "identity key")
        if pending is not None:
            _key(pending, "pending identity key")
        out.append(
            KnownIdentity(
                column(user_id, str, "identity user id"),
                bool(column(verified, int, "verified flag")),
                pending is not None,
            )
        )
    return out


def _key(value: object, what: str) -> bytes:
    key = column(value, bytes, what)
    if len(key) != ED25519_KEY_SIZE:
        raise StateError(f"malformed {what} in the client store")
    return key


def check(conn: sqlite3.Connection, user_id: str, key: bytes, policy: TrustPolicy) -> list[Event]:
    """Apply TOFU and the policy to ``key`` for ``user_id`` (inside a transaction)."""
    known = identity(conn, user_id)
    if known is None:
        conn.execute(
            "INSERT INTO identities (user_id, identity_key, verified) VALUES (?, ?, 0)",
            (user_id, key),
        )
        return [Event("identity_new", user_id)]
    if known[0] == key:
        return []
    if policy == "block":
        raise UntrustedIdentityError(
            f"the identity key of user {user_id!r} changed; approve it first", user_id=user_id
        )
    replace(conn, user_id, key)
    return [Event("identity_changed", user_id, detail="verification cleared")]


def replace(conn: sqlite3.Connection, user_id: str, key: bytes) -> None:
    conn.execute(
        "UPDATE identities SET identity_key = ?, verified = 0, pending_key = NULL "
        "WHERE user_id = ?",
        (key, user_id),
    )
    conn.execute("DELETE FROM device_lists WHERE user_id = ?", (user_id,))


def record_pending(conn: sqlite3.Connection, user_id: str, key: bytes) -> None:
    conn.execute("UPDATE identities SET pending_key = ? WHERE user_id = ?", (key, user_id))


def set_verified(conn: sqlite3.Connection, user_id: str, verified: bool) -> None:
    conn.execute("UPDATE identities SET verified = ? WHERE user_id = ?", (int(verified), user_id))
