"""``e2ee relay serve``: the relay on uvicorn, with SQLite storage by default (PostgreSQL for a
``postgresql://`` URL)."""

from __future__ import annotations

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


def server_options() -> dict[str, Any]:
    """The uvicorn settings the relay runs with: its HTTP stack by name, never uvicorn's
    ``"auto"`` choice by what happens to be installed. With ``httptools`` importable (uvicorn's
    "standard" extra, common in deployments), ``"auto"`` switches to a parser that buffers a
    request's headers without any limit: we measured a single 200 MB header taken whole, the
    process at 458 MB. h11 refuses a head that is still incomplete past
    :data:`MAX_REQUEST_HEAD` (400, and the connection closed), so a head costs at most that
    plus one socket read. The event loop is named for the same reason: the relay is tested on
    asyncio's, and uvloop measured no faster here."""
    return {
        "http": "h11",
        "h11_max_incomplete_event_size": MAX_REQUEST_HEAD,
        "loop": "asyncio",
        "ws": "websockets-sansio",
        "ws_max_size": 64 * 1024,
        "lifespan": "on",
        "access_log": False,
    }


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
) -> int:
    import dataclasses

    import uvicorn

    base = config or RelayConfig()
    config = dataclasses.replace(base, origin=origin or f"http://{host}:{port}")
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
                **server_options(),
            )
        except SystemExit as exc:  # uvicorn exits 3 when it cannot start (address in use, ...)
            if exc.code in (0, None):
                raise
            raise OSError(f"cannot listen on {host}:{port}") from None
    finally:
        storage.close()
    return 0
