"""Helpers for the relay tests: storages by name, devices without a client store, a real uvicorn
relay in a subprocess, and worker entry points run as ``python -m tests.relay_support``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2ee.account import Account
from e2ee.client.envelope import Envelope
from e2ee.identity import UserIdentity
from e2ee.relay import api
from e2ee.relay.memory import MemoryStorage
from e2ee.relay.rules import Relay, RelayConfig
from e2ee.relay.sqlite import SQLiteStorage
from e2ee.relay.storage import Storage, Tx
from e2ee.wire import codec

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("memory", "sqlite", "postgres")
"""Every storage the relay tests run against."""

POSTGRES_URL_VAR = "E2EE_TEST_POSTGRES_URL"
_schemas: dict[str, str] = {}


def postgres_server_url() -> str:
    """The test server's URL; skips the test without one, but fails it in CI (CI=true), where
    ``.ci/postgres.sh`` starts a server: there no PostgreSQL test may pass by being skipped."""
    url = os.environ.get(POSTGRES_URL_VAR, "")
    if not url:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI is set but {POSTGRES_URL_VAR} is not: start .ci/postgres.sh")
        pytest.skip(
            f"no PostgreSQL server: set {POSTGRES_URL_VAR}=postgresql://... "
            '(eval "$(bash .ci/postgres.sh start)" starts one)'
        )
    return url


def postgres_database() -> str:
    """A fresh, empty schema on the test server; the URL selects it through search_path."""
    import psycopg

    url = postgres_server_url()
    name = "t_" + os.urandom(8).hex()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}".encode())
    sep = "&" if "?" in url else "?"
    scoped = f"{url}{sep}options=-csearch_path%3D{name}"
    _schemas[scoped] = name
    return scoped


def drop_postgres_database(scoped: str) -> None:
    import psycopg

    name = _schemas.pop(scoped, None)
    if name is not None:
        with psycopg.connect(postgres_server_url(), autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE".encode())


def scoped_postgres_storage() -> Storage:
    """A PostgresStorage on a fresh schema, dropped when the storage is closed."""
    from e2ee.relay.postgres import PostgresStorage

    url = postgres_database()

    class Scoped(PostgresStorage):
        def close(self) -> None:
            super().close()
            drop_postgres_database(url)

    return Scoped(url, pool_size=4)


def postgres_dump(tx: Any) -> list[Any]:
    """Every row of every table in the storage's schema (a job for ``storage.run``)."""
    tables = [
        r[0]
        for r in tx.c.execute(
            b"SELECT table_name FROM information_schema.tables "
            b"WHERE table_schema = current_schema() ORDER BY table_name"
        ).fetchall()
    ]
    dumped = []
    for t in tables:
        rows = tx.c.execute(f"SELECT * FROM {t}".encode()).fetchall()
        if t == "schema_version":
            rows = [r[0] for r in rows]
        dumped.append((t, sorted(rows)))
    return dumped


def dumped_bytes(dump: list[Any]) -> bytes:
    """All bytes and text values of a :func:`postgres_dump`, concatenated."""
    out = bytearray()
    for _, rows in dump:
        for row in rows:
            for v in row if isinstance(row, tuple) else (row,):
                if isinstance(v, bytes):
                    out += v
                elif isinstance(v, str):
                    out += v.encode()
    return bytes(out)


def make_storage(name: str, tmp_path: Path) -> Storage:
    if name == "memory":
        return MemoryStorage()
    if name == "sqlite":
        return SQLiteStorage(tmp_path / "relay.sqlite")
    if name == "postgres":
        return scoped_postgres_storage()
    raise ValueError(name)


class Clock:
    """An injectable clock the tests move by hand."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def make_relay(storage: Storage, clock: Clock | None = None, **config: object) -> Relay:
    cfg = RelayConfig(**config)  # type: ignore[arg-type]
    return Relay(storage.run(Relay.secret_job()), cfg, clock=clock or Clock())


# --- users and devices without a client store ------------------------------------------------


@dataclass
class Device:
    user: str
    device_id: int
    account: Account
    token: bytes | None = None

    @property
    def key(self) -> bytes:
        return self.account.identity_key

    def sign_login(self, payload: bytes) -> bytes:
        return self.account.sign_relay_login(payload)

    def upload_body(self, one_time: int = 0, kem: int = 0) -> bytes:
        if one_time or kem:
            self.account.generate_one_time_prekeys(max(one_time, kem))
        ec_keys = self.account.unpublished_one_time_prekeys()[:one_time]
        kem_keys = self.account.unpublished_one_time_kem_prekeys()[:kem]
        self.account.mark_published([k[0] for k in ec_keys] + [k[0] for k in kem_keys])
        return api.KeyUpload(
            self.account.signed_prekey_bundle().to_bytes(),
            tuple(api.OneTimeKey(*k) for k in ec_keys),
            tuple(api.OneTimeKey(*k) for k in kem_keys),
        ).to_bytes()

    def envelope(self, to: Device, message_id: bytes, payload: bytes = b"x" * 64) -> bytes:
        return Envelope(
            self.user, self.device_id, to.user, to.device_id, message_id, payload
        ).to_bytes()


@dataclass
class User:
    name: str
    identity: UserIdentity
    devices: list[Device] = field(default_factory=list)
    counter: int = 1

    @classmethod
    def make(cls, name: str, devices: int = 1) -> User:
        user = cls(name, UserIdentity.generate())
        for i in range(devices):
            user.devices.append(Device(name, i + 1, Account.generate()))
        return user

    def signed_list(self) -> bytes:
        entries = {d.device_id: d.key for d in self.devices}
        return self.identity.sign_device_list(self.name, self.counter, entries).to_bytes()

    def list_body(self) -> bytes:
        return codec.encode({0: self.signed_list()})


def login(relay: Relay, storage: Storage, device: Device, origin: str | None = None) -> bytes:
    who = codec.encode({0: device.user.encode(), 1: device.device_id})
    challenge = codec.decode(relay.challenge(who), max_size=1024)[0]
    payload = api.login_payload(
        origin or relay.config.origin, challenge, device.user, device.device_id
    )
    body = codec.encode(
        {0: device.user.encode(), 1: device.device_id, 2: challenge, 3: device.sign_login(payload)}
    )
    token: bytes = codec.decode(storage.run(relay.login(body)), max_size=1024)[0]
    device.token = token
    return token


def send_body(
    recipient: User, message_id: bytes, sender: Device, payload: bytes = b"x" * 64
) -> bytes:
    return api.SendRequest(
        recipient.name,
        message_id,
        tuple(
            (d.device_id, d.key, sender.envelope(d, message_id, payload))
            for d in recipient.devices
            if d is not sender
        ),
    ).to_bytes()


def one_batch(storage: SQLiteStorage, jobs: list[Callable[[Tx], Any]]) -> list[Any]:
    """Submit the jobs in one turn of a fresh event loop; each one's value or exception."""

    async def main() -> list[Any]:
        futures = [storage.submit(job) for job in jobs]
        return list(await asyncio.gather(*futures, return_exceptions=True))

    return asyncio.run(main())


# --- a real relay process ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RelayProcess:
    """``e2ee relay serve`` in a subprocess on a loopback port."""

    def __init__(
        self, db: Path | str, *extra: str, port: int | None = None, log: Path | None = None
    ) -> None:
        """``db``: a SQLite file, or a ``postgresql://`` URL (then ``log`` names the log file)."""
        self.db = str(db)
        if log is None:
            assert isinstance(db, Path)
            log = db.with_name(db.name + ".log")
        self.log = log
        self.extra = extra
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the process without waiting for it (see :meth:`wait_ready`)."""
        env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT / "src"))
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "e2ee.cli",
                    "relay",
                    "serve",
                    "--port",
                    str(self.port),
                    "--db",
                    self.db,
                    *self.extra,
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def wait_ready(self, timeout: float = 20.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.log.read_text(errors="replace")
                raise RuntimeError(f"relay exited: {err[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + api.HEALTH, timeout=1.0).status_code == 200:
                    return
            time.sleep(0.02)  # readiness poll, not a correctness sleep
        raise RuntimeError("relay did not become ready")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@contextlib.contextmanager
def relay_process(db: Path | str, *extra: str, log: Path | None = None) -> Iterator[RelayProcess]:
    server = RelayProcess(db, *extra, log=log)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- raw HTTP helpers (no client store) ------------------------------------------------------


def http_login(http: httpx.Client, device: Device, origin: str) -> bytes:
    who = codec.encode({0: device.user.encode(), 1: device.device_id})
    r = http.post(api.CHALLENGE, content=who)
    r.raise_for_status()
    challenge = codec.decode(r.content, max_size=1024)[0]
    payload = api.login_payload(origin, challenge, device.user, device.device_id)
    body = codec.encode(
        {0: device.user.encode(), 1: device.device_id, 2: challenge, 3: device.sign_login(payload)}
    )
    r = http.post(api.LOGIN, content=body)
    r.raise_for_status()
    token: bytes = codec.decode(r.content, max_size=1024)[0]
    device.token = token
    return token


def auth(device: Device) -> dict[str, str]:
    assert device.token is not None
    return {"authorization": "Bearer " + api.encode_token(device.token)}


def claim_worker(url: str, user: str, target: str, attempts: int, seed_hex: str) -> None:
    """Worker process: register ``user`` (one device), claim ``target``'s device 1 ``attempts``
    times, print one line per claim: the one-time EC key id or -1 (last resort)."""
    from e2ee.wire.messages import PreKeyBundle

    me = User(user, UserIdentity(bytes.fromhex(seed_hex)))
    me.devices.append(Device(user, 1, Account.generate()))
    with httpx.Client(base_url=url, timeout=30.0) as http:
        r = http.put(api.DEVICE_LIST, content=me.list_body())
        r.raise_for_status()
        http_login(http, me.devices[0], url)
        lines = []
        for _ in range(attempts):
            body = codec.encode({0: target.encode(), 1: os.urandom(16)})
            r = http.post(api.CLAIM, content=body, headers=auth(me.devices[0]))
            if r.status_code != 200:
                lines.append(f"error {r.status_code}")
                continue
            bundles = codec.decode(r.content, max_size=1 << 20)[0]
            bundle = PreKeyBundle.from_bytes(bundles[0][1])
            found = bundle.one_time_prekey_id
            lines.append(str(-1 if found is None else found))
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "claim":
        claim_worker(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6])


class ThreadedRelay:
    """A relay app on a real uvicorn server in a thread of this process (for HTTP-level tests
    that need an injected clock, limits or the in-memory storage)."""

    def __init__(self, relay: Relay, storage: Storage, port: int | None = None) -> None:
        import uvicorn

        from e2ee.relay.app import create_app
        from e2ee.relay.serve import server_options

        self.port = port or free_port()
        self.storage = storage
        self.relay = relay
        config = uvicorn.Config(
            create_app(relay, storage, sweep=False),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            **server_options(),  # the stack ``e2ee relay serve`` runs
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadedRelay:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("threaded relay did not start")
            time.sleep(0.01)  # readiness poll
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def threaded_relay(storage: Storage | None = None, **config: object) -> ThreadedRelay:
    """A :class:`ThreadedRelay` whose origin matches its port."""
    store = storage or MemoryStorage()
    port = free_port()
    cfg = RelayConfig(**{"origin": f"http://127.0.0.1:{port}", **config})  # type: ignore[arg-type]
    relay = Relay(store.run(Relay.secret_job()), cfg)
    return ThreadedRelay(relay, store, port)
