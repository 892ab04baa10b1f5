"""The peer benchmark suite: e2ee, the bare-primitive floor and the peer libraries, one run.

What it measures (100-byte plaintexts; a message is an encrypt plus its decrypt):

* ``setup``     -- sessions set up per second, signature checks included: e2ee (PQXDH and X3DH,
  header encryption off and on) with 100 stored one-time prekeys, plus PQXDH with 10 and with
  1,000 stored (flat in the number of stored prekeys?); the PQXDH and X3DH floors; every peer at
  its own default number of one-time prekeys and at 100.
* ``pingpong``  -- messages/s when every message is a DH ratchet step.
* ``stream``    -- messages/s one direction on one chain.
* ``forged``    -- milliseconds to reject a forged message asking for the largest skip the library
  allows (reported as ms; timed as rejections/s).
* ``durable``   -- durable receives/s through the SQLite client store (e2ee only: the peers have
  no store), plain and encrypted at rest.
* sizes (not timed): serialized session fresh (after the first reply) and after 500 skipped
  messages, bytes per stored skipped key, wire bytes of a 100-byte message.

Every timed contender is prepared afresh (untimed) for every round; rounds are round-robin with
the order rotated each round, garbage collector off while timing. The table shows the median and
the min-max range over rounds; ratios are medians of per-round ratios (each against the other
contender's run in the same round), which is what the targets are judged on.

A peer that is not installed gets "not installed" rows (same keys), never silently dropped.

Usage::

    .venv/bin/python -m benchmarks.suite --out DIR [--rounds N] [--quick]
    e2ee bench --out DIR [--rounds N] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import e2ee
from benchmarks import bench_client, bench_core, bench_hostile, floor, peers
from benchmarks.peers import Peer, Workload

PLAINTEXT = bench_core.PLAINTEXT
STORED_DEFAULT = 100
"""One-time prekeys stored for the e2ee set-up rows (the client's default target, 100)."""
STORED_FLAT = (10, 1_000)
"""Stored prekeys for the flatness check."""
FORGED_RUNS = 10
"""Forged messages rejected per timed run."""

UNITS = {
    "setup": "sessions/s",
    "pingpong": "msg/s",
    "stream": "msg/s",
    "forged": "ms",
    "durable": "msg/s",
}
TIMED_METRICS = ("setup", "pingpong", "stream", "forged", "durable")
SIZE_METRICS = {
    "session_fresh": "bytes",
    "session_500_skipped": "bytes",
    "bytes_per_skipped_key": "bytes",
    "wire_100": "bytes",
    "wire_overhead": "bytes",
}


@dataclass(frozen=True, slots=True)
class Sizes:
    """Units of work per timed run (scaled down for slow contenders)."""

    setup: int = 40
    pingpong: int = 400
    stream: int = 2_000
    forged: int = FORGED_RUNS
    durable: int = 150
    slow_divisor: int = 4
    """Syndace (pure Python, ~5-50x slower) runs this many times fewer units."""

    def of(self, metric: str, slow: bool = False) -> int:
        n = int(getattr(self, metric))
        if slow and metric in ("setup", "pingpong", "stream"):
            n = max(2, n // self.slow_divisor)
        if metric == "pingpong":
            n = 2 * ((n + 1) // 2)
        return max(1, n)


FULL = Sizes()
QUICK = Sizes(setup=2, pingpong=4, stream=10, forged=1, durable=3, slow_divisor=1)


# --- contenders --------------------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    """One line of the results: a timed contender, a size, or a peer that is not installed."""

    metric: str
    contender: str
    variant: str
    unit: str
    status: str = "ok"
    """'ok', 'not installed' or 'failed: ...'."""
    samples: list[float] = field(default_factory=list)
    """Per round: units/s for timed rows (ms for forged is derived), or one size."""
    n: int = 0
    note: str = ""
    ratios: dict[str, list[float]] = field(default_factory=dict)
    """Per-round ratios of this row's rate to other rows' rates, by the other row's key."""
    prepare: Callable[[int], Workload] | None = field(default=None, repr=False)
    slow: bool = False

    @property
    def key(self) -> str:
        return f"{self.metric}/{self.contender}/{self.variant}"

    def values(self) -> list[float]:
        """The figures to report: rates, or ms per forged message, or sizes."""
        if self.metric == "forged":
            return [1000.0 / rate for rate in self.samples]
        return self.samples

    def summary(self) -> dict[str, float] | None:
        values = self.values()
        if not values:
            return None
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "metric": self.metric,
            "contender": self.contender,
            "variant": self.variant,
            "unit": self.unit,
            "status": self.status,
            "n": self.n,
            "values": self.values(),
            "summary": self.summary(),
            "ratios": {
                other: {"median": statistics.median(r), "min": min(r), "max": max(r)}
                for other, r in self.ratios.items()
                if r
            },
            "note": self.note,
        }


def _e2ee_setup(stored: int, post_quantum: bool, he: bool) -> Callable[[int], Workload]:
    def prepare(n: int) -> Workload:
        n = min(n, stored)
        bob = e2ee.Account.generate(post_quantum=post_quantum)
        bob.generate_one_time_prekeys(stored)
        alice = e2ee.Account.generate()
        bundles = [e2ee.PreKeyBundle.from_bytes(bob.prekey_bundle().to_bytes()) for _ in range(n)]
        config = e2ee.SessionConfig(header_encryption=he, allow_x3dh=not post_quantum)

        def run() -> bytes:
            start, accept = alice.start_session, bob.accept_session
            out = b""
            for bundle in bundles:
                _bob_session, out = accept(start(bundle, config=config).encrypt(PLAINTEXT))
            return out

        return run

    return prepare


def _e2ee_messages(metric: str, post_quantum: bool, he: bool) -> Callable[[int], Workload]:
    function = (
        bench_core.prepare_e2ee_stream if metric == "stream" else (bench_core.prepare_e2ee_pingpong)
    )

    def prepare(n: int) -> Workload:
        return function(n, PLAINTEXT, post_quantum=post_quantum, header_encryption=he)

    return prepare


def _floor(metric: str, post_quantum: bool, he: bool) -> Callable[[int], Workload]:
    def prepare(n: int) -> Workload:
        if metric == "stream":
            return floor.prepare_stream(n, PLAINTEXT, header_encryption=he)
        if metric == "pingpong":
            return floor.prepare_pingpong(n, PLAINTEXT, header_encryption=he)
        return floor.prepare_setup(n, PLAINTEXT, post_quantum=post_quantum, header_encryption=he)

    return prepare


_CASES: list[bench_hostile.Case] = []


def _hostile_case(name: str) -> bench_hostile.Case:
    """bench_hostile's cases, built once: a rejected forgery leaves the receiver unchanged
    (checked after every run), so the same receiver serves every round."""
    if not _CASES:
        _CASES.extend(bench_hostile.cases())
    return next(c for c in _CASES if c.name == name)


def _forged_e2ee(case_name: str) -> Callable[[int], Workload]:
    def prepare(n: int) -> Workload:
        case = _hostile_case(case_name)
        before = case.receiver.to_bytes()
        decrypt = case.receiver.decrypt

        def run() -> bytes:
            for _ in range(n):
                try:
                    decrypt(case.message)
                except case.expected:
                    pass
                else:  # pragma: no cover
                    raise RuntimeError("e2ee accepted a forged message")
            if case.receiver.to_bytes() != before:  # pragma: no cover
                raise RuntimeError("a rejected forgery changed the session")
            return PLAINTEXT

        return run

    return prepare


def _forged_peer(peer: Peer) -> Callable[[int], Workload]:
    def prepare(n: int) -> Workload:
        forged = peer.forged()

        def run() -> bytes:
            for _ in range(n):
                forged.run()
            return PLAINTEXT

        return run

    return prepare


def _durable(key: bytes | None) -> Callable[[int], Workload]:
    def prepare(n: int) -> Workload:
        return bench_client.prepare_durable_receive(n, PLAINTEXT, key=key)

    return prepare


def _peer_prepare(peer: Peer, metric: str, stored: int | None) -> Callable[[int], Workload]:
    def prepare(n: int) -> Workload:
        if metric == "setup":
            assert stored is not None
            return peer.prepare_setup(min(n, stored), PLAINTEXT, stored)
        if metric == "pingpong":
            return peer.prepare_pingpong(n, PLAINTEXT)
        return peer.prepare_stream(n, PLAINTEXT)

    return prepare


def e2ee_rows() -> list[Row]:
    rows: list[Row] = []
    for post_quantum, handshake in ((True, "PQXDH"), (False, "X3DH")):
        for he in (False, True):
            variant = f"{handshake}, HE {'on' if he else 'off'}"
            rows.append(
                Row(
                    "setup",
                    "e2ee",
                    f"{variant}, {STORED_DEFAULT} OPKs",
                    UNITS["setup"],
                    prepare=_e2ee_setup(STORED_DEFAULT, post_quantum, he),
                )
            )
    for stored in STORED_FLAT:
        rows.append(
            Row(
                "setup",
                "e2ee",
                f"PQXDH, HE off, {stored} OPKs",
                UNITS["setup"],
                prepare=_e2ee_setup(stored, True, False),
            )
        )
    for post_quantum, handshake in ((True, "PQXDH"), (False, "X3DH")):
        rows.append(
            Row(
                "setup",
                "floor",
                handshake,
                UNITS["setup"],
                prepare=_floor("setup", post_quantum, False),
            )
        )
    for metric in ("pingpong", "stream"):
        for he in (False, True):
            rows.append(
                Row(
                    metric,
                    "floor",
                    f"HE {'on' if he else 'off'}",
                    UNITS[metric],
                    prepare=_floor(metric, True, he),
                )
            )
        for post_quantum, handshake in ((True, "PQXDH"), (False, "X3DH")):
            for he in (False, True):
                rows.append(
                    Row(
                        metric,
                        "e2ee",
                        f"{handshake}, HE {'on' if he else 'off'}",
                        UNITS[metric],
                        prepare=_e2ee_messages(metric, post_quantum, he),
                    )
                )
    for case, variant in (
        ("clear/new-chain", "HE off, new chain, N = 1,000"),
        ("clear/current-chain", "HE off, current chain, N + 1,000"),
        ("he/genuine-header-new-chain", "HE on, genuine header, N = 1,000"),
    ):
        rows.append(Row("forged", "e2ee", variant, UNITS["forged"], prepare=_forged_e2ee(case)))
    for key, variant in ((None, "plain store"), (bytes(32), "encrypted at rest")):
        rows.append(Row("durable", "e2ee", variant, UNITS["durable"], prepare=_durable(key)))
    return rows


def peer_rows(peer: Peer) -> list[Row]:
    """The rows of one peer; 'not installed' rows (same keys) when it is missing."""
    probe = peer.probe()
    slow = peer.key == "syndace"
    default = peer.default_prekeys() if probe.installed else None
    specs: list[tuple[str, str, int | None]] = [
        ("setup", "defaults", default),
        ("setup", "100 OPKs", 100),
        ("pingpong", "defaults", None),
        ("stream", "defaults", None),
        ("forged", "defaults", None),
    ]
    rows = []
    for metric, variant, stored in specs:
        row = Row(metric, peer.key, variant, UNITS[metric], slow=slow)
        if not probe.installed:
            row.status = "not installed"
            row.note = probe.reason or ""
        elif metric == "forged":
            row.prepare = _forged_peer(peer)
        else:
            row.prepare = _peer_prepare(peer, metric, stored)
            if metric == "setup" and variant == "defaults":
                row.note = f"{default} OPKs ({peer.default_prekeys_note})"
        rows.append(row)
    return rows


# --- sizes -------------------------------------------------------------------------------------


def e2ee_sizes(header_encryption: bool) -> peers.StateSizes:
    alice, bob = bench_core.session_pair(post_quantum=True, header_encryption=header_encryption)
    fresh, fresh_receiver = len(alice.to_bytes()), len(bob.to_bytes())
    wire = alice.encrypt(PLAINTEXT)
    for _ in range(peers.SKIPPED_FOR_STATE - 1):
        alice.encrypt(PLAINTEXT)
    bob.decrypt(alice.encrypt(PLAINTEXT))
    return peers.StateSizes(
        fresh=fresh,
        with_skipped=len(bob.to_bytes()),
        skipped_kept=bob.skipped_key_count,
        fresh_receiver=fresh_receiver,
        wire_100=len(wire),
        form="Session.to_bytes() (canonical CBOR, not encrypted at rest); wire = message bytes",
    )


def size_rows(name: str, variant: str, sizes: peers.StateSizes | None, status: str) -> list[Row]:
    values: dict[str, float | None] = {
        "session_fresh": None,
        "session_500_skipped": None,
        "bytes_per_skipped_key": None,
        "wire_100": None,
        "wire_overhead": None,
    }
    note = ""
    if sizes is not None:
        values = {
            "session_fresh": sizes.fresh,
            "session_500_skipped": sizes.with_skipped,
            "bytes_per_skipped_key": sizes.per_skipped_key,
            "wire_100": sizes.wire_100,
            "wire_overhead": sizes.wire_100 - len(PLAINTEXT),
        }
        note = f"{sizes.form}; {sizes.skipped_kept} of 500 skipped keys kept"
    rows = []
    for metric, value in values.items():
        row = Row(metric, name, variant, SIZE_METRICS[metric], status=status, note=note)
        if value is not None:
            row.samples = [float(value)]
        rows.append(row)
    return rows


# --- running -----------------------------------------------------------------------------------


def _time(body: Workload) -> float:
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        out = body()
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    if out != PLAINTEXT:
        raise RuntimeError("a benchmark body did not decrypt its own messages")
    return elapsed


RATIO_PAIRS: tuple[tuple[str, str], ...] = (
    # (row, reference): per-round ratios recorded on the row
    ("stream/e2ee/PQXDH, HE off", "stream/floor/HE off"),
    ("stream/e2ee/X3DH, HE off", "stream/floor/HE off"),
    ("stream/e2ee/PQXDH, HE on", "stream/floor/HE on"),
    ("stream/e2ee/X3DH, HE on", "stream/floor/HE on"),
    ("stream/e2ee/PQXDH, HE off", "stream/syndace/defaults"),
    ("stream/e2ee/PQXDH, HE off", "stream/vodozemac/defaults"),
    ("stream/e2ee/PQXDH, HE off", "stream/python-olm/defaults"),
    ("pingpong/e2ee/PQXDH, HE off", "pingpong/floor/HE off"),
    ("pingpong/e2ee/X3DH, HE off", "pingpong/floor/HE off"),
    ("pingpong/e2ee/PQXDH, HE on", "pingpong/floor/HE on"),
    ("pingpong/e2ee/X3DH, HE on", "pingpong/floor/HE on"),
    ("pingpong/e2ee/PQXDH, HE off", "pingpong/syndace/defaults"),
    ("pingpong/e2ee/PQXDH, HE off", "pingpong/vodozemac/defaults"),
    ("pingpong/e2ee/PQXDH, HE off", "pingpong/python-olm/defaults"),
    ("setup/e2ee/PQXDH, HE off, 100 OPKs", "setup/floor/X3DH"),
    ("setup/e2ee/PQXDH, HE off, 100 OPKs", "setup/floor/PQXDH"),
    ("setup/e2ee/X3DH, HE off, 100 OPKs", "setup/floor/X3DH"),
    ("setup/e2ee/PQXDH, HE off, 100 OPKs", "setup/syndace/100 OPKs"),
    ("setup/e2ee/PQXDH, HE off, 100 OPKs", "setup/vodozemac/100 OPKs"),
    ("setup/e2ee/PQXDH, HE off, 100 OPKs", "setup/python-olm/100 OPKs"),
    ("setup/e2ee/PQXDH, HE off, 1000 OPKs", "setup/e2ee/PQXDH, HE off, 10 OPKs"),
    ("forged/e2ee/HE off, new chain, N = 1,000", "forged/vodozemac/defaults"),
)


def run(
    *,
    rounds: int,
    sizes: Sizes,
    peer_list: Sequence[Peer] = peers.PEERS,
    progress: Callable[[str], None] | None = None,
    warmup: bool = True,
) -> list[Row]:
    """Every contender, ``rounds`` times round-robin; then the sizes; then the ratios."""
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    rows = e2ee_rows()
    for peer in peer_list:
        rows.extend(peer_rows(peer))
    timed = [r for r in rows if r.prepare is not None]
    for row in timed:
        row.n = sizes.of(row.metric, row.slow)
        if row.metric == "setup" and row.contender != "floor":
            row.n = min(row.n, _stored(row))
    if warmup:  # imports, caches, first-call costs
        for row in list(timed):
            if not _timed_run(row, min(2, row.n)):
                timed.remove(row)
    started = time.perf_counter()
    for index in range(rounds):
        shift = index % len(timed) if timed else 0
        for row in timed[shift:] + timed[:shift]:
            if row.status == "ok":
                seconds = _timed_run(row, row.n)
                if seconds:
                    row.samples.append(row.n / seconds)
        if progress is not None:
            progress(f"round {index + 1}/{rounds} done ({time.perf_counter() - started:.1f} s)")
    for row in timed:
        if row.status != "ok":
            row.samples.clear()  # a peer that failed in some round: no partial figures
    by_key = {r.key: r for r in rows}
    for key, reference in RATIO_PAIRS:
        mine, other = by_key.get(key), by_key.get(reference)
        if mine is None or other is None or not mine.samples or not other.samples:
            continue
        mine.ratios[reference] = [a / b for a, b in zip(mine.samples, other.samples, strict=True)]
    rows.extend(size_rows("e2ee", "HE off", e2ee_sizes(False), "ok"))
    rows.extend(size_rows("e2ee", "HE on", e2ee_sizes(True), "ok"))
    for peer in peer_list:
        probe = peer.probe()
        if probe.installed:
            try:
                rows.extend(size_rows(peer.key, "defaults", peer.sizes(PLAINTEXT), "ok"))
            except Exception as exc:
                rows.extend(size_rows(peer.key, "defaults", None, f"failed: {exc!r}"))
        else:
            missing = size_rows(peer.key, "defaults", None, "not installed")
            for row in missing:
                row.note = probe.reason or ""
            rows.extend(missing)
    return rows


def _timed_run(row: Row, n: int) -> float | None:
    """Seconds for one prepared run of ``row``; None (and the row marked failed) when a peer
    raises. e2ee and the floor must not fail: their errors propagate."""
    assert row.prepare is not None
    try:
        return _time(row.prepare(n))
    except Exception as exc:
        if row.contender in ("e2ee", "floor"):
            raise
        row.status = f"failed: {type(exc).__name__}: {exc}"
        return None


def _stored(row: Row) -> int:
    """One-time prekeys a set-up row stores (parsed from its variant)."""
    for part in row.variant.split(", "):
        if part.endswith(" OPKs"):
            return int(part.split()[0])
    if row.note:
        return int(row.note.split()[0])
    return STORED_DEFAULT


# --- targets -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    row: str
    reference: str | None
    """None: an absolute figure (sizes); else the ratio against this row."""
    threshold: float
    at_most: bool = False
    stretch: bool = False


TARGETS = (
    Target("stream >= 0.85x floor", "stream/e2ee/PQXDH, HE off", "stream/floor/HE off", 0.85),
    Target("stream >= 3x Syndace", "stream/e2ee/PQXDH, HE off", "stream/syndace/defaults", 3),
    Target(
        "ping-pong >= 0.85x floor", "pingpong/e2ee/PQXDH, HE off", "pingpong/floor/HE off", 0.85
    ),
    Target(
        "ping-pong >= 3x Syndace", "pingpong/e2ee/PQXDH, HE off", "pingpong/syndace/defaults", 3
    ),
    Target(
        "ping-pong >= vodozemac (stretch)",
        "pingpong/e2ee/PQXDH, HE off",
        "pingpong/vodozemac/defaults",
        1.0,
        stretch=True,
    ),
    Target(
        "PQXDH setup >= 0.5x X3DH floor",
        "setup/e2ee/PQXDH, HE off, 100 OPKs",
        "setup/floor/X3DH",
        0.5,
    ),
    Target(
        "PQXDH setup >= 10x Syndace (100 OPKs)",
        "setup/e2ee/PQXDH, HE off, 100 OPKs",
        "setup/syndace/100 OPKs",
        10,
    ),
    Target(
        "setup flat: 1,000 vs 10 stored >= 0.9",
        "setup/e2ee/PQXDH, HE off, 1000 OPKs",
        "setup/e2ee/PQXDH, HE off, 10 OPKs",
        0.9,
    ),
    Target("session <= 512 B", "session_fresh/e2ee/HE off", None, 512, at_most=True),
    Target("<= 64 B per skipped key", "bytes_per_skipped_key/e2ee/HE off", None, 64, at_most=True),
    Target("wire overhead <= 96 B", "wire_overhead/e2ee/HE off", None, 96, at_most=True),
)


def evaluate(rows: Sequence[Row]) -> list[dict[str, Any]]:
    by_key = {r.key: r for r in rows}
    out = []
    for target in TARGETS:
        row = by_key.get(target.row)
        value: float | None = None
        if row is not None and target.reference is None:
            summary = row.summary()
            value = None if summary is None else summary["median"]
        elif row is not None and target.reference is not None:
            ratios = row.ratios.get(target.reference)
            value = statistics.median(ratios) if ratios else None
        met: bool | None = None
        if value is not None:
            met = value <= target.threshold if target.at_most else value >= target.threshold
        out.append(
            {
                "target": target.name,
                "row": target.row,
                "reference": target.reference,
                "threshold": target.threshold,
                "value": value,
                "met": met,
                "stretch": target.stretch,
            }
        )
    return out


# --- reporting ---------------------------------------------------------------------------------


def metadata(rounds: int, sizes: Sizes, elapsed: float, quick: bool) -> dict[str, Any]:
    meta = bench_core.metadata(rounds, bench_core.Sizes(), elapsed)
    meta["sizes"] = {m: sizes.of(m) for m in TIMED_METRICS}
    meta["quick"] = quick
    meta["peers"] = {}
    for peer in peers.PEERS:
        probe = peer.probe()
        meta["peers"][peer.key] = {
            "title": peer.title,
            "installed": probe.installed,
            "version": probe.version,
            "reason": probe.reason,
        }
    meta["machine"] = {"cpu_count": os.cpu_count(), "platform": platform.platform()}
    meta["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return meta


def _fmt(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.3f}"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}"


_REFERENCE_LABEL = {
    "floor": "floor",
    "syndace": "Syndace",
    "vodozemac": "vodozemac",
    "python-olm": "python-olm",
    "e2ee": "e2ee 10 OPKs",
}


METRIC_ORDER = (*TIMED_METRICS, *SIZE_METRICS)
METRIC_LABELS = {
    "setup": "setup",
    "pingpong": "ping-pong",
    "stream": "stream",
    "forged": "forged max-skip",
    "durable": "durable receive",
    "session_fresh": "session (fresh)",
    "session_500_skipped": "session, 500 skipped",
    "bytes_per_skipped_key": "per skipped key",
    "wire_100": "wire, 100 B message",
    "wire_overhead": "wire overhead",
}


def display_order(rows: Sequence[Row]) -> list[Row]:
    """Rows grouped by metric (in METRIC_ORDER), contenders in their original order."""
    return sorted(rows, key=lambda r: METRIC_ORDER.index(r.metric))


def table_rows(rows: Sequence[Row]) -> list[list[str]]:
    lines = []
    for row in display_order(rows):
        summary = row.summary()
        if summary is None:
            median = spread = ""
        else:
            median = _fmt(summary["median"], row.unit)
            spread = (
                ""
                if len(row.values()) < 2
                else f"{_fmt(summary['min'], row.unit)}-{_fmt(summary['max'], row.unit)}"
            )
        ratios = []
        for reference, values in row.ratios.items():
            label = _REFERENCE_LABEL.get(reference.split("/")[1], reference)
            if reference.split("/")[1] == "floor" and row.metric == "setup":
                label = f"{reference.split('/')[2]} floor"
            ratios.append(f"{statistics.median(values):.2f}x {label}")
        status = "" if row.status == "ok" else row.status
        lines.append(
            [
                METRIC_LABELS[row.metric],
                row.contender,
                row.variant,
                median,
                spread,
                row.unit,
                "; ".join(ratios),
                status,
            ]
        )
    return lines


HEADERS = ["metric", "contender", "variant", "median", "min-max", "unit", "ratios (median)", ""]


def render(rows: Sequence[Row], targets: Sequence[dict[str, Any]], meta: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 150))
    table = Table(
        title=f"e2ee {meta['e2ee']} vs peers - {meta['rounds']} rounds, round-robin",
        show_lines=False,
    )
    for header in HEADERS:
        table.add_column(header, justify="right" if header in ("median", "min-max") else "left")
    previous = None
    for line in table_rows(rows):
        if previous is not None and line[0] != previous:
            table.add_section()
        previous = line[0]
        table.add_row(*line)
    console.print(table)
    targets_table = Table(title="targets (HE off; ratios are medians of same-round ratios)")
    for header in ("target", "value", "threshold", "met"):
        targets_table.add_column(header)
    for t in targets:
        value = "" if t["value"] is None else f"{t['value']:.2f}"
        met = {True: "yes", False: "NO", None: "n/a (peer missing)"}[t["met"]]
        targets_table.add_row(t["target"], value, f"{t['threshold']:g}", met)
    console.print(targets_table)


def write_chart(rows: Sequence[Row], path: Path) -> str | None:
    """A PNG of the timed metrics and the sizes; returns why not, if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"matplotlib not installed ({exc})"
    panels = [
        ("setup", "sessions set up / s"),
        ("pingpong", "ping-pong msg / s"),
        ("stream", "stream msg / s"),
        ("forged", "forged max-skip message: ms to reject"),
        ("session_fresh", "established session, bytes"),
        ("wire_overhead", "100-byte message: wire overhead, bytes"),
    ]
    figure, axes = plt.subplots(3, 2, figsize=(14, 15))
    for axis, (metric, title) in zip(axes.flat, panels, strict=True):
        chosen = [r for r in rows if r.metric == metric and r.summary() is not None]
        labels = [f"{r.contender}\n{r.variant}" for r in chosen]
        medians = [r.summary()["median"] for r in chosen]  # type: ignore[index]
        lows = [m - r.summary()["min"] for m, r in zip(medians, chosen, strict=True)]  # type: ignore[index]
        highs = [r.summary()["max"] - m for m, r in zip(medians, chosen, strict=True)]  # type: ignore[index]
        colours = [
            {"e2ee": "tab:blue", "floor": "tab:gray"}.get(r.contender, "tab:orange") for r in chosen
        ]
        positions = list(range(len(chosen)))
        axis.barh(positions, medians, xerr=[lows, highs], color=colours, capsize=3)
        axis.set_yticks(positions, labels, fontsize=7)
        axis.invert_yaxis()
        axis.set_title(title, fontsize=10)
        if metric in ("setup", "pingpong", "stream", "forged") and medians:
            axis.set_xscale("log")
        missing = [r.contender for r in rows if r.metric == metric and r.status != "ok"]
        if missing:
            axis.text(
                0.99,
                0.01,
                "not installed: " + ", ".join(sorted(set(missing))),
                transform=axis.transAxes,
                ha="right",
                va="bottom",
                fontsize=7,
            )
    figure.suptitle("e2ee vs the bare-primitive floor and peer libraries (medians, min-max)")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="e2ee bench", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    add_arguments(parser)
    return run_command(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, required=True, help="directory for results.json and chart.png"
    )
    parser.add_argument("--rounds", type=int, help="rounds (default 7; --quick: 1)")
    parser.add_argument(
        "--quick", action="store_true", help="tiny runs: checks that everything works (seconds)"
    )


def run_command(args: argparse.Namespace) -> int:
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 7)
    if rounds < 1:
        print("e2ee bench: --rounds must be at least 1", file=sys.stderr)
        return 2
    sizes = QUICK if args.quick else FULL
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows = run(
        rounds=rounds,
        sizes=sizes,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
        warmup=not args.quick,
    )
    elapsed = time.perf_counter() - started
    targets = evaluate(rows)
    meta = metadata(rounds, sizes, elapsed, args.quick)
    chart_problem = write_chart(rows, out / "chart.png")
    meta["chart"] = chart_problem or "chart.png"
    (out / "results.json").write_text(
        json.dumps(
            {"meta": meta, "rows": [r.to_json() for r in rows], "targets": targets}, indent=1
        )
        + "\n"
    )
    render(rows, targets, meta)
    print(f"wrote {out / 'results.json'}" + ("" if chart_problem else f" and {out / 'chart.png'}"))
    if chart_problem:
        print(f"no chart: {chart_problem}")
    print(f"total {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
