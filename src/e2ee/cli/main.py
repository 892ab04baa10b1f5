"""``e2ee`` command-line entry point: argparse, ``main(argv) -> int``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import e2ee
from e2ee.cli import demo


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e2ee",
        description="End-to-end encryption for one-to-one chat (PQXDH + Double Ratchet).",
        epilog="example: e2ee demo",
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
    return parser


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
    parser.print_help()
    return 2


def run() -> None:  # pragma: no cover - console-script shim
    sys.exit(main())
