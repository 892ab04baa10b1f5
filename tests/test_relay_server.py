"""Against a real ``e2ee relay serve`` process (uvicorn on loopback, a SQLite file or a
PostgreSQL schema): end to end
with the client layer, security cases, what the database file holds, crash safety under SIGKILL,
and concurrent claims from several processes."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2ee.client import Client, Message
from e2ee.client.envelope import Envelope
from e2ee.relay import api
from e2ee.relay.client import RelayClient
from e2ee.relay.postgres import PostgresStorage
from e2ee.wire import codec
from tests.client_support import SMALL_PREKEYS
from tests.relay_support import (
    PROJECT_ROOT,
    RelayProcess,
    User,
    auth,
    drop_postgres_database,
    dumped_bytes,
    http_login,
    postgres_database,
    postgres_dump,
    relay_process,
    send_body,
)

CRASH_ROUNDS = int(os.environ.get("E2EE_RELAY_CRASH_ROUNDS", "2"))
"""SIGKILL rounds; set higher locally for a deeper run."""


def dec(data: bytes) -> Any:
    return codec.decode(data, max_size=1 << 24)


SERVER_SETUPS = ("sqlite", "postgres", "sqlite-fast")
"""Storage, and the HTTP stack when not the default h11 (``--stack fast``)."""


@pytest.fixture(scope="module", params=SERVER_SETUPS)
def relay_setup(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def relay_db(relay_setup: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path | str]:
    """A SQLite file, or the URL of a fresh PostgreSQL schema."""
    if relay_setup.startswith("sqlite"):
        yield tmp_path_factory.mktemp("relay") / "relay.sqlite"
        return
    url = postgres_database()
    yield url
    drop_postgres_database(url)


@pytest.fixture(scope="module")
def server(
    relay_setup: str, relay_db: Path | str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RelayProcess]:
    log = tmp_path_factory.mktemp("relaylog") / "relay.log"
    stack = relay_setup.partition("-")[2] or "h11"
    with relay_process(relay_db, "--claim-burst", "1000", "--stack", stack, log=log) as srv:
        yield srv


def stored_bytes(db: Path | str) -> list[bytes]:
    """What the relay's database holds: the SQLite files, or every value of every table."""
    if isinstance(db, Path):
        files = [p for p in db.parent.iterdir() if p.name.startswith(db.name)]
        assert files
        return [p.read_bytes() for p in files]
    storage = PostgresStorage(db, pool_size=1)
    try:
        return [dumped_bytes(storage.run(postgres_dump))]
    finally:
        storage.close()


# --- end to end ------------------------------------------------------------------------------


def _user(root: Path, name: str, url: str) -> tuple[list[Client], list[RelayClient]]:
    first = Client.create(root / f"{name}1.sqlite", name, prekey_policy=SMALL_PREKEYS)
    second = Client.create_linked(root / f"{name}2.sqlite", name, prekey_policy=SMALL_PREKEYS)
    second.complete_link(first.approve_link(second.link_request(), second.link_code))
    relays = [RelayClient(url, c) for c in (first, second)]
    assert relays[0].publish_device_list()  # registers the user with its list of two
    for r in relays:
        r.publish_prekeys()
    return [first, second], relays


def _bodies(messages: list[Message]) -> list[bytes]:
    return [m.body for m in messages]


def test_two_users_with_two_devices_talk_through_the_relay(
    server: RelayProcess, relay_db: Path | str, tmp_path: Path
) -> None:
    """[REQ-RL-12] [REQ-RL-14] [REQ-RL-15] [REQ-RL-20] End to end over HTTP and the WebSocket,
    and the relay's database file never holds a plaintext."""
    marker = secrets.token_hex(8).encode()
    (a1, a2), (ra1, ra2) = _user(tmp_path, "alice", server.url)
    (b1, b2), (rb1, rb2) = _user(tmp_path, "bob", server.url)
    sent = [b"alice says %d " % i + marker for i in range(3)]
    for body in sent:
        ra1.send("bob", body)
    assert _bodies([r.message for r in rb1.receive().results if r.message]) == sent
    streamed: list[bytes] = []
    for _, result in rb2.stream(idle_timeout=10.0):
        assert result is not None
        assert result.message is not None
        streamed.append(result.message.body)
        if len(streamed) == len(sent):
            break
    assert streamed == sent
    assert _bodies([r.message for r in ra2.receive().results if r.message]) == sent  # own copies
    reply = b"bob replies " + marker
    rb2.send("alice", reply)
    for r in (ra1, ra2):
        assert _bodies([x.message for x in r.receive().results if x.message]) == [reply]
    assert _bodies([x.message for x in rb1.receive().results if x.message]) == [reply]
    for r in (ra1, ra2, rb1, rb2):  # everything was acknowledged: queues are empty
        report = r.receive()
        assert report.results == []
        assert report.acked == 0
    # what the relay stores on disk: ciphertext only
    for data in stored_bytes(relay_db):
        assert len(data) > 1000
        assert marker not in data
        for body in [*sent, reply]:
            assert body not in data
    for r in (ra1, ra2, rb1, rb2):
        r.close()
    for c in (a1, a2, b1, b2):
        c.close()


# --- security over the real process ----------------------------------------------------------


def test_security_cases_over_the_real_relay(server: RelayProcess) -> None:
    """[REQ-RL-02] [REQ-RL-06] [REQ-RL-07] [REQ-RL-15] [REQ-RL-18] [REQ-RL-19]"""
    eve, carol = User.make("eve"), User.make("carol", 2)
    with httpx.Client(base_url=server.url, timeout=10) as http:
        assert http.put(api.DEVICE_LIST, content=eve.list_body()).status_code == 201
        assert http.put(api.DEVICE_LIST, content=carol.list_body()).status_code == 201
        device = eve.devices[0]
        who = codec.encode({0: b"eve", 1: 1})
        challenge = dec(http.post(api.CHALLENGE, content=who).content)[0]
        payload = api.login_payload(server.url, challenge, "eve", 1)
        login = codec.encode({0: b"eve", 1: 1, 2: challenge, 3: device.sign_login(payload)})
        assert http.post(api.LOGIN, content=login).status_code == 200
        r = http.post(api.LOGIN, content=login)  # replayed
        assert r.status_code == 401
        assert dec(r.content)[0] == b"challenge_replayed"
        http_login(http, device, server.url)
        for d in carol.devices:
            http_login(http, d, server.url)
        # bad signature on an uploaded key; too many keys in one batch
        body = dec(device.upload_body(2, 2))
        body[2][0][2] = bytes(64)
        r = http.put(api.KEYS, content=codec.encode(body), headers=auth(device))
        assert r.status_code == 400
        assert dec(r.content)[0] == b"bad_signature"
        r = http.put(api.KEYS, content=device.upload_body(101, 0), headers=auth(device))
        assert r.status_code == 413
        assert dec(r.content)[0] == b"too_many_keys"
        # malformed and oversized bodies
        assert http.post(api.MESSAGES, content=b"\x00", headers=auth(device)).status_code == 400
        r = http.post(api.CLAIM, content=b"\0" * 20_000, headers=auth(device))
        assert r.status_code == 413
        # another device's queue can be neither read nor acknowledged
        http.post(
            api.MESSAGES, content=send_body(carol, os.urandom(16), device), headers=auth(device)
        )
        c1, c2 = carol.devices
        rows = dec(http.get(api.MESSAGES, headers=auth(c1)).content)[0]
        assert len(rows) == 1
        r = http.post(api.ACK, content=codec.encode({0: [rows[0][0]]}), headers=auth(device))
        assert dec(r.content)[0] == 0
        rows2 = dec(http.get(api.MESSAGES, headers=auth(c2)).content)[0]
        own = int(rows[0][0] in {r[0] for r in rows2})  # ids are per device on PostgreSQL
        r = http.post(api.ACK, content=codec.encode({0: [rows[0][0]]}), headers=auth(c2))
        assert dec(r.content)[0] == own
        assert len(dec(http.get(api.MESSAGES, headers=auth(c1)).content)[0]) == 1
        assert len(dec(http.get(api.MESSAGES, headers=auth(c2)).content)[0]) == 1 - own


def _read_answer(conn: socket.socket) -> bytes:
    """One answer (its head and Content-Length body), or what came before the relay closed the
    connection or went quiet for the socket's timeout (it was waiting for more of a head)."""
    answer = b""
    while True:
        head, sep, body = answer.partition(b"\r\n\r\n")
        if sep:
            length = re.search(rb"(?im)^content-length: *([0-9]+)", head)
            if length is not None and len(body) >= int(length[1]):
                return answer
        try:
            chunk = conn.recv(65536)
        except TimeoutError:
            return answer
        if not chunk:
            return answer
        answer += chunk


def test_a_request_head_past_16_kib_is_refused(server: RelayProcess) -> None:
    """[REQ-RL-37] A head still incomplete past 16 KiB is refused with 400 and the connection
    closed, with either stack, also when it follows a request on the same connection; heads
    under it are served, however many one connection carries. (uvicorn's own httptools
    protocol, which its "auto" picks when httptools is installed, as it is here, took the
    oversized head and waited for more.)"""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    health = b"GET " + api.HEALTH.encode() + b" HTTP/1.1\r\nhost: r\r\n"
    pad = b"x-pad: " + b"a" * (15 * 1024) + b"\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(health + pad + b"\r\n")
        assert _read_answer(conn).startswith(b"HTTP/1.1 200 ")
        conn.sendall(health + b"x-pad: " + b"a" * (16 * 1024))  # no end of the head
        refused = _read_answer(conn)
    assert refused.startswith(b"HTTP/1.1 400 ")
    assert b"connection: close" in refused.lower()
    # the bound is per head: 40 heads of 1 KiB on one connection are all served
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for _ in range(40):
            assert http.get(api.HEALTH, headers={"x-pad": "a" * 1024}).status_code == 200


def test_the_trailers_of_a_chunked_body_are_bounded(server: RelayProcess) -> None:
    """[REQ-RL-37] A chunked body's trailer section is parsed like a head: on the fast stack
    httptools buffered its fields and uvicorn kept them, with no bound (a review sent 300 MB
    and the process grew by as much). Both stacks now close the connection long before 32 MiB
    of trailers (h11 bounds them as a head; the fast stack refuses chunked bodies, 400)."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    head = (
        b"POST " + api.CHALLENGE.encode() + b" HTTP/1.1\r\nhost: r\r\n"
        b"transfer-encoding: chunked\r\n\r\n0\r\n"
    )
    field = b"x-trailer: " + b"a" * 1024 + b"\r\n"
    sent = 0
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(head)
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            while sent < 32 * 1024 * 1024:  # a relay that reads on and on never ends this
                conn.sendall(field)
                sent += len(field)
    assert sent < 32 * 1024 * 1024
    # and the relay still serves
    with httpx.Client(base_url=server.url, timeout=10) as http:
        assert http.get(api.HEALTH).status_code == 200


# --- concurrent claims from several processes ------------------------------------------------


def test_concurrent_claims_from_several_processes_issue_each_key_once(
    server: RelayProcess,
) -> None:
    """[REQ-RL-08] [REQ-RL-09] Four processes make 60 claims for 40 keys."""
    keys, workers, attempts = 40, 4, 15
    target = User.make("target")
    with httpx.Client(base_url=server.url, timeout=10) as http:
        assert http.put(api.DEVICE_LIST, content=target.list_body()).status_code == 201
        http_login(http, target.devices[0], server.url)
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
                    server.url,
                    f"claimer{i}",
                    "target",
                    str(attempts),
                    os.urandom(32).hex(),
                ],
                env=env,
                cwd=PROJECT_ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for i in range(workers)
        ]
        results: list[int] = []
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err.decode()[-2000:]
            results += [int(line) for line in out.decode().split()]
        assert len(results) == workers * attempts
        issued = [i for i in results if i != -1]
        assert len(issued) == len(set(issued)) == keys  # never twice, never "none" while left
        assert results.count(-1) == workers * attempts - keys  # then the last resort
        counts = dec(http.get(api.KEYS, headers=auth(target.devices[0])).content)
        assert (counts[0], counts[1]) == (0, 0)


# --- crash safety ----------------------------------------------------------------------------


def _message_ids(http: httpx.Client, device: Any) -> list[bytes]:
    found: list[bytes] = []
    after = 0
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


@pytest.mark.parametrize("setup", SERVER_SETUPS)
def test_every_acknowledged_send_survives_sigkill(setup: str, tmp_path: Path) -> None:
    """[REQ-RL-21] Senders in two threads; the relay is SIGKILLed after a random number of
    acknowledged sends, restarted on the same file; every acknowledged message is there, once,
    and nothing that was never sent. Unacknowledged sends retried after the restart are stored
    at most once (idempotent across the crash)."""
    backend, _, stack = setup.partition("-")
    db: Path | str = tmp_path / "crash.sqlite" if backend == "sqlite" else postgres_database()
    server = RelayProcess(db, "--stack", stack or "h11", log=tmp_path / "relay.log")
    server.start()
    alice, bob = User.make("alice"), User.make("bob")
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            for u in (alice, bob):
                assert http.put(api.DEVICE_LIST, content=u.list_body()).status_code == 201
                http_login(http, u.devices[0], server.url)
        acked: set[bytes] = set()
        attempted: dict[bytes, bytes] = {}
        lock = threading.Lock()
        for _ in range(CRASH_ROUNDS):
            kill_after = len(acked) + 40 + secrets.randbelow(80)
            stop = threading.Event()

            def sender() -> None:
                with httpx.Client(base_url=server.url, timeout=5) as http:
                    while not stop.is_set():
                        mid = os.urandom(16)
                        body = send_body(bob, mid, alice.devices[0])
                        with lock:
                            attempted[mid] = body
                        try:
                            r = http.post(
                                api.MESSAGES, content=body, headers=auth(alice.devices[0])
                            )
                        except httpx.HTTPError:
                            return
                        if r.status_code == 200:
                            with lock:
                                acked.add(mid)
                                if len(acked) >= kill_after:
                                    stop.set()
                                    server.kill()

            threads = [threading.Thread(target=sender) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
            assert not any(t.is_alive() for t in threads)
            server.kill()
            server.start()
        assert len(acked) >= 40 * CRASH_ROUNDS
        with httpx.Client(base_url=server.url, timeout=10) as http:
            stored = _message_ids(http, bob.devices[0])
            assert len(stored) == len(set(stored))
            assert acked <= set(stored)
            assert set(stored) <= set(attempted)
            for mid in set(attempted) - set(stored):  # retry what was lost in flight
                r = http.post(api.MESSAGES, content=attempted[mid], headers=auth(alice.devices[0]))
                assert r.status_code == 200
            for mid in list(attempted)[:20]:  # and some that had arrived: stored once
                http.post(api.MESSAGES, content=attempted[mid], headers=auth(alice.devices[0]))
            again = _message_ids(http, bob.devices[0])
            assert sorted(again) == sorted(attempted)
    finally:
        server.stop()
        if isinstance(db, str):
            drop_postgres_database(db)
