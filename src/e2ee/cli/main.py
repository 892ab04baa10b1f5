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
        epilog=("examples:\n  e2ee demo\n  e2ee vectors verify\n"),
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
    parser.print_help()
    return 2


def run() -> None:  # pragma: no cover - console-script shim
    sys.exit(main())
