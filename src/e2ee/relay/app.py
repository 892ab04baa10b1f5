"""The relay over HTTP and WebSocket: a Starlette app around :class:`e2ee.relay.rules.Relay`.

Bodies are read with a size limit checked against ``Content-Length`` first and then while the
body streams in, so an oversized body is refused (413) before it is read whole. Every
:class:`~e2ee.errors.RelayError` becomes its HTTP status with a CBOR error body
(:func:`e2ee.relay.api.error_body`); anything unexpected becomes a bare 500 that reveals
nothing. Tokens never reach a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from e2ee.crypto import primitives
from e2ee.errors import (
    RelayAuthError,
    RelayBadRequestError,
    RelayError,
    RelayMethodNotAllowedError,
    RelayNotFoundError,
    RelayTooLargeError,
)
from e2ee.relay import api
from e2ee.relay.rules import Auth, Relay
from e2ee.relay.storage import LocalNotifier, Notifier, Storage
from e2ee.wire import codec

log = logging.getLogger("e2ee.relay")

Handler = Callable[[Request], Awaitable[Response]]
SWEEP_INTERVAL = 60.0
WS_IDLE = 25.0
TOKEN_RECHECK = 60
"""Seconds for which a token verified before a send's body was read lets the next sends'
bodies be read without a storage turn of their own (each send still verifies it in its job)."""
TOKENS_REMEMBERED = 4096


def cbor(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type=api.CONTENT_TYPE)


def error_response(error: RelayError) -> Response:
    headers = {}
    retry = getattr(error, "retry_after", None)
    if isinstance(retry, int):
        headers["Retry-After"] = str(retry)
    return Response(
        api.error_body(error),
        status_code=error.status,
        media_type=api.CONTENT_TYPE,
        headers=headers,
    )


def routing_refusal(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no such route) and 405 (method not allowed on the route), as CBOR
    error bodies like every other refusal; a 405 keeps Starlette's ``Allow`` header."""
    assert isinstance(exc, HTTPException)
    error: RelayError
    if exc.status_code == 405:
        error = RelayMethodNotAllowedError("the route does not take this method")
    else:
        error = RelayNotFoundError("no such route")
    response = error_response(error)
    response.headers.update(exc.headers or {})
    return response


def close_code(
    pusher: asyncio.Task[None], acker: asyncio.Task[None], superseded: asyncio.Event
) -> int:
    """How the relay closes a stream: 4409 when newer streams of the same device replaced it
    (REQ-RL-42); else by why its pusher (which only ends by an error) or its acker (whose
    acknowledgements run the same rules) failed: 4401 when the token is no longer valid
    (expired, or the device left the list: log in again), 1013 when the relay could not serve
    it (try again later); 1000 when neither failed (the client's side ended the stream)."""
    if superseded.is_set():
        return api.STREAM_SUPERSEDED
    if pusher.done() and not pusher.cancelled():
        return 4401 if isinstance(pusher.exception(), RelayAuthError) else 1013
    if acker.done() and not acker.cancelled():
        error = acker.exception()
        if isinstance(error, RelayAuthError):
            return 4401
        if isinstance(error, RelayError):
            return 1013
    return 1000


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it is known to exceed ``limit`` bytes."""
    length = request.headers.get("content-length")
    if length is not None:
        # ASCII digits only: str.isdigit() is also true for "²" (a latin-1 header byte)
        if not (length.isascii() and length.isdigit()):
            raise RelayBadRequestError("malformed Content-Length", code="malformed")
        # leading zeros are allowed (1*DIGIT); more significant digits than the limit has is
        # over it, without converting a number of up to 16 KiB of digits
        significant = length.lstrip("0")
        if len(significant) > len(str(limit)) or int(significant or "0") > limit:
            raise RelayTooLargeError(f"body is over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RelayTooLargeError(f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def bearer(headers: Any) -> bytes | None:
    value = headers.get("authorization")
    if not isinstance(value, str) or not value.startswith("Bearer "):
        return None
    return api.decode_token(value[7:])


async def sweep_round(relay: Relay, storage: Storage) -> int:
    """One round of the periodic sweep: bounded sweep jobs (``RelayConfig.sweep_batch`` rows of
    each table) submitted one after the other until one comes back not full, each a job of its
    own, so the jobs of other requests run between two batches. Returns the number of jobs. A
    job the storage could not run ends the round (the next one retries)."""
    jobs = 0
    while True:
        jobs += 1
        try:
            swept = await storage.submit(relay.sweep())
        except RelayError:
            return jobs
        if not swept.more:
            return jobs


def create_app(
    relay: Relay, storage: Storage, notifier: Notifier | None = None, *, sweep: bool = True
) -> Starlette:
    """The ASGI app. ``storage`` must be the one the ``relay`` jobs run on."""
    notify: Notifier = notifier or LocalNotifier()
    cfg = relay.config
    verified: dict[bytes, int] = {}  # sha256(token) -> when it was last verified
    streams: dict[tuple[str, int], list[asyncio.Event]] = {}  # open streams, oldest first

    async def verify_before_body(token: bytes | None) -> None:
        """Before a send's body (up to max_send_body) is read: its token must be valid. One
        storage turn for a token not verified in the last TOKEN_RECHECK seconds; none for the
        sends that follow. The send's job verifies the token again, in its transaction, so a
        token revoked meanwhile still stores nothing: this only keeps callers without a valid
        token from making the relay read and parse 8 MiB."""
        if token is None:
            raise RelayAuthError("no bearer token")
        digest = primitives.sha256(token)
        now = relay.now()
        seen = verified.get(digest)
        if seen is not None and 0 <= now - seen < TOKEN_RECHECK:
            return
        await storage.submit(relay.auth_job(token))
        if len(verified) >= TOKENS_REMEMBERED:
            verified.clear()
        verified[digest] = now

    def guarded(handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except RelayError as error:
                return error_response(error)
            except ClientDisconnect:  # the caller left mid-body: no one to answer, nothing to log
                return Response(status_code=400)
            except Exception:  # never leak internals (or anything secret) to the peer
                log.exception("relay handler failed")
                return Response(status_code=500)

        return endpoint

    async def health(request: Request) -> Response:
        return cbor(codec.encode({0: True}))

    async def challenge(request: Request) -> Response:
        return cbor(relay.challenge(await read_body(request, api.MAX_SMALL_BODY)))

    async def login(request: Request) -> Response:
        body = await read_body(request, api.MAX_SMALL_BODY)
        return cbor(await storage.submit(relay.login(body)))

    async def device_list(request: Request) -> Response:
        if request.method == "GET":
            user = api.user_query(request.query_params.get("user"))
            return cbor(await storage.submit(relay.get_device_list(bearer(request.headers), user)))
        body = await read_body(request, api.MAX_SMALL_BODY)
        response, created = await storage.submit(relay.publish_device_list(body))
        return cbor(response, 201 if created else 200)

    async def keys(request: Request) -> Response:
        token = bearer(request.headers)
        if request.method == "GET":
            return cbor(await storage.submit(relay.key_counts(token)))
        auth: Auth = await storage.submit(relay.auth_job(token))
        body = await read_body(request, cfg.max_upload_body)
        checked = await asyncio.to_thread(relay.check_upload, auth, body)
        return cbor(await storage.submit(relay.store_upload(token, checked)))

    async def claim(request: Request) -> Response:
        body = await read_body(request, api.MAX_SMALL_BODY)
        return cbor(await storage.submit(relay.claim(bearer(request.headers), body)))

    async def messages(request: Request) -> Response:
        token = bearer(request.headers)
        if request.method == "GET":
            try:
                after = int(request.query_params.get("after", "0"))
                limit = int(request.query_params.get("limit", "100"))
            except ValueError:
                raise RelayBadRequestError(
                    "after and limit are integers", code="malformed"
                ) from None
            if not 0 <= after < 2**63 or limit < 1:
                raise RelayBadRequestError("after or limit out of range", code="malformed")
            return cbor(await storage.submit(relay.fetch(token, after, limit)))
        await verify_before_body(token)  # refuse before reading a large body
        body = await read_body(request, cfg.max_send_body)
        sent = await storage.submit(relay.send(token, body))
        for user, device in sent.wake:
            notify.notify(user, device)
        return cbor(sent.body)

    async def ack(request: Request) -> Response:
        body = await read_body(request, api.MAX_SMALL_BODY)
        return cbor(await storage.submit(relay.ack(bearer(request.headers), body)))

    async def stream(websocket: WebSocket) -> None:
        token = bearer(websocket.headers)
        try:
            auth: Auth = await storage.submit(relay.auth_job(token))
        except RelayAuthError:
            await websocket.close(code=4401)  # before accept: an HTTP 403 to the handshake
            return
        except RelayError:  # the storage failed, not the token: "try again later", not "log in"
            await websocket.accept()
            await websocket.close(code=1013)
            return
        await websocket.accept()
        subscription = notify.subscribe(auth.user, auth.device)
        device = (auth.user, auth.device)
        superseded = asyncio.Event()  # set when newer streams of the device push this one out
        held = streams.setdefault(device, [])  # registered last: the finally below removes it
        held.append(superseded)
        while len(held) > cfg.max_streams_per_device:
            held.pop(0).set()

        async def pusher() -> None:
            sent = 0
            while True:
                rows = await storage.submit(relay.pending(token, sent, 100))
                for message_id, envelope in rows:
                    await websocket.send_bytes(codec.encode({0: message_id, 1: envelope}))
                    sent = message_id
                if not rows:
                    await subscription.wait(WS_IDLE)

        async def acker() -> None:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    raise WebSocketDisconnect(message.get("code", 1000))
                data = message.get("bytes")
                if not isinstance(data, bytes):  # a text frame: acks are binary CBOR
                    await websocket.close(code=1003)
                    return
                try:  # the same rules as POST /v1/ack: nothing is dropped or cut silently
                    ids = api.ack_ids(data, limit=api.WS_ACK_MAX)
                except RelayError:
                    await websocket.close(code=1003)
                    return
                await storage.submit(relay.ack_ids(token, ids))

        pushing, acking = asyncio.create_task(pusher()), asyncio.create_task(acker())
        tasks: list[asyncio.Task[Any]] = [
            pushing,
            acking,
            asyncio.create_task(superseded.wait()),
        ]
        code = 1000
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            code = close_code(pushing, acking, superseded)
        finally:
            if superseded in held:
                held.remove(superseded)
            if not held and streams.get(device) is held:
                del streams[device]
            subscription.close()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(
                    asyncio.CancelledError, WebSocketDisconnect, RelayError, RuntimeError
                ):
                    await task
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await websocket.close(code=code)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async def sweeper() -> None:
            while True:
                await asyncio.sleep(SWEEP_INTERVAL)
                await sweep_round(relay, storage)

        task = asyncio.create_task(sweeper()) if sweep else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    routes = [  # Starlette tries routes in order: the per-message ones first
        Route(api.MESSAGES, guarded(messages), methods=["GET", "POST"]),
        Route(api.ACK, guarded(ack), methods=["POST"]),
        Route(api.CLAIM, guarded(claim), methods=["POST"]),
        WebSocketRoute(api.STREAM, stream),
        Route(api.KEYS, guarded(keys), methods=["GET", "PUT"]),
        Route(api.DEVICE_LIST, guarded(device_list), methods=["GET", "PUT"]),
        Route(api.CHALLENGE, guarded(challenge), methods=["POST"]),
        Route(api.LOGIN, guarded(login), methods=["POST"]),
        Route(api.HEALTH, guarded(health), methods=["GET"]),
    ]
    for route in routes:
        # Starlette adds HEAD to every route that takes GET, and the handlers would run their
        # write branch for it (a HEAD with a send body queued the message): HEAD is a method
        # no route takes (405, spec/relay.md section 2)
        if isinstance(route, Route) and route.methods is not None:
            route.methods.discard("HEAD")
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: routing_refusal, 405: routing_refusal},
    )
    # "/v1/messages/" is no route (a CBOR 404), not a redirect to a Location built from the
    # request's Host header
    app.router.redirect_slashes = False
    return app
