"""The relay over real HTTP and WebSocket (uvicorn in a thread, in-memory or SQLite storage):
status codes, error bodies, body limits, the stream, and the relay client."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import httpx
import pytest
from starlette.exceptions import StarletteDeprecationWarning
from starlette.websockets import WebSocketDisconnect
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from e2ee.client import Client
from e2ee.client.envelope import Envelope
from e2ee.errors import (
    LocalError,
    MismatchedDevicesError,
    RelayAuthError,
    RelayBadRequestError,
    RelayMethodNotAllowedError,
    RelayNotFoundError,
    RelayRateLimitedError,
    RelayTooLargeError,
    RelayUnavailableError,
)
from e2ee.relay import api
from e2ee.relay.app import TOKEN_RECHECK, create_app, sweep_round
from e2ee.relay.client import RelayClient
from e2ee.relay.memory import MemoryStorage
from e2ee.relay.storage import Swept, Tx
from e2ee.wire import codec
from tests.client_support import SMALL_PREKEYS
from tests.relay_support import (
    BACKENDS,
    Clock,
    ThreadedRelay,
    User,
    auth,
    http_login,
    make_relay,
    make_storage,
    send_body,
    threaded_relay,
)

with warnings.catch_warnings():
    # Starlette asks for the httpx2 package, and warns once, on import, that it falls back to
    # httpx (installed here, and enough for the test client)
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient


@pytest.fixture(params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ThreadedRelay]:
    storage = make_storage(request.param, tmp_path)
    with threaded_relay(storage, claim_burst=3, claim_rate=0.01) as srv:
        yield srv
    storage.close()


@pytest.fixture
def http(server: ThreadedRelay) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        yield client


def dec(data: bytes) -> Any:
    return codec.decode(data, max_size=1 << 24)


def as_bytes(frame: str | bytes) -> bytes:
    assert isinstance(frame, bytes)
    return frame


def register(http: httpx.Client, server: ThreadedRelay, user: User) -> None:
    r = http.put(api.DEVICE_LIST, content=user.list_body())
    assert r.status_code == 201
    for device in user.devices:
        http_login(http, device, server.url)


def test_status_codes_and_error_bodies(http: httpx.Client, server: ThreadedRelay) -> None:
    """[REQ-RL-18] [REQ-RL-03]"""
    alice, bob = User.make("alice"), User.make("bob", 2)
    register(http, server, alice)
    register(http, server, bob)
    r = http.get(api.MESSAGES)
    assert r.status_code == 401
    assert dec(r.content)[0] == b"unauthorized"
    r = http.get(
        api.MESSAGES, headers={"authorization": "Bearer " + api.encode_token(os.urandom(32))}
    )
    assert r.status_code == 401
    r = http.post(api.CLAIM, content=b"\xa0\xff", headers=auth(alice.devices[0]))
    assert r.status_code == 400
    assert dec(r.content)[0] == b"malformed"
    r = http.get(api.DEVICE_LIST, params={"user": "nobody"}, headers=auth(alice.devices[0]))
    assert r.status_code == 404
    r = http.put(api.DEVICE_LIST, content=bob.list_body())
    assert r.status_code == 200  # identical list again: idempotent
    body = send_body(bob, os.urandom(16), alice.devices[0])
    request = api.SendRequest.from_bytes(body, max_envelope=1 << 20, limit=1 << 22)
    partial = api.SendRequest("bob", request.client_message_id, request.messages[:1])
    r = http.post(api.MESSAGES, content=partial.to_bytes(), headers=auth(alice.devices[0]))
    assert r.status_code == 409
    error = api.error_from_response(r.status_code, r.content)
    assert isinstance(error, MismatchedDevicesError)
    assert error.missing == (2,)
    r = http.post(api.MESSAGES, content=body, headers=auth(alice.devices[0]))
    assert r.status_code == 200
    for _ in range(3):
        claim = codec.encode({0: b"bob", 1: os.urandom(16)})
        assert (
            http.post(api.CLAIM, content=claim, headers=auth(alice.devices[0])).status_code == 200
        )
    r = http.post(
        api.CLAIM,
        content=codec.encode({0: b"bob", 1: os.urandom(16)}),
        headers=auth(alice.devices[0]),
    )
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) >= 1
    assert isinstance(api.error_from_response(429, r.content), RelayRateLimitedError)


def test_oversized_bodies_are_refused_before_they_are_read(
    http: httpx.Client, server: ThreadedRelay
) -> None:
    """[REQ-RL-19] A declared 1 GB body is answered 413 at once (the rest is never sent), and a
    chunked body is cut off as soon as it passes the limit."""
    alice = User.make("alice")
    register(http, server, alice)
    token = api.encode_token(alice.devices[0].token or b"")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(
            b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/cbor\r\n"
            b"authorization: Bearer "
            + token.encode()
            + b"\r\ncontent-length: 1000000000\r\n\r\n"
            + b"\xa0" * 1000
        )
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        # chunked, no length: 32 KiB of chunks and then nothing (the body never ends)
        chunk = b"%x\r\n" % 4096 + b"\0" * 4096 + b"\r\n"
        s.sendall(
            b"POST /v1/messages/ack HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n"
            b"authorization: Bearer " + token.encode() + b"\r\n\r\n" + chunk * 8
        )
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413")


def test_the_stream_pushes_in_order_and_acks_only_the_own_queue(
    http: httpx.Client, server: ThreadedRelay
) -> None:
    """[REQ-RL-14] [REQ-RL-15]"""
    alice, bob = User.make("alice"), User.make("bob", 2)
    register(http, server, alice)
    register(http, server, bob)
    ids = [os.urandom(16) for _ in range(3)]
    with pytest.raises(InvalidStatus):
        connect(f"ws://127.0.0.1:{server.port}{api.STREAM}").close()
    url = f"ws://127.0.0.1:{server.port}{api.STREAM}"
    with connect(url, additional_headers=auth(bob.devices[0])) as ws:
        http.post(
            api.MESSAGES,
            content=send_body(bob, ids[0], alice.devices[0]),
            headers=auth(alice.devices[0]),
        )
        first = dec(as_bytes(ws.recv(timeout=10)))
        for mid in ids[1:]:
            http.post(
                api.MESSAGES,
                content=send_body(bob, mid, alice.devices[0]),
                headers=auth(alice.devices[0]),
            )
        pushed = [first, dec(as_bytes(ws.recv(timeout=10))), dec(as_bytes(ws.recv(timeout=10)))]
        assert [dec(p[1])[6] for p in pushed] == ids
        ws.send(codec.encode({0: [p[0] for p in pushed[:2]]}))
        deadline = time.monotonic() + 10
        while len(dec(http.get(api.MESSAGES, headers=auth(bob.devices[0])).content)[0]) != 1:
            assert time.monotonic() < deadline
    # device 2 of bob still has all three; acking device 1's ids from device 2 removes only
    # device 2's own messages of those ids (ids are per device on PostgreSQL), never device 1's
    other = dec(http.get(api.MESSAGES, headers=auth(bob.devices[1])).content)[0]
    assert len(other) == 3
    acked = [p[0] for p in pushed]
    r = http.post(api.ACK, content=codec.encode({0: acked}), headers=auth(bob.devices[1]))
    assert dec(r.content)[0] == len(set(acked) & {o[0] for o in other})
    assert len(dec(http.get(api.MESSAGES, headers=auth(bob.devices[0])).content)[0]) == 1


def test_relay_client_maps_errors_to_typed_exceptions(
    server: ThreadedRelay, tmp_path: Path
) -> None:
    """[REQ-RL-18]"""
    alice = Client.create(tmp_path / "a.sqlite", "alice", prekey_policy=SMALL_PREKEYS)
    with RelayClient(server.url, alice) as ra:
        assert ra.publish_device_list()
        assert ra.publish_prekeys() == (4, 4)
        assert ra.device_list("nobody") is None
        with pytest.raises(RelayNotFoundError):
            ra.claim("nobody")
        ra._token = os.urandom(32)  # a stale token: the client logs in again by itself
        assert ra.key_counts() == (4, 4)
        with pytest.raises(RelayTooLargeError):
            ra._call("POST", api.ACK, b"\0" * (api.MAX_SMALL_BODY + 1))
    wrong_origin = RelayClient(server.url.replace("127.0.0.1", "localhost"), alice)
    with pytest.raises(RelayAuthError):
        wrong_origin.login()
    wrong_origin.close()
    alice.close()


@pytest.mark.parametrize("failure", ["local_error", "damaged_store"])
def test_the_client_acknowledges_only_after_a_durable_receive(
    server: ThreadedRelay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    """[REQ-RL-22] A receive that fails locally leaves the envelope queued; once the client
    processes it, it is acknowledged and gone from the relay. A damaged row of the device's own
    store (a StateError, not the envelope's fault) is a local failure too: acknowledging it
    would drop a genuine message for good."""
    alice = Client.create(tmp_path / "a.sqlite", "alice", prekey_policy=SMALL_PREKEYS)
    bob = Client.create(tmp_path / "b.sqlite", "bob", prekey_policy=SMALL_PREKEYS)
    with RelayClient(server.url, alice) as ra, RelayClient(server.url, bob) as rb:
        for r in (ra, rb):
            r.publish_device_list()
            r.publish_prekeys()
        ra.send("bob", b"kept until processed")

        def failing(data: bytes, *, now: int | None = None) -> object:
            raise LocalError("disk full")

        if failure == "damaged_store":
            (account,) = bob.store.conn.execute("SELECT state FROM account").fetchone()
            bob.store.conn.execute("UPDATE account SET state = 'damaged'")
            report = rb.receive()
            bob.store.conn.execute("UPDATE account SET state = ?", (account,))
        else:
            with monkeypatch.context() as patch:
                patch.setattr(bob, "receive", failing)
                report = rb.receive()
        assert (report.kept, report.acked, report.results, report.refused) == (1, 0, [], [])
        assert bob.inbox() == []
        report = rb.receive()
        assert report.acked == 1
        assert [r.message.body for r in report.results if r.message] == [b"kept until processed"]
        assert rb.receive().acked == 0  # nothing left on the relay
    alice.close()
    bob.close()


def test_an_envelope_waiting_for_an_identity_approval_stays_queued(
    server: ThreadedRelay, tmp_path: Path
) -> None:
    """[REQ-RL-22] Bob (trust policy block) knows another identity key for alice than the one
    her message comes with: the receive raises UntrustedIdentityError, which is no fault of
    the envelope, so it stays queued (not acknowledged, not refused) and is delivered once Bob
    approved the new key."""
    earlier = Client.create(tmp_path / "a0.sqlite", "alice", prekey_policy=SMALL_PREKEYS)
    alice = Client.create(tmp_path / "a.sqlite", "alice", prekey_policy=SMALL_PREKEYS)
    bob = Client.create(tmp_path / "b.sqlite", "bob", policy="block", prekey_policy=SMALL_PREKEYS)
    bob.process_device_list(earlier.device_list(), "alice")  # alice's key as Bob first saw it
    assert bob.identity_key_of("alice") == earlier.user_key != alice.user_key
    with RelayClient(server.url, alice) as ra, RelayClient(server.url, bob) as rb:
        for r in (ra, rb):
            r.publish_device_list()
            r.publish_prekeys()
        ra.send("bob", b"after the key change")
        for _ in range(2):  # not refused for good: it is offered again
            report = rb.receive()
            assert (report.kept, report.acked, report.results, report.refused) == (1, 0, [], [])
        assert bob.inbox() == []
        assert bob.approve_identity("alice", key=alice.user_key)
        report = rb.receive()
        assert (report.kept, report.acked, report.refused) == (0, 1, [])
        assert [r.message.body for r in report.results if r.message] == [b"after the key change"]
        assert rb.receive().acked == 0  # nothing left on the relay
    for client in (earlier, alice, bob):
        client.close()


# --- the app in process (Starlette's TestClient) ---------------------------------------------

ASGI_ORIGIN = "http://testserver"


@pytest.fixture
def asgi() -> Iterator[TestClient]:
    storage = MemoryStorage()
    app = create_app(make_relay(storage, origin=ASGI_ORIGIN), storage, sweep=False)
    with TestClient(app) as client:
        yield client


def test_a_text_frame_on_the_stream_closes_it_with_1003(asgi: TestClient) -> None:
    """[REQ-RL-18] Acks are binary CBOR frames: a text frame closes the stream with 1003
    (unsupported data), as a malformed binary ack does, instead of escaping the app as a
    KeyError that also skipped the close."""
    alice = User.make("alice")
    assert asgi.put(api.DEVICE_LIST, content=alice.list_body()).status_code == 201
    http_login(asgi, alice.devices[0], ASGI_ORIGIN)
    with asgi.websocket_connect(api.STREAM, headers=auth(alice.devices[0])) as ws:
        ws.send_text("{0: [1]}")
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_bytes()
    assert info.value.code == 1003


@pytest.mark.parametrize(
    "ack",
    [
        {0: [b"x"]},  # not an integer
        {0: [1, -1]},  # negative
        {0: [2**64 - 1]},  # past the largest message id
        {0: [True]},  # a boolean is not a message id
        {0: list(range(1, api.MAX_ACK_IDS + 2))},  # more ids than one ack may hold
        {0: 1},  # not an array
        {1: [1]},  # the wrong key
        [1],  # not a map
    ],
)
def test_a_malformed_ack_on_the_stream_closes_it_with_1003(asgi: TestClient, ack: object) -> None:
    """[REQ-RL-18] An ack frame follows the rules of POST /v1/ack: ids that are not message
    ids, or more than MAX_ACK_IDS of them, close the stream with 1003 (unsupported data)
    instead of being dropped or cut off silently while the stream goes on (a message queued
    after the ack would then be pushed)."""
    alice, bob = User.make("alice"), User.make("bob")
    for user in (alice, bob):
        assert asgi.put(api.DEVICE_LIST, content=user.list_body()).status_code == 201
        http_login(asgi, user.devices[0], ASGI_ORIGIN)
    with asgi.websocket_connect(api.STREAM, headers=auth(alice.devices[0])) as ws:
        ws.send_bytes(cbor2.dumps(ack))
        sent = asgi.post(
            api.MESSAGES,
            content=send_body(alice, os.urandom(16), bob.devices[0]),
            headers=auth(bob.devices[0]),
        )
        assert sent.status_code == 200
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_bytes()
    assert info.value.code == 1003


@pytest.mark.parametrize("cause", ["token_expired", "storage_failed", "ack_token_expired"])
def test_the_relay_closes_a_stream_with_a_code_that_names_the_cause(
    monkeypatch: pytest.MonkeyPatch, cause: str
) -> None:
    """[REQ-RL-14] 4401 when the token stopped being valid while the stream was open (the
    client should log in again), 1013 when the relay could not serve it (try again later);
    before, every close after the stream started said 4401."""
    storage = MemoryStorage()
    clock = Clock()
    relay = make_relay(storage, clock, origin=ASGI_ORIGIN)
    alice, bob = User.make("alice"), User.make("bob")
    with TestClient(create_app(relay, storage, sweep=False)) as client:
        for user in (alice, bob):
            assert client.put(api.DEVICE_LIST, content=user.list_body()).status_code == 201
        http_login(client, alice.devices[0], ASGI_ORIGIN)
        if cause == "storage_failed":

            def failing(*args: Any) -> Any:
                def job(tx: Any) -> Any:
                    raise RelayUnavailableError("storage is closed")

                return job

            monkeypatch.setattr(relay, "pending", failing)
        with client.websocket_connect(api.STREAM, headers=auth(alice.devices[0])) as ws:
            if cause == "ack_token_expired":  # the acker's job fails: the same code (review)
                clock.advance(relay.config.token_ttl + 1)
                ws.send_bytes(codec.encode({0: [1]}))
            if cause == "token_expired":
                clock.advance(relay.config.token_ttl + 1)
                http_login(client, bob.devices[0], ASGI_ORIGIN)
                sent = client.post(
                    api.MESSAGES,
                    content=send_body(alice, os.urandom(16), bob.devices[0]),
                    headers=auth(bob.devices[0]),
                )
                assert sent.status_code == 200  # it wakes alice's stream, whose token expired
            with pytest.raises(WebSocketDisconnect) as info:
                ws.receive_bytes()
    codes = {"token_expired": 4401, "storage_failed": 1013, "ack_token_expired": 4401}
    assert info.value.code == codes[cause]


def test_a_stream_the_storage_cannot_authenticate_is_closed_with_1013(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """[REQ-RL-14] A storage failure while the stream's token is checked said 4401 (an HTTP 403
    to the handshake), and the relay client then logged in again for nothing: it is accepted
    and closed with 1013 (try again later). A token that does not verify still gets 4401."""
    storage = MemoryStorage()
    relay = make_relay(storage, Clock(), origin=ASGI_ORIGIN)
    alice = User.make("alice")
    with TestClient(create_app(relay, storage, sweep=False)) as client:
        assert client.put(api.DEVICE_LIST, content=alice.list_body()).status_code == 201
        http_login(client, alice.devices[0], ASGI_ORIGIN)

        def failing(token: Any) -> Any:
            def job(tx: Any) -> Any:
                raise RelayUnavailableError("storage is closed")

            return job

        with monkeypatch.context() as patch:
            patch.setattr(relay, "auth_job", failing)
            with (
                client.websocket_connect(api.STREAM, headers=auth(alice.devices[0])) as ws,
                pytest.raises(WebSocketDisconnect) as info,
            ):
                ws.receive_bytes()
        assert info.value.code == 1013
        with (
            pytest.raises(WebSocketDisconnect) as refused_token,
            client.websocket_connect(api.STREAM, headers={"authorization": "Bearer x"}),
        ):
            pass
        assert refused_token.value.code == 4401


def test_a_device_holds_at_most_max_streams_and_a_newer_one_closes_the_oldest() -> None:
    """[REQ-RL-42] Every stream of a device is woken by each message queued for it: a device
    holding many streams made each message to it cost as many storage jobs. With
    max_streams_per_device=2, a third stream of alice's device closes her first with 4409;
    the two newer ones both get the next message, and bob's stream is not touched."""
    storage = MemoryStorage()
    relay = make_relay(storage, origin=ASGI_ORIGIN, max_streams_per_device=2)
    alice, bob = User.make("alice"), User.make("bob")
    with TestClient(create_app(relay, storage, sweep=False)) as client:
        for user in (alice, bob):
            assert client.put(api.DEVICE_LIST, content=user.list_body()).status_code == 201
            http_login(client, user.devices[0], ASGI_ORIGIN)
        with contextlib.ExitStack() as stack:
            bobs = stack.enter_context(
                client.websocket_connect(api.STREAM, headers=auth(bob.devices[0]))
            )
            first, second, third = (
                stack.enter_context(
                    client.websocket_connect(api.STREAM, headers=auth(alice.devices[0]))
                )
                for _ in range(3)
            )
            message_id = os.urandom(16)
            sent = client.post(
                api.MESSAGES,
                content=send_body(alice, message_id, bob.devices[0]),
                headers=auth(bob.devices[0]),
            )
            assert sent.status_code == 200
            with pytest.raises(WebSocketDisconnect) as info:  # not the message: it was closed
                first.receive_bytes()
            assert info.value.code == 4409
            for ws in (second, third):
                pushed = cbor2.loads(ws.receive_bytes())
                assert Envelope.from_bytes(pushed[1]).message_id == message_id
            to_bob = client.post(
                api.MESSAGES,
                content=send_body(bob, message_id, alice.devices[0]),
                headers=auth(alice.devices[0]),
            )
            assert to_bob.status_code == 200
            assert Envelope.from_bytes(cbor2.loads(bobs.receive_bytes())[1]).message_id == (
                message_id
            )


def test_max_streams_per_device_is_a_positive_integer() -> None:
    for value in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="max_streams_per_device"):
            make_relay(MemoryStorage(), max_streams_per_device=value)


@pytest.mark.parametrize(
    ("method", "path", "status", "code", "allow"),
    [
        ("GET", "/v1/nope", 404, b"not_found", None),
        ("POST", "/", 404, b"not_found", None),
        ("DELETE", api.MESSAGES, 405, b"method_not_allowed", {"GET", "POST"}),
        ("GET", api.CLAIM, 405, b"method_not_allowed", {"POST"}),
        ("PUT", api.ACK, 405, b"method_not_allowed", {"POST"}),
        ("HEAD", api.HEALTH, 405, b"method_not_allowed", {"GET"}),
        ("HEAD", api.MESSAGES, 405, b"method_not_allowed", {"GET", "POST"}),
        ("GET", api.HEALTH + "/", 404, b"not_found", None),
        ("POST", api.MESSAGES + "/", 404, b"not_found", None),
    ],
)
def test_unknown_routes_and_methods_are_refused_with_cbor_error_bodies(
    asgi: TestClient, method: str, path: str, status: int, code: bytes, allow: set[str] | None
) -> None:
    """[REQ-RL-18] Every refusal is {0: code, 1: message} in CBOR, Starlette's own routing
    refusals too (they were text/plain "Not Found" and "Method Not Allowed"); a 405 names the
    methods the route takes, and the relay client reads both back as their typed errors."""
    r = asgi.request(method, path, follow_redirects=False)
    assert r.status_code == status
    assert r.headers["content-type"] == api.CONTENT_TYPE
    if method == "HEAD":  # the server writes no body for HEAD: read the refusal from a GET
        assert "location" not in r.headers
        return
    body = dec(r.content)
    assert body[0] == code
    assert type(body[1]) is bytes
    if allow is None:
        assert "allow" not in r.headers
    else:
        assert {m.strip() for m in r.headers["allow"].split(",")} >= allow
    error = api.error_from_response(r.status_code, r.content)
    assert isinstance(error, RelayNotFoundError if status == 404 else RelayMethodNotAllowedError)
    assert error.code == code.decode()
    assert error.status == status
    if status == 405:  # a bad request: callers that handle those handle it as well
        assert isinstance(error, RelayBadRequestError)


def test_a_head_request_runs_no_write_branch(asgi: TestClient) -> None:
    """[REQ-RL-18] Starlette adds HEAD to every route that takes GET, and the handlers ran
    their write branch for anything not GET: a HEAD with a send body queued the message, one
    with a device list registered the user (review finding). HEAD is now refused (405) and
    stores nothing."""
    alice, bob = User.make("alice"), User.make("bob")
    r = asgi.request("HEAD", api.DEVICE_LIST, content=alice.list_body())
    assert r.status_code == 405
    assert asgi.put(api.DEVICE_LIST, content=alice.list_body()).status_code == 201  # not taken
    assert asgi.put(api.DEVICE_LIST, content=bob.list_body()).status_code == 201
    http_login(asgi, alice.devices[0], ASGI_ORIGIN)
    http_login(asgi, bob.devices[0], ASGI_ORIGIN)
    body = send_body(bob, os.urandom(16), alice.devices[0])
    head = asgi.request("HEAD", api.MESSAGES, content=body, headers=auth(alice.devices[0]))
    assert head.status_code == 405
    upload = alice.devices[0].upload_body(2, 2)
    keys = asgi.request("HEAD", api.KEYS, content=upload, headers=auth(alice.devices[0]))
    assert keys.status_code == 405
    queued = asgi.get(api.MESSAGES, headers=auth(bob.devices[0]))
    assert dec(queued.content)[0] == []
    counts = asgi.get(api.KEYS, headers=auth(alice.devices[0]))
    assert (dec(counts.content)[0], dec(counts.content)[1]) == (0, 0)


def test_a_caller_that_leaves_mid_body_is_not_logged_as_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """[REQ-RL-18] Starlette raises ClientDisconnect when the caller goes away before its body
    ended; the relay logged it with a traceback as a handler failure, on routes that need no
    token (so anyone could fill the log). Now nothing is logged."""
    storage = MemoryStorage()
    app: Any = create_app(make_relay(storage, origin=ASGI_ORIGIN), storage, sweep=False)
    events = [{"type": "http.request", "body": b"\xa1", "more_body": True}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return events.pop(0) if events else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": api.LOGIN, "raw_path": api.LOGIN.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"content-length", b"100")], "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }  # fmt: skip
    with caplog.at_level(logging.DEBUG, logger="e2ee.relay"):
        asyncio.run(app(scope, receive, send))
    assert [r for r in caplog.records if r.name.startswith("e2ee")] == []
    assert sent[0]["status"] == 400


def asgi_request(
    app: Any,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes | list[bytes] = b"",
    read: list[int] | None = None,
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """One HTTP request straight through the ASGI interface, past any server's header parser:
    (status, headers, body). A list ``body`` arrives chunk by chunk; ``read`` then collects
    the size of each chunk the app asked for."""
    sent: list[dict[str, Any]] = []
    chunks = [body] if isinstance(body, bytes) else list(body)

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0) if chunks else b""
        if read is not None:
            read.append(len(chunk))
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["type"] == "http.response.start"
    return sent[0]["status"], sent[0]["headers"], b"".join(m.get("body", b"") for m in sent[1:])


@pytest.mark.parametrize("length", [b"\xb2", b"1\xb9", b"\xb3\xb3", b"", b"+1", b"1 "])
def test_a_content_length_of_other_than_ascii_digits_is_malformed(length: bytes) -> None:
    """[REQ-RL-18] [REQ-RL-19] Content-Length is decoded as latin-1, and str.isdigit() is true
    for the superscript digits of latin-1 ("²"), which int() then refused: a bare 500. Any
    value but ASCII digits is now 400 malformed. (uvicorn's parser refuses these first; the
    app must not depend on it.)"""
    storage = MemoryStorage()
    app = create_app(make_relay(storage, origin=ASGI_ORIGIN), storage, sweep=False)
    status, headers, body = asgi_request(
        app, "POST", api.CHALLENGE, [(b"content-length", length)], codec.encode({0: b"a", 1: 1})
    )
    assert status == 400
    assert (b"content-type", api.CONTENT_TYPE.encode()) in headers
    assert dec(body)[0] == b"malformed"


@pytest.mark.parametrize(
    ("length", "status"),
    [
        (b"0" * 15 + b"10", 200),  # 10 with leading zeros: Content-Length is 1*DIGIT
        (b"0" * 15 + b"16385", 413),
        (b"9" * 13, 413),  # a length with more digits than any limit is over it, not malformed
        (b"1" + b"0" * 5000, 413),  # past Python's 4,300-digit int() bound: no ValueError, no 500
    ],
)
def test_a_content_length_is_read_as_its_value(length: bytes, status: int) -> None:
    """[REQ-RL-19] Only the value of Content-Length counts: leading zeros do not make it
    malformed, and a length above the limit is 413 however many digits it has (a length of
    more than 12 characters was 400 malformed)."""
    storage = MemoryStorage()
    app = create_app(make_relay(storage, origin=ASGI_ORIGIN), storage, sweep=False)
    body = codec.encode({0: b"alice", 1: 1})
    assert len(body) == 10  # the length the first case names
    got, _, answer = asgi_request(app, "POST", api.CHALLENGE, [(b"content-length", length)], body)
    assert got == status
    if status == 413:
        assert dec(answer)[0] == b"too_large"


def test_a_send_body_is_read_only_for_a_token_that_verifies() -> None:
    """[REQ-RL-19] POST /v1/messages reads no byte of its body (up to 8 MiB) before its token
    verified: an unknown token is a 401 with nothing read. A token verified once is not
    verified again before the body for TOKEN_RECHECK seconds (the send's job still does), so
    sends cost no extra storage turn."""
    storage = MemoryStorage()
    clock = Clock()
    relay = make_relay(storage, clock, origin=ASGI_ORIGIN)
    app = create_app(relay, storage, sweep=False)
    alice, bob = User.make("alice"), User.make("bob")
    with TestClient(app) as client:
        for user in (alice, bob):
            assert client.put(api.DEVICE_LIST, content=user.list_body()).status_code == 201
        http_login(client, alice.devices[0], ASGI_ORIGIN)
    big = [b"\0" * 65536] * 120  # about 7.5 MiB, under max_send_body
    length = str(sum(map(len, big))).encode()
    stranger = [(b"authorization", b"Bearer " + api.encode_token(os.urandom(32)).encode())]
    read: list[int] = []
    status, _, answer = asgi_request(
        app, "POST", api.MESSAGES, [*stranger, (b"content-length", length)], big, read
    )
    assert (status, dec(answer)[0]) == (401, b"unauthorized")
    assert sum(read) == 0

    verifications: list[bytes | None] = []
    auth_job = relay.auth_job

    def counted(token: bytes | None) -> Any:
        verifications.append(token)
        return auth_job(token)

    token = [(b"authorization", auth(alice.devices[0])["authorization"].encode())]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(relay, "auth_job", counted)
        for _ in range(3):
            body = send_body(bob, os.urandom(16), alice.devices[0])
            status, _, _ = asgi_request(app, "POST", api.MESSAGES, token, body)
            assert status == 200
        assert len(verifications) == 1
        clock.advance(TOKEN_RECHECK)
        body = send_body(bob, os.urandom(16), alice.devices[0])
        assert asgi_request(app, "POST", api.MESSAGES, token, body)[0] == 200
        assert len(verifications) == 2


class TakingTurns:
    """A storage whose ``submit`` lets every other ready task run before the job (a job
    submitted to the SQLite storage likewise waits some loop turns for its group commit), and
    records the order in which the jobs ran: "sweep" or "other"."""

    def __init__(self, inner: MemoryStorage, fail: bool = False) -> None:
        self.inner = inner
        self.fail = fail
        self.ran: list[str] = []

    def run(self, job: Any) -> Any:
        return self.inner.run(job)

    async def submit(self, job: Any) -> Any:
        await asyncio.sleep(0)  # one loop turn, not a wait for time to pass
        if self.fail:
            self.ran.append("failed")
            raise RelayUnavailableError("storage commit failed")
        value = self.inner.run(job)
        self.ran.append("sweep" if isinstance(value, Swept) else "other")
        return value

    def close(self) -> None:
        pass


def expired_messages(storage: MemoryStorage, relay: Any, count: int) -> None:
    now = relay.now()

    def job(tx: Tx) -> None:
        for i in range(count):
            tx.enqueue("bob", i % 3 + 1, b"old", now - 1)
        tx.enqueue("bob", 1, b"new", now + 60)

    storage.run(job)


def test_a_sweep_round_runs_bounded_jobs_back_to_back_until_one_is_not_full() -> None:
    """[REQ-RL-41] The periodic sweep submitted one job that deleted everything expired. A
    round now submits bounded jobs (``sweep_batch`` rows of each table) one after the other,
    each a job of its own, so the jobs of other requests run between two batches, and stops
    at the first job that is not full: 25 expired messages in batches of 7 take 4 jobs."""
    inner = MemoryStorage()
    relay = make_relay(inner, Clock(), sweep_batch=7)
    expired_messages(inner, relay, 25)
    storage = TakingTurns(inner)

    async def other_requests() -> None:
        for _ in range(20):
            await storage.submit(lambda tx: tx.queue_length("bob", 1))

    async def main() -> int:
        others = asyncio.create_task(other_requests())
        jobs = await sweep_round(relay, storage)
        await others
        return jobs

    assert asyncio.run(main()) == 4
    assert [m[2] for m in inner.messages.values()] == [b"new"]
    assert inner.queued == {("bob", 1): 1, ("bob", 2): 0, ("bob", 3): 0}
    sweeps = [i for i, name in enumerate(storage.ran) if name == "sweep"]
    assert len(sweeps) == 4
    assert all(b - a > 1 for a, b in itertools.pairwise(sweeps))  # others between


def test_a_sweep_round_ends_when_the_storage_fails() -> None:
    """[REQ-RL-41] A job the storage could not run ends the round without raising (the
    sweeper task must live on; the next round, a sweep interval later, tries again)."""
    inner = MemoryStorage()
    relay = make_relay(inner, Clock(), sweep_batch=7)
    expired_messages(inner, relay, 25)
    storage = TakingTurns(inner, fail=True)
    assert asyncio.run(sweep_round(relay, storage)) == 1
    assert storage.ran == ["failed"]
    assert len(inner.messages) == 26
