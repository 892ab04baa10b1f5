"""``e2ee receive`` tells the user when one call did not take every queued message.

The relay client stops after ``MAX_PAGES`` pages ([REQ-RL-33]); reaching that with a real relay
needs 100,000 queued messages, so the relay client here is a stand-in that reports it."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2ee.cli import client_commands
from e2ee.relay.client import ReceiveReport


class StubClient:
    def take_events(self) -> list[Any]:
        return []


class StubRelay:
    def __init__(self, report: ReceiveReport) -> None:
        self.report = report

    def receive(self) -> ReceiveReport:
        return self.report


class StubHome:
    name = "alice"

    def __init__(self, report: ReceiveReport) -> None:
        self.client = StubClient()
        self.relay = StubRelay(report)


def run_receive(monkeypatch: pytest.MonkeyPatch, report: ReceiveReport) -> int:
    @contextlib.contextmanager
    def fake_open(args: argparse.Namespace) -> Iterator[StubHome]:
        yield StubHome(report)

    monkeypatch.setattr(client_commands, "_open", fake_open)
    args = argparse.Namespace(home=Path("unused"), follow=False, idle=None)
    try:
        return client_commands.cmd_receive(args)
    except client_commands.CommandError as exc:
        return exc.code


def test_a_receive_that_stopped_early_says_to_run_it_again(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """[REQ-RL-33] With ``more`` set, nothing printed is not "nothing to receive" (exit 6):
    the exit status is 0 and a note says to receive again."""
    code = run_receive(monkeypatch, ReceiveReport(more=True))
    assert code == client_commands.EXIT_OK
    assert "run `e2ee receive` again" in capsys.readouterr().err


def test_an_empty_queue_is_still_nothing_to_receive(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_receive(monkeypatch, ReceiveReport())
    assert code == client_commands.EXIT_NOTHING_TO_RECEIVE
    assert "again" not in capsys.readouterr().err
