"""``e2ee receive`` tells the user when one call did not take every queued message.

The relay client stops after ``MAX_PAGES`` pages ([REQ-RL-33]); reaching that with a real relay
needs 100,000 queued messages, so the relay client here is a stand-in that reports it."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx import MockTransport

from e2ee.cli import client_commands
from e2ee.client import Client, Message, ReceiveResult
from e2ee.client.events import Event
from e2ee.errors import RelayConflictError, RelayUnavailableError, StateError
from e2ee.relay import api
from e2ee.relay.client import ReceiveReport, RelayClient
from e2ee.wire import codec
from tests.client_support import World

URL = "http://relay.example:80"


class StubClient:
    """Stands for Client: an inbox (a list the stand-in relays append to, emptied by a take)
    and the identities the CLI asks about when messages were kept."""

    def __init__(self) -> None:
        self.delivered: list[Message] = []
        self.pending: list[str] = []

    def take_events(self) -> list[Any]:
        return []

    def inbox(self, *, take: bool = False) -> list[Message]:
        messages = list(self.delivered)
        if take:
            self.delivered.clear()
        return messages

    def known_identities(self) -> list[Any]:
        return [argparse.Namespace(user_id=name, pending=True) for name in self.pending]


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
    args = argparse.Namespace(command="receive", home=Path("unused"), follow=False, idle=None)
    return client_commands.run(args)  # errors as the command reports them: one line, a status


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


def test_follow_refills_hourly_on_a_stream_that_never_goes_quiet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review finding: the hourly check ran only when the stream was reopened, which a stream
    with a message at least every 30 s never is. It runs after every push now."""
    same = ReceiveResult(None, events=())
    hour = client_commands.PREKEY_CHECK_INTERVAL
    clock = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])

    def busy() -> Iterator[tuple[int, Any]]:
        for t in (10.0, hour - 1, hour, hour + 5, 2 * hour + 1):
            clock[0] = t
            yield 1, same

    relay = StreamingRelay([busy(), RelayConflictError("x", code="stream_superseded")], clock)
    home = StubHome(ReceiveReport())
    home.relay = relay  # type: ignore[assignment]
    with pytest.raises(client_commands.CommandError):
        client_commands._follow(home, None)  # type: ignore[arg-type]
    assert relay.opened == 2
    assert relay.refilled_at == [hour, 2 * hour + 1]


# --- what was committed is printed, from the store's inbox --------------------------------------


class FlakyRelay:
    """A relay's GET /v1/messages and ack routes on ``httpx.MockTransport``: serves ``queue``
    (relay id -> envelope) and drops what is acknowledged; answers 503 to an ack while
    ``fail_ack`` is set (a relay that goes down right after serving the page) and to every
    other route (the prekey refill fails, which the receive only notes)."""

    def __init__(self, envelopes: list[bytes]) -> None:
        self.queue = dict(enumerate(envelopes, start=1))
        self.fail_ack = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == api.MESSAGES:
            after = int(request.url.params["after"])
            rows = [[i, e] for i, e in sorted(self.queue.items()) if i > after]
            return httpx.Response(200, content=codec.encode({0: rows, 1: False}))
        if request.url.path == api.ACK and not self.fail_ack:
            ids = codec.decode(request.content, max_size=api.MAX_SMALL_BODY)[0]
            for i in ids:
                self.queue.pop(i, None)
            return httpx.Response(200, content=codec.encode({0: len(ids)}))
        return httpx.Response(503)


@dataclasses.dataclass
class RealHome:
    """A Home of a real client store behind a fake relay."""

    client: Client
    relay: RelayClient
    name: str = "bob"


def real_receive(monkeypatch: pytest.MonkeyPatch, home: RealHome) -> int:
    @contextlib.contextmanager
    def fake_open(args: argparse.Namespace) -> Iterator[RealHome]:
        yield home

    monkeypatch.setattr(client_commands, "_open", fake_open)
    args = argparse.Namespace(command="receive", home=Path("unused"), follow=False, idle=None)
    return client_commands.run(args)


def test_a_message_committed_before_a_failed_ack_is_printed_and_never_again(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """[REQ-RL-22] Review finding: the client committed the message, the ack failed (503), and
    `e2ee receive` exited 3 without printing it; the relay redelivered it, the store called it
    a duplicate, and no later receive printed it either: lost from view for good. The CLI
    prints from the store's inbox, whatever ended the receive, and empties it after."""
    world = World(tmp_path)
    (alice,) = world.user("alice")
    (bob,) = world.user("bob")
    [envelope] = alice.send("bob", b"the meeting is at noon", world.directory)
    fake = FlakyRelay([envelope.to_bytes()])
    relay = RelayClient(URL, bob, http=httpx.Client(base_url=URL, transport=MockTransport(fake)))
    relay._token = bytes(api.TOKEN_SIZE)
    home = RealHome(bob, relay)

    fake.fail_ack = True
    assert real_receive(monkeypatch, home) == client_commands.EXIT_RELAY_UNREACHABLE
    out, err = capsys.readouterr()
    assert out.splitlines() == ["alice/1: the meeting is at noon"]
    assert err.splitlines() == ["e2ee: relay unreachable"]
    assert bob.inbox() == []  # shown, so taken: the store keeps no plaintext it printed

    fake.fail_ack = False  # the relay redelivers it: a duplicate, acknowledged, not printed again
    assert real_receive(monkeypatch, home) == client_commands.EXIT_NOTHING_TO_RECEIVE
    assert capsys.readouterr().out == ""
    assert fake.queue == {}
    relay.close()


class BrokenOutput(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_message_is_taken_from_the_inbox_only_after_its_line_was_written(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A line that could not be written (a closed pipe, a crash before the take) leaves the
    message in the inbox, and the next receive prints it: a message may be printed twice,
    never not at all."""
    home = StubHome(ReceiveReport())
    message = Message("carol", 2, "alice", b"m" * 16, b"kept for the next run")
    home.client.delivered.append(message)
    with monkeypatch.context() as patch:
        patch.setattr(sys, "stdout", BrokenOutput())
        assert run_receive(monkeypatch, ReceiveReport(), home) == client_commands.EXIT_ERROR
    assert home.client.delivered == [message]
    assert run_receive(monkeypatch, ReceiveReport(), home) == client_commands.EXIT_OK
    assert capsys.readouterr().out.splitlines() == ["carol/2: kept for the next run"]
    assert home.client.delivered == []


class RacingClient(StubClient):
    """Another process of the same home commits a message between the CLI's read of the inbox
    and its take."""

    def __init__(self, late: Message) -> None:
        super().__init__()
        self.late = late

    def inbox(self, *, take: bool = False) -> list[Message]:
        if take:
            self.delivered.append(self.late)
        return super().inbox(take=take)


def test_a_message_committed_between_the_read_and_the_take_is_printed_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    own = Message("alice", 2, "carol", b"o" * 16, b"from my phone", outgoing=True)
    late = Message("carol", 1, "alice", b"l" * 16, b"just in")
    home = StubHome(ReceiveReport())
    client = RacingClient(late)
    client.delivered.append(own)
    home.client = client
    assert run_receive(monkeypatch, ReceiveReport(), home) == client_commands.EXIT_OK
    assert capsys.readouterr().out.splitlines() == [
        "alice/2 -> carol: from my phone",  # an outgoing copy, formatted as before
        "carol/1: just in",
    ]
    assert client.delivered == []


def test_messages_kept_for_a_local_failure_are_not_nothing_to_receive(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """[REQ-RL-22] Review finding: envelopes the client could not process (a StateError of a
    damaged store, a LocalError) stay queued, and `e2ee receive` said "nothing to receive"
    (exit 6) on every run. It now says how many stay queued and exits 1; a pending identity
    key still explains kept messages with exit 5."""
    code = run_receive(monkeypatch, ReceiveReport(kept=2))
    assert code == client_commands.EXIT_ERROR
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("e2ee: 2 messages could not be processed on this device")
    assert line.endswith("stay queued at the relay")
    assert "nothing to receive" not in line

    home = StubHome(ReceiveReport(kept=1))
    home.client.pending.append("carol")
    assert (
        run_receive(monkeypatch, home.relay.report, home) == client_commands.EXIT_IDENTITY_CHANGED
    )


def test_a_damaged_inbox_does_not_stop_the_prekey_refill(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review finding: the inbox is read whole, and one damaged row fails every read
    (REQ-CL-46); with the refill after it, such a store never refilled its prekeys again and
    was unreachable 30 days later. The refill runs first; the damage is still the error."""
    home = StubHome(ReceiveReport())

    def damaged(*, take: bool = False) -> list[Message]:
        raise StateError("malformed inbox sender device in the client store")

    home.client.inbox = damaged  # type: ignore[method-assign]
    assert run_receive(monkeypatch, home.relay.report, home) == client_commands.EXIT_ERROR
    assert "malformed inbox sender device" in capsys.readouterr().err
    assert home.relay.refills == 1


def test_follow_notes_kept_messages_and_follows_all_the_same(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review finding: with messages kept for a lasting local failure, `receive --follow`
    never started; it notes them and follows (plain `receive` still exits 1)."""
    home = StubHome(ReceiveReport(kept=1))
    followed: list[Any] = []

    def follow_stub(followed_home: Any, idle: float | None) -> int:
        followed.append(followed_home)
        return 0

    monkeypatch.setattr(client_commands, "_follow", follow_stub)

    @contextlib.contextmanager
    def fake_open(args: argparse.Namespace) -> Iterator[StubHome]:
        yield home

    monkeypatch.setattr(client_commands, "_open", fake_open)
    args = argparse.Namespace(home=Path("unused"), follow=True, idle=None)
    assert client_commands.cmd_receive(args) == 0
    assert followed == [home]
    assert "1 message could not be processed" in capsys.readouterr().err


class CommittingRelay(StreamingRelay):
    """A stream whose envelope the client commits to the inbox, and then ``interrupt`` ends
    it before the result is yielded (Ctrl-C, the relay gone)."""

    def __init__(self, home: StubHome, interrupt: BaseException, clock: list[float]) -> None:
        super().__init__([], clock)
        self.home, self.interrupt = home, interrupt

    def stream(self, *, idle_timeout: float) -> Iterator[tuple[int, Any]]:
        self.opened += 1
        self.home.client.delivered.append(Message("carol", 1, "alice", b"c" * 16, b"late"))
        raise self.interrupt
        yield  # a generator, like RelayClient.stream


@pytest.mark.parametrize(
    ("interrupt", "code"),
    [
        (KeyboardInterrupt(), client_commands.EXIT_OK),
        (RelayUnavailableError("stream failed"), client_commands.EXIT_RELAY_UNREACHABLE),
    ],
)
def test_follow_prints_what_was_committed_before_it_was_stopped(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    interrupt: BaseException,
    code: int,
) -> None:
    """``receive --follow`` printed a pushed message only once the stream yielded it: Ctrl-C
    or a failure after the commit lost it from view. It prints the inbox however it ends."""
    home = StubHome(ReceiveReport())
    home.relay = CommittingRelay(home, interrupt, [0.0])  # type: ignore[assignment]

    @contextlib.contextmanager
    def fake_open(args: argparse.Namespace) -> Iterator[StubHome]:
        yield home

    monkeypatch.setattr(client_commands, "_open", fake_open)
    monkeypatch.setattr(home.relay, "receive", lambda: ReceiveReport(), raising=False)
    args = argparse.Namespace(command="receive", home=Path("unused"), follow=True, idle=None)
    assert client_commands.run(args) == code
    assert capsys.readouterr().out.splitlines() == ["carol/1: late"]
    assert home.client.delivered == []
