"""Races between PostgreSQL relay transactions, each forced into one interleaving (spec/relay.md,
"PostgreSQL storage"): one transaction is stopped between two of its statements, holding what
it has locked, while another runs; then it goes on. No timing decides the outcome: the second
transaction is let run until it finished or waits for a lock (seen in ``pg_blocking_pids``),
and every wait is bounded, so a regression fails instead of hanging. The transaction a job
runs in (its isolation level, its commit, its reruns) is checked here too.

Needs a PostgreSQL server (``E2EE_TEST_POSTGRES_URL``; ``.ci/postgres.sh`` starts one): skipped
without one, failed without one in CI."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import psycopg
import pytest

from e2ee.errors import (
    MismatchedDevicesError,
    QueueFullError,
    RelayAuthError,
    RelayForbiddenError,
    RelayRateLimitedError,
    RelayUnavailableError,
)
from e2ee.relay import api
from e2ee.relay.postgres import RETRIES, PostgresStorage
from e2ee.relay.rules import Relay
from e2ee.relay.storage import Swept, Tx
from e2ee.wire import codec
from tests.relay_support import (
    Clock,
    User,
    drop_postgres_database,
    login,
    make_relay,
    postgres_database,
    postgres_server_url,
    send_body,
)

WAIT = 15.0
"""Bound on every wait of these tests (PostgreSQL detects a deadlock after 1 s)."""


@dataclass
class Pg:
    storage: PostgresStorage
    clock: Clock
    monitor: psycopg.Connection[Any]

    def relay(self, **config: object) -> Relay:
        return make_relay(self.storage, self.clock, **config)

    def rows(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        return self.storage.run(lambda tx: tx.c.execute(sql.encode(), args).fetchall())  # type: ignore[attr-defined]


@pytest.fixture
def pg() -> Iterator[Pg]:
    url = postgres_database()
    storage = PostgresStorage(url, pool_size=6)
    monitor = psycopg.connect(postgres_server_url(), autocommit=True)
    try:
        yield Pg(storage, Clock(), monitor)
    finally:
        monitor.close()
        storage.close()
        drop_postgres_database(url)


@dataclass
class Running:
    """A job run by ``storage.run`` in a thread of its own, optionally stopped right after the
    first call of one ``Tx`` method returned (its transaction open, its locks held) until
    :meth:`go`."""

    storage: PostgresStorage
    job: Callable[[Tx], Any]
    pause_after: str | None = None
    pid: int | None = None
    value: Any = None
    error: BaseException | None = None
    reached: threading.Event = field(default_factory=threading.Event)
    resume: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> Running:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if self.pause_after is not None:
            assert self.reached.wait(WAIT), f"the job never called {self.pause_after}"
        return self

    def _run(self) -> None:
        try:
            self.value = self.storage.run(lambda tx: self.job(cast(Tx, _Paused(tx, self))))
        except BaseException as exc:
            self.error = exc

    def go(self) -> None:
        self.resume.set()

    def join(self) -> Any:
        assert self.thread is not None
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "the job did not finish"
        return self.value

    @property
    def done(self) -> bool:
        return self.thread is not None and not self.thread.is_alive()


class _Paused:
    def __init__(self, tx: Any, running: Running) -> None:
        self._tx = tx
        self._running = running
        running.pid = tx.c.info.backend_pid

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._tx, name)
        running = self._running
        if name != running.pause_after or running.reached.is_set():
            return attr

        def paused(*args: Any, **kwargs: Any) -> Any:
            value = attr(*args, **kwargs)
            running.reached.set()
            if not running.resume.wait(WAIT):
                raise AssertionError("never resumed")
            return value

        return paused


def finished_or_waiting(pg: Pg, running: Running) -> str:
    """Let the job run until it finished or waits for a lock another transaction holds."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if running.done:
            return "finished"
        if running.pid is not None:
            row = pg.monitor.execute(
                b"SELECT cardinality(pg_blocking_pids(%s))", (running.pid,)
            ).fetchone()
            if row is not None and row[0] > 0:
                return "waiting"
        time.sleep(0.005)  # polling an observed state: the outcome does not depend on it
    raise AssertionError("the job neither finished nor waited for a lock")


# --- the transaction of a job (REQ-RL-23) -----------------------------------------------------


def test_a_job_that_keeps_meeting_a_conflict_is_run_again_and_then_refused_as_unavailable(
    pg: Pg,
) -> None:
    """[REQ-RL-23] A job that meets a unique-key race every time it runs is rolled back and run
    again from the start, RETRIES times in all, and then refused with RelayUnavailableError
    (503), not with the driver's exception; nothing it wrote is kept."""
    runs = 0

    def conflicting(tx: Tx) -> None:
        nonlocal runs
        runs += 1
        c: psycopg.Connection[Any] = tx.c  # type: ignore[attr-defined]
        c.execute(b"INSERT INTO meta VALUES ('conflict', 'x')")
        c.execute(b"INSERT INTO meta VALUES ('conflict', 'y')")

    with pytest.raises(RelayUnavailableError) as refused:
        pg.storage.run(conflicting)
    assert refused.value.__cause__ is None
    assert runs == RETRIES > 1
    assert pg.storage.retries == RETRIES
    assert pg.rows("SELECT * FROM meta WHERE name = 'conflict'") == []


def test_a_job_runs_read_committed_and_commits_after_the_wal_flush_whatever_the_defaults() -> None:
    """[REQ-RL-23] The connection's defaults (here its options, as a role's or database's
    settings would) ask for SERIALIZABLE transactions and commits that do not wait for the WAL
    flush; the storage's jobs still run READ COMMITTED, and their commit returns only once the
    WAL is flushed (``synchronous_commit`` on). Before, the jobs took whatever the server was
    configured with, so "accepted" did not mean durable."""
    url = postgres_database()
    defaults = (
        url + "%20-cdefault_transaction_isolation%3Dserializable%20-csynchronous_commit%3Doff"
    )
    show = b"SELECT current_setting('transaction_isolation'), current_setting('synchronous_commit')"
    try:
        with psycopg.connect(defaults) as conn:
            assert conn.execute(show).fetchone() == ("serializable", "off")  # the defaults hold
        storage = PostgresStorage(defaults, pool_size=2)
        try:
            settings = [
                storage.run(lambda tx: tx.c.execute(show).fetchone())  # type: ignore[attr-defined]
                for _ in range(3)
            ]
        finally:
            storage.close()
        assert settings == [("read committed", "on")] * 3
    finally:
        drop_postgres_database(url)


# --- device lists against what relies on them (REQ-RL-04, REQ-RL-17, REQ-RL-34) ---------------


@dataclass
class World:
    pg: Pg
    relay: Relay
    alice: User
    bob: User

    @classmethod
    def make(cls, pg: Pg) -> World:
        relay = pg.relay()
        alice, bob = User.make("alice"), User.make("bob", 2)
        for u in (alice, bob):
            pg.storage.run(relay.publish_device_list(u.list_body()))
            for d in u.devices:
                login(relay, pg.storage, d)
        return cls(pg, relay, alice, bob)

    def relying_job(self, kind: str) -> tuple[Callable[[Tx], Any], str]:
        """A job of bob's device 2, or of Alice to it, and the Tx method after which it has
        read what it relies on (and locked it)."""
        relay, leaving = self.relay, self.bob.devices[1]
        if kind == "login":
            who = codec.encode({0: b"bob", 1: leaving.device_id})
            challenge = codec.decode(relay.challenge(who), max_size=1024)[0]
            payload = api.login_payload(relay.config.origin, challenge, "bob", 2)
            body = codec.encode({0: b"bob", 1: 2, 2: challenge, 3: leaving.sign_login(payload)})
            return relay.login(body), "device_list"
        if kind == "send to it":
            sender = self.alice.devices[0]
            body = send_body(self.bob, os.urandom(16), sender)
            return relay.send(sender.token, body), "device_list"
        if kind == "send from it":  # its stored result is the sending device's
            body = send_body(self.alice, os.urandom(16), leaving)
            return relay.send(leaving.token, body), "token"
        if kind == "claim from it":  # so is a claim's
            body = codec.encode({0: b"alice", 1: os.urandom(16)})
            return relay.claim(leaving.token, body), "token"
        assert kind == "upload"
        upload = leaving.upload_body(one_time=5, kem=5)
        checked = relay.check_upload(self.pg.storage.run(relay.auth_job(leaving.token)), upload)
        return relay.store_upload(leaving.token, checked), "token"

    def removal(self) -> Callable[[Tx], Any]:
        """The publication of bob's list without device 2."""
        removed = self.bob.devices.pop()
        self.bob.counter += 1
        job = self.relay.publish_device_list(self.bob.list_body())
        self.bob.devices.append(removed)  # the old list, for building the relying job
        return job


RELYING = ("login", "send to it", "send from it", "upload", "claim from it")
REFUSED = {
    "login": RelayAuthError,
    "send to it": MismatchedDevicesError,
    "send from it": RelayAuthError,
    "upload": RelayAuthError,
    "claim from it": RelayAuthError,
}


@pytest.mark.parametrize(
    "stopped", ["relying job", "publication after its read", "publication after its purge"]
)
@pytest.mark.parametrize("kind", RELYING)
def test_a_device_list_publication_and_a_job_relying_on_the_old_list_are_ordered(
    pg: Pg, kind: str, stopped: str
) -> None:
    """[REQ-RL-04] [REQ-RL-17] [REQ-RL-34] Bob publishes a list without device 2 while a job
    relies on the old list or on device 2's token: device 2 logs in, Alice sends to both
    devices, device 2 sends to Alice or claims her keys (each stores a result owned by device
    2), device 2 uploads keys. Either the job committed first (stopped right after its read, it
    holds the lock the publication waits for) and the purge then deletes what it stored, or the
    job waits for the publication and is refused. Either way device 2 ends with no token,
    message, key, result or device row, and nothing deadlocked (no job was run again). Without
    its lock, each job's row for device 2 outlived the purge."""
    world = World.make(pg)
    relying, read = world.relying_job(kind)
    removal = world.removal()
    if stopped == "relying job":
        first, second = Running(pg.storage, relying, read), Running(pg.storage, removal)
    else:
        after = "device_list" if stopped == "publication after its read" else "purge_device"
        first, second = Running(pg.storage, removal, after), Running(pg.storage, relying)
    first.start()
    second.start()
    finished_or_waiting(pg, second)
    first.go()
    first.join()
    second.join()
    job_run = first if stopped == "relying job" else second
    publication = second if stopped == "relying job" else first
    assert publication.error is None
    assert sorted(pg.storage.run(lambda tx: tx.device_list("bob")).devices) == [1]  # type: ignore[union-attr]
    tokens = [world.bob.devices[1].token]
    if kind == "login" and job_run.value is not None:
        tokens.append(codec.decode(job_run.value, max_size=1024)[0])
    for token in tokens:
        with pytest.raises(RelayAuthError):
            pg.storage.run(world.relay.auth_job(token))
    for table in ("tokens", "messages", "one_time", "devices", "results"):
        assert pg.rows(f"SELECT * FROM {table} WHERE usr = 'bob' AND device = 2") == [], table
    assert pg.rows("SELECT queued FROM counters WHERE usr = 'bob' AND device = 2") == [(0,)]
    if stopped == "relying job":
        assert job_run.error is None  # it committed before the publication
    else:
        assert isinstance(job_run.error, REFUSED[kind]), job_run.error  # it saw the new list
    assert pg.storage.retries == 0


@pytest.mark.parametrize(
    "stopped",
    ["claim after its read", "claim after it took a key", "publication after its purge"],
)
def test_a_claim_needs_no_lock_on_its_target_list(pg: Pg, stopped: str) -> None:
    """[REQ-RL-17] [REQ-RL-34] Alice claims Bob's keys while Bob publishes a list without
    device 2, the only one with keys. The claim reads Bob's list without a lock: it stores
    nothing for Bob's devices, it only deletes their one-time keys (SKIP LOCKED), so in every
    order device 2 ends with no key or device row, the claim is served (device 2's bundle, with
    a one-time key only if the claim took it before the purge; none once the purge committed)
    and nothing deadlocked or ran again."""
    world = World.make(pg)
    leaving = world.bob.devices[1]
    checked = world.relay.check_upload(
        pg.storage.run(world.relay.auth_job(leaving.token)), leaving.upload_body(5, 5)
    )
    pg.storage.run(world.relay.store_upload(leaving.token, checked))
    claim = world.relay.claim(
        world.alice.devices[0].token, codec.encode({0: b"bob", 1: os.urandom(16)})
    )
    removal = world.removal()
    if stopped == "publication after its purge":
        first, second = Running(pg.storage, removal, "purge_device"), Running(pg.storage, claim)
    else:
        after = "device_list" if stopped == "claim after its read" else "claim_one_time"
        first, second = Running(pg.storage, claim, after), Running(pg.storage, removal)
    first.start()
    second.start()
    state = finished_or_waiting(pg, second)
    # only a publication stopped after it took a key waits (the purge, for that key's row)
    assert state == ("waiting" if stopped == "claim after it took a key" else "finished")
    first.go()
    first.join()
    second.join()
    assert first.error is None
    assert second.error is None
    served = first if first.job is claim else second
    answer = codec.decode(served.value, max_size=1 << 20)
    bundles = {device: codec.decode(bundle, max_size=1 << 20) for device, bundle in answer[0]}
    # it read the old list each time; what it found of device 2 depends on the order
    if stopped == "claim after its read":
        assert (bundles, answer[1]) == ({}, [1, 2])  # purged before the claim read it
    else:
        assert list(bundles) == [2]
        assert answer[1] == [1]  # device 1 uploaded nothing
        # a one-time key if the claim took it first; the purge's keys are locked, skipped
        assert (9 in bundles[2]) == (stopped == "claim after it took a key")
    for table in ("one_time", "devices"):
        assert pg.rows(f"SELECT * FROM {table} WHERE usr = 'bob' AND device = 2") == [], table
    assert pg.storage.retries == 0


def test_racing_publications_of_one_user_store_the_newer_list(pg: Pg) -> None:
    """[REQ-RL-05] [REQ-RL-34] Bob publishes list 2, stopped right after it read list 1, and
    list 3 meanwhile: list 3 waits for list 2 and checks its counter against it. Unordered, list
    2 was stored over list 3 (both accepted), bringing an older list back."""
    relay = pg.relay()
    bob = User.make("bob", 3)
    pg.storage.run(relay.publish_device_list(bob.list_body()))
    bob.counter = 2
    older = relay.publish_device_list(bob.list_body())
    third = bob.devices.pop()
    bob.counter = 3
    newer = relay.publish_device_list(bob.list_body())
    first = Running(pg.storage, older, "device_list").start()
    second = Running(pg.storage, newer).start()
    finished_or_waiting(pg, second)
    first.go()
    first.join()
    second.join()
    assert first.error is None
    assert second.error is None
    stored = pg.storage.run(lambda tx: tx.device_list("bob"))
    assert stored is not None
    assert stored.counter == 3
    assert sorted(stored.devices) == [1, 2]
    assert pg.rows("SELECT * FROM devices WHERE usr = 'bob' AND device = %s", third.device_id) == []


# --- claim rate limit (REQ-RL-11, REQ-RL-24) ---------------------------------------------------

BURST = 2


def _alice_claims_bob(pg: Pg) -> tuple[Relay, Callable[[], Callable[[Tx], Any]]]:
    """Alice and Bob registered and logged in on a relay with a claim burst of BURST that
    practically never refills, Bob with 20 one-time keys: the relay, and a maker of Alice's
    claim jobs."""
    relay = pg.relay(claim_burst=BURST, claim_rate=0.001)
    alice, bob = User.make("alice"), User.make("bob")
    for u in (alice, bob):
        pg.storage.run(relay.publish_device_list(u.list_body()))
        login(relay, pg.storage, u.devices[0])
    bob_device = bob.devices[0]
    checked = relay.check_upload(
        pg.storage.run(relay.auth_job(bob_device.token)), bob_device.upload_body(one_time=20)
    )
    pg.storage.run(relay.store_upload(bob_device.token, checked))

    def claim() -> Callable[[Tx], Any]:
        return relay.claim(alice.devices[0].token, codec.encode({0: b"bob", 1: os.urandom(16)}))

    return relay, claim


@pytest.mark.parametrize("bucket", ["new pair", "dropped by the sweep"])
def test_concurrent_claims_beyond_the_burst_are_refused_while_no_bucket_row_exists(
    pg: Pg, bucket: str
) -> None:
    """[REQ-RL-11] [REQ-RL-24] Three claims of Alice for Bob's keys, burst 2, while no bucket
    row exists (the pair's first claims, or the first ones after the sweep dropped an idle
    bucket): the first stops right after it read the bucket, the two others run meanwhile.
    They wait for it and take the tokens it left, so two are served and one is refused. With
    nothing to lock, each saw a full bucket and all three were served."""
    relay, claim = _alice_claims_bob(pg)
    served_before = 0
    if bucket == "dropped by the sweep":
        pg.storage.run(claim())
        served_before = 1
        pg.clock.advance(BURST / 0.001 + 1)  # idle long enough to be full again
        pg.storage.run(relay.sweep())
    assert pg.rows("SELECT * FROM buckets") == []

    first = Running(pg.storage, claim(), "bucket").start()
    others = []
    for _ in range(2):
        other = Running(pg.storage, claim()).start()
        finished_or_waiting(pg, other)
        others.append(other)
    first.go()
    runs = [first, *others]
    for run in runs:
        run.join()
    served = [run for run in runs if run.error is None]
    refused = [run for run in runs if run.error is not None]
    assert len(served) == BURST
    assert len(refused) == 1
    assert isinstance(refused[0].error, RelayRateLimitedError)
    with pytest.raises(RelayRateLimitedError):
        pg.storage.run(claim())
    left = pg.rows("SELECT count(*) FROM one_time WHERE usr = 'bob' AND kind = 0")
    assert left == [(20 - served_before - BURST,)]
    assert pg.storage.retries == 0


def test_a_concurrent_second_registration_of_a_user_id_is_checked_against_the_first(
    pg: Pg,
) -> None:
    """[REQ-RL-05] [REQ-RL-34] Two first lists for "bob" under different user keys: one stops
    right after it found no stored list, the other registers meanwhile. The first is then
    checked against the stored registration and refused; before, with no row to lock, its
    upsert replaced the other registration's user key, both answered as registered."""
    relay = pg.relay()
    first_bob, second_bob = User.make("bob"), User.make("bob")
    first = Running(pg.storage, relay.publish_device_list(first_bob.list_body()), "device_list")
    second = Running(pg.storage, relay.publish_device_list(second_bob.list_body()))
    first.start()
    second.start()
    finished_or_waiting(pg, second)
    first.go()
    first.join()
    second.join()
    assert second.error is None
    assert isinstance(first.error, RelayForbiddenError), first.error
    assert first.error.code == "user_key_mismatch"
    stored = pg.storage.run(lambda tx: tx.device_list("bob"))
    assert stored is not None
    assert stored.user_key == second_bob.identity.public_key
    assert pg.storage.retries == 1  # the first failed on the key, and ran again


def test_concurrent_claims_beyond_the_burst_are_refused_while_the_bucket_row_exists(
    pg: Pg,
) -> None:
    """[REQ-RL-11] [REQ-RL-24] Alice's first claim of Bob's keys (burst 2) left a bucket row with
    one token; three more claims run at once, the first stopped right after it read the bucket.
    The others wait for its lock and then see the token it took, so one is served and two are
    refused. Read without FOR UPDATE, each saw the token and all three were served."""
    _, claim = _alice_claims_bob(pg)
    pg.storage.run(claim())
    assert len(pg.rows("SELECT * FROM buckets")) == 1  # one token left in it

    first = Running(pg.storage, claim(), "bucket").start()
    others = []
    for _ in range(2):
        other = Running(pg.storage, claim()).start()
        assert finished_or_waiting(pg, other) == "waiting"
        others.append(other)
    first.go()
    runs = [first, *others]
    for run in runs:
        run.join()
    assert first.error is None
    assert all(isinstance(run.error, RelayRateLimitedError) for run in others), others
    left = pg.rows("SELECT count(*) FROM one_time WHERE usr = 'bob' AND kind = 0")
    assert left == [(20 - BURST,)]
    assert pg.storage.retries == 0


# --- one-time keys and their high-water mark (REQ-RL-24) ----------------------------------------


def test_a_claim_skips_a_key_another_claim_holds_instead_of_waiting_for_it(pg: Pg) -> None:
    """[REQ-RL-08] [REQ-RL-24] Alice's claim of Bob's keys stops right after it took his lowest
    one-time key (its DELETE holds the row); Carol's claim meanwhile skips that key and takes
    the next one without waiting. Without SKIP LOCKED, Carol's claim waited for the first key,
    found it gone once Alice's claim committed, and was answered without a one-time key while
    four remained."""
    relay = pg.relay()
    alice, bob, carol = User.make("alice"), User.make("bob"), User.make("carol")
    for u in (alice, bob, carol):
        pg.storage.run(relay.publish_device_list(u.list_body()))
        login(relay, pg.storage, u.devices[0])
    bob_device = bob.devices[0]
    checked = relay.check_upload(
        pg.storage.run(relay.auth_job(bob_device.token)), bob_device.upload_body(one_time=5)
    )
    pg.storage.run(relay.store_upload(bob_device.token, checked))
    ids = [r[0] for r in pg.rows("SELECT id FROM one_time WHERE usr = 'bob' ORDER BY id")]
    assert len(ids) == 5

    def claim(claimer: User) -> Callable[[Tx], Any]:
        body = codec.encode({0: b"bob", 1: os.urandom(16)})
        return relay.claim(claimer.devices[0].token, body)

    first = Running(pg.storage, claim(alice), "claim_one_time").start()
    second = Running(pg.storage, claim(carol)).start()
    assert finished_or_waiting(pg, second) == "finished"
    first.go()
    first.join()
    assert first.error is None
    assert second.error is None

    def one_time_id(answer: bytes) -> int:
        [[device, bundle]] = codec.decode(answer, max_size=1 << 20)[0]
        assert device == 1
        key_id: int = codec.decode(bundle, max_size=1 << 20)[9]
        return key_id

    assert (one_time_id(first.value), one_time_id(second.value)) == (ids[0], ids[1])
    left = pg.rows("SELECT id FROM one_time WHERE usr = 'bob' ORDER BY id")
    assert [r[0] for r in left] == ids[2:]
    assert pg.storage.retries == 0


def test_a_claim_takes_the_lowest_key_whatever_plan_the_server_picks(pg: Pg) -> None:
    """[REQ-RL-24] A claim deletes the lowest-id key left. Keys stored out of id order lie in
    the table in that order; with index scans off the server reads them so, and the claims
    still hand them out in id order: the statement's ORDER BY, not the plan that happens to
    use the primary key, picks the key."""
    keys = [(i, bytes([i]) * 32, bytes([i]) * 64) for i in (5, 3, 9, 4)]
    pg.storage.run(lambda tx: tx.add_one_time("bob", 1, 0, keys))

    def claim(tx: Tx) -> Any:
        c: psycopg.Connection[Any] = tx.c  # type: ignore[attr-defined]
        for scan in ("indexscan", "indexonlyscan", "bitmapscan"):
            c.execute(f"SET LOCAL enable_{scan} = off".encode())
        return tx.claim_one_time("bob", 1, 0)

    assert [pg.storage.run(claim) for _ in range(5)] == [*sorted(keys), None]


def test_the_high_water_mark_is_read_for_update(pg: Pg) -> None:
    """[REQ-RL-24] A transaction that read a device's one-time key high-water mark holds it
    until it ends: another reader of that mark waits, so two uploads of one device cannot both
    accept ids against the same mark. (An upload also locks the device row when it stores its
    bundle just before; the mark's own lock does not depend on that order.)"""
    relay = pg.relay()
    bob = User.make("bob")
    pg.storage.run(relay.publish_device_list(bob.list_body()))

    def read_mark(tx: Tx) -> int:
        return tx.high_water("bob", 1, 0)

    first = Running(pg.storage, read_mark, "high_water").start()
    second = Running(pg.storage, read_mark).start()
    assert finished_or_waiting(pg, second) == "waiting"
    first.go()
    assert (first.join(), second.join()) == (0, 0)
    assert pg.storage.retries == 0


# --- message ids and the queue limit (REQ-RL-16, REQ-RL-26) -------------------------------------


def test_a_send_beyond_the_queue_limit_is_refused_while_another_send_is_running(pg: Pg) -> None:
    """[REQ-RL-16] [REQ-RL-26] Bob's queue holds at most one message; Alice's first send stops
    right after it read the queue length, her second runs meanwhile: it waits for the counter
    row the first locked, then sees the queue full. Read without FOR UPDATE, both saw an empty
    queue and both were stored."""
    relay = pg.relay(max_queue=1)
    alice, bob = User.make("alice"), User.make("bob")
    for u in (alice, bob):
        pg.storage.run(relay.publish_device_list(u.list_body()))
        login(relay, pg.storage, u.devices[0])
    sender = alice.devices[0]

    def send() -> Callable[[Tx], Any]:
        return relay.send(sender.token, send_body(bob, os.urandom(16), sender))

    first = Running(pg.storage, send(), "queue_length").start()
    second = Running(pg.storage, send()).start()
    assert finished_or_waiting(pg, second) == "waiting"
    first.go()
    first.join()
    second.join()
    assert first.error is None
    assert isinstance(second.error, QueueFullError), second.error
    assert pg.rows("SELECT id FROM messages WHERE usr = 'bob'") == [(1,)]
    assert pg.rows("SELECT seq, queued FROM counters WHERE usr = 'bob'") == [(1, 1)]
    assert pg.storage.retries == 0


def test_a_send_locks_its_recipients_counters_in_ascending_device_order(pg: Pg) -> None:
    """[REQ-RL-26] A send to Bob's two devices stops right after it locked its first counter
    row; the sweep meanwhile removes expired messages of both devices and updates their
    counters in ascending order. Locked in ascending order too, the send holds device 1's row:
    the sweep waits for it, and once the send commits the sweep goes on; nothing deadlocks or
    runs again. A send that locked device 2 first deadlocked with the sweep (one of them was run
    again)."""
    relay = pg.relay(message_ttl=10)
    alice, bob = User.make("alice"), User.make("bob", 2)
    for u in (alice, bob):
        pg.storage.run(relay.publish_device_list(u.list_body()))
        login(relay, pg.storage, u.devices[0])
    sender = alice.devices[0]
    pg.storage.run(relay.send(sender.token, send_body(bob, os.urandom(16), sender)))
    pg.clock.advance(11)  # the message to both devices has expired

    send = Running(
        pg.storage, relay.send(sender.token, send_body(bob, os.urandom(16), sender)), "queue_length"
    ).start()
    sweep = Running(pg.storage, relay.sweep()).start()
    assert finished_or_waiting(pg, sweep) == "waiting"
    send.go()
    send.join()
    sweep.join()
    assert send.error is None
    assert sweep.error is None
    assert sweep.value == Swept(2, False)
    assert pg.rows("SELECT device, id FROM messages WHERE usr = 'bob' ORDER BY device") == [
        (1, 2),
        (2, 2),
    ]
    assert pg.rows("SELECT device, queued FROM counters WHERE usr = 'bob' ORDER BY device") == [
        (1, 1),
        (2, 1),
    ]
    assert pg.storage.retries == 0
