"""What the CLI prints from the network or a store reaches the terminal with its control
characters escaped (e2ee.terminal.clean), in the client commands (tests/test_cli_end_to_end.py
drives them against a relay) and in the demo's rich report (here)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from e2ee.cli.demo import render
from e2ee.terminal import clean

# (character, what the terminal must show instead), written out by hand
ESCAPED = [
    ("\x00", r"\x00"),
    ("\x07", r"\x07"),  # bell
    ("\x08", r"\x08"),  # backspace
    ("\t", r"\t"),  # would forge a column of `contacts`
    ("\n", r"\n"),  # would forge a line
    ("\r", r"\r"),  # would overwrite the line
    ("\x1b", r"\x1b"),  # ESC: cursor moves, colours, hidden text
    ("\x7f", r"\x7f"),  # DEL
    ("\x85", r"\x85"),  # NEL (C1)
    ("\x9b", r"\x9b"),  # CSI (C1): an escape sequence in one byte
    ("\u200b", r"\u200b"),  # zero-width space
    ("\u200e", r"\u200e"),  # left-to-right mark
    ("\u202e", r"\u202e"),  # right-to-left override
    ("\u2066", r"\u2066"),  # left-to-right isolate
    ("\u2028", r"\u2028"),  # line separator
    ("\u2029", r"\u2029"),  # paragraph separator
    ("\ufeff", r"\ufeff"),  # zero-width no-break space
    ("\U000e0041", r"\U000e0041"),  # tag character
    ("\ue000", r"\ue000"),  # private use
    ("\udc80", r"\udc80"),  # lone surrogate
]


@pytest.mark.parametrize(("char", "shown"), ESCAPED)
def test_clean_escapes_every_control_and_format_character(char: str, shown: str) -> None:
    assert clean(f"a{char}b") == f"a{shown}b"


def test_clean_keeps_printable_text() -> None:
    text = "héllo wörld ✓ 日本語 e\u0301 \\ [bold] 'quoted' \"too\""
    assert clean(text) == text


def test_clean_is_one_printable_line() -> None:
    hostile = "".join(chr(c) for c in range(0x00, 0xA0)) + "\u202a\u202b\u202c\u202d\u202e"
    shown = clean(hostile)
    assert shown.isprintable()
    assert clean(shown) == shown


HOSTILE_USER = "mal\nalice/2: hello\x1b[8m\u202e[bold]"
HOSTILE_TEXT = "hi\r\x1b[2Kalice/1: all good\x9b8m[/]"


def _report() -> dict[str, Any]:
    """A demo report (the shape run_demo returns) whose network-derived strings are hostile."""
    label = f"{HOSTILE_USER}/1"
    return {
        "ok": True,
        "version": "0",
        "header_encryption": True,
        "relay": {"url": "http://127.0.0.1:1", "storage": "sqlite"},
        "users": {HOSTILE_USER: [label]},
        "sent": [],
        "read": {
            label: [
                {
                    "from": label,
                    "conversation": HOSTILE_USER,
                    "text": HOSTILE_TEXT,
                    "copy_of_own": True,
                }
            ]
        },
        "out_of_order": {
            "device": label,
            "delivery_order": [1, 0],
            "read": [HOSTILE_TEXT],
            "duplicate_detected": True,
        },
        "reinstall": {
            "wiped": label,
            "new": label,
            "alice_events": [{"kind": "session_new", "user": HOSTILE_USER, "device": 3}],
        },
        "relay_storage": {
            "tables_mid_conversation": {"messages": {"rows": 1, "bytes": 10}},
            "tables_at_end": {},
            "envelopes": [
                {
                    "id": 1,
                    "to": label,
                    "from": label,
                    "bytes": 10,
                    "kind": "normal",
                    "header_encrypted": True,
                }
            ],
            "files": {"relay.sqlite": 10},
            "bytes_searched": 10,
            "plaintexts_searched": 1,
            "plaintexts_found": [HOSTILE_TEXT],
        },
        "safety_numbers": {"by_device": {label: "12345"}, "match": True},
        "checks": {"a check": True},
        "timings_ms": {"a step": 1.0},
        "elapsed_ms": 1.0,
    }


def test_demo_report_shows_hostile_names_and_texts_escaped() -> None:
    out = io.StringIO()
    render(_report(), Console(file=out, width=400, color_system=None, highlight=False))
    lines = out.getvalue().split("\n")
    for line in lines:
        assert line.isprintable(), repr(line)
        assert not line.lstrip("│ ").startswith("alice/"), repr(line)
    text = out.getvalue()
    assert r"mal\nalice/2: hello\x1b[8m\u202e[bold]" in text  # markup shown, not applied
    assert r"hi\r\x1b[2Kalice/1: all good\x9b8m[/]" in text
