"""Client benchmark: durable receives per second, transaction included.

One receive is what :meth:`e2ee.client.Client.receive` does for a normal message: parse the
envelope, ``BEGIN IMMEDIATE``, look the message id up in the processed log, load the session
(canonical CBOR, optionally decrypting it at rest), decrypt, save the session, record the
message id, append the message to the inbox, ``COMMIT`` with WAL and ``synchronous=FULL`` (an
fsync per message). Also shown: durable sends (encrypt + save + commit) and, for reference, the
same decrypts on an in-memory session with no store.

Usage::

    .venv/bin/python benchmarks/bench_client.py [--messages N] [--rounds R] [--held N]
        [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` and ``tests`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import e2ee
from e2ee.client import Client, PrekeyPolicy
from e2ee.client.memory import InMemoryDirectory

PLAINTEXT = b"x" * 100
POLICY = PrekeyPolicy(one_time_target=4, refill_below=2)


def _pair(root: Path, key: bytes | None) -> tuple[Client, Client, InMemoryDirectory]:
    directory = InMemoryDirectory()
    clients = []
    for name in ("alice", "bob"):
        client = Client.create(root / f"{name}.sqlite", name, key=key, prekey_policy=POLICY)
        directory.publish_device_list(client.device_list())
        upload = client.prekeys_to_upload()
        directory.upload(upload)
        client.mark_uploaded(upload)
        clients.append(client)
    alice, bob = clients
    for envelope in alice.send("bob", b"setup", directory):
        bob.receive(envelope.to_bytes())
    for envelope in bob.send("alice", b"setup", directory):
        alice.receive(envelope.to_bytes())
    return alice, bob, directory


def hold_sessions(client: Client, peer: str, count: int) -> None:
    """Give ``client``'s store ``count`` more sessions, with made-up peers, each a copy of its
    session with ``peer`` (they are never used: they only make the table large)."""
    with client.store.transaction() as conn:
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO sessions SELECT 'held' || i, 1, session_id, peer_key, last_used, state "
            "FROM n, (SELECT * FROM sessions WHERE peer_user = ?)",
            (count, peer),
        )
        (total,) = conn.execute("SELECT COUNT(*) FROM sessions").fetchone()
    assert total > count


def durable(messages: int, *, key: bytes | None, held: int = 0) -> tuple[float, float]:
    """(sends/s, receives/s) through the store; Bob's store also holds ``held`` sessions."""
    with tempfile.TemporaryDirectory() as tmp:
        alice, bob, _ = _pair(Path(tmp), key)
        if held:
            hold_sessions(bob, "alice", held)
        start = time.perf_counter()
        envelopes = [alice.send("bob", PLAINTEXT)[0].to_bytes() for _ in range(messages)]
        send_time = time.perf_counter() - start
        start = time.perf_counter()
        for data in envelopes:
            result = bob.receive(data)
            assert result.message is not None
            assert result.message.body == PLAINTEXT
        receive_time = time.perf_counter() - start
        alice.close()
        bob.close()
    return messages / send_time, messages / receive_time


def prepare_durable_receive(
    messages: int, plaintext: bytes, *, key: bytes | None
) -> Callable[[], bytes]:
    """A timed body for the suite's round-robin: two clients and ``messages`` envelopes from
    Alice are made now (untimed); the body has Bob receive them all durably, closes both stores
    and removes their directory, and returns the last plaintext."""
    tmp = tempfile.TemporaryDirectory()
    try:
        alice, bob, _ = _pair(Path(tmp.name), key)
        envelopes = [alice.send("bob", plaintext)[0].to_bytes() for _ in range(messages)]
    except BaseException:
        tmp.cleanup()
        raise

    def run() -> bytes:
        out = b""
        try:
            receive = bob.receive
            for data in envelopes:
                message = receive(data).message
                out = b"" if message is None else message.body
        finally:
            alice.close()
            bob.close()
            tmp.cleanup()
        return out

    return run


def in_memory(messages: int) -> float:
    """Decrypts/s of the same messages on a session object (no store, no envelope)."""
    bob = e2ee.Account.generate()
    alice = e2ee.Account.generate()
    session = alice.start_session(bob.prekey_bundle())
    bob_session, _ = bob.accept_session(session.encrypt(b"setup"))
    session.decrypt(bob_session.encrypt(b"setup"))
    wires = [session.encrypt(PLAINTEXT) for _ in range(messages)]
    start = time.perf_counter()
    for wire in wires:
        bob_session.decrypt(wire)
    return messages / (time.perf_counter() - start)


def run(messages: int, rounds: int, held: int = 10_000) -> dict[str, dict[str, float]]:
    samples: dict[str, list[float]] = {}
    for _ in range(rounds):
        for label, key in (("plain store", None), ("store encrypted at rest", bytes(32))):
            sends, receives = durable(messages, key=key)
            samples.setdefault(f"durable receive, {label}", []).append(receives)
            samples.setdefault(f"durable send, {label}", []).append(sends)
        _, receives = durable(messages, key=None, held=held)
        samples.setdefault(f"durable receive, plain, {held:,} sessions held", []).append(receives)
        samples.setdefault("session.decrypt only (no store)", []).append(in_memory(messages))
    return {
        name: {"median": statistics.median(v), "min": min(v), "max": max(v)}
        for name, v in samples.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--held", type=int, default=10_000, help="other sessions in one row")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = run(args.messages, args.rounds, args.held)
    print(f"{args.messages} messages of {len(PLAINTEXT)} bytes, {args.rounds} rounds")
    for name, r in results.items():
        print(f"{name:45s} {r['median']:9.0f} msg/s  ({r['min']:.0f}-{r['max']:.0f})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
