"""Read-only relay jobs write nothing on PostgreSQL (spec/relay.md REQ-RL-34).

A row lock is a write in PostgreSQL: the locking transaction takes a transaction id and records
it in the row, which writes WAL, and its commit then writes a commit record and waits for a WAL
flush. So only the jobs that store something for a device on the strength of its list or its
token lock its user's row; a fetch (GET /v1/messages), the WebSocket's pending read, a list or
key-count read, an authentication check and an ack of nothing left to delete take no
transaction id and write no WAL. Each job is first run once (its first reader sets the hint
bits of rows written just before), then measured: no WAL written by ``JOBS`` runs in at least
one of ``ROUNDS`` rounds, each started when no autovacuum worker runs (the WAL position is the
whole server's: in one CI run something else wrote 90 to 180 KB into each of three rounds,
most likely autovacuum on the tables earlier tests filled, and other background records may
land in a round; the locking reads wrote 150 to 210 bytes per job in every round), and no
transaction id assigned in the job's transaction. A failure names the backends that were busy.

Needs a PostgreSQL server (``E2EE_TEST_POSTGRES_URL``; ``.ci/postgres.sh`` starts one): skipped
without one, failed without one in CI."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from e2ee.relay.postgres import PostgresStorage
from e2ee.relay.rules import Relay
from e2ee.relay.storage import Tx
from e2ee.wire import codec
from tests.relay_support import (
    User,
    drop_postgres_database,
    login,
    make_relay,
    postgres_database,
    postgres_server_url,
    send_body,
)

JOBS = 20
ROUNDS = 5
QUIET_WAIT = 60.0


@dataclass
class World:
    storage: PostgresStorage
    relay: Relay
    monitor: psycopg.Connection[Any]
    jobs: dict[str, Callable[[], Callable[[Tx], Any]]]
    send: Callable[[], Callable[[Tx], Any]]

    def background(self) -> list[str]:
        """The server's other busy backends (their type and state): what may write WAL too."""
        rows = self.monitor.execute(
            b"SELECT backend_type || ':' || coalesce(state, '') FROM pg_stat_activity"
            b" WHERE pid <> pg_backend_pid() AND (backend_type = 'autovacuum worker'"
            b" OR state = 'active')"
        ).fetchall()
        return [row[0] for row in rows]

    def quiet(self) -> None:
        """Wait until no autovacuum worker runs (a poll, bounded by QUIET_WAIT)."""
        deadline = time.monotonic() + QUIET_WAIT
        while any(kind.startswith("autovacuum") for kind in self.background()):
            if time.monotonic() > deadline:
                return  # measure anyway: the assertion's message names what was running
            time.sleep(0.05)

    def wal_bytes(self, make_job: Callable[[], Callable[[Tx], Any]]) -> int:
        """WAL the server inserted while ``JOBS`` such jobs ran, each in its own transaction."""
        self.quiet()
        lsn = b"SELECT pg_current_wal_insert_lsn()"
        start = self.monitor.execute(lsn).fetchone()
        for _ in range(JOBS):
            self.storage.run(make_job())
        row = self.monitor.execute(
            b"SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s)", (start[0] if start else 0,)
        ).fetchone()
        assert row is not None
        return int(row[0])

    def transaction_id(self, job: Callable[[Tx], Any]) -> Any:
        """The transaction id the job's transaction took, None if it took none."""

        def probe(tx: Tx) -> Any:
            job(tx)
            c: psycopg.Connection[Any] = tx.c  # type: ignore[attr-defined]
            row = c.execute(b"SELECT pg_current_xact_id_if_assigned()").fetchone()
            return None if row is None else row[0]

        return self.storage.run(probe)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    url = postgres_database()
    storage = PostgresStorage(url, pool_size=2)
    monitor = psycopg.connect(postgres_server_url(), autocommit=True)
    try:
        relay = make_relay(storage)
        alice, bob, carol = User.make("alice"), User.make("bob"), User.make("carol")
        for u in (alice, bob, carol):
            storage.run(relay.publish_device_list(u.list_body()))
            login(relay, storage, u.devices[0])
        a, b = alice.devices[0], bob.devices[0]
        checked = relay.check_upload(storage.run(relay.auth_job(b.token)), b.upload_body(5, 5))
        storage.run(relay.store_upload(b.token, checked))
        # Bob's queue: one message, acknowledged (empty now); Alice's: one message, queued
        storage.run(relay.send(a.token, send_body(bob, os.urandom(16), a)))
        page = codec.decode(storage.run(relay.fetch(b.token, 0, 100)), max_size=1 << 20)
        acked = [row[0] for row in page[0]]
        assert storage.run(relay.ack_ids(b.token, acked)) == codec.encode({0: 1})
        storage.run(relay.send(b.token, send_body(alice, os.urandom(16), b)))
        jobs: dict[str, Callable[[], Callable[[Tx], Any]]] = {
            "fetch (empty queue)": lambda: relay.fetch(b.token, 0, 100),
            "fetch (a queued message)": lambda: relay.fetch(a.token, 0, 100),
            "pending (empty queue)": lambda: relay.pending(b.token, 0, 100),
            "get_device_list": lambda: relay.get_device_list(b.token, "alice"),
            "key_counts": lambda: relay.key_counts(b.token),
            "auth_job": lambda: relay.auth_job(b.token),
            "ack (already acknowledged)": lambda: relay.ack_ids(b.token, acked),
        }
        yield World(
            storage,
            relay,
            monitor,
            jobs,
            lambda: relay.send(a.token, send_body(carol, os.urandom(16), a)),  # not read
        )
    finally:
        monitor.close()
        storage.close()
        drop_postgres_database(url)


READ_ONLY = (
    "fetch (empty queue)",
    "fetch (a queued message)",
    "pending (empty queue)",
    "get_device_list",
    "key_counts",
    "auth_job",
    "ack (already acknowledged)",
)


@pytest.mark.parametrize("name", READ_ONLY)
def test_a_read_only_job_takes_no_transaction_id_and_writes_no_wal(world: World, name: str) -> None:
    """[REQ-RL-34] A read-only job reads the token and lists without a row lock: its
    transaction takes no transaction id and writes no WAL, so its commit flushes nothing. With
    every read locking ``FOR SHARE`` each of these jobs wrote a row-lock record and a commit
    record (150 to 210 WAL bytes) and waited for a WAL flush."""
    make_job = world.jobs[name]
    world.storage.run(make_job())  # the first read of fresh rows sets their hint bits
    written: list[int] = []
    for _ in range(ROUNDS):
        written.append(world.wal_bytes(make_job))
        if written[-1] == 0:
            break
    assert min(written) == 0, (
        f"{name}: {written} WAL bytes per {JOBS} jobs; also running: {world.background()}"
    )
    assert world.transaction_id(make_job()) is None


def test_the_measurement_sees_a_writing_job(world: World) -> None:
    """[REQ-RL-34] The control: a send (to a queue no other test reads) writes, and both
    measurements see it."""
    assert world.transaction_id(world.send()) is not None
    assert min(world.wal_bytes(world.send) for _ in range(ROUNDS)) > 0
