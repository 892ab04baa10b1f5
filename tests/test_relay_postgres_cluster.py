"""Several ``e2ee relay serve`` processes on one PostgreSQL database (spec/relay.md, "PostgreSQL
storage"): a message accepted by one process reaches a WebSocket held by another (NOTIFY, sent
at commit only, its listener reconnecting when its connection is lost), claims through
different processes never hand a key out twice, a retried send raced through two processes is
stored once, SIGKILL of one process loses no acknowledged message, and processes starting
together migrate the schema once.

Needs a PostgreSQL server (``E2EE_TEST_POSTGRES_URL``; ``.ci/postgres.sh`` starts one): skipped
without one, failed without one in CI."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from websockets.sync.client import connect

from e2ee.client.envelope import Envelope
from e2ee.errors import RelayForbiddenError
from e2ee.relay import api
from e2ee.relay.postgres import MIGRATIONS, PostgresStorage, migrate
from e2ee.relay.storage import Tx
from e2ee.wire import codec
from tests.relay_support import (
    PROJECT_ROOT,
    RelayProcess,
    User,
    auth,
    drop_postgres_database,
    http_login,
    postgres_database,
    postgres_server_url,
    send_body,
)

PROCESSES = 3
PUSH_TIMEOUT = 5.0
"""Well below the WebSocket's idle re-read (25 s): a push this fast came from a wake-up."""


def dec(data: bytes) -> Any:
    return codec.decode(data, max_size=1 << 24)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RelayProcess]]:
    """Three relay processes on one fresh schema, started together (they migrate once)."""
    url = postgres_database()
    logs = tmp_path_factory.mktemp("cluster")
    procs = [
        RelayProcess(url, "--claim-burst", "1000", log=logs / f"relay{i}.log")
        for i in range(PROCESSES)
    ]
    try:
        for p in procs:
            p.launch()
        for p in procs:
            p.wait_ready()
        yield procs
    finally:
        for p in procs:
            p.stop()
        drop_postgres_database(url)


def register(url: str, *users: User) -> None:
    with httpx.Client(base_url=url, timeout=10) as http:
        for u in users:
            assert http.put(api.DEVICE_LIST, content=u.list_body()).status_code == 201
            for d in u.devices:
                http_login(http, d, url)


def test_a_message_accepted_by_one_process_wakes_a_websocket_on_another(
    cluster: list[RelayProcess],
) -> None:
    """[REQ-RL-25] Bob's two devices hold WebSockets on processes 2 and 3; Alice sends through
    process 1; both devices get every message pushed, in order, well before any idle re-read."""
    a, b, c = cluster
    alice, bob = User.make("alice"), User.make("bob", 2)
    register(a.url, alice, bob)
    ids = [os.urandom(16) for _ in range(5)]
    b1, b2 = bob.devices
    with (
        connect(f"ws://127.0.0.1:{b.port}{api.STREAM}", additional_headers=auth(b1)) as ws1,
        connect(f"ws://127.0.0.1:{c.port}{api.STREAM}", additional_headers=auth(b2)) as ws2,
        httpx.Client(base_url=a.url, timeout=10) as http,
    ):
        for mid in ids:
            started = time.monotonic()
            r = http.post(
                api.MESSAGES,
                content=send_body(bob, mid, alice.devices[0]),
                headers=auth(alice.devices[0]),
            )
            assert r.status_code == 200
            for ws in (ws1, ws2):
                frame = ws.recv(timeout=PUSH_TIMEOUT)
                assert isinstance(frame, bytes)
                pushed = dec(frame)
                assert Envelope.from_bytes(pushed[1]).message_id == mid
                ws.send(codec.encode({0: [pushed[0]]}))
            assert time.monotonic() - started < PUSH_TIMEOUT
    # the acks went through processes 2 and 3; process 1 sees both queues empty
    with httpx.Client(base_url=a.url, timeout=10) as http:
        for d in (b1, b2):
            deadline = time.monotonic() + 10
            while dec(http.get(api.MESSAGES, headers=auth(d)).content)[0]:
                assert time.monotonic() < deadline


def test_a_send_notifies_when_it_commits_and_never_when_it_is_rolled_back() -> None:
    """[REQ-RL-25] pg_notify runs inside the send's transaction: a job that enqueued for Bob's
    device 2 and was then refused (rolled back) notifies no one, and one that committed for his
    device 1 wakes that device's subscriber through the listening connection. Sent outside the
    transaction, the rolled-back job's notification was delivered too."""
    url = postgres_database()
    storage = PostgresStorage(url, pool_size=1)
    notifier = storage.notifier()

    def rolled_back(tx: Tx) -> None:
        tx.enqueue("bob", 2, b"envelope", 2**40)
        raise RelayForbiddenError("refused after it enqueued")

    async def main() -> None:
        committed, dropped = notifier.subscribe("bob", 1), notifier.subscribe("bob", 2)
        with pytest.raises(RelayForbiddenError):
            storage.run(rolled_back)
        storage.run(lambda tx: tx.enqueue("bob", 1, b"envelope", 2**40))
        assert await committed.wait(PUSH_TIMEOUT)
        # notifications arrive, and are dispatched, in commit order: one for the rolled-back
        # job would have woken its subscriber by now
        assert not dropped.event.is_set()
        assert notifier.received == 1

    try:
        asyncio.run(main())
    finally:
        notifier.close()
        storage.close()
        drop_postgres_database(url)


def test_a_lost_listening_connection_wakes_every_subscriber_and_is_made_again() -> None:
    """[REQ-RL-25] The server ends the listening connection: every subscriber of the process is
    woken (its WebSocket re-reads its queue, so a notification lost meanwhile delays a push but
    loses no message) and the listener connects again, so a send committed afterwards wakes its
    device. Without the wake-up, a message sent while the listener was away waited for the
    WebSocket's idle re-read."""
    url = postgres_database()
    name = "e2ee_listen_" + os.urandom(4).hex()
    storage = PostgresStorage(f"{url}&application_name={name}", pool_size=1)
    notifier = storage.notifier()
    listener = (
        b"SELECT pid FROM pg_stat_activity WHERE application_name = %s AND query LIKE 'LISTEN%%'"
    )

    async def main(monitor: psycopg.Connection[Any]) -> None:
        bob, carol = notifier.subscribe("bob", 1), notifier.subscribe("carol", 1)
        [(pid,)] = monitor.execute(listener, (name,)).fetchall()
        monitor.execute(b"SELECT pg_terminate_backend(%s)", (pid,))
        assert await bob.wait(PUSH_TIMEOUT)
        assert await carol.wait(PUSH_TIMEOUT)
        [(again,)] = monitor.execute(listener, (name,)).fetchall()
        assert again != pid
        storage.run(lambda tx: tx.enqueue("bob", 1, b"envelope", 2**40))
        assert await bob.wait(PUSH_TIMEOUT)
        assert not carol.event.is_set()

    try:
        with psycopg.connect(postgres_server_url(), autocommit=True) as monitor:
            asyncio.run(main(monitor))
    finally:
        notifier.close()
        storage.close()
        drop_postgres_database(url)


def test_claims_through_different_processes_issue_each_key_once(
    cluster: list[RelayProcess],
) -> None:
    """[REQ-RL-08] [REQ-RL-24] Six claiming processes, two per relay process, make 90 claims for
    60 keys of each kind: every key exactly once, then the last-resort key."""
    keys, per_relay, attempts = 60, 2, 15
    target = User.make("target")
    register(cluster[0].url, target)
    with httpx.Client(base_url=cluster[0].url, timeout=10) as http:
        r = http.put(
            api.KEYS,
            content=target.devices[0].upload_body(keys, keys),
            headers=auth(target.devices[0]),
        )
        assert dec(r.content)[0] == keys
    env = dict(os.environ, PYTHONPATH=f"{PROJECT_ROOT}:{PROJECT_ROOT / 'src'}")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.relay_support",
                "claim",
                relay.url,
                f"claimer{n}x{i}",
                "target",
                str(attempts),
                os.urandom(32).hex(),
            ],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for n, relay in enumerate(cluster)
        for i in range(per_relay)
    ]
    results: list[int] = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()[-2000:]
        results += [int(line) for line in out.decode().split()]
    total = len(cluster) * per_relay * attempts
    assert len(results) == total
    issued = [i for i in results if i != -1]
    assert len(issued) == len(set(issued)) == keys
    assert results.count(-1) == total - keys
    with httpx.Client(base_url=cluster[2].url, timeout=10) as http:
        counts = dec(http.get(api.KEYS, headers=auth(target.devices[0])).content)
        assert (counts[0], counts[1]) == (0, 0)


def test_a_send_raced_through_two_processes_is_stored_once(cluster: list[RelayProcess]) -> None:
    """[REQ-RL-13] [REQ-RL-23] [REQ-RL-26] The same send (same client message id) posted at once
    to two processes: both are answered 200, the message is stored once, ids 1..20 per device."""
    alice, bob = User.make("alice2"), User.make("bob2")
    register(cluster[0].url, alice, bob)
    bodies = [send_body(bob, os.urandom(16), alice.devices[0]) for _ in range(20)]
    statuses: list[int] = []
    lock = threading.Lock()

    def post_all(url: str) -> None:
        with httpx.Client(base_url=url, timeout=10) as http:
            for body in bodies:
                r = http.post(api.MESSAGES, content=body, headers=auth(alice.devices[0]))
                with lock:
                    statuses.append(r.status_code)

    threads = [threading.Thread(target=post_all, args=(r.url,)) for r in cluster[:2]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert statuses == [200] * 40
    with httpx.Client(base_url=cluster[2].url, timeout=10) as http:
        rows = dec(
            http.get(api.MESSAGES, params={"limit": 500}, headers=auth(bob.devices[0])).content
        )[0]
    assert len(rows) == 20
    assert [r[0] for r in rows] == list(range(1, 21))  # per-device ids, no gaps, no reuse


def _stored_ids(url: str, device: Any) -> list[bytes]:
    found: list[bytes] = []
    after = 0
    with httpx.Client(base_url=url, timeout=10) as http:
        while True:
            page = dec(
                http.get(
                    api.MESSAGES, params={"after": after, "limit": 500}, headers=auth(device)
                ).content
            )
            for mid, envelope in page[0]:
                found.append(Envelope.from_bytes(envelope).message_id)
                after = mid
            if not page[1]:
                return found


def test_killing_one_process_loses_no_acknowledged_message(
    cluster: list[RelayProcess], tmp_path: Path
) -> None:
    """[REQ-RL-21] [REQ-RL-26] Senders post through processes 1 and 2; process 1 is SIGKILLed
    after a random number of acknowledged sends while the other processes go on; every
    acknowledged message is in the database once, read through process 3."""
    alice, bob = User.make("alice3"), User.make("bob3")
    register(cluster[0].url, alice, bob)
    victim = cluster[0]
    acked: set[bytes] = set()
    attempted: set[bytes] = set()
    lock = threading.Lock()
    kill_after = 60 + secrets.randbelow(60)
    killed = threading.Event()
    survivors_after_kill = threading.Event()

    def sender(url: str, is_victim: bool) -> None:
        sent_after_kill = 0
        with httpx.Client(base_url=url, timeout=5) as http:
            while sent_after_kill < 30:
                mid = os.urandom(16)
                with lock:
                    attempted.add(mid)
                try:
                    r = http.post(
                        api.MESSAGES,
                        content=send_body(bob, mid, alice.devices[0]),
                        headers=auth(alice.devices[0]),
                    )
                except httpx.HTTPError:
                    if is_victim:
                        return
                    raise
                assert r.status_code == 200
                with lock:
                    # Decided under the lock: an answer that arrived before the kill must not
                    # count as sent after it.
                    after_kill = killed.is_set()
                    acked.add(mid)
                    if len(acked) >= kill_after and not killed.is_set():
                        victim.kill()
                        killed.set()
                if after_kill:
                    if is_victim:
                        continue  # keep going until the dead process refuses the connection
                    sent_after_kill += 1
        survivors_after_kill.set()

    threads = [
        threading.Thread(target=sender, args=(cluster[0].url, True)),
        threading.Thread(target=sender, args=(cluster[0].url, True)),
        threading.Thread(target=sender, args=(cluster[1].url, False)),
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads)
        assert killed.is_set()
        assert survivors_after_kill.is_set()
        stored = _stored_ids(cluster[2].url, bob.devices[0])
        assert len(stored) == len(set(stored))
        assert acked <= set(stored)
        assert set(stored) <= attempted
        assert len(acked) >= kill_after + 30
    finally:
        victim.start()  # the module's later users get all three processes back


def test_migrations_are_versioned_and_applied_once(cluster: list[RelayProcess]) -> None:
    """[REQ-RL-27] The three processes started together on an empty schema left one row per
    migration; migrating again changes nothing; a schema at an older version is brought up to
    date by the missing migrations only."""
    import psycopg

    url = cluster[0].db
    with psycopg.connect(url, autocommit=True) as conn:
        versions = [r[0] for r in conn.execute(b"SELECT version FROM schema_version ORDER BY 1")]
        assert versions == [v for v, _ in MIGRATIONS]
        assert migrate(conn) == MIGRATIONS[-1][0]
        again = [r[0] for r in conn.execute(b"SELECT version FROM schema_version ORDER BY 1")]
        assert again == versions
    fresh = postgres_database()
    try:
        with psycopg.connect(fresh, autocommit=True) as conn:
            conn.execute(
                b"CREATE TABLE schema_version (version INTEGER PRIMARY KEY, "
                b"applied TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            conn.execute(MIGRATIONS[0][1].encode())
            conn.execute(b"INSERT INTO schema_version (version) VALUES (1)")
            conn.execute(b"INSERT INTO meta VALUES ('kept', 'x')")
            assert migrate(conn) == MIGRATIONS[-1][0]
            assert conn.execute(b"SELECT value FROM meta WHERE name = 'kept'").fetchone() == (b"x",)
            assert conn.execute(b"SELECT count(*) FROM schema_version").fetchone() == (
                len(MIGRATIONS),
            )
            # Migration 2: the sweep's batches (REQ-RL-41) can walk an index on expires.
            found = conn.execute(
                b"SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
            ).fetchall()
            assert {
                "challenges_by_expiry",
                "tokens_by_expiry",
                "results_by_expiry",
                "messages_by_expiry",
            } <= {r[0] for r in found}
            conn.execute(b"SET enable_seqscan = off")  # an empty table: ask what it could use
            for table in ("challenges", "tokens", "results"):
                plan = conn.execute(
                    f"EXPLAIN SELECT ctid FROM {table} WHERE expires <= 1 LIMIT 10".encode()
                ).fetchall()
                assert any(f"{table}_by_expiry" in row[0] for row in plan), plan
    finally:
        drop_postgres_database(fresh)


def test_a_migration_waits_for_one_in_progress_and_then_applies_nothing() -> None:
    """[REQ-RL-27] One process's migration of an empty schema has not committed yet; another
    process's migration waits for it (the transaction-scoped advisory lock), then finds every
    version applied and applies nothing. Without the lock the second one created the same
    tables and failed once the first committed, so of relay processes started together some
    did not start."""
    fresh = postgres_database()
    outcome: dict[str, object] = {}
    try:
        with (
            psycopg.connect(fresh) as first,
            psycopg.connect(fresh) as second,
            psycopg.connect(postgres_server_url(), autocommit=True) as monitor,
        ):
            first.execute(b"SELECT 1")  # a transaction left open: the migration runs inside it
            assert migrate(first) == MIGRATIONS[-1][0]

            def run() -> None:
                try:
                    outcome["version"] = migrate(second)
                except Exception as exc:
                    outcome["error"] = exc

            thread = threading.Thread(target=run, daemon=True)
            thread.start()
            pid = second.info.backend_pid
            deadline = time.monotonic() + 15
            while not monitor.execute(
                b"SELECT cardinality(pg_blocking_pids(%s)) > 0", (pid,)
            ).fetchone()[0]:  # type: ignore[index]
                assert thread.is_alive(), outcome  # it must wait, not finish or fail
                assert time.monotonic() < deadline, "the second migration did not wait"
                time.sleep(0.005)  # polling an observed state: the outcome does not depend on it
            first.commit()
            thread.join(15)
            assert not thread.is_alive()
            assert outcome == {"version": MIGRATIONS[-1][0]}
            versions = second.execute(b"SELECT version FROM schema_version ORDER BY 1")
            assert [r[0] for r in versions] == [v for v, _ in MIGRATIONS]
    finally:
        drop_postgres_database(fresh)
