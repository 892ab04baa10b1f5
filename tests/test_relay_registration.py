"""Registration tickets (spec/relay.md section 4, REQ-RL-38..40): a relay configured with a
platform's registration authority registers a new user id only with a ticket that authority
signed for this relay, this user id and this user key; open relays are unchanged."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from nacl import bindings

from e2ee.client import Client
from e2ee.errors import RelayBadRequestError, RelayForbiddenError
from e2ee.identity import UserIdentity
from e2ee.relay import tickets
from e2ee.relay.client import RelayClient
from e2ee.relay.memory import MemoryStorage
from e2ee.relay.rules import Relay, RelayConfig
from e2ee.relay.storage import Storage
from e2ee.wire import codec
from tests.relay_support import BACKENDS, Clock, User, make_relay, make_storage, threaded_relay
from tests.test_relay_rules import refused

ORIGIN = "https://relay.example:443"
AUTHORITY_SEED = hashlib.sha256(b"e2ee test registration authority").digest()
AUTHORITY_KEY, _ = bindings.crypto_sign_seed_keypair(AUTHORITY_SEED)
# What the spec says a ticket's signature covers, spelled out here rather than taken from the
# code under test: the label, then the encoded ticket body.
LABEL = b"e2ee/v1/sig/registration-ticket\x00"


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
    return make_relay(storage, clock, origin=ORIGIN, registration_key=AUTHORITY_KEY)


@pytest.fixture
def memory() -> MemoryStorage:
    return MemoryStorage()


@pytest.fixture
def checker(memory: MemoryStorage, clock: Clock) -> Relay:
    """For refusals made before any storage is touched: one backend is enough."""
    return make_relay(memory, clock, origin=ORIGIN, registration_key=AUTHORITY_KEY)


def ticket_for(
    user: User,
    now: float,
    *,
    seed: bytes = AUTHORITY_SEED,
    origin: str = ORIGIN,
    name: str | None = None,
    key: bytes | None = None,
    issued: int | None = None,
    lifetime: int = 600,
) -> bytes:
    start = int(now) if issued is None else issued
    return tickets.issue_ticket(
        seed,
        origin=origin,
        user_id=name or user.name,
        user_key=key or user.identity.public_key,
        issued=start,
        expires=start + lifetime,
    )


def body(user: User, ticket: bytes | None) -> bytes:
    fields = {0: user.signed_list()}
    if ticket is not None:
        fields[1] = ticket
    return codec.encode(fields)


def test_a_ticket_is_the_specified_bytes() -> None:
    """[REQ-RL-38] Known answer, built here with cbor2 and libsodium from the CDDL of
    spec/relay.md: canonical CBOR maps with integer keys, the signature over the label and the
    encoded body (Ed25519 is deterministic, so the bytes are fixed)."""
    user_key = bytes(range(32))
    inner = cbor2.dumps(
        {0: 1, 1: 38, 2: ORIGIN.encode(), 3: b"alice", 4: user_key, 5: 1000, 6: 2000},
        canonical=True,
    )
    signature = bindings.crypto_sign(
        LABEL + inner, bindings.crypto_sign_seed_keypair(AUTHORITY_SEED)[1]
    )[:64]
    expected = cbor2.dumps({0: 1, 1: 39, 2: inner, 3: signature}, canonical=True)
    made = tickets.issue_ticket(
        AUTHORITY_SEED, origin=ORIGIN, user_id="alice", user_key=user_key, issued=1000, expires=2000
    )
    assert made == expected
    assert tickets.authority_public_key(AUTHORITY_SEED) == AUTHORITY_KEY
    read = tickets.read_ticket(expected, AUTHORITY_KEY)
    assert (read.origin, read.user_id, read.user_key, read.issued, read.expires) == (
        ORIGIN,
        "alice",
        user_key,
        1000,
        2000,
    )
    assert user_key.hex() not in repr(read)


def test_without_a_ticket_a_new_user_is_refused(relay: Relay, storage: Storage) -> None:
    """[REQ-RL-39]"""
    alice = User.make("alice")
    refused(
        storage,
        RelayForbiddenError,
        relay.publish_device_list(body(alice, None)),
        "ticket_required",
    )


def test_a_valid_ticket_registers_and_later_lists_need_none(
    relay: Relay, storage: Storage, clock: Clock
) -> None:
    """[REQ-RL-39] The ticket admits the user key once; afterwards the key signs newer lists
    alone, and another key for the same user id is refused even with a ticket of its own."""
    alice = User.make("alice")
    _, created = storage.run(relay.publish_device_list(body(alice, ticket_for(alice, clock()))))
    assert created
    alice.counter = 2
    _, created = storage.run(relay.publish_device_list(body(alice, None)))
    assert not created
    other = User("alice", UserIdentity.generate(), alice.devices, counter=3)
    refused(
        storage,
        RelayForbiddenError,
        relay.publish_device_list(body(other, ticket_for(other, clock()))),
        "user_key_mismatch",
    )


@pytest.mark.parametrize(
    "case",
    [
        "other authority",
        "other relay",
        "other user id",
        "other user key",
        "expired",
        "not yet valid",
        "too long",
    ],
)
def test_a_ticket_that_does_not_fit_is_refused_before_the_storage(
    checker: Relay, memory: MemoryStorage, clock: Clock, case: str
) -> None:
    """[REQ-RL-39] [REQ-RL-40] Every mismatch is 403 bad_ticket, refused before a job exists
    (so nothing is stored); the same user then registers with a fitting ticket."""
    alice = User.make("alice")
    now = clock()
    made = {
        "other authority": lambda: ticket_for(alice, now, seed=os.urandom(32)),
        "other relay": lambda: ticket_for(alice, now, origin="https://evil.example:443"),
        "other user id": lambda: ticket_for(alice, now, name="alicia"),
        "other user key": lambda: ticket_for(alice, now, key=UserIdentity.generate().public_key),
        "expired": lambda: ticket_for(alice, now, issued=int(now) - 600, lifetime=600),
        "not yet valid": lambda: ticket_for(alice, now, issued=int(now) + 301),
        "too long": lambda: ticket_for(alice, now, lifetime=24 * 3600 + 1),
    }[case]()
    with pytest.raises(RelayForbiddenError) as info:
        checker.publish_device_list(body(alice, made))
    assert info.value.code == "bad_ticket"
    memory.run(checker.publish_device_list(body(alice, ticket_for(alice, now))))


@pytest.mark.parametrize(
    ("case", "last_valid"),
    [("expires", -1), ("issued", 300), ("lifetime", 24 * 3600)],
)
def test_the_validity_bounds_are_inclusive_where_the_spec_says(
    relay: Relay, storage: Storage, clock: Clock, case: str, last_valid: int
) -> None:
    """[REQ-RL-40] A ticket is valid from issued - 300 s until just before expires, for at
    most max_ticket_lifetime (24 h): each boundary's last valid value is accepted."""
    alice = User.make("alice")
    now = int(clock())
    if case == "expires":
        made = ticket_for(alice, now, issued=now - 600, lifetime=600 - last_valid)
    elif case == "issued":
        made = ticket_for(alice, now, issued=now + last_valid)
    else:
        made = ticket_for(alice, now, lifetime=last_valid)
    storage.run(relay.publish_device_list(body(alice, made)))


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1],
        lambda t: t + b"\x00",
        lambda t: cbor2.dumps([t]),
        lambda t: cbor2.dumps({**cbor2.loads(t), 0: 2}),
        lambda t: cbor2.dumps({**cbor2.loads(t), 1: 33}),
        lambda t: cbor2.dumps({**cbor2.loads(t), 4: b""}),
        lambda t: cbor2.dumps({**cbor2.loads(t), 3: cbor2.loads(t)[3][:63]}),
        lambda t: b"\x00" * 2000,
    ],
)
def test_a_malformed_ticket_is_a_bad_request(checker: Relay, clock: Clock, mangle: object) -> None:
    """[REQ-RL-40] Anything that is not a signed ticket of version 1 is 400 bad_ticket, a
    typed error whatever the bytes (a too long one included)."""
    alice = User.make("alice")
    assert callable(mangle)
    with pytest.raises(RelayBadRequestError) as info:
        checker.publish_device_list(body(alice, mangle(ticket_for(alice, clock()))))
    assert info.value.code == "bad_ticket"


def signed(inner: dict[int, object]) -> bytes:
    """A ticket made by hand (cbor2 and libsodium), validly signed by the authority."""
    encoded = cbor2.dumps(inner, canonical=True)
    secret = bindings.crypto_sign_seed_keypair(AUTHORITY_SEED)[1]
    signature = bindings.crypto_sign(LABEL + encoded, secret)[:64]
    return cbor2.dumps({0: 1, 1: 39, 2: encoded, 3: signature}, canonical=True)


@pytest.mark.parametrize(
    "change",
    [
        {5: 1_700_000_100, 6: 1_700_000_100},  # issued == expires
        {5: 1_700_000_100, 6: 1_700_000_050},  # issued after expires
        {5: -1},
        {5: True},
        {6: 2**32},  # past the largest time a ticket may carry
        {3: b""},
        {3: b"\xff"},
        {2: b""},
        {2: b"\xc3"},
        {4: b"\x01" * 31},
        {7: 0},
        {0: 2},
        {1: 33},
    ],
)
def test_a_validly_signed_ticket_with_a_malformed_body_is_a_bad_request(
    checker: Relay, clock: Clock, change: dict[int, object]
) -> None:
    """[REQ-RL-40] The authority's signature does not make a body well formed: each field is
    checked (issued < expires among them, or a ticket would be valid for a negative time)."""
    alice = User.make("alice")
    inner: dict[int, object] = {
        0: 1,
        1: 38,
        2: ORIGIN.encode(),
        3: b"alice",
        4: alice.identity.public_key,
        5: int(clock()),
        6: int(clock()) + 600,
    }
    with pytest.raises(RelayBadRequestError) as info:
        checker.publish_device_list(body(alice, signed({**inner, **change})))
    assert info.value.code == "bad_ticket"
    checker.publish_device_list(body(alice, signed(inner)))  # the unchanged body is accepted


def test_a_flipped_bit_anywhere_in_the_signed_body_is_refused(checker: Relay, clock: Clock) -> None:
    """[REQ-RL-40] The signature covers the whole body (each byte of field 2)."""
    alice = User.make("alice")
    made = ticket_for(alice, clock())
    outer = cbor2.loads(made)
    inner = outer[2]
    for i in range(len(inner)):
        flipped = inner[:i] + bytes([inner[i] ^ 0x01]) + inner[i + 1 :]
        forged = cbor2.dumps({**outer, 2: flipped}, canonical=True)
        with pytest.raises((RelayForbiddenError, RelayBadRequestError)) as info:
            checker.publish_device_list(body(alice, forged))
        assert info.value.code == "bad_ticket"


def test_an_open_relay_refuses_a_ticket_and_registers_without_one(storage: Storage) -> None:
    """[REQ-RL-39] Without an authority the relay cannot check a ticket, so it does not
    pretend to: a request with one is 400 bad_ticket; without one the first list registers."""
    relay = make_relay(storage, origin=ORIGIN)
    alice = User.make("alice")
    with pytest.raises(RelayBadRequestError) as info:
        relay.publish_device_list(body(alice, ticket_for(alice, Clock()())))
    assert info.value.code == "bad_ticket"
    _, created = storage.run(relay.publish_device_list(body(alice, None)))
    assert created


@pytest.mark.parametrize("key", [b"", b"\x01" * 31, b"\x00" * 32, "00" * 32])
def test_a_registration_key_that_is_not_a_public_key_is_refused(key: object) -> None:
    with pytest.raises(ValueError, match="registration_key"):
        RelayConfig(registration_key=key)  # type: ignore[arg-type]


def test_issue_ticket_refuses_what_no_relay_would_accept() -> None:
    key = bytes(32)
    changes: list[dict[str, Any]] = [
        {"issued": 10, "expires": 10},
        {"issued": -1, "expires": 10},
        {"issued": 1, "expires": 2**32},
        {"user_id": ""},
        {"user_id": "x" * 257},
        {"user_key": b"\x01"},
        {"origin": ""},
    ]
    for change in changes:
        args: dict[str, Any] = {
            "origin": ORIGIN,
            "user_id": "a",
            "user_key": key,
            "issued": 1,
            "expires": 2,
        }
        with pytest.raises(ValueError, match=r"bytes|issued"):
            tickets.issue_ticket(AUTHORITY_SEED, **{**args, **change})
    with pytest.raises(ValueError, match="seed"):
        tickets.issue_ticket(
            b"short", origin=ORIGIN, user_id="a", user_key=key, issued=1, expires=2
        )


def test_the_relay_client_registers_with_a_ticket_over_http(tmp_path: Path) -> None:
    """[REQ-RL-39] End to end over a real uvicorn server: the client layer's user key goes to
    the platform, its ticket comes back, and the relay client sends it with the list."""
    with threaded_relay(registration_key=AUTHORITY_KEY) as server:
        client = Client.create(tmp_path / "alice.sqlite", "alice", policy="block")
        try:
            with RelayClient(server.url, client) as relay:
                with pytest.raises(RelayForbiddenError) as info:
                    relay.publish_device_list()
                assert info.value.code == "ticket_required"
                user_key = client.user_key
                assert user_key is not None
                now = int(server.relay.now())
                made = tickets.issue_ticket(
                    AUTHORITY_SEED,
                    origin=server.relay.config.origin,
                    user_id="alice",
                    user_key=user_key,
                    issued=now,
                    expires=now + 600,
                )
                assert relay.publish_device_list(ticket=made)
                relay.publish_prekeys()
        finally:
            client.close()


@pytest.mark.parametrize("field", [b"not a ticket", 7, None, [b"x"]])
def test_a_relay_without_an_authority_refuses_any_ticket_field_as_bad_ticket(
    memory: MemoryStorage, clock: Clock, field: object
) -> None:
    """[REQ-RL-39] A relay without a registration authority refuses a ticket, whatever the
    field holds, with bad_ticket (the caller expects its registration to be checked, and it
    would not be): a field that was not a byte string was a plain `malformed` (review)."""
    open_relay = make_relay(memory, clock, origin=ORIGIN)
    alice = User.make("alice")
    data = codec.encode({0: alice.signed_list(), 1: field})
    with pytest.raises(RelayBadRequestError) as info:
        open_relay.publish_device_list(data)
    assert info.value.code == "bad_ticket"
    assert memory.run(lambda tx: tx.device_list("alice")) is None
