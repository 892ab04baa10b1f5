"""``e2ee relay serve``: the relay on uvicorn, with SQLite storage by default (PostgreSQL for a
``postgresql://`` URL)."""

from __future__ import annotations

import logging
from pathlib import Path

from starlette.applications import Starlette

from e2ee.errors import RelayUnavailableError
from e2ee.relay.app import create_app
from e2ee.relay.memory import MemoryStorage
from e2ee.relay.rules import Relay, RelayConfig
from e2ee.relay.sqlite import SQLiteStorage
from e2ee.relay.storage import Notifier, Storage


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
