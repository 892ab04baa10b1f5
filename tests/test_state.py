"""Persisted state: round trips, sealing, corruption, size and golden files.

* Sessions and accounts survive ``to_bytes``/``from_bytes`` (plain and sealed under a 32-byte
  key) byte for byte and keep working afterwards.
* Every corruption of sealed state is a :class:`StateError`. Plain state is not authenticated:
  a corruption is a ``StateError`` or loads as a different, self-consistent state -- never any
  other exception.
* State size is bounded: it does not grow with the number of messages exchanged.
* Golden files written by ``tests/golden/make_golden.py`` (v1 layouts) still load, re-serialize
  to the same bytes and decrypt the messages recorded with them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from nacl import bindings

import e2ee
from e2ee import state as state_module
from e2ee.errors import E2EEError, StateError
from e2ee.limits import STATE_VERSION, TYPE_SESSION_STATE
from e2ee.testing import DeterministicProvider
from e2ee.wire import codec
from tests.helpers import NOW, Pair, flip_bit, make_pair

KEY = bytes(range(100, 132))
OTHER_KEY = bytes(range(200, 232))
MAX = 2**24

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"


# --- fixtures ----------------------------------------------------------------------------


@dataclass
class Conversation:
    """A pair in mid-conversation, each side holding one skipped key, plus what is in flight."""

    pair: Pair
    to_alice: list[tuple[bytes, bytes]]
    """Messages from Bob that Alice has not received yet: (wire, plaintext)."""
    to_bob: list[tuple[bytes, bytes]]


def conversation(header_encryption: bool, seed: str = "state") -> Conversation:
    pair = make_pair(header_encryption=header_encryption, seed=f"{seed}/{header_encryption}")
    alice, bob, provider = pair.alice, pair.bob, pair.provider

    def send(sender: e2ee.Session, text: bytes) -> tuple[bytes, bytes]:
        return sender.encrypt(text, provider=provider), text

    a = [send(alice, b"a%d" % i) for i in range(3)]
    assert bob.decrypt(a[0][0]) == b"a0"
    assert bob.decrypt(a[2][0]) == b"a2"
    b = [send(bob, b"b%d" % i) for i in range(3)]
    assert alice.decrypt(b[0][0]) == b"b0"
    assert alice.decrypt(b[2][0]) == b"b2"
    assert alice.skipped_key_count == bob.skipped_key_count == 1
    return Conversation(pair, to_alice=[b[1]], to_bob=[a[1]])


@functools.cache
def session_states(header_encryption: bool) -> tuple[bytes, bytes, bytes, bytes]:
    """(alice plain, alice sealed under KEY, next message to Alice, its plaintext)."""
    conv = conversation(header_encryption, seed="corruption")
    alice = conv.pair.alice
    sealed = alice.to_bytes(key=KEY, provider=DeterministicProvider("seal"))
    wire, plaintext = conv.to_alice[0]
    return alice.to_bytes(), sealed, wire, plaintext


@functools.cache
def account_states() -> tuple[bytes, bytes]:
    """(plain, sealed) state of a post-quantum account with one-time prekeys."""
    provider = DeterministicProvider("account-states")
    account = e2ee.Account.generate(provider=provider, now=NOW)
    account.generate_one_time_prekeys(3, provider=provider)
    account.prekey_bundle()
    return account.to_bytes(), account.to_bytes(key=KEY, provider=provider)


def exchange(alice: e2ee.Session, bob: e2ee.Session, rounds: int = 3) -> None:
    for i in range(rounds):
        assert bob.decrypt(alice.encrypt(b"to bob %d" % i)) == b"to bob %d" % i
        assert alice.decrypt(bob.encrypt(b"to alice %d" % i)) == b"to alice %d" % i


def load_session_or_state_error(data: bytes, key: bytes | None = None) -> e2ee.Session | None:
    """Loads; any exception but StateError fails the test."""
    try:
        return e2ee.Session.from_bytes(data, key=key)
    except StateError:
        return None


def load_account_or_state_error(data: bytes, key: bytes | None = None) -> e2ee.Account | None:
    try:
        return e2ee.Account.from_bytes(data, key=key)
    except StateError:
        return None


def envelope(sealed: bytes) -> dict[int, Any]:
    value: dict[int, Any] = codec.decode(sealed, max_size=MAX)
    assert sorted(value) == list(range(7))
    return value


# --- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "sealed"])
@pytest.mark.parametrize("header_encryption", [True, False], ids=["he", "no-he"])
def test_session_round_trip_keeps_working(header_encryption: bool, sealed: bool) -> None:
    conv = conversation(header_encryption)
    key = KEY if sealed else None
    saved = {}
    for name, session in (("alice", conv.pair.alice), ("bob", conv.pair.bob)):
        data = session.to_bytes(key=key, provider=DeterministicProvider(f"seal/{name}"))
        loaded = e2ee.Session.from_bytes(data, key=key)
        assert loaded.to_bytes() == session.to_bytes()
        if sealed:
            assert data != session.to_bytes()
            assert session._ratchet.root_key not in data
            assert session._ratchet.root_key in session.to_bytes()
        else:
            assert data == session.to_bytes()
        assert loaded.session_id == session.session_id
        assert loaded.peer_identity_key == session.peer_identity_key
        assert loaded.local_identity_key == session.local_identity_key
        assert loaded.header_encryption is header_encryption
        assert loaded.is_initiator is session.is_initiator
        assert loaded.skipped_key_count == 1
        saved[name] = loaded
    alice, bob = saved["alice"], saved["bob"]
    for wire, plaintext in conv.to_alice:
        assert alice.decrypt(wire) == plaintext
    for wire, plaintext in conv.to_bob:
        assert bob.decrypt(wire) == plaintext
    assert alice.skipped_key_count == bob.skipped_key_count == 0
    exchange(alice, bob)
    # Saving and loading again mid-exchange changes nothing either.
    exchange(e2ee.Session.from_bytes(alice.to_bytes()), bob, rounds=1)


def test_session_awaiting_reply_round_trip() -> None:
    """An initiator that has not heard back persists its pending initial fields."""
    provider = DeterministicProvider("awaiting")
    bob_account = e2ee.Account.generate(provider=provider, now=NOW)
    alice_account = e2ee.Account.generate(provider=provider, now=NOW)
    alice = alice_account.start_session(bob_account.prekey_bundle(), provider=provider, now=NOW)
    first = alice.encrypt(b"first", provider=provider)
    for key in (None, KEY):
        loaded = e2ee.Session.from_bytes(alice.to_bytes(key=key, provider=provider), key=key)
        assert loaded.awaiting_reply
        assert loaded.to_bytes() == alice.to_bytes()
        second = loaded.encrypt(b"second", provider=provider)
        assert e2ee.peek(second).is_initial
    bob, plaintext = bob_account.accept_session(second, provider=provider, now=NOW)
    assert plaintext == b"second"
    assert bob.decrypt(first) == b"first"
    assert loaded.decrypt(bob.encrypt(b"reply")) == b"reply"
    assert not loaded.awaiting_reply


@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "sealed"])
@pytest.mark.parametrize("post_quantum", [True, False], ids=["pq", "classic"])
def test_account_round_trip_keeps_working(post_quantum: bool, sealed: bool) -> None:
    provider = DeterministicProvider(f"account/{post_quantum}")
    account = e2ee.Account.generate(provider=provider, now=NOW, post_quantum=post_quantum)
    account.generate_one_time_prekeys(3, provider=provider)
    handed_out = account.prekey_bundle()  # before saving: the saved account must accept it
    key = KEY if sealed else None
    data = account.to_bytes(key=key, provider=provider)
    loaded = e2ee.Account.from_bytes(data, key=key)
    assert loaded.to_bytes() == account.to_bytes()
    assert (data == account.to_bytes()) is not sealed
    assert loaded.identity_key == account.identity_key
    assert loaded.post_quantum is post_quantum
    assert loaded.one_time_prekey_count() == 3
    assert loaded.unpublished_one_time_prekey_count() == 2
    assert loaded.prekey_bundle().to_bytes() == account.prekey_bundle().to_bytes()

    config = e2ee.SessionConfig(allow_x3dh=True)
    for bundle in (handed_out, loaded.prekey_bundle()):
        initiator = e2ee.Account.generate(provider=provider, now=NOW)
        session = initiator.start_session(bundle, config=config, provider=provider, now=NOW)
        responder, plaintext = loaded.accept_session(
            session.encrypt(b"hello"), provider=provider, now=NOW
        )
        assert plaintext == b"hello"
        assert session.decrypt(responder.encrypt(b"hi")) == b"hi"
    again = e2ee.Account.from_bytes(loaded.to_bytes(key=key, provider=provider), key=key)
    assert again.to_bytes() == loaded.to_bytes()
    assert again.one_time_prekey_count() == 1


def test_sealing_is_deterministic_given_the_provider() -> None:
    plain, _, _, _ = session_states(True)
    session = e2ee.Session.from_bytes(plain)
    one = session.to_bytes(key=KEY, provider=DeterministicProvider("n"))
    assert one == session.to_bytes(key=KEY, provider=DeterministicProvider("n"))
    other = session.to_bytes(key=KEY, provider=DeterministicProvider("m"))
    assert other != one  # a fresh nonce per save
    for data in (one, other):
        assert e2ee.Session.from_bytes(data, key=KEY).to_bytes() == plain


def test_a_wrong_size_key_is_a_programming_error() -> None:
    plain, sealed, _, _ = session_states(True)
    session = e2ee.Session.from_bytes(plain)
    with pytest.raises(TypeError):
        session.to_bytes(key=bytes(31))
    with pytest.raises(TypeError):
        e2ee.Session.from_bytes(sealed, key=bytes(16))


# --- rejections --------------------------------------------------------------------------


def test_wrong_missing_or_unexpected_key_is_a_state_error() -> None:
    session_plain, session_sealed, _, _ = session_states(True)
    account_plain, account_sealed = account_states()
    for plain, sealed, cls in (
        (session_plain, session_sealed, e2ee.Session),
        (account_plain, account_sealed, e2ee.Account),
    ):
        with pytest.raises(StateError, match="key"):
            cls.from_bytes(sealed, key=OTHER_KEY)
        with pytest.raises(StateError, match="key is required"):
            cls.from_bytes(sealed)
        with pytest.raises(StateError, match="not encrypted"):
            cls.from_bytes(plain, key=KEY)
        assert cls.from_bytes(sealed, key=KEY).to_bytes() == plain


def test_state_of_the_other_type_is_a_state_error() -> None:
    session_plain, session_sealed, _, _ = session_states(True)
    account_plain, account_sealed = account_states()
    with pytest.raises(StateError):
        e2ee.Account.from_bytes(session_sealed, key=KEY)
    with pytest.raises(StateError):
        e2ee.Account.from_bytes(session_plain)
    with pytest.raises(StateError):
        e2ee.Session.from_bytes(account_sealed, key=KEY)
    with pytest.raises(StateError):
        e2ee.Session.from_bytes(account_plain)


def test_sealed_envelope_fields_are_authenticated() -> None:
    """Swapping the object id (or any other envelope field) makes the state not open."""
    _, session_sealed, _, _ = session_states(True)
    _, other_sealed, _, _ = session_states(False)
    _, account_sealed = account_states()
    fields = envelope(session_sealed)
    other_id = envelope(other_sealed)[4]
    account_id = envelope(account_sealed)[4]
    assert other_id != fields[4]
    edits: list[dict[int, Any]] = [
        {4: other_id},  # another session's id
        {4: account_id},  # an account's id
        {4: fields[4][:-1]},
        {3: STATE_VERSION + 1},  # layout version claimed by the envelope
        {5: bytes(24)},  # nonce
        {6: fields[6][:-1]},
        {6: envelope(other_sealed)[6]},  # another session's ciphertext under the same key
        {0: 2},  # envelope version
        {2: 16},  # claims to be an account
        {7: 0},  # unknown field
        {5: fields[5][:-1]},
        {4: None},
        {3: b"\x01"},
    ]
    for edit in edits:
        data = codec.encode({**fields, **edit})
        with pytest.raises(StateError):
            e2ee.Session.from_bytes(data, key=KEY)
    # The unedited envelope re-encodes to itself and opens.
    assert e2ee.Session.from_bytes(codec.encode(fields), key=KEY)


def test_plain_state_with_other_version_or_type_is_a_state_error() -> None:
    plain, _, _, _ = session_states(True)
    fields: dict[int, Any] = codec.decode(plain, max_size=MAX)
    for edit in ({0: STATE_VERSION + 1}, {0: 0}, {0: None}, {1: 16}, {1: 18}, {23: 0}):
        with pytest.raises(StateError):
            e2ee.Session.from_bytes(codec.encode({**fields, **edit}))
    for missing in fields:
        with pytest.raises(StateError):
            e2ee.Session.from_bytes(codec.encode({k: v for k, v in fields.items() if k != missing}))


@pytest.mark.parametrize(
    "which", ["session-plain", "session-sealed", "account-plain", "account-sealed"]
)
def test_truncation_at_every_offset_is_a_state_error(which: str) -> None:
    if which.startswith("session"):
        plain, sealed, _, _ = session_states(True)
        loader: Any = e2ee.Session.from_bytes
    else:
        plain, sealed = account_states()
        loader = e2ee.Account.from_bytes
    data, key = (sealed, KEY) if which.endswith("sealed") else (plain, None)
    for end in range(len(data)):
        with pytest.raises(StateError):
            loader(data[:end], key=key)
    assert loader(data, key=key).to_bytes() == plain


@pytest.mark.parametrize("header_encryption", [True, False], ids=["he", "no-he"])
def test_sealed_session_bit_flips_are_state_errors(header_encryption: bool) -> None:
    _, sealed, _, _ = session_states(header_encryption)
    checked = 0
    for index in range(len(sealed)):
        for bit in range(8):
            with pytest.raises(StateError):
                e2ee.Session.from_bytes(flip_bit(sealed, index, bit), key=KEY)
            checked += 1
    assert checked == 8 * len(sealed) > 0


def test_sealed_account_bit_flips_are_state_errors() -> None:
    _, sealed = account_states()
    for index in range(len(sealed)):
        with pytest.raises(StateError):
            e2ee.Account.from_bytes(flip_bit(sealed, index, index % 8), key=KEY)


def _header_encryption_flag_offset(plain: bytes) -> int:
    """Offset of the header-encryption boolean (field 4) in a plain session state."""
    fields: dict[int, Any] = codec.decode(plain, max_size=MAX)
    head = codec.encode({k: fields[k] for k in range(4)})
    offset = len(head) + 1  # same one-byte map head, then key 4's byte
    assert plain[offset - 1 : offset + 1] in (b"\x04\xf4", b"\x04\xf5")
    return offset


@pytest.mark.parametrize("header_encryption", [True, False], ids=["he", "no-he"])
def test_plain_session_bit_flips_load_or_raise_state_error(header_encryption: bool) -> None:
    plain, _, wire, plaintext = session_states(header_encryption)
    original = e2ee.Session.from_bytes(plain)
    root_key = original._ratchet.root_key
    root_at = plain.index(root_key)
    loaded = rejected = 0
    for index in range(len(plain)):
        for bit in range(8):
            mutated = flip_bit(plain, index, bit)
            session = load_session_or_state_error(mutated)
            if session is None:
                rejected += 1
                continue
            loaded += 1
            # What loads is a state in its own right: it re-serializes to the same bytes.
            assert session.to_bytes() == mutated
            if root_at <= index < root_at + len(root_key):
                assert session._ratchet.root_key != root_key
    assert loaded > 0
    assert rejected > 0
    # Flipping a root-key byte loads (a different, unauthenticated, valid state).
    assert load_session_or_state_error(flip_bit(plain, root_at, 0)) is not None
    assert original.decrypt(wire) == plaintext


@pytest.mark.parametrize("header_encryption", [True, False], ids=["he", "no-he"])
def test_corrupted_plain_session_fails_only_with_e2ee_errors_when_used(
    header_encryption: bool,
) -> None:
    """A corrupted plain state that loads must still fail cleanly when used.

    The header-encryption flag of a no-HE state is left out here: flipping it is the bug that
    test_header_encryption_without_header_keys_is_rejected shows.
    """
    plain, _, wire, _ = session_states(header_encryption)
    skip = set() if header_encryption else {_header_encryption_flag_offset(plain)}
    used = 0
    for index in range(len(plain)):
        if index in skip:
            continue
        for bit in range(8):
            session = load_session_or_state_error(flip_bit(plain, index, bit))
            if session is None:
                continue
            used += 1
            with contextlib.suppress(E2EEError):
                session.decrypt(wire)
            with contextlib.suppress(E2EEError):
                session.encrypt(b"after corruption")
    assert used > 0


@pytest.mark.parametrize("edit", ["flip the flag of a no-HE state", "null the HE keys"])
def test_header_encryption_without_header_keys_is_rejected(edit: str) -> None:
    if edit == "flip the flag of a no-HE state":
        plain, _, _, _ = session_states(False)
        data = flip_bit(plain, _header_encryption_flag_offset(plain), 0)
    else:
        plain, _, _, _ = session_states(True)
        fields: dict[int, Any] = codec.decode(plain, max_size=MAX)
        data = codec.encode({**fields, 18: None, 19: None, 20: None, 21: None})
    session = load_session_or_state_error(data)
    if session is None:
        return
    with contextlib.suppress(E2EEError):
        session.encrypt(b"x")


def test_account_state_beyond_its_bounds_is_a_state_error() -> None:
    """[REQ-ERR-06] Structurally valid account state that breaks a bound of the layout: a replay
    memory naming one base key twice, and more than 1000 one-time prekeys of either kind (the
    limit of limits.md, section 2). Loading raises StateError, nothing else; the untouched
    state loads."""
    plain, _ = account_states()
    assert e2ee.Account.from_bytes(plain).to_bytes() == plain
    base_key = bytes(range(32))

    def edited(edit: Any) -> bytes:
        value = codec.decode(plain, max_size=len(plain))
        assert isinstance(value, dict)
        edit(value)
        return codec.encode(value)

    def duplicate_base_keys(value: dict[int, Any]) -> None:
        value[5][0][8] = [base_key, base_key]

    def too_many(field: int) -> Callable[[dict[int, Any]], None]:
        def edit(value: dict[int, Any]) -> None:
            value[field] = [value[field][0]] * 1001

        return edit

    for edit in (duplicate_base_keys, too_many(6), too_many(7)):
        with pytest.raises(StateError):
            e2ee.Account.from_bytes(edited(edit))


def test_plain_account_bit_flips_load_or_raise_state_error() -> None:
    plain, _ = account_states()
    loaded = 0
    for index in range(len(plain)):
        mutated = flip_bit(plain, index, index % 8)
        account = load_account_or_state_error(mutated)
        if account is not None:
            loaded += 1
            assert account.to_bytes() == mutated
    assert loaded > 0


FUZZ = settings(
    # Fuzzing is cheap here: ten times the profile's example count (250 with the CI profile).
    max_examples=10 * settings().max_examples,
    suppress_health_check=[HealthCheck.too_slow],
)
"""Settings of the fuzz tests in this module."""

# --- fuzzing -----------------------------------------------------------------------------

cbor_leaves: st.SearchStrategy[Any] = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64 - 1)
    | st.sampled_from([0, 1, 2, 16, 17, 18, 2**32 - 1, 2**32])
    | st.binary(max_size=40)
    | st.sampled_from([bytes(16), bytes(24), bytes(32), bytes(64)])
)
cbor_values: st.SearchStrategy[Any] = st.recursive(
    cbor_leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.integers(0, 24), children, max_size=4)
    ),
    max_leaves=12,
)


@FUZZ
@given(st.binary(max_size=256), st.sampled_from([None, KEY]))
def test_random_bytes_are_state_errors(data: bytes, key: bytes | None) -> None:
    for loader in (e2ee.Session.from_bytes, e2ee.Account.from_bytes):
        with pytest.raises(StateError):
            loader(data, key=key)


@FUZZ
@given(cbor_values, st.sampled_from([None, KEY]))
def test_random_cbor_values_are_state_errors(value: Any, key: bytes | None) -> None:
    data = codec.encode(value)
    assert load_session_or_state_error(data, key) is None
    assert load_account_or_state_error(data, key) is None


@FUZZ
@given(st.sampled_from(["he", "no-he", "account"]), st.data())
def test_field_edits_load_or_raise_state_error(which: str, draw: st.DataObject) -> None:
    """Edits that keep the CBOR canonical reach the field checks of from_bytes."""
    if which == "account":
        plain, _ = account_states()
    else:
        plain, _, _, _ = session_states(which == "he")
    fields: dict[int, Any] = codec.decode(plain, max_size=MAX)
    for _ in range(draw.draw(st.integers(1, 3))):
        key = draw.draw(st.sampled_from(sorted(fields)) | st.integers(0, 25))
        if key in fields and draw.draw(st.booleans()):
            del fields[key]
        else:
            fields[key] = draw.draw(cbor_values)
    data = codec.encode(fields)
    loaded = (
        load_account_or_state_error(data)
        if which == "account"
        else load_session_or_state_error(data)
    )
    if loaded is not None:
        assert loaded.to_bytes() == data


# --- size --------------------------------------------------------------------------------


@pytest.mark.parametrize("header_encryption", [True, False], ids=["he", "no-he"])
@pytest.mark.parametrize("pattern", ["one-way", "ping-pong"])
def test_state_size_does_not_grow_with_messages(header_encryption: bool, pattern: str) -> None:
    pair = make_pair(header_encryption=header_encryption, seed=f"size/{pattern}")
    sizes: dict[int, tuple[int, int]] = {}
    for i in range(1, 501):
        text = b"message %d" % i
        assert pair.bob.decrypt(pair.alice.encrypt(text)) == text
        if pattern == "ping-pong":
            assert pair.alice.decrypt(pair.bob.encrypt(text)) == text
        if i in (10, 500):
            sizes[i] = (len(pair.alice.to_bytes()), len(pair.bob.to_bytes()))
    for early, late in zip(sizes[10], sizes[500], strict=True):
        # Only the counters may take more bytes: a counter below 24 takes one byte, below
        # 65536 three; at most two counters (ns/nr and pn) of a side grow.
        assert 0 <= late - early <= 4, sizes


# --- golden files ------------------------------------------------------------------------


def _manifest() -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((GOLDEN_DIR / "manifest.json").read_text())
    return manifest


MANIFEST = _manifest()
GOLDEN_NOW: int = MANIFEST["now"]
GOLDEN_KEY = bytes.fromhex(MANIFEST["seal_key_hex"])
GOLDEN_STATES: list[dict[str, Any]] = MANIFEST["states"]


def _golden_load(entry: dict[str, Any], data: bytes, key: bytes | None) -> Any:
    if entry["type"] == "account":
        return e2ee.Account.from_bytes(data, key=key)
    assert entry["type"] == "session"
    return e2ee.Session.from_bytes(data, key=key)


def _golden_receive_all(entry: dict[str, Any], obj: Any) -> None:
    assert entry["messages"]
    for message in entry["messages"]:
        wire = (GOLDEN_DIR / message["file"]).read_bytes()
        expected = bytes.fromhex(message["plaintext_hex"])
        if isinstance(obj, e2ee.Account):
            _, plaintext = obj.accept_session(wire, now=GOLDEN_NOW)
        else:
            plaintext = obj.decrypt(wire)
        assert plaintext == expected


def test_golden_manifest_is_complete() -> None:
    assert MANIFEST["state_version"] == STATE_VERSION == 1
    named = {"manifest.json", "encapsulations.json", "make_golden.py", "__init__.py"}
    for entry in GOLDEN_STATES:
        named |= {entry["file"], entry["sealed_file"]}
        named |= {message["file"] for message in entry["messages"]}
    on_disk = {p.name for p in GOLDEN_DIR.iterdir() if p.is_file()}
    assert on_disk == named
    kinds = {entry["name"]: entry["type"] for entry in GOLDEN_STATES}
    assert list(kinds.values()).count("account") == 1
    assert list(kinds.values()).count("session") == 4


@pytest.mark.parametrize("entry", GOLDEN_STATES, ids=[e["name"] for e in GOLDEN_STATES])
def test_golden_plain_state(entry: dict[str, Any]) -> None:
    data = (GOLDEN_DIR / entry["file"]).read_bytes()
    assert codec.decode(data, max_size=MAX)[0] == MANIFEST["state_version"]
    obj = _golden_load(entry, data, None)
    assert obj.to_bytes() == data
    _golden_receive_all(entry, obj)


@pytest.mark.parametrize("entry", GOLDEN_STATES, ids=[e["name"] for e in GOLDEN_STATES])
def test_golden_sealed_state(entry: dict[str, Any]) -> None:
    sealed = (GOLDEN_DIR / entry["sealed_file"]).read_bytes()
    plain = (GOLDEN_DIR / entry["file"]).read_bytes()
    obj = _golden_load(entry, sealed, GOLDEN_KEY)
    assert obj.to_bytes() == plain
    assert (
        obj.to_bytes(key=GOLDEN_KEY, provider=DeterministicProvider(entry["seal_seed"])) == sealed
    )
    with pytest.raises(StateError):
        _golden_load(entry, sealed, KEY)
    with pytest.raises(StateError):
        _golden_load(entry, sealed, None)
    _golden_receive_all(entry, obj)


def test_golden_account_consumes_the_used_one_time_prekeys() -> None:
    (entry,) = [e for e in GOLDEN_STATES if e["type"] == "account"]
    account = e2ee.Account.from_bytes((GOLDEN_DIR / entry["file"]).read_bytes())
    assert account.post_quantum
    assert account.one_time_prekey_count() == 3
    assert account.unpublished_one_time_prekey_count() == 2
    _golden_receive_all(entry, account)
    assert account.one_time_prekey_count() == 2
    # The same initial message again: its one-time prekey is gone.
    wire = (GOLDEN_DIR / entry["messages"][0]["file"]).read_bytes()
    with pytest.raises(e2ee.HandshakeError):
        account.accept_session(wire, now=GOLDEN_NOW)


# --- load rules, one at a time -----------------------------------------------------------


def _seal_as_spec_says(
    body: bytes, inner_version: int, object_id: bytes, *, inner_type: int = 17
) -> bytes:
    """A sealed state built from state.md section 4 with an independent HKDF and AEAD."""
    state_key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=bytes(32), info=b"e2ee/v1/state-at-rest"
    ).derive(KEY)
    ad = codec.encode([1, 18, inner_type, inner_version, object_id])
    nonce = bytes(range(24))
    sealed = bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(body, ad, nonce, state_key)
    return codec.encode(
        {0: 1, 1: 18, 2: inner_type, 3: inner_version, 4: object_id, 5: nonce, 6: bytes(sealed)}
    )


@given(body=st.binary(max_size=64))
@example(body=b"")
@example(body=b"\xff")
@example(body=b"\x18\x01")  # non-canonical integer 1
def test_an_authenticated_body_that_is_not_a_state_is_a_state_error(body: bytes) -> None:
    """[REQ-STATE-06] [REQ-ERR-03] A body that authenticates under the key but does not decode
    canonically (or is no session map) is a StateError, not a DecodeError."""
    for inner_type, cls in ((17, e2ee.Session), (16, e2ee.Account)):
        data = _seal_as_spec_says(body, 1, bytes(16), inner_type=inner_type)
        with pytest.raises(StateError):
            cls.from_bytes(data, key=KEY)


@given(sealed=st.binary(max_size=15))
def test_a_sealed_body_shorter_than_the_tag_is_a_state_error(sealed: bytes) -> None:
    """[REQ-ERR-03] A sealed body too short to hold the 16-byte tag (libsodium raises a bare
    ValueError for it) is a StateError."""
    for inner_type, cls in ((17, e2ee.Session), (16, e2ee.Account)):
        envelope_fields = {0: 1, 1: 18, 2: inner_type, 3: 1, 4: bytes(16), 5: bytes(24)}
        with pytest.raises(StateError):
            cls.from_bytes(codec.encode({**envelope_fields, 6: sealed}), key=KEY)


def test_a_sealed_state_of_an_older_version_opens_under_its_own_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """[REQ-STATE-02] [REQ-STATE-08] AD_state names the envelope's inner version, not the
    library's current one, so a state sealed before a version bump still opens and is migrated.
    Simulated by raising STATE_VERSION by one with a migration that only renumbers the map
    (while STATE_VERSION is 1, authenticating under the current version would go unnoticed:
    the body's own version check refuses the same inputs)."""
    plain, sealed, _, _ = session_states(True)
    bumped = STATE_VERSION + 1
    monkeypatch.setattr(state_module, "STATE_VERSION", bumped)
    monkeypatch.setitem(
        state_module.MIGRATIONS, (TYPE_SESSION_STATE, STATE_VERSION), lambda m: {**m, 0: bumped}
    )
    value, _ = state_module.load(sealed, TYPE_SESSION_STATE, KEY)
    assert value == {**codec.decode(plain, max_size=MAX), 0: bumped}


def test_an_older_state_is_migrated_step_by_step_up_to_the_current_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """[REQ-STATE-08] A state two versions old runs MIGRATIONS[(type, version)] for each version
    from its own up to STATE_VERSION, in order, each on the previous one's result; a state of
    the current version runs none. Simulated by raising STATE_VERSION by two."""
    plain, _, _, _ = session_states(True)
    current = STATE_VERSION + 2
    steps: list[int] = []

    def step(version: int) -> Callable[[state_module.StateMap], state_module.StateMap]:
        def migrate(value: state_module.StateMap) -> state_module.StateMap:
            assert value[0] == version  # the previous step's result, not the stored map
            steps.append(version)
            return {**value, 0: version + 1}

        return migrate

    monkeypatch.setattr(state_module, "STATE_VERSION", current)
    for version in (STATE_VERSION, STATE_VERSION + 1):
        monkeypatch.setitem(state_module.MIGRATIONS, (TYPE_SESSION_STATE, version), step(version))
    value, envelope_id = state_module.load(plain, TYPE_SESSION_STATE, None)
    assert steps == [STATE_VERSION, STATE_VERSION + 1]
    assert value == {**codec.decode(plain, max_size=MAX), 0: current}
    assert envelope_id is None
    steps.clear()
    state_module.load(codec.encode(value), TYPE_SESSION_STATE, None)
    assert steps == []


def test_a_state_key_of_another_size_is_a_type_error() -> None:
    """[REQ-STATE-03] A state key longer or shorter than 32 bytes is refused with TypeError, on
    writing and on loading."""
    plain, sealed, _, _ = session_states(True)
    session = e2ee.Session.from_bytes(plain)
    for size in (0, 31, 33, 64):
        with pytest.raises(TypeError):
            session.to_bytes(key=bytes(size))
        with pytest.raises(TypeError):
            e2ee.Session.from_bytes(sealed, key=bytes(size))


def test_a_map_without_an_unsigned_version_is_a_state_error() -> None:
    """[REQ-STATE-05] A map whose key 0 is missing or not an integer is a StateError, also when
    key 1 names the requested type."""
    for value in ({1: 17}, {0: "1", 1: 17}, {0: b"\x01", 1: 17}, {0: None, 1: 16}, {1: 16}):
        with pytest.raises(StateError):
            e2ee.Session.from_bytes(codec.encode(value))
        with pytest.raises(StateError):
            e2ee.Account.from_bytes(codec.encode(value))


def test_the_sealed_body_version_must_equal_the_envelope_version() -> None:
    """[REQ-STATE-06] A body sealed as the spec says loads; the same body under an envelope
    (and associated data) naming another inner version is a StateError."""
    plain, _, _, _ = session_states(True)
    session_id = codec.decode(plain, max_size=MAX)[2]
    assert (
        e2ee.Session.from_bytes(_seal_as_spec_says(plain, 1, session_id), key=KEY).to_bytes()
        == plain
    )
    for version in (0, 2):
        with pytest.raises(StateError):
            e2ee.Session.from_bytes(_seal_as_spec_says(plain, version, session_id), key=KEY)


def _awaiting_state() -> dict[int, Any]:
    provider = DeterministicProvider("awaiting-rules")
    bob_account = e2ee.Account.generate(provider=provider, now=NOW)
    alice_account = e2ee.Account.generate(provider=provider, now=NOW)
    alice = alice_account.start_session(
        bob_account.prekey_bundle(),
        config=e2ee.SessionConfig(header_encryption=True),
        provider=provider,
        now=NOW,
    )
    assert alice.awaiting_reply
    state: dict[int, Any] = codec.decode(alice.to_bytes(), max_size=MAX)
    return state


def _pending(fields: bytes) -> dict[int, Any]:
    """Pending initial fields (key 8) with their matching hash (key 7)."""
    return {7: hashlib.sha256(fields).digest(), 8: fields}


def _session_rule_cases() -> list[tuple[str, dict[int, Any], dict[int, Any]]]:
    he: dict[int, Any] = codec.decode(session_states(True)[0], max_size=MAX)
    clear: dict[int, Any] = codec.decode(session_states(False)[0], max_size=MAX)
    awaiting = _awaiting_state()
    *older, (reference, keys) = he[22]  # the newest is the current chain, with a skipped key
    assert reference == he[19]
    assert len(keys) == 1
    assert len(older) < 5
    older_keys = sum(len(chain_keys) for _, chain_keys in older)
    others = [[bytes([i]) * 32, []] for i in range(1, 6 - len(older))]
    no_header_keys = {18: None, 19: None, 20: None, 21: None}
    return [
        ("an unknown field", he, {23: 0}),
        ("role 2", he, {3: 2}),
        ("a header key without header encryption", clear, {18: bytes(32)}),
        ("a next header key without header encryption", clear, {21: bytes(32)}),
        ("pending initial fields at a responder", awaiting, {3: 1}),
        ("pending initial fields of another initiator", awaiting, {5: awaiting[6], 6: awaiting[5]}),
        ("pending initial fields of another hash", awaiting, {7: bytes(32)}),
        ("pending initial fields that are not CBOR", awaiting, _pending(b"\xff")),
        ("pending initial fields cut short", awaiting, _pending(awaiting[8][:-1])),
        ("pending initial fields of the other mode", awaiting, {4: False, **no_header_keys}),
        ("a chain remembered twice", he, {22: [*older, [reference, keys], [reference, keys]]}),
        ("a message number twice", he, {22: [*older, [reference, keys + keys]]}),
        (
            "a message number above MAX_COUNTER",
            he,
            {22: [*older, [reference, [[2**32, bytes(32)]]]]},
        ),
        ("six remembered chains", he, {22: [*others, *older, [reference, keys]]}),
        (
            "2001 skipped keys",
            he,
            {22: [*older, [reference, [[n, bytes(32)] for n in range(2001 - older_keys)]]]},
        ),
        ("the current chain is not the newest", he, {22: [*he[22], others[0]]}),
        ("a receiving chain without a peer ratchet key", he, {12: None}),
        ("no sending chain", he, {13: None}),
        ("a ratchet public key of another private key", he, {11: he[12]}),
        ("a receiving header key without a receiving chain", he, {14: None}),
        ("no next sending header key", he, {20: None}),
        ("no next receiving header key", he, {21: None}),
    ]


def test_session_state_breaking_one_load_rule_is_a_state_error() -> None:
    """[REQ-STATE-10] Each edit breaks exactly one rule of state.md section 5, step 6 (session)
    in an otherwise loadable state; each is refused with StateError."""
    cases = _session_rule_cases()
    for _, base, _ in cases:
        e2ee.Session.from_bytes(codec.encode(base))
    loaded = []
    for label, base, edit in cases:
        try:
            e2ee.Session.from_bytes(codec.encode({**base, **edit}))
        except StateError:
            continue
        loaded.append(label)
    assert loaded == []


def test_a_sealed_session_must_name_its_own_session_id() -> None:
    """[REQ-STATE-10] A session body sealed (correctly, under the right key) in an envelope
    that names another object id is a StateError."""
    plain, _, _, _ = session_states(True)
    other_id = codec.decode(session_states(False)[0], max_size=MAX)[2]
    with pytest.raises(StateError):
        e2ee.Session.from_bytes(_seal_as_spec_says(plain, 1, other_id), key=KEY)


def _account_maps() -> tuple[dict[int, Any], dict[int, Any]]:
    """(post-quantum, classic) account states, each with a replaced and a current signed
    prekey and two one-time prekeys of each kind it has."""
    maps = []
    for post_quantum in (True, False):
        provider = DeterministicProvider(f"account-rules/{post_quantum}")
        account = e2ee.Account.generate(provider=provider, now=NOW, post_quantum=post_quantum)
        account.generate_one_time_prekeys(2, provider=provider)
        account.rotate_signed_prekey(provider=provider, now=NOW + 1)
        state: dict[int, Any] = codec.decode(account.to_bytes(), max_size=MAX)
        maps.append(state)
    return maps[0], maps[1]


def _account_rule_cases() -> list[tuple[str, dict[int, Any], dict[int, Any]]]:
    pq, classic = _account_maps()
    old, current = pq[5]
    assert old[9] is not None
    assert current[9] is None
    assert len(pq[6]) == len(pq[7]) == 2
    assert classic[7] == []
    free = pq[4]  # the next prekey id: no record uses it or anything above
    spare = {4: free + 2000}  # room for records with new ids
    kem_record = [free, *pq[7][0][1:]]
    otk = pq[6][0]
    seen = [bytes([i % 256, i // 256]) * 16 for i in range(1001)]
    retired = [[free + i, *old[1:5], free + 100 + i, *old[6:]] for i in range(4)]
    return [
        ("an unknown field", pq, {8: 0}),
        ("no signed prekey", pq, {5: []}),
        ("a replaced signed prekey without retirement time", pq, {5: [[*old[:9], None], current]}),
        ("a current signed prekey with a retirement time", pq, {5: [old, [*current[:9], NOW]]}),
        ("a classic account with one-time ML-KEM prekeys", classic, {**spare, 7: [kem_record]}),
        (
            "a classic account with a last-resort ML-KEM prekey",
            classic,
            {
                **spare,
                5: [
                    classic[5][0],
                    [*classic[5][1][:5], free + 1, *pq[5][1][6:8], *classic[5][1][8:]],
                ],
            },
        ),
        ("1001 seen base keys", pq, {5: [old, [*current[:8], seen, None]]}),
        ("a seen base key twice", pq, {5: [old, [*current[:8], [seen[0], seen[0]], None]]}),
        ("a one-time prekey id twice", pq, {6: [otk, otk]}),
        (
            "1001 one-time prekeys",
            pq,
            {**spare, 6: [[free + i, *otk[1:]] for i in range(1001)]},
        ),
        ("a next prekey id above 2^32", pq, {4: 2**32 + 1}),
        (
            "a one-time prekey with a signed prekey's id",
            pq,
            {6: [[current[0], *otk[1:]], pq[6][1]]},
        ),
        ("a prekey id not yet issued", pq, {6: [[free, *otk[1:]], pq[6][1]]}),
        ("six signed prekeys (at most five are kept)", pq, {**spare, 5: [old, *retired, current]}),
    ]


def test_account_state_breaking_one_load_rule_is_a_state_error() -> None:
    """[REQ-STATE-09] Each edit breaks exactly one account rule of state.md section 5, step 6
    (and its "Known deviations", which list the id and count checks) in an otherwise loadable
    state; each is refused with StateError."""
    cases = _account_rule_cases()
    for _, base, _ in cases:
        e2ee.Account.from_bytes(codec.encode(base))
    loaded = []
    for label, base, edit in cases:
        try:
            e2ee.Account.from_bytes(codec.encode({**base, **edit}))
        except StateError:
            continue
        loaded.append(label)
    assert loaded == []


def test_a_sealed_account_must_name_its_own_identity_key() -> None:
    """[REQ-STATE-09] An account body sealed (correctly, under the right key) in an envelope
    that names another identity key is a StateError."""
    plain, _ = account_states()
    with pytest.raises(StateError):
        e2ee.Account.from_bytes(_seal_as_spec_says(plain, 1, bytes(32), inner_type=16), key=KEY)
