"""Tampering: every single-bit change and every truncation of every message kind is refused
with an ``e2ee`` error, and leaves the receiving account or session byte-identical.

Every bit of every byte is flipped, except inside the ML-KEM ciphertext of PQXDH initial
messages, where one bit per byte is flipped (the bit index cycling through 0..7).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest

import e2ee
from e2ee.errors import RemoteError
from e2ee.ratchet.double_ratchet import RatchetState
from e2ee.testing import DeterministicProvider
from e2ee.wire import codec
from tests.helpers import NOW, flip_bit, make_pair
from tests.test_handshake_rules import encode_flat, rebuild


def attempt(
    label: str,
    call: Callable[[], object],
    snapshot: Callable[[], bytes],
    failures: list[str],
) -> None:
    """``call()`` must raise an e2ee error and leave ``snapshot()`` unchanged."""
    before = snapshot()
    try:
        call()
    except e2ee.E2EEError:
        pass
    except Exception as exc:
        failures.append(f"{label}: {type(exc).__name__}: {exc}")
    else:
        failures.append(f"{label}: accepted")
    if snapshot() != before:
        failures.append(f"{label}: state changed")


def check_peek(label: str, message: bytes, failures: list[str]) -> None:
    try:
        e2ee.peek(message)
    except e2ee.E2EEError:
        pass
    except Exception as exc:
        failures.append(f"peek {label}: {type(exc).__name__}: {exc}")


def initial_message_flips(message: bytes) -> Iterator[tuple[str, bytes]]:
    """Every bit of every byte, except inside the 1,568-byte ML-KEM ciphertext body, where
    one bit per byte (cycling) keeps the run short."""
    items, offsets = codec.read_flat_array(message, 10**6)
    kem_body = range(0)
    if isinstance(items[8], bytes):
        kem_body = range(offsets[9] - len(items[8]), offsets[9])
    for i in range(len(message)):
        for bit in (i % 8,) if i in kem_body else range(8):
            yield f"byte {i} bit {bit}", flip_bit(message, i, bit)


def every_bit(message: bytes) -> Iterator[tuple[str, bytes]]:
    for i in range(len(message)):
        for bit in range(8):
            yield f"byte {i} bit {bit}", flip_bit(message, i, bit)


def truncations_and_extensions(message: bytes) -> Iterator[tuple[str, bytes]]:
    for length in range(len(message)):
        yield f"truncated to {length}", message[:length]
    for extra in (b"\x00", b"\xf6", bytes(16)):
        yield f"extended by {extra.hex()}", message + extra


def report(failures: list[str]) -> None:
    assert not failures, f"{len(failures)} problems, first ones:\n" + "\n".join(failures[:25])


# --- initial messages ------------------------------------------------------------------------


@dataclass
class InitialCase:
    bob: e2ee.Account
    alice: e2ee.Session
    first: bytes
    second: bytes
    provider: DeterministicProvider


def initial_case(post_quantum: bool, header_encryption: bool) -> InitialCase:
    provider = DeterministicProvider(f"tamper-{post_quantum}-{header_encryption}")
    bob = e2ee.Account.generate(provider=provider, now=NOW, post_quantum=post_quantum)
    bob.generate_one_time_prekeys(1, provider=provider)
    alice_account = e2ee.Account.generate(provider=provider, now=NOW)
    config = e2ee.SessionConfig(header_encryption=header_encryption, allow_x3dh=True)
    alice = alice_account.start_session(
        bob.prekey_bundle(), config=config, provider=provider, now=NOW
    )
    first = alice.encrypt(b"first", provider=provider)
    second = alice.encrypt(b"second", provider=provider)
    info = e2ee.peek(first)
    assert info.is_initial
    assert info.header_encrypted is header_encryption
    items, _ = codec.read_flat_array(first, 10**6)
    assert (items[8] is not None) is post_quantum  # ML-KEM ciphertext present iff PQXDH
    return InitialCase(bob, alice, first, second, provider)


INITIAL_KINDS = [
    pytest.param(True, True, id="pqxdh-header-encryption"),
    pytest.param(True, False, id="pqxdh-clear-header"),
    pytest.param(False, True, id="x3dh-header-encryption"),
    pytest.param(False, False, id="x3dh-clear-header"),
]


@pytest.mark.parametrize(("post_quantum", "header_encryption"), INITIAL_KINDS)
def test_bit_flips_in_initial_message_fail_accept_session(
    post_quantum: bool, header_encryption: bool
) -> None:
    case = initial_case(post_quantum, header_encryption)
    failures: list[str] = []
    count = case.bob.one_time_prekey_count()
    for label, tampered in initial_message_flips(case.first):
        check_peek(label, tampered, failures)
        attempt(
            label,
            partial(case.bob.accept_session, tampered, provider=case.provider, now=NOW),
            case.bob.to_bytes,
            failures,
        )
    report(failures)
    assert case.bob.one_time_prekey_count() == count
    _, plaintext = case.bob.accept_session(case.first, provider=case.provider, now=NOW)
    assert plaintext == b"first"


@pytest.mark.parametrize(("post_quantum", "header_encryption"), INITIAL_KINDS)
def test_truncated_initial_message_fails_accept_session(
    post_quantum: bool, header_encryption: bool
) -> None:
    case = initial_case(post_quantum, header_encryption)
    failures: list[str] = []
    for label, tampered in truncations_and_extensions(case.first):
        check_peek(label, tampered, failures)
        attempt(
            label,
            partial(case.bob.accept_session, tampered, provider=case.provider, now=NOW),
            case.bob.to_bytes,
            failures,
        )
    report(failures)
    _, plaintext = case.bob.accept_session(case.first, provider=case.provider, now=NOW)
    assert plaintext == b"first"


@pytest.mark.parametrize(("post_quantum", "header_encryption"), INITIAL_KINDS)
def test_tampered_initial_message_fails_decrypt_of_existing_session(
    post_quantum: bool, header_encryption: bool
) -> None:
    """A later initial-form message goes to the responder's session: same rules there."""
    case = initial_case(post_quantum, header_encryption)
    bob_session, _ = case.bob.accept_session(case.first, provider=case.provider, now=NOW)
    failures: list[str] = []
    variants = [*initial_message_flips(case.second), *truncations_and_extensions(case.second)]
    for label, tampered in variants:
        check_peek(label, tampered, failures)
        attempt(
            label,
            partial(bob_session.decrypt, tampered, provider=case.provider),
            bob_session.to_bytes,
            failures,
        )
    report(failures)
    assert bob_session.decrypt(case.second) == b"second"


# --- normal messages ----------------------------------------------------------------------


NORMAL_POSITIONS = ["new-chain", "current-chain", "skipped-key", "to-initiator"]


def normal_case(header_encryption: bool, position: str) -> tuple[e2ee.Session, bytes, bytes]:
    """(receiving session, message, its plaintext) for a normal message at ``position``."""
    pair = make_pair(header_encryption=header_encryption, seed=f"normal-{position}")
    if position == "new-chain":
        return pair.bob, pair.alice.encrypt(b"new chain"), b"new chain"
    if position == "current-chain":
        assert pair.bob.decrypt(pair.alice.encrypt(b"warm-up")) == b"warm-up"
        return pair.bob, pair.alice.encrypt(b"current"), b"current"
    if position == "skipped-key":
        early = pair.alice.encrypt(b"early")
        assert pair.bob.decrypt(pair.alice.encrypt(b"late")) == b"late"
        assert pair.bob.skipped_key_count == 1
        return pair.bob, early, b"early"
    assert position == "to-initiator"
    assert pair.bob.decrypt(pair.alice.encrypt(b"turn")) == b"turn"
    return pair.alice, pair.bob.encrypt(b"to alice"), b"to alice"


@pytest.mark.parametrize("position", NORMAL_POSITIONS)
@pytest.mark.parametrize("header_encryption", [True, False], ids=["he", "clear"])
def test_every_bit_flip_and_truncation_of_normal_message_fails(
    header_encryption: bool, position: str
) -> None:
    session, message, plaintext = normal_case(header_encryption, position)
    assert not e2ee.peek(message).is_initial
    failures: list[str] = []
    variants = [*every_bit(message), *truncations_and_extensions(message)]
    for label, tampered in variants:
        check_peek(label, tampered, failures)
        attempt(label, partial(session.decrypt, tampered), session.to_bytes, failures)
    report(failures)
    assert session.decrypt(message) == plaintext


# --- 4. decrypt error paths leave the session byte-identical --------------------------------


def _normal_with(message: bytes, index: int, value: int | bytes | bool | None) -> bytes:
    items, _ = codec.read_flat_array(message, 10**6)
    assert len(items) == 5
    items[index] = value
    return encode_flat(items)


@pytest.mark.parametrize("header_encryption", [True, False], ids=["he", "clear"])
def test_forged_tag_on_a_message_ahead_leaves_the_session_unchanged(
    header_encryption: bool,
) -> None:
    """[REQ-ERR-04] A message ahead of the next expected one, on a new chain and then on the
    current chain, whose tag is forged: the keys derived to reach it are not kept and the
    counters do not move (to_bytes() is unchanged); the genuine messages then all decrypt."""
    pair = make_pair(header_encryption=header_encryption)
    sent = [pair.alice.encrypt(b"m%d" % i, provider=pair.provider) for i in range(3)]
    for forged in (sent[1], None, sent[2]):
        if forged is None:
            assert pair.bob.decrypt(sent[0], provider=pair.provider) == b"m0"
            continue
        before = pair.bob.to_bytes()
        with pytest.raises(e2ee.AuthenticationError):
            pair.bob.decrypt(flip_bit(forged, len(forged) - 1), provider=pair.provider)
        assert pair.bob.to_bytes() == before
    assert pair.bob.decrypt(sent[2], provider=pair.provider) == b"m2"
    assert pair.bob.decrypt(sent[1], provider=pair.provider) == b"m1"


@pytest.mark.parametrize("header_encryption", [True, False], ids=["he", "clear"])
def test_decrypt_error_paths_leave_the_session_unchanged(header_encryption: bool) -> None:
    case = initial_case(True, header_encryption)
    bob, _ = case.bob.accept_session(case.first, provider=case.provider, now=NOW)
    alice = case.alice
    other = make_pair(header_encryption=header_encryption, seed="other")
    normal = alice.encrypt(b"n0")  # still initial form: Alice has no reply yet
    reply = bob.encrypt(b"reply")

    cases: list[tuple[str, e2ee.Session, bytes, type[e2ee.E2EEError]]] = [
        ("empty", bob, b"", e2ee.DecodeError),
        ("not an array", bob, codec.encode_uint(1), e2ee.DecodeError),
        ("truncated", bob, normal[:-1], e2ee.DecodeError),
        ("trailing", bob, normal + b"\x00", e2ee.DecodeError),
        ("version 0", bob, flip_bit(reply, 1), e2ee.UnsupportedVersionError),
        ("another session", bob, other.alice.encrypt(b"x"), e2ee.AuthenticationError),
        ("another session", alice, other.bob.encrypt(b"x"), e2ee.AuthenticationError),
        ("own initial message", alice, case.second, e2ee.AuthenticationError),
        (
            "initial fields changed",
            bob,
            rebuild(case.second, base_key=other.alice_account.identity_key),
            e2ee.AuthenticationError,
        ),
        ("duplicate of the first", bob, case.first, e2ee.DuplicateMessageError),
        (
            "header of the other mode",
            alice,
            _normal_with(reply, 3, bytes(40 if header_encryption else 80)),
            e2ee.DecodeError,
        ),
        ("ciphertext too short", alice, _normal_with(reply, 4, bytes(16)), e2ee.DecodeError),
        ("ciphertext not blocks", alice, _normal_with(reply, 4, bytes(33)), e2ee.DecodeError),
        ("ciphertext replaced", alice, _normal_with(reply, 4, bytes(32)), e2ee.AuthenticationError),
    ]
    for label, session, wire, expected in cases:
        before = session.to_bytes()
        with pytest.raises(expected):
            session.decrypt(wire)
        assert session.to_bytes() == before, label
    # Everything genuine still works, exactly once.
    assert bob.decrypt(case.second) == b"second"
    assert bob.decrypt(normal) == b"n0"
    assert alice.decrypt(reply) == b"reply"
    for session, wire, expected in ((alice, reply, e2ee.DuplicateMessageError),):
        before = session.to_bytes()
        with pytest.raises(expected):
            session.decrypt(wire)
        assert session.to_bytes() == before


class _NoRandomness(DeterministicProvider):
    """A provider whose randomness fails (an exhausted replay, a broken entropy source)."""

    def random_bytes(self, length: int) -> bytes:
        raise RuntimeError("no randomness")


@pytest.mark.parametrize("header_encryption", [True, False], ids=["he", "clear"])
def test_a_provider_failing_at_the_ratchet_step_leaves_the_session_unchanged(
    header_encryption: bool,
) -> None:
    """[REQ-DR-17] The new ratchet key is drawn only after the message authenticated (step 12),
    but before anything is stored: a provider that fails there leaves the session byte-identical
    (the old code had already stored the previous chain's skipped keys and the new chain), and
    the same message then decrypts with a working provider."""
    pair = make_pair(header_encryption=header_encryption, seed="no-randomness")
    alice, bob, provider = pair.alice, pair.bob, pair.provider
    m1 = alice.encrypt(b"m1", provider=provider)
    m2 = alice.encrypt(b"m2", provider=provider)
    assert bob.decrypt(m1, provider=provider) == b"m1"  # m2 stays unread on that chain
    assert alice.decrypt(bob.encrypt(b"r1", provider=provider), provider=provider) == b"r1"
    m3 = alice.encrypt(b"m3", provider=provider)  # a new chain: PN = 2, so m2 gets stored
    before = bob.to_bytes()
    with pytest.raises(RuntimeError, match="no randomness"):
        bob.decrypt(m3, provider=_NoRandomness("unused"))
    assert bob.to_bytes() == before
    assert bob.decrypt(m3, provider=provider) == b"m3"
    assert bob.decrypt(m2, provider=provider) == b"m2"


@pytest.mark.parametrize("header_encryption", [True, False], ids=["he", "clear"])
def test_a_rejected_message_draws_no_randomness(header_encryption: bool) -> None:
    """[REQ-DR-26] A message that does not authenticate draws nothing from the provider. The
    messages are the first of a new chain (the only place decrypt draws at all), each with one
    bit flipped or cut short; decrypting them with a provider that fails on every draw raises the
    protocol's own error, never the provider's, and changes nothing. The genuine message then
    needs exactly one draw (the new ratchet key)."""
    pair = make_pair(header_encryption=header_encryption, seed="rejected-draws-nothing")
    alice, bob, provider = pair.alice, pair.bob, pair.provider
    assert bob.decrypt(alice.encrypt(b"m1", provider=provider), provider=provider) == b"m1"
    assert alice.decrypt(bob.encrypt(b"r1", provider=provider), provider=provider) == b"r1"
    new_chain = alice.encrypt(b"m2", provider=provider)
    before = bob.to_bytes()
    forgeries = [new_chain[:cut] for cut in range(len(new_chain))]
    forgeries += [flip_bit(new_chain, i, bit) for i in range(len(new_chain)) for bit in (0, 7)]
    for forged in forgeries:
        with pytest.raises(RemoteError):
            bob.decrypt(forged, provider=_NoRandomness("unused"))
        assert bob.to_bytes() == before
    draws: list[int] = []

    class _Counting(DeterministicProvider):
        def random_bytes(self, length: int) -> bytes:
            draws.append(length)
            return super().random_bytes(length)

    assert bob.decrypt(new_chain, provider=_Counting("genuine")) == b"m2"
    assert draws == [32]


def _ratchet_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Record every call of the ratchet-level decrypt (its header argument)."""
    calls: list[bytes] = []
    real = RatchetState.decrypt

    def spy(self: RatchetState, header: bytes, *args: Any) -> bytes:
        calls.append(header)
        return real(self, header, *args)

    monkeypatch.setattr(RatchetState, "decrypt", spy)
    return calls


@pytest.mark.parametrize("header_encryption", [True, False], ids=["he", "clear"])
def test_a_message_of_another_session_is_refused_before_the_ratchet(
    header_encryption: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """[REQ-DR-09] A message naming another session id is refused with AuthenticationError by
    the session-id check (ratchet.md section 6, step 2), before any ratchet-level step."""
    pair = make_pair(header_encryption=header_encryption, seed="sid-a")
    other = make_pair(header_encryption=header_encryption, seed="sid-b")
    assert other.bob.session_id != pair.bob.session_id
    calls = _ratchet_calls(monkeypatch)
    for session, wire in (
        (pair.bob, other.alice.encrypt(b"x")),
        (pair.alice, other.bob.encrypt(b"y")),
    ):
        before = session.to_bytes()
        with pytest.raises(e2ee.AuthenticationError):
            session.decrypt(wire)
        assert session.to_bytes() == before
    assert calls == []
    assert pair.bob.decrypt(pair.alice.encrypt(b"ok")) == b"ok"
    assert len(calls) == 1


@pytest.mark.parametrize("header_encryption", [True, False], ids=["he", "clear"])
def test_initial_form_is_refused_before_the_ratchet(
    header_encryption: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """[REQ-DR-10] An initial-form message at the initiator, and one whose initial fields differ
    from the session's, are refused with AuthenticationError by the session-level checks of
    ratchet.md section 6, step 3, before any ratchet-level step."""
    case = initial_case(True, header_encryption)
    bob, _ = case.bob.accept_session(case.first, provider=case.provider, now=NOW)
    other = make_pair(header_encryption=header_encryption, seed="other-initial")
    changed = rebuild(case.second, base_key=other.alice_account.identity_key)
    calls = _ratchet_calls(monkeypatch)
    for session, wire in ((case.alice, case.second), (bob, changed)):
        before = session.to_bytes()
        with pytest.raises(e2ee.AuthenticationError):
            session.decrypt(wire)
        assert session.to_bytes() == before
    assert calls == []
    assert bob.decrypt(case.second) == b"second"
    assert len(calls) == 1
