"""Tests for requirements that had none yet (their rows in spec/TRACEABILITY.md said TODO).

One section per requirement id; each test states the requirement it checks.
"""

from __future__ import annotations

import ast
import hashlib
import hmac
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

import e2ee
from e2ee import errors as error_module
from e2ee import limits as limits_module
from e2ee.crypto import primitives
from e2ee.errors import (
    AuthenticationError,
    DecodeError,
    DuplicateMessageError,
    E2EEError,
    HandshakeError,
    LocalError,
    RelayError,
    RemoteError,
    SignatureError,
    StateError,
)
from e2ee.limits import (
    MAX_BASE_KEYS_PER_PREKEY,
    MAX_COUNTER,
    MAX_OLD_SIGNED_PREKEYS,
    MAX_ONE_TIME_PREKEYS,
    MAX_SKIP,
    MAX_STATE_SIZE,
    SIGNATURE_LABELS,
    SIGNED_PREKEY_GRACE_PERIOD,
)
from e2ee.ratchet import chains
from e2ee.testing import DeterministicProvider
from e2ee.wire import codec
from e2ee.wire.messages import PreKeyBundle, message_prefix, parse_message
from tests.conftest import PROJECT_ROOT
from tests.helpers import NOW, flip_bit, make_pair

SRC = PROJECT_ROOT / "src" / "e2ee"
TOOLING = ("vectors", "conformance", "cli", "testing.py")
"""Parts of the package that are test or command-line tooling, not protocol code."""


def _protocol_modules() -> list[Path]:
    return [
        path for path in sorted(SRC.rglob("*.py")) if path.relative_to(SRC).parts[0] not in TOOLING
    ]


def _edit_state(data: bytes, **changes: Any) -> bytes:
    """Re-encode a plain (unsealed) state map with some fields replaced (keys as ``f<n>``)."""
    value = codec.decode(data, max_size=MAX_STATE_SIZE)
    assert isinstance(value, dict)
    for name, new in changes.items():
        value[int(name[1:])] = new
    return codec.encode(value)


# --- REQ-PRIM-18: constant-time comparison of tags and secret-derived values ------------------


def test_message_tags_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """[REQ-PRIM-18] The truncated message tag goes through the constant-time comparison, for
    genuine and forged messages alike."""
    pair = make_pair(header_encryption=False)
    calls: list[tuple[bytes, bytes]] = []
    original = chains._equal

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(chains, "_equal", spy)
    first = pair.alice.encrypt(b"first", provider=pair.provider)
    second = pair.alice.encrypt(b"second", provider=pair.provider)
    with pytest.raises(AuthenticationError):
        pair.bob.decrypt(flip_bit(second, len(second) - 1), provider=pair.provider)
    assert len(calls) == 1
    assert calls[0][0] != calls[0][1]
    assert pair.bob.decrypt(second, provider=pair.provider) == b"second"
    assert pair.bob.decrypt(first, provider=pair.provider) == b"first"  # a skipped key
    assert len(calls) == 3
    assert all(len(a) == len(b) == 16 and a == b for a, b in calls[1:])


def test_initial_fields_hash_is_compared_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """[REQ-PRIM-18] A repeated initial message (the initiator has no reply yet) is matched
    against the session's initial-fields hash with the constant-time comparison."""
    provider = DeterministicProvider("prim-18")
    bob_account = e2ee.Account.generate(provider=provider, now=NOW)
    alice_account = e2ee.Account.generate(provider=provider, now=NOW)
    alice = alice_account.start_session(bob_account.prekey_bundle(), provider=provider, now=NOW)
    first = alice.encrypt(b"one", provider=provider)
    again = alice.encrypt(b"two", provider=provider)  # still the initial form
    bob, _ = bob_account.accept_session(first, provider=provider, now=NOW)
    calls: list[tuple[bytes, bytes]] = []
    original = primitives.constant_time_equal

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(primitives, "constant_time_equal", spy)
    assert bob.decrypt(again, provider=provider) == b"two"
    assert any(len(a) == len(b) == 32 and a == b for a, b in calls)


def test_the_small_order_check_uses_a_constant_time_comparison() -> None:
    """[REQ-PRIM-18] The all-zero DH output check in ``primitives.x25519`` is a
    ``compare_digest`` call, not ``==`` (libsodium refuses first; this is the backstop)."""
    tree = ast.parse((SRC / "crypto" / "primitives.py").read_text(encoding="utf-8"))
    function = next(
        node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "x25519"
    )
    calls = {
        node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        for node in ast.walk(function)
        if isinstance(node, ast.Call)
    }
    assert calls & {"compare_digest", "constant_time_equal"}
    comparisons = [
        node
        for node in ast.walk(function)
        if isinstance(node, ast.Compare)
        and any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops)
    ]
    assert comparisons == []


# --- REQ-HS-25 / REQ-LIM-06: replaced signed prekeys ------------------------------------------


def _bob_with_a_pending_first_message(
    seed: str,
) -> tuple[e2ee.Account, bytes, DeterministicProvider, list[bytes]]:
    """Bob's account, Alice's first message to his first signed prekey, the provider, and the
    secrets of that signed prekey (X25519 private key, ML-KEM seed, public keys)."""
    provider = DeterministicProvider(seed)
    bob = e2ee.Account.generate(provider=provider, now=NOW)
    spk_private, kem_seed = provider.drawn[1:3]
    alice = e2ee.Account.generate(provider=provider, now=NOW)
    bundle = bob.prekey_bundle()
    assert bundle.kem_prekey is not None
    session = alice.start_session(bundle, provider=provider, now=NOW)
    first = session.encrypt(b"hello Bob", provider=provider)
    return bob, first, provider, [spk_private, kem_seed, bundle.signed_prekey, bundle.kem_prekey]


def test_evicted_signed_prekey_is_deleted_and_refused() -> None:
    """[REQ-HS-25] A signed prekey that leaves the kept set (more than MAX_OLD_SIGNED_PREKEYS
    replacements) is deleted with its ML-KEM companion, and a first message naming it fails
    with HandshakeError, leaving the account unchanged."""
    bob, first, provider, secrets = _bob_with_a_pending_first_message("hs-25")
    kept = e2ee.Account.from_bytes(bob.to_bytes())
    for index in range(MAX_OLD_SIGNED_PREKEYS):
        kept.rotate_signed_prekey(provider=provider, now=NOW + 1 + index)
        bob.rotate_signed_prekey(provider=provider, now=NOW + 1 + index)
    # Control: still among the kept prekeys, the first message is accepted.
    _, plaintext = e2ee.Account.from_bytes(kept.to_bytes()).accept_session(
        first, provider=provider, now=NOW + 10
    )
    assert plaintext == b"hello Bob"
    bob.rotate_signed_prekey(provider=provider, now=NOW + 1 + MAX_OLD_SIGNED_PREKEYS)
    state = bob.to_bytes()
    for secret in secrets:
        assert secret not in state
    with pytest.raises(HandshakeError) as excinfo:
        bob.accept_session(first, provider=provider, now=NOW + 10)
    assert excinfo.value.category == "handshake_failed"
    assert bob.to_bytes() == state


def test_at_most_max_old_signed_prekeys_are_kept() -> None:
    """[REQ-LIM-06] However often the signed prekey is replaced within the grace period, the
    account keeps the current one and at most MAX_OLD_SIGNED_PREKEYS replaced ones."""
    provider = DeterministicProvider("lim-06-count")
    account = e2ee.Account.generate(provider=provider, now=NOW, post_quantum=False)
    counts = []
    for index in range(MAX_OLD_SIGNED_PREKEYS + 3):
        account.rotate_signed_prekey(provider=provider, now=NOW + 60 * (index + 1))
        state = codec.decode(account.to_bytes(), max_size=MAX_STATE_SIZE)
        assert isinstance(state, dict)
        counts.append(len(state[5]))
    assert counts == [min(n + 2, MAX_OLD_SIGNED_PREKEYS + 1) for n in range(len(counts))]


def test_replaced_signed_prekey_lives_for_the_grace_period_only() -> None:
    """[REQ-LIM-06] A replaced signed prekey accepts first messages for
    SIGNED_PREKEY_GRACE_PERIOD after its replacement, not a second longer, and the next
    rotation after that deletes it."""
    bob, first, provider, secrets = _bob_with_a_pending_first_message("lim-06-grace")
    replaced_at = NOW + 3600
    bob.rotate_signed_prekey(provider=provider, now=replaced_at)
    last_moment = e2ee.Account.from_bytes(bob.to_bytes())
    _, plaintext = last_moment.accept_session(
        first, provider=provider, now=replaced_at + SIGNED_PREKEY_GRACE_PERIOD
    )
    assert plaintext == b"hello Bob"
    too_late = e2ee.Account.from_bytes(bob.to_bytes())
    before = too_late.to_bytes()
    with pytest.raises(HandshakeError):
        too_late.accept_session(
            first, provider=provider, now=replaced_at + SIGNED_PREKEY_GRACE_PERIOD + 1
        )
    assert too_late.to_bytes() == before
    bob.rotate_signed_prekey(provider=provider, now=replaced_at + SIGNED_PREKEY_GRACE_PERIOD + 1)
    state = bob.to_bytes()
    assert all(secret not in state for secret in secrets)


def test_a_rotation_at_the_end_of_the_grace_period_keeps_the_replaced_prekey() -> None:
    """[REQ-LIM-06] A rotation deletes the replaced signed prekeys whose now - retired_at
    *exceeds* SIGNED_PREKEY_GRACE_PERIOD (handshake.md, section 9): one made exactly at the end
    of the grace period keeps the replaced prekey, which still accepts first messages then."""
    bob, first, provider, secrets = _bob_with_a_pending_first_message("lim-06-grace-edge")
    replaced_at = NOW + 3600
    end = replaced_at + SIGNED_PREKEY_GRACE_PERIOD
    bob.rotate_signed_prekey(provider=provider, now=replaced_at)
    bob.rotate_signed_prekey(provider=provider, now=end)
    state = bob.to_bytes()
    assert all(secret in state for secret in secrets)
    _, plaintext = bob.accept_session(first, provider=provider, now=end)
    assert plaintext == b"hello Bob"


# --- REQ-DR-04 / REQ-ERR-05: sending refusals change nothing ---------------------------------


def test_encrypt_refuses_when_the_sending_counter_is_exhausted() -> None:
    """[REQ-DR-04] With Ns = MAX_COUNTER - 1 one more message can be sent; then ``encrypt``
    raises a LocalError and the session is byte-identical."""
    pair = make_pair()
    session = e2ee.Session.from_bytes(_edit_state(pair.alice.to_bytes(), f15=MAX_COUNTER - 1))
    session.encrypt(b"the last one", provider=pair.provider)
    before = session.to_bytes()
    with pytest.raises(LocalError):
        session.encrypt(b"one too many", provider=pair.provider)
    assert session.to_bytes() == before


def test_encrypt_refuses_without_a_sending_chain() -> None:
    """[REQ-DR-04] With no sending chain (CKs none) ``encrypt`` raises a LocalError and changes
    nothing."""
    pair = make_pair()
    session = pair.bob
    session._ratchet.cks = None
    before = session.to_bytes()
    with pytest.raises(LocalError) as excinfo:
        session.encrypt(b"nowhere to go", provider=pair.provider)
    assert not isinstance(excinfo.value, RemoteError)
    assert session.to_bytes() == before


def test_local_errors_leave_the_account_unchanged() -> None:
    """[REQ-ERR-05] Refused prekey generation and rotation (one-time cap, prekey ids used up)
    raise a LocalError and leave the account byte-identical; the caller can then fix the cause
    and retry."""
    provider = DeterministicProvider("err-05")
    account = e2ee.Account.generate(provider=provider, now=NOW)
    account.generate_one_time_prekeys(2, provider=provider)
    near_end = e2ee.Account.from_bytes(_edit_state(account.to_bytes(), f4=MAX_COUNTER))
    actions: list[Callable[[], None]] = [
        lambda: near_end.generate_one_time_prekeys(1, provider=provider),
        lambda: near_end.rotate_signed_prekey(provider=provider, now=NOW + 1),
    ]
    for action in actions:
        before = near_end.to_bytes()
        with pytest.raises(LocalError) as excinfo:
            action()
        assert excinfo.value.category == "exhausted"
        assert near_end.to_bytes() == before
    near_end.generate_one_time_prekeys(0, provider=provider)
    assert near_end.to_bytes() == before


# --- REQ-ERR-08: a failing randomness source leaves the account unchanged ----------------------


class _EntropyFailure(Exception):
    """What the failing provider raises: an exception no e2ee code raises or catches."""


class _FailingProvider:
    """A DeterministicProvider whose ``random_bytes`` raises on its ``fail_at``-th call (counted
    from 1) and on every later one; ``fail_at=None`` never fails and just counts the draws."""

    def __init__(self, seed: str, fail_at: int | None) -> None:
        self._inner = DeterministicProvider(seed)
        self._fail_at = fail_at
        self.calls = 0

    def random_bytes(self, length: int) -> bytes:
        self.calls += 1
        if self._fail_at is not None and self.calls >= self._fail_at:
            raise _EntropyFailure(f"draw {self.calls} failed")
        return self._inner.random_bytes(length)

    def mlkem1024_encapsulate(self, public_key: bytes) -> tuple[bytes, bytes]:
        return self._inner.mlkem1024_encapsulate(public_key)


_PREKEY_OPERATIONS: dict[str, Callable[[e2ee.Account, Any], None]] = {
    "generate_one_time_prekeys": lambda a, p: a.generate_one_time_prekeys(3, provider=p),
    "rotate_signed_prekey": lambda a, p: a.rotate_signed_prekey(provider=p, now=NOW + 60),
}


@pytest.mark.parametrize("operation", sorted(_PREKEY_OPERATIONS))
@pytest.mark.parametrize("post_quantum", [True, False], ids=["pq", "classic"])
def test_a_failing_draw_leaves_the_account_unchanged(operation: str, post_quantum: bool) -> None:
    """[REQ-ERR-08] Whichever draw of prekey generation or rotation fails, the provider's
    exception propagates and the account is byte-identical: no prekey added, no id taken. The
    same operation with a working provider then gives exactly the account a never-failed run
    gives (so no id was skipped either)."""
    run = _PREKEY_OPERATIONS[operation]
    account = e2ee.Account.generate(
        provider=DeterministicProvider("err-08"), now=NOW, post_quantum=post_quantum
    )
    account.generate_one_time_prekeys(1, provider=DeterministicProvider("err-08 one"))
    reference = e2ee.Account.from_bytes(account.to_bytes())
    counting = _FailingProvider("err-08 run", None)
    run(reference, counting)
    draws = counting.calls
    assert draws >= 1
    for fail_at in range(1, draws + 1):
        before = account.to_bytes()
        with pytest.raises(_EntropyFailure):
            run(account, _FailingProvider("err-08 run", fail_at))
        assert account.to_bytes() == before, f"draw {fail_at} of {draws} failed"
    run(account, _FailingProvider("err-08 run", None))
    assert account.to_bytes() == reference.to_bytes()


@pytest.mark.parametrize("post_quantum", [True, False], ids=["pqxdh", "x3dh"])
def test_a_failing_draw_in_accept_session_leaves_the_account_unchanged(
    post_quantum: bool,
) -> None:
    """[REQ-ERR-08] [REQ-HS-22] [REQ-HS-23] A first message that fills the current signed
    prekey's replay memory is accepted with a rotation. When any draw of that call fails (the
    new ratchet key, the new signed prekey), the account is byte-identical: the base key is
    not remembered, so the genuine message is accepted afterwards with a working provider,
    not refused as a replay."""
    bob = e2ee.Account.generate(
        provider=DeterministicProvider("err-08 bob"), now=NOW, post_quantum=post_quantum
    )
    # As persisted (state.md section 2): the current signed prekey (last of key 5) one base
    # key (record element 8) short of a full replay memory.
    state = codec.decode(bob.to_bytes(), max_size=MAX_STATE_SIZE)
    assert isinstance(state, dict)
    state[5][-1][8] = sorted(
        hashlib.sha256(b"seen %d" % i).digest() for i in range(MAX_BASE_KEYS_PER_PREKEY - 1)
    )
    bob = e2ee.Account.from_bytes(codec.encode(state))
    old_prekey_id = bob.signed_prekey_bundle().signed_prekey_id
    alice = e2ee.Account.generate(provider=DeterministicProvider("err-08 alice"), now=NOW)
    session = alice.start_session(
        bob.signed_prekey_bundle(),
        config=e2ee.SessionConfig(allow_x3dh=True),
        provider=DeterministicProvider("err-08 session"),
        now=NOW,
    )
    message = session.encrypt(b"fills the memory")

    reference = e2ee.Account.from_bytes(bob.to_bytes())
    counting = _FailingProvider("err-08 accept", None)
    reference.accept_session(message, provider=counting, now=NOW)
    draws = counting.calls
    assert reference.signed_prekey_bundle().signed_prekey_id != old_prekey_id  # rotated
    assert draws >= 2  # the new ratchet key, then the rotation
    for fail_at in range(1, draws + 1):
        before = bob.to_bytes()
        with pytest.raises(_EntropyFailure):
            bob.accept_session(
                message, provider=_FailingProvider("err-08 accept", fail_at), now=NOW
            )
        assert bob.to_bytes() == before, f"draw {fail_at} of {draws} failed"
    _, plaintext = bob.accept_session(
        message, provider=_FailingProvider("err-08 accept", None), now=NOW
    )
    assert plaintext == b"fills the memory"
    assert bob.to_bytes() == reference.to_bytes()
    with pytest.raises(DuplicateMessageError):
        bob.accept_session(message, now=NOW)


# --- REQ-DR-25 / REQ-STATE-10: no message number MAX_COUNTER, no Nr above it ------------------


def _numbered_message(sender: e2ee.Session, n: int) -> bytes:
    """A normal message from ``sender``'s current sending chain key but numbered ``n``, built
    as spec/ratchet.md section 4 says (what a modified peer could send; ``encrypt`` itself
    never numbers a message MAX_COUNTER)."""
    r = sender._ratchet
    assert r.cks is not None
    prefix = message_prefix(sender.session_id, None)
    header = r.dhs_public + r.pn.to_bytes(4, "big") + n.to_bytes(4, "big")
    if r.header_encryption:
        assert r.hks is not None
        nonce = bytes(range(24))
        header = nonce + primitives.xchacha20poly1305_encrypt(
            r.hks, nonce, header, r.associated_data + prefix
        )
    mac_prefix = prefix + codec.encode_bytes(header)
    _, ciphertext = chains.seal(r.cks, b"numbered", r.associated_data + mac_prefix)
    return mac_prefix + codec.encode_bytes(ciphertext)


@pytest.mark.parametrize("header_encryption", [True, False], ids=["he", "clear"])
def test_message_number_max_counter_is_refused(header_encryption: bool) -> None:
    """[REQ-DR-25] A sender numbers its messages at most MAX_COUNTER - 1 (REQ-DR-04), so a
    receiver accepts N = MAX_COUNTER - 1, after which Nr = MAX_COUNTER still fits the u32 of
    the state, and refuses N = MAX_COUNTER with a DecodeError and no change, even when it is
    exactly the next number of the current chain and authentic."""
    pair = make_pair(header_encryption=header_encryption, seed=f"nr-{header_encryption}")
    assert codec.decode(pair.alice.to_bytes(), max_size=MAX_STATE_SIZE)[16] == 1
    assert codec.decode(pair.bob.to_bytes(), max_size=MAX_STATE_SIZE)[15] == 1
    # Alice's receiving chain is Bob's sending chain; move Alice's Nr (key 16) to the number
    # Bob's message will carry, with nothing skipped (the chain keys stay in step).
    last = e2ee.Session.from_bytes(_edit_state(pair.alice.to_bytes(), f16=MAX_COUNTER - 1))
    assert last.decrypt(_numbered_message(pair.bob, MAX_COUNTER - 1)) == b"numbered"
    after = last.to_bytes()
    assert codec.decode(after, max_size=MAX_STATE_SIZE)[16] == MAX_COUNTER
    assert e2ee.Session.from_bytes(after).to_bytes() == after

    beyond = e2ee.Session.from_bytes(_edit_state(pair.alice.to_bytes(), f16=MAX_COUNTER))
    before = beyond.to_bytes()
    with pytest.raises(DecodeError):
        beyond.decrypt(_numbered_message(pair.bob, MAX_COUNTER))
    assert beyond.to_bytes() == before
    # The session is intact: Bob's next genuine message (number 1) is still a skipped-over
    # number for it, below Nr, and is refused as such, not as malformed.
    with pytest.raises(DuplicateMessageError):
        beyond.decrypt(pair.bob.encrypt(b"genuine", provider=pair.provider))
    assert beyond.to_bytes() == before


def test_previous_chain_length_max_counter_is_accepted() -> None:
    """[REQ-DR-25] PN is not limited like N: a sender whose previous chain ran out
    (Ns = MAX_COUNTER) sends PN = MAX_COUNTER on its next chain, and the receiver accepts it."""
    pair = make_pair(header_encryption=False, seed="pn-max")
    bob = e2ee.Session.from_bytes(_edit_state(pair.bob.to_bytes(), f15=MAX_COUNTER))
    with pytest.raises(LocalError):
        bob.encrypt(b"chain exhausted", provider=pair.provider)
    assert bob.decrypt(pair.alice.encrypt(b"new chain", provider=pair.provider)) == b"new chain"
    message = bob.encrypt(b"after the step", provider=pair.provider)
    assert int.from_bytes(parse_message(message).header[32:36], "big") == MAX_COUNTER
    assert pair.alice.decrypt(message, provider=pair.provider) == b"after the step"


@pytest.mark.parametrize(("field", "name"), [(15, "Ns"), (16, "Nr"), (17, "PN")])
def test_session_counters_above_max_counter_do_not_load(field: int, name: str) -> None:
    """[REQ-STATE-10] Ns, Nr and PN are u32 in session state (state.md section 3): MAX_COUNTER
    loads, MAX_COUNTER + 1 is a StateError."""
    data = make_pair(seed="counters").alice.to_bytes()
    at_max = _edit_state(data, **{f"f{field}": MAX_COUNTER})
    assert e2ee.Session.from_bytes(at_max).to_bytes() == at_max
    with pytest.raises(StateError):
        e2ee.Session.from_bytes(_edit_state(data, **{f"f{field}": MAX_COUNTER + 1}))


# --- REQ-LIM-05: the one-time prekey cap ------------------------------------------------------


def test_one_time_prekeys_are_capped_and_an_excess_request_creates_nothing() -> None:
    """[REQ-LIM-05] An account holds at most MAX_ONE_TIME_PREKEYS one-time X25519 prekeys; a
    request that would exceed the cap raises the exhausted LocalError and creates none."""
    provider = DeterministicProvider("lim-05")
    account = e2ee.Account.generate(provider=provider, now=NOW, post_quantum=False)
    account.generate_one_time_prekeys(MAX_ONE_TIME_PREKEYS - 5, provider=provider)
    before = account.to_bytes()
    with pytest.raises(LocalError) as excinfo:
        account.generate_one_time_prekeys(6, provider=provider)
    assert excinfo.value.category == "exhausted"
    assert account.to_bytes() == before
    assert account.one_time_prekey_count() == MAX_ONE_TIME_PREKEYS - 5
    account.generate_one_time_prekeys(5, provider=provider)
    assert account.one_time_prekey_count() == MAX_ONE_TIME_PREKEYS
    full = account.to_bytes()
    with pytest.raises(LocalError):
        account.generate_one_time_prekeys(1, provider=provider)
    assert account.to_bytes() == full


def test_the_ml_kem_supply_is_filled_to_its_own_cap_and_no_further() -> None:
    """[REQ-LIM-05] handshake.md section 12: generate_one_time_prekeys(n) makes n X25519 prekeys
    and min(n, cap - held) ML-KEM prekeys, without an error, ids alternating X25519 / ML-KEM
    while both are made, then X25519 only."""
    provider = DeterministicProvider("kem-cap")
    account = e2ee.Account.generate(provider=provider, now=NOW)
    account.generate_one_time_prekeys(MAX_ONE_TIME_PREKEYS - 2, provider=provider)
    # As if initiators had used all but ten one-time X25519 prekeys together with the
    # last-resort ML-KEM prekey: drop X25519 records from the state (key 6, state.md).
    state = codec.decode(account.to_bytes(), max_size=MAX_STATE_SIZE)
    state[6] = state[6][:10]
    next_id = state[4]
    account = e2ee.Account.from_bytes(codec.encode(state))

    account.generate_one_time_prekeys(5, provider=provider)  # two ML-KEM places left
    after = codec.decode(account.to_bytes(), max_size=MAX_STATE_SIZE)
    assert (len(after[6]), len(after[7])) == (15, MAX_ONE_TIME_PREKEYS)
    new_ec = [record[0] for record in after[6][10:]]
    new_kem = [record[0] for record in after[7][MAX_ONE_TIME_PREKEYS - 2 :]]
    assert new_ec == [next_id, next_id + 2, next_id + 4, next_id + 5, next_id + 6]
    assert new_kem == [next_id + 1, next_id + 3]
    assert after[4] == next_id + 7

    account.generate_one_time_prekeys(3, provider=provider)  # the ML-KEM supply is full
    full = codec.decode(account.to_bytes(), max_size=MAX_STATE_SIZE)
    assert (len(full[6]), len(full[7])) == (18, MAX_ONE_TIME_PREKEYS)
    assert [record[0] for record in full[6][15:]] == [next_id + 7, next_id + 8, next_id + 9]


def _held(account: e2ee.Account) -> tuple[list[tuple[int, bool]], list[tuple[int, bool]]]:
    """(id, published) of the one-time X25519 and ML-KEM prekeys, from the state (state.md)."""
    state = codec.decode(account.to_bytes(), max_size=MAX_STATE_SIZE)
    return [(r[0], r[4]) for r in state[6]], [(r[0], r[4]) for r in state[7]]


def test_discarding_published_one_time_prekeys_takes_the_oldest_published_only() -> None:
    """[REQ-HS-27] discard_published_one_time_prekeys(n, m) forgets the n oldest published
    X25519 and the m oldest published ML-KEM one-time prekeys; unpublished keys and newer
    published ones stay. Asking for more than a kind's published keys, or a negative count,
    is a ValueError that changes nothing."""
    provider = DeterministicProvider("hs-27")
    account = e2ee.Account.generate(provider=provider, now=NOW)
    account.generate_one_time_prekeys(6, provider=provider)
    ec, kem = _held(account)
    ec_ids, kem_ids = [i for i, _ in ec], [i for i, _ in kem]
    # published: EC 2nd, 3rd, 5th (not in id order of publication), ML-KEM 1st and 4th
    account.mark_published([ec_ids[4], ec_ids[1], ec_ids[2], kem_ids[0], kem_ids[3]])
    before = account.to_bytes()
    for bad in ((4, 0), (0, 3), (-1, 0), (0, -1), (True, 0)):
        with pytest.raises(ValueError, match=r"published one-time prekeys|non-negative"):
            account.discard_published_one_time_prekeys(*bad)
        assert account.to_bytes() == before
    account.discard_published_one_time_prekeys(2, 1)
    ec, kem = _held(account)
    assert ec == [(ec_ids[0], False), (ec_ids[3], False), (ec_ids[4], True), (ec_ids[5], False)]
    assert kem == [(i, i == kem_ids[3]) for i in kem_ids[1:]]
    assert (account.one_time_prekey_count(), account.one_time_kem_prekey_count()) == (4, 5)
    account.discard_published_one_time_prekeys(1, 1)
    assert [i for i, published in _held(account)[0] + _held(account)[1] if published] == []


# --- REQ-DR-24: a sender must not be restored to an older state --------------------------------


def test_a_rolled_back_sender_reuses_message_keys() -> None:
    """[REQ-DR-24] Why a sending session must never be restored to an older state: the restored
    copy encrypts under the same message key and IV (equal first ciphertext blocks for equal
    first plaintext blocks), and the receiver accepts only the first of the two messages. A
    sender persisted after every ``encrypt`` (the required discipline) reuses nothing."""
    pair = make_pair()
    saved = pair.alice.to_bytes()
    prefix = b"0123456789abcdef"
    genuine = pair.alice.encrypt(prefix + b" attack at dawn", provider=pair.provider)
    rolled_back = e2ee.Session.from_bytes(saved)
    reused = rolled_back.encrypt(prefix + b" attack at dusk", provider=pair.provider)
    first_block = slice(0, 16)
    assert (
        parse_message(genuine).ciphertext[first_block]
        == parse_message(reused).ciphertext[first_block]
    )
    assert pair.bob.decrypt(genuine, provider=pair.provider).endswith(b"dawn")
    with pytest.raises(DuplicateMessageError):
        pair.bob.decrypt(reused, provider=pair.provider)
    persisted = e2ee.Session.from_bytes(pair.alice.to_bytes())
    fresh = persisted.encrypt(prefix + b" attack at noon", provider=pair.provider)
    assert (
        parse_message(fresh).ciphertext[first_block]
        != parse_message(genuine).ciphertext[first_block]
    )
    assert pair.bob.decrypt(fresh, provider=pair.provider).endswith(b"noon")


# --- REQ-ERR-02: no secrets in errors ---------------------------------------------------------


def _secrets(pair: Any) -> list[bytes]:
    values = list(pair.provider.drawn)
    for session in (pair.alice, pair.bob):
        r = session._ratchet
        values += [
            v
            for v in (r.root_key, r.cks, r.ckr, r.hks, r.hkr, r.nhks, r.nhkr, r.dhs_private)
            if v is not None
        ]
        if r.cks is not None:
            values.append(chains.message_key(r.cks))
        if r.ckr is not None:
            values.append(chains.message_key(r.ckr))
    for account in (pair.alice_account, pair.bob_account):
        values.append(account._identity_seed)
    return [v for v in values if len(v) >= 16]


def _provoke_errors(pair: Any, state_key: bytes, plaintext: bytes) -> list[E2EEError]:
    provider = pair.provider
    errors: list[E2EEError] = []

    def expect(action: Callable[[], object]) -> None:
        try:
            action()
        except E2EEError as exc:
            errors.append(exc)
        else:  # pragma: no cover - every action here must fail
            raise AssertionError("no error")

    message = pair.alice.encrypt(plaintext, provider=provider)
    expect(lambda: pair.bob.decrypt(flip_bit(message, len(message) - 1), provider=provider))
    expect(lambda: pair.bob.decrypt(flip_bit(message, len(message) // 2), provider=provider))
    assert pair.bob.decrypt(message, provider=provider) == plaintext
    expect(lambda: pair.bob.decrypt(message, provider=provider))  # duplicate
    ahead = [pair.alice.encrypt(plaintext, provider=provider) for _ in range(MAX_SKIP + 2)]
    expect(lambda: pair.bob.decrypt(ahead[-1], provider=provider))  # too many skipped
    other = make_pair(seed="another")
    expect(lambda: pair.bob.decrypt(other.alice.encrypt(b"x", provider=provider)))
    sealed = pair.bob.to_bytes(key=state_key, provider=provider)
    expect(lambda: e2ee.Session.from_bytes(sealed, key=bytes(32)))
    expect(lambda: e2ee.Session.from_bytes(sealed))
    expect(lambda: e2ee.Session.from_bytes(sealed[:-1], key=state_key))
    expect(lambda: e2ee.Account.from_bytes(pair.bob_account.to_bytes()[:-3]))
    expect(lambda: PreKeyBundle.from_bytes(b"\xa1\x00\x02"))  # version 2
    expect(lambda: PreKeyBundle.from_bytes(b"\xa1\x00\x01\x00"))  # trailing byte
    expect(lambda: parse_message(b"\x85\x02\x03" + message[3:]))
    bundle = pair.bob_account.prekey_bundle().to_bytes()
    forged = PreKeyBundle.from_bytes(flip_bit(bundle, len(bundle) - 1))
    expect(lambda: pair.alice_account.start_session(forged, provider=provider, now=NOW))
    expect(lambda: pair.bob_account.accept_session(message, provider=provider, now=NOW))
    pair.bob._ratchet.cks, cks = None, pair.bob._ratchet.cks
    expect(lambda: pair.bob.encrypt(plaintext, provider=provider))
    pair.bob._ratchet.cks = cks
    expect(
        lambda: pair.bob_account.generate_one_time_prekeys(
            MAX_ONE_TIME_PREKEYS + 1, provider=provider
        )
    )
    return errors


def test_errors_carry_no_key_material_or_plaintext() -> None:
    """[REQ-ERR-02] The message, arguments and attributes of every error raised on the way
    (decryption, replay, skip limit, state loading, bundles, handshakes, local refusals)
    contain no key, seed, nonce or plaintext; attributes are counters, limits and versions."""
    pair = make_pair()
    state_key = bytes(range(32))
    plaintext = b"a secret plaintext that must never appear in an error"
    errors = _provoke_errors(pair, state_key, plaintext)
    secrets = [*_secrets(pair), state_key, plaintext]
    categories = {error.category for error in errors}
    assert {"auth_failed", "duplicate_message", "too_many_skipped", "state_corrupt"} <= categories
    assert {"decode_error", "unsupported_version", "signature_invalid", "local_error"} <= categories
    for error in errors:
        text = f"{error} {error!r} {error.args!r} {vars(error)!r}"
        assert all(isinstance(arg, str) for arg in error.args), error.args
        for name, value in vars(error).items():
            assert value is None or type(value) is int, (type(error).__name__, name)
        for secret in secrets:
            assert secret.hex() not in text.lower(), type(error).__name__
            assert repr(secret)[2:-1] not in text, type(error).__name__


_HEX_RUN = re.compile(r"[0-9a-fA-F]{32,}")


def _hkdf_sha256_zero_salt(ikm: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 with a zero salt, written out here rather than taken from e2ee."""
    prk = hmac.new(bytes(32), ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out, counter = out + block, counter + 1
    return out[:length]


def test_errors_carry_no_secret_of_the_moment_on_any_failure_path() -> None:
    """[REQ-ERR-02] Each error is checked against the secrets as they were when it was raised
    (the current message, chain, header and root keys, every random value drawn, a wrong state
    key, the padded plaintext of a tag-valid message with bad padding), and its text carries no
    hex run of 16 bytes or more and no bytes literal at all. Paths: a forged tag on the next
    message and on a message ahead, bad padding behind a valid tag, a sealed state under a wrong
    key, and accept_session refusing a tampered ciphertext, a changed session id, a consumed
    one-time ML-KEM or X25519 prekey and an expired signed prekey."""
    pair = make_pair(one_time_prekeys=3)
    provider = pair.provider
    found: list[tuple[E2EEError, list[bytes]]] = []

    def expect(action: Callable[[], object], *extra: bytes) -> None:
        secrets = [*_secrets(pair), *extra]
        with pytest.raises(E2EEError) as info:
            action()
        found.append((info.value, secrets))

    plaintext = b"a plaintext that must never appear in an error"
    nxt = pair.alice.encrypt(plaintext, provider=provider)
    expect(lambda: pair.bob.decrypt(flip_bit(nxt, len(nxt) - 1), provider=provider), plaintext)
    ahead = pair.alice.encrypt(plaintext, provider=provider)
    expect(lambda: pair.bob.decrypt(flip_bit(ahead, len(ahead) - 1), provider=provider))

    message_key = bytes(range(100, 132))
    okm = _hkdf_sha256_zero_salt(message_key, b"e2ee/v1/ratchet/message-keys", 80)
    padded = b"sixteen  bytes\x00\x00"  # last byte 0: not PKCS#7
    encryptor = Cipher(algorithms.AES(okm[:32]), modes.CBC(okm[64:])).encryptor()
    body = encryptor.update(padded) + encryptor.finalize()
    tag = hmac.new(okm[32:64], b"ad" + body, hashlib.sha256).digest()[:16]
    expect(lambda: chains.decrypt(message_key, body + tag, b"ad"), message_key, padded, okm)

    state_key, wrong_key = bytes(range(32)), bytes(range(1, 33))
    sealed = pair.bob.to_bytes(key=state_key, provider=provider)
    expect(lambda: e2ee.Session.from_bytes(sealed, key=wrong_key), state_key, wrong_key)

    bob = pair.bob_account
    session = pair.alice_account.start_session(bob.prekey_bundle(), provider=provider, now=NOW)
    first = session.encrypt(plaintext, provider=provider)
    session_id = parse_message(first).session_id
    assert first.count(session_id) == 1
    expect(lambda: bob.accept_session(flip_bit(first, len(first) - 1), provider=provider, now=NOW))
    expect(
        lambda: bob.accept_session(first.replace(session_id, bytes(16)), provider=provider, now=NOW)
    )
    assert bob.accept_session(first, provider=provider, now=NOW)[1] == plaintext
    expect(lambda: bob.accept_session(first, provider=provider, now=NOW))  # ML-KEM prekey used
    no_kem = replace(
        bob.prekey_bundle(),
        one_time_kem_prekey_id=None,
        one_time_kem_prekey=None,
        one_time_kem_prekey_signature=None,
    )
    opk_only = pair.alice_account.start_session(no_kem, provider=provider, now=NOW)
    third = opk_only.encrypt(plaintext, provider=provider)
    assert bob.accept_session(third, provider=provider, now=NOW)[1] == plaintext
    expect(lambda: bob.accept_session(third, provider=provider, now=NOW))  # X25519 prekey used
    later = pair.alice_account.start_session(bob.prekey_bundle(), provider=provider, now=NOW)
    second = later.encrypt(plaintext, provider=provider)
    bob.rotate_signed_prekey(provider=provider, now=NOW)
    too_late = NOW + SIGNED_PREKEY_GRACE_PERIOD + 1
    expect(lambda: bob.accept_session(second, provider=provider, now=too_late))

    kinds = [type(error) for error, _ in found]
    assert kinds == [
        *[AuthenticationError] * 3,
        StateError,
        *[AuthenticationError] * 2,
        *[HandshakeError] * 3,
    ]
    for error, secrets in found:
        text = f"{error} {error!r} {error.args!r} {vars(error)!r}"
        name = type(error).__name__
        assert _HEX_RUN.search(text) is None, name
        for literal in ("b'", 'b"', "\\x"):
            assert literal not in text, name
        for secret in (secret for secret in secrets if len(secret) >= 16):
            assert secret.hex() not in text.lower(), name


# --- REQ-ERR-01: the documented error tree is the implemented one ---------------------------

_TREE_LINE = re.compile(r'^(?P<indent>[ │├└─]*)(?P<name>[A-Z]\w+)\s+(?:category )?"(?P<cat>\w+)"')
_RELAY_ROW = re.compile(r"^\| `(?P<name>\w+)` \| `(?P<cat>\w+)` \| *(?P<status>\d*) *\|")
_STATUS_ROW = re.compile(r"^\| (?P<status>\d{3}) \| [^|]* \| `(?P<name>\w+)`")


def _error_classes() -> dict[str, type[E2EEError]]:
    return {
        name: value
        for name, value in vars(error_module).items()
        if isinstance(value, type) and issubclass(value, E2EEError)
    }


def _documented_tree(text: str) -> dict[str, tuple[str, str | None]]:
    """Class name -> (category, parent class name) from the tree at the top of errors.md."""
    found: dict[str, tuple[str, str | None]] = {}
    stack: list[str] = []
    for line in text.split("```", 2)[1].splitlines():
        match = _TREE_LINE.match(line)
        if match is None:
            continue
        depth = len(match["indent"]) // 4
        del stack[depth:]
        assert match["name"] not in found, match["name"]
        found[match["name"]] = (match["cat"], stack[-1] if stack else None)
        stack.append(match["name"])
    return found


def test_errors_md_lists_every_error_class_with_its_category_parent_and_status() -> None:
    """[REQ-ERR-01] spec/errors.md names every class of e2ee.errors, each under its parent and
    with its category, and no other; the relay section's table and spec/relay.md's status table
    give each RelayError class its category and HTTP status. Categories are all different."""
    classes = _error_classes()
    spec = PROJECT_ROOT / "spec"
    errors_md = (spec / "errors.md").read_text(encoding="utf-8")
    documented = _documented_tree(errors_md)
    assert sorted(documented) == sorted(classes)
    for name, cls in classes.items():
        parent = None if cls is E2EEError else cls.__bases__[0].__name__
        assert documented[name] == (cls.category, parent), name
    assert len({cls.category for cls in classes.values()}) == len(classes)

    relay = {name: cls for name, cls in classes.items() if issubclass(cls, RelayError)}
    section = errors_md.split("## 7. Relay errors", 1)[1]
    rows = [m for m in map(_RELAY_ROW.match, section.splitlines()) if m is not None]
    assert sorted(m["name"] for m in rows) == sorted(relay)
    for m in rows:
        cls = relay[m["name"]]
        assert m["cat"] == cls.category, m["name"]
        assert m["status"] == ("" if cls is RelayError else str(cls.status)), m["name"]
    relay_md = (spec / "relay.md").read_text(encoding="utf-8")
    statuses = [m for m in map(_STATUS_ROW.match, relay_md.splitlines()) if m is not None]
    assert sorted(m["name"] for m in statuses) == sorted(set(relay) - {"RelayError"})
    for m in statuses:
        assert int(m["status"]) == relay[m["name"]].status, m["name"]


# --- REQ-SEC-02: signatures only over labelled payloads -------------------------------------


def _signed_messages(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    signed: list[bytes] = []
    original = primitives.ed25519_sign

    def spy(seed: bytes, message: bytes) -> bytes:
        signed.append(message)
        return original(seed, message)

    monkeypatch.setattr(primitives, "ed25519_sign", spy)
    return signed


def test_every_signature_the_protocol_makes_starts_with_a_purpose_label(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """[REQ-SEC-02] Everything the identity key signs while accounts are created, topped up,
    rotated and used begins with one of SIGNATURE_LABELS; the labels are distinct and none is
    a prefix of another."""
    assert len(set(SIGNATURE_LABELS)) == len(SIGNATURE_LABELS)
    for label in SIGNATURE_LABELS:
        assert label.startswith(b"e2ee/v1/sig/")
        assert label.endswith(b"\x00")
        assert not any(other != label and other.startswith(label) for other in SIGNATURE_LABELS)
    signed = _signed_messages(monkeypatch)
    pair = make_pair(one_time_prekeys=3)
    pair.bob_account.rotate_signed_prekey(provider=pair.provider, now=NOW + 1)
    pair.bob_account.generate_one_time_prekeys(2, provider=pair.provider)
    assert len(signed) >= 2 + 3 * 2 + 1 + 2 * 2
    for message in signed:
        assert message.startswith(SIGNATURE_LABELS), message[:40]


def test_every_signing_label_the_code_defines_is_registered() -> None:
    """[REQ-SEC-02] Each SIG_LABEL_ constant of e2ee.limits, including the device-list and
    relay-login labels of the later layers, is one of SIGNATURE_LABELS, and nothing else is:
    a layer that signs adds its own label to the registry."""
    defined = {
        value for name, value in vars(limits_module).items() if name.startswith("SIG_LABEL_")
    }
    assert len(defined) >= 5
    assert defined == set(SIGNATURE_LABELS)


def test_the_relay_login_signature_covers_its_label_and_the_challenge() -> None:
    """[REQ-SEC-02] The one signature an application can ask of the identity key: the label
    bytes are spelled out here, not taken from the code under test."""
    account = make_pair().alice_account
    challenge = b"https://relay.example\x00" + bytes(range(32))
    signature = account.sign_relay_login(challenge)
    label = b"e2ee/v1/sig/relay-login\x00"
    primitives.ed25519_verify(account.identity_key, label + challenge, signature)
    for other in (challenge, label[:-1] + challenge, label + challenge[:-1]):
        with pytest.raises(SignatureError):
            primitives.ed25519_verify(account.identity_key, other, signature)
    with pytest.raises(TypeError):
        account.sign_relay_login(bytearray(challenge))  # type: ignore[arg-type]


def _is_labelled(node: ast.expr) -> bool:
    """A payload expression that visibly starts with a purpose label: a call of one of the
    ``*_payload`` builders of e2ee.handshake.signing, or ``SIG_LABEL_... + rest``."""
    if isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        return name.endswith("_payload")
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left = node.left
        while isinstance(left, ast.BinOp) and isinstance(left.op, ast.Add):
            left = left.left
        name = left.attr if isinstance(left, ast.Attribute) else getattr(left, "id", "")
        return name.startswith("SIG_LABEL_")
    return False


def test_protocol_code_signs_only_labelled_payloads() -> None:
    """[REQ-SEC-02] Statically: outside e2ee.handshake.signing (the labelled builders and the
    ``sign`` wrapper), every call that signs with the identity key passes a payload that starts
    with a SIG_LABEL_ constant; no code signs bytes without one."""
    sites = 0
    for path in _protocol_modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = (
                func.value.id
                if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                else ""
            )
            signing_call = name == "ed25519_sign" or (name == "sign" and owner == "signing")
            if not signing_call:
                continue
            relative = path.relative_to(SRC).as_posix()
            if relative == "handshake/signing.py":
                continue  # the wrapper itself: sign(identity_seed, payload)
            assert len(node.args) >= 2, f"{relative}:{node.lineno}"
            assert _is_labelled(node.args[1]), f"{relative}:{node.lineno} signs unlabelled bytes"
            sites += 1
    assert sites >= 3


# --- REQ-SEC-05: randomness only through the provider ---------------------------------------


def test_protocol_code_draws_randomness_only_through_the_provider() -> None:
    """[REQ-SEC-05] Statically: no protocol module imports ``random`` or ``secrets``, none but
    the system provider calls ``os.urandom`` or a library's random generator, and none imports
    the deterministic test providers (e2ee.testing) or the vector tooling."""
    urandom_sites = []
    for path in _protocol_modules():
        relative = path.relative_to(SRC).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
                if node.module == "os" and any(a.name == "urandom" for a in node.names):
                    urandom_sites.append(relative)
                if node.module == "e2ee":
                    names += [f"e2ee.{alias.name}" for alias in node.names]
            else:
                if isinstance(node, ast.Attribute) and node.attr in ("urandom", "randombytes"):
                    urandom_sites.append(relative)
                continue
            for name in names:
                root = name.split(".")[0]
                assert root not in ("random", "secrets"), f"{relative} imports {name}"
                assert not name.startswith(("e2ee.testing", "e2ee.vectors", "e2ee.conformance")), (
                    f"{relative} imports {name}"
                )
                assert name not in ("nacl.utils",), f"{relative} imports {name}"
    assert urandom_sites == ["crypto/provider.py"]


def test_the_import_contract_keeps_test_providers_out_of_the_core() -> None:
    """[REQ-SEC-05] The import-linter contract the specification relies on exists and covers
    the core packages."""
    config = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    guarding = [
        c
        for c in contracts
        if c.get("type") == "forbidden" and "e2ee.testing" in c.get("forbidden_modules", [])
    ]
    assert guarding
    sources = set(guarding[0]["source_modules"])
    assert {"e2ee.crypto", "e2ee.ratchet", "e2ee.handshake", "e2ee.account", "e2ee.session"} <= (
        sources
    )


def test_a_whole_conversation_never_touches_os_urandom(monkeypatch: pytest.MonkeyPatch) -> None:
    """[REQ-SEC-05] Dynamically: with a deterministic provider, accounts, both handshakes, a
    conversation in both directions and sealed state run without calling ``os.urandom``."""

    def forbidden(length: int) -> bytes:
        raise AssertionError("os.urandom called outside the provider")

    monkeypatch.setattr(os, "urandom", forbidden)
    for header_encryption, post_quantum in ((True, True), (False, False)):
        pair = make_pair(header_encryption=header_encryption, post_quantum=post_quantum)
        for index in range(3):
            message = pair.alice.encrypt(b"ping %d" % index, provider=pair.provider)
            assert pair.bob.decrypt(message, provider=pair.provider) == b"ping %d" % index
            reply = pair.bob.encrypt(b"pong", provider=pair.provider)
            assert pair.alice.decrypt(reply, provider=pair.provider) == b"pong"
        sealed = pair.alice.to_bytes(key=bytes(32), provider=pair.provider)
        assert e2ee.Session.from_bytes(sealed, key=bytes(32)).session_id == pair.alice.session_id
        pair.bob_account.rotate_signed_prekey(provider=pair.provider, now=NOW + 1)
