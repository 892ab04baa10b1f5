"""The relay's storage interface: what the rules (:mod:`e2ee.relay.rules`) need from a database.

A :class:`Storage` runs *jobs*: a job is a plain function of a :class:`Tx` (one transaction).
Either the whole job takes effect or, when it raises, none of it does (rule: failed operations
change nothing). :meth:`Storage.submit` returns only once the job's effects are durable, so a
relay answers "accepted" only for what survives a crash; it may batch jobs of several requests
into one commit (group commit) as long as each job stays atomic on its own.

Implementations: :class:`e2ee.relay.memory.MemoryStorage` (tests) and
:class:`e2ee.relay.sqlite.SQLiteStorage` (the default). A PostgreSQL backend implements the
same two protocols; the notes on each method say what its query must guarantee.

:class:`Notifier` wakes the WebSocket that holds a device's connection when a message for that
device was accepted, possibly by another relay process (PostgreSQL: LISTEN/NOTIFY).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, Protocol, TypeVar

T = TypeVar("T")

KIND_EC = 0
KIND_KEM = 1

RowLock = Literal["share", "update"]
"""How a read locks the user's row until the transaction ends, where transactions run
concurrently (PostgreSQL; SQLite and the memory storage run one at a time and ignore it):
``"share"`` in a job that stores something for a device on the strength of what it read,
``"update"`` in a publication of the user's list. ``None`` (the default): no lock, for jobs that
only read. A row lock is not free there: PostgreSQL records it in the row, a write (WAL, and a
WAL flush at the commit of a job that wrote nothing else), and many transactions share-locking
one row make a MultiXact."""


@dataclass(frozen=True, slots=True)
class StoredList:
    """A user's stored device list. ``devices`` is a read-only copy: a storage may hand the same
    entry to every request that reads the list (:class:`e2ee.relay.sqlite.SQLiteStorage` caches
    it), so no reader can change what the others see."""

    user: str
    user_key: bytes
    counter: int
    signed: bytes
    devices: Mapping[int, bytes]

    def __post_init__(self) -> None:
        object.__setattr__(self, "devices", MappingProxyType(dict(self.devices)))

    def __repr__(self) -> str:
        return f"StoredList({self.user!r}, counter={self.counter}, devices={sorted(self.devices)})"


@dataclass(frozen=True, slots=True)
class TokenRow:
    user: str
    device: int
    device_key: bytes
    expires: int

    def __repr__(self) -> str:
        return f"TokenRow({self.user!r}/{self.device}, expires={self.expires})"


@dataclass(frozen=True, slots=True)
class Swept:
    """What one sweep job did: ``messages`` expired messages deleted, and ``more`` when it
    stopped at its bound in some table (expired rows may remain: run another job)."""

    messages: int
    more: bool


class Tx(Protocol):
    """One transaction. Every method may raise only on storage failure."""

    # meta
    def secret(self, name: str, fresh: bytes) -> bytes:
        """The stored secret ``name``; stores ``fresh`` first if there is none."""
        ...

    # users and devices
    def device_list(self, user: str, *, lock: RowLock | None = None) -> StoredList | None:
        """The user's stored list. With a ``lock``, where transactions run concurrently
        (PostgreSQL), the user's row stays locked until the transaction ends: ``"share"`` in a
        job that stores something for the listed devices (a login, a send), so a publication
        that replaces the list waits for it and its purge then sees what the job stored;
        ``"update"`` in a publication, which reads the list it replaces this way before it
        purges. Read-only jobs read without a lock (spec/relay.md REQ-RL-34)."""
        ...

    def put_device_list(self, entry: StoredList) -> None:
        """Insert or replace the user's list; creates a device row (empty queue) for each new
        device id."""
        ...

    def purge_device(self, user: str, device: int) -> None:
        """Delete the device's queue, keys (signed bundle, one-time keys, high-water marks),
        tokens and stored send/claim results (the device row itself)."""
        ...

    # authentication
    def use_challenge(self, nonce: bytes, expires: int) -> bool:
        """Record a challenge nonce as used; False if it already was (a replay)."""
        ...

    def put_token(self, token_hash: bytes, row: TokenRow) -> None: ...

    def token(self, token_hash: bytes, *, lock: Literal["share"] | None = None) -> TokenRow | None:
        """The token's row. With ``lock="share"``, where transactions run concurrently
        (PostgreSQL), it also locks the token's user row shared, like :meth:`device_list`: a
        publication that removes the device waits for this transaction, or it committed first
        and the token is gone. Only jobs that store something for the authenticated device (a
        send, an upload, a claim: results, keys) lock; the others read without a lock."""
        ...

    # keys
    def signed_bundle(self, user: str, device: int) -> bytes | None: ...

    def put_signed_bundle(self, user: str, device: int, bundle: bytes) -> None: ...

    def one_time_count(self, user: str, device: int, kind: int) -> int: ...

    def high_water(self, user: str, device: int, kind: int) -> int:
        """The highest one-time key id ever accepted for this device and kind (0 if none)."""
        ...

    def add_one_time(
        self, user: str, device: int, kind: int, keys: Sequence[tuple[int, bytes, bytes]]
    ) -> None:
        """Store keys (ids above the high-water mark) and raise the mark to the highest id."""
        ...

    def claim_one_time(self, user: str, device: int, kind: int) -> tuple[int, bytes, bytes] | None:
        """Remove and return the lowest-id key. MUST hand out every key at most once and MUST
        NOT answer None while a key remains, even under concurrent claims (SQLite: one DELETE
        ... RETURNING statement; PostgreSQL: FOR UPDATE SKIP LOCKED)."""
        ...

    # idempotency and rate limits
    def result(self, kind: str, key: bytes) -> bytes | None:
        """A stored response of an idempotent request (``kind``: "claim" or "send")."""
        ...

    def put_result(
        self, kind: str, key: bytes, owner: tuple[str, int], body: bytes, expires: int
    ) -> None: ...

    def bucket(self, key: bytes) -> tuple[float, float] | None:
        """(tokens, updated) of a token bucket, None when there is none (a full bucket). MUST
        keep a concurrent transaction from reading the same bucket, present or not, until this
        one ends (PostgreSQL: the row FOR UPDATE, or a placeholder row inserted in its place)."""
        ...

    def put_bucket(self, key: bytes, tokens: float, updated: float) -> None: ...

    def drop_buckets(self, updated_before: float, limit: int) -> int:
        """Delete at most ``limit`` buckets last updated before the given time (they have
        refilled completely, so no row is equivalent); returns how many. A bucket a concurrent
        claim updated meanwhile is kept (the condition is checked on the row it deletes)."""
        ...

    # messages
    def queue_length(self, user: str, device: int) -> int: ...

    def enqueue(self, user: str, device: int, envelope: bytes, expires: int) -> int:
        """Append to the device's queue; returns the message id. Ids only grow (never reused),
        and a reader never skips a message that commits later with a smaller id."""
        ...

    def fetch(
        self, user: str, device: int, after: int, limit: int, now: int, max_bytes: int
    ) -> list[tuple[int, bytes]]:
        """Unexpired messages of this device with id > after, in id order: at most ``limit``,
        and none after the first one past the first that takes the envelopes' total above
        ``max_bytes`` (the first never ends the read on its own, so that a caller can tell
        whether a message follows one that is alone over the budget). MUST stop reading there
        (step a cursor, or bound the query), not load more and trim: a read costs at most
        ``max_bytes`` plus one envelope, or two envelopes when the first alone is over."""
        ...

    def ack(self, user: str, device: int, ids: Sequence[int]) -> int:
        """Delete these messages of this device only; ids of other devices are untouched."""
        ...

    def sweep(self, now: int, limit: int) -> Swept:
        """Delete expired messages, challenges, tokens and results: at most ``limit`` rows of
        each table, earliest expiry first for messages (through the expiry index, not a scan),
        and lower each device's ``queued`` count by exactly the number of its messages deleted.
        ``more`` is true when some table gave ``limit`` rows (there may be more: the caller
        runs another job). Memory and time are bounded by ``limit``, not by how much expired:
        the per-device counts are aggregated in the database, not row by row in Python
        (spec/relay.md REQ-RL-41)."""
        ...


class Storage(Protocol):
    def run(self, job: Callable[[Tx], T]) -> T:
        """Run a job atomically and durably (blocking)."""
        ...

    def submit(self, job: Callable[[Tx], T]) -> Awaitable[T]:
        """Run a job atomically; the awaitable completes once it is durable (may share a
        commit). Called on the event loop."""
        ...

    def close(self) -> None: ...


class Subscription(Protocol):
    async def wait(self, timeout: float) -> bool:
        """True when woken (a message may be waiting), False on timeout."""
        ...

    def close(self) -> None: ...


class Notifier(Protocol):
    def subscribe(self, user: str, device: int) -> Subscription: ...

    def notify(self, user: str, device: int) -> None:
        """Called (on the event loop) after a message for the device was committed."""
        ...


class _LocalSubscription:
    def __init__(self, owner: LocalNotifier, key: tuple[str, int]) -> None:
        self._owner = owner
        self._key = key
        self.event = asyncio.Event()

    async def wait(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.event.wait(), timeout)
        except TimeoutError:
            return False
        self.event.clear()
        return True

    def close(self) -> None:
        subs = self._owner._subs.get(self._key)
        if subs is not None:
            subs.discard(self)
            if not subs:
                del self._owner._subs[self._key]


class LocalNotifier:
    """Wakes subscriptions of this process (one relay process per database)."""

    def __init__(self) -> None:
        self._subs: dict[tuple[str, int], set[_LocalSubscription]] = {}

    def subscribe(self, user: str, device: int) -> _LocalSubscription:
        sub = _LocalSubscription(self, (user, device))
        self._subs.setdefault((user, device), set()).add(sub)
        return sub

    def notify(self, user: str, device: int) -> None:
        for sub in self._subs.get((user, device), ()):
            sub.event.set()
