"""A crash at any point of a receive loses nothing and delivers nothing twice.

A real subprocess receives a batch of envelopes (the first two are initial messages that use
one-time prekeys, the rest normal messages) and kills itself with ``os._exit`` at an injected
point of the receive transaction; it is then restarted, receives the whole batch again (the
transport redelivers everything not acknowledged), and the store must hold every message
exactly once, with the one-time prekeys used exactly once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from e2ee.account import Account
from e2ee.client import Client
from e2ee.client.events import Event
from tests.client_support import World

WORKER = Path(__file__).with_name("client_crash_worker.py")
PROJECT = Path(__file__).resolve().parent.parent
POINTS = ["before_decrypt", "after_decrypt", "after_save", "after_commit"]
BODIES = [b"m%d" % i for i in range(6)]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    root = tmp_path_factory.mktemp("crash")
    world = World(root)
    [alice] = world.user("alice")
    [carol] = world.user("carol")
    [bob] = world.user("bob")
    bob_path = root / "bob-template.sqlite"
    envelopes = root / "envelopes"
    envelopes.mkdir()
    sent = []
    for index, body in enumerate(BODIES):
        sender = carol if index == 1 else alice
        [envelope] = sender.send("bob", body, world.directory)
        sent.append(envelope.to_bytes())
    for index, data in enumerate(sent):
        (envelopes / f"{index:03d}").write_bytes(data)
    (state,) = bob.store.conn.execute("SELECT state FROM account").fetchone()
    prekeys = Account.from_bytes(state).one_time_prekey_count()
    db = Path(bob.store.conn.execute("PRAGMA database_list").fetchone()[2])
    bob.close()
    shutil.copy(db, bob_path)
    return bob_path, envelopes, prekeys


@pytest.fixture(scope="module")
def uncrashed_events(
    template: tuple[Path, Path, int], tmp_path_factory: pytest.TempPathFactory
) -> list[Event]:
    """The event log after the batch was received without a crash."""
    bob_template, envelopes, _ = template
    store = tmp_path_factory.mktemp("uncrashed") / "bob.sqlite"
    shutil.copy(bob_template, store)
    assert run(store, envelopes) == 0
    bob = Client.open(store)
    events = bob.take_events()
    bob.close()
    assert any(e.kind == "session_new" for e in events)
    return events


def run(store: Path, envelopes: Path, **env: str) -> int:
    environment = {**os.environ, "PYTHONPATH": str(PROJECT / "src"), **env}
    return subprocess.run(
        [sys.executable, str(WORKER), str(store), str(envelopes)],
        env=environment,
        cwd=PROJECT,
        timeout=60,
        check=False,
    ).returncode


@pytest.mark.parametrize("crash_at", [1, 4])
@pytest.mark.parametrize("point", POINTS)
def test_crash_then_restart_delivers_exactly_once(
    tmp_path: Path,
    template: tuple[Path, Path, int],
    uncrashed_events: list[Event],
    point: str,
    crash_at: int,
) -> None:
    """[REQ-CL-11] Killed at a checkpoint of the first or the fourth receive, then run again
    over the whole batch: every message is in the inbox once, each one-time prekey was used
    once, and the event log is the one an uncrashed run leaves (every event once)."""
    bob_template, envelopes, prekeys_before = template
    store = tmp_path / "bob.sqlite"
    shutil.copy(bob_template, store)

    status = run(store, envelopes, E2EE_CRASH_POINT=point, E2EE_CRASH_AT=str(crash_at))
    assert status == 77
    bob = Client.open(store)
    delivered_at_crash = len(bob.inbox())
    # Committed or not, never half: a crash after commit keeps the message, before it does not.
    assert delivered_at_crash == (crash_at if point == "after_commit" else crash_at - 1)
    bob.close()

    assert run(store, envelopes) == 0
    bob = Client.open(store)
    messages = bob.inbox()
    assert [m.body for m in messages] == BODIES
    assert len({m.message_id for m in messages}) == len(BODIES)
    (processed,) = bob.store.conn.execute("SELECT COUNT(*) FROM processed").fetchone()
    assert processed == len(BODIES)
    (state,) = bob.store.conn.execute("SELECT state FROM account").fetchone()
    assert Account.from_bytes(state).one_time_prekey_count() == prekeys_before - 2
    # And a third run over the same batch changes nothing.
    bob.close()
    assert run(store, envelopes) == 0
    bob = Client.open(store)
    assert len(bob.inbox()) == len(BODIES)
    assert bob.take_events() == uncrashed_events
    bob.close()
