"""The one-time prekey supply over a device's life (spec/client.md section 9).

A directory hands out one-time keys lowest id first; some initiators never send their first
message, and anyone can claim keys without sending one. The refill must count what the
directory still holds, and keys handed out and never used must not fill the account's cap for
good. The directory here is simulated with its own list of ids (``Directory``); the last test
runs the same lifecycle through a real relay."""

from __future__ import annotations

import time
from pathlib import Path

from e2ee.client import Client, PrekeyPolicy
from e2ee.limits import MAX_ONE_TIME_PREKEYS, MAX_STATE_SIZE
from e2ee.relay.client import RelayClient
from e2ee.relay.memory import MemoryStorage
from e2ee.relay.rules import Relay, RelayConfig
from e2ee.testing import DeterministicProvider
from e2ee.wire import codec
from tests.relay_support import Clock, ThreadedRelay, free_port

NOW = 1_800_000_000


def held(client: Client) -> tuple[list[int], list[int]]:
    """Ids of the one-time X25519 and ML-KEM prekeys the account holds, read from the store's
    account row (an unsealed store: the layout of spec/state.md section 2)."""
    with client._store.transaction() as conn:
        data = conn.execute("SELECT state FROM account WHERE id = 1").fetchone()[0]
    state = codec.decode(data, max_size=MAX_STATE_SIZE)
    return [r[0] for r in state[6]], [r[0] for r in state[7]]


class Directory:
    """What a relay holds of one device: uploaded ids per kind, handed out lowest first."""

    def __init__(self) -> None:
        self.keys: tuple[list[int], list[int]] = ([], [])

    def counts(self) -> tuple[int, int]:
        return len(self.keys[0]), len(self.keys[1])

    def upload(self, client: Client) -> tuple[int, int]:
        upload = client.prekeys_to_upload(stored=self.counts(), now=NOW)
        self.keys[0].extend(i for i, _, _ in upload.one_time)
        self.keys[1].extend(i for i, _, _ in upload.one_time_kem)
        client.mark_uploaded(upload)
        return len(upload.one_time), len(upload.one_time_kem)

    def claim(self, count: int) -> tuple[list[int], list[int]]:
        taken = (self.keys[0][:count], self.keys[1][:count])
        del self.keys[0][:count], self.keys[1][:count]
        return taken


def test_what_the_directory_holds_counts_as_supply(tmp_path: Path) -> None:
    """[REQ-CL-34] With the directory's counts, a refill happens only when the directory's
    keys plus the unpublished ones fall below refill_below, and brings them back to the
    target. Counting only unpublished keys (all of them are published after an upload) made
    every call generate a full batch more, until the cap."""
    policy = PrekeyPolicy(one_time_target=6, refill_below=3)
    client = Client.create(tmp_path / "a.sqlite", "alice", prekey_policy=policy, now=NOW)
    directory = Directory()
    assert directory.upload(client) == (6, 6)
    assert directory.upload(client) == (0, 0)  # the directory holds 6: nothing more
    directory.claim(3)
    assert directory.upload(client) == (0, 0)  # 3 left: not below refill_below
    directory.claim(1)
    assert directory.upload(client) == (4, 4)  # 2 left: back to 6
    assert directory.counts() == (6, 6)
    # a relay cannot hold more than was published to it: a larger count reads as "all of
    # them", which discards nothing (no key counts as handed out) and makes nothing
    before = held(client)
    upload = client.prekeys_to_upload(stored=(10**9, 10**9), now=NOW)
    assert upload.empty
    assert held(client) == before
    # the same for one kind only: the other kind's supply is low, so a refill runs, and the
    # count out of range for the first kind neither raises nor discards any of its keys
    upload = client.prekeys_to_upload(stored=(10**9, 0), now=NOW)
    assert (len(upload.one_time), len(upload.one_time_kem)) == (6, 6)
    assert set(before[0]) <= set(held(client)[0])
    client.close()


def test_keys_handed_out_and_never_used_cannot_stop_the_refill(tmp_path: Path) -> None:
    """[REQ-CL-48] Someone claims every key the directory holds, again and again, and sends
    nothing. The account held every key handed out, so after 1,000 it could make no more
    and the directory stayed empty for good: each initiator then got the last-resort keys
    only. Now the refill discards the oldest keys handed out to make room, and never a key
    the directory still holds."""
    target = 400
    policy = PrekeyPolicy(one_time_target=target, refill_below=target)
    provider = DeterministicProvider("drain")
    client = Client.create(
        tmp_path / "a.sqlite", "alice", prekey_policy=policy, provider=provider, now=NOW
    )
    directory = Directory()
    handed_out: list[int] = []
    for round_ in range(4):  # about 1,600 keys of each kind in all: past the cap of 1,000
        made = target if round_ == 0 else target - 1  # one key is left at the directory
        assert directory.upload(client) == (made, made)
        assert directory.counts() == (target, target)
        taken = directory.claim(target - 1)  # one key stays at the directory
        handed_out += taken[0]
        ec, kem = held(client)
        assert len(ec) <= MAX_ONE_TIME_PREKEYS
        assert len(kem) <= MAX_ONE_TIME_PREKEYS
        # everything the directory holds is still held, and the keys discarded were the
        # oldest handed out: what is held of them is a suffix of the order they went out
        assert set(directory.keys[0]) <= set(ec)
        assert set(directory.keys[1]) <= set(kem)
        kept = [i for i in handed_out if i in set(ec)]
        assert kept == handed_out[len(handed_out) - len(kept) :]
    assert len(held(client)[0]) == MAX_ONE_TIME_PREKEYS  # it did reach the cap
    client.close()


def test_publish_prekeys_keeps_a_real_relay_at_the_target(tmp_path: Path) -> None:
    """[REQ-RL-43] RelayClient.publish_prekeys asks the relay for its counts first, so calling
    it now and then (as `e2ee receive` does) keeps the relay at the target instead of adding
    a batch every call, and refills once claims took the relay below refill_below."""
    port = free_port()
    storage = MemoryStorage()
    relay = Relay(
        storage.run(Relay.secret_job()),
        RelayConfig(origin=f"http://127.0.0.1:{port}"),
        clock=Clock(time.time()),
    )
    policy = PrekeyPolicy(one_time_target=8, refill_below=4)
    alice = Client.create(tmp_path / "alice.sqlite", "alice", prekey_policy=policy)
    bob = Client.create(tmp_path / "bob.sqlite", "bob")
    with (
        ThreadedRelay(relay, storage, port) as server,
        RelayClient(server.url, alice) as alice_relay,
        RelayClient(server.url, bob) as bob_relay,
    ):
        alice_relay.publish_device_list()
        bob_relay.publish_device_list()
        assert alice_relay.publish_prekeys() == (8, 8)
        assert alice_relay.publish_prekeys() == (8, 8)
        for _ in range(5):
            assert bob_relay.claim("alice")
        assert alice_relay.key_counts() == (3, 3)
        assert alice_relay.publish_prekeys() == (8, 8)
    alice.close()
    bob.close()
