"""``e2ee receive`` tells the user when one call did not take every queued message.

The relay client stops after ``MAX_PAGES`` pages ([REQ-RL-33]); reaching that with a real relay
needs 100,000 queued messages, so the relay client here is a stand-in that reports it."""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2ee.cli import client_commands
from e2ee.client import ReceiveResult
from e2ee.client.events import Event
from e2ee.errors import RelayConflictError
from e2ee.relay.client import ReceiveReport


class StubClient:
    def take_events(self) -> list[Any]:
        return []


class StubRelay:
    def __init__(self, report: ReceiveReport, refill_error: Exception | None = None) -> None:
        self.report = report
        self.refill_error = refill_error
        self.refills = 0

    def receive(self) -> ReceiveReport:
        return self.report

    def publish_prekeys(self) -> tuple[int, int]:
        self.refills += 1
        if self.refill_error is not None:
            raise self.refill_error
        return (100, 100)


class StubHome:
    name = "alice"

    def __init__(self, report: ReceiveReport) -> None:
        self.client = StubClient()
        self.relay = StubRelay(report)


def run_receive(
    monkeypatch: pytest.MonkeyPatch, report: ReceiveReport, home: StubHome | None = None
) -> int:
    @contextlib.contextmanager
    def fake_open(args: argparse.Namespace) -> Iterator[StubHome]:
        yield home or StubHome(report)

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


def test_every_receive_refills_prekeys_even_with_nothing_to_receive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The relay client's publish_prekeys rotates the signed prekey and replaces claimed
    one-time keys; the CLI called it only in ``init``, so a home became unreachable for new
    contacts once its signed prekey was 30 days old (initiators refuse older ones)."""
    home = StubHome(ReceiveReport())
    code = run_receive(monkeypatch, ReceiveReport(), home)
    assert code == client_commands.EXIT_NOTHING_TO_RECEIVE
    assert home.relay.refills == 1


def test_a_failed_refill_is_noted_and_leaves_the_receive_status(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = StubHome(ReceiveReport(more=True))
    home.relay.refill_error = RelayConflictError("no", code="stale_device_list")
    code = run_receive(monkeypatch, home.relay.report, home)
    assert code == client_commands.EXIT_OK
    err = capsys.readouterr().err
    assert "could not refill this device's prekeys" in err
    assert "relay_conflict" in err


class StreamingRelay:
    """Stands for RelayClient.stream: each call plays the next of ``streams``: a list of
    results to yield, or an exception to raise. Time moves only when the test says so.
    publish_prekeys records the time of each call."""

    def __init__(self, streams: list[Any], clock: list[float]) -> None:
        self.streams, self.clock, self.opened = streams, clock, 0
        self.refilled_at: list[float] = []

    def publish_prekeys(self) -> tuple[int, int]:
        self.refilled_at.append(self.clock[0])
        return (100, 100)

    def stream(self, *, idle_timeout: float) -> Iterator[tuple[int, Any]]:
        self.opened += 1
        step = self.streams.pop(0)
        if isinstance(step, Exception):
            raise step
        yield from step


def follow(
    monkeypatch: pytest.MonkeyPatch,
    streams: list[Any],
    idle: float | None,
    pauses: list[float] | None = None,
) -> tuple[int, list[float], int]:
    """Run ``_follow`` on ``streams``; returns (exit status, pauses slept, streams opened)."""
    clock = [0.0]
    pauses = [] if pauses is None else pauses

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(time, "monotonic", lambda: clock[0])  # what client_commands reads
    monkeypatch.setattr(time, "sleep", sleep)
    home = StubHome(ReceiveReport())
    relay = StreamingRelay(streams, clock)
    home.relay = relay  # type: ignore[assignment]
    try:
        code = client_commands._follow(home, idle)  # type: ignore[arg-type]
    except client_commands.CommandError as exc:
        code = exc.code
    return code, pauses, relay.opened


def test_follow_stops_when_a_newer_stream_of_the_device_took_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """[REQ-RL-42] Reopening a stream the relay closed with 4409 would push out the newer one,
    and three `receive --follow` of one device took turns about 270 times a second (review
    finding): the command stops with status 1 instead."""
    superseded = RelayConflictError("replaced", code="stream_superseded")
    code, pauses, opened = follow(monkeypatch, [[], superseded, []], idle=None)
    assert (code, pauses, opened) == (client_commands.EXIT_ERROR, [0.5], 2)


def test_follow_waits_longer_each_time_a_stream_closes_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A relay that closes each stream at once (1013: it cannot serve it now) is not hammered:
    the pauses double from 0.5 s up to MAX_RECONNECT_PAUSE, and --idle still ends the
    command on time (the last pause is cut to what is left of it)."""
    code, pauses, opened = follow(monkeypatch, [[] for _ in range(7)], idle=30.0)
    assert code == client_commands.EXIT_OK
    assert pauses == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 4.5]  # 30 s in all
    assert opened == 7


def test_follow_reopens_at_once_after_a_stream_that_delivered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stream that pushed something is reopened with no pause; any other error of the relay
    client goes on to the command's error handling (here: a conflict of another kind)."""
    other = RelayConflictError("conflict", code="something_else")
    pauses: list[float] = []
    with pytest.raises(RelayConflictError):
        follow(monkeypatch, [[(1, None)], [(2, None)], other], idle=None, pauses=pauses)
    assert pauses == []


def test_follow_refills_after_a_new_session_and_every_hour(monkeypatch: pytest.MonkeyPatch) -> None:
    """A first message used one of this device's one-time keys: ``receive --follow`` refills
    right after it. Without new sessions it still refills every PREKEY_CHECK_INTERVAL, so a
    follower that runs for weeks rotates its signed prekey."""
    new = ReceiveResult(None, events=(Event("session_new", "bob", 1),))
    same = ReceiveResult(None, events=(Event("device_list_changed", "bob"),))
    hour = client_commands.PREKEY_CHECK_INTERVAL
    clock = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])

    def at(t: float, result: ReceiveResult) -> Iterator[tuple[int, Any]]:
        clock[0] = t
        yield 1, result

    streams: list[Any] = [
        at(10.0, same),  # no new session: no refill
        at(20.0, new),  # refill at 20
        at(20.0 + hour - 1, same),  # not yet an hour since the last refill
        at(20.0 + hour, same),  # the stream opened at 19 + hour: still not an hour
        at(20.0 + hour, same),  # opened at 20 + hour: an hour since, refill
        RelayConflictError("replaced", code="stream_superseded"),
    ]
    home = StubHome(ReceiveReport())
    relay = StreamingRelay(streams, clock)
    home.relay = relay  # type: ignore[assignment]
    with pytest.raises(client_commands.CommandError):
        client_commands._follow(home, None)  # type: ignore[arg-type]
    assert relay.refilled_at == [20.0, 20.0 + hour]
