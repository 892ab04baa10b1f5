"""The receiver's worst case: how long it takes to reject a forged message that asks for the
largest allowed skip, and that the rejection changes nothing.

Receiver: Bob, with the most state a session can have (MAX_RECEIVING_CHAINS remembered chains),
so that every header trial and lookup is as long as it gets. Cases:

* ``clear/new-chain``      -- header encryption off; a clear header with a fresh (valid) ratchet
  key, ``N = MAX_SKIP``, ``PN = 2^32 - 1``, forged ciphertext: one X25519, one KDF_RK and
  ``MAX_SKIP`` + 1 chain steps before the tag fails.
* ``clear/current-chain``  -- header encryption off; Bob's current ratchet key with
  ``N = Nr + MAX_SKIP``: ``MAX_SKIP`` + 1 chain steps before the tag fails.
* ``he/no-header-key``     -- header encryption on; a forged header: it opens under none of the
  at most MAX_RECEIVING_CHAINS + 1 header keys.
* ``he/genuine-header-current`` and ``he/genuine-header-new-chain`` -- header encryption on; the
  attacker glues a forged ciphertext to a *genuine* header it saw on the wire, of a message
  ``MAX_SKIP`` ahead on the current chain or opening the next chain at ``N = MAX_SKIP``: the
  most work header encryption lets anyone cause.

Every forged message must raise an e2ee error and leave ``to_bytes()`` byte-identical (checked
after every timed run). The figure is the median over runs; the target is under 5 ms.

Usage::

    .venv/bin/python benchmarks/bench_hostile.py [--runs N] [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import e2ee
from e2ee.errors import E2EEError
from e2ee.limits import MAX_COUNTER, MAX_RECEIVING_CHAINS, MAX_SKIP
from e2ee.testing import DeterministicProvider
from e2ee.wire import codec
from e2ee.wire.messages import message_prefix, parse_message

TARGET_MS = 5.0
NOW = 1_800_000_000
FORGED_BODY = bytes(range(48))  # two CBC blocks and a tag: a valid length, a wrong tag


@dataclass
class Case:
    name: str
    receiver: e2ee.Session
    message: bytes
    expected: type[E2EEError]


def _pair(header_encryption: bool) -> tuple[e2ee.Session, e2ee.Session, DeterministicProvider]:
    provider = DeterministicProvider(f"bench-hostile-{header_encryption}")
    bob_account = e2ee.Account.generate(provider=provider, now=NOW)
    bob_account.generate_one_time_prekeys(1, provider=provider)
    alice_account = e2ee.Account.generate(provider=provider, now=NOW)
    alice = alice_account.start_session(
        bob_account.prekey_bundle(),
        config=e2ee.SessionConfig(header_encryption=header_encryption),
        provider=provider,
        now=NOW,
    )
    bob, _ = bob_account.accept_session(alice.encrypt(b"hi", provider=provider), now=NOW)
    for _ in range(MAX_RECEIVING_CHAINS):  # fill Bob's remembered chains
        alice.decrypt(bob.encrypt(b"b", provider=provider), provider=provider)
        bob.decrypt(alice.encrypt(b"a", provider=provider), provider=provider)
    alice.encrypt(b"lost", provider=provider)  # Bob keeps a skipped key on his current chain
    bob.decrypt(alice.encrypt(b"a", provider=provider), provider=provider)
    return alice, bob, provider


def _forged(receiver: e2ee.Session, header: bytes) -> bytes:
    return (
        message_prefix(receiver.session_id, None)
        + codec.encode_bytes(header)
        + codec.encode_bytes(FORGED_BODY)
    )


def _glue(genuine: bytes) -> bytes:
    """A genuine message's prefix and header with a forged ciphertext."""
    return parse_message(genuine).mac_prefix + codec.encode_bytes(FORGED_BODY)


def cases() -> list[Case]:
    out = []
    alice, bob, provider = _pair(header_encryption=False)
    fresh_key = e2ee.Account.generate(provider=provider, now=NOW).prekey_bundle().signed_prekey
    pn = MAX_COUNTER.to_bytes(4, "big")
    out.append(
        Case(
            "clear/new-chain",
            bob,
            _forged(bob, fresh_key + pn + MAX_SKIP.to_bytes(4, "big")),
            e2ee.AuthenticationError,
        )
    )
    ratchet = bob._ratchet
    assert ratchet.dhr is not None
    current = ratchet.dhr + pn + (ratchet.nr + MAX_SKIP).to_bytes(4, "big")
    out.append(Case("clear/current-chain", bob, _forged(bob, current), e2ee.AuthenticationError))

    alice, bob, provider = _pair(header_encryption=True)
    out.append(
        Case("he/no-header-key", bob, _forged(bob, bytes(range(80))), e2ee.AuthenticationError)
    )
    ahead = [alice.encrypt(b"ahead", provider=provider) for _ in range(MAX_SKIP + 1)][-1]
    out.append(Case("he/genuine-header-current", bob, _glue(ahead), e2ee.AuthenticationError))
    alice.decrypt(bob.encrypt(b"step", provider=provider), provider=provider)
    next_chain = [alice.encrypt(b"next", provider=provider) for _ in range(MAX_SKIP + 1)][-1]
    out.append(
        Case("he/genuine-header-new-chain", bob, _glue(next_chain), e2ee.AuthenticationError)
    )
    return out


def measure(case: Case, runs: int) -> list[float]:
    """Milliseconds per rejection; checks the error and that the state is unchanged."""
    before = case.receiver.to_bytes()
    provider = DeterministicProvider("bench-hostile-attacker")
    decrypt: Callable[..., bytes] = case.receiver.decrypt
    times = []
    gc.disable()
    try:
        for _ in range(runs):
            start = time.perf_counter()
            try:
                decrypt(case.message, provider=provider)
            except case.expected:
                pass
            else:  # pragma: no cover - a forged message was accepted
                raise AssertionError(f"{case.name}: the forged message was accepted")
            times.append((time.perf_counter() - start) * 1000)
            if case.receiver.to_bytes() != before:  # pragma: no cover
                raise AssertionError(f"{case.name}: the rejection changed the session")
    finally:
        gc.enable()
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results: list[dict[str, object]] = []
    medians: list[float] = []
    print(f"{'case':32} {'median ms':>10} {'min':>8} {'max':>8}  target < {TARGET_MS} ms")
    for case in cases():
        times = measure(case, args.runs)
        median = statistics.median(times)
        medians.append(median)
        verdict = "ok" if median < TARGET_MS else "OVER TARGET"
        print(f"{case.name:32} {median:10.3f} {min(times):8.3f} {max(times):8.3f}  {verdict}")
        results.append(
            {"case": case.name, "median_ms": median, "min_ms": min(times), "max_ms": max(times)}
        )
    print("every forged message was rejected with the session byte-identical afterwards")
    if args.json:
        meta = {"runs": args.runs, "python": platform.python_version(), "target_ms": TARGET_MS}
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    return 0 if all(median < TARGET_MS for median in medians) else 1


if __name__ == "__main__":
    sys.exit(main())
