"""A hostile network between two parties, as a hypothesis state machine.

The network can deliver, drop, duplicate, reorder and delay messages, replay any message ever
sent, tamper with any byte, reflect a message back to its sender, inject forged messages
(without header encryption: clear headers naming any ratchet key, with counters and PN values up
to 2^32 - 1; with it: headers that open under no key, and genuine headers glued to forged
ciphertexts), and lets either party save and reload its state (plain or sealed) at any time.
Reloading means a process restart from the state the client persisted after its last operation:
it is a round trip, never a rollback (rollback is tests/test_rollback.py).

The expected outcome of every genuine message is computed by :class:`ReceiverModel`, an exact
model of the receiving side of spec/ratchet.md (sections 6 to 9) kept in terms of the sender's
chains, and checked against the library. Invariants, after every step:

* a genuine message that arrives within the limits decrypts to exactly what was sent, once;
* a second copy raises ``DuplicateMessageError`` -- while its chain is remembered. After the
  receiver has started more than ``MAX_RECEIVING_CHAINS`` (5) newer receiving chains, the old
  chain is forgotten together with its keys, and a very old copy is no longer recognised: with
  header encryption its header opens under no key, ``AuthenticationError``; without, its clear
  ratchet key names no remembered chain, so it is taken for a new chain and fails the MAC,
  ``AuthenticationError``, or, if its number exceeds ``MAX_SKIP``, ``TooManySkippedError``
  (spec/ratchet.md, section 9). Copies of messages whose keys were evicted (more than
  ``MAX_SKIPPED_KEYS`` stored) or dropped at a DH step (more than ``MAX_PREVIOUS_CHAIN_SKIP``
  left on the old chain) are ``DuplicateMessageError``, like used keys;
* a genuine message beyond the limits (``N - Nr > MAX_SKIP`` on the current chain, ``N >
  MAX_SKIP`` opening a new chain) raises ``TooManySkippedError`` and can still be accepted later,
  once a message in between has arrived;
* every tampered, reflected or forged message raises a typed e2ee error (for forged clear headers
  and forged ciphertexts under genuine headers, exactly the one the model predicts);
* after any failure the party's serialised session (and, for ``accept_session``, account) is
  byte-identical to before;
* the skipped-key store never exceeds ``MAX_SKIPPED_KEYS`` and holds exactly the keys the model
  predicts, chain by chain, in order;
* both parties keep being able to talk: at the end (teardown) the network retransmits the fewest
  archived messages needed to bring each receiver within ``MAX_SKIP`` of its sender's chain (a
  network that loses more than ``MAX_SKIP`` consecutive messages of a chain for good cuts that
  direction off: that is the limit working as specified), then a fresh exchange both ways must
  succeed. The ``probe_liveness`` rule checks the same on copies of both parties mid-run.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import e2ee
from e2ee.errors import (
    AuthenticationError,
    DecodeError,
    DuplicateMessageError,
    E2EEError,
    RemoteError,
    TooManySkippedError,
)
from e2ee.limits import (
    MAX_COUNTER,
    MAX_PREVIOUS_CHAIN_SKIP,
    MAX_RECEIVING_CHAINS,
    MAX_SKIP,
    MAX_SKIPPED_KEYS,
    MAX_STATE_SIZE,
)
from e2ee.testing import DeterministicProvider
from e2ee.wire import codec
from e2ee.wire.messages import message_prefix, parse_message
from tests.helpers import NOW

ALICE, BOB = "alice", "bob"
PARTIES = (ALICE, BOB)
OTHER = {ALICE: BOB, BOB: ALICE}
STATE_KEY = bytes(range(32))


class Outcome(enum.Enum):
    ACCEPT = "accept"
    DUPLICATE = "duplicate"
    TOO_MANY = "too_many"
    AUTH = "auth"
    DECODE = "decode"


ERROR_OF = {
    Outcome.DUPLICATE: DuplicateMessageError,
    Outcome.TOO_MANY: TooManySkippedError,
    Outcome.AUTH: AuthenticationError,
    Outcome.DECODE: DecodeError,
}


# --- the model of a receiver -----------------------------------------------------------------


@dataclass
class ReceiverModel:
    """The receiving half of one party, in terms of the peer's sending chains.

    A chain is named by the sender's ratchet public key while it sent on it (which is also the
    library's chain reference without header encryption; with header encryption the library
    names it by its header key, one to one). ``chains`` mirrors the skipped-key store:
    remembered chains oldest first, each with its stored message numbers in insertion order.
    """

    header_encryption: bool
    dhr: bytes | None
    """The peer ratchet key the library compares clear headers with (``DHr``)."""
    current: bytes | None = None
    nr: int = 0
    chains: dict[bytes, dict[int, None]] = field(default_factory=dict)
    seen: set[bytes] = field(default_factory=set)
    """Every chain ever started (remembered or forgotten)."""

    def count(self) -> int:
        return sum(len(keys) for keys in self.chains.values())

    def predict(self, chain: bytes, n: int) -> Outcome:
        """What the library must do with a genuine message ``n`` of ``chain``."""
        if chain in self.chains:
            if chain == self.current and n >= self.nr:
                return Outcome.TOO_MANY if n - self.nr > MAX_SKIP else Outcome.ACCEPT
            return Outcome.ACCEPT if n in self.chains[chain] else Outcome.DUPLICATE
        if chain in self.seen:  # a forgotten chain
            if self.header_encryption or n <= MAX_SKIP:
                return Outcome.AUTH
            return Outcome.TOO_MANY
        return Outcome.TOO_MANY if n > MAX_SKIP else Outcome.ACCEPT

    def predict_forged_clear(self, ratchet_key: bytes, n: int) -> Outcome:
        """What the library must do with a forged clear header and a forged ciphertext."""
        if n >= MAX_COUNTER:
            return Outcome.DECODE  # a number no sender uses (spec/ratchet.md, step 5)
        if ratchet_key == self.dhr or ratchet_key in self.chains:
            if ratchet_key == self.dhr and self.current is None:
                return Outcome.AUTH  # no receiving chain yet
            if n < self.nr or ratchet_key != self.current:
                stored = n in self.chains.get(ratchet_key, {})
                return Outcome.AUTH if stored else Outcome.DUPLICATE
            return Outcome.TOO_MANY if n - self.nr > MAX_SKIP else Outcome.AUTH
        return Outcome.TOO_MANY if n > MAX_SKIP else Outcome.AUTH

    def accept(self, chain: bytes, n: int, pn: int) -> None:
        """Commit an accepted genuine message (spec/ratchet.md, section 6)."""
        if chain in self.chains:
            if chain == self.current and n >= self.nr:
                self._store(chain, range(self.nr, n))
                self.nr = n + 1
            else:
                del self.chains[chain][n]
            return
        if self.current is not None and pn > self.nr:
            count = min(pn - self.nr, MAX_PREVIOUS_CHAIN_SKIP)
            self._store(self.current, range(self.nr, self.nr + count))
        self.chains[chain] = {}
        self.seen.add(chain)
        while len(self.chains) > MAX_RECEIVING_CHAINS:
            del self.chains[next(iter(self.chains))]
        self._store(chain, range(n))
        self.current = chain
        self.dhr = chain
        self.nr = n + 1

    def _store(self, chain: bytes, numbers: range) -> None:
        keys = self.chains.get(chain)
        if keys is None:
            return
        total = self.count()
        for number in numbers:
            keys[number] = None
            total += 1
            while total > MAX_SKIPPED_KEYS:
                oldest = next(k for k in self.chains.values() if k)
                del oldest[next(iter(oldest))]
                total -= 1


# --- the network -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Packet:
    """A genuine message, with what the sender knew when it made it."""

    sender: str
    wire: bytes
    plaintext: bytes
    chain: bytes
    n: int
    pn: int


@dataclass
class Party:
    account: e2ee.Account
    session: e2ee.Session
    model: ReceiverModel
    received: set[bytes] = field(default_factory=set)


def event(value: str) -> None:
    """Record a hypothesis event when running under hypothesis (the scripted test is not)."""
    if currently_in_test_context():
        hypothesis_event(value)


def session_fields(session: e2ee.Session) -> dict[int, Any]:
    """The persisted session map (spec/state.md, section 3)."""
    value: dict[int, Any] = codec.decode(session.to_bytes(), max_size=MAX_STATE_SIZE)
    return value


def forged_ciphertext(blocks: int, fill: int) -> bytes:
    """A ciphertext field of a valid length (``blocks`` CBC blocks and a tag)."""
    return bytes([fill]) * (16 * blocks + 16)


class HostileNetwork(RuleBasedStateMachine):
    header_encryption: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self.parties: dict[str, Party] = {}
        self.in_flight: list[Packet] = []
        self.archive: list[Packet] = []
        self.by_chain: dict[tuple[bytes, int], Packet] = {}
        self.provider = DeterministicProvider(b"hostile")
        self.clean = False

    # --- plumbing ------------------------------------------------------------------------

    def _send(self, sender: str, pad: int) -> Packet:
        party = self.parties[sender]
        ratchet = party.session._ratchet
        chain, n, pn = ratchet.dhs_public, ratchet.ns, ratchet.pn
        plaintext = b"%s#%d|" % (sender.encode(), len(self.archive)) + b"." * pad
        wire = party.session.encrypt(plaintext, provider=self.provider)
        packet = Packet(sender, wire, plaintext, chain, n, pn)
        self.archive.append(packet)
        self.by_chain[(chain, n)] = packet
        return packet

    def _deliver(self, packet: Packet) -> Outcome:
        """Deliver a genuine message to its receiver; the outcome must be the model's."""
        receiver = self.parties[OTHER[packet.sender]]
        expected = receiver.model.predict(packet.chain, packet.n)
        if expected is Outcome.ACCEPT:
            assert packet.wire not in receiver.received
            plaintext = receiver.session.decrypt(packet.wire, provider=self.provider)
            assert plaintext == packet.plaintext
            receiver.model.accept(packet.chain, packet.n, packet.pn)
            receiver.received.add(packet.wire)
        else:
            self._refused(receiver, packet.wire, ERROR_OF[expected])
        event(f"genuine delivery: {expected.value}")
        return expected

    def _refused(
        self, receiver: Party, wire: bytes, expected: type[RemoteError] = RemoteError
    ) -> RemoteError:
        """``receiver`` refuses ``wire`` with ``expected`` and does not change at all."""
        before = receiver.session.to_bytes()
        with pytest.raises(E2EEError) as info:
            receiver.session.decrypt(wire, provider=self.provider)
        assert isinstance(info.value, expected), (type(info.value), expected)
        assert receiver.session.to_bytes() == before
        event(f"refused: {type(info.value).__name__}")
        return info.value

    def _exchange(self, alice: e2ee.Session, bob: e2ee.Session) -> None:
        for label in (b"fresh-1", b"fresh-2"):
            assert bob.decrypt(alice.encrypt(label + b"a", provider=self.provider)) == label + b"a"
            assert alice.decrypt(bob.encrypt(label + b"b", provider=self.provider)) == label + b"b"

    # --- set-up --------------------------------------------------------------------------

    @initialize(seed=st.binary(min_size=1, max_size=4))
    def setup(self, seed: bytes) -> None:
        self.clean = False
        self.provider = DeterministicProvider(b"hostile-network/" + seed)
        bob_account = e2ee.Account.generate(provider=self.provider, now=NOW)
        bob_account.generate_one_time_prekeys(1, provider=self.provider)
        alice_account = e2ee.Account.generate(provider=self.provider, now=NOW)
        alice = alice_account.start_session(
            bob_account.prekey_bundle(),
            config=e2ee.SessionConfig(header_encryption=self.header_encryption),
            provider=self.provider,
            now=NOW,
        )
        self.parties[ALICE] = Party(
            alice_account,
            alice,
            ReceiverModel(self.header_encryption, dhr=alice._ratchet.dhr),
        )
        first = self._send(ALICE, 0)
        bob, plaintext = bob_account.accept_session(first.wire, provider=self.provider, now=NOW)
        assert plaintext == first.plaintext
        bob_model = ReceiverModel(self.header_encryption, dhr=None)
        bob_model.accept(first.chain, first.n, first.pn)
        self.parties[BOB] = Party(bob_account, bob, bob_model, {first.wire})
        self.clean = True

    # --- the network's moves ---------------------------------------------------------------

    @rule(sender=st.sampled_from(PARTIES), pad=st.integers(0, 40), count=st.integers(1, 3))
    def send(self, sender: str, pad: int, count: int) -> None:
        self.clean = False
        self.in_flight += [self._send(sender, pad) for _ in range(count)]

    @rule(
        sender=st.sampled_from(PARTIES),
        count=st.sampled_from([2, 7, MAX_SKIP, MAX_SKIP + 1, MAX_PREVIOUS_CHAIN_SKIP + 40]),
    )
    def burst(self, sender: str, count: int) -> None:
        """Send many; the network carries only the first and the last, the rest are delayed
        indefinitely (reachable through ``replay``)."""
        self.clean = False
        packets = [self._send(sender, 0) for _ in range(count)]
        self.in_flight += [packets[0], packets[-1]]

    @precondition(lambda self: self.in_flight)
    @rule(
        action=st.sampled_from(["deliver", "deliver", "deliver", "duplicate", "drop"]),
        index=st.integers(0, 2**16),
    )
    def network(self, action: str, index: int) -> None:
        """Deliver, duplicate or drop any in-flight message: reordering and delay are the
        choice of index."""
        self.clean = False
        at = index % len(self.in_flight)
        if action == "deliver":
            self._deliver(self.in_flight.pop(at))
        elif action == "duplicate":
            self.in_flight.append(self.in_flight[at])
        else:
            del self.in_flight[at]

    @rule(index=st.integers(0, 2**16), newest=st.booleans())
    def replay(self, index: int, newest: bool) -> None:
        """Deliver any message ever sent (a late copy, or a long-delayed first copy)."""
        self.clean = False
        archive = self.archive
        packet = (
            archive[-1 - index % min(len(archive), 8)] if newest else archive[index % len(archive)]
        )
        self._deliver(packet)

    @rule(
        index=st.integers(0, 2**16),
        position=st.integers(0, 2**16),
        mask=st.integers(1, 255),
        how=st.sampled_from(["flip", "truncate", "extend", "reflect"]),
    )
    def tamper(self, index: int, position: int, mask: int, how: str) -> None:
        """Change any byte (or the length) of any message ever sent, or send it back to its
        sender. Nothing of the kind can decrypt."""
        self.clean = False
        packet = self.archive[index % len(self.archive)]
        wire = packet.wire
        receiver = self.parties[OTHER[packet.sender]]
        if how == "flip":
            at = position % len(wire)
            wire = wire[:at] + bytes([wire[at] ^ mask]) + wire[at + 1 :]
        elif how == "truncate":
            wire = wire[: position % len(wire)]
        elif how == "extend":
            wire = wire + bytes([mask]) * (1 + position % 40)
        else:
            receiver = self.parties[packet.sender]
        self._tampered(receiver, wire)

    def _tampered(self, receiver: Party, wire: bytes) -> None:
        try:
            info = e2ee.peek(wire)
        except E2EEError:
            info = None
        if (
            info is not None
            and info.is_initial
            and receiver is self.parties[BOB]
            and info.session_id != receiver.session.session_id
        ):
            # A client routes an initial message of an unknown session to accept_session.
            account = receiver.account
            before = account.to_bytes()
            with pytest.raises(RemoteError):
                account.accept_session(wire, provider=self.provider, now=NOW)
            assert account.to_bytes() == before
            event("tampered initial message refused by the account")
            return
        self._refused(receiver, wire)

    @rule(
        index=st.integers(0, 2**16),
        blocks=st.integers(1, 4),
        fill=st.integers(0, 255),
    )
    def forge_ciphertext(self, index: int, blocks: int, fill: int) -> None:
        """A genuine header (and initial fields) with a forged ciphertext: the header is
        processed as the genuine message's would be, then the MAC fails."""
        self.clean = False
        packet = self.archive[index % len(self.archive)]
        receiver = self.parties[OTHER[packet.sender]]
        prefix = parse_message(packet.wire).mac_prefix
        wire = prefix + codec.encode_bytes(forged_ciphertext(blocks, fill))
        expected = receiver.model.predict(packet.chain, packet.n)
        self._refused(
            receiver,
            wire,
            AuthenticationError if expected is Outcome.ACCEPT else ERROR_OF[expected],
        )

    @rule(index=st.integers(0, 2**16))
    def replay_to_account(self, index: int) -> None:
        """Any of Alice's initial-form messages handed to Bob's account again (a relay that
        replays the session's creation): the one-time prekey it used is gone."""
        self.clean = False
        initial = [p for p in self.archive if p.sender == ALICE and e2ee.peek(p.wire).is_initial]
        wire = initial[index % len(initial)].wire
        account = self.parties[BOB].account
        before = account.to_bytes()
        with pytest.raises(RemoteError):
            account.accept_session(wire, provider=self.provider, now=NOW)
        assert account.to_bytes() == before

    @rule(party=st.sampled_from(PARTIES), sealed=st.booleans())
    def save_and_reload(self, party: str, sealed: bool) -> None:
        """A restart: the client reloads what it persisted after its last operation."""
        self.clean = False
        p = self.parties[party]
        plain = p.session.to_bytes()
        key = STATE_KEY if sealed else None
        p.session = e2ee.Session.from_bytes(
            p.session.to_bytes(key=key, provider=self.provider), key=key
        )
        assert p.session.to_bytes() == plain
        account_plain = p.account.to_bytes()
        p.account = e2ee.Account.from_bytes(
            p.account.to_bytes(key=key, provider=self.provider), key=key
        )
        assert p.account.to_bytes() == account_plain

    @rule()
    def probe_liveness(self) -> None:
        """Copies of both parties can still talk both ways right now (with no retransmission:
        only when neither receiver is beyond ``MAX_SKIP`` of its sender's chain)."""
        self.clean = False
        if all(self._next_outcome(s) is Outcome.ACCEPT for s in PARTIES):
            alice = e2ee.Session.from_bytes(self.parties[ALICE].session.to_bytes())
            bob = e2ee.Session.from_bytes(self.parties[BOB].session.to_bytes())
            self._exchange(alice, bob)
        else:
            event("a direction is beyond MAX_SKIP until the network retransmits")

    def _next_outcome(self, sender: str) -> Outcome:
        ratchet = self.parties[sender].session._ratchet
        return self.parties[OTHER[sender]].model.predict(ratchet.dhs_public, ratchet.ns)

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def store_matches_the_model(self) -> None:
        if not self.parties:
            return
        for party in self.parties.values():
            fields = session_fields(party.session)
            stored = fields[22]
            assert party.session.skipped_key_count <= MAX_SKIPPED_KEYS
            assert party.session.skipped_key_count == party.model.count()
            assert [[n for n, _ in keys] for _, keys in stored] == [
                list(keys) for keys in party.model.chains.values()
            ]
            if not self.header_encryption:
                assert [reference for reference, _ in stored] == list(party.model.chains)
            if party.model.current is not None:
                assert fields[16] == party.model.nr
        self.clean = True

    def teardown(self) -> None:
        if not self.clean or not self.parties:
            return  # a step failed: report that failure, not a consequence of it
        for sender in PARTIES:
            self._retransmit_until_within_limits(sender)
        self._exchange(self.parties[ALICE].session, self.parties[BOB].session)

    def _retransmit_until_within_limits(self, sender: str) -> None:
        ratchet = self.parties[sender].session._ratchet
        model = self.parties[OTHER[sender]].model
        while self._next_outcome(sender) is not Outcome.ACCEPT:
            assert self._next_outcome(sender) is Outcome.TOO_MANY
            start = model.nr if ratchet.dhs_public == model.current else 0
            packet = self.by_chain[(ratchet.dhs_public, start + MAX_SKIP)]
            assert self._deliver(packet) is Outcome.ACCEPT
            event("teardown retransmitted a message")


class HostileNetworkHeaderEncryption(HostileNetwork):
    header_encryption = True

    @rule(
        target_party=st.sampled_from(PARTIES),
        header=st.binary(min_size=80, max_size=80),
        blocks=st.integers(1, 3),
    )
    def forge_encrypted_header(self, target_party: str, header: bytes, blocks: int) -> None:
        """With header encryption a forger holds no header key: its header opens under none."""
        self.clean = False
        party = self.parties[target_party]
        wire = (
            message_prefix(party.session.session_id, None)
            + codec.encode_bytes(header)
            + codec.encode_bytes(bytes(16 * blocks + 16))
        )
        self._refused(party, wire, AuthenticationError)


class HostileNetworkClearHeaders(HostileNetwork):
    header_encryption = False

    @rule(
        target_party=st.sampled_from(PARTIES),
        which=st.sampled_from(["random", "dhr", "remembered", "own", "zero"]),
        choice=st.integers(0, 2**16),
        n=st.one_of(
            st.integers(0, MAX_COUNTER),
            st.sampled_from([0, 1, MAX_SKIP, MAX_SKIP + 1, MAX_COUNTER]),
        ),
        relative=st.booleans(),
        pn=st.one_of(st.integers(0, MAX_COUNTER), st.sampled_from([0, MAX_COUNTER])),
        blocks=st.integers(1, 3),
    )
    def forge_clear_header(
        self,
        target_party: str,
        which: str,
        choice: int,
        n: int,
        relative: bool,
        pn: int,
        blocks: int,
    ) -> None:
        """A forged normal message with a clear header naming any ratchet key, any counter and
        any PN (with ``relative``, ``N`` is ``Nr - 3 .. Nr + 3`` of the target)."""
        self.clean = False
        party = self.parties[target_party]
        model = party.model
        if which == "random":
            key = DeterministicProvider(b"forge" + choice.to_bytes(4, "big")).random_bytes(32)
        elif which == "dhr" and model.dhr is not None:
            key = model.dhr
        elif which == "remembered" and model.chains:
            key = list(model.chains)[choice % len(model.chains)]
        elif which == "own":
            key = party.session._ratchet.dhs_public
        else:
            key = bytes(32)  # a small-order point
        if relative:
            n = max(0, model.nr + n % 7 - 3)
        header = key + pn.to_bytes(4, "big") + n.to_bytes(4, "big")
        wire = (
            message_prefix(party.session.session_id, None)
            + codec.encode_bytes(header)
            + codec.encode_bytes(forged_ciphertext(blocks, choice % 256))
        )
        self._refused(party, wire, ERROR_OF[model.predict_forged_clear(key, n)])


MACHINE_SETTINGS = settings(
    stateful_step_count=100,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestHostileNetworkHeaderEncryption = HostileNetworkHeaderEncryption.TestCase
TestHostileNetworkHeaderEncryption.settings = MACHINE_SETTINGS
TestHostileNetworkClearHeaders = HostileNetworkClearHeaders.TestCase
TestHostileNetworkClearHeaders.settings = MACHINE_SETTINGS


# --- the limits, driven deterministically through the same machine and model ---------------


@pytest.mark.parametrize(
    "machine_class",
    [
        pytest.param(HostileNetworkHeaderEncryption, id="header-encryption"),
        pytest.param(HostileNetworkClearHeaders, id="clear-header"),
    ],
)
def test_limits_scripted_through_the_model(machine_class: type[HostileNetwork]) -> None:
    """The paths random runs reach only rarely, each checked against the model: a previous
    chain longer than MAX_PREVIOUS_CHAIN_SKIP, the MAX_SKIPPED_KEYS eviction, a message too far
    ahead on the current chain, and a chain forgotten after MAX_RECEIVING_CHAINS newer ones."""
    machine = machine_class()
    machine.setup(b"scripted")

    def deliver(packet: Packet, expected: Outcome) -> None:
        assert machine._deliver(packet) is expected
        machine.store_matches_the_model()

    def round_trip(label: int) -> tuple[Packet, Packet]:
        """Bob then Alice send one message each, delivered: one DH step on each side."""
        from_bob = machine._send(BOB, label)
        deliver(from_bob, Outcome.ACCEPT)
        from_alice = machine._send(ALICE, label)
        deliver(from_alice, Outcome.ACCEPT)
        return from_bob, from_alice

    # 1. Alice's chain runs MAX_PREVIOUS_CHAIN_SKIP + 40 ahead of Bob when she ratchets: Bob
    #    keeps the keys of the first MAX_PREVIOUS_CHAIN_SKIP of them and drops the rest. (Bob's
    #    oldest chain, Alice's first, keeps no key: eviction has to pass over it.)
    round_trip(0)
    long_chain = [machine._send(ALICE, 0) for _ in range(MAX_PREVIOUS_CHAIN_SKIP + 40)]
    deliver(long_chain[0], Outcome.ACCEPT)
    round_trip(1)
    deliver(long_chain[-1], Outcome.DUPLICATE)  # dropped at the DH step
    deliver(long_chain[500], Outcome.ACCEPT)  # a stored skipped key
    deliver(long_chain[500], Outcome.DUPLICATE)
    assert machine.parties[BOB].session.skipped_key_count == MAX_PREVIOUS_CHAIN_SKIP - 1

    # 2. Too far ahead on the current chain, then accepted once a message in between arrived.
    ahead = [machine._send(ALICE, 0) for _ in range(MAX_SKIP + 2)]
    deliver(ahead[-1], Outcome.TOO_MANY)
    deliver(ahead[0], Outcome.ACCEPT)
    deliver(ahead[-1], Outcome.ACCEPT)
    assert machine.parties[BOB].session.skipped_key_count == MAX_SKIPPED_KEYS - 1

    # 3. More skipped keys than MAX_SKIPPED_KEYS: the oldest (long_chain's) are evicted.
    round_trip(2)
    more = [machine._send(ALICE, 0) for _ in range(50)]
    deliver(more[-1], Outcome.ACCEPT)
    assert machine.parties[BOB].session.skipped_key_count == MAX_SKIPPED_KEYS
    deliver(long_chain[1], Outcome.DUPLICATE)  # evicted
    deliver(more[3], Outcome.ACCEPT)

    # 4. MAX_RECEIVING_CHAINS newer chains later, the first chains are forgotten.
    old = machine.archive[0]  # Alice's very first message
    for label in range(3, 3 + MAX_RECEIVING_CHAINS):
        round_trip(label)
    assert old.chain not in machine.parties[BOB].model.chains
    deliver(old, Outcome.AUTH)
    deliver(
        long_chain[MAX_SKIP + 1], Outcome.AUTH if machine.header_encryption else Outcome.TOO_MANY
    )
    deliver(more[4], Outcome.AUTH)
    machine.teardown()


def test_forged_clear_headers_scripted() -> None:
    """Forged clear headers at the corners of spec/ratchet.md section 6, each predicted by the
    model: the initiator before its first reply (a header naming the responder's signed prekey
    reaches the receiving chain that does not exist yet), used and stored numbers, the
    MAX_SKIP boundary on the current and on a new chain, the largest counters, a small-order
    key."""
    machine = HostileNetworkClearHeaders()
    machine.setup(b"forged")
    alice = machine.parties[ALICE]
    assert alice.model.dhr is not None
    assert alice.model.current is None
    for n in (0, 1, MAX_SKIP + 1, MAX_COUNTER):
        machine.forge_clear_header(ALICE, "dhr", 0, n, False, 0, 1)
    machine._deliver(machine._send(BOB, 0))  # Alice now has a receiving chain
    skipped_over = machine._send(BOB, 0)
    machine._deliver(machine._send(BOB, 0))  # ...with one skipped key
    assert alice.model.count() == 1
    for which in ("dhr", "random", "own", "zero"):
        for n, relative in [(k, True) for k in range(7)] + [
            (k, False) for k in (0, MAX_SKIP, MAX_SKIP + 1, MAX_COUNTER)
        ]:
            for pn in (0, MAX_COUNTER):
                machine.forge_clear_header(ALICE, which, 7, n, relative, pn, 2)
                machine.forge_clear_header(BOB, which, 7, n, relative, pn, 2)
    machine.forge_clear_header(ALICE, "dhr", 0, skipped_over.n, False, 0, 1)  # stored: MAC fails
    machine._deliver(skipped_over)
    machine.store_matches_the_model()
    machine.teardown()
