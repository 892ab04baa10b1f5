"""``e2ee demo``: two users with two devices each talk through a real relay.

The demo starts ``e2ee relay serve`` in a subprocess on a free loopback port with its SQLite
database in a temporary directory, and drives four client devices (each with its own durable
SQLite store) over HTTP: device lists and prekeys are published, PQXDH sessions are set up from
claimed bundles, messages go both ways (with delivery out of order and a duplicate), one device
is wiped and linked again, and at the end the relay's database files are searched for every
plaintext. Everything reported is public: texts of the demo itself, sizes, counts, device ids,
event kinds and safety numbers. No key material or token is ever shown. Text that came from
the relay or a store (user ids, conversations, message texts, error messages) is shown through
:func:`e2ee.terminal.clean` and, in the rich tables, with its markup escaped.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

import e2ee
from e2ee.client import Client, PrekeyPolicy
from e2ee.client.envelope import Envelope
from e2ee.config import SessionConfig
from e2ee.errors import E2EEError
from e2ee.peek import peek
from e2ee.relay import api
from e2ee.relay.client import RelayClient
from e2ee.terminal import clean

DEMO_PREKEYS = PrekeyPolicy(one_time_target=8, refill_below=2)
"""Small prekey batches keep the demo fast; a real client uses the defaults (100)."""

Step = Callable[[str], None]


class DemoError(Exception):
    """A step of the demo failed (the message says which)."""


# --- the relay process -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _Relay:
    """``e2ee relay serve`` in a subprocess; stopped (and waited for) by :meth:`stop`."""

    def __init__(self, directory: Path) -> None:
        self.db = directory / "relay.sqlite"
        self.log = directory / "relay.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        for _ in range(3):  # another process may take the free port before the relay binds it
            self.port = _free_port()
            if self._start_once(timeout):
                return
        raise DemoError("the relay did not start: " + self._log_tail())

    def _start_once(self, timeout: float) -> bool:
        command = [sys.executable, "-m", "e2ee.cli", "relay", "serve"]
        command += ["--port", str(self.port), "--db", str(self.db), "--claim-burst", "1000"]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
                command, stdout=subprocess.DEVNULL, stderr=log
            )
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    return False
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(self.url + api.HEALTH).status_code == 200:
                        return True
                time.sleep(0.02)  # readiness poll with a deadline
        self.stop()
        raise DemoError("the relay did not become ready in time")

    def _log_tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return lines[-1] if lines else "no output"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def files(self) -> list[Path]:
        return sorted(p for p in self.db.parent.iterdir() if p.name.startswith(self.db.name))


# --- devices ---------------------------------------------------------------------------------


@dataclass
class _Device:
    client: Client
    relay: RelayClient
    path: Path
    read: list[dict[str, Any]] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.client.user_id}/{self.client.device_id}"

    def close(self) -> None:
        self.relay.close()
        self.client.close()

    def record(self, results: list[Any]) -> list[str]:
        texts = []
        for result in results:
            message = result.message
            if message is None:
                continue
            text = message.body.decode("utf-8", errors="replace")
            texts.append(text)
            self.read.append(
                {
                    "from": f"{message.sender_user}/{message.sender_device}",
                    "conversation": message.conversation,
                    "text": text,
                    "copy_of_own": message.outgoing,
                }
            )
        return texts

    def receive(self) -> list[str]:
        report = self.relay.receive()
        if report.refused or report.kept:
            raise DemoError(f"{self.label} could not read every message")
        return self.record(report.results)


class _World:
    def __init__(self, root: Path, url: str, config: SessionConfig) -> None:
        self.root = root
        self.url = url
        self.config = config
        self.devices: dict[str, list[_Device]] = {}
        self.sent: list[dict[str, str]] = []
        self.plaintexts: list[str] = []
        self.wiped: list[_Device] = []

    def _open(self, path: Path, client: Client) -> _Device:
        return _Device(client, RelayClient(self.url, client), path)

    def user(self, name: str, count: int) -> list[_Device]:
        path = self.root / f"{name}-1.sqlite"
        first = self._open(
            path, Client.create(path, name, prekey_policy=DEMO_PREKEYS, config=self.config)
        )
        devices = [first]
        for _ in range(count - 1):
            devices.append(self.link(first))
        self.devices[name] = devices
        return devices

    def link(self, holder: _Device) -> _Device:
        """A new device for ``holder``'s user: the code check and the approval by a device that
        holds the user key (as when a phone is linked by scanning a code)."""
        name = holder.client.user_id
        path = self.root / f"{name}-{len(list(self.root.glob(name + '-*.sqlite'))) + 1}.sqlite"
        new = Client.create_linked(path, name, prekey_policy=DEMO_PREKEYS, config=self.config)
        new.complete_link(holder.client.approve_link(new.link_request(), new.link_code))
        return self._open(path, new)

    def send(self, sender: _Device, to: str, text: str) -> None:
        sender.relay.send(to, text.encode())
        self.sent.append({"from": sender.label, "to": to, "text": text})
        self.plaintexts.append(text)
        for device in self.devices[to] + self.devices[sender.client.user_id]:
            if device is not sender:
                device.expected.append(text)

    def all(self) -> list[_Device]:
        return [d for devices in self.devices.values() for d in devices]

    def close(self) -> None:
        for device in self.all():
            with contextlib.suppress(Exception):
                device.close()


# --- what the relay stores -------------------------------------------------------------------


def _snapshot(db: Path, seen: dict[int, dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Row counts and stored bytes per table, read from the relay's database file (read-only);
    every queued envelope is added to ``seen`` with its size and the kind the relay could see."""
    tables: dict[str, dict[str, int]] = {}
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        for name in names:
            columns = [row[1] for row in conn.execute(f'PRAGMA table_info("{name}")')]
            total = " + ".join(f'coalesce(length("{c}"), 0)' for c in columns) or "0"
            rows, size = conn.execute(
                f'SELECT count(*), sum({total}) FROM "{name}"'  # noqa: S608 - schema names
            ).fetchone()
            tables[name] = {"rows": rows, "bytes": size or 0}
        if "messages" in names:
            for message_id, user, device, data in conn.execute(
                "SELECT id, user, device, envelope FROM messages ORDER BY id"
            ):
                envelope = Envelope.from_bytes(bytes(data))
                info = peek(envelope.payload)
                seen[message_id] = {
                    "id": message_id,
                    "to": f"{user}/{device}",
                    "from": f"{envelope.sender_user}/{envelope.sender_device}",
                    "bytes": len(data),
                    "kind": info.kind,
                    "header_encrypted": info.header_encrypted,
                }
    return tables


def _grep(files: list[Path], plaintexts: list[str]) -> tuple[int, list[str]]:
    """Total bytes searched and the plaintexts found in any of ``files`` (should be none)."""
    searched = 0
    found: list[str] = []
    blobs = []
    for path in files:
        with contextlib.suppress(FileNotFoundError):
            blobs.append(path.read_bytes())
    searched = sum(len(b) for b in blobs)
    for text in plaintexts:
        needle = text.encode()
        if any(needle in blob for blob in blobs):
            found.append(text)
    return searched, found


# --- the demo --------------------------------------------------------------------------------


@contextlib.contextmanager
def _phase(timings: dict[str, float], name: str, step: Step) -> Iterator[None]:
    step(name)
    started = time.perf_counter()
    yield
    timings[name] = round((time.perf_counter() - started) * 1000, 1)


def run_demo(*, header_encryption: bool = True, step: Step | None = None) -> dict[str, Any]:
    """Run the demo and return its report (``report["ok"]`` says whether every check passed).
    Raises :class:`DemoError` or an :class:`e2ee.errors.E2EEError` when a step fails; the
    relay process and the temporary directory are removed in every case."""
    notify: Step = step or (lambda _name: None)
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="e2ee-demo-"))
    relay = _Relay(root)
    try:
        return _run(root, relay, header_encryption, notify, started)
    finally:
        relay.stop()
        shutil.rmtree(root, ignore_errors=True)


def _run(
    root: Path, relay: _Relay, header_encryption: bool, step: Step, started: float
) -> dict[str, Any]:
    timings: dict[str, float] = {}
    seen: dict[int, dict[str, Any]] = {}
    with _phase(timings, "start the relay (SQLite, loopback)", step):
        relay.start()
    world = _World(root, relay.url, SessionConfig(header_encryption=header_encryption))
    try:
        return _conversation(world, relay, timings, seen, step, started, header_encryption)
    finally:
        world.close()


def _conversation(
    world: _World,
    relay: _Relay,
    timings: dict[str, float],
    seen: dict[int, dict[str, Any]],
    step: Step,
    started: float,
    header_encryption: bool,
) -> dict[str, Any]:
    with _phase(timings, "create alice and bob, two linked devices each", step):
        alice = world.user("alice", 2)
        bob = world.user("bob", 2)
    with _phase(timings, "publish device lists and prekeys", step):
        for devices in (alice, bob):
            devices[0].relay.publish_device_list()
            for device in devices:
                device.relay.publish_prekeys()

    with _phase(timings, "alice: first message (claims bundles, PQXDH to 3 devices)", step):
        world.send(alice[0], "bob", "Hi Bob, this is Alice.")
    tables = _snapshot(relay.db, seen)
    with _phase(timings, "everyone reads", step):
        for device in (bob[0], bob[1], alice[1]):
            device.receive()
    with _phase(timings, "bob replies from his second device", step):
        world.send(bob[1], "alice", "Hello Alice! Got it on my laptop.")
        for device in (alice[0], alice[1], bob[0]):
            device.receive()

    burst = [f"message {i} of 5" for i in range(5)]
    order = [4, 0, 3, 1, 2]
    with _phase(timings, "out-of-order delivery and a duplicate", step):
        for text in burst:
            world.send(alice[0], "bob", text)
        tables = _snapshot(relay.db, seen)
        page, _ = bob[0].relay.fetch()
        if len(page) != len(burst):
            raise DemoError(f"bob/1 expected {len(burst)} queued messages, got {len(page)}")
        shuffled = [bob[0].client.receive(page[i][1]) for i in order]
        out_of_order = bob[0].record(shuffled)
        duplicate = bob[0].client.receive(page[order[0]][1]).duplicate
        bob[0].relay.ack([message_id for message_id, _ in page])
        bob[1].receive()
        alice[1].receive()

    with _phase(timings, "bob's laptop is wiped and linked again", step):
        old = bob[1]
        old_label = old.label
        old.close()
        for path in root_files(old.path):
            path.unlink()
        world.wiped.append(old)
        bob[0].relay.publish_device_list(bob[0].client.remove_device(2))
        new = world.link(bob[0])
        bob[1] = new
        bob[0].relay.publish_device_list()
        new.relay.publish_prekeys()
        alice[0].client.take_events()
        world.send(alice[0], "bob", "Welcome back, new laptop.")
        events = [
            {"kind": e.kind, "user": e.user_id, "device": e.device_id}
            for e in alice[0].client.take_events()
        ]
        for device in (new, bob[0], alice[1]):
            device.receive()
        world.send(new, "alice", "New laptop, same Bob.")
        for device in (alice[0], alice[1], bob[0]):
            device.receive()

    with _phase(timings, "compare safety numbers and verify", step):
        numbers = {
            d.label: str(d.client.safety_number("bob" if d.client.user_id == "alice" else "alice"))
            for d in world.all()
        }
        verified = all(
            d.client.mark_verified("bob" if d.client.user_id == "alice" else "alice")
            for d in (alice[0], bob[0])
        )

    with _phase(timings, "search the relay's database for plaintext", step):
        final_tables = _snapshot(relay.db, seen)
        files = relay.files()
        searched, found = _grep([*files, relay.log], world.plaintexts)
        left = sum(len(d.relay.fetch()[0]) for d in world.all())

    reads = {d.label: d.read for d in world.all()}
    reads[f"{old_label} (wiped)"] = world.wiped[0].read
    everyone = [*world.all(), *world.wiped]
    checks = {
        "every device read exactly what was sent to it": all(
            sorted(r["text"] for r in d.read) == sorted(d.expected) for d in everyone
        ),
        "out-of-order messages all read": sorted(out_of_order) == sorted(burst),
        "duplicate delivery detected": duplicate,
        "reinstalled device got a new session": any(
            e["kind"] == "session_new" and e["user"] == "bob" and e["device"] == 3 for e in events
        ),
        "relay stored no plaintext": not found and searched > 0,
        "relay queues empty at the end": left == 0,
        "safety numbers match on every device": len(set(numbers.values())) == 1,
        "both users verified": verified,
    }
    return {
        "ok": all(checks.values()),
        "version": e2ee.__version__,
        "header_encryption": header_encryption,
        "relay": {"url": relay.url, "storage": "sqlite"},
        "users": {name: [d.label for d in devices] for name, devices in world.devices.items()},
        "sent": world.sent,
        "read": reads,
        "out_of_order": {
            "device": bob[0].label,
            "delivery_order": order,
            "read": out_of_order,
            "duplicate_detected": duplicate,
        },
        "reinstall": {"wiped": old_label, "new": bob[1].label, "alice_events": events},
        "relay_storage": {
            "tables_mid_conversation": tables,
            "tables_at_end": final_tables,
            "envelopes": [seen[k] for k in sorted(seen)],
            "files": {p.name: p.stat().st_size for p in files if p.exists()},
            "bytes_searched": searched,
            "plaintexts_searched": len(world.plaintexts),
            "plaintexts_found": found,
        },
        "safety_numbers": {"by_device": numbers, "match": len(set(numbers.values())) == 1},
        "checks": checks,
        "timings_ms": timings,
        "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
    }


def root_files(path: Path) -> list[Path]:
    """A SQLite store and its -wal/-shm companions."""
    return [p for p in path.parent.iterdir() if p.name.startswith(path.name)]


# --- output ----------------------------------------------------------------------------------


def render(report: dict[str, Any], console: Any) -> None:
    """The report as rich tables on ``console``."""
    from rich.markup import escape
    from rich.table import Table

    def text(value: object) -> str:
        """Text from the relay or a store: control characters and rich markup escaped."""
        return escape(clean(str(value)))

    he = "on" if report["header_encryption"] else "off"
    console.print(
        f"[bold]e2ee {report['version']} demo[/bold]: relay at {report['relay']['url']} "
        f"(SQLite), PQXDH, header encryption {he}"
    )

    read = Table(title="What each device read", title_justify="left")
    for column in ("device", "from", "in conversation", "text"):
        read.add_column(column)
    for device, rows in report["read"].items():
        for row in rows:
            shown = text(row["text"]) + ("  [dim](copy of own)[/dim]" if row["copy_of_own"] else "")
            read.add_row(text(device), text(row["from"]), text(row["conversation"]), shown)
    console.print(read)

    ooo = report["out_of_order"]
    console.print(
        f"{text(ooo['device'])} processed five queued messages in the order "
        f"{ooo['delivery_order']}: read {', '.join(text(repr(t)) for t in ooo['read'])}; "
        "a redelivered copy was "
        f"{'detected as a duplicate' if ooo['duplicate_detected'] else 'NOT detected'}."
    )
    kinds = ", ".join(
        text(f"{e['kind']} ({e['user']}/{e['device']})")
        for e in report["reinstall"]["alice_events"]
    )
    console.print(
        f"{text(report['reinstall']['wiped'])} was wiped and linked again as "
        f"{text(report['reinstall']['new'])}; alice/1 was told: {kinds or 'nothing'}."
    )

    storage = report["relay_storage"]
    stored = Table(
        title="What the relay stored (envelopes, read from its SQLite file)", title_justify="left"
    )
    for column in ("id", "from", "to", "kind", "bytes", "header encrypted"):
        stored.add_column(column, justify="right" if column in ("id", "bytes") else "left")
    for row in storage["envelopes"]:
        stored.add_row(
            str(row["id"]),
            text(row["from"]),
            text(row["to"]),
            text(row["kind"]),
            str(row["bytes"]),
            "yes" if row["header_encrypted"] else "no",
        )
    console.print(stored)
    tables = Table(title="Relay tables mid-conversation (rows / bytes)", title_justify="left")
    tables.add_column("table")
    tables.add_column("rows", justify="right")
    tables.add_column("bytes", justify="right")
    for name, info in storage["tables_mid_conversation"].items():
        tables.add_row(text(name), str(info["rows"]), str(info["bytes"]))
    console.print(tables)
    verdict = (
        "[green]none found[/green]"
        if not storage["plaintexts_found"]
        else f"[red]FOUND: {text(storage['plaintexts_found'])}[/red]"
    )
    console.print(
        f"Searched {storage['bytes_searched']:,} bytes of relay files "
        f"({text(', '.join(storage['files']))}, relay.log) for all "
        f"{storage['plaintexts_searched']} "
        f"plaintexts: {verdict}."
    )

    safety = Table(title="Safety numbers (compare them out of band)", title_justify="left")
    safety.add_column("device")
    safety.add_column("safety number")
    for device, number in report["safety_numbers"]["by_device"].items():
        safety.add_row(text(device), text(number))
    console.print(safety)

    timing = Table(title="Timing", title_justify="left")
    timing.add_column("step")
    timing.add_column("ms", justify="right")
    for name, ms in report["timings_ms"].items():
        timing.add_row(name, f"{ms:,.1f}")
    timing.add_row("[bold]total[/bold]", f"[bold]{report['elapsed_ms']:,.1f}[/bold]")
    console.print(timing)

    for name, passed in report["checks"].items():
        console.print(f"{'[green]✓[/green]' if passed else '[red]✗[/red]'} {name}")
    console.print("[bold green]OK[/bold green]" if report["ok"] else "[bold red]FAILED[/bold red]")


def main(*, json_output: bool, header_encryption: bool) -> int:
    """``e2ee demo``: 0 when every check passed, 1 otherwise (a one-line reason on stderr)."""
    import json

    from rich.console import Console

    err = Console(stderr=True)
    try:
        if json_output:
            report = run_demo(header_encryption=header_encryption)
        else:
            with err.status("starting") as status:

                def step(name: str) -> None:
                    status.update(name + " …")

                report = run_demo(header_encryption=header_encryption, step=step)
    except (DemoError, E2EEError, OSError, sqlite3.Error, httpx.HTTPError) as exc:
        print(clean(f"e2ee demo: failed: {type(exc).__name__}: {exc}"), file=sys.stderr)
        return 1
    if json_output:
        print(json.dumps(report, indent=2))
    else:
        render(report, Console(highlight=False))
    return 0 if report["ok"] else 1


__all__ = ["DemoError", "main", "render", "run_demo"]
