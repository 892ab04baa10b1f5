"""Rollback, as documented in spec/ratchet.md, "Rollback" ([REQ-DR-RB-01] .. [REQ-DR-RB-07]).

A snapshot of Bob's session is taken at time t; Bob then only decrypts (a rolled-back receiver)
while Alice keeps sending, including across a DH step; Bob is restored to the snapshot. The
tests check exactly the documented receiver behaviour (no detection, the replay window, what
stays refused, liveness, what the snapshot exposes) and demonstrate why a sender and an account
must never be restored.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

import e2ee
from e2ee.errors import AuthenticationError, DuplicateMessageError, HandshakeError
from e2ee.limits import MAX_RECEIVING_CHAINS
from e2ee.testing import DeterministicProvider
from e2ee.wire.messages import parse_message
from tests.helpers import NOW, make_pair
from tests.test_forward_secrecy import ALICE, BOB, Conversation, Sent, closure

HEADER_MODES = [pytest.param(True, id="he"), pytest.param(False, id="clear")]


@dataclass
class Rolled:
    c: Conversation
    snapshot: bytes
    before: list[Sent]
    """Messages Bob accepted before the snapshot."""
    after: list[Sent]
    """Messages Bob accepted after the snapshot, in the order he accepted them."""
    remembered_at_snapshot: set[bytes]
    """Alice's chains (her ratchet keys) that Bob's snapshot remembers."""


def rolled_back_receiver(header_encryption: bool, old_chains: int = 1) -> Rolled:
    """Bob accepts messages, is snapshotted, accepts more (out of order, across a DH step,
    without sending anything), and the snapshot is what gets restored."""
    c = Conversation.start(header_encryption=header_encryption, seed="rollback")
    for _ in range(old_chains):
        assert c.deliver(c.send(BOB))
        assert c.deliver(c.send(ALICE))
    pending_reply = c.send(BOB)  # sent by Bob before the snapshot, delivered after it
    early = [c.send(ALICE) for _ in range(3)]
    assert c.deliver(early[0])
    assert c.deliver(early[2])  # early[1] is skipped and waiting at the snapshot
    snapshot = c.sessions[BOB].to_bytes()
    before = list(c.decrypted[BOB])
    remembered = set(c.models[BOB].chains)

    assert c.deliver(early[1])
    more = [c.send(ALICE) for _ in range(2)]
    assert c.deliver(more[1])
    assert c.deliver(pending_reply)  # Alice steps: her next chain is new for Bob
    new_chain = [c.send(ALICE) for _ in range(3)]
    for message in (new_chain[2], more[0], new_chain[0], new_chain[1]):
        assert c.deliver(message)
    after = c.decrypted[BOB][len(before) :]
    assert len(after) == 6
    return Rolled(c, snapshot, before, after, remembered)


def restore(snapshot: bytes) -> e2ee.Session:
    return e2ee.Session.from_bytes(snapshot)


@pytest.mark.parametrize("header_encryption", HEADER_MODES)
def test_rb01_an_older_state_loads_and_behaves_as_at_the_snapshot(header_encryption: bool) -> None:
    r = rolled_back_receiver(header_encryption)
    restored = restore(r.snapshot)
    assert restored.to_bytes() == r.snapshot
    assert restored.session_id == r.c.sessions[BOB].session_id
    # Accepting or refusing is a function of the state alone: two restores agree.
    for message in r.c.sent:
        if message.sender == ALICE:
            outcomes = []
            for _ in range(2):
                try:
                    outcomes.append(restore(r.snapshot).decrypt(message.wire))
                except e2ee.E2EEError as exc:
                    outcomes.append(type(exc))  # type: ignore[arg-type]
            assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize("header_encryption", HEADER_MODES)
@pytest.mark.parametrize("order", ["original", "reversed"])
def test_rb02_the_replay_window(header_encryption: bool, order: str) -> None:
    r = rolled_back_receiver(header_encryption)
    restored = restore(r.snapshot)
    replayed = r.after if order == "original" else r.after[::-1]
    for message in replayed:
        assert restored.decrypt(message.wire) == message.plaintext
    for message in replayed:  # once more each, and no more
        with pytest.raises(DuplicateMessageError):
            restored.decrypt(message.wire)


@pytest.mark.parametrize("header_encryption", HEADER_MODES)
def test_rb02_the_window_is_exactly_what_the_snapshot_accepts(header_encryption: bool) -> None:
    """Of all messages to Bob, a fresh restore accepts exactly those accepted after t (every
    message to Bob was delivered, so nothing else is outstanding)."""
    r = rolled_back_receiver(header_encryption)
    accepted = set()
    for message in r.c.sent:
        if message.sender == ALICE:
            try:
                restore(r.snapshot).decrypt(message.wire)
            except e2ee.E2EEError:
                continue
            accepted.add(message.wire)
    assert accepted == {m.wire for m in r.after}


@pytest.mark.parametrize("header_encryption", HEADER_MODES)
def test_rb03_messages_before_the_snapshot_stay_refused(header_encryption: bool) -> None:
    r = rolled_back_receiver(header_encryption, old_chains=MAX_RECEIVING_CHAINS + 1)
    restored = restore(r.snapshot)
    for message in r.after:
        restored.decrypt(message.wire)
    assert r.before[0].ratchet_key not in r.remembered_at_snapshot  # forgotten chains exist
    fresh = restore(r.snapshot)
    for session, remembered in (
        (restored, set(r.c.models[BOB].chains)),  # the same chains as Bob's current state
        (fresh, r.remembered_at_snapshot),
    ):
        for message in r.before:
            if message.ratchet_key in remembered:
                expected: type[e2ee.E2EEError] = DuplicateMessageError
            else:
                expected = AuthenticationError  # forgotten (and N <= MAX_SKIP)
            state = session.to_bytes()
            with pytest.raises(expected):
                session.decrypt(message.wire)
            assert session.to_bytes() == state


@pytest.mark.parametrize("header_encryption", HEADER_MODES)
@pytest.mark.parametrize("replay_first", [True, False], ids=["after-replay", "at-once"])
def test_rb04_the_session_keeps_working_both_ways(
    header_encryption: bool, replay_first: bool
) -> None:
    r = rolled_back_receiver(header_encryption)
    alice = r.c.sessions[ALICE]
    bob = restore(r.snapshot)
    if replay_first:
        for message in r.after:
            bob.decrypt(message.wire)
    for round_ in range(3):
        text = b"bob %d" % round_
        assert alice.decrypt(bob.encrypt(text)) == text
        text = b"alice %d" % round_
        assert bob.decrypt(alice.encrypt(text)) == text


@pytest.mark.parametrize("header_encryption", HEADER_MODES)
def test_rb05_the_snapshot_exposes_the_window_and_nothing_before(header_encryption: bool) -> None:
    r = rolled_back_receiver(header_encryption)
    derivable = closure(r.snapshot, (m.ratchet_key for m in r.c.sent))
    assert {m.message_key for m in r.after} <= derivable
    assert not derivable & {m.message_key for m in r.before}
    sent_by_bob_before = [m for m in r.c.sent if m.sender == BOB]
    assert not derivable & {m.message_key for m in sent_by_bob_before}
    # The current state, by contrast, exposes none of them.
    current = closure(r.c.sessions[BOB].to_bytes(), (m.ratchet_key for m in r.c.sent))
    assert not current & {m.message_key for m in r.before + r.after}


@pytest.mark.parametrize("header_encryption", HEADER_MODES)
def test_rb06_a_restored_sender_reuses_message_key_and_iv(header_encryption: bool) -> None:
    """Why REQ-DR-24 / REQ-DR-RB-06 forbid it."""
    pair = make_pair(header_encryption=header_encryption, seed="rollback-sender")
    snapshot = pair.alice.to_bytes()
    common = b"the same first block of sixteen!"  # two AES blocks shared by both plaintexts
    first = pair.alice.encrypt(common + b"attack at dawn")
    again = restore(snapshot).encrypt(common + b"attack at dusk")
    body_first = parse_message(first).ciphertext
    body_again = parse_message(again).ciphertext
    assert body_first[:32] == body_again[:32]  # same key and IV: equal blocks leak
    assert body_first[32:] != body_again[32:]
    if header_encryption:
        assert parse_message(first).header != parse_message(again).header  # random nonces
    else:
        assert parse_message(first).header == parse_message(again).header
    bob = pair.bob
    assert bob.decrypt(again) == common + b"attack at dusk"
    with pytest.raises(DuplicateMessageError):
        bob.decrypt(first)


def test_rb07_a_restored_account_accepts_the_same_initial_message_again() -> None:
    provider = DeterministicProvider("rollback-account")
    bob = e2ee.Account.generate(provider=provider, now=NOW)
    bob.generate_one_time_prekeys(1, provider=provider)
    alice = e2ee.Account.generate(provider=provider, now=NOW)
    first = alice.start_session(bob.prekey_bundle(), provider=provider, now=NOW).encrypt(b"hi")
    old_account = bob.to_bytes()
    session, plaintext = bob.accept_session(first, provider=provider, now=NOW)
    with pytest.raises(HandshakeError):  # the current account: the one-time prekey is gone
        e2ee.Account.from_bytes(bob.to_bytes()).accept_session(first, provider=provider, now=NOW)
    again, plaintext_again = e2ee.Account.from_bytes(old_account).accept_session(
        first, provider=provider, now=NOW
    )
    assert again.session_id == session.session_id
    assert plaintext_again == plaintext == b"hi"
