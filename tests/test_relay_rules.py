"""The relay rules against every storage backend (spec/relay.md)."""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from e2ee.account import Account
from e2ee.client.envelope import MAX_ENVELOPE_SIZE
from e2ee.errors import (
    E2EEError,
    MismatchedDevicesError,
    QueueFullError,
    RelayAuthError,
    RelayBadRequestError,
    RelayConflictError,
    RelayError,
    RelayForbiddenError,
    RelayNotFoundError,
    RelayRateLimitedError,
    RelayTooLargeError,
)
from e2ee.identity import UserIdentity
from e2ee.relay import api, rules
from e2ee.relay.memory import MemoryStorage
from e2ee.relay.postgres import PostgresStorage
from e2ee.relay.rules import Relay, RelayConfig
from e2ee.relay.sqlite import SQLiteStorage
from e2ee.relay.storage import KIND_EC, KIND_KEM, Storage, Swept, Tx
from e2ee.testing import DeterministicProvider
from e2ee.wire import codec
from e2ee.wire.messages import PreKeyBundle
from tests.relay_support import (
    BACKENDS,
    Clock,
    Device,
    User,
    dumped_bytes,
    login,
    make_relay,
    make_storage,
    postgres_dump,
    send_body,
)


@pytest.fixture(params=BACKENDS)
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    s = make_storage(request.param, tmp_path)
    yield s
    s.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def relay(storage: Storage, clock: Clock) -> Relay:
    return make_relay(storage, clock, claim_burst=5, claim_rate=0.5, max_queue=3)


def dec(data: bytes) -> Any:
    return codec.decode(data, max_size=1 << 24)


def register(relay: Relay, storage: Storage, user: User) -> None:
    storage.run(relay.publish_device_list(user.list_body()))
    for device in user.devices:
        login(relay, storage, device)


def upload(relay: Relay, storage: Storage, user: User, ec: int = 0, kem: int = 0) -> None:
    for device in user.devices:
        checked = relay.check_upload(
            storage.run(relay.auth_job(device.token)), device.upload_body(ec, kem)
        )
        storage.run(relay.store_upload(device.token, checked))


def snapshot(storage: Storage) -> Any:
    """Everything the storage holds, to compare before and after a refused operation."""
    if isinstance(storage, MemoryStorage):
        return repr(
            [
                sorted(storage.users.items()),
                sorted(storage.queued.items()),
                sorted(storage.bundles.items()),
                sorted((k, sorted(v.items())) for k, v in storage.one_time.items()),
                sorted(storage.high_water.items()),
                sorted(storage.challenges.items()),
                sorted(storage.tokens.items()),
                sorted(storage.results.items()),
                sorted(storage.buckets.items()),
                sorted(storage.messages.items()),
                storage.next_id,
            ]
        )
    if isinstance(storage, PostgresStorage):
        return storage.run(postgres_dump)
    assert isinstance(storage, SQLiteStorage)

    def dump(tx: Any) -> list[Any]:
        tables = [r[0] for r in tx.c.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return [(t, sorted(tx.c.execute(f"SELECT * FROM {t}").fetchall())) for t in sorted(tables)]

    return storage.run(dump)


def refused(
    storage: Storage, error: type[RelayError], job: Any, code: str | None = None
) -> RelayError:
    before = snapshot(storage)
    with pytest.raises(error) as info:
        storage.run(job)
    assert snapshot(storage) == before
    if code is not None:
        assert info.value.code == code
    return info.value


# --- authentication --------------------------------------------------------------------------


def test_login_gives_a_token_stored_only_as_a_hash(relay: Relay, storage: Storage) -> None:
    """[REQ-RL-01] [REQ-RL-03]"""
    alice = User.make("alice")
    register(relay, storage, alice)
    token = alice.devices[0].token
    assert token is not None
    assert len(token) == 32
    if isinstance(storage, MemoryStorage):
        assert token not in storage.tokens
        assert len(storage.tokens) == 1
    elif isinstance(storage, PostgresStorage):
        held = dumped_bytes(storage.run(postgres_dump))
        assert token not in held
        tokens = [rows for table, rows in storage.run(postgres_dump) if table == "tokens"]
        assert len(tokens[0]) == 1
    else:
        assert isinstance(storage, SQLiteStorage)
        storage.run(lambda tx: None)  # a commit: everything is in the files
        assert token not in Path(storage.path).read_bytes()
        wal = Path(storage.path + "-wal")
        assert not wal.exists() or token not in wal.read_bytes()
    assert storage.run(relay.auth_job(token)).device == 1


def test_a_replayed_challenge_response_is_refused(relay: Relay, storage: Storage) -> None:
    """[REQ-RL-02]"""
    alice = User.make("alice")
    storage.run(relay.publish_device_list(alice.list_body()))
    device = alice.devices[0]
    who = codec.encode({0: b"alice", 1: 1})
    challenge = dec(relay.challenge(who))[0]
    payload = api.login_payload(relay.config.origin, challenge, "alice", 1)
    body = codec.encode({0: b"alice", 1: 1, 2: challenge, 3: device.sign_login(payload)})
    storage.run(relay.login(body))
    refused(storage, RelayAuthError, relay.login(body), "challenge_replayed")


def test_stale_forged_and_misbound_challenges_are_refused(
    relay: Relay, storage: Storage, clock: Clock
) -> None:
    """[REQ-RL-02]"""
    alice = User.make("alice", 2)
    storage.run(relay.publish_device_list(alice.list_body()))
    d1 = alice.devices[0]
    who = codec.encode({0: b"alice", 1: 1})

    def body(challenge: bytes, origin: str = relay.config.origin, device: int = 1) -> bytes:
        payload = api.login_payload(origin, challenge, "alice", device)
        return codec.encode({0: b"alice", 1: device, 2: challenge, 3: d1.sign_login(payload)})

    challenge = dec(relay.challenge(who))[0]
    with pytest.raises(RelayAuthError):  # signed for another origin (a phishing relay)
        storage.run(relay.login(body(challenge, origin="https://evil.example:443")))
    with pytest.raises(RelayAuthError):  # issued for device 1, used for device 2
        relay.login(body(challenge, device=2))
    forged = challenge[:-1] + bytes([challenge[-1] ^ 1])
    with pytest.raises(RelayAuthError):
        relay.login(body(forged))
    clock.advance(relay.config.challenge_ttl + 1)
    with pytest.raises(RelayAuthError) as info:
        relay.login(body(challenge))
    assert info.value.code == "challenge_expired"


def test_a_challenge_issued_for_one_user_is_refused_for_another(
    relay: Relay, storage: Storage
) -> None:
    """[REQ-RL-02] The challenge's tag binds the user: one issued for alice/1, answered with a
    valid signature by bob/1 (same device id) for bob, is refused (401), nothing stored; a
    challenge issued for bob/1 logs him in."""
    alice, bob = User.make("alice"), User.make("bob")
    for u in (alice, bob):
        storage.run(relay.publish_device_list(u.list_body()))
    b1 = bob.devices[0]

    def answer(challenge: bytes) -> bytes:
        payload = api.login_payload(relay.config.origin, challenge, "bob", 1)
        return codec.encode({0: b"bob", 1: 1, 2: challenge, 3: b1.sign_login(payload)})

    for_alice = dec(relay.challenge(codec.encode({0: b"alice", 1: 1})))[0]
    before = snapshot(storage)
    with pytest.raises(RelayAuthError) as info:
        storage.run(relay.login(answer(for_alice)))
    assert (info.value.status, info.value.code) == (401, "unauthorized")
    assert snapshot(storage) == before
    for_bob = dec(relay.challenge(codec.encode({0: b"bob", 1: 1})))[0]
    token = dec(storage.run(relay.login(answer(for_bob))))[0]
    assert storage.run(relay.auth_job(token)).user == "bob"


def test_a_device_not_on_the_newest_list_cannot_log_in(relay: Relay, storage: Storage) -> None:
    """[REQ-RL-04]"""
    alice = User.make("alice", 2)
    register(relay, storage, alice)
    removed = alice.devices.pop()
    alice.counter += 1
    storage.run(relay.publish_device_list(alice.list_body()))
    with pytest.raises(RelayAuthError):
        storage.run(relay.auth_job(removed.token))  # its tokens were purged
    with pytest.raises(RelayAuthError):
        login(relay, storage, removed)


def test_tokens_expire_and_unknown_tokens_are_refused(
    relay: Relay, storage: Storage, clock: Clock
) -> None:
    """[REQ-RL-03]"""
    alice = User.make("alice")
    register(relay, storage, alice)
    with pytest.raises(RelayAuthError):
        storage.run(relay.auth_job(os.urandom(32)))
    with pytest.raises(RelayAuthError):
        storage.run(relay.auth_job(None))
    clock.advance(relay.config.token_ttl + 1)
    with pytest.raises(RelayAuthError) as info:
        storage.run(relay.auth_job(alice.devices[0].token))
    assert info.value.code == "token_expired"


# --- device lists ----------------------------------------------------------------------------


def test_device_lists_are_newer_only_and_signed_by_the_registered_key(
    relay: Relay, storage: Storage
) -> None:
    """[REQ-RL-05]"""
    alice = User.make("alice")
    _, created = storage.run(relay.publish_device_list(alice.list_body()))
    assert created
    _, created = storage.run(relay.publish_device_list(alice.list_body()))  # identical: ok
    assert not created
    old = alice.list_body()
    alice.counter = 2
    storage.run(relay.publish_device_list(alice.list_body()))
    refused(storage, RelayConflictError, relay.publish_device_list(old), "stale_device_list")
    impostor = User("alice", UserIdentity.generate(), alice.devices, counter=9)
    refused(
        storage,
        RelayForbiddenError,
        relay.publish_device_list(impostor.list_body()),
        "user_key_mismatch",
    )
    signed = alice.signed_list()
    with pytest.raises(RelayBadRequestError):
        relay.publish_device_list(codec.encode({0: signed[:-1] + bytes([signed[-1] ^ 1])}))
    login(relay, storage, alice.devices[0])
    fetched = dec(storage.run(relay.get_device_list(alice.devices[0].token, "alice")))[0]
    assert fetched == alice.signed_list()
    with pytest.raises(RelayNotFoundError):
        storage.run(relay.get_device_list(alice.devices[0].token, "nobody"))


def test_a_different_list_with_the_stored_counter_is_refused(
    relay: Relay, storage: Storage
) -> None:
    """[REQ-RL-05] Only an identical copy of the stored list may come with its counter: a
    different list signed by the registered key with the same counter (here one adding a
    device) is refused with 409 stale_device_list, and nothing changes."""
    alice = User.make("alice")
    register(relay, storage, alice)
    stored = alice.signed_list()
    alice.devices.append(Device("alice", 2, Account.generate()))
    assert alice.counter == 1
    assert alice.signed_list() != stored
    refused(
        storage,
        RelayConflictError,
        relay.publish_device_list(alice.list_body()),
        "stale_device_list",
    )
    fetched = dec(storage.run(relay.get_device_list(alice.devices[0].token, "alice")))[0]
    assert fetched == stored


def test_removing_a_device_purges_its_queue_and_keys(relay: Relay, storage: Storage) -> None:
    """[REQ-RL-17]"""
    alice, bob = User.make("alice"), User.make("bob", 2)
    register(relay, storage, alice)
    register(relay, storage, bob)
    upload(relay, storage, bob, ec=3, kem=3)
    storage.run(
        relay.send(alice.devices[0].token, send_body(bob, os.urandom(16), alice.devices[0]))
    )
    gone = bob.devices.pop()
    bob.counter += 1
    storage.run(relay.publish_device_list(bob.list_body()))
    assert storage.run(lambda tx: tx.queue_length("bob", gone.device_id)) == 0
    assert storage.run(lambda tx: tx.fetch("bob", gone.device_id, 0, 10, 0, 1 << 20)) == []
    assert storage.run(lambda tx: tx.one_time_count("bob", gone.device_id, 0)) == 0
    assert storage.run(lambda tx: tx.signed_bundle("bob", gone.device_id)) is None


def test_re_keying_a_device_purges_it_like_removing_it(relay: Relay, storage: Storage) -> None:
    """[REQ-RL-17] A newer list that keeps device 2 under a new identity key (a reinstall after
    loss or theft) purges everything of the old key: its token, its queue, its one-time keys
    of both kinds and their high-water marks, and its stored claim and send results. The new
    key's device starts afresh: a claim or send reusing the old key's ids is a new request,
    and its key ids are not taken for re-uploads of the old key's."""
    alice, bob = User.make("alice"), User.make("bob", 2)
    register(relay, storage, alice)
    register(relay, storage, bob)
    upload(relay, storage, alice, ec=3, kem=3)
    upload(relay, storage, bob, ec=3, kem=3)
    a1, old = alice.devices[0], bob.devices[1]
    storage.run(relay.send(a1.token, send_body(bob, os.urandom(16), a1)))
    claim_body = codec.encode({0: b"alice", 1: b"k" * 16})
    first_claim = storage.run(relay.claim(old.token, claim_body))
    message_id = os.urandom(16)
    storage.run(relay.send(old.token, send_body(alice, message_id, old)))
    assert storage.run(lambda tx: tx.high_water("bob", 2, KIND_EC)) > 0  # there is a mark
    assert dec(storage.run(relay.key_counts(a1.token)))[0] == 2

    new = Device("bob", 2, Account.generate())
    assert new.key != old.key
    bob.devices[1] = new
    bob.counter += 1
    storage.run(relay.publish_device_list(bob.list_body()))

    refused(storage, RelayAuthError, relay.auth_job(old.token))
    assert storage.run(lambda tx: tx.queue_length("bob", 2)) == 0
    assert storage.run(lambda tx: tx.fetch("bob", 2, 0, 10, 0, 1 << 20)) == []
    assert storage.run(lambda tx: tx.signed_bundle("bob", 2)) is None

    def keys_and_marks(tx: Tx) -> list[int]:  # one-time keys, then high-water marks
        counts = [tx.one_time_count("bob", 2, kind) for kind in (KIND_EC, KIND_KEM)]
        return counts + [tx.high_water("bob", 2, kind) for kind in (KIND_EC, KIND_KEM)]

    assert storage.run(keys_and_marks) == [0, 0, 0, 0]
    # device 1 keeps everything
    assert storage.run(lambda tx: tx.queue_length("bob", 1)) == 1
    assert storage.run(lambda tx: tx.one_time_count("bob", 1, KIND_EC)) == 3

    login(relay, storage, new)
    # The old key's claim result is gone: the same claim id claims a fresh key of Alice's.
    again = storage.run(relay.claim(new.token, claim_body))
    assert again != first_claim
    assert dec(storage.run(relay.key_counts(a1.token)))[0] == 1
    # The old key's send result is gone: the same client message id is stored again.
    storage.run(relay.send(new.token, send_body(alice, message_id, new)))
    rows = dec(storage.run(relay.fetch(a1.token, 0, 10)))[0]
    assert [dec(e)[6] for _, e in rows] == [message_id, message_id]
    # The old key's high-water marks are gone: the new key's ids 1..3 are stored.
    upload(relay, storage, User("bob", bob.identity, [new]), ec=3, kem=3)
    counts = dec(storage.run(relay.key_counts(new.token)))
    assert (counts[0], counts[1], counts[2]) == (3, 3, True)


# --- keys ------------------------------------------------------------------------------------


def test_upload_verifies_signatures_and_bounds_batches_and_stock(
    relay: Relay, storage: Storage
) -> None:
    """[REQ-RL-06] [REQ-RL-07]"""
    alice = User.make("alice")
    register(relay, storage, alice)
    device = alice.devices[0]
    auth = storage.run(relay.auth_job(device.token))
    body = device.upload_body(3, 3)
    value = dec(body)
    value[1][0][2] = bytes(64)  # a bad one-time key signature
    with pytest.raises(RelayBadRequestError) as info:
        relay.check_upload(auth, codec.encode(value))
    assert info.value.code == "bad_signature"
    other = User.make("mallory").devices[0]
    with pytest.raises(RelayForbiddenError):  # another device's bundle
        relay.check_upload(auth, other.upload_body(1, 1))
    too_many = relay.config.max_upload_batch + 1
    with pytest.raises(RelayTooLargeError) as large:
        relay.check_upload(auth, device.upload_body(too_many, 0))
    assert large.value.code == "too_many_keys"
    storage.run(relay.store_upload(device.token, relay.check_upload(auth, body)))
    counts = dec(storage.run(relay.key_counts(device.token)))
    assert (counts[0], counts[1], counts[2]) == (3, 3, True)


def test_stored_one_time_keys_are_capped(storage: Storage, clock: Clock) -> None:
    """[REQ-RL-07]"""
    relay = make_relay(storage, clock, max_stored_one_time=4)
    alice = User.make("alice")
    register(relay, storage, alice)
    device = alice.devices[0]
    auth = storage.run(relay.auth_job(device.token))
    storage.run(
        relay.store_upload(device.token, relay.check_upload(auth, device.upload_body(3, 0)))
    )
    checked = relay.check_upload(auth, device.upload_body(2, 0))
    refused(storage, RelayTooLargeError, relay.store_upload(device.token, checked), "too_many_keys")


def test_an_upload_refused_after_it_stored_some_keys_is_rolled_back_whole(
    storage: Storage, clock: Clock
) -> None:
    """[REQ-RL-07] [REQ-RL-23] The upload stores its bundle and its one-time EC keys, then finds
    too many ML-KEM keys and is refused: a job that raises after it wrote is rolled back whole,
    so neither its bundle nor its EC keys nor their high-water mark are kept."""
    relay = make_relay(storage, clock, max_stored_one_time=4)
    alice = User.make("alice")
    register(relay, storage, alice)
    device = alice.devices[0]
    auth = storage.run(relay.auth_job(device.token))
    storage.run(
        relay.store_upload(device.token, relay.check_upload(auth, device.upload_body(0, 3)))
    )
    device.account.rotate_signed_prekey()  # a new bundle, so storing it is a change
    checked = relay.check_upload(auth, device.upload_body(2, 2))
    refused(storage, RelayTooLargeError, relay.store_upload(device.token, checked), "too_many_keys")


def test_a_re_upload_after_a_crash_never_brings_a_claimed_key_back(
    relay: Relay, storage: Storage
) -> None:
    """[REQ-RL-07] A client that crashed before it marked its keys uploaded sends the same
    batch again: ids at or below the highest id accepted are ignored, so the keys claims
    handed out in between are not stored again and no key is ever handed out twice."""
    alice, bob = User.make("alice"), User.make("bob")
    register(relay, storage, alice)
    register(relay, storage, bob)
    device = bob.devices[0]
    body = device.upload_body(3, 3)
    uploaded = (sorted(k[0] for k in dec(body)[1]), sorted(k[0] for k in dec(body)[2]))
    checked = relay.check_upload(storage.run(relay.auth_job(device.token)), body)
    assert dec(storage.run(relay.store_upload(device.token, checked))) == {0: 3, 1: 3}

    def claim() -> tuple[int | None, int | None]:
        request = codec.encode({0: b"bob", 1: os.urandom(16)})
        ((_, data),) = dec(storage.run(relay.claim(alice.devices[0].token, request)))[0]
        bundle = PreKeyBundle.from_bytes(data)
        return bundle.one_time_prekey_id, bundle.one_time_kem_prekey_id

    claimed = [claim() for _ in range(3)]  # every key of the batch is handed out
    stored = dec(storage.run(relay.store_upload(device.token, checked)))  # the same batch again
    claimed.append(claim())
    ec = [c[0] for c in claimed if c[0] is not None]
    kem = [c[1] for c in claimed if c[1] is not None]
    assert (sorted(ec), sorted(kem)) == uploaded  # each key handed out exactly once
    assert claimed[-1] == (None, None)  # none left: the last resort
    assert stored == {0: 0, 1: 0}  # nothing of the batch was new


def test_one_time_ml_kem_keys_need_a_last_resort_ml_kem_key(storage: Storage, clock: Clock) -> None:
    """[REQ-RL-36] A bundle without a last-resort ML-KEM key is refused while one-time ML-KEM
    keys are stored (a claim would give out the bundle alone while they remain, REQ-RL-08),
    and with one-time ML-KEM keys in the same upload; once none is stored it is accepted."""
    relay = make_relay(storage, clock)
    alice, bob = User.make("alice"), User("bob", UserIdentity.generate())
    bob.devices.append(Device("bob", 1, Account.generate(provider=DeterministicProvider("b1"))))
    register(relay, storage, alice)
    register(relay, storage, bob)
    device = bob.devices[0]
    classic = Account.generate(provider=DeterministicProvider("b1"), post_quantum=False)
    assert classic.identity_key == device.key  # the same identity, a bundle without ML-KEM
    auth = storage.run(relay.auth_job(device.token))
    kem_key = dec(device.upload_body(0, 1))[2][0]
    without_kem = api.KeyUpload(classic.signed_prekey_bundle().to_bytes(), (), ())
    with pytest.raises(RelayBadRequestError):  # one-time ML-KEM keys in the same upload
        relay.check_upload(auth, codec.encode({**dec(without_kem.to_bytes()), 2: [kem_key]}))
    upload(relay, storage, bob, kem=1)
    checked = relay.check_upload(auth, without_kem.to_bytes())
    refused(storage, RelayBadRequestError, relay.store_upload(device.token, checked), "bad_request")
    claim = codec.encode({0: b"bob", 1: os.urandom(16)})
    ((_, data),) = dec(storage.run(relay.claim(alice.devices[0].token, claim)))[0]
    assert PreKeyBundle.from_bytes(data).one_time_kem_prekey is not None
    storage.run(relay.store_upload(device.token, checked))  # none stored any more
    counts = dec(storage.run(relay.key_counts(device.token)))
    assert (counts[0], counts[1], counts[2]) == (0, 0, True)
    claim = codec.encode({0: b"bob", 1: os.urandom(16)})
    ((_, data),) = dec(storage.run(relay.claim(alice.devices[0].token, claim)))[0]
    assert PreKeyBundle.from_bytes(data).kem_prekey is None


def test_claims_hand_out_each_key_once_then_the_last_resort(relay: Relay, storage: Storage) -> None:
    """[REQ-RL-08] [REQ-RL-09]"""
    alice, bob = User.make("alice"), User.make("bob", 2)
    register(relay, storage, alice)
    register(relay, storage, bob)
    upload(relay, storage, bob, ec=2, kem=2)
    seen: list[tuple[int, int | None, int | None]] = []
    for _ in range(3):
        body = codec.encode({0: b"bob", 1: os.urandom(16)})
        bundles = dec(storage.run(relay.claim(alice.devices[0].token, body)))[0]
        assert [d for d, _ in bundles] == [1, 2]
        for device, data in bundles:
            b = PreKeyBundle.from_bytes(data)
            assert b.identity_key == bob.devices[device - 1].key
            assert b.kem_prekey is not None  # the signed last-resort ML-KEM key, always
            seen.append((device, b.one_time_prekey_id, b.one_time_kem_prekey_id))
    per_device = {d: [s for s in seen if s[0] == d] for d in (1, 2)}
    for rows in per_device.values():
        ids = [r[1] for r in rows[:2]]
        assert None not in ids
        assert len(set(ids)) == 2
        assert rows[2][1:] == (None, None)  # none left: last resort only


def test_a_retried_claim_gets_the_same_bundles(relay: Relay, storage: Storage) -> None:
    """[REQ-RL-10]"""
    alice, bob = User.make("alice"), User.make("bob")
    register(relay, storage, alice)
    register(relay, storage, bob)
    upload(relay, storage, bob, ec=3, kem=3)
    body = codec.encode({0: b"bob", 1: b"c" * 16})
    first = storage.run(relay.claim(alice.devices[0].token, body))
    assert storage.run(relay.claim(alice.devices[0].token, body)) == first
    assert dec(storage.run(relay.key_counts(bob.devices[0].token)))[0] == 2


def test_claims_are_rate_limited_per_claimer_and_target(
    relay: Relay, storage: Storage, clock: Clock
) -> None:
    """[REQ-RL-11]"""
    alice, bob, carol = User.make("alice"), User.make("bob"), User.make("carol")
    for u in (alice, bob, carol):
        register(relay, storage, u)
    upload(relay, storage, bob, ec=20)

    def claim(who: User) -> Any:
        return relay.claim(who.devices[0].token, codec.encode({0: b"bob", 1: os.urandom(16)}))

    for _ in range(relay.config.claim_burst):
        storage.run(claim(alice))
    error = refused(storage, RelayRateLimitedError, claim(alice))
    assert isinstance(error, RelayRateLimitedError)
    assert error.retry_after >= 1
    storage.run(claim(carol))  # another claimer has its own bucket
    clock.advance(2 / relay.config.claim_rate)
    storage.run(claim(alice))


def test_a_retried_claim_costs_no_rate_limit_token(relay: Relay, storage: Storage) -> None:
    """[REQ-RL-11] A retry is answered from the stored result before the bucket is looked
    at: after one claim and `burst` retries of it, the claimer still has `burst - 1` claims
    left, the one after them is refused."""
    alice, bob = User.make("alice"), User.make("bob")
    register(relay, storage, alice)
    register(relay, storage, bob)
    upload(relay, storage, bob, ec=3)
    token = alice.devices[0].token
    burst = relay.config.claim_burst
    body = codec.encode({0: b"bob", 1: b"r" * 16})
    first = storage.run(relay.claim(token, body))
    for _ in range(burst):
        assert storage.run(relay.claim(token, body)) == first

    def claim() -> Any:
        return relay.claim(token, codec.encode({0: b"bob", 1: os.urandom(16)}))

    for _ in range(burst - 1):
        storage.run(claim())
    refused(storage, RelayRateLimitedError, claim())


def test_sweep_drops_only_buckets_idle_long_enough_to_be_full(
    relay: Relay, storage: Storage, clock: Clock
) -> None:
    """[REQ-RL-11] A bucket idle for burst / rate seconds is full again, the same as no bucket:
    the sweep deletes it, so the table does not grow with every (claimer, target) pair; a
    bucket still refilling is kept, or the sweep would hand out a fresh burst early."""
    alice, bob, carol = User.make("alice"), User.make("bob"), User.make("carol")
    for u in (alice, bob, carol):
        register(relay, storage, u)
    upload(relay, storage, bob, ec=5)

    def claim(who: User) -> Any:
        return relay.claim(who.devices[0].token, codec.encode({0: b"bob", 1: os.urandom(16)}))

    refill = relay.config.claim_burst / relay.config.claim_rate
    storage.run(claim(carol))
    clock.advance(refill * 0.6)
    storage.run(claim(alice))
    clock.advance(refill * 0.6)  # carol's bucket idle 1.2 x refill, alice's 0.6 x refill
    storage.run(relay.sweep())
    assert storage.run(lambda tx: tx.drop_buckets(float("inf"), 100)) == 1  # only alice's left


def test_a_claim_limit_that_cannot_work_is_refused_when_configured() -> None:
    """[REQ-RL-11] A rate of 0 divided by zero in every limited claim and in the sweep (whose
    task then died for good), NaN let every claim through (min(burst, NaN) is the burst), and
    a rate so small that a bucket never refills overflowed; a burst below 1 refuses every
    claim. RelayConfig refuses each as API misuse (ValueError)."""
    for burst, rate in [
        (0, 1.0),
        (-5, 1.0),
        (True, 1.0),
        (2.5, 1.0),
        (50, 0.0),
        (50, -1.0),
        (50, float("nan")),
        (50, float("inf")),
        (50, 1e-320),
        (10**400, 1.0),
        (50, "1"),
    ]:
        with pytest.raises(ValueError, match="claim_"):
            RelayConfig(claim_burst=cast(int, burst), claim_rate=cast(float, rate))
    for burst, rate in [(1, 1e-6), (50, 1), (1_000_000_000, 1e6)]:  # as the benchmarks use
        config = RelayConfig(claim_burst=burst, claim_rate=rate)
        assert (config.claim_burst, config.claim_rate) == (burst, rate)


@pytest.mark.parametrize(
    "name",
    [
        "challenge_ttl",
        "token_ttl",
        "message_ttl",
        "idempotency_ttl",
        "max_queue",
        "max_envelope_size",
        "max_send_body",
        "max_upload_batch",
        "max_upload_body",
        "max_stored_one_time",
        "max_ticket_lifetime",
        "sweep_batch",
    ],
)
def test_every_ttl_and_size_is_a_positive_integer(name: str) -> None:
    """A TTL or a size of 0 or -1 (every token born expired, every send refused), True, or a
    float is refused when the configuration is made, not met later on a request."""
    for value in (0, -1, True, 1.5, "60", None):
        with pytest.raises(ValueError, match=name):
            RelayConfig(**{name: value})  # type: ignore[arg-type]


def test_an_envelope_limit_above_what_an_envelope_can_be_is_refused() -> None:
    """Every envelope is parsed with the client layer's MAX_ENVELOPE_SIZE (client.md), so a
    larger max_envelope_size would be a limit that is never reached: it is refused when the
    configuration is made, and a smaller one is kept."""
    with pytest.raises(ValueError, match="max_envelope_size"):
        RelayConfig(max_envelope_size=MAX_ENVELOPE_SIZE + 1)
    assert RelayConfig(max_envelope_size=1024).max_envelope_size == 1024
    assert RelayConfig().max_envelope_size == MAX_ENVELOPE_SIZE


# --- messages --------------------------------------------------------------------------------


def test_send_stores_for_every_device_in_order_and_acks_are_per_device(
    relay: Relay, storage: Storage
) -> None:
    """[REQ-RL-12] [REQ-RL-14] [REQ-RL-15]"""
    alice, bob = User.make("alice"), User.make("bob", 2)
    register(relay, storage, alice)
    register(relay, storage, bob)
    sender = alice.devices[0]
    ids = [os.urandom(16) for _ in range(3)]
    for i, mid in enumerate(ids):
        storage.run(relay.send(sender.token, send_body(bob, mid, sender, bytes([i]) * 40)))
    for device in bob.devices:
        rows = dec(storage.run(relay.fetch(device.token, 0, 100)))[0]
        assert [dec(e)[6] for _, e in rows] == ids
    b1, b2 = bob.devices
    rows1 = dec(storage.run(relay.fetch(b1.token, 0, 100)))[0]
    rows2 = dec(storage.run(relay.fetch(b2.token, 0, 100)))[0]
    # b2 cannot acknowledge b1's messages: an id names a message of the acking device only
    # (ids are unique per relay on SQLite, per device on PostgreSQL, where b2 then acks its own)
    own = int(rows1[0][0] in {r[0] for r in rows2})
    assert dec(storage.run(relay.ack(b2.token, codec.encode({0: [rows1[0][0]]}))))[0] == own
    assert len(dec(storage.run(relay.fetch(b1.token, 0, 100)))[0]) == 3
    # its own queue is untouched by b1's ack
    assert dec(storage.run(relay.ack(b1.token, codec.encode({0: [rows1[0][0]]}))))[0] == 1
    assert dec(storage.run(relay.ack(b1.token, codec.encode({0: [rows1[0][0]]}))))[0] == 0
    assert len(dec(storage.run(relay.fetch(b1.token, 0, 100)))[0]) == 2
    assert len(dec(storage.run(relay.fetch(b2.token, 0, 100)))[0]) == 3 - own


def test_a_device_removed_and_listed_again_is_never_given_an_id_it_had_before(
    relay: Relay, storage: Storage
) -> None:
    """[REQ-RL-14] [REQ-RL-26] Bob's device 2 is given two messages, removed from his list (its
    queue purged) and listed again: its next message gets an id above both, so a reader paging
    with ``after`` = the last id it saw does not skip it. On PostgreSQL the device's counter row
    outlives the purge; without it the ids started again at 1."""
    alice, bob = User.make("alice"), User.make("bob", 2)
    register(relay, storage, alice)
    register(relay, storage, bob)
    sender, second = alice.devices[0], bob.devices[1]
    for _ in range(2):
        storage.run(relay.send(sender.token, send_body(bob, os.urandom(16), sender)))
    given = [i for i, _ in dec(storage.run(relay.fetch(second.token, 0, 100)))[0]]
    assert len(given) == 2
    bob.devices.pop()
    bob.counter += 1
    storage.run(relay.publish_device_list(bob.list_body()))
    bob.devices.append(second)
    bob.counter += 1
    storage.run(relay.publish_device_list(bob.list_body()))
    login(relay, storage, second)
    storage.run(relay.send(sender.token, send_body(bob, os.urandom(16), sender)))
    [(again, _)] = dec(storage.run(relay.fetch(second.token, max(given), 100)))[0]
    assert again > max(given)


def test_send_is_idempotent_per_client_message_id(relay: Relay, storage: Storage) -> None:
    """[REQ-RL-13]"""
    alice, bob = User.make("alice"), User.make("bob")
    register(relay, storage, alice)
    register(relay, storage, bob)
    body = send_body(bob, b"m" * 16, alice.devices[0])
    storage.run(relay.send(alice.devices[0].token, body))
    storage.run(relay.send(alice.devices[0].token, body))
    assert len(dec(storage.run(relay.fetch(bob.devices[0].token, 0, 10)))[0]) == 1


def test_one_client_message_id_sent_to_two_recipient_users_is_stored_for_both(
    relay: Relay, storage: Storage
) -> None:
    """[REQ-RL-13] The idempotency key holds the recipient user: a message to bob and the copy
    for the sender's own other device (RelayClient.send posts both under one client message
    id), or a message to carol under the same id, are different requests, each stored; only
    a retry to the same recipient is answered without storing."""
    alice, bob, carol = User.make("alice", 2), User.make("bob"), User.make("carol")
    for u in (alice, bob, carol):
        register(relay, storage, u)
    a1, a2 = alice.devices
    message_id = os.urandom(16)
    for recipient in (bob, alice, carol):
        sent = storage.run(relay.send(a1.token, send_body(recipient, message_id, a1)))
        assert dec(sent.body) == {0: 1}
    storage.run(relay.send(a1.token, send_body(carol, message_id, a1)))  # a retry
    for device in (bob.devices[0], a2, carol.devices[0]):
        rows = dec(storage.run(relay.fetch(device.token, 0, 10)))[0]
        assert [dec(e)[6] for _, e in rows] == [message_id]  # stored once
        assert [dec(e)[4] for _, e in rows] == [device.user.encode()]


def test_mismatched_devices_are_named_and_nothing_is_stored(relay: Relay, storage: Storage) -> None:
    """[REQ-RL-12]"""
    alice, bob = User.make("alice"), User.make("bob", 3)
    register(relay, storage, alice)
    register(relay, storage, bob)
    sender = alice.devices[0]
    mid = os.urandom(16)
    d1, d2, d3 = bob.devices
    request = api.SendRequest(
        "bob",
        mid,
        (
            (1, d1.key, sender.envelope(d1, mid)),
            (2, bytes(32), sender.envelope(d2, mid)),  # stale key
            (7, d3.key, sender.envelope(type(d3)("bob", 7, d3.account), mid)),  # extra
        ),
    )  # device 3 is missing
    error = refused(storage, MismatchedDevicesError, relay.send(sender.token, request.to_bytes()))
    assert isinstance(error, MismatchedDevicesError)
    assert (error.missing, error.extra, error.stale) == ((3,), (7,), (2,))


def test_forged_sender_and_misrouted_envelopes_are_refused(relay: Relay, storage: Storage) -> None:
    """[REQ-RL-12]"""
    alice, bob, mallory = User.make("alice"), User.make("bob"), User.make("mallory")
    for u in (alice, bob, mallory):
        register(relay, storage, u)
    body = send_body(bob, os.urandom(16), alice.devices[0])
    refused(storage, RelayForbiddenError, relay.send(mallory.devices[0].token, body))
    request = api.SendRequest.from_bytes(body, max_envelope=1 << 20, limit=1 << 22)
    other = api.SendRequest("alice", request.client_message_id, request.messages)
    with pytest.raises(RelayBadRequestError):
        relay.send(alice.devices[0].token, other.to_bytes())


def test_queue_and_message_limits_refuse_clearly_and_store_nothing(
    relay: Relay, storage: Storage
) -> None:
    """[REQ-RL-16]"""
    alice, bob = User.make("alice"), User.make("bob", 2)
    register(relay, storage, alice)
    register(relay, storage, bob)
    sender = alice.devices[0]
    for _ in range(relay.config.max_queue):
        storage.run(relay.send(sender.token, send_body(bob, os.urandom(16), sender)))
    b1 = bob.devices[0]
    first = dec(storage.run(relay.fetch(b1.token, 0, 1)))[0][0][0]
    storage.run(relay.ack(b1.token, codec.encode({0: [first]})))  # b1 has room, b2 not
    error = refused(
        storage, QueueFullError, relay.send(sender.token, send_body(bob, os.urandom(16), sender))
    )
    assert isinstance(error, QueueFullError)
    assert error.devices == (2,)
    big = send_body(bob, os.urandom(16), sender, b"x" * (relay.config.max_envelope_size + 1))
    with pytest.raises(RelayTooLargeError) as info:
        relay.send(sender.token, big)
    assert info.value.code == "message_too_large"


def test_messages_expire_after_the_ttl(relay: Relay, storage: Storage, clock: Clock) -> None:
    """[REQ-RL-16]"""
    alice, bob = User.make("alice"), User.make("bob")
    register(relay, storage, alice)
    register(relay, storage, bob)
    storage.run(
        relay.send(alice.devices[0].token, send_body(bob, os.urandom(16), alice.devices[0]))
    )
    clock.advance(relay.config.message_ttl + 1)
    login(relay, storage, bob.devices[0])
    assert dec(storage.run(relay.fetch(bob.devices[0].token, 0, 10)))[0] == []
    assert storage.run(relay.sweep()) == Swept(1, False)
    assert storage.run(lambda tx: tx.queue_length("bob", 1)) == 0


def rows_in(storage: Storage, table: str) -> int:
    """How many rows a table of the storage holds (read directly, not through the rules)."""
    if isinstance(storage, MemoryStorage):
        return len(getattr(storage, table))
    assert isinstance(storage, SQLiteStorage | PostgresStorage)

    def count(tx: Any) -> int:
        return int(tx.c.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    return storage.run(count)


def per_device(
    storage: Storage, users: list[User], read: Callable[[Tx, str, int], int]
) -> dict[tuple[str, int], int]:
    def job(tx: Tx) -> dict[tuple[str, int], int]:
        return {
            (u.name, d.device_id): read(tx, u.name, d.device_id) for u in users for d in u.devices
        }

    return storage.run(job)


def stored_per_device(storage: Storage, users: list[User]) -> dict[tuple[str, int], int]:
    """The messages stored for each device, expired or not (fetched as at time 0)."""
    return per_device(storage, users, lambda tx, u, d: len(tx.fetch(u, d, 0, 1000, 0, 1 << 30)))


def queued_per_device(storage: Storage, users: list[User]) -> dict[tuple[str, int], int]:
    return per_device(storage, users, lambda tx, u, d: tx.queue_length(u, d))


def test_a_sweep_job_deletes_at_most_sweep_batch_expired_messages(
    storage: Storage, clock: Clock
) -> None:
    """[REQ-RL-41] After downtime, or a burst of sends a message TTL ago, one sweep job deleted
    every expired message at once: a long stall of the relay (SQLite runs jobs on the event
    loop) or every expired row in the relay's memory (PostgreSQL). A job now deletes at most
    ``sweep_batch`` of them, earliest expiry first, says whether it stopped at the bound, and
    leaves each device's ``queued`` count equal to the messages it still holds; the next jobs
    delete the rest, the last one says no more, and unexpired messages stay."""
    relay = make_relay(storage, clock, sweep_batch=7, message_ttl=1000)
    alice, bob, carol = User.make("alice"), User.make("bob", 3), User.make("carol", 2)
    for u in (alice, bob, carol):
        register(relay, storage, u)
    sender = alice.devices[0]

    def send(to: User, times: int) -> None:
        for _ in range(times):
            storage.run(relay.send(sender.token, send_body(to, os.urandom(16), sender)))

    send(bob, 5)  # 15 messages
    clock.advance(10)
    send(carol, 5)  # 10 more, expiring later: 25 will have expired
    clock.advance(995)
    send(bob, 2)  # 6 and 2 messages that have not expired
    send(carol, 1)
    clock.advance(10)
    users = [bob, carol]
    assert sum(stored_per_device(storage, users).values()) == 33
    for deleted, more in [(7, True), (7, True), (7, True), (4, False)]:
        assert storage.run(relay.sweep()) == Swept(deleted, more)
        assert queued_per_device(storage, users) == stored_per_device(storage, users)
        if deleted == 7 and more and rows_in(storage, "messages") == 26:  # the first job
            carols = [n for (u, _), n in stored_per_device(storage, users).items() if u == "carol"]
            assert sum(carols) == 12  # earliest expiry first: only bob's went
    assert stored_per_device(storage, users) == {
        ("bob", 1): 2,
        ("bob", 2): 2,
        ("bob", 3): 2,
        ("carol", 1): 1,
        ("carol", 2): 1,
    }
    assert rows_in(storage, "messages") == 8
    assert storage.run(relay.sweep()) == Swept(0, False)


def test_a_sweep_job_deletes_at_most_sweep_batch_tokens_challenges_and_results(
    storage: Storage, clock: Clock
) -> None:
    """[REQ-RL-41] Expired challenges, tokens and idempotent results were deleted all at once
    too: a job deletes at most ``sweep_batch`` rows of each table and says more while any of
    them gave a full batch."""
    relay = make_relay(
        storage, clock, sweep_batch=7, token_ttl=100, challenge_ttl=50, idempotency_ttl=100
    )
    alice, bob = User.make("alice"), User.make("bob")
    for u in (alice, bob):
        register(relay, storage, u)
    for _ in range(7):
        login(relay, storage, alice.devices[0])  # 9 tokens and 9 used challenges in all
    sender = alice.devices[0]
    for _ in range(16):  # 16 results (the messages expire in 30 days)
        storage.run(relay.send(sender.token, send_body(bob, os.urandom(16), sender)))
    tables = ("challenges", "tokens", "results")
    assert [rows_in(storage, t) for t in tables] == [9, 9, 16]
    clock.advance(101)
    for left, more in [([2, 2, 9], True), ([0, 0, 2], True), ([0, 0, 0], False)]:
        assert storage.run(relay.sweep()) == Swept(0, more)
        assert [rows_in(storage, t) for t in tables] == left
    assert rows_in(storage, "messages") == 16


def test_a_sweep_job_drops_at_most_sweep_batch_idle_buckets(storage: Storage, clock: Clock) -> None:
    """[REQ-RL-41] [REQ-RL-11] Idle buckets were all dropped in one statement as well: a job
    drops at most ``sweep_batch`` and says more when it dropped that many."""
    relay = make_relay(storage, clock, sweep_batch=7, claim_burst=5, claim_rate=1.0)
    now = clock()

    def fill(tx: Tx) -> None:
        for i in range(10):
            tx.put_bucket(bytes([i]) * 32, 0.0, now - 100)  # idle long enough: full again
        tx.put_bucket(b"\xff" * 32, 0.0, now)  # still refilling: kept

    storage.run(fill)
    assert storage.run(relay.sweep()) == Swept(0, True)
    assert rows_in(storage, "buckets") == 4
    assert storage.run(relay.sweep()) == Swept(0, False)
    assert rows_in(storage, "buckets") == 1


# --- fetch pages -----------------------------------------------------------------------------

FETCH_BUDGET = 4 * 1024 * 1024
"""spec/relay.md: a page holds at most "about 4 MiB" of envelopes."""


class RecordingTx:
    """A transaction that records, for every ``fetch`` the rules make of the storage, the rows
    it answered and the most memory the storage allocated while answering (tracemalloc)."""

    def __init__(self, tx: Tx) -> None:
        self._tx = tx
        self.answers: list[list[tuple[int, bytes]]] = []
        self.peaks: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)

    def fetch(self, *args: Any) -> list[tuple[int, bytes]]:
        tracing = tracemalloc.is_tracing()
        if not tracing:
            tracemalloc.start()
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        try:
            rows: list[tuple[int, bytes]] = self._tx.fetch(*args)
            self.peaks.append(tracemalloc.get_traced_memory()[1] - before)
        finally:
            if not tracing:
                tracemalloc.stop()
        self.answers.append(list(rows))
        return rows


def queue_large_envelopes(storage: Storage, count: int) -> tuple[Relay, User, list[bytes], int]:
    """``count`` envelopes of about 250 kB queued for bob's device: (relay, bob, message ids,
    the largest envelope's size)."""
    relay = make_relay(storage)
    alice, bob = User.make("alice"), User.make("bob")
    register(relay, storage, alice)
    register(relay, storage, bob)
    sender, ids = alice.devices[0], [os.urandom(16) for _ in range(count)]
    for mid in ids:
        storage.run(relay.send(sender.token, send_body(bob, mid, sender, b"e" * 250_000)))
    size = len(sender.envelope(bob.devices[0], ids[0], b"e" * 250_000))
    return relay, bob, ids, size


def test_a_page_cut_by_its_byte_budget_says_more_and_the_next_pages_hold_the_rest(
    storage: Storage,
) -> None:
    """[REQ-RL-35] 40 envelopes of 250 kB (10 MB) with a count limit of 500: the byte budget
    cuts the pages, each such page says more, and paging on delivers every message once, in
    order (a client that stops at more=false stopped after the first page before)."""
    relay, bob, ids, _ = queue_large_envelopes(storage, 40)
    token = bob.devices[0].token
    pages: list[tuple[list[Any], bool]] = []
    after = 0
    while not pages or pages[-1][1]:
        assert len(pages) < 40
        value = dec(storage.run(relay.fetch(token, after, 500)))
        rows, more = value[0], value[1]
        pages.append((rows, more))
        after = rows[-1][0] if rows else after
    assert len(pages) >= 3  # 10 MB cannot fit in two pages of about 4 MiB
    for rows, _ in pages:
        assert 0 < sum(len(e) for _, e in rows) <= FETCH_BUDGET
    assert [more for _, more in pages] == [True] * (len(pages) - 1) + [False]
    assert [dec(e)[6] for rows, _ in pages for _, e in rows] == ids


def test_a_fetch_reads_at_most_the_byte_budget_and_one_envelope(storage: Storage) -> None:
    """[REQ-RL-35] The storage stops reading once the page is over its byte budget: for an
    HTTP page (limit 500) and for the WebSocket push (limit 100) it answers, and allocates,
    at most the budget plus one envelope, not every queued message (10 MB here; up to
    501 x 273 kB = 140 MB before)."""
    relay, bob, _, size = queue_large_envelopes(storage, 40)
    token = bob.devices[0].token
    for job in (relay.fetch(token, 0, 500), relay.pending(token, 0, 100)):
        recorders: list[RecordingTx] = []

        def recorded(tx: Tx, job: Callable[[Tx], Any] = job) -> Any:
            recorders.append(RecordingTx(tx))
            return job(cast(Tx, recorders[-1]))

        storage.run(recorded)
        [recorder] = recorders
        assert len(recorder.answers) == 1
        assert 0 < sum(len(e) for _, e in recorder.answers[0]) <= FETCH_BUDGET + size
        assert recorder.peaks[0] <= FETCH_BUDGET + 2 * size


def test_an_envelope_alone_over_the_byte_budget_says_more_only_when_a_message_follows(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """[REQ-RL-35] An envelope larger than the page's byte budget goes alone, and its page
    says more only if a message really was left out: a single such envelope said more=True
    before, with nothing else queued (the storage stopped at the first row, so the rules could
    not tell). The storage reads at most the big envelope and the one after it. (A send's
    envelope is at most MAX_ENVELOPE_SIZE, about 273 kB, so the 4 MiB budget is lowered here.)"""
    budget = 100_000
    monkeypatch.setattr(rules, "_MAX_FETCH_BYTES", budget)
    relay = make_relay(storage)
    alice, bob = User.make("alice"), User.make("bob")
    register(relay, storage, alice)
    register(relay, storage, bob)
    sender, token = alice.devices[0], bob.devices[0].token
    big, small = os.urandom(16), os.urandom(16)
    storage.run(relay.send(sender.token, send_body(bob, big, sender, b"b" * 2 * budget)))
    page = dec(storage.run(relay.fetch(token, 0, 500)))
    [(big_id, envelope)] = page[0]
    assert (dec(envelope)[6], page[1]) == (big, False)
    assert [dec(e)[6] for _, e in storage.run(relay.pending(token, 0, 100))] == [big]

    storage.run(relay.send(sender.token, send_body(bob, small, sender)))
    for job in (relay.fetch(token, 0, 500), relay.pending(token, 0, 100)):
        recorders: list[RecordingTx] = []

        def recorded(tx: Tx, job: Callable[[Tx], Any] = job) -> Any:
            recorders.append(RecordingTx(tx))
            return job(cast(Tx, recorders[-1]))

        value = storage.run(recorded)
        rows = dec(value)[0] if isinstance(value, bytes) else value
        assert [dec(e)[6] for _, e in rows] == [big]
        assert len(recorders[0].answers[0]) <= 2
    assert dec(storage.run(relay.fetch(token, 0, 500)))[1] is True
    page = dec(storage.run(relay.fetch(token, big_id, 500)))
    assert ([dec(e)[6] for _, e in page[0]], page[1]) == ([small], False)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xff",
        codec.encode([1, 2]),
        codec.encode({0: 1}),
        codec.encode({0: b"bob", 1: b"x", 2: []}),
    ],
)
def test_malformed_bodies_raise_only_typed_errors(
    relay: Relay, storage: Storage, body: bytes
) -> None:
    """[REQ-RL-18]"""
    alice = User.make("alice")
    register(relay, storage, alice)
    token = alice.devices[0].token
    calls: list[Callable[[], object]] = [
        lambda: relay.challenge(body),
        lambda: relay.login(body),
        lambda: relay.publish_device_list(body),
        lambda: relay.claim(token, body),
        lambda: relay.send(token, body),
        lambda: relay.ack(token, body),
        lambda: relay.check_upload(storage.run(relay.auth_job(token)), body),
    ]
    for call in calls:
        with pytest.raises(E2EEError):
            call()


def test_a_user_id_with_u0000_is_refused_on_every_backend(relay: Relay, storage: Storage) -> None:
    """[REQ-RL-44] PostgreSQL's text cannot hold U+0000: registering such an id failed there
    as a storage error (503, so a client would retry it for ever) while SQLite and the memory
    storage registered it. Every backend refuses it now, as a malformed request, and stores
    nothing: in a device list, a challenge, a claim's target, a send's recipient."""
    nul = User.make("nul\x00user")
    before = snapshot(storage)
    with pytest.raises(RelayBadRequestError) as listed:
        storage.run(relay.publish_device_list(nul.list_body()))
    assert listed.value.code == "malformed"
    with pytest.raises(RelayBadRequestError):
        relay.challenge(codec.encode({0: b"nul\x00user", 1: 1}))
    assert snapshot(storage) == before
    alice, bob = User.make("alice"), User.make("bob")
    register(relay, storage, alice)
    register(relay, storage, bob)
    token = alice.devices[0].token
    body = send_body(bob, os.urandom(16), alice.devices[0]).replace(b"bob", b"b\x00b")
    for refusal in (
        lambda: storage.run(relay.claim(token, codec.encode({0: b"b\x00b", 1: os.urandom(16)}))),
        lambda: storage.run(relay.send(token, body)),
        lambda: api.user_query("b\x00b"),
    ):
        with pytest.raises(RelayBadRequestError) as refused_id:
            refusal()
        assert refused_id.value.code == "malformed"
