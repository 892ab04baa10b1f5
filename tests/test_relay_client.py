"""The relay client against a hostile relay (spec/threat-model.md A1): fake relays built on
``httpx.MockTransport`` (and a bare WebSocket server) answer what no honest relay would, and
the client must stay bounded and raise only typed ``e2ee.errors`` exceptions."""

from __future__ import annotations

import contextlib
import gzip
import math
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import httpx
import pytest
from websockets.sync.server import ServerConnection, serve

from e2ee.client import Client
from e2ee.errors import (
    DecodeError,
    LocalError,
    RelayBadRequestError,
    RelayConflictError,
    RelayUnavailableError,
)
from e2ee.relay import api
from e2ee.relay import client as relay_client_module
from e2ee.relay.client import MAX_PAGES, RelayClient
from e2ee.relay.memory import MemoryStorage
from e2ee.relay.rules import Relay, RelayConfig
from e2ee.wire import codec
from tests.relay_support import Clock, ThreadedRelay, free_port

URL = "http://relay.example:80"
MiB = 1 << 20
LIMIT = 16 * MiB  # the client's answer limit (spec/relay.md section 7)


class Counted(httpx.SyncByteStream):
    """A body of ``chunks`` chunks of ``size`` bytes that counts how much of it was pulled."""

    def __init__(self, chunks: int, size: int = MiB, data: bytes | None = None) -> None:
        self.chunks, self.size, self.data = chunks, size, data
        self.served = 0

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(self.chunks):
            chunk = self.data if self.data is not None else b"\0" * self.size
            self.served += len(chunk)
            yield chunk


def relay_client(
    handler: Callable[[httpx.Request], httpx.Response], client: object = None
) -> RelayClient:
    """A RelayClient on a fake relay, already holding a token (no login needed)."""
    http = httpx.Client(base_url=URL, transport=httpx.MockTransport(handler))
    relay = RelayClient(URL, cast(Client, client), http=http)
    relay._token = bytes(api.TOKEN_SIZE)
    return relay


@pytest.mark.parametrize("status", [200, 503])
def test_a_declared_oversized_answer_is_refused_before_its_body_is_read(status: int) -> None:
    """[REQ-RL-31] A Content-Length above the limit is refused without pulling any of the
    body; an error answer over the error limit is reported from its status alone."""
    body = Counted(64)
    declared = {"content-length": str(LIMIT + 1 if status == 200 else api.MAX_SMALL_BODY + 1)}
    expected = RelayBadRequestError if status == 200 else RelayUnavailableError
    relay = relay_client(lambda _: httpx.Response(status, headers=declared, stream=body))
    with relay, pytest.raises(expected):
        relay.key_counts()
    assert body.served == 0


@pytest.mark.parametrize("status", [200, 503])
def test_an_endless_answer_is_cut_off_after_the_limit(status: int) -> None:
    """[REQ-RL-31] A body without a length (48 MiB of 1 MiB chunks here) is read only until it
    passes the limit: at most the limit plus one chunk."""
    body = Counted(48)
    expected = RelayBadRequestError if status == 200 else RelayUnavailableError
    relay = relay_client(lambda _: httpx.Response(status, stream=body))
    with relay, pytest.raises(expected):
        relay.key_counts()
    limit = LIMIT if status == 200 else api.MAX_SMALL_BODY
    assert 0 < body.served <= limit + MiB


def test_a_compressed_answer_is_never_inflated() -> None:
    """[REQ-RL-31] The client asks for identity encoding and refuses a gzip answer unread: a
    64 KiB gzip bomb (64 MiB inflated) costs no more than a few MiB of memory."""
    bomb = gzip.compress(b"\0" * 64 * MiB)
    asked: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("accept-encoding"))
        return httpx.Response(
            200, headers={"content-encoding": "gzip"}, stream=Counted(1, data=bomb)
        )

    with relay_client(handler) as relay:
        tracemalloc.start()
        try:
            with pytest.raises(RelayBadRequestError):
                relay.key_counts()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert asked == ["identity"]
    assert peak < 4 * MiB


def test_an_answer_the_transport_already_read_is_used() -> None:
    """[REQ-RL-31] A transport may hand over a body it read itself (httpx.MockTransport
    does); it is used, within the same limit."""
    answers = [codec.encode({0: 3, 1: 4}), b"\0" * (LIMIT + 1)]
    with relay_client(lambda _: httpx.Response(200, content=answers.pop(0))) as relay:
        assert relay.key_counts() == (3, 4)
        with pytest.raises(RelayBadRequestError):
            relay.key_counts()


def test_every_httpx_failure_is_a_typed_relay_error() -> None:
    """[REQ-RL-31] A transport failure (also one while the body is read) is retried and then
    RelayUnavailableError; any other httpx failure is RelayBadRequestError at once."""
    calls = [0]

    def broken(error: Exception) -> Callable[[httpx.Request], httpx.Response]:
        def handler(request: httpx.Request) -> httpx.Response:
            calls[0] += 1
            raise error

        return handler

    for error, expected, tries in [
        (httpx.DecodingError("bad gzip"), RelayBadRequestError, 1),
        (httpx.TooManyRedirects("loop"), RelayBadRequestError, 1),
        (httpx.ConnectError("refused"), RelayUnavailableError, 4),
    ]:
        calls[0] = 0
        with relay_client(broken(error)) as relay, pytest.raises(expected):
            relay.key_counts()
        assert calls[0] == tries

    class Dropped(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield b"\xa0"
            raise httpx.ReadError("connection reset")

    def dropping(request: httpx.Request) -> httpx.Response:
        calls[0] += 1
        return httpx.Response(200, stream=Dropped())

    calls[0] = 0
    with relay_client(dropping) as relay, pytest.raises(RelayUnavailableError):
        relay.key_counts()
    assert calls[0] == 4


@pytest.mark.parametrize("length", ["+9", " 9", "9_0", "1e3", "\xb2", "0x9", "9, 9"])
def test_a_malformed_content_length_is_refused(length: str) -> None:
    """[REQ-RL-31] Only ASCII digits are a length (int() would take several of these)."""
    counts = codec.encode({0: 1, 1: 1})

    def handler(request: httpx.Request) -> httpx.Response:
        headers = [(b"content-length", length.encode("latin-1"))]
        return httpx.Response(200, headers=headers, stream=Counted(1, data=counts))

    with relay_client(handler) as relay, pytest.raises(RelayBadRequestError):
        relay.key_counts()


@contextlib.contextmanager
def closing_stream(code: int, *, push: bool) -> Iterator[RelayClient]:
    """A relay client whose stream server pushes envelope 7 (when ``push``) and closes with
    ``code``; the stand-in for Client refuses the envelope for good, once the stream closed,
    so the close always lands while the envelope is being processed."""
    closed = threading.Event()

    def handler(ws: ServerConnection) -> None:
        if push:
            ws.send(codec.encode({0: 7, 1: b"envelope"}))
        ws.close(code)  # returns once the client answered the close
        closed.set()

    class Refusing:
        def receive(self, envelope: bytes) -> None:
            assert closed.wait(10)
            raise DecodeError("not an envelope")

    with serve(handler, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.socket.getsockname()[1]
        relay = RelayClient(f"http://127.0.0.1:{port}", cast(Client, Refusing()))
        relay._token = bytes(api.TOKEN_SIZE)
        with relay:
            yield relay
        server.shutdown()


def test_a_stream_the_relay_closes_during_processing_just_ends() -> None:
    """[REQ-RL-32] The relay pushes an envelope and closes the stream (as when the token
    expires) while the client processes it: the envelope is still yielded and the stream
    ends, instead of websockets' ConnectionClosed escaping from the acknowledgement."""
    with closing_stream(4401, push=True) as relay:
        assert list(relay.stream(idle_timeout=10)) == [(7, None)]


@pytest.mark.parametrize("pushed", [False, True])
def test_a_stream_replaced_by_a_newer_one_raises_stream_superseded(pushed: bool) -> None:
    """[REQ-RL-42] The relay closes a stream with 4409 when newer streams of the device pushed
    it out: the relay client raises RelayConflictError (stream_superseded) instead of ending
    as for any close, so a caller that reopens the stream after each close does not push the
    newer ones out in turn. An envelope pushed before the close is still yielded first."""
    yielded: list[object] = []
    with closing_stream(4409, push=pushed) as relay, pytest.raises(RelayConflictError) as info:
        yielded.extend(relay.stream(idle_timeout=10))
    assert info.value.code == "stream_superseded"
    assert yielded == ([(7, None)] if pushed else [])


def test_a_stream_reopened_after_its_token_expired_logs_in_again(tmp_path: Path) -> None:
    """The relay closes a stream with 4401 when the token expires; reopening it with the kept
    token was refused, so `receive --follow` stopped with an error after token_ttl (an hour).
    The relay client now logs in once more and opens the stream."""
    clock = Clock(time.time())
    storage = MemoryStorage()
    port = free_port()
    relay = Relay(
        storage.run(Relay.secret_job()),
        RelayConfig(origin=f"http://127.0.0.1:{port}"),
        clock=clock,
    )
    alice = Client.create(tmp_path / "alice.sqlite", "alice")
    with ThreadedRelay(relay, storage, port) as server, RelayClient(server.url, alice) as client:
        client.publish_device_list()
        assert list(client.stream(idle_timeout=0.2)) == []
        kept = client._token
        clock.advance(relay.config.token_ttl + 1)
        assert list(client.stream(idle_timeout=0.2)) == []
        assert client._token not in (None, kept)
    alice.close()


class Stub:
    """Stands for Client: records what it is handed; ``refuse`` refuses it for good (the
    relay client acknowledges it), else it fails locally (left queued)."""

    def __init__(self, *, refuse: bool) -> None:
        self.refuse = refuse
        self.seen: list[bytes] = []

    def receive(self, envelope: bytes) -> None:
        self.seen.append(envelope)
        if self.refuse:
            raise DecodeError("not an envelope")
        raise LocalError("disk full")


class FakeQueue:
    """A relay's GET /v1/messages and ack routes answering with ``page(after)``; fails the test
    when a call fetches more than ``bound`` pages."""

    def __init__(self, page: Callable[[int], object], bound: int) -> None:
        self.page, self.bound = page, bound
        self.gets = 0
        self.acked: list[int] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == api.ACK:
            ids = codec.decode(request.content, max_size=api.MAX_SMALL_BODY)[0]
            self.acked += ids
            return httpx.Response(200, content=codec.encode({0: len(ids)}))
        self.gets += 1
        if self.gets > self.bound:
            pytest.fail(f"the client fetched more than {self.bound} pages")
        after = int(request.url.params["after"])
        return httpx.Response(200, content=codec.encode(self.page(after)))


def test_a_relay_that_serves_the_same_page_forever_is_refused() -> None:
    """[REQ-RL-33] A relay answering every fetch with the same row and more=true would keep
    receive() looping: the second page, whose id is not above the first, is refused."""
    queue = FakeQueue(lambda after: {0: [[1, b"old"]], 1: True}, bound=50)
    stub = Stub(refuse=True)
    with relay_client(queue, stub) as relay, pytest.raises(RelayBadRequestError):
        relay.receive()
    assert (queue.gets, queue.acked, stub.seen) == (2, [1], [b"old"])


@pytest.mark.parametrize(
    "page",
    [
        {0: [[5, b"a"], [3, b"b"]], 1: False},  # ids go down
        {0: [[2, b"a"], [2, b"b"]], 1: False},  # an id twice
        {0: [[0, b"a"]], 1: False},  # an id not above after=0
        {0: [], 1: True},  # nothing, but more
    ],
)
def test_a_page_that_does_not_move_forward_is_refused_before_any_row_is_used(
    page: dict[int, object],
) -> None:
    """[REQ-RL-33] Ids must lie above ``after`` and increase, and an empty page cannot say more
    are queued; the page is refused whole, before the client sees any of it."""
    queue = FakeQueue(lambda after: page, bound=5)
    stub = Stub(refuse=True)
    with relay_client(queue, stub) as relay:
        with pytest.raises(RelayBadRequestError):
            relay.receive()
        with pytest.raises(RelayBadRequestError):
            relay.fetch()
    assert (queue.gets, queue.acked, stub.seen) == (2, [], [])


def test_a_receive_fetches_at_most_max_pages() -> None:
    """[REQ-RL-33] A relay that always has one more message (ids keep increasing) gets
    MAX_PAGES fetches per receive() call, which then reports more=True."""
    queue = FakeQueue(lambda after: {0: [[after + 1, b"new"]], 1: True}, bound=MAX_PAGES + 1)
    stub = Stub(refuse=False)
    with relay_client(queue, stub) as relay:
        report = relay.receive()
        assert (report.more, report.kept, queue.gets) == (True, MAX_PAGES, MAX_PAGES)
        queue.gets = 0
        assert relay.receive(max_pages=3).more
        assert queue.gets == 3
    queue = FakeQueue(lambda after: {0: [[after + 1, b"last"]], 1: False}, bound=1)
    with relay_client(queue, stub) as relay:
        assert not relay.receive().more


def test_an_answer_that_trickles_in_is_given_up_at_its_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """[REQ-RL-31] httpx's timeout bounds each read, not the answer: a relay that sends one
    byte per read could hold the caller for as long as the body limit lasts. Each chunk here
    costs one second of a driven clock; an answer_timeout of 30 s gives up after about 30
    of the 1,000 chunks, with RelayUnavailableError (the body, read whole, would be refused
    as malformed CBOR instead)."""
    now = [0.0]

    def clock() -> float:
        return now[0]

    class Trickle(httpx.SyncByteStream):
        served = 0

        def __iter__(self) -> Iterator[bytes]:
            for _ in range(1000):
                now[0] += 1.0
                self.served += 1
                yield b"\0"

    body = Trickle()
    monkeypatch.setattr(relay_client_module, "_monotonic", clock)
    http = httpx.Client(
        base_url=URL, transport=httpx.MockTransport(lambda _: httpx.Response(200, stream=body))
    )
    relay = RelayClient(URL, cast(Client, None), http=http, answer_timeout=30)
    relay._token = bytes(api.TOKEN_SIZE)
    with relay, pytest.raises(RelayUnavailableError, match="too slow"):
        relay.key_counts()
    assert 30 <= body.served <= 32


def test_an_answer_complete_after_its_deadline_is_given_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """[REQ-RL-31] The deadline also holds when the delay was before the body (slow headers):
    a complete answer that arrived late is not used."""
    now = [0.0]
    monkeypatch.setattr(relay_client_module, "_monotonic", lambda: now[0])

    def late(_: httpx.Request) -> httpx.Response:
        now[0] += 61.0
        return httpx.Response(200, content=codec.encode({0: 3, 1: 4}))

    http = httpx.Client(base_url=URL, transport=httpx.MockTransport(late))
    relay = RelayClient(URL, cast(Client, None), http=http)
    relay._token = bytes(api.TOKEN_SIZE)
    with relay, pytest.raises(RelayUnavailableError, match="too slow"):
        relay.key_counts()


@pytest.mark.parametrize("value", [0, -1.0, math.inf, math.nan, True, "5"])
def test_timeouts_must_be_positive_numbers(value: object) -> None:
    for name in ("timeout", "answer_timeout"):
        with pytest.raises(ValueError, match=name):
            RelayClient(URL, cast(Client, None), **{name: value})  # type: ignore[arg-type]


def test_an_answer_whose_headers_trickle_in_is_given_up_at_its_deadline() -> None:
    """[REQ-RL-31] httpx bounds each read of the status line and headers by its timeout only,
    so a relay sending a header byte every 50 ms (well within the 5 s read timeout) would hold
    the caller until its 100 KiB header limit. The answer deadline bounds every read: with an
    answer_timeout of 0.5 s the call gives up while the header bytes still trickle, not after
    this relay's 3 s of them (when the body deadline alone would refuse the complete answer)."""
    body = codec.encode({0: 3, 1: 4})
    sent = [0]
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def relay() -> None:
        connection, _ = listener.accept()
        with connection:
            request = b""
            while b"\r\n\r\n" not in request:
                request += connection.recv(4096)
            try:
                connection.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                for _ in range(60):
                    connection.sendall(b"a")
                    sent[0] += 1
                    time.sleep(0.05)
                connection.sendall(
                    b"\r\ncontent-type: application/cbor\r\ncontent-length: "
                    + str(len(body)).encode()
                    + b"\r\n\r\n"
                    + body
                )
            except OSError:  # the client gave up and closed the connection
                pass

    server = threading.Thread(target=relay, daemon=True)
    server.start()
    relay_client_ = RelayClient(
        f"http://127.0.0.1:{port}", cast(Client, None), timeout=5, answer_timeout=0.5, retries=0
    )
    relay_client_._token = bytes(api.TOKEN_SIZE)
    with relay_client_, pytest.raises(RelayUnavailableError, match="too slow"):
        relay_client_.key_counts()
    server.join(timeout=10)
    listener.close()
    assert not server.is_alive()
    assert sent[0] < 60  # cut off while the headers trickled, not once they were complete


def test_a_callers_own_http_client_keeps_its_transport() -> None:
    """[REQ-RL-31] The deadline is put in front of the network reads only of the httpx client
    the relay client makes itself; a transport without connection pools (httpx.MockTransport)
    is left alone and its answers are bounded once their body starts."""
    mock = httpx.Client(transport=httpx.MockTransport(lambda _: httpx.Response(200)))
    assert relay_client_module._install_deadline(mock) is None
    with RelayClient(URL, cast(Client, None)) as own:
        assert own._deadline is not None
    with RelayClient(URL, cast(Client, None), http=mock) as given:
        assert given._deadline is None


@pytest.mark.parametrize("counts", [{0: -1, 1: 0}, {0: 0, 1: -5}, {0: True, 1: 0}, {0: 1}])
def test_key_counts_a_relay_sends_must_be_two_non_negative_integers(
    counts: dict[int, object],
) -> None:
    """[REQ-RL-43] publish_prekeys feeds the relay's counts to the refill: a negative count
    would reach the client's policy as a caller error (ValueError), not a relay's."""
    relay = relay_client(lambda _: httpx.Response(200, content=codec.encode(counts)))
    with relay, pytest.raises(RelayBadRequestError):
        relay.key_counts()
