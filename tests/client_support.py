"""Shared helpers for the client-layer tests: users with devices over in-memory services."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from e2ee.client import Client, Message, PrekeyPolicy
from e2ee.client.memory import InMemoryDirectory, InMemoryTransport

SMALL_PREKEYS = PrekeyPolicy(one_time_target=4, refill_below=2)


def snapshot(client: Client) -> dict[str, list[str]]:
    """Every row of every table of the client's store (order-independent)."""
    conn = client.store.conn
    tables = [
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    return {t: sorted(map(repr, conn.execute(f"SELECT * FROM {t}").fetchall())) for t in tables}


@dataclass
class World:
    root: Path
    directory: InMemoryDirectory = field(default_factory=InMemoryDirectory)
    transport: InMemoryTransport = field(default_factory=InMemoryTransport)
    _count: int = 0

    def path(self, name: str) -> Path:
        self._count += 1
        return self.root / f"{name}-{self._count}.sqlite"

    def publish(self, client: Client) -> None:
        self.directory.publish_device_list(client.device_list())
        upload = client.prekeys_to_upload()
        self.directory.upload(upload)
        client.mark_uploaded(upload)

    def user(self, name: str, devices: int = 1, **options: object) -> list[Client]:
        options.setdefault("prekey_policy", SMALL_PREKEYS)
        first = Client.create(self.path(name), name, **options)  # type: ignore[arg-type]
        clients = [first]
        for _ in range(devices - 1):
            clients.append(self.link(first, name, **options))
        for client in clients:
            self.publish(client)
        return clients

    def link(self, primary: Client, name: str, **options: object) -> Client:
        options.setdefault("prekey_policy", SMALL_PREKEYS)
        new = Client.create_linked(self.path(name), name, **options)  # type: ignore[arg-type]
        approval = primary.approve_link(new.link_request(), new.link_code)
        new.complete_link(approval)
        self.publish(primary)
        self.publish(new)
        return new

    def send(self, sender: Client, to_user: str, body: bytes) -> int:
        envelopes = sender.send(to_user, body, self.directory)
        self.transport.post(envelopes)
        return len(envelopes)

    def deliver(self, client: Client) -> list[Message]:
        assert client.device_id is not None
        messages = []
        for data in self.transport.fetch(client.user_id, client.device_id):
            result = client.receive(data)
            if result.message is not None:
                messages.append(result.message)
        return messages
