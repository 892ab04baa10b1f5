"""``e2ee`` command-line entry point: argparse, ``main(argv) -> int``."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import e2ee
from e2ee.cli import client_commands, demo, relay_tickets


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e2ee",
        description="End-to-end encryption for one-to-one chat (PQXDH + Double Ratchet).",
        epilog=(
            "examples:\n  e2ee demo\n"
            "  e2ee --home ~/.e2ee-alice init --relay http://127.0.0.1:8080 --name alice\n"
            "  e2ee send bob 'hello'\n  e2ee receive --follow\n  e2ee vectors verify\n"
            "  e2ee conformance run -- e2ee conformance serve\n\n"
            + client_commands.exit_codes_help()
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"e2ee {e2ee.__version__}")
    client_commands.add_global_options(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo_parser = commands.add_parser(
        "demo",
        help="run two users with two devices each through a real local relay",
        description=(
            "Start a relay on a free loopback port (SQLite in a temporary directory), create "
            "alice and bob with two devices each, set up PQXDH sessions from claimed bundles, "
            "exchange messages (out of order, a duplicate, a wiped and relinked device), then "
            "show what each device read, what the relay stored (ciphertext only), the safety "
            "numbers and timings. Exits 0 when every check passed, 1 otherwise; removes "
            "everything it made."
        ),
        epilog="examples:\n  e2ee demo\n  e2ee demo --json | jq .checks",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo_parser.add_argument("--json", action="store_true", help="machine-readable output")
    demo_parser.add_argument(
        "--no-header-encryption", action="store_true", help="run with header encryption off"
    )
    _add_vectors_parser(commands)
    _add_conformance_parser(commands)
    _add_relay_parser(commands)
    _add_bench_parser(commands)
    client_commands.add_parsers(commands, _positive(MAX_TIMEOUT, " seconds"))
    return parser


def _add_vectors_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    vectors = commands.add_parser(
        "vectors",
        help="verify or regenerate the language-neutral test vectors",
        description="Verify or regenerate the language-neutral test vectors (test_vectors/).",
        epilog="examples:\n  e2ee vectors verify\n  e2ee vectors generate --out test_vectors",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    vectors.set_defaults(vectors_parser=vectors)
    actions = vectors.add_subparsers(dest="vectors_command", metavar="ACTION")
    verify = actions.add_parser(
        "verify",
        help="check every vector file against this implementation",
        description=(
            "Check every vector file against this implementation. Prints one line per file "
            "and, last, 'N passed, M failed'; exits 0 only when M is 0."
        ),
        epilog="examples:\n  e2ee vectors verify\n  e2ee vectors verify path/to/test_vectors",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument(
        "dir", nargs="?", type=Path, help="vector directory (default: the bundled test_vectors)"
    )
    generate = actions.add_parser(
        "generate",
        help="regenerate every vector file deterministically",
        description=(
            "Regenerate every vector file, its JSON Schema and MANIFEST.json, byte for byte "
            "the same on every run."
        ),
        epilog="example:\n  e2ee vectors generate --out test_vectors",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    generate.add_argument("--out", type=Path, required=True, help="output directory")


def _run_vectors(args: argparse.Namespace) -> int:
    if args.vectors_command == "verify":
        from e2ee.vectors.verify import verify_dir

        report = verify_dir(args.dir)
        return 0 if report.failed == 0 else 1
    if args.vectors_command == "generate":
        from e2ee.vectors.generate import generate

        files = generate(args.out)
        print(f"wrote {len(files)} files to {args.out}")
        return 0
    args.vectors_parser.print_help()
    return 2


def _add_conformance_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    conformance = commands.add_parser(
        "conformance",
        help="test another implementation against the vectors (JSON-lines adapter protocol)",
        description=(
            "Drive an implementation through every test vector over the JSON-lines protocol "
            "of spec/conformance.md, or act as such an implementation."
        ),
        epilog=(
            "examples:\n  e2ee conformance run -- e2ee conformance serve\n"
            "  e2ee conformance run --area x25519 -- ./my-adapter --flag"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    conformance.set_defaults(conformance_parser=conformance)
    actions = conformance.add_subparsers(dest="conformance_command", metavar="ACTION")
    run = actions.add_parser(
        "run",
        help="run every vector case against an adapter command",
        description=(
            "Start COMMAND, exchange hello, send one request per operation of every vector "
            "case in the areas the adapter announces, and compare the responses. Prints one "
            "line per area and, last, 'N passed, M failed'; exits 0 only when M is 0 and N > 0."
        ),
        epilog=(
            "examples:\n  e2ee conformance run -- e2ee conformance serve\n"
            "  e2ee conformance run --timeout 30 -- java -jar my-adapter.jar"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "--vectors", type=Path, help="vector directory (default: the bundled test_vectors)"
    )
    run.add_argument(
        "--area",
        action="append",
        default=[],
        metavar="AREA",
        help="run only this area (a vector file name without .json); repeatable",
    )
    seconds = _positive(MAX_TIMEOUT, " seconds")
    run.add_argument(
        "--timeout",
        type=seconds,
        default=10.0,
        help="seconds per request, above 0, at most 86400 (default: 10)",
    )
    run.add_argument(
        "--startup-timeout",
        type=seconds,
        default=30.0,
        help="seconds for the adapter to start and answer hello, at most 86400 (default: 30)",
    )
    run.add_argument(
        "--max-restarts",
        type=_integer(0),
        default=3,
        help="restarts of an adapter that crashed or hung before giving up (default: 3)",
    )
    run.add_argument("--verbose", action="store_true", help="list every failure")
    run.add_argument(
        "adapter", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]", help="the adapter"
    )
    actions.add_parser(
        "serve",
        help="act as an adapter: e2ee itself under the conformance protocol",
        description=(
            "Read conformance requests on stdin and answer them on stdout with e2ee "
            "(one JSON object per line)."
        ),
        epilog="example:\n  e2ee conformance run -- e2ee conformance serve",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _run_conformance(args: argparse.Namespace) -> int:
    if args.conformance_command == "serve":
        from e2ee.conformance.serve import serve

        return serve()
    if args.conformance_command == "run":
        from e2ee.conformance.runner import run

        command = list(args.adapter)
        if command and command[0] == "--":
            command = command[1:]
        if not command:
            args.conformance_parser.error("run needs an adapter: e2ee conformance run -- COMMAND")
        report = run(
            command,
            vectors=args.vectors,
            timeout=args.timeout,
            startup_timeout=args.startup_timeout,
            max_restarts=args.max_restarts,
            areas=args.area,
            verbose=args.verbose,
        )
        return 0 if report.ok else 1
    args.conformance_parser.print_help()
    return 2


MAX_TIMEOUT = 24 * 3600.0
"""The longest ``--timeout`` / ``--startup-timeout`` (and ``receive --idle``): a day. A wait
that long is a hang to whoever runs the tests, and the waits take no more than about 292 years
(a C time_t), which ``float()`` exceeds by far."""


def _integer(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` to ``high`` (no upper bound when None)."""
    bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{_shown(text)} is not an integer") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{_shown(text)}: must be an integer {bounds}")
        return value

    return parse


def _positive(high: float = math.inf, unit: str = "") -> Callable[[str], float]:
    """An argparse type: a number above 0, finite and at most ``high``. ``float()`` also reads
    "nan", "inf" and "1e999"; none of them is a rate or a timeout."""
    bounds = (
        "a finite number above 0" if high == math.inf else f"a number above 0, at most {high:g}"
    )

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{_shown(text)} is not a number") from None
        if not 0 < value <= high or value == math.inf:  # NaN compares false
            raise argparse.ArgumentTypeError(f"{_shown(text)}: must be {bounds}{unit}")
        return value

    return parse


def _public_key(text: str) -> bytes:
    """An argparse type: an Ed25519 public key as 64 hex digits (a valid curve point)."""
    from e2ee.crypto import primitives

    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32 or not primitives.ed25519_is_valid_public_key(key):
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not an Ed25519 public key (hex)")
    return key


def _shown(text: str) -> str:
    """A command-line value in an error message: quoted, escaped, cut short."""
    shown = repr(text[:40] + ("..." if len(text) > 40 else ""))
    return shown.encode("ascii", "backslashreplace").decode("ascii")


def _add_relay_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    relay = commands.add_parser(
        "relay",
        help="run the relay (prekey directory and mailboxes over HTTP/WebSocket)",
        description="The relay of spec/relay.md: SQLite storage by default, uvicorn.",
        epilog=(
            "examples:\n  e2ee relay serve --host 127.0.0.1 --port 8080 --db relay.sqlite\n"
            "  e2ee relay ticket-key --out authority.key\n"
            "  e2ee relay ticket --key authority.key --origin http://127.0.0.1:8080 "
            "--user alice --user-key HEX --out alice.ticket"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    relay.set_defaults(relay_parser=relay)
    actions = relay.add_subparsers(dest="relay_command", metavar="ACTION")
    serve = actions.add_parser(
        "serve",
        help="serve the relay until interrupted",
        description="Serve the relay on HOST:PORT with its state in DB (a SQLite file).",
        epilog="example:\n  e2ee relay serve --port 8080 --db relay.sqlite",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.set_defaults(relay_serve_parser=serve)
    serve.add_argument("--host", default="127.0.0.1", help="address (default: 127.0.0.1)")
    serve.add_argument(
        "--port", type=_integer(0, 65535), default=8080, help="TCP port, 0-65535 (default: 8080)"
    )
    serve.add_argument(
        "--db",
        default="relay.sqlite",
        help="SQLite file, :memory:, or a postgresql:// URL (default: relay.sqlite)",
    )
    serve.add_argument(
        "--origin",
        help="origin clients sign in their login (default: http://HOST:PORT)",
    )
    serve.add_argument(
        "--stack",
        choices=("h11", "fast"),
        default="h11",
        help="HTTP stack: h11 (default: pure-Python parser, asyncio), or fast (the 'fast' "
        "extra: httptools parser and uvloop, about 1.5x the sends/s); both refuse request "
        "heads over 16 KiB",
    )
    serve.add_argument(
        "--claim-burst",
        type=_integer(1),
        default=50,
        help="claims a user may make of one target user at once, at least 1 (default: 50)",
    )
    serve.add_argument(
        "--claim-rate",
        type=_positive(),
        default=1.0,
        help="claims per second refilled per (claimer, target), above 0 (default: 1)",
    )
    serve.add_argument(
        "--registration-key",
        type=_public_key,
        metavar="HEX",
        help="the platform's registration authority (Ed25519 public key, 64 hex digits, as "
        "`e2ee relay ticket-key` prints it): a new user registers only with a ticket it signed "
        "(`e2ee relay ticket`) (default: open registration)",
    )
    relay_tickets.add_parsers(actions, _public_key, _integer)


def _run_relay(args: argparse.Namespace) -> int:
    if args.relay_command == "serve":
        from e2ee.errors import RelayUnavailableError
        from e2ee.relay.rules import RelayConfig
        from e2ee.relay.serve import serve
        from e2ee.terminal import clean

        try:
            config = RelayConfig(
                claim_burst=args.claim_burst,
                claim_rate=args.claim_rate,
                registration_key=args.registration_key,
            )
        except ValueError:  # each is valid alone: the burst is too large for the rate
            args.relay_serve_parser.error(
                f"argument --claim-rate: {args.claim_rate:g} never refills a bucket of "
                f"--claim-burst {args.claim_burst}"
            )
        try:
            return serve(
                args.host, args.port, args.db, origin=args.origin, config=config, stack=args.stack
            )
        except (RelayUnavailableError, OSError) as exc:
            # The reason may hold operator input (the host) and OS text: shown cleaned, as one
            # line of visible escapes.
            reason = clean(str(exc)) or type(exc).__name__
            print(f"e2ee relay serve: {reason}", file=sys.stderr)
            return 1
    if args.relay_command == "ticket-key":
        return relay_tickets.run_ticket_key(args)
    if args.relay_command == "ticket":
        return relay_tickets.run_ticket(args)
    args.relay_parser.print_help()
    return 2


def _add_bench_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = commands.add_parser(
        "bench",
        help="benchmark e2ee against the primitive floor and the peer libraries",
        description=(
            "Benchmark e2ee (PQXDH/X3DH, header encryption on/off), the bare-primitive floor "
            "and every installed peer (the 'bench' extra: doubleratchet + x3dh, vodozemac, "
            "python-olm) in one interleaved run; prints a table and writes results.json and "
            "chart.png to DIR. Installs nothing; a missing peer is reported as not installed. "
            "Needs the source tree's benchmarks/ directory (a checkout)."
        ),
        epilog="examples:\n  e2ee bench --out bench-results\n  e2ee bench --out /tmp/b --quick",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    bench.add_argument("--rounds", type=int, help="rounds (default 7; with --quick 1)")
    bench.add_argument(
        "--quick", action="store_true", help="tiny runs that check everything works (seconds)"
    )


def _load_bench_suite() -> Any:
    """``benchmarks.suite`` from the importable path, else from the checkout e2ee runs from."""
    import importlib

    try:
        return importlib.import_module("benchmarks.suite")
    except ImportError:
        root = Path(__file__).resolve().parents[3]
        if not (root / "benchmarks" / "suite.py").is_file():
            return None
        sys.path.insert(0, str(root))
        try:
            return importlib.import_module("benchmarks.suite")
        except ImportError:
            return None


def _run_bench(args: argparse.Namespace) -> int:
    suite = _load_bench_suite()
    if suite is None:
        print(
            "e2ee bench: the benchmark suite (benchmarks/) ships with the source tree; "
            "run it from a checkout",
            file=sys.stderr,
        )
        return 2
    result: int = suite.run_command(args)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo.main(json_output=args.json, header_encryption=not args.no_header_encryption)
    if args.command == "vectors":
        return _run_vectors(args)
    if args.command == "conformance":
        return _run_conformance(args)
    if args.command == "relay":
        return _run_relay(args)
    if args.command == "bench":
        return _run_bench(args)
    if args.command in client_commands.CLIENT_COMMANDS:
        return client_commands.run(args)
    parser.print_help()
    return 2


def run() -> None:  # pragma: no cover - console-script shim
    sys.exit(main())
