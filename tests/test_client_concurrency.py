"""One session hammered from 4 threads and 2 processes at once, on both ends.

Alice's store is used by 4 threads of this process and 2 worker processes (2 threads each), all
encrypting on the same session with Bob; then Bob's store is used the same way to receive every
envelope (claimed from a shared directory, so arrival order is scrambled). Every message must
arrive exactly once and intact: a lost update of the session state would make messages
undecryptable (reused or skipped message keys), which the receive would report.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from e2ee.client import Client
from tests import client_hammer_worker as worker
from tests.client_support import World

WORKER = Path(__file__).with_name("client_hammer_worker.py")
PROJECT = Path(__file__).resolve().parent.parent
THREADS = 4
PER_THREAD = 8


def spawn(*args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": f"{PROJECT / 'src'}{os.pathsep}{PROJECT}"}
    return subprocess.Popen([sys.executable, str(WORKER), *args], env=env, cwd=PROJECT)


def test_one_session_from_threads_and_processes(tmp_path: Path) -> None:
    world = World(tmp_path)
    [alice] = world.user("alice")
    [bob] = world.user("bob")
    world.send(alice, "bob", b"setup")
    world.deliver(bob)
    world.send(bob, "alice", b"setup reply")
    world.deliver(alice)
    alice_path = alice.store.conn.execute("PRAGMA database_list").fetchone()[2]
    bob_path = bob.store.conn.execute("PRAGMA database_list").fetchone()[2]
    envelopes = tmp_path / "envelopes"
    envelopes.mkdir()

    procs = [
        spawn("send", alice_path, str(envelopes), f"p{i}", str(PER_THREAD), "2") for i in range(2)
    ]
    worker.send(alice, envelopes, "t", PER_THREAD, THREADS)
    assert all(p.wait(timeout=120) == 0 for p in procs)
    expected = {f"t-{t}-{i}" for t in range(THREADS) for i in range(PER_THREAD)}
    expected |= {f"p{p}-{t}-{i}" for p in range(2) for t in range(2) for i in range(PER_THREAD)}
    assert len(list(envelopes.iterdir())) == len(expected)

    procs = [spawn("receive", bob_path, str(envelopes), "2") for _ in range(2)]
    worker.receive(bob, envelopes, THREADS)
    assert all(p.wait(timeout=120) == 0 for p in procs)
    bodies = [m.body.decode() for m in Client.open(bob_path).inbox()]
    assert bodies.count("setup") == 1
    bodies.remove("setup")
    assert sorted(bodies) == sorted(expected)
    assert len(alice.sessions_with("bob", 1)) == 1
