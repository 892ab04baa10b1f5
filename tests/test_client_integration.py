"""Client layer end to end: users with one to three devices over an in-memory transport."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2ee.account import Account
from e2ee.client import Client, KnownIdentity
from e2ee.client.envelope import Envelope
from e2ee.errors import (
    DeviceListError,
    LinkError,
    NoSessionError,
    UnknownDeviceError,
    UntrustedIdentityError,
)
from e2ee.identity import UserIdentity
from tests.client_support import World
from tests.helpers import table_reads_without_index


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def kinds(client: Client) -> list[str]:
    return [event.kind for event in client.take_events()]


def test_two_devices_each_converse_and_own_devices_get_copies(world: World) -> None:
    alice = world.user("alice", devices=2)
    bob = world.user("bob", devices=3)
    assert [c.device_id for c in bob] == [1, 2, 3]

    assert world.send(alice[0], "bob", b"hi bob") == 4  # 3 bob devices + alice's other one
    for device in bob:
        [message] = world.deliver(device)
        assert (message.sender_user, message.sender_device, message.body) == ("alice", 1, b"hi bob")
        assert message.conversation == "alice"
        assert not message.outgoing
    [copy] = world.deliver(alice[1])
    assert copy.outgoing
    assert copy.conversation == "bob"
    assert copy.body == b"hi bob"

    # Replies from every Bob device reach every Alice device and Bob's other devices.
    for index, device in enumerate(bob):
        world.send(device, "alice", b"reply %d" % index)
    for device in alice:
        bodies = sorted(m.body for m in world.deliver(device))
        assert bodies == [b"reply 0", b"reply 1", b"reply 2"]
    for device in bob:
        copies = world.deliver(device)
        assert len(copies) == 2
        assert all(m.outgoing for m in copies)

    # Several rounds: the sessions settle, no new sessions are created.
    for _ in range(3):
        world.send(alice[1], "bob", b"again")
        for device in bob:
            assert [m.body for m in world.deliver(device)] == [b"again"]
        world.deliver(alice[0])
    assert len(bob[2].sessions_with("alice", 2)) == 1
    # Everything delivered is also in the durable inbox.
    assert [m.body for m in bob[0].inbox()][:1] == [b"hi bob"]


def test_replayed_envelope_is_acknowledged_without_decrypting(world: World) -> None:
    [alice] = world.user("alice")
    [bob] = world.user("bob")
    envelopes = alice.send("bob", b"once", world.directory)
    data = envelopes[0].to_bytes()
    assert bob.receive(data).message is not None
    again = bob.receive(data)
    assert again.duplicate
    assert again.message is None
    assert len(bob.inbox()) == 1


def test_link_with_wrong_code_is_refused(world: World) -> None:
    [primary] = world.user("alice")
    new = Client.create_linked(world.path("alice"), "alice")
    with pytest.raises(LinkError):
        primary.approve_link(new.link_request(), "AAAAA-AAAAA")
    # A request swapped in transit (another key) does not match the code either.
    other = Client.create_linked(world.path("alice"), "alice")
    with pytest.raises(LinkError):
        primary.approve_link(other.link_request(), new.link_code)
    # An approval for another request is refused by the new device.
    approval = primary.approve_link(other.link_request(), other.link_code)
    with pytest.raises(LinkError):
        new.complete_link(approval)
    assert other.complete_link(approval) is not None
    assert other.device_id == 2
    assert "device_list_changed" in kinds(primary)


def test_device_list_replay_and_forgery_are_refused(world: World) -> None:
    [alice] = world.user("alice")
    bob = world.user("bob")
    world.send(alice, "bob", b"x")
    old_list = world.directory.device_list("bob")
    assert old_list is not None
    world.link(bob[0], "bob")  # counter 2
    world.send(alice, "bob", b"y")  # alice accepts counter 2
    with pytest.raises(DeviceListError, match="older"):
        alice.process_device_list(old_list, "bob")

    # A list signed by another key under the same counter is an identity change (warn policy
    # here) -- but a list naming a device the user key did not sign never verifies.
    forged = bytearray(world.directory.device_lists["bob"])
    forged[-70] ^= 1
    with pytest.raises(DeviceListError):
        alice.process_device_list(bytes(forged), "bob")
    with pytest.raises(DeviceListError, match="another user"):
        alice.process_device_list(world.directory.device_lists["alice"], "bob")


def test_relay_cannot_add_a_listening_device(world: World) -> None:
    [alice] = world.user("alice")
    [bob] = world.user("bob")
    world.send(alice, "bob", b"hello")
    world.deliver(bob)
    # The relay publishes a bundle for a "bob/9" it controls: it is not in bob's signed list.
    mallory = Client.create(world.path("mallory"), "mallory")
    upload = mallory.prekeys_to_upload()
    world.directory.upload(
        type(upload)(
            user_id="bob",
            device_id=9,
            signed_bundle=upload.signed_bundle,
            one_time=upload.one_time,
            one_time_kem=upload.one_time_kem,
        )
    )
    envelopes = alice.send("bob", b"secret", world.directory)
    assert {(e.recipient_user, e.recipient_device) for e in envelopes} == {("bob", 1)}
    # And a message claiming to come from an unlisted device is refused.
    forged = mallory.send("mallory", b"x")  # no other devices: nothing to send
    assert forged == []
    envelope = Envelope("alice", 7, "bob", 1, bytes(16), envelopes[0].payload)
    with pytest.raises(UnknownDeviceError):
        bob.receive(envelope.to_bytes())


def test_a_bundle_is_checked_against_the_list_current_when_it_is_used(world: World) -> None:
    """[REQ-CL-19] send checks a fetched bundle against the list of its first transaction and
    uses it in a second one. A newer list accepted in between (a receive on another thread)
    that gives the device another key makes the bundle wrong for it: refused, nothing sent,
    nothing stored."""
    [alice] = world.user("alice")
    [bob] = world.user("bob")
    (state,) = bob.store.conn.execute("SELECT state FROM user_identity").fetchone()
    bob_user = UserIdentity.from_bytes(state)
    new_key = Account.generate().identity_key
    rekeyed = bob_user.sign_device_list("bob", 2, {1: new_key}).to_bytes()

    class RacingDirectory:
        def device_list(self, user: str) -> bytes | None:
            return world.directory.device_list(user)

        def bundle(self, user: str, device: int) -> bytes | None:
            data = world.directory.bundle(user, device)
            alice.process_device_list(rekeyed, "bob")  # accepted while the bundle was fetched
            return data

    with pytest.raises(UnknownDeviceError):
        alice.send("bob", b"secret", RacingDirectory())
    assert alice.sessions_with("bob", 1) == []


def test_misaddressed_and_unknown_session_messages_are_refused(world: World) -> None:
    [alice] = world.user("alice")
    [bob] = world.user("bob")
    [carol] = world.user("carol")
    [envelope] = alice.send("bob", b"for bob", world.directory)
    with pytest.raises(UnknownDeviceError):
        carol.receive(envelope.to_bytes())
    bob.receive(envelope.to_bytes())
    world.send(bob, "alice", b"reply")
    world.deliver(alice)
    [normal] = alice.send("bob", b"normal", world.directory)
    # Bob loses his state: a fresh store for the same user id has no session for it.
    bob2 = Client.create(world.path("bob"), "bob")
    with pytest.raises((NoSessionError, UnknownDeviceError)):
        bob2.receive(normal.to_bytes())


@pytest.mark.parametrize("policy", ["block", "warn"])
def test_identity_change_blocks_or_warns(world: World, policy: str) -> None:
    [alice] = world.user("alice", policy=policy)
    [bob] = world.user("bob")
    world.send(alice, "bob", b"hi")
    world.deliver(bob)
    world.send(bob, "alice", b"hello")
    world.deliver(alice)
    sn = alice.safety_number("bob")
    assert sn.digits == bob.safety_number("alice").digits
    assert alice.mark_verified("bob", scanned=bob.safety_number("alice").scannable)
    assert alice.is_verified("bob")
    assert alice.known_identities() == [
        KnownIdentity("alice", verified=True, pending=False),  # its own key, known first-hand
        KnownIdentity("bob", verified=True, pending=False),
    ]
    kinds(alice)

    # Bob reinstalls: a new user identity key, a new device key for device 1.
    [bob_new] = world.user("bob")
    world.send(bob_new, "alice", b"I reinstalled")
    [data] = world.transport.fetch("alice", 1)
    if policy == "block":
        with pytest.raises(UntrustedIdentityError) as info:
            alice.receive(data)
        assert info.value.category == "untrusted_identity"
        assert alice.inbox()[-1].body == b"hello"  # nothing accepted under the new key
        with pytest.raises(UntrustedIdentityError):
            alice.send("bob", b"to the new key?", world.directory)
        assert alice.is_verified("bob")
        assert alice.known_identities()[1] == KnownIdentity("bob", verified=True, pending=True)
        alice.approve_identity("bob")
        assert alice.known_identities()[1] == KnownIdentity("bob", verified=False, pending=False)
    result = alice.receive(data)
    assert result.message is not None
    assert result.message.body == b"I reinstalled"
    got = kinds(alice)
    assert "identity_changed" in got
    assert "session_new" in got or "session_replaced" in got
    assert not alice.is_verified("bob")
    assert alice.safety_number("bob").digits != sn.digits
    # Alice's reply goes to the reinstalled device over the new session.
    world.send(alice, "bob", b"welcome back")
    assert [m.body for m in world.deliver(bob_new)] == [b"welcome back"]


def test_reinstalled_linked_device_gets_a_new_session_and_app_is_told(world: World) -> None:
    [alice] = world.user("alice")
    bob = world.user("bob", devices=2)
    world.send(alice, "bob", b"one")
    for device in bob:
        world.deliver(device)
    # Bob's device 2 is wiped and linked again: device 2 removed, device 3 added.
    world.directory.publish_device_list(bob[0].remove_device(2))
    world.directory.forget_device("bob", 2)
    bob3 = world.link(bob[0], "bob")
    assert bob3.device_id == 3
    kinds(alice)
    world.send(alice, "bob", b"two")
    got = kinds(alice)
    assert "device_list_changed" in got
    assert "session_new" in got
    assert [m.body for m in world.deliver(bob3)] == [b"two"]
    assert [m.body for m in world.deliver(bob[0])] == [b"two"]
    assert world.transport.pending("bob", 2) == 0


def test_simultaneous_initiation_converges(world: World) -> None:
    [alice] = world.user("alice")
    [bob] = world.user("bob")
    a = alice.send("bob", b"from alice", world.directory)
    b = bob.send("alice", b"from bob", world.directory)
    assert bob.receive(a[0].to_bytes()).message is not None
    assert alice.receive(b[0].to_bytes()).message is not None
    assert len(alice.sessions_with("bob", 1)) == 2
    for i in range(3):
        world.send(alice, "bob", b"a%d" % i)
        assert len(world.deliver(bob)) == 1
        world.send(bob, "alice", b"b%d" % i)
        assert len(world.deliver(alice)) == 1
    assert (
        alice.sessions_with("bob", 1)[0].session_id == bob.sessions_with("alice", 1)[0].session_id
    )


def test_encrypted_store_reopens(world: World) -> None:
    key = bytes(range(32))
    path = world.path("alice")
    alice = Client.create(path, "alice", key=key)
    world.publish(alice)
    [bob] = world.user("bob")
    world.send(bob, "alice", b"sealed")
    world.deliver(alice)
    alice.close()
    raw = path.read_bytes()
    assert b"sealed" not in raw
    reopened = Client.open(path, key=key)
    assert [m.body for m in reopened.inbox()] == [b"sealed"]
    assert isinstance(UserIdentity.generate().public_key, bytes)


def test_previous_sessions_are_bounded_and_a_previous_one_can_become_active(
    world: World,
) -> None:
    from e2ee import Account
    from e2ee.client import sessions

    [alice] = world.user("alice")
    bob = Account.generate()
    made = [Account.generate().start_session(bob.prekey_bundle()) for _ in range(7)]
    with alice.store.transaction() as conn:
        for session in made:
            sessions.save(conn, alice.store, "bob", 1, session, make_active=True)
    held = [s.session_id for s in alice.sessions_with("bob", 1)]
    assert len(held) == 1 + sessions.MAX_PREVIOUS_SESSIONS
    assert held == [s.session_id for s in reversed(made)][: len(held)]
    with alice.store.transaction() as conn:
        sessions.save(conn, alice.store, "bob", 1, made[3], make_active=True)
    assert alice.sessions_with("bob", 1)[0].session_id == made[3].session_id


def test_send_and_receive_search_every_table_never_scan_one(world: World) -> None:
    """Per-message work does not grow with what the store holds: every step of every
    statement a send and a receive run is an index search with a constraint (the query plans,
    not a timing). A maximum of last_used over the whole sessions table, which every receive
    once read, reads every row: SQLite's plan says "SEARCH sessions" with no constraint."""
    [alice] = world.user("alice")
    [bob, _] = world.user("bob", 2)  # sends copy to bob's second device
    [carol] = world.user("carol")
    world.send(alice, "bob", b"hello")  # bob also holds a session with carol
    world.send(carol, "bob", b"hi")
    world.deliver(bob)
    conn = bob.store.conn
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        world.send(alice, "bob", b"again")
        world.deliver(bob)  # receive on a session made active again
        world.send(bob, "carol", b"reply")  # send on the active session, a copy to bob/2
    finally:
        conn.set_trace_callback(None)
    assert any("FROM sessions WHERE" in s for s in statements)
    assert any("INTO processed" in s for s in statements)
    # ranges allowed: pruning the processed log deletes the rows older than its window
    assert table_reads_without_index(conn, statements, ranges=True) == []
