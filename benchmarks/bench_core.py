"""Core benchmark: e2ee next to the bare-primitive floor, in one process.

Three workloads, each with 100-byte plaintexts (an encrypt plus its decrypt is one message):

* ``stream``   -- messages/s, one direction: Alice sends, Bob receives, on one chain.
* ``pingpong`` -- messages/s, A sends 1, B replies 1, ...: every message is a DH ratchet step.
* ``setup``    -- sessions/s, full: bundle signature verification + ``start_session`` +
  ``accept_session`` of the first message (with one-time EC and ML-KEM prekeys).

e2ee runs with header encryption off and on, after PQXDH and after X3DH. Every workload also
runs the floor of :mod:`benchmarks.floor`: the same primitive calls with no protocol overhead
(plus a floor that adds the header-encryption primitives, for reference). Contenders are
interleaved round-robin (the order rotates every round), each round times every contender once
with ``time.perf_counter`` and the garbage collector off; the table shows the median rate with
the min-max range over rounds, and e2ee/floor as the median (and range) of the per-round
ratios, each e2ee run divided by the floor run of the same round.

Usage::

    .venv/bin/python benchmarks/bench_core.py [--rounds N] [--json PATH] [--scale F]
        [--workload stream|pingpong|setup ...] [--profile stream|pingpong|setup [--he]]
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import gc
import io
import json
import os
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cryptography
import nacl
from cryptography.hazmat.backends.openssl import backend as _openssl

import e2ee
from benchmarks import floor
from benchmarks.floor import Workload
from e2ee.limits import MAX_ONE_TIME_PREKEYS

PLAINTEXT = bytes(range(100))
"""Every message carries these 100 bytes."""

WorkloadName = Literal["stream", "pingpong", "setup"]
WORKLOADS: tuple[WorkloadName, ...] = ("stream", "pingpong", "setup")
UNITS = {"stream": "msg/s", "pingpong": "msg/s", "setup": "sessions/s"}


@dataclass(frozen=True, slots=True)
class Sizes:
    """Units of work per timed run (messages, or session set-ups)."""

    stream: int = 2_500
    pingpong: int = 500
    setup: int = 80

    def of(self, workload: WorkloadName) -> int:
        if workload == "stream":
            return self.stream
        if workload == "pingpong":
            return 2 * ((self.pingpong + 1) // 2)  # whole A->B, B->A turns
        return self.setup

    def scaled(self, factor: float) -> Sizes:
        return Sizes(
            stream=max(2, round(self.stream * factor)),
            pingpong=max(2, round(self.pingpong * factor)),
            setup=max(1, round(self.setup * factor)),
        )


# --- e2ee contenders --------------------------------------------------------------------------


def _config(*, post_quantum: bool, header_encryption: bool) -> e2ee.SessionConfig:
    return e2ee.SessionConfig(header_encryption=header_encryption, allow_x3dh=not post_quantum)


def session_pair(
    *, post_quantum: bool, header_encryption: bool
) -> tuple[e2ee.Session, e2ee.Session]:
    """Alice and Bob after the handshake and one reply (Alice sends normal messages)."""
    bob_account = e2ee.Account.generate(post_quantum=post_quantum)
    bob_account.generate_one_time_prekeys(1)
    alice_account = e2ee.Account.generate()
    alice = alice_account.start_session(
        bob_account.prekey_bundle(),
        config=_config(post_quantum=post_quantum, header_encryption=header_encryption),
    )
    bob, _ = bob_account.accept_session(alice.encrypt(b"hello"))
    if alice.decrypt(bob.encrypt(b"hi")) != b"hi":  # pragma: no cover
        raise RuntimeError("session pair does not work")
    return alice, bob


def prepare_e2ee_stream(
    n: int, plaintext: bytes, *, post_quantum: bool, header_encryption: bool
) -> Workload:
    alice, bob = session_pair(post_quantum=post_quantum, header_encryption=header_encryption)

    def run() -> bytes:
        encrypt, decrypt = alice.encrypt, bob.decrypt
        out = b""
        for _ in range(n):
            out = decrypt(encrypt(plaintext))
        return out

    return run


def prepare_e2ee_pingpong(
    n: int, plaintext: bytes, *, post_quantum: bool, header_encryption: bool
) -> Workload:
    alice, bob = session_pair(post_quantum=post_quantum, header_encryption=header_encryption)
    turns = (n + 1) // 2

    def run() -> bytes:
        a_encrypt, a_decrypt, b_encrypt, b_decrypt = (
            alice.encrypt,
            alice.decrypt,
            bob.encrypt,
            bob.decrypt,
        )
        out = b""
        for _ in range(turns):
            b_decrypt(a_encrypt(plaintext))
            out = a_decrypt(b_encrypt(plaintext))
        return out

    return run


def prepare_e2ee_setup(
    n: int, plaintext: bytes, *, post_quantum: bool, header_encryption: bool
) -> Workload:
    """``n`` bundles fetched beforehand (each with one-time prekeys); the run verifies each,
    starts the session, encrypts the first message and has the responder accept it."""
    if n > MAX_ONE_TIME_PREKEYS:
        raise ValueError(f"at most {MAX_ONE_TIME_PREKEYS} set-ups per run")
    bob = e2ee.Account.generate(post_quantum=post_quantum)
    bob.generate_one_time_prekeys(n)
    alice = e2ee.Account.generate()
    bundles = [bob.prekey_bundle() for _ in range(n)]
    config = _config(post_quantum=post_quantum, header_encryption=header_encryption)

    def run() -> bytes:
        start, accept = alice.start_session, bob.accept_session
        out = b""
        for bundle in bundles:
            _bob_session, out = accept(start(bundle, config=config).encrypt(plaintext))
        return out

    return run


# --- the contenders ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Contender:
    key: str
    workload: WorkloadName
    kind: Literal["floor", "e2ee"]
    handshake: str
    header_encryption: bool
    prepare: Callable[[int, bytes], Workload] = field(repr=False, compare=False)
    floor_key: str | None = None
    """The floor e2ee is compared with: the required one (header-encryption primitives off)."""
    he_floor_key: str | None = None
    """With header encryption on: the floor that includes the header-encryption primitives."""

    @property
    def label(self) -> str:
        if self.kind == "floor":
            return "floor + HE prims" if self.header_encryption else "floor"
        return "e2ee"


def _floor_key(workload: str, handshake: str, header_encryption: bool) -> str:
    return f"{workload}/floor/{handshake}/{'he' if header_encryption else 'plain'}"


def contenders(workloads: Sequence[WorkloadName] = WORKLOADS) -> list[Contender]:
    out: list[Contender] = []
    for workload in workloads:
        handshakes = ("PQXDH", "X3DH")
        floor_handshakes = handshakes if workload == "setup" else ("-",)
        for handshake in floor_handshakes:
            for he in (False, True):
                out.append(
                    Contender(
                        key=_floor_key(workload, handshake, he),
                        workload=workload,
                        kind="floor",
                        handshake=handshake,
                        header_encryption=he,
                        prepare=_floor_prepare(workload, handshake == "PQXDH", he),
                        floor_key=None if not he else _floor_key(workload, handshake, False),
                    )
                )
        for handshake in handshakes:
            for he in (False, True):
                fh = handshake if workload == "setup" else "-"
                out.append(
                    Contender(
                        key=f"{workload}/e2ee/{handshake}/{'he' if he else 'plain'}",
                        workload=workload,
                        kind="e2ee",
                        handshake=handshake,
                        header_encryption=he,
                        prepare=_e2ee_prepare(workload, handshake == "PQXDH", he),
                        floor_key=_floor_key(workload, fh, False),
                        he_floor_key=_floor_key(workload, fh, True) if he else None,
                    )
                )
    return out


def _floor_prepare(
    workload: WorkloadName, post_quantum: bool, header_encryption: bool
) -> Callable[[int, bytes], Workload]:
    def prepare(n: int, plaintext: bytes) -> Workload:
        if workload == "stream":
            return floor.prepare_stream(n, plaintext, header_encryption=header_encryption)
        if workload == "pingpong":
            return floor.prepare_pingpong(n, plaintext, header_encryption=header_encryption)
        return floor.prepare_setup(
            n, plaintext, post_quantum=post_quantum, header_encryption=header_encryption
        )

    return prepare


def _e2ee_prepare(
    workload: WorkloadName, post_quantum: bool, header_encryption: bool
) -> Callable[[int, bytes], Workload]:
    function = {
        "stream": prepare_e2ee_stream,
        "pingpong": prepare_e2ee_pingpong,
        "setup": prepare_e2ee_setup,
    }[workload]

    def prepare(n: int, plaintext: bytes) -> Workload:
        return function(
            n, plaintext, post_quantum=post_quantum, header_encryption=header_encryption
        )

    return prepare


# --- measurement ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Range:
    median: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Range:
        return cls(statistics.median(values), min(values), max(values))

    def to_json(self) -> dict[str, float]:
        return {"median": self.median, "min": self.min, "max": self.max}


@dataclass(slots=True)
class Result:
    contender: Contender
    n: int
    rates: list[float] = field(default_factory=list)
    """Units per second, one per round, in round order."""
    ratio: Range | None = None
    """e2ee / the required floor, per round."""
    he_ratio: Range | None = None
    """e2ee / the floor with header-encryption primitives, per round (header encryption on)."""
    best_ratio: float | None = None
    """Best e2ee round / best floor round: interference from other processes only slows a
    run down, so on a shared machine this is the least noisy estimate of the ratio."""

    @property
    def rate(self) -> Range:
        return Range.of(self.rates)

    def to_json(self) -> dict[str, Any]:
        c = self.contender
        return {
            "key": c.key,
            "workload": c.workload,
            "unit": UNITS[c.workload],
            "kind": c.kind,
            "label": c.label,
            "handshake": c.handshake,
            "header_encryption": c.header_encryption,
            "n": self.n,
            "rates": self.rates,
            "rate": self.rate.to_json(),
            "us_per_unit": 1e6 / self.rate.median,
            "floor": c.floor_key,
            "ratio_vs_floor": None if self.ratio is None else self.ratio.to_json(),
            "best_ratio_vs_floor": self.best_ratio,
            "he_floor": c.he_floor_key,
            "ratio_vs_he_floor": None if self.he_ratio is None else self.he_ratio.to_json(),
        }


def time_once(body: Workload, plaintext: bytes) -> float:
    """Seconds for one run of ``body``, garbage collector off; checks the last plaintext."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        out = body()
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    if out != plaintext:
        raise RuntimeError("a benchmark body did not decrypt its own messages")
    return elapsed


def run(
    *,
    rounds: int = 11,
    sizes: Sizes | None = None,
    workloads: Sequence[WorkloadName] = WORKLOADS,
    plaintext: bytes = PLAINTEXT,
    progress: Callable[[str], None] | None = None,
) -> list[Result]:
    """Run every contender ``rounds`` times, round-robin; returns results in table order."""
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    sizes = sizes or Sizes()
    field_list = contenders(workloads)
    results = {c.key: Result(c, sizes.of(c.workload)) for c in field_list}
    for c in field_list:  # warm-up: imports, caches, first-call costs
        time_once(c.prepare(min(2, sizes.of(c.workload)), plaintext), plaintext)
    started = time.perf_counter()
    for round_index in range(rounds):
        shift = round_index % len(field_list)
        for c in field_list[shift:] + field_list[:shift]:
            result = results[c.key]
            body = c.prepare(result.n, plaintext)
            result.rates.append(result.n / time_once(body, plaintext))
        if progress is not None:
            progress(
                f"round {round_index + 1}/{rounds} done ({time.perf_counter() - started:.1f} s)"
            )
    for result in results.values():
        c = result.contender
        if c.floor_key is not None:
            result.ratio = _ratios(result, results[c.floor_key])
            result.best_ratio = max(result.rates) / max(results[c.floor_key].rates)
        if c.he_floor_key is not None:
            result.he_ratio = _ratios(result, results[c.he_floor_key])
    return list(results.values())


def _ratios(result: Result, reference: Result) -> Range:
    return Range.of([a / b for a, b in zip(result.rates, reference.rates, strict=True)])


# --- reporting --------------------------------------------------------------------------------


def _fmt_ratio(r: Range | None) -> str:
    if r is None:
        return ""
    return f"{r.median:.2f} ({r.min:.2f}-{r.max:.2f})"


def table(results: Sequence[Result]) -> str:
    header = (
        f"{'workload':<9} {'contender':<17} {'handshake':<9} {'HE':<3} {'n':>5} "
        f"{'median/s':>10} {'min-max /s':>17} {'us/op':>8}  "
        f"{'e2ee/floor (range)':<19} {'best/best':>9}  {'vs floor+HE (range)':<19}"
    )
    lines = [header, "-" * len(header)]
    previous = None
    for r in results:
        c = r.contender
        if previous is not None and c.workload != previous:
            lines.append("")
        previous = c.workload
        rate = r.rate
        he = "on" if c.header_encryption else "off"
        span = f"{rate.min:,.0f}-{rate.max:,.0f}"
        best = "" if r.best_ratio is None else f"{r.best_ratio:.2f}"
        line = (
            f"{c.workload:<9} {c.label:<17} {c.handshake:<9} {he:<3} {r.n:>5} "
            f"{rate.median:>10,.0f} {span:>17} {1e6 / rate.median:>8.1f}  "
            f"{_fmt_ratio(r.ratio):<19} {best:>9}  {_fmt_ratio(r.he_ratio):<19}"
        )
        lines.append(line.rstrip())
    return "\n".join(lines)


def metadata(rounds: int, sizes: Sizes, elapsed: float) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "e2ee": e2ee.__version__,
        "cryptography": cryptography.__version__,
        "openssl": _openssl.openssl_version_text(),
        "pynacl": nacl.__version__,
        "rounds": rounds,
        "sizes": {"stream": sizes.stream, "pingpong": sizes.of("pingpong"), "setup": sizes.setup},
        "plaintext_bytes": len(PLAINTEXT),
        "elapsed_seconds": elapsed,
    }


FOOTNOTE = """\
floor = the bare cryptography/pynacl calls the protocol must make (benchmarks/floor.py);
'floor + HE prims' adds the header-encryption calls (nonce, XChaCha20-Poly1305 seal/open).
e2ee/floor: median (min-max) over rounds of e2ee's rate / the floor's rate in the same round,
against the floor without header encryption; 'vs floor+HE' against the floor with it.
best/best: e2ee's fastest round / the floor's fastest round (least sensitive to other load)."""


# --- profiling ----------------------------------------------------------------------------------


def profile(
    workload: WorkloadName, *, header_encryption: bool = False, n: int | None = None, top: int = 30
) -> str:
    """cProfile of the e2ee body of ``workload`` (PQXDH session); the stats sorted by own time.

    cProfile charges a fixed cost to every Python call, so it overstates thin wrappers next to
    the C calls they make; for percentages use a sampling profiler, e.g.
    ``py-spy record -f raw -- .venv/bin/python ...``.
    """
    sizes = Sizes()
    count = n or sizes.of(workload) * (5 if workload != "setup" else 2)
    body = _e2ee_prepare(workload, True, header_encryption)(count, PLAINTEXT)
    profiler = cProfile.Profile()
    profiler.enable()
    body()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime").print_stats(top)
    return out.getvalue()


# --- command line -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=11, help="rounds (default 11)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the results as JSON")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply the work per run (default 1.0)"
    )
    parser.add_argument(
        "--workload",
        action="append",
        choices=WORKLOADS,
        help="only these workloads (repeatable; default all)",
    )
    parser.add_argument(
        "--profile",
        choices=WORKLOADS,
        help="instead of benchmarking, cProfile e2ee on this workload and print the top functions",
    )
    parser.add_argument("--he", action="store_true", help="with --profile: header encryption on")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.scale <= 0:
        parser.error("--rounds must be >= 1 and --scale > 0")

    if args.profile:
        print(profile(args.profile, header_encryption=args.he))
        return 0

    sizes = Sizes().scaled(args.scale)
    workloads = tuple(dict.fromkeys(args.workload)) if args.workload else WORKLOADS
    started = time.perf_counter()
    results = run(
        rounds=args.rounds,
        sizes=sizes,
        workloads=workloads,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    elapsed = time.perf_counter() - started
    meta = metadata(args.rounds, sizes, elapsed)
    print(
        f"e2ee {meta['e2ee']} core benchmark - Python {meta['python']}, {meta['cpu_count']} CPUs, "
        f"cryptography {meta['cryptography']} ({meta['openssl']}), pynacl {meta['pynacl']}"
    )
    print(
        f"{args.rounds} rounds, round-robin; {len(PLAINTEXT)}-byte plaintexts; "
        "rates: stream/pingpong msg/s (encrypt+decrypt), setup sessions/s"
    )
    print()
    print(table(results))
    print()
    print(FOOTNOTE)
    print(f"total {elapsed:.1f} s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"meta": meta, "results": [r.to_json() for r in results]},
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
