"""The SQLite relay storage's read-through caches of token rows and device lists (REQ-RL-30):
a cached row is always the stored one. Another connection's commit, a rollback and this
connection's own writes to those tables each empty the caches, which stay bounded.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from e2ee.account import Account
from e2ee.errors import RelayAuthError
from e2ee.relay import sqlite as relay_sqlite
from e2ee.relay.sqlite import SQLiteStorage
from e2ee.relay.storage import TokenRow, Tx
from tests.relay_support import Device, User, login, make_relay, one_batch

ROW = TokenRow("alice", 1, b"k" * 32, 2**40)


def put_token(token_hash: bytes, row: TokenRow) -> Callable[[Tx], None]:
    return lambda tx: tx.put_token(token_hash, row)


def read_token(token_hash: bytes) -> Callable[[Tx], TokenRow | None]:
    return lambda tx: tx.token(token_hash)


def read_list(user: str) -> Callable[[Tx], tuple[int, list[int]] | None]:
    def job(tx: Tx) -> tuple[int, list[int]] | None:
        listed = tx.device_list(user)
        return None if listed is None else (listed.counter, sorted(listed.devices))

    return job


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[SQLiteStorage]:
    opened = SQLiteStorage(tmp_path / "relay.sqlite")
    yield opened
    opened.close()


def test_a_token_another_connection_deleted_is_unknown_at_once(
    storage: SQLiteStorage, tmp_path: Path
) -> None:
    storage.run(put_token(b"h" * 32, ROW))
    assert storage.run(read_token(b"h" * 32)) == ROW  # now cached
    with sqlite3.connect(tmp_path / "relay.sqlite") as other:
        other.execute("DELETE FROM tokens")
    assert storage.run(read_token(b"h" * 32)) is None


def test_a_device_list_another_connection_replaced_is_read_again(
    storage: SQLiteStorage, tmp_path: Path
) -> None:
    alice = User.make("alice", 1)
    relay = make_relay(storage)
    storage.run(relay.publish_device_list(alice.list_body()))
    assert storage.run(read_list("alice")) == (1, [1])  # now cached
    alice.devices.append(Device("alice", 2, Account.generate()))
    alice.counter = 2
    with sqlite3.connect(tmp_path / "relay.sqlite") as other:  # another relay process
        other.execute("UPDATE users SET counter = 2, signed = ?", (alice.signed_list(),))
    assert storage.run(read_list("alice")) == (2, [1, 2])


def test_a_row_read_from_a_write_that_was_rolled_back_is_not_kept(storage: SQLiteStorage) -> None:
    storage.run(put_token(b"h" * 32, ROW))

    def write_read_refuse(tx: Tx) -> None:
        tx.purge_device("alice", 1)  # deletes the token row ...
        assert tx.token(b"h" * 32) is None
        tx.put_token(b"n" * 32, ROW)  # ... and writes another, read into the cache
        assert tx.token(b"n" * 32) == ROW
        raise RuntimeError("refused after writing")

    def read_both(tx: Tx) -> tuple[TokenRow | None, TokenRow | None]:
        return tx.token(b"h" * 32), tx.token(b"n" * 32)

    refused, after = one_batch(storage, [write_read_refuse, read_both])
    assert isinstance(refused, RuntimeError)
    assert after == (ROW, None)  # the batch's next job sees the stored rows only
    assert storage.run(read_both) == (ROW, None)


def test_the_caches_stay_bounded(storage: SQLiteStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay_sqlite, "CACHE_ENTRIES", 4)
    hashes = [bytes([i]) * 32 for i in range(10)]
    rows = [TokenRow(f"user{i}", i, b"k" * 32, 2**40) for i in range(10)]
    for token_hash, row in zip(hashes, rows, strict=True):
        storage.run(put_token(token_hash, row))
    for _ in range(2):
        found = [storage.run(read_token(token_hash)) for token_hash in hashes]
        assert found == rows
        assert 0 < len(storage._tx.tokens) <= 4


def test_a_cached_device_list_cannot_be_changed_by_a_reader(storage: SQLiteStorage) -> None:
    relay = make_relay(storage)
    storage.run(relay.publish_device_list(User.make("alice", 1).list_body()))

    def change_list(tx: Tx) -> None:
        listed = tx.device_list("alice")
        assert listed is not None
        listed.devices[2] = b"k" * 32  # type: ignore[index]

    with pytest.raises(TypeError):
        storage.run(change_list)
    assert storage.run(read_list("alice")) == (1, [1])  # every later reader sees the stored list


def test_a_device_purged_by_a_list_published_on_this_storage_cannot_authenticate(
    storage: SQLiteStorage,
) -> None:
    """[REQ-RL-30] [REQ-RL-04] A purge done through this storage's own connection drops what
    it keeps: with device 2's token row and Bob's list cached, a list without device 2 is
    published on the same storage, and device 2's token is refused at once, and so is a new
    login by it (neither answered from a copy of the rows the publication replaced)."""
    relay = make_relay(storage)
    bob = User.make("bob", 2)
    storage.run(relay.publish_device_list(bob.list_body()))
    for device in bob.devices:
        login(relay, storage, device)
    gone = bob.devices[1]
    assert storage.run(relay.auth_job(gone.token)).device == 2  # its token row is cached
    assert storage.run(read_list("bob")) == (1, [1, 2])  # and so is the list
    bob.devices.pop()
    bob.counter += 1
    storage.run(relay.publish_device_list(bob.list_body()))
    with pytest.raises(RelayAuthError):
        storage.run(relay.auth_job(gone.token))
    with pytest.raises(RelayAuthError):
        login(relay, storage, gone)
    assert storage.run(read_list("bob")) == (2, [1])
    assert storage.run(relay.auth_job(bob.devices[0].token)).device == 1
