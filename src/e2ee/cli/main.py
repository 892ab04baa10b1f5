"""``e2ee`` command-line entry point: argparse, ``main(argv) -> int``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import e2ee
from e2ee.cli import demo


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e2ee",
        description="End-to-end encryption for one-to-one chat (PQXDH + Double Ratchet).",
        epilog=(
            "examples:\n  e2ee demo\n  e2ee vectors verify\n"
            "  e2ee conformance run -- e2ee conformance serve"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"e2ee {e2ee.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo_parser = commands.add_parser(
        "demo",
        help="run an in-process Alice/Bob conversation and show what happened",
        description="Run an in-process Alice/Bob conversation and show what happened.",
        epilog="example: e2ee demo --json",
    )
    demo_parser.add_argument("--json", action="store_true", help="machine-readable output")
    demo_parser.add_argument(
        "--no-header-encryption", action="store_true", help="run with header encryption off"
    )
    _add_vectors_parser(commands)
    _add_conformance_parser(commands)
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
    run.add_argument(
        "--timeout", type=float, default=10.0, help="seconds per request (default: 10)"
    )
    run.add_argument(
        "--startup-timeout",
        type=float,
        default=30.0,
        help="seconds for the adapter to start and answer hello (default: 30)",
    )
    run.add_argument(
        "--max-restarts",
        type=int,
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        report = demo.run_demo(header_encryption=not args.no_header_encryption)
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print(demo.render(report))
        return 0 if report["ok"] else 1
    if args.command == "vectors":
        return _run_vectors(args)
    if args.command == "conformance":
        return _run_conformance(args)
    parser.print_help()
    return 2


def run() -> None:  # pragma: no cover - console-script shim
    sys.exit(main())
