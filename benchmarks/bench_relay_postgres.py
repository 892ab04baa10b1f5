"""Relay benchmark, PostgreSQL next to SQLite: one, two and three relay processes on one database.

Same load generator as :mod:`benchmarks.bench_relay` (a separate process, HTTP/1.1 keep-alive
over raw asyncio streams); with several relay processes its connections are spread round-robin
over them. Configurations, measured in one run, rounds interleaved so drift hits all alike:

* ``sqlite``: one ``e2ee relay serve`` on a SQLite file (WAL, synchronous=FULL, group commit);
* ``pg1``/``pg2``/``pg3``: one, two, three ``e2ee relay serve --db postgresql://...`` processes
  on one fresh schema (each process: a pool of 8 connections, a transaction per request).

Workloads: ``sends`` (accepted sends/s, p50, p99) and ``claims`` (claims/s, keys handed out twice
must be 0). PostgreSQL: ``E2EE_TEST_POSTGRES_URL``, or a throwaway server from
``.ci/postgres.sh`` started and stopped here.

Usage::

    .venv/bin/python benchmarks/bench_relay_postgres.py [--duration S] [--conns N] [--rounds R]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_relay import ROOT, Result, run_load, server

CONFIGS = ("sqlite", "pg1", "pg2", "pg3")


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    url = os.environ.get("E2EE_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    out = subprocess.run(
        ["bash", str(ROOT / ".ci" / "postgres.sh"), "start"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    env = dict(
        line.removeprefix("export ").split("=", 1) for line in out.splitlines() if "=" in line
    )
    try:
        yield env["E2EE_TEST_POSTGRES_URL"].strip("'")
    finally:
        subprocess.run(
            ["bash", str(ROOT / ".ci" / "postgres.sh"), "stop", env["E2EE_PG_DIR"].strip("'")],
            check=False,
            capture_output=True,
        )


@contextlib.contextmanager
def schema(server_url: str, name: str) -> Iterator[str]:
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}".encode())
    sep = "&" if "?" in server_url else "?"
    try:
        yield f"{server_url}{sep}options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE".encode())


@contextlib.contextmanager
def relays(config: str, tmp: Path, server_url: str) -> Iterator[str]:
    """Comma-separated URLs of the configuration's relay processes."""
    with contextlib.ExitStack() as stack:
        if config == "sqlite":
            yield stack.enter_context(server("relay", tmp / "bench.sqlite"))
            return
        db = stack.enter_context(schema(server_url, f"bench_{config}"))
        urls = [stack.enter_context(server("relay", db)) for _ in range(int(config[2:]))]
        yield ",".join(urls)


def measure(duration: float, conns: int, rounds: int) -> dict[str, Any]:
    results: dict[str, dict[str, list[Result]]] = {c: {"sends": [], "claims": []} for c in CONFIGS}
    with (
        postgres_server() as pg,
        tempfile.TemporaryDirectory() as tmp,
        contextlib.ExitStack() as stack,
    ):
        urls = {c: stack.enter_context(relays(c, Path(tmp), pg)) for c in CONFIGS}
        for _ in range(rounds):
            for c in CONFIGS:
                first = urls[c].split(",")[0]
                for workload in ("sends", "claims"):
                    results[c][workload].append(
                        run_load(urls[c], workload, conns, duration, c, first)
                    )
    summary: dict[str, Any] = {}
    for c, per in results.items():
        summary[c] = {}
        for workload, rs in per.items():
            summary[c][workload] = {
                "per_s": statistics.median(r.rate for r in rs),
                "p50_ms": statistics.median(r.p50_ms for r in rs),
                "p99_ms": statistics.median(r.p99_ms for r in rs),
                "errors": sum(r.errors for r in rs),
                "duplicates": sum(r.duplicates for r in rs),
                "runs": [asdict(r) for r in rs],
            }
    summary["config"] = {
        "duration_s": duration,
        "connections": conns,
        "rounds": rounds,
        "cpus": os.cpu_count(),
    }
    return summary


def render(summary: dict[str, Any]) -> str:
    labels = {
        "sqlite": "SQLite, 1 process",
        "pg1": "PostgreSQL, 1 process",
        "pg2": "PostgreSQL, 2 processes",
        "pg3": "PostgreSQL, 3 processes",
    }
    lines = [
        f"{'backend':<26}{'sends/s':>9}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'claims/s':>10}{'p99 ms':>8}{'errors':>8}{'dups':>6}"
    ]
    for c, label in labels.items():
        s, k = summary[c]["sends"], summary[c]["claims"]
        lines.append(
            f"{label:<26}{s['per_s']:>9,.0f}{s['p50_ms']:>8.2f}{s['p99_ms']:>8.2f}"
            f"{k['per_s']:>10,.0f}{k['p99_ms']:>8.2f}"
            f"{s['errors'] + k['errors']:>8}{k['duplicates']:>6}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument("--conns", type=int, default=24, help="concurrent connections")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--json", type=Path)
    options = parser.parse_args(argv)
    summary = measure(options.duration, options.conns, options.rounds)
    print(render(summary))
    if options.json:
        options.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
