"""Double Ratchet properties: round trips under reordering and loss, the skip limits, and the
shape of normal messages.

Every rejection is checked to leave the receiving session byte-identical (``to_bytes()``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import pytest
from hypothesis import event, given, settings, target
from hypothesis import strategies as st

import e2ee
from e2ee.crypto import primitives
from e2ee.errors import RemoteError
from e2ee.limits import (
    MAX_PREVIOUS_CHAIN_SKIP,
    MAX_RECEIVING_CHAINS,
    MAX_SKIP,
    MAX_SKIPPED_KEYS,
)
from e2ee.testing import DeterministicProvider
from e2ee.wire import codec
from tests.helpers import NOW, Pair, make_pair
from tests.test_handshake_rules import encode_flat

E = TypeVar("E", bound=BaseException)

HEADER_MODES = [
    pytest.param(True, id="header-encryption"),
    pytest.param(False, id="clear-header"),
]
ALL_MODES = [
    pytest.param(he, pq, id=f"{'he' if he else 'clear'}-{'pqxdh' if pq else 'x3dh'}")
    for he in (True, False)
    for pq in (True, False)
]


def rejected(session: e2ee.Session, message: bytes, expected: type[E]) -> E:
    """``session.decrypt(message)`` raises ``expected`` and leaves the session byte-identical."""
    before = session.to_bytes()
    with pytest.raises(expected) as info:
        session.decrypt(message)
    assert session.to_bytes() == before
    return info.value


def send_many(session: e2ee.Session, count: int, label: bytes) -> list[tuple[bytes, bytes]]:
    """``count`` (plaintext, wire) pairs sent in order on ``session``'s current chain."""
    out = []
    for i in range(count):
        plaintext = b"%s-%d" % (label, i)
        out.append((plaintext, session.encrypt(plaintext)))
    return out


def turn(pair: Pair, label: bytes) -> None:
    """One ping-pong round trip, Bob first: a DH ratchet step on each side."""
    assert pair.alice.decrypt(pair.bob.encrypt(b"b" + label)) == b"b" + label
    assert pair.bob.decrypt(pair.alice.encrypt(b"a" + label)) == b"a" + label


# --- 1. random interleavings, reordering, loss and duplicates --------------------------------

ALICE, BOB = "alice", "bob"
OTHER = {ALICE: BOB, BOB: ALICE}
OPS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "send_alice",
                "send_alice",
                "send_bob",
                "send_bob",
                "deliver_alice",
                "deliver_alice",
                "deliver_bob",
                "deliver_bob",
                "drop_alice",
                "drop_bob",
                "replay_alice",
                "replay_bob",
                "reload",
                "pingpong",
                "pingpong",
            ]
        ),
        st.integers(min_value=0, max_value=2**16),
    ),
    max_size=70,
)


@dataclass
class InFlight:
    sender: str
    epoch: int
    """Index of the sender's sending chain (DH ratchet epoch) the message was sent on."""
    plaintext: bytes
    wire: bytes


@dataclass
class Conversation:
    """Alice and Bob with an explicit model of which messages must decrypt.

    Epoch model: Alice's n-th sending chain (n from 0) exists only after Bob received a message
    of her chain n-1 and she received his reply, so each side meets the peer's chains in order.
    A message on the peer's chain ``e`` must decrypt while the receiver has met at most
    ``MAX_RECEIVING_CHAINS - 1`` newer chains of the peer.
    """

    header_encryption: bool
    post_quantum: bool
    one_time_prekeys: bool
    provider: DeterministicProvider = field(init=False)
    bob_account: e2ee.Account = field(init=False)
    sessions: dict[str, e2ee.Session | None] = field(init=False)
    newest_received: dict[str, int] = field(default_factory=lambda: {ALICE: -1, BOB: -1})
    in_flight: dict[str, list[InFlight]] = field(default_factory=lambda: {ALICE: [], BOB: []})
    delivered: dict[str, list[InFlight]] = field(default_factory=lambda: {ALICE: [], BOB: []})
    counter: int = 0
    decrypted: int = 0

    def __post_init__(self) -> None:
        self.provider = DeterministicProvider(
            f"conversation-{self.header_encryption}-{self.post_quantum}-{self.one_time_prekeys}"
        )
        self.bob_account = e2ee.Account.generate(
            provider=self.provider, now=NOW, post_quantum=self.post_quantum
        )
        if self.one_time_prekeys:
            self.bob_account.generate_one_time_prekeys(2, provider=self.provider)
        alice_account = e2ee.Account.generate(provider=self.provider, now=NOW)
        config = e2ee.SessionConfig(header_encryption=self.header_encryption, allow_x3dh=True)
        alice = alice_account.start_session(
            self.bob_account.prekey_bundle(), config=config, provider=self.provider, now=NOW
        )
        self.sessions = {ALICE: alice, BOB: None}

    def sending_epoch(self, who: str) -> int:
        # Alice's first chain precedes anything received; Bob's first one is made on receipt.
        return self.newest_received[who] + (1 if who == ALICE else 0)

    def in_window(self, message: InFlight) -> bool:
        receiver = OTHER[message.sender]
        return message.epoch >= self.newest_received[receiver] - (MAX_RECEIVING_CHAINS - 1)

    def send(self, who: str, salt: int) -> None:
        session = self.sessions[who]
        if session is None:
            return  # Bob cannot send before the first message reached him
        self.counter += 1
        plaintext = b"%s:%d:" % (who.encode(), self.counter) + b"x" * (salt % 41)
        wire = session.encrypt(plaintext, provider=self.provider)
        self.in_flight[who].append(InFlight(who, self.sending_epoch(who), plaintext, wire))

    def receive(self, message: InFlight) -> bytes:
        receiver = OTHER[message.sender]
        session = self.sessions[receiver]
        if session is None:
            assert receiver == BOB
            info = e2ee.peek(message.wire)
            assert info.is_initial
            assert info.header_encrypted is self.header_encryption
            session, plaintext = self.bob_account.accept_session(
                message.wire, provider=self.provider, now=NOW
            )
            self.sessions[BOB] = session
            return plaintext
        return session.decrypt(message.wire, provider=self.provider)

    def deliver(self, sender: str, choice: int) -> None:
        queue = self.in_flight[sender]
        if not queue:
            return
        message = queue.pop(choice % len(queue))
        receiver = OTHER[sender]
        assert message.epoch <= self.newest_received[receiver] + 1
        session = self.sessions[receiver]
        if not self.in_window(message):
            assert session is not None
            rejected(session, message.wire, RemoteError)
            event("a message older than the remembered chains was refused")
            return
        assert self.receive(message) == message.plaintext
        self.decrypted += 1
        self.newest_received[receiver] = max(self.newest_received[receiver], message.epoch)
        self.delivered[sender].append(message)

    def drop(self, sender: str, choice: int) -> None:
        queue = self.in_flight[sender]
        if queue:
            queue.pop(choice % len(queue))

    def replay(self, sender: str, choice: int) -> None:
        done = self.delivered[sender]
        if not done:
            return
        message = done[choice % len(done)]
        session = self.sessions[OTHER[sender]]
        assert session is not None
        if self.in_window(message):
            rejected(session, message.wire, e2ee.DuplicateMessageError)
        else:
            rejected(session, message.wire, RemoteError)
            event("a replay older than the remembered chains was refused")

    def reload(self) -> None:
        for who, session in self.sessions.items():
            if session is not None:
                self.sessions[who] = e2ee.Session.from_bytes(session.to_bytes())
        self.bob_account = e2ee.Account.from_bytes(self.bob_account.to_bytes())

    def pingpong(self) -> None:
        """Alice sends and her newest message arrives; then the same for Bob."""
        for who in (ALICE, BOB):
            self.send(who, 0)
            self.deliver(who, len(self.in_flight[who]) - 1)

    def run(self, op: str, value: int) -> None:
        if op in ("reload", "pingpong"):
            getattr(self, op)()
            return
        action, who = op.split("_")
        getattr(self, action)(who, value)
        for session in self.sessions.values():
            if session is not None:
                assert session.skipped_key_count <= MAX_SKIPPED_KEYS


@pytest.mark.parametrize(("header_encryption", "post_quantum"), ALL_MODES)
@settings(deadline=None)
@given(ops=OPS, one_time_prekeys=st.booleans())
def test_random_interleavings_decrypt_exactly_once(
    header_encryption: bool,
    post_quantum: bool,
    ops: list[tuple[str, int]],
    one_time_prekeys: bool,
) -> None:
    conv = Conversation(header_encryption, post_quantum, one_time_prekeys)
    for op, value in ops:
        conv.run(op, value)
    newest = max(conv.newest_received.values())
    target(float(newest), label="DH ratchet steps")
    event(f"DH ratchet steps: {min(newest, MAX_RECEIVING_CHAINS + 1)}")
    # Drain: whatever is still in flight decrypts (or, outside the window, is refused), once.
    for sender in (ALICE, BOB):
        while conv.in_flight[sender]:
            conv.deliver(sender, 0)
    for sender in (ALICE, BOB):
        for index in range(len(conv.delivered[sender])):
            conv.replay(sender, index)
    # Both directions still work afterwards.
    before = conv.decrypted
    conv.send(ALICE, 0)
    conv.deliver(ALICE, 0)
    conv.send(BOB, 0)
    conv.deliver(BOB, 0)
    assert conv.decrypted == before + 2
    bob = conv.sessions[BOB]
    alice = conv.sessions[ALICE]
    assert bob is not None
    assert alice is not None
    assert bob.session_id == alice.session_id
    assert not alice.awaiting_reply
    assert bob.header_encryption is header_encryption is alice.header_encryption


def test_the_epoch_model_predicts_the_dh_steps() -> None:
    """The model behind the property test: each reply that completes a round trip starts a new
    sending chain (new ratchet key in the clear header)."""
    conv = Conversation(header_encryption=False, post_quantum=True, one_time_prekeys=False)
    keys: list[bytes] = []
    for _ in range(3):
        conv.send(ALICE, 1)
        header = codec.read_flat_array(conv.in_flight[ALICE][-1].wire, 10**6)[0][-2]
        assert isinstance(header, bytes)
        keys.append(header[:32])
        conv.deliver(ALICE, 0)
        conv.send(BOB, 1)
        conv.deliver(BOB, 0)
    assert [m.epoch for m in conv.delivered[ALICE]] == [0, 1, 2]
    assert [m.epoch for m in conv.delivered[BOB]] == [0, 1, 2]
    assert len(set(keys)) == 3


# --- 2. out of order within the limits ----------------------------------------------------


@pytest.mark.parametrize("header_encryption", HEADER_MODES)
@pytest.mark.parametrize("fresh_chain", [True, False], ids=["new-chain", "current-chain"])
def test_900_message_gap_on_one_chain(header_encryption: bool, fresh_chain: bool) -> None:
    pair = make_pair(header_encryption=header_encryption)
    if not fresh_chain:  # Bob already follows Alice's current chain
        assert pair.bob.decrypt(pair.alice.encrypt(b"warm-up")) == b"warm-up"
    base = pair.bob.skipped_key_count
    sent = send_many(pair.alice, 901, b"gap")
    last_plaintext, last_wire = sent[-1]
    assert pair.bob.decrypt(last_wire) == last_plaintext
    assert pair.bob.skipped_key_count == base + 900
    # The rest, in a scrambled order (7 is coprime with 900).
    order = [(i * 7) % 900 for i in range(900)]
    assert sorted(order) == list(range(900))
    for count, index in enumerate(order, start=1):
        plaintext, wire = sent[index]
        assert pair.bob.decrypt(wire) == plaintext
        assert pair.bob.skipped_key_count == base + 900 - count
    for index in (0, 450, 899, 900):
        rejected(pair.bob, sent[index][1], e2ee.DuplicateMessageError)
    assert pair.alice.decrypt(pair.bob.encrypt(b"done")) == b"done"


def _delayed_first_chain(header_encryption: bool) -> tuple[Pair, list[tuple[bytes, bytes]]]:
    """Alice sends six initial-form messages; Bob's session is made from the last one."""
    provider = DeterministicProvider("delayed-first-chain")
    bob_account = e2ee.Account.generate(provider=provider, now=NOW)
    bob_account.generate_one_time_prekeys(1, provider=provider)
    alice_account = e2ee.Account.generate(provider=provider, now=NOW)
    alice = alice_account.start_session(
        bob_account.prekey_bundle(),
        config=e2ee.SessionConfig(header_encryption=header_encryption),
        provider=provider,
        now=NOW,
    )
    sent = send_many(alice, 6, b"early")
    assert all(e2ee.peek(wire).is_initial for _, wire in sent)
    bob, plaintext = bob_account.accept_session(sent[-1][1], provider=provider, now=NOW)
    assert plaintext == sent[-1][0]
    return Pair(alice_account, bob_account, alice, bob, provider), sent[:-1]


def _delayed_mid_session(header_encryption: bool) -> tuple[Pair, list[tuple[bytes, bytes]]]:
    pair = make_pair(header_encryption=header_encryption)
    turn(pair, b"x")
    sent = send_many(pair.alice, 6, b"mid")
    assert pair.bob.decrypt(sent[-1][1]) == sent[-1][0]
    return pair, sent[:-1]


Setup = Callable[[bool], tuple[Pair, list[tuple[bytes, bytes]]]]
DELAYED_SETUPS = [
    pytest.param(_delayed_first_chain, id="initial-form-chain"),
    pytest.param(_delayed_mid_session, id="mid-session-chain"),
]


@pytest.mark.parametrize("header_encryption", HEADER_MODES)
@pytest.mark.parametrize("setup", DELAYED_SETUPS)
def test_messages_delayed_across_four_ratchet_turns(
    header_encryption: bool,
    setup: Setup,
) -> None:
    pair, delayed = setup(header_encryption)
    for i in range(4):
        turn(pair, b"%d" % i)
    for plaintext, wire in reversed(delayed):
        assert pair.bob.decrypt(wire) == plaintext
    for _, wire in delayed:
        rejected(pair.bob, wire, e2ee.DuplicateMessageError)
    turn(pair, b"after")


@pytest.mark.parametrize("header_encryption", HEADER_MODES)
@pytest.mark.parametrize("setup", DELAYED_SETUPS)
def test_messages_delayed_beyond_the_remembered_chains_are_refused_cleanly(
    header_encryption: bool,
    setup: Setup,
) -> None:
    pair, delayed = setup(header_encryption)
    for i in range(MAX_RECEIVING_CHAINS):
        turn(pair, b"%d" % i)
    for _, wire in delayed:
        rejected(pair.bob, wire, RemoteError)
    turn(pair, b"after")


def test_header_keys_are_tried_in_the_specified_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """[REQ-DR-11] Header keys are tried in the order of ratchet.md section 6, step 4: the
    current HKr, the other remembered chains that hold skipped keys (newest first), NHKr, then the
    remembered chains without skipped keys (newest first). The keys are read from the session
    state; the trials are observed at the AEAD primitive."""
    pair = make_pair(header_encryption=True, seed="trial-order")
    alice, bob = pair.alice, pair.bob

    def chain(sent: int, received: list[int]) -> list[bytes]:
        """Alice writes to Bob, so Bob starts a new chain with ``sent`` messages; Alice reads
        those in ``received``."""
        assert bob.decrypt(alice.encrypt(b"ping")) == b"ping"
        wires = [bob.encrypt(b"c%d" % i) for i in range(sent)]
        for i in received:
            assert alice.decrypt(wires[i]) == b"c%d" % i
        return wires

    chain(2, [1])  # X1: skipped key 0 left
    chain(2, [1])  # X2: skipped key 0 left
    late = chain(1, [0])[0]  # Y: no skipped key
    chain(2, [1])  # Z, the current chain: skipped key 0 left

    state = codec.decode(alice.to_bytes(), max_size=2**24)
    remembered = state[22]  # oldest first: the reply chain of make_pair, X1, X2, Y, Z
    assert [len(keys) for _, keys in remembered] == [0, 1, 1, 0, 1]
    r0, x1, x2, y, z = (reference for reference, _ in remembered)
    hkr, nhkr = state[19], state[21]
    assert z == hkr
    assert nhkr not in (r0, x1, x2, y, z)

    tried: list[bytes] = []
    real = primitives.xchacha20poly1305_try_decrypt

    def spy(key: bytes, nonce: bytes, ciphertext: bytes, ad: bytes) -> bytes | None:
        tried.append(key)
        return real(key, nonce, ciphertext, ad)

    monkeypatch.setattr(primitives, "xchacha20poly1305_try_decrypt", spy)
    items, _ = codec.read_flat_array(bob.encrypt(b"forged"), 10**6)
    items[3] = bytes(range(80))  # a header no key opens
    rejected(alice, encode_flat(items), e2ee.AuthenticationError)
    assert tried == [hkr, x2, x1, nhkr, y, r0]  # six trials at most
    tried.clear()
    rejected(alice, late, e2ee.DuplicateMessageError)
    assert tried == [hkr, x2, x1, nhkr, y]


# --- 3. the skip limits -------------------------------------------------------------------


@pytest.mark.parametrize("header_encryption", HEADER_MODES)
def test_jump_too_far_on_a_new_chain_is_refused_and_recoverable(header_encryption: bool) -> None:
    pair = make_pair(header_encryption=header_encryption)
    sent = send_many(pair.alice, MAX_SKIP + 2, b"jump")  # numbers 0 .. MAX_SKIP + 1
    error = rejected(pair.bob, sent[MAX_SKIP + 1][1], e2ee.TooManySkippedError)
    assert isinstance(error, e2ee.errors.RemoteError)
    assert error.counter == MAX_SKIP + 1
    assert pair.bob.skipped_key_count == 0
    # Exactly MAX_SKIP skipped keys is still allowed.
    assert pair.bob.decrypt(sent[MAX_SKIP][1]) == sent[MAX_SKIP][0]
    assert pair.bob.skipped_key_count == MAX_SKIP
    # The refused message is now in range, and so is everything before it.
    assert pair.bob.decrypt(sent[MAX_SKIP + 1][1]) == sent[MAX_SKIP + 1][0]
    for plaintext, wire in sent[:MAX_SKIP]:
        assert pair.bob.decrypt(wire) == plaintext
    assert pair.bob.skipped_key_count == 0
    turn(pair, b"after")


@pytest.mark.parametrize("header_encryption", HEADER_MODES)
def test_jump_too_far_on_the_current_chain_is_refused_and_recoverable(
    header_encryption: bool,
) -> None:
    pair = make_pair(header_encryption=header_encryption)
    assert pair.bob.decrypt(pair.alice.encrypt(b"m0")) == b"m0"  # Bob now expects number 1
    sent = send_many(pair.alice, MAX_SKIP + 2, b"jump")  # numbers 1 .. MAX_SKIP + 2
    too_far = sent[-1]
    error = rejected(pair.bob, too_far[1], e2ee.TooManySkippedError)
    assert error.counter == MAX_SKIP + 2
    # Recovery: in-range messages decrypt, the limit moves, the refused one then decrypts.
    assert pair.bob.decrypt(sent[5][1]) == sent[5][0]
    assert pair.bob.decrypt(sent[-2][1]) == sent[-2][0]
    assert pair.bob.decrypt(too_far[1]) == too_far[0]
    for plaintext, wire in sent[:5] + sent[6:-2]:
        assert pair.bob.decrypt(wire) == plaintext
    assert pair.bob.skipped_key_count == 0
    turn(pair, b"after")


@pytest.mark.parametrize("header_encryption", HEADER_MODES)
def test_huge_previous_chain_is_truncated_not_refused(header_encryption: bool) -> None:
    pair = make_pair(header_encryption=header_encryption)
    assert pair.bob.decrypt(pair.alice.encrypt(b"seen")) == b"seen"
    lost = send_many(pair.alice, 1500, b"lost")  # numbers 1 .. 1500, never delivered
    assert pair.alice.decrypt(pair.bob.encrypt(b"reply")) == b"reply"  # Alice: DH step
    # The first message of Alice's next chain announces PN = 1501.
    assert pair.bob.decrypt(pair.alice.encrypt(b"new chain")) == b"new chain"
    assert pair.bob.skipped_key_count <= MAX_SKIPPED_KEYS
    assert pair.bob.skipped_key_count == MAX_PREVIOUS_CHAIN_SKIP
    # Keys were kept for the first MAX_PREVIOUS_CHAIN_SKIP lost messages; the rest is dropped.
    for plaintext, wire in (lost[0], lost[499], lost[MAX_PREVIOUS_CHAIN_SKIP - 1]):
        assert pair.bob.decrypt(wire) == plaintext
    for _, wire in (lost[MAX_PREVIOUS_CHAIN_SKIP], lost[-1]):
        rejected(pair.bob, wire, RemoteError)
    turn(pair, b"after")


@pytest.mark.parametrize("header_encryption", HEADER_MODES)
def test_huge_previous_chain_plus_a_full_skip_on_the_new_chain(header_encryption: bool) -> None:
    pair = make_pair(header_encryption=header_encryption)
    assert pair.bob.decrypt(pair.alice.encrypt(b"seen")) == b"seen"
    send_many(pair.alice, 1500, b"lost")
    assert pair.alice.decrypt(pair.bob.encrypt(b"reply")) == b"reply"
    sent = send_many(pair.alice, MAX_SKIP + 1, b"next")
    assert pair.bob.decrypt(sent[-1][1]) == sent[-1][0]
    assert pair.bob.skipped_key_count <= MAX_SKIPPED_KEYS
    # The newest keys survive: everything skipped on the new chain decrypts.
    for plaintext, wire in sent[:-1]:
        assert pair.bob.decrypt(wire) == plaintext


@pytest.mark.parametrize("header_encryption", HEADER_MODES)
def test_skipped_key_store_is_capped_and_evicts_the_oldest(header_encryption: bool) -> None:
    pair = make_pair(header_encryption=header_encryption)
    chains: list[list[tuple[bytes, bytes]]] = []
    for c in range(3):
        sent = send_many(pair.alice, MAX_SKIP + 1, b"chain%d" % c)
        assert pair.bob.decrypt(sent[-1][1]) == sent[-1][0]
        assert pair.bob.skipped_key_count == min(MAX_SKIP * (c + 1), MAX_SKIPPED_KEYS)
        chains.append(sent[:-1])
        assert pair.alice.decrypt(pair.bob.encrypt(b"ack%d" % c)) == b"ack%d" % c
    # The oldest chain's keys were evicted; the two newer chains are intact.
    for _, wire in (chains[0][0], chains[0][-1]):
        rejected(pair.bob, wire, e2ee.DuplicateMessageError)
    for sent in chains[1:]:
        for plaintext, wire in sent:
            assert pair.bob.decrypt(wire) == plaintext
    assert pair.bob.skipped_key_count == 0


# --- 9. lengths ----------------------------------------------------------------------------


@pytest.mark.parametrize("header_encryption", HEADER_MODES)
def test_equal_plaintext_length_gives_equal_message_length(header_encryption: bool) -> None:
    pair = make_pair(header_encryption=header_encryption)
    lengths = (0, 1, 15, 16, 17, 100, 1000)
    seen: dict[int, set[int]] = {n: set() for n in lengths}
    for step in range(4):
        # Counters from 0 to past 256 on one chain; PN grows with each step.
        for i in range(260 if step % 2 else 30):
            n = lengths[i % len(lengths)]
            wire = pair.alice.encrypt(bytes([i % 256]) * n)
            seen[n].add(len(wire))
            if i % 50 == 0:
                assert pair.bob.decrypt(wire) == bytes([i % 256]) * n
            reply = pair.bob.encrypt(b"\xff" * n)
            seen[n].add(len(reply))
        turn(pair, b"%d" % step)
    for n in lengths:
        assert len(seen[n]) == 1, (n, seen[n])


# --- 10. sessions are not interchangeable --------------------------------------------------


def _with_session_id(message: bytes, session_id: bytes) -> bytes:
    items, _ = codec.read_flat_array(message, 10**6)
    assert isinstance(items[2], bytes)
    assert len(items[2]) == len(session_id)
    items[2] = session_id
    return encode_flat(items)


@pytest.mark.parametrize("header_encryption", HEADER_MODES)
@pytest.mark.parametrize("same_accounts", [True, False], ids=["same-accounts", "other-accounts"])
def test_messages_of_one_session_are_refused_by_another(
    header_encryption: bool, same_accounts: bool
) -> None:
    one = make_pair(header_encryption=header_encryption, seed="one", one_time_prekeys=2)
    if same_accounts:
        config = e2ee.SessionConfig(header_encryption=header_encryption)
        alice2 = one.alice_account.start_session(
            one.bob_account.prekey_bundle(), config=config, provider=one.provider, now=NOW
        )
        bob2, _ = one.bob_account.accept_session(
            alice2.encrypt(b"first", provider=one.provider), provider=one.provider, now=NOW
        )
        assert alice2.decrypt(bob2.encrypt(b"reply")) == b"reply"
        two = Pair(one.alice_account, one.bob_account, alice2, bob2, one.provider)
    else:
        two = make_pair(header_encryption=header_encryption, seed="two")
    assert one.alice.session_id != two.alice.session_id
    for a, b in ((one, two), (two, one)):
        to_bob = a.alice.encrypt(b"for bob")
        to_alice = a.bob.encrypt(b"for alice")
        rejected(b.bob, to_bob, e2ee.AuthenticationError)
        rejected(b.alice, to_alice, e2ee.AuthenticationError)
        # Relabelled with the other session's id, they still do not authenticate.
        rejected(b.bob, _with_session_id(to_bob, b.bob.session_id), e2ee.AuthenticationError)
        rejected(b.alice, _with_session_id(to_alice, b.alice.session_id), e2ee.AuthenticationError)
        # And the right session still takes them.
        assert a.bob.decrypt(to_bob) == b"for bob"
        assert a.alice.decrypt(to_alice) == b"for alice"


def test_encode_flat_reproduces_wire_messages() -> None:
    """The re-encoder used to relabel messages is exact (so relabelled bytes differ only in
    the field that was changed)."""
    pair = make_pair()
    for wire in (pair.alice.encrypt(b"x"), pair.bob.encrypt(b"y")):
        items, _ = codec.read_flat_array(wire, 10**6)
        assert encode_flat(items) == wire
