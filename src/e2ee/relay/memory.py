"""In-memory relay storage for unit tests: dictionaries under one lock, with an undo log so that
a job that raises leaves everything exactly as it was."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

from e2ee.relay.storage import RowLock, StoredList, Swept, TokenRow, Tx

T = TypeVar("T")
_MISSING: Any = object()


class _MemoryTx:
    def __init__(self, db: MemoryStorage) -> None:
        self._db = db
        self.undo: list[Callable[[], None]] = []

    # undo-logged primitive writes on any dict
    def _set(self, table: dict[Any, Any], key: Any, value: Any) -> None:
        old = table.get(key, _MISSING)
        self.undo.append(lambda: _restore(table, key, old))
        table[key] = value

    def _del(self, table: dict[Any, Any], key: Any) -> None:
        if key in table:
            old = table[key]
            self.undo.append(lambda: _restore(table, key, old))
            del table[key]

    def secret(self, name: str, fresh: bytes) -> bytes:
        if name not in self._db.meta:
            self._set(self._db.meta, name, fresh)
        value: bytes = self._db.meta[name]
        return value

    def device_list(self, user: str, *, lock: RowLock | None = None) -> StoredList | None:
        return self._db.users.get(user)  # jobs run one at a time: nothing to lock

    def put_device_list(self, entry: StoredList) -> None:
        self._set(self._db.users, entry.user, entry)
        for device in entry.devices:
            if (entry.user, device) not in self._db.queued:
                self._set(self._db.queued, (entry.user, device), 0)

    def purge_device(self, user: str, device: int) -> None:
        db = self._db
        for mid, (u, d, _, _) in list(db.messages.items()):
            if (u, d) == (user, device):
                self._del(db.messages, mid)
        for table in (db.queued, db.bundles):
            self._del(table, (user, device))
        for kind in (0, 1):
            self._del(db.one_time, (user, device, kind))
            self._del(db.high_water, (user, device, kind))
        for token_hash, row in list(db.tokens.items()):
            if (row.user, row.device) == (user, device):
                self._del(db.tokens, token_hash)
        for key, (owner, _, _) in list(db.results.items()):
            if owner == (user, device):
                self._del(db.results, key)

    def use_challenge(self, nonce: bytes, expires: int) -> bool:
        if nonce in self._db.challenges:
            return False
        self._set(self._db.challenges, nonce, expires)
        return True

    def put_token(self, token_hash: bytes, row: TokenRow) -> None:
        self._set(self._db.tokens, token_hash, row)

    def token(self, token_hash: bytes, *, lock: Literal["share"] | None = None) -> TokenRow | None:
        return self._db.tokens.get(token_hash)  # jobs run one at a time: nothing to lock

    def signed_bundle(self, user: str, device: int) -> bytes | None:
        return self._db.bundles.get((user, device))

    def put_signed_bundle(self, user: str, device: int, bundle: bytes) -> None:
        self._set(self._db.bundles, (user, device), bundle)

    def one_time_count(self, user: str, device: int, kind: int) -> int:
        return len(self._db.one_time.get((user, device, kind), {}))

    def high_water(self, user: str, device: int, kind: int) -> int:
        return self._db.high_water.get((user, device, kind), 0)

    def add_one_time(
        self, user: str, device: int, kind: int, keys: Sequence[tuple[int, bytes, bytes]]
    ) -> None:
        if not keys:
            return
        key = (user, device, kind)
        current = dict(self._db.one_time.get(key, {}))
        for key_id, public, signature in keys:
            current[key_id] = (public, signature)
        self._set(self._db.one_time, key, dict(sorted(current.items())))
        self._set(self._db.high_water, key, max(self.high_water(*key), *(k[0] for k in keys)))

    def claim_one_time(self, user: str, device: int, kind: int) -> tuple[int, bytes, bytes] | None:
        key = (user, device, kind)
        current = self._db.one_time.get(key)
        if not current:
            return None
        key_id = min(current)
        remaining = dict(current)
        public, signature = remaining.pop(key_id)
        self._set(self._db.one_time, key, remaining)
        return key_id, public, signature

    def result(self, kind: str, key: bytes) -> bytes | None:
        found = self._db.results.get((kind, key))
        return None if found is None else found[1]

    def put_result(
        self, kind: str, key: bytes, owner: tuple[str, int], body: bytes, expires: int
    ) -> None:
        self._set(self._db.results, (kind, key), (owner, body, expires))

    def bucket(self, key: bytes) -> tuple[float, float] | None:
        return self._db.buckets.get(key)

    def put_bucket(self, key: bytes, tokens: float, updated: float) -> None:
        self._set(self._db.buckets, key, (tokens, updated))

    def drop_buckets(self, updated_before: float, limit: int) -> int:
        buckets = self._db.buckets
        stale = [k for k, (_, updated) in buckets.items() if updated < updated_before][:limit]
        for key in stale:
            self._del(self._db.buckets, key)
        return len(stale)

    def queue_length(self, user: str, device: int) -> int:
        return self._db.queued.get((user, device), 0)

    def enqueue(self, user: str, device: int, envelope: bytes, expires: int) -> int:
        db = self._db
        mid = db.next_id
        old_next = db.next_id
        self.undo.append(lambda: setattr(db, "next_id", old_next))
        db.next_id += 1
        self._set(db.messages, mid, (user, device, envelope, expires))
        self._set(db.queued, (user, device), self.queue_length(user, device) + 1)
        return mid

    def fetch(
        self, user: str, device: int, after: int, limit: int, now: int, max_bytes: int
    ) -> list[tuple[int, bytes]]:
        out = []
        total = 0
        for mid in sorted(self._db.messages):
            u, d, envelope, expires = self._db.messages[mid]
            if (u, d) == (user, device) and mid > after and expires > now:
                out.append((mid, envelope))
                total += len(envelope)
                if len(out) >= limit or (total > max_bytes and len(out) > 1):
                    break
        return out

    def ack(self, user: str, device: int, ids: Sequence[int]) -> int:
        removed = 0
        for mid in set(ids):
            row = self._db.messages.get(mid)
            if row is not None and row[:2] == (user, device):
                self._del(self._db.messages, mid)
                removed += 1
        if removed:
            self._set(self._db.queued, (user, device), self.queue_length(user, device) - removed)
        return removed

    def sweep(self, now: int, limit: int) -> Swept:
        db = self._db
        expired = sorted((row[3], mid) for mid, row in db.messages.items() if row[3] <= now)
        for _, mid in expired[:limit]:  # earliest expiry first, as the SQL storages delete
            u, d, _, _ = db.messages[mid]
            self._del(db.messages, mid)
            self._set(db.queued, (u, d), self.queue_length(u, d) - 1)
        stale: list[tuple[dict[Any, Any], list[Any]]] = [
            (db.challenges, [n for n, expires in db.challenges.items() if expires <= now]),
            (db.tokens, [t for t, row in db.tokens.items() if row.expires <= now]),
            (db.results, [k for k, (_, _, expires) in db.results.items() if expires <= now]),
        ]
        for table, keys in stale:
            for key in keys[:limit]:
                self._del(table, key)
        full = any(len(keys) >= limit for keys in [expired, *(keys for _, keys in stale)])
        return Swept(min(len(expired), limit), full)


def _restore(table: dict[Any, Any], key: Any, old: Any) -> None:
    if old is _MISSING:
        table.pop(key, None)
    else:
        table[key] = old


class MemoryStorage:
    """Storage in dictionaries (lost when the process ends). Jobs run one at a time."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.meta: dict[str, bytes] = {}
        self.users: dict[str, StoredList] = {}
        self.queued: dict[tuple[str, int], int] = {}
        self.bundles: dict[tuple[str, int], bytes] = {}
        self.one_time: dict[tuple[str, int, int], dict[int, tuple[bytes, bytes]]] = {}
        self.high_water: dict[tuple[str, int, int], int] = {}
        self.challenges: dict[bytes, int] = {}
        self.tokens: dict[bytes, TokenRow] = {}
        self.results: dict[tuple[str, bytes], tuple[tuple[str, int], bytes, int]] = {}
        self.buckets: dict[bytes, tuple[float, float]] = {}
        self.messages: dict[int, tuple[str, int, bytes, int]] = {}
        self.next_id = 1

    def run(self, job: Callable[[Tx], T]) -> T:
        with self._lock:
            tx = _MemoryTx(self)
            try:
                return job(tx)
            except BaseException:
                for undo in reversed(tx.undo):
                    undo()
                raise

    async def submit(self, job: Callable[[Tx], T]) -> T:
        return self.run(job)

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"MemoryStorage({len(self.users)} users, {len(self.messages)} queued)"
