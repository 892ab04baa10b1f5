"""``e2ee relay serve``: the relay on uvicorn, with SQLite storage by default."""

from __future__ import annotations

import logging
from pathlib import Path

from starlette.applications import Starlette

from e2ee.relay.app import create_app
from e2ee.relay.memory import MemoryStorage
from e2ee.relay.rules import Relay, RelayConfig
from e2ee.relay.sqlite import SQLiteStorage
from e2ee.relay.storage import Storage


def open_storage(db: str) -> Storage:
    """``:memory:`` for a throwaway in-memory relay, otherwise a SQLite file path."""
    if db == ":memory:":
        return MemoryStorage()
    return SQLiteStorage(Path(db))


def build(db: str, config: RelayConfig) -> tuple[Starlette, Storage]:
    storage = open_storage(db)
    relay = Relay(storage.run(Relay.secret_job()), config)
    return create_app(relay, storage), storage


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
    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level=log_level,
            access_log=False,
            ws="websockets-sansio",
            ws_max_size=64 * 1024,
            lifespan="on",
        )
    finally:
        storage.close()
    return 0
