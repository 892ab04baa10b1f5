"""Client-layer requirements of spec/client.md that no other test checks directly.

Every test runs on real SQLite files under ``tmp_path`` (through :class:`tests.client_support.World`
or :meth:`Client.create`); each names the requirement it checks.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from e2ee import safety
from e2ee.account import Account
from e2ee.client import Client, sessions
from e2ee.client.devices import LinkApproval, LinkRequest, normalize_code
from e2ee.client.envelope import Content, Envelope
from e2ee.crypto import primitives
from e2ee.errors import (
    AuthenticationError,
    DeviceListError,
    LinkError,
    LocalError,
    NoSessionError,
    StateError,
    StoreError,
    UnknownDeviceError,
    UntrustedIdentityError,
)
from e2ee.identity import SignedDeviceList, UserIdentity
from e2ee.limits import HEADER_NONCE_SIZE, TYPE_CONTENT, TYPE_SEALED_STATE
from e2ee.session import Session
from e2ee.wire import codec
from e2ee.wire.messages import PreKeyBundle
from tests.client_support import World, snapshot

STORE_KEY = bytes(range(32))


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def user_identity_of(client: Client) -> UserIdentity:
    (state,) = client.store.conn.execute("SELECT state FROM user_identity").fetchone()
    return UserIdentity.from_bytes(state, key=client.store.key)


def stored_counter(client: Client, user: str) -> int:
    (counter,) = client.store.conn.execute(
        "SELECT counter FROM device_lists WHERE user_id = ?", (user,)
    ).fetchone()
    return int(counter)


def converse(world: World, alice: Client, bob: Client) -> None:
    """One message each way: both ends hold an established session."""
    world.send(alice, "bob", b"hello")
    assert len(world.deliver(bob)) == 1
    world.send(bob, "alice", b"hello back")
    assert len(world.deliver(alice)) == 1


# --- store -----------------------------------------------------------------------------------


def test_store_runs_in_wal_mode_with_full_synchronous(tmp_path: Path) -> None:
    """REQ-CL-01"""
    path = tmp_path / "alice.sqlite"
    client = Client.create(path, "alice")
    conn = client.store.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    # WAL is a property of the file: another connection (another process) sees it too.
    other = sqlite3.connect(path)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        other.close()
    assert path.with_name(path.name + "-wal").exists()


def test_the_store_zeroes_deleted_content_even_if_sqlite_would_not(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """REQ-CL-43: a SQLite build whose default is secure_delete off (SQLite's own default) is
    simulated by turning it off on every new connection. What a plain store deleted (a taken
    inbox body, the link code once linked) must still be gone from the database file."""
    connect = sqlite3.connect

    def connect_without_secure_delete(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn: sqlite3.Connection = connect(*args, **kwargs)
        conn.execute("PRAGMA secure_delete = OFF")
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect_without_secure_delete)
    [alice] = world.user("alice")
    [bob] = world.user("bob")
    new = Client.create_linked(world.path("bob"), "bob")
    code = new.link_code.encode()
    new.complete_link(bob.approve_link(new.link_request(), new.link_code))
    world.send(alice, "bob", b"a body that is deleted once taken")
    assert [m.body for m in world.deliver(bob)] == [b"a body that is deleted once taken"]
    assert len(bob.inbox(take=True)) == 1

    for client, deleted in [(bob, b"a body that is deleted once taken"), (new, code)]:
        conn = client.store.conn
        assert conn.execute("PRAGMA secure_delete").fetchone()[0] == 1
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        path = Path(conn.execute("PRAGMA database_list").fetchone()[2])
        assert deleted not in path.read_bytes()


def test_a_store_that_cannot_use_wal_is_refused() -> None:
    """REQ-CL-01: SQLite keeps an in-memory database in journal mode "memory"; the store must
    refuse it rather than run without the durability it promises."""
    with pytest.raises(StoreError):
        Client.create(Path(":memory:"), "alice")


def test_encrypted_store_seals_account_session_and_user_identity(world: World) -> None:
    """REQ-CL-02"""
    alice = Client.create(world.path("alice"), "alice", key=STORE_KEY)
    world.publish(alice)
    [bob] = world.user("bob")
    converse(world, alice, bob)
    conn = alice.store.conn
    (account,) = conn.execute("SELECT state FROM account").fetchone()
    (identity,) = conn.execute("SELECT state FROM user_identity").fetchone()
    session_states = [row[0] for row in conn.execute("SELECT state FROM sessions")]
    assert session_states
    for blob in [account, identity, *session_states]:
        assert codec.decode(blob, max_size=len(blob))[1] == TYPE_SEALED_STATE
    with pytest.raises(StateError):
        Account.from_bytes(account)
    with pytest.raises(StateError):
        UserIdentity.from_bytes(identity)
    with pytest.raises(StateError):
        Session.from_bytes(session_states[0])
    assert Account.from_bytes(account, key=STORE_KEY).identity_key == alice.device_key
    assert Session.from_bytes(session_states[0], key=STORE_KEY).peer_identity_key == (
        bob.device_key
    )
    with pytest.raises(TypeError):
        Client.create(world.path("carol"), "carol", key=bytes(31))


def test_inbox_bodies_are_sealed_under_the_documented_subkey_and_associated_data(
    world: World,
) -> None:
    """REQ-CL-03"""
    bob = Client.create(world.path("bob"), "bob", key=STORE_KEY)
    world.publish(bob)
    [alice] = world.user("alice")
    world.send(alice, "bob", b"the body")
    [message] = world.deliver(bob)
    (sealed,) = bob.store.conn.execute("SELECT body FROM inbox").fetchone()
    assert b"the body" not in sealed
    subkey = primitives.hkdf_sha256(bytes(32), STORE_KEY, b"e2ee/v1/client-store/inbox", 32)
    ad = b"alice\x001\x00" + message.message_id
    nonce, ciphertext = sealed[:HEADER_NONCE_SIZE], sealed[HEADER_NONCE_SIZE:]
    assert primitives.xchacha20poly1305_decrypt(subkey, nonce, ciphertext, ad) == b"the body"
    # The body is bound to its row: moved to another sender device it no longer opens.
    with bob.store.transaction() as conn:
        conn.execute("UPDATE inbox SET sender_device = 2")
    with pytest.raises(StateError):
        bob.inbox()


def test_every_inbox_body_is_sealed_under_a_fresh_nonce(world: World) -> None:
    """[REQ-CL-03] Each sealed inbox body starts with its own random 24-byte nonce: two
    messages with the same body, and the same body sealed twice under the same associated
    data, never share a nonce (a repeated XChaCha20-Poly1305 nonce under K_inbox would give
    away the XOR of the bodies and the authentication key)."""
    bob = Client.create(world.path("bob"), "bob", key=STORE_KEY)
    world.publish(bob)
    [alice] = world.user("alice")
    for _ in range(2):
        world.send(alice, "bob", b"the same body")
    assert [m.body for m in world.deliver(bob)] == [b"the same body"] * 2
    sealed = [row[0] for row in bob.store.conn.execute("SELECT body FROM inbox ORDER BY seq")]
    subkey = primitives.hkdf_sha256(bytes(32), STORE_KEY, b"e2ee/v1/client-store/inbox", 32)
    nonces = []
    for blob, message in zip(sealed, bob.inbox(), strict=True):
        nonce = blob[:24]
        ad = b"alice\x001\x00" + message.message_id
        assert primitives.xchacha20poly1305_decrypt(subkey, nonce, blob[24:], ad) == (
            b"the same body"
        )
        nonces.append(nonce)
    again = [bob.store.seal(b"the same body", b"one ad") for _ in range(2)]
    nonces += [blob[:24] for blob in again]
    assert len(set(nonces)) == 4
    assert bytes(24) not in nonces


def test_every_change_is_one_transaction_and_an_error_rolls_it_back(world: World) -> None:
    """REQ-CL-04"""
    [alice] = world.user("alice")
    [bob] = world.user("bob")
    before = snapshot(bob)

    def half_done_change() -> None:
        with bob.store.transaction() as conn:
            conn.execute("DELETE FROM account")
            conn.execute("INSERT INTO events (event) VALUES (x'00')")
            raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        half_done_change()
    assert snapshot(bob) == before
    # The write lock is taken when the transaction begins, not at its first write: another
    # process cannot start a change meanwhile.
    path = bob.store.conn.execute("PRAGMA database_list").fetchone()[2]
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        with (
            bob.store.transaction(),
            pytest.raises(sqlite3.OperationalError, match="locked"),
        ):
            other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()
    assert alice.device_id == 1


def test_session_state_is_never_cached_between_transactions(world: World) -> None:
    """REQ-CL-05: two clients on one store take turns; each sees the other's session state."""
    [alice] = world.user("alice")
    [bob] = world.user("bob")
    converse(world, alice, bob)
    path = alice.store.conn.execute("PRAGMA database_list").fetchone()[2]
    twin = Client.open(path, prekey_policy=alice.prekey_policy)
    for index in range(6):
        sender = alice if index % 2 == 0 else twin
        world.send(sender, "bob", b"turn %d" % index)
    # A stale copy of the session would reuse a message key: Bob would refuse a message.
    assert [m.body for m in world.deliver(bob)] == [b"turn %d" % i for i in range(6)]
    assert len(alice.sessions_with("bob", 1)) == 1


# --- the receive transaction -------------------------------------------------------------------


def test_envelope_for_another_device_or_from_this_device_is_refused(world: World) -> None:
    """REQ-CL-06"""
    [alice] = world.user("alice")
    bob = world.user("bob", devices=2)
    [envelope] = [e for e in alice.send("bob", b"x", world.directory) if e.recipient_device == 1]
    with pytest.raises(UnknownDeviceError, match="not addressed"):
        bob[1].receive(envelope.to_bytes())
    looped = Envelope("bob", 1, "bob", 1, envelope.message_id, envelope.payload)
    with pytest.raises(UnknownDeviceError, match="this device"):
        bob[0].receive(looped.to_bytes())
    # Before the payload is looked at: one that is not a wire message does not change the answer.
    garbage = Envelope("alice", 1, "bob", 1, envelope.message_id, b"\x00garbage")
    with pytest.raises(UnknownDeviceError, match="not addressed"):
        bob[1].receive(garbage.to_bytes())
    assert bob[0].receive(envelope.to_bytes()).message is not None


def test_the_addressing_is_checked_before_the_duplicate_check(world: World) -> None:
    """[REQ-CL-06] Bob's device 2 processed its copy of a message; the copy for device 1
    (same sender, same message id) handed to device 2 is refused as not addressed to it
    (UnknownDeviceError), not reported as a duplicate that a transport would drop."""
    [alice] = world.user("alice")
    bob = world.user("bob", devices=2)
    copies = {e.recipient_device: e for e in alice.send("bob", b"x", world.directory)}
    assert copies[1].message_id == copies[2].message_id
    assert bob[1].receive(copies[2].to_bytes()).message is not None
    assert bob[1].receive(copies[2].to_bytes()).duplicate  # its own copy again: a duplicate
    before = snapshot(bob[1])
    with pytest.raises(UnknownDeviceError, match="not addressed"):
        bob[1].receive(copies[1].to_bytes())
    assert snapshot(bob[1]) == before
    assert bob[0].receive(copies[1].to_bytes()).message is not None


def test_a_processed_envelope_is_a_duplicate_and_is_not_decrypted(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """REQ-CL-07"""
    [alice] = world.user("alice")
    [bob] = world.user("bob")
    [initial] = alice.send("bob", b"first", world.directory)
    [normal] = alice.send("bob", b"second", world.directory)
    assert bob.receive(initial.to_bytes()).message is not None
    assert bob.receive(normal.to_bytes()).message is not None
    before = snapshot(bob)

    calls: list[str] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        calls.append("decrypt")
        raise AssertionError("a duplicate must not be decrypted")

    monkeypatch.setattr(Session, "decrypt", refuse)
    monkeypatch.setattr(Account, "accept_session", refuse)
    for envelope in (initial, normal):
        result = bob.receive(envelope.to_bytes())
        assert result.duplicate
        assert result.message is None
        assert result.events == ()
    # Same sender and message id with another payload: still a duplicate, never opened.
    swapped = Envelope("alice", 1, "bob", 1, initial.message_id, normal.payload)
    assert bob.receive(swapped.to_bytes()).duplicate
    # Nor parsed: a payload that is not a wire message at all is a duplicate too.
    garbage = Envelope("alice", 1, "bob", 1, normal.message_id, b"\x00garbage")
    assert bob.receive(garbage.to_bytes()).duplicate
    assert calls == []
    assert snapshot(bob) == before


def test_a_duplicate_does_not_accept_the_device_list_it_carries(world: World) -> None:
    """[REQ-CL-07] A processed envelope replayed with the sender's newer signed list attached
    is a duplicate before the list is looked at: the list is not accepted, no event is
    stored, the store is byte-identical."""
    [alice] = world.user("alice")
    [bob] = world.user("bob")
    [envelope] = alice.send("bob", b"hi", world.directory)
    assert bob.receive(envelope.to_bytes()).message is not None
    bob.take_events()
    world.link(alice, "alice")  # alice's list is now newer, with a second device
    newer = world.directory.device_list("alice")
    assert newer is not None
    assert newer != envelope.sender_device_list
    replay = dataclasses.replace(envelope, sender_device_list=newer)
    before = snapshot(bob)
    result = bob.receive(replay.to_bytes())
    assert (result.duplicate, result.message, result.events) == (True, None, ())
    assert snapshot(bob) == before
    assert stored_counter(bob, "alice") == 1
    # The list itself is acceptable: delivered on its own, it is taken.
    bob.process_device_list(newer, "alice")
    assert stored_counter(bob, "alice") == 2


def test_sender_device_must_be_listed_before_anything_is_decrypted(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """REQ-CL-08"""
    [alice] = world.user("alice")
    [bob] = world.user("bob")
    [envelope] = alice.send("bob", b"x", world.directory)
    decrypted: list[bool] = []
    original = Account.accept_session

    def spy(self: Account, *args: Any, **kwargs: Any) -> Any:
        decrypted.append(True)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Account, "accept_session", spy)
    forged = dataclasses.replace(envelope, sender_device=5)  # with Alice's genuine list
    with pytest.raises(UnknownDeviceError, match="not in the sender's signed device list"):
        bob.receive(forged.to_bytes())
    assert decrypted == []
    assert bob.receive(envelope.to_bytes()).message is not None
    assert decrypted == [True]


def test_a_session_whose_peer_key_is_not_the_listed_device_key_is_refused(world: World) -> None:
    """[REQ-CL-08] After decrypting, the session's peer identity key must be the key the
    sender's list gives for the sender device: Mallory, whose key is on no list, claims Bob's
    bundle and sends a well-formed initial message in an envelope claiming alice/1 (a listed
    device). Bob refuses it with UnknownDeviceError and keeps nothing of it."""
    [alice] = world.user("alice")
    [bob] = world.user("bob")
    world.send(alice, "bob", b"hello")
    assert [m.body for m in world.deliver(bob)] == [b"hello"]  # Bob holds Alice's list
    mallory = Account.generate()
    assert mallory.identity_key != alice.device_key
    bundle = world.directory.bundle("bob", 1)
    assert bundle is not None
    session = mallory.start_session(PreKeyBundle.from_bytes(bundle))
    message_id = b"\x42" * 16
    wire = session.encrypt(
        Content(message_id, "bob", b"send the money to mallory", "alice", 1).to_bytes()
    )
    forged = Envelope("alice", 1, "bob", 1, message_id, wire)
    before = snapshot(bob)
    with pytest.raises(UnknownDeviceError, match="listed device key"):
        bob.receive(forged.to_bytes())
    assert snapshot(bob) == before
    assert [m.body for m in bob.inbox()] == [b"hello"]


def test_routing_fields_rewritten_in_transit_are_refused(world: World) -> None:
    """REQ-CL-09"""
    [alice] = world.user("alice")
    [bob] = world.user("bob")
    converse(world, alice, bob)
    [envelope] = alice.send("bob", b"x", world.directory)
    renamed = Envelope("alice", 1, "bob", 1, bytes(16), envelope.payload)
    with pytest.raises(AuthenticationError, match="message id"):
        bob.receive(renamed.to_bytes())
    # Content for another conversation over Alice's session with Bob.
    message_id = b"\x07" * 16
    with alice.store.transaction() as conn:
        session = sessions.active(conn, alice.store, "bob", 1)
        assert session is not None
        wire = session.encrypt(Content(message_id, "carol", b"not for bob", "alice", 1).to_bytes())
        sessions.save(conn, alice.store, "bob", 1, session, make_active=False)
    with pytest.raises(AuthenticationError, match="another user"):
        bob.receive(Envelope("alice", 1, "bob", 1, message_id, wire).to_bytes())
    message = bob.receive(envelope.to_bytes()).message
    assert message is not None
    assert message.body == b"x"
    assert [m.body for m in bob.inbox()][-1] == b"x"


def test_a_relay_cannot_hand_a_first_message_over_as_another_users(world: World) -> None:
    """REQ-CL-09 (review finding): device keys are public (every bundle carries one), so a relay
    can register a user id of its own whose signed list names Bob's device key, rewrite the
    sender of Bob's first message to that user and attach that list. The session's peer key
    then matched the list's key and Alice delivered Bob's words as mallory's. The content
    names its sender now: Alice refuses the message and keeps nothing of it, and the genuine
    envelope is still delivered afterwards."""
    [alice] = world.user("alice")
    [bob] = world.user("bob")
    [envelope] = bob.send("alice", b"I resign. -- Bob", world.directory)
    relay_user_key = UserIdentity.generate()
    listed = relay_user_key.sign_device_list("mallory", 1, {7: bob.device_key}).to_bytes()
    rewritten = dataclasses.replace(
        envelope, sender_user="mallory", sender_device=7, sender_device_list=listed
    )
    before = snapshot(alice)
    with pytest.raises(AuthenticationError, match="sender differs"):
        alice.receive(rewritten.to_bytes())
    assert snapshot(alice) == before
    message = alice.receive(envelope.to_bytes()).message
    assert message is not None
    assert (message.sender_user, message.sender_device, message.body) == (
        "bob",
        1,
        b"I resign. -- Bob",
    )


def test_content_of_version_1_which_names_no_sender_is_refused(world: World) -> None:
    """REQ-CL-09: version 1 content had no sender fields; a receiver refuses it rather than
    deliver a message whose sender nothing authenticated."""
    [alice] = world.user("alice")
    [bob] = world.user("bob")
    converse(world, alice, bob)
    message_id = b"\x09" * 16
    old = codec.encode({0: 1, 1: TYPE_CONTENT, 2: message_id, 3: b"bob", 4: b"hi"})
    with alice.store.transaction() as conn:
        session = sessions.active(conn, alice.store, "bob", 1)
        assert session is not None
        wire = session.encrypt(old)
        sessions.save(conn, alice.store, "bob", 1, session, make_active=False)
    before = snapshot(bob)
    with pytest.raises(AuthenticationError, match="content is malformed"):
        bob.receive(Envelope("alice", 1, "bob", 1, message_id, wire).to_bytes())
    assert snapshot(bob) == before


def test_a_failed_receive_changes_nothing(world: World) -> None:
    """REQ-CL-12: a tampered initial message that carries a device list leaves no trace."""
    [alice] = world.user("alice")
    [bob] = world.user("bob")
    [envelope] = alice.send("bob", b"x", world.directory)
    assert envelope.sender_device_list is not None
    payload = bytearray(envelope.payload)
    payload[-1] ^= 1
    tampered = dataclasses.replace(envelope, payload=bytes(payload))
    before = snapshot(bob)
    with pytest.raises(AuthenticationError):
        bob.receive(tampered.to_bytes())
    assert snapshot(bob) == before
    assert bob.identity_key_of("alice") is None  # the attached list was not kept either
    assert bob.take_events() == []
    result = bob.receive(envelope.to_bytes())
    assert result.message is not None
    assert {e.kind for e in result.events} == {"identity_new", "session_new"}


# --- device lists -------------------------------------------------------------------------------


def test_an_older_list_attached_to_an_envelope_is_ignored_not_refused(world: World) -> None:
    """REQ-CL-16"""
    [alice] = world.user("alice")
    bob = world.user("bob")
    [initial] = bob[0].send("alice", b"sent with list 1", world.directory)
    world.link(bob[0], "bob")  # Bob's list now has counter 2
    newest = world.directory.device_list("bob")
    assert newest is not None
    alice.process_device_list(newest, "bob")
    assert stored_counter(alice, "bob") == 2
    assert initial.sender_device_list is not None
    with pytest.raises(DeviceListError, match="older"):
        alice.process_device_list(initial.sender_device_list, "bob")
    result = alice.receive(initial.to_bytes())
    assert result.message is not None
    assert result.message.body == b"sent with list 1"
    assert stored_counter(alice, "bob") == 2


def test_an_equal_counter_must_be_byte_identical(world: World) -> None:
    """REQ-CL-17"""
    [alice] = world.user("alice")
    [bob] = world.user("bob")
    world.send(alice, "bob", b"x")
    current = world.directory.device_list("bob")
    assert current is not None
    other = user_identity_of(bob).sign_device_list(
        "bob", 1, {1: bob.device_key, 2: Account.generate().identity_key}
    )
    before = snapshot(alice)
    with pytest.raises(DeviceListError, match="same counter"):
        alice.process_device_list(other.to_bytes(), "bob")
    assert snapshot(alice) == before
    assert alice.process_device_list(current, "bob") == []


def test_sessions_with_removed_or_rekeyed_devices_are_deleted(world: World) -> None:
    """REQ-CL-18"""
    [alice] = world.user("alice")
    bob = world.user("bob", devices=2)
    world.send(alice, "bob", b"x")
    assert len(alice.sessions_with("bob", 1)) == 1
    assert len(alice.sessions_with("bob", 2)) == 1
    alice.take_events()

    events = alice.process_device_list(bob[0].remove_device(2), "bob")
    assert alice.sessions_with("bob", 2) == []
    assert len(alice.sessions_with("bob", 1)) == 1
    assert [e.kind for e in events] == ["device_list_changed"]
    assert alice.take_events() == events

    # Device 1 under a new device key (reinstalled with the same id, same user key).
    rekeyed = user_identity_of(bob[0]).sign_device_list(
        "bob", stored_counter(alice, "bob") + 1, {1: Account.generate().identity_key}
    )
    events = alice.process_device_list(rekeyed.to_bytes(), "bob")
    assert alice.sessions_with("bob", 1) == []
    assert [(e.kind, e.device_id) for e in events] == [
        ("peer_reinstalled", 1),
        ("device_list_changed", None),
    ]
    assert [e.kind for e in alice.take_events()] == [e.kind for e in events]


def test_device_ids_are_never_reused(world: World) -> None:
    """REQ-CL-20"""
    bob = world.user("bob", devices=3)
    assert [c.device_id for c in bob] == [1, 2, 3]
    bob[0].remove_device(3)
    bob[0].remove_device(2)
    again = world.link(bob[0], "bob")
    assert again.device_id == 4


def test_a_change_to_the_own_list_is_one_event_naming_the_device(world: World) -> None:
    """REQ-CL-44"""
    [primary] = world.user("bob")
    primary.take_events()
    world.link(primary, "bob")
    assert [(e.kind, e.user_id, e.device_id, e.detail) for e in primary.take_events()] == [
        ("device_list_changed", "bob", 2, "linked")
    ]
    primary.remove_device(2)
    assert [(e.kind, e.user_id, e.device_id, e.detail) for e in primary.take_events()] == [
        ("device_list_changed", "bob", 2, "removed")
    ]


# --- linking -------------------------------------------------------------------------------------


def test_the_link_code_never_travels(world: World) -> None:
    """REQ-CL-23"""
    [primary] = world.user("alice")
    new = Client.create_linked(world.path("alice"), "alice")
    code = new.link_code
    request = new.link_request()
    approval = primary.approve_link(request, code)
    for data in (request, approval):
        assert normalize_code(code) not in data
        assert code.encode() not in data
        assert code.replace("-", "").encode() not in data
    new.complete_link(approval)
    with pytest.raises(LocalError):
        _ = new.link_code  # forgotten once linked


def test_approving_a_request_whose_device_key_is_already_listed_is_refused(world: World) -> None:
    """[REQ-CL-21] A link request whose device key the list already names (the same request
    approved a second time) is a LinkError: no second device id is issued for the key, no
    list is signed, nothing is stored."""
    [primary] = world.user("alice")
    new = Client.create_linked(world.path("alice"), "alice")
    request, code = new.link_request(), new.link_code
    approval = primary.approve_link(request, code)
    before = snapshot(primary)
    with pytest.raises(LinkError, match="already linked"):
        primary.approve_link(request, code)
    assert snapshot(primary) == before
    new.complete_link(approval)
    assert new.device_id == 2
    listed = SignedDeviceList.from_bytes(primary.device_list()).device_list
    assert listed.devices == ((1, primary.device_key), (2, new.device_key))


def test_an_approval_whose_list_does_not_name_this_device_is_refused(world: World) -> None:
    """[REQ-CL-22] An approval whose tag' matches this device's request and code, but whose
    list, signed by the user key, names another key under the approved device id, or this
    device's key only under another id, or is another user's list, is a LinkError: the user
    key is not trusted, no list or device id adopted, the code and request kept."""
    [primary] = world.user("alice")
    new = Client.create_linked(world.path("alice"), "alice")
    request, code = new.link_request(), new.link_code
    approval = primary.approve_link(request, code)
    identity = user_identity_of(primary)
    parsed = LinkRequest.from_bytes(request)
    other = Account.generate().identity_key
    forged_lists = [
        identity.sign_device_list("alice", 2, {1: primary.device_key, 2: other}),
        identity.sign_device_list("alice", 2, {1: primary.device_key, 3: new.device_key}),
        identity.sign_device_list("mallory", 2, {1: primary.device_key, 2: new.device_key}),
    ]
    before = snapshot(new)
    for signed in forged_lists:
        forged = LinkApproval.make(parsed, code, 2, signed.to_bytes()).to_bytes()
        with pytest.raises(LinkError, match="does not name this device"):
            new.complete_link(forged)
        assert snapshot(new) == before
    assert new.device_id is None
    assert new.link_code == code
    new.complete_link(approval)  # the genuine approval still completes the link
    assert new.device_id == 2


def test_tag_and_fingerprint_comparisons_are_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """REQ-CL-21, REQ-CL-22, REQ-CL-33: every comparison of a secret-derived value goes
    through the constant-time primitive, and a scan compares both halves without early exit."""
    compared: list[tuple[bytes, bytes]] = []
    real = primitives.constant_time_equal

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(primitives, "constant_time_equal", spy)
    monkeypatch.setattr(safety, "constant_time_equal", spy)
    code = "ABCDE-FGHJK"
    request = LinkRequest.make("alice", bytes(32), bytes(16), code)
    request.check(code)
    assert compared == [(request.tag, request.tag)]
    approval = LinkApproval.make(request, code, 2, b"list")
    approval.check(request, code)
    assert len(compared) == 2
    assert compared[-1][1] == approval.tag

    keys = [UserIdentity.generate().public_key for _ in range(3)]
    number = safety.safety_number(keys[0], "a", keys[1], "b")
    stranger = safety.safety_number(keys[2], "c", keys[0], "a")
    compared.clear()
    assert not number.matches_scanned(stranger.scannable)
    assert len(compared) == 2  # both halves, although the first already differs


# --- sessions ------------------------------------------------------------------------------------


def test_a_normal_message_for_an_unknown_session_is_no_session_error(world: World) -> None:
    """REQ-CL-24"""
    [alice] = world.user("alice")
    [bob] = world.user("bob")
    converse(world, alice, bob)
    [normal] = alice.send("bob", b"normal", world.directory)
    assert normal.sender_device_list is None
    with bob.store.transaction() as conn:
        conn.execute("DELETE FROM sessions")
    with pytest.raises(NoSessionError):
        bob.receive(normal.to_bytes())
    assert bob.store.conn.execute("SELECT COUNT(*) FROM processed").fetchone()[0] == 1


def test_a_bundle_must_belong_to_the_listed_device_key(world: World) -> None:
    """REQ-CL-19: a directory that serves another key's bundle for a listed device is refused."""
    [alice] = world.user("alice")
    world.user("bob")
    mallory = Client.create(world.path("mallory"), "mallory")
    upload = mallory.prekeys_to_upload()
    world.directory.upload(
        type(upload)(
            user_id="bob",
            device_id=1,
            signed_bundle=upload.signed_bundle,
            one_time=upload.one_time,
            one_time_kem=upload.one_time_kem,
        )
    )
    with pytest.raises(UnknownDeviceError, match="listed device"):
        alice.send("bob", b"secret", world.directory)
    assert alice.sessions_with("bob", 1) == []


def test_initial_messages_carry_the_sender_list_until_the_first_reply(world: World) -> None:
    """REQ-CL-26"""
    [alice] = world.user("alice")
    [bob] = world.user("bob")
    [first] = alice.send("bob", b"1", world.directory)
    [second] = alice.send("bob", b"2", world.directory)
    assert first.sender_device_list == alice.device_list()
    assert second.sender_device_list == alice.device_list()
    assert len(alice.sessions_with("bob", 1)) == 1  # the active session is reused
    bob.receive(first.to_bytes())
    bob.receive(second.to_bytes())
    world.send(bob, "alice", b"reply")
    world.deliver(alice)
    [third] = alice.send("bob", b"3", world.directory)
    assert third.sender_device_list is None


# --- trust ---------------------------------------------------------------------------------------


def test_the_first_key_of_a_user_is_trusted_on_first_use_not_verified(world: World) -> None:
    """REQ-CL-27"""
    [alice] = world.user("alice")
    [bob] = world.user("bob", policy="block")
    world.send(alice, "bob", b"x")
    [message] = world.deliver(bob)
    assert message.body == b"x"
    assert bob.identity_key_of("alice") == alice.user_key
    assert not bob.is_verified("alice")
    assert "identity_new" in [e.kind for e in bob.take_events()]


def test_a_replaced_key_clears_verification_and_drops_the_old_list(world: World) -> None:
    """REQ-CL-30 (policy warn)"""
    [alice] = world.user("alice")
    world.user("bob", devices=2)  # Bob's list has counter 2
    world.send(alice, "bob", b"x")
    assert alice.mark_verified("bob")
    assert stored_counter(alice, "bob") == 2
    new_identity = UserIdentity.generate()
    new_list = new_identity.sign_device_list("bob", 1, {1: Account.generate().identity_key})
    events = alice.process_device_list(new_list.to_bytes(), "bob")
    assert [e.kind for e in events] == ["identity_changed"]
    assert alice.identity_key_of("bob") == new_identity.public_key
    assert not alice.is_verified("bob")
    assert stored_counter(alice, "bob") == 1  # the old key's list (counter 2) is gone
    assert alice.sessions_with("bob", 1) == []
    assert alice.sessions_with("bob", 2) == []


def test_linking_drops_an_own_list_taken_before_under_another_key(world: World) -> None:
    """REQ-CL-30 (review finding): a device waiting to be linked can accept a list for its own
    user from the directory (trust on first use, as send does before it needs a device id).
    complete_link replaced that user key by the approved one but kept its list, so a forged
    list with a high counter made the genuine approval "older", on every retry."""
    [primary] = world.user("alice")
    new = Client.create_linked(world.path("alice"), "alice")
    forger = UserIdentity.generate()
    forged = forger.sign_device_list("alice", 1000, {1: Account.generate().identity_key})
    assert [e.kind for e in new.process_device_list(forged.to_bytes(), "alice")] == ["identity_new"]
    new.complete_link(primary.approve_link(new.link_request(), new.link_code))
    assert new.identity_key_of("alice") == primary.user_key
    assert stored_counter(new, "alice") == 2
    assert new.device_id == 2


def test_approving_a_pending_key_drops_every_session_with_the_user(world: World) -> None:
    """REQ-CL-28, REQ-CL-30 (policy block)"""
    [alice] = world.user("alice", policy="block")
    [bob] = world.user("bob")
    converse(world, alice, bob)
    new_identity = UserIdentity.generate()
    new_list = new_identity.sign_device_list("bob", 9, {1: bob.device_key})
    with pytest.raises(UntrustedIdentityError):
        alice.process_device_list(new_list.to_bytes(), "bob")
    assert alice.identity_key_of("bob") == bob.user_key  # unchanged, new key only pending
    assert stored_counter(alice, "bob") == 1
    with pytest.raises(UntrustedIdentityError):
        alice.send("bob", b"blocked", None)
    alice.approve_identity("bob")
    assert alice.identity_key_of("bob") == new_identity.public_key
    assert alice.sessions_with("bob", 1) == []
    assert not alice.is_verified("bob")
    with pytest.raises(LocalError):
        alice.approve_identity("bob")  # nothing pending any more


def test_mark_verified_refuses_a_wrong_scan_or_a_key_changed_meanwhile(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """REQ-CL-31"""
    [alice] = world.user("alice")
    [bob] = world.user("bob")
    [carol] = world.user("carol")
    world.send(alice, "bob", b"x")
    world.deliver(bob)
    assert carol.user_key is not None
    assert alice.user_key is not None
    wrong = safety.safety_number(carol.user_key, "carol", alice.user_key, "alice")
    assert not alice.mark_verified("bob", scanned=wrong.scannable)
    assert not alice.is_verified("bob")
    stale = alice.safety_number("bob")
    new_list = UserIdentity.generate().sign_device_list("bob", 1, {1: bob.device_key})
    alice.process_device_list(new_list.to_bytes(), "bob")  # policy warn: key replaced
    monkeypatch.setattr(alice, "safety_number", lambda user_id: stale)
    assert not alice.mark_verified("bob")
    assert not alice.is_verified("bob")


def test_approving_and_verifying_take_the_key_that_was_compared(world: World) -> None:
    """REQ-CL-47: a key that became pending after the user compared numbers for another one is
    neither approved nor verified, and nothing changes."""
    [alice] = world.user("alice", policy="block")
    [bob] = world.user("bob")
    converse(world, alice, bob)
    compared, later = UserIdentity.generate(), UserIdentity.generate()
    for identity in (compared, later):  # the second pending key replaces the first
        listed = identity.sign_device_list("bob", 9, {1: bob.device_key})
        with pytest.raises(UntrustedIdentityError):
            alice.process_device_list(listed.to_bytes(), "bob")
    before = snapshot(alice)
    assert alice.approve_identity("bob", key=compared.public_key) is False
    assert snapshot(alice) == before
    assert alice.approve_identity("bob", key=later.public_key) is True
    assert alice.identity_key_of("bob") == later.public_key
    before = snapshot(alice)
    with pytest.raises(LocalError):  # nothing pending any more: an error, with key= too
        alice.approve_identity("bob", key=later.public_key)
    assert snapshot(alice) == before

    before = snapshot(alice)
    assert not alice.mark_verified("bob", key=compared.public_key)
    assert snapshot(alice) == before
    assert alice.mark_verified("bob", key=later.public_key)
    assert alice.is_verified("bob")


# --- events --------------------------------------------------------------------------------------


def test_events_are_stored_in_the_transaction_of_their_change(world: World) -> None:
    """REQ-CL-37"""
    [alice] = world.user("alice")
    [bob] = world.user("bob")
    alice.take_events()
    [envelope] = alice.send("bob", b"x", world.directory)
    assert [(e.kind, e.user_id) for e in alice.take_events()] == [
        ("identity_new", "bob"),
        ("session_new", "bob"),
    ]
    result = bob.receive(envelope.to_bytes())
    stored = bob.take_events()
    assert list(result.events) == stored
    assert bob.take_events() == []  # drained
    assert bob.receive(envelope.to_bytes()).events == ()
    assert bob.take_events() == []
