"""What the CLI prints from the network or a store reaches the terminal with its control
characters escaped (e2ee.terminal.clean), in the client commands (tests/test_cli_end_to_end.py
drives them against a relay) and in the demo's rich report (here)."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from e2ee.cli.demo import render
from e2ee.conformance.adapter import SHOWN_CHARS, shown
from e2ee.terminal import clean
from e2ee.vectors import verify

# (character, what the terminal must show instead), written out by hand
ESCAPED = [
    ("\\", "\\\\"),  # starts every escape: shown doubled, so no text shows as an escape
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
    text = "héllo wörld ✓ 日本語 e\u0301 [bold] 'quoted' \"too\" / | ~"
    assert clean(text) == text


def test_clean_is_one_printable_line() -> None:
    hostile = "".join(chr(c) for c in range(0x00, 0xA0)) + "\u202a\u202b\u202c\u202d\u202e"
    shown = clean(hostile)
    assert shown.isprintable()
    assert "\n" not in shown
    assert "\x1b" not in shown


def test_an_escape_and_the_text_of_one_show_differently() -> None:
    """A user id holding the four characters backslash, x, 1, b showed exactly like one
    holding ESC (both as ``\\x1b``): a backslash is now shown doubled."""
    esc, literal = "mal\x1b", "mal\\x1b"
    assert clean(esc) == "mal\\x1b"
    assert clean(literal) == "mal\\\\x1b"
    assert clean(esc) != clean(literal)


_ESCAPE = re.compile(r"\\(?:(\\)|([tnr])|x([0-9a-f]{2})|u([0-9a-f]{4})|U([0-9a-f]{8}))")


def _unclean(shown: str) -> str:
    """The text ``shown`` was made from: a left inverse of clean, so clean is injective."""
    assert "\\" not in _ESCAPE.sub("", shown), "a backslash that starts no escape"

    def one(match: re.Match[str]) -> str:
        backslash, named, *codes = match.groups()
        if backslash:
            return "\\"
        if named:
            return {"t": "\t", "n": "\n", "r": "\r"}[named]
        return chr(int(next(c for c in codes if c), 16))

    return _ESCAPE.sub(one, shown)


PIECES = ["\\", "x", "1", "b", "u", "n", "t", "\n", "\t", "\x1b", "\u202e", "é"]
TEXTS = st.text() | st.lists(st.sampled_from(PIECES)).map("".join)
"""Any text, and text made of the pieces of escapes (a backslash, what follows one)."""


@given(TEXTS)
def test_clean_is_injective_and_printable(text: str) -> None:
    """What is shown is printable and gives the text back, so two texts never show the same."""
    shown = clean(text)
    assert shown.isprintable()
    assert _unclean(shown) == text


def test_vectors_verify_and_the_conformance_report_keep_escapes_distinct() -> None:
    """``e2ee vectors verify`` escapes a backslash too; the conformance runner cleans each
    line once (a piece cut for the report is cut between characters, not inside an escape),
    so an ESC is shown as ``\\x1b``, not ``\\\\x1b``, and still unlike the text of one."""
    assert verify._one_line("a\x1b") == "a\\x1b"
    assert verify._one_line("a\\x1b") == "a\\\\x1b"
    assert clean(f"got {shown('a' + chr(27))}") == "got a\\x1b"
    cut = shown("\x1b" * 300)
    assert cut.endswith("...")
    assert set(cut[:-3]) == {"\x1b"}
    assert len(clean(cut)) <= SHOWN_CHARS


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
