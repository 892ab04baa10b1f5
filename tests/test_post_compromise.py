"""Post-compromise security as a property: a stolen state stops working once the ratchet heals.

The attacker clones a party's complete session state at time t and then stays passive: it sees
every ciphertext in both directions and nothing else. It is given more than it could have:

* the clone itself, loaded fresh for each message, and a *greedy* clone that decrypts, in send
  order, every message to the victim that it can (following DH steps with its own randomness);
* the closure of the stolen state (tests/test_forward_secrecy.py) taken two DH steps deep: from
  the stolen root key, every root and chain key obtained by combining the stolen ratchet private
  key with any ratchet public key ever sent, twice over, plus the stolen chain keys and skipped
  keys, each chain walked past the longest chain of the conversation.

Healing is one DH ratchet round trip with randomness the attacker does not know: the victim
receives a new chain and draws a fresh ratchet key, and the peer receives a message of a chain
built on that fresh key and draws its own. From then on no message, in either direction, is
decryptable by the clone or has its key in the closure. The negative control shows the test has
teeth: before healing, the clone decrypts the peer's messages (on the current chain and on the
peer's next chain, which is built on the stolen ratchet key) and the closure holds the keys of
both directions.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st

import e2ee
from e2ee.crypto import primitives
from e2ee.errors import E2EEError
from e2ee.ratchet import chains
from e2ee.testing import DeterministicProvider
from tests.test_forward_secrecy import ALICE, BOB, OTHER, Conversation, Sent, state_map, walk

HEADER_MODES = [pytest.param(True, id="he"), pytest.param(False, id="clear")]


def deep_closure(
    state: bytes, ratchet_keys: Iterable[bytes], steps: int, depth: int = 2
) -> set[bytes]:
    """Message keys derivable from a stolen session state and the public ratchet keys."""
    f = state_map(state)
    header_encryption, dhs_private = f[4], f[10]
    keys = {key for _, stored in f[22] for _, key in stored}
    for chain_key in (f[13], f[14]):
        if chain_key is not None:
            keys |= walk(chain_key, steps)
    kdf = chains.kdf_rk_he if header_encryption else chains.kdf_rk
    shared = []
    for public in set(ratchet_keys):
        try:
            shared.append(primitives.x25519(dhs_private, public))
        except E2EEError:
            continue
    frontier = {f[9]}
    for _ in range(depth):
        reached = set()
        for root_key in frontier:
            for dh in shared:
                out = kdf(root_key, dh)
                keys |= walk(out[1], steps)
                reached.add(out[0])
        frontier = reached
    return keys


def clone_decrypts(state: bytes, message: Sent) -> bool:
    try:
        e2ee.Session.from_bytes(state).decrypt(message.wire, provider=DeterministicProvider("x"))
    except E2EEError:
        return False
    return True


def greedy_clone(state: bytes, messages: list[Sent], victim: str) -> set[bytes]:
    """Wire bytes of the messages to ``victim`` that a clone decrypts, processing all of them
    in send order and keeping every state change it can make."""
    clone = e2ee.Session.from_bytes(state)
    provider = DeterministicProvider("attacker")
    opened = set()
    for message in messages:
        if message.sender != victim:
            try:
                clone.decrypt(message.wire, provider=provider)
            except E2EEError:
                continue
            opened.add(message.wire)
    return opened


class Watch:
    """Tracks healing after a clone of ``victim`` was taken."""

    def __init__(self, conversation: Conversation, victim: str) -> None:
        self.c = conversation
        self.victim = victim
        self.state = conversation.sessions[victim].to_bytes()
        self.stolen_ratchet_key = conversation.sessions[victim]._ratchet.dhs_public
        self.fresh_victim_keys: set[bytes] = set()
        self.healed_at: int | None = None

    def observe(self) -> None:
        """Call after every delivery: has a round trip with fresh randomness completed?"""
        victim = self.c.sessions[self.victim]._ratchet
        if victim.dhs_public != self.stolen_ratchet_key:
            self.fresh_victim_keys.add(victim.dhs_public)
        peer = self.c.sessions[OTHER[self.victim]]._ratchet
        if self.healed_at is None and peer.dhr in self.fresh_victim_keys:
            self.healed_at = len(self.c.sent)

    def later(self) -> list[Sent]:
        assert self.healed_at is not None
        return self.c.sent[self.healed_at :]

    def check_healed(self) -> None:
        later = self.later()
        assert later, "no message after healing"
        steps = max(m.n for m in self.c.sent) + 1
        derivable = deep_closure(self.state, (m.ratchet_key for m in self.c.sent), steps)
        assert not derivable & {m.message_key for m in later}
        opened = greedy_clone(self.state, self.c.sent, self.victim)
        for message in later:
            assert message.wire not in opened
            if message.sender != self.victim:
                assert not clone_decrypts(self.state, message)


def exchange(c: Conversation, sender: str, watch: Watch | None = None) -> Sent:
    message = c.send(sender)
    assert c.deliver(message)
    if watch is not None:
        watch.observe()
    return message


@pytest.mark.parametrize("header_encryption", HEADER_MODES)
@pytest.mark.parametrize("victim", [ALICE, BOB])
def test_clone_works_until_one_round_trip_then_never(header_encryption: bool, victim: str) -> None:
    c = Conversation.start(header_encryption=header_encryption, seed=f"pcs-{victim}")
    peer = OTHER[victim]
    for _ in range(2):
        exchange(c, victim)
        exchange(c, peer)  # the victim just stepped: its sending chain is fresh and unused
    watch = Watch(c, victim)
    steps = 50

    # Negative control, before healing: the peer's messages on its current chain, the
    # victim's own next messages, and the peer's next chain (built on the stolen ratchet key).
    on_current = exchange(c, peer, watch)
    from_victim = exchange(c, victim, watch)
    on_next_chain = exchange(c, peer, watch)
    assert watch.healed_at is None
    derivable = deep_closure(watch.state, (m.ratchet_key for m in c.sent), steps)
    for message in (on_current, from_victim, on_next_chain):
        assert message.message_key in derivable
    assert clone_decrypts(watch.state, on_current)
    assert {on_current.wire, on_next_chain.wire} <= greedy_clone(watch.state, c.sent, victim)

    # The round trip: the victim stepped with a fresh key on on_next_chain; its reply makes the
    # peer step onto a chain built on that key.
    exchange(c, victim, watch)
    assert watch.healed_at is not None
    for _ in range(2):
        exchange(c, peer, watch)
        exchange(c, victim, watch)
    watch.check_healed()


OPS = st.lists(
    st.tuples(
        st.sampled_from(["send", "deliver", "drop"]),
        st.sampled_from([ALICE, BOB]),
        st.integers(0, 2**16),
    ),
    max_size=30,
)


@given(
    header_encryption=st.booleans(),
    victim=st.sampled_from([ALICE, BOB]),
    before=OPS,
    after=OPS,
)
def test_healing_after_random_traffic(
    header_encryption: bool,
    victim: str,
    before: list[tuple[str, str, int]],
    after: list[tuple[str, str, int]],
) -> None:
    """Random traffic (reordering, loss) before the clone and after it; then ping-pongs until
    the ratchet healed, and a little more. Every message sent after healing is safe."""
    c = Conversation.start(header_encryption=header_encryption, seed="pcs-random")
    in_flight: list[Sent] = []
    watch: Watch | None = None

    def run(ops: list[tuple[str, str, int]]) -> None:
        for op, party, index in ops:
            if op == "send":
                in_flight.append(c.send(party))
            elif in_flight:
                message = in_flight.pop(index % len(in_flight))
                if op == "deliver":
                    c.deliver(message)
                    if watch is not None:
                        watch.observe()

    run(before)
    watch = Watch(c, victim)
    run(after)
    for _ in range(3):
        exchange(c, OTHER[victim], watch)
        exchange(c, victim, watch)
    for message in list(in_flight):  # late deliveries after healing change nothing
        c.deliver(message)
    exchange(c, ALICE, watch)
    exchange(c, BOB, watch)
    watch.check_healed()
