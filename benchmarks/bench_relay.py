"""Relay benchmark: a load generator (separate processes) against a real uvicorn relay on loopback.

Measured in one run, against two servers started here:

* the relay (``e2ee relay serve``, SQLite in a temporary directory, WAL, synchronous=FULL,
  group commit);
* the *ceiling*: the same uvicorn + Starlette stack answering ``POST /v1/messages`` after reading
  the body with the relay's own size-limited reader, with no storage and no rules;
* for reference, the relay with ``--db :memory:`` (the same app and rules, no durable
  storage, not a deployable configuration): the gap between it and the ceiling is what the
  relay's request handling costs (parsing, authentication, checks), and the gap between it and
  the SQLite relay is what durability costs. It answers each request as soon as its job ran,
  with no group commit, so it is not an upper bound for the SQLite relay: in some runs it is
  the slower of the two.

Workloads (each connection sends its next request when the previous answer arrived):

* ``sends``: accepted sends (one recipient device, 100-byte payload envelope) -> sends/s, p50,
  p99, next to the ceiling and the in-memory relay answering the same requests;
* ``cycles``: send, fetch (GET), acknowledge (POST) -> full cycles/s, duplicates delivered;
* ``claims``: bundle claims of targets holding 1,000 one-time keys each -> claims/s, and the
  number of one-time keys handed out twice (must be 0).

The load generator speaks HTTP/1.1 keep-alive over raw asyncio streams (httpx would be the
bottleneck on 2 cores).

Usage::

    .venv/bin/python benchmarks/bench_relay.py [--duration S] [--conns N] [--rounds R] [--json PATH]
        [--stack h11|fast]

``--stack`` picks the HTTP stack of all three servers (``e2ee relay serve --stack``; h11 by
default): the ceiling always runs the same stack as the relay it is compared with.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from e2ee.account import Account
from e2ee.client.envelope import Envelope
from e2ee.identity import UserIdentity
from e2ee.relay import api
from e2ee.relay.serve import STACKS
from e2ee.wire import codec

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = b"p" * 100
HOST = "127.0.0.1"


# --- the ceiling server ------------------------------------------------------------------------


def ceiling_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from e2ee.errors import RelayError
    from e2ee.relay.app import bearer, error_response, read_body

    answer = codec.encode({0: 1})

    async def messages(request: Request) -> Response:
        try:
            bearer(request.headers)
            await read_body(request, 8 * 1024 * 1024)
        except RelayError as error:
            return error_response(error)
        return Response(answer, media_type=api.CONTENT_TYPE)

    async def health(request: Request) -> Response:
        return Response(answer, media_type=api.CONTENT_TYPE)

    return Starlette(
        routes=[
            Route(api.MESSAGES, messages, methods=["POST"]),
            Route(api.HEALTH, health, methods=["GET"]),
        ]
    )


def serve_ceiling(port: int, stack: str = "h11") -> None:
    import uvicorn

    from e2ee.relay.serve import limit_socket_reads, server_options

    limit_socket_reads()  # as ``e2ee relay serve`` does: the same HTTP stack
    uvicorn.run(ceiling_app(), host=HOST, port=port, log_level="warning", **server_options(stack))


# --- server processes ------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def server(kind: str, db: Path | str | None = None, stack: str = "h11") -> Iterator[str]:
    """``kind`` "relay" (``db``: a SQLite file, ``:memory:`` or a ``postgresql://`` URL) or
    "ceiling"."""
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=f"{ROOT}:{ROOT / 'src'}")
    if kind == "relay":
        assert db is not None
        args = ["-m", "e2ee.cli", "relay", "serve", "--port", str(port), "--db", str(db)]
        args += ["--claim-burst", "1000000000", "--claim-rate", "1000000", "--stack", stack]
    else:
        args = ["-m", "benchmarks.bench_relay", "ceiling", str(port), stack]
    proc = subprocess.Popen([sys.executable, *args], env=env, cwd=ROOT)
    url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{kind} server did not start")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + api.HEALTH, timeout=1).status_code == 200:
                    break
            time.sleep(0.02)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --- devices (no client store: the relay never decrypts) ---------------------------------------


@dataclass
class Dev:
    user: str
    account: Account
    token: str = ""

    @property
    def auth(self) -> bytes:
        return b"authorization: Bearer " + self.token.encode() + b"\r\n"


def _register(http: httpx.Client, url: str, name: str) -> Dev:
    identity, account = UserIdentity.generate(), Account.generate()
    signed = identity.sign_device_list(name, 1, {1: account.identity_key}).to_bytes()
    http.put(api.DEVICE_LIST, content=codec.encode({0: signed})).raise_for_status()
    r = http.post(api.CHALLENGE, content=codec.encode({0: name.encode(), 1: 1}))
    challenge = codec.decode(r.content, max_size=1024)[0]
    payload = api.login_payload(url, challenge, name, 1)
    signature = account.sign_relay_login(payload)
    body = codec.encode({0: name.encode(), 1: 1, 2: challenge, 3: signature})
    r = http.post(api.LOGIN, content=body)
    r.raise_for_status()
    dev = Dev(name, account, api.encode_token(codec.decode(r.content, max_size=1024)[0]))
    return dev


def _upload(http: httpx.Client, dev: Dev, keys: int) -> None:
    dev.account.generate_one_time_prekeys(keys)
    ec, kem = (
        dev.account.unpublished_one_time_prekeys(),
        dev.account.unpublished_one_time_kem_prekeys(),
    )
    for i in range(0, keys, 100):
        body = api.KeyUpload(
            dev.account.signed_prekey_bundle().to_bytes(),
            tuple(api.OneTimeKey(*k) for k in ec[i : i + 100]),
            tuple(api.OneTimeKey(*k) for k in kem[i : i + 100]),
        ).to_bytes()
        r = http.put(api.KEYS, content=body, headers={"authorization": "Bearer " + dev.token})
        r.raise_for_status()


def _request(method: str, path: str, dev: Dev | None, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nhost: relay\r\n".encode()
    if dev is not None:
        head += dev.auth
    if method == "POST":
        head += b"content-type: application/cbor\r\ncontent-length: %d\r\n" % len(body)
    return head + b"\r\n" + body


def _send_request(sender: Dev, recipient: Dev) -> tuple[bytes, bytes]:
    mid = os.urandom(16)
    envelope = Envelope(sender.user, 1, recipient.user, 1, mid, PAYLOAD).to_bytes()
    body = api.SendRequest(
        recipient.user, mid, ((1, recipient.account.identity_key, envelope),)
    ).to_bytes()
    return mid, _request("POST", api.MESSAGES, sender, body)


# --- the load generator ----------------------------------------------------------------------


async def _roundtrip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    at = lower.find(b"content-length:")
    length = int(lower[at + 15 : lower.find(b"\r\n", at)]) if at >= 0 else 0
    return status, await reader.readexactly(length)


@dataclass
class Result:
    workload: str
    target: str
    count: int
    seconds: float
    errors: int
    duplicates: int
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def load(
    url: str, workload: str, conns: int, duration: float, target: str, *, keys: int = 1000
) -> Result:
    """Run in the load-generator process: set up devices, then drive ``conns`` connections.
    ``url`` may list several relay processes separated by commas: connection i goes to the
    (i mod n)-th."""
    ports = [int(u.rsplit(":", 1)[1]) for u in url.split(",")]
    relay_url = os.environ.get("BENCH_RELAY_URL", url.split(",")[0])
    tag = os.urandom(4).hex()
    with httpx.Client(base_url=relay_url, timeout=60) as http:
        senders = [_register(http, relay_url, f"s{tag}{i}") for i in range(conns)]
        recipients = [_register(http, relay_url, f"r{tag}{i}") for i in range(conns)]
        targets: list[Dev] = []
        if workload == "claims":
            targets = [_register(http, relay_url, f"t{tag}{i}") for i in range(conns)]
            for t in targets:
                _upload(http, t, keys)
    latencies: list[float] = []
    errors = 0
    seen: set[tuple[str, int]] = set()
    delivered: set[bytes] = set()
    duplicates = 0
    count = 0

    async def worker(i: int, deadline: float) -> None:
        nonlocal errors, duplicates, count
        reader, writer = await asyncio.open_connection(HOST, ports[i % len(ports)])
        sender, recipient = senders[i], recipients[i]
        try:
            while time.perf_counter() < deadline:
                if workload == "sends":
                    _, request = _send_request(sender, recipient)
                    t0 = time.perf_counter()
                    status, _ = await _roundtrip(reader, writer, request)
                    latencies.append(time.perf_counter() - t0)
                    errors += status != 200
                    count += status == 200
                elif workload == "cycles":
                    mid, request = _send_request(sender, recipient)
                    t0 = time.perf_counter()
                    status, _ = await _roundtrip(reader, writer, request)
                    fetch = _request("GET", api.MESSAGES + "?limit=100", recipient)
                    status2, body = await _roundtrip(reader, writer, fetch)
                    rows = codec.decode(body, max_size=1 << 24)[0] if status2 == 200 else []
                    for _, envelope in rows:
                        got = Envelope.from_bytes(envelope).message_id
                        duplicates += got in delivered
                        delivered.add(got)
                    ack = codec.encode({0: [r[0] for r in rows]})
                    status3, _ = await _roundtrip(
                        reader, writer, _request("POST", api.ACK, recipient, ack)
                    )
                    latencies.append(time.perf_counter() - t0)
                    ok = status == status2 == status3 == 200 and mid in {
                        Envelope.from_bytes(e).message_id for _, e in rows
                    }
                    errors += not ok
                    count += ok
                else:
                    t = targets[(i + count) % len(targets)]
                    claim = codec.encode({0: t.user.encode(), 1: os.urandom(16)})
                    t0 = time.perf_counter()
                    status, body = await _roundtrip(
                        reader, writer, _request("POST", api.CLAIM, sender, claim)
                    )
                    latencies.append(time.perf_counter() - t0)
                    if status != 200:
                        errors += 1
                        continue
                    bundle = codec.decode(
                        codec.decode(body, max_size=1 << 20)[0][0][1], max_size=1 << 16
                    )
                    key_id = bundle.get(9)
                    if key_id is not None:
                        duplicates += (t.user, key_id) in seen
                        seen.add((t.user, key_id))
                    count += 1
        finally:
            writer.close()

    async def run_all() -> float:
        start = time.perf_counter()
        deadline = start + duration
        await asyncio.gather(*(worker(i, deadline) for i in range(conns)))
        return time.perf_counter() - start

    seconds = asyncio.run(run_all())
    return Result(
        workload,
        target,
        count,
        seconds,
        errors,
        duplicates,
        _percentile(latencies, 0.5),
        _percentile(latencies, 0.99),
    )


def run_load(
    url: str, workload: str, conns: int, duration: float, target: str, relay_url: str
) -> Result:
    """Start a load-generator process and collect its result."""
    env = dict(os.environ, PYTHONPATH=f"{ROOT}:{ROOT / 'src'}", BENCH_RELAY_URL=relay_url)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.bench_relay",
            "load",
            url,
            workload,
            str(conns),
            str(duration),
            target,
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=600,
    )
    data = json.loads(out.stdout.decode().strip().splitlines()[-1])
    return Result(**data)


# --- the report --------------------------------------------------------------------------------


def measure(duration: float, conns: int, rounds: int, stack: str = "h11") -> dict[str, Any]:
    results: dict[str, list[Result]] = {
        "ceiling": [],
        "sends": [],
        "sends_in_memory": [],
        "cycles": [],
        "claims": [],
    }
    with (
        tempfile.TemporaryDirectory() as tmp,
        server("relay", Path(tmp) / "bench.sqlite", stack) as relay,
        server("ceiling", stack=stack) as ceiling,
        server("relay", ":memory:", stack) as in_memory,
    ):
        for _ in range(rounds):  # interleaved, so drift hits all alike
            results["ceiling"].append(run_load(ceiling, "sends", conns, duration, "ceiling", relay))
            results["sends"].append(run_load(relay, "sends", conns, duration, "relay", relay))
            results["sends_in_memory"].append(
                run_load(in_memory, "sends", conns, duration, "relay-memory", in_memory)
            )
        for _ in range(rounds):
            results["cycles"].append(run_load(relay, "cycles", conns, duration, "relay", relay))
            results["claims"].append(run_load(relay, "claims", conns, duration, "relay", relay))

    def med(rs: list[Result], f: Callable[[Result], float]) -> float:
        return statistics.median(f(r) for r in rs)

    summary: dict[str, Any] = {}
    for name, rs in results.items():
        summary[name] = {
            "per_s": med(rs, lambda r: r.rate),
            "p50_ms": med(rs, lambda r: r.p50_ms),
            "p99_ms": med(rs, lambda r: r.p99_ms),
            "errors": sum(r.errors for r in rs),
            "duplicates": sum(r.duplicates for r in rs),
            "runs": [asdict(r) for r in rs],
        }
    ceiling_rate = summary["ceiling"]["per_s"]
    summary["sends_vs_ceiling"] = summary["sends"]["per_s"] / ceiling_rate if ceiling_rate else 0.0
    summary["sends_vs_ceiling_per_round"] = [  # each round's pair ran back to back: same drift
        s.rate / c.rate if c.rate else 0.0
        for c, s in zip(results["ceiling"], results["sends"], strict=True)
    ]
    in_memory_rate = summary["sends_in_memory"]["per_s"]
    summary["in_memory_vs_ceiling"] = in_memory_rate / ceiling_rate if ceiling_rate else 0.0
    summary["config"] = {
        "duration_s": duration,
        "connections": conns,
        "rounds": rounds,
        "stack": stack,
    }
    return summary


def render(summary: dict[str, Any]) -> str:
    lines = [
        f"{'workload':<28}{'per s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'dups':>6}",
    ]
    labels = {
        "ceiling": "ceiling (HTTP, no storage)",
        "sends": "accepted sends",
        "sends_in_memory": "sends, in-memory relay",
        "cycles": "send+deliver+ack cycles",
        "claims": "claims",
    }
    for key, label in labels.items():
        s = summary.get(key)
        if s is None:  # (a summary written before the in-memory reference existed)
            continue
        lines.append(
            f"{label:<28}{s['per_s']:>10,.0f}{s['p50_ms']:>9.2f}{s['p99_ms']:>9.2f}"
            f"{s['errors']:>8}{s['duplicates']:>6}"
        )
    per_round = " ".join(f"{r:.2f}" for r in summary.get("sends_vs_ceiling_per_round", []))
    lines.append(f"sends / ceiling: {summary['sends_vs_ceiling']:.2f} (per round: {per_round})")
    if "in_memory_vs_ceiling" in summary:
        lines.append(
            f"in-memory relay / ceiling: {summary['in_memory_vs_ceiling']:.2f} "
            "(reference: the relay's rules without durable storage)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["ceiling"]:
        serve_ceiling(int(args[1]), *args[2:3])
        return 0
    if args[:1] == ["load"]:
        url, workload, conns, duration, target = args[1:6]
        result = load(url, workload, int(conns), float(duration), target)
        print(json.dumps(asdict(result)), flush=True)
        return 0
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument("--conns", type=int, default=16, help="concurrent connections")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--stack",
        choices=STACKS,
        default="h11",
        help="the HTTP stack of all three servers (e2ee relay serve --stack)",
    )
    options = parser.parse_args(args)
    summary = measure(options.duration, options.conns, options.rounds, options.stack)
    print(render(summary))
    if options.json:
        options.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
