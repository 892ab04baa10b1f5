"""``e2ee relay serve``: the relay on uvicorn, with SQLite storage by default (PostgreSQL for a
``postgresql://`` URL)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from starlette.applications import Starlette

from e2ee.errors import RelayUnavailableError
from e2ee.relay.app import create_app
from e2ee.relay.memory import MemoryStorage
from e2ee.relay.rules import Relay, RelayConfig
from e2ee.relay.sqlite import SQLiteStorage
from e2ee.relay.storage import Notifier, Storage

SOCKET_READ_SIZE = 64 * 1024
"""The largest read from a client socket (see :func:`limit_socket_reads`)."""
MAX_REQUEST_HEAD = 16 * 1024
"""An HTTP request line and headers still incomplete past this many buffered bytes are refused
(spec/relay.md REQ-RL-37)."""


STACKS = ("h11", "fast")
"""The HTTP stacks ``e2ee relay serve --stack`` offers: ``h11`` (the default: uvicorn's h11
parser, pure Python, on asyncio's event loop) and ``fast`` (the ``fast`` extra: the httptools
parser, in C, on uvloop)."""


def server_options(stack: str = "h11") -> dict[str, Any]:
    """The uvicorn settings the relay runs with: its HTTP parser and event loop by name, never
    uvicorn's ``"auto"`` choice by what happens to be installed. With ``httptools`` importable
    (uvicorn's "standard" extra, common in deployments), ``"auto"`` switches to uvicorn's
    httptools protocol, which buffers a request's headers without any limit: we measured a
    single 200 MB header taken whole, the process at 458 MB. Both stacks refuse a head that is
    still incomplete past :data:`MAX_REQUEST_HEAD` (400, and the connection closed): h11 by its
    own setting, ``fast`` through :func:`bounded_httptools_protocol`. ``fast`` measured 1.3 to
    1.8 times the sends per second of ``h11`` here (5,100 to 6,300 against 3,600 to 3,800);
    httptools on asyncio's loop measured no faster for sends than h11, so the two come
    together."""
    if stack not in STACKS:
        raise ValueError(f"unknown HTTP stack {stack!r}")
    fast = stack == "fast"
    return {
        "http": bounded_httptools_protocol() if fast else "h11",
        "h11_max_incomplete_event_size": MAX_REQUEST_HEAD,
        "loop": "uvloop" if fast else "asyncio",
        "ws": "websockets-sansio",
        "ws_max_size": 64 * 1024,
        "lifespan": "on",
        "access_log": False,
    }


def bounded_httptools_protocol() -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with a head bound: the reads received while a request's
    head is incomplete are counted whole, and once they pass :data:`MAX_REQUEST_HEAD` with the
    head still incomplete, the request is refused with 400 and the connection closed. Counting
    whole reads (not slicing them) hands every read to the parser as uvicorn would, a WebSocket
    upgrade included. The parser does not say where in a read a pipelined head begins, so a
    head that begins in the read that completed the request before it is counted from the next
    read (spec/relay.md REQ-RL-37 gives the bound). A request with a ``Transfer-Encoding`` is
    refused the same way once its head is complete: the parser takes a chunked body's trailer
    fields like headers, and they had no bound at all (a review measured 300 MB of trailers
    taken whole); the relay client, like most, sends ``Content-Length``.
    :class:`RelayUnavailableError` when the ``fast`` extra is not installed."""
    try:
        import uvloop  # noqa: F401  (server_options names it)
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        raise RelayUnavailableError(
            "the fast stack needs the fast extra: pip install 'e2ee[fast]'"
        ) from None

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        head_bytes = 0
        in_head = True

        def on_headers_complete(self) -> None:
            self.in_head = False
            self.head_bytes = 0
            if any(name == b"transfer-encoding" for name, _ in self.headers):
                # the trailer section of a chunked body is parsed as headers again (fields
                # buffered in the parser, appended to self.headers), with no bound: refused
                # here, uvicorn answers 400 and closes (spec/relay.md REQ-RL-37)
                raise ValueError("chunked request bodies are not accepted on this stack")
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self.in_head = True

        def data_received(self, data: bytes) -> None:
            if self.in_head:
                self.head_bytes += len(data)
            super().data_received(data)
            if (
                self.in_head
                and self.head_bytes > MAX_REQUEST_HEAD
                and not self.transport.is_closing()
            ):
                self.send_400_response("Request head too large.")

    return BoundedHttpToolsProtocol


def is_postgres(db: str) -> bool:
    return db.startswith(("postgresql://", "postgres://"))


def open_storage(db: str) -> Storage:
    """``:memory:`` for a throwaway in-memory relay, a ``postgresql://`` URL for PostgreSQL
    (several relay processes may share it), otherwise a SQLite file path."""
    if db == ":memory:":
        return MemoryStorage()
    if is_postgres(db):
        try:
            from e2ee.relay.postgres import PostgresStorage
        except ImportError:  # psycopg is the optional "postgres" extra
            raise RelayUnavailableError(
                "PostgreSQL storage needs the postgres extra: pip install 'e2ee[postgres]'"
            ) from None
        return PostgresStorage(db)
    return SQLiteStorage(Path(db))


def build(db: str, config: RelayConfig) -> tuple[Starlette, Storage]:
    storage = open_storage(db)
    relay = Relay(storage.run(Relay.secret_job()), config)
    notifier: Notifier | None = None
    if is_postgres(db):
        from e2ee.relay.postgres import PostgresStorage

        assert isinstance(storage, PostgresStorage)
        notifier = storage.notifier()
    return create_app(relay, storage, notifier), storage


def limit_socket_reads() -> None:
    """Make asyncio's socket transports read at most :data:`SOCKET_READ_SIZE` bytes per
    ``recv`` (the default is 256 KiB). Every read allocates a bytes object of the full size and
    then shrinks it to what arrived. 256 KiB is above glibc's default mmap threshold (128 KiB),
    so whenever the heap has no free block that large (it depends on the process's allocation
    history), each read of a few hundred bytes becomes mmap + recvfrom + mremap + munmap, and
    the unmapping flushes TLBs across cores. CPython issue 85451 describes this regime. We
    measured it in a relay process started from a script (same app, same uvicorn settings):
    0.8 mmaps per request, about 5 % of its CPU. The benchmark's ``e2ee relay serve``
    processes happened not to enter it. 64 KiB is below the threshold. The setting is
    process-wide, which is why only the ``e2ee relay serve`` entry point calls it; an
    application that runs the relay app under its own server may call it too."""
    from asyncio import selector_events

    transport: Any = getattr(selector_events, "_SelectorSocketTransport", None)
    size = getattr(transport, "max_size", None)
    if isinstance(size, int):  # (a Python whose transports differ is left as it is)
        transport.max_size = min(size, SOCKET_READ_SIZE)


def serve(
    host: str,
    port: int,
    db: str,
    *,
    origin: str | None = None,
    config: RelayConfig | None = None,
    log_level: str = "warning",
    stack: str = "h11",
) -> int:
    import dataclasses

    import uvicorn

    base = config or RelayConfig()
    config = dataclasses.replace(base, origin=origin or f"http://{host}:{port}")
    options = server_options(stack)  # before the storage opens: a missing extra opens nothing
    app, storage = build(db, config)
    logging.basicConfig(level=logging.WARNING)
    limit_socket_reads()
    try:
        try:
            uvicorn.run(
                app,
                host=host,
                port=port,
                log_level=log_level,
                **options,
            )
        except SystemExit as exc:  # uvicorn exits 3 when it cannot start (address in use, ...)
            if exc.code in (0, None):
                raise
            raise OSError(f"cannot listen on {host}:{port}") from None
    finally:
        storage.close()
    return 0
