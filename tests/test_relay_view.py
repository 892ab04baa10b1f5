"""What the relay sees of normal messages, with header encryption on.

* No ratchet public key (of either party, at any point) and no counter (the 4-byte big-endian
  ``N`` or ``PN`` of the header, nor the 8-byte ``PN || N``) occurs anywhere in a normal message.
* Apart from the session id, which is the same for the whole session, no byte position of a
  normal message is constant within one sending chain and different in the next: nothing on the
  wire marks a DH ratchet step.
* Two normal messages with plaintexts of the same length have the same length, whatever the
  direction, chain or counter.

The same checks, run with header encryption off, flag the clear header (the control).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

import e2ee
from e2ee.testing import DeterministicProvider
from e2ee.wire.messages import message_prefix
from tests.helpers import NOW

ALICE, BOB = "alice", "bob"
PER_CHAIN = 8
"""Messages per sending chain: a random byte is constant over 8 messages with chance 2^-56."""


@dataclass(frozen=True)
class Normal:
    sender: str
    chain: int
    """Index of the sender's sending chain (0, 1, ...)."""
    wire: bytes
    ratchet_key: bytes
    pn: int
    n: int


def conversation(
    header_encryption: bool, turns: int = 4, size: int = 20
) -> tuple[e2ee.Session, list[Normal], set[bytes]]:
    """Ping-pong in bursts of PER_CHAIN equal-length messages, each burst on a new chain.
    Returns Alice's session, the normal messages and every ratchet public key either party
    had (including the responder's signed prekey, its first ratchet key)."""
    provider = DeterministicProvider(f"relay-{header_encryption}")
    bob_account = e2ee.Account.generate(provider=provider, now=NOW)
    bob_account.generate_one_time_prekeys(1, provider=provider)
    alice_account = e2ee.Account.generate(provider=provider, now=NOW)
    sessions = {
        ALICE: alice_account.start_session(
            bob_account.prekey_bundle(),
            config=e2ee.SessionConfig(header_encryption=header_encryption),
            provider=provider,
            now=NOW,
        )
    }
    keys = {sessions[ALICE]._ratchet.dhs_public, bob_account.prekey_bundle().signed_prekey}
    sessions[BOB], _ = bob_account.accept_session(
        sessions[ALICE].encrypt(b"x" * size, provider=provider), provider=provider, now=NOW
    )
    normal: list[Normal] = []
    chain = {ALICE: 0, BOB: 0}
    for turn in range(turns):
        for sender, receiver in ((BOB, ALICE), (ALICE, BOB)):
            session = sessions[sender]
            for _ in range(PER_CHAIN):
                r = session._ratchet
                ratchet_key, pn, n = r.dhs_public, r.pn, r.ns
                keys.add(ratchet_key)
                wire = session.encrypt(b"y" * size, provider=provider)
                assert sessions[receiver].decrypt(wire, provider=provider) == b"y" * size
                if turn or sender == BOB:  # Alice's first chain is in the initial form
                    normal.append(Normal(sender, chain[sender], wire, ratchet_key, pn, n))
            chain[sender] += 1
    keys |= {s._ratchet.dhs_public for s in sessions.values()}
    return sessions[ALICE], normal, keys


def constant_positions(messages: list[bytes]) -> dict[int, int]:
    first = messages[0]
    assert all(len(m) == len(first) for m in messages)
    return {i: b for i, b in enumerate(first) if all(m[i] == b for m in messages)}


def chain_markers(messages: list[Normal], session_id_span: range) -> list[int]:
    """Byte positions outside the session id that are constant within a sending chain and
    differ between that chain and the sender's next one."""
    markers = set()
    for sender in (ALICE, BOB):
        chains = sorted({m.chain for m in messages if m.sender == sender})
        for a, b in itertools.pairwise(chains):
            first = constant_positions(
                [m.wire for m in messages if (m.sender, m.chain) == (sender, a)]
            )
            second = constant_positions(
                [m.wire for m in messages if (m.sender, m.chain) == (sender, b)]
            )
            markers |= {
                i
                for i in first.keys() & second.keys()
                if first[i] != second[i] and i not in session_id_span
            }
    return sorted(markers)


def session_id_span(session: e2ee.Session) -> range:
    prefix = message_prefix(session.session_id, None)
    assert prefix.endswith(session.session_id)
    return range(len(prefix) - len(session.session_id), len(prefix))


def counter_encodings(message: Normal) -> list[bytes]:
    return [
        message.n.to_bytes(4, "big"),
        message.pn.to_bytes(4, "big"),
        message.pn.to_bytes(4, "big") + message.n.to_bytes(4, "big"),
    ]


def test_no_ratchet_key_or_counter_in_normal_messages() -> None:
    alice, messages, keys = conversation(True)
    assert len({m.chain for m in messages if m.sender == ALICE}) >= 3
    for message in messages:
        assert alice.session_id in message.wire
        for key in keys:
            assert key not in message.wire
        for encoding in counter_encodings(message):
            assert encoding not in message.wire


def test_control_clear_headers_show_keys_and_counters() -> None:
    _, messages, keys = conversation(False)
    assert all(m.ratchet_key in m.wire for m in messages)
    assert all(any(e in m.wire for e in counter_encodings(m)) for m in messages)
    assert any(key in m.wire for m in messages for key in keys)


def test_no_byte_position_marks_a_new_chain() -> None:
    alice, messages, _ = conversation(True)
    span = session_id_span(alice)
    assert chain_markers(messages, span) == []
    # The session id itself is constant for the whole session.
    for message in messages:
        assert message.wire[span.start : span.stop] == alice.session_id


def test_control_clear_headers_mark_every_new_chain() -> None:
    alice, messages, _ = conversation(False)
    markers = chain_markers(messages, session_id_span(alice))
    header_start = len(message_prefix(alice.session_id, None)) + 2  # bstr head of 40 bytes
    assert set(range(header_start, header_start + 32)) & set(markers)


@pytest.mark.parametrize("header_encryption", [True, False], ids=["he", "clear"])
@given(
    sizes=st.lists(st.integers(0, 300), min_size=2, max_size=12),
    order=st.lists(st.booleans(), min_size=12, max_size=12),
)
def test_equal_plaintext_lengths_give_equal_message_lengths(
    header_encryption: bool, sizes: list[int], order: list[bool]
) -> None:
    """Whatever the direction, chain or counter: the length is a function of the plaintext
    length alone (to the next multiple of 16)."""
    provider = DeterministicProvider("relay-lengths")
    bob_account = e2ee.Account.generate(provider=provider, now=NOW)
    bob_account.generate_one_time_prekeys(1, provider=provider)
    alice_account = e2ee.Account.generate(provider=provider, now=NOW)
    alice = alice_account.start_session(
        bob_account.prekey_bundle(),
        config=e2ee.SessionConfig(header_encryption=header_encryption),
        provider=provider,
        now=NOW,
    )
    bob, _ = bob_account.accept_session(
        alice.encrypt(b"", provider=provider), provider=provider, now=NOW
    )
    alice.decrypt(bob.encrypt(b"", provider=provider), provider=provider)
    length_of: dict[int, int] = {}
    for size, from_alice in zip(sizes, order, strict=False):
        sender, receiver = (alice, bob) if from_alice else (bob, alice)
        for _ in range(1 + size % 3):
            wire = sender.encrypt(bytes(size), provider=provider)
            receiver.decrypt(wire, provider=provider)
            assert length_of.setdefault(size, len(wire)) == len(wire)
            assert e2ee.peek(wire).kind == "normal"
    for a, la in length_of.items():
        for b, lb in length_of.items():
            assert (la == lb) == (a // 16 == b // 16)
