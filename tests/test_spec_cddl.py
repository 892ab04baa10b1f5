"""spec/wire.cddl against the bytes the library really produces.

Every wire and state structure (bundles, initial and normal messages, account, session and
sealed state, plus the handshake transcript and the sealed-state associated data, which are
hashed or authenticated rather than sent) is produced by the library and validated against the
schema, so the schema cannot drift from the code. Mutated structures check that the schema is
tight enough to reject what the decoders reject, and the committed wire vectors
(test_vectors/wire_*.json) are checked against it: valid cases match, invalid ones break the
schema, the canonical encoding, or the one length rule CDDL cannot express.

Two real CDDL validators are used. pycddl 0.6.4 (bindings to the Rust ``cddl`` crate) accepts
every structure the library produces, but it has blind spots when rejecting: inside a choice of
maps or arrays it ignores unexpected keys, extra entries and occurrence limits, and a choice of
maps also matches an array. cddl-verifier (pure Python, RFC 8610 / RFC 9682) has none of these
and decides the mutation tests; pycddl must also reject every mutation outside the listed blind
spots.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
import cddl_verifier  # type: ignore[import-untyped]
import pycddl  # type: ignore[import-untyped]
import pytest

import e2ee
from e2ee.testing import DeterministicProvider
from e2ee.wire import codec
from e2ee.wire.messages import parse_message
from tests.helpers import NOW

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "spec" / "wire.cddl"
STATE_KEY = b"\x42" * 32
TOP_LEVEL_RULES = (
    "prekey-bundle",
    "initial-message",
    "normal-message",
    "account-state",
    "session-state",
    "sealed-state",
)


@functools.cache
def _pycddl_schema(rule: str) -> Any:
    return pycddl.Schema(f"e2ee-root = {rule}\n" + SCHEMA_PATH.read_text())


@functools.cache
def _verifier() -> Any:
    return cddl_verifier.Validator(SCHEMA_PATH)


def pycddl_conforms(rule: str, data: bytes) -> bool:
    try:
        _pycddl_schema(rule).validate_cbor(data)
    except pycddl.ValidationError:
        return False
    return True


def verifier_conforms(rule: str, data: bytes) -> bool:
    return bool(_verifier().validate(data, root_type=rule).valid)


def conforms(rule: str, data: bytes) -> bool:
    """Both validators accept ``data`` as ``rule`` of spec/wire.cddl."""
    return verifier_conforms(rule, data) and pycddl_conforms(rule, data)


def assert_conforms(rule: str, data: bytes) -> None:
    """``data`` matches ``rule`` and the union of all top-level structures."""
    assert conforms(rule, data), f"{rule}: a structure produced by the library does not validate"
    if rule in TOP_LEVEL_RULES:
        assert conforms("e2ee-structure", data)


def assert_rejected(rule: str, data: bytes, *, pycddl_blind: bool = False) -> None:
    """The schema rejects ``data``; pycddl must agree unless this is one of its blind spots."""
    assert not verifier_conforms(rule, data)
    if not pycddl_blind:
        assert not pycddl_conforms(rule, data)


def mutate(data: bytes, change: Callable[[Any], Any]) -> bytes:
    """Decode, apply ``change`` (it edits in place and returns None, or returns a replacement),
    and re-encode canonically."""
    value = cbor2.loads(data)
    result = change(value)
    return bytes(cbor2.dumps(value if result is None else result, canonical=True))


# --- structures produced by the library --------------------------------------------------


@dataclasses.dataclass
class Corpus:
    bundles: dict[str, bytes]
    initial_messages: dict[str, bytes]
    normal_messages: dict[str, bytes]
    accounts: dict[str, bytes]
    sessions: dict[str, bytes]
    sealed: dict[str, bytes]
    transcripts: list[bytes]
    sealed_ads: list[bytes]


def _conversation(
    *,
    post_quantum: bool,
    header_encryption: bool,
    one_time_prekeys: int,
    seed: str,
    corpus: Corpus,
) -> None:
    provider = DeterministicProvider(seed)
    name = f"{'pq' if post_quantum else 'classic'}-he{int(header_encryption)}-otk{one_time_prekeys}"
    bob = e2ee.Account.generate(provider=provider, now=NOW, post_quantum=post_quantum)
    bob.generate_one_time_prekeys(one_time_prekeys, provider=provider)
    alice = e2ee.Account.generate(provider=provider, now=NOW)
    config = e2ee.SessionConfig(header_encryption=header_encryption, allow_x3dh=True)
    bundle = bob.prekey_bundle()
    corpus.bundles[name] = bundle.to_bytes()
    initiator = alice.start_session(bundle, config=config, provider=provider, now=NOW)
    corpus.sessions[f"{name}-initiator-pending"] = initiator.to_bytes()
    first = initiator.encrypt(b"first", provider=provider)
    second = initiator.encrypt(b"second" * 10, provider=provider)
    corpus.initial_messages[name] = first
    corpus.initial_messages[f"{name}-second"] = second
    responder, _ = bob.accept_session(second, provider=provider, now=NOW)
    assert responder.decrypt(first, provider=provider) == b"first"
    corpus.accounts[f"{name}-after-accept"] = bob.to_bytes()
    # A few turns with gaps, so the skipped-key store holds keys on several chains.
    for turn in range(6):
        sender, receiver = (responder, initiator) if turn % 2 == 0 else (initiator, responder)
        wires = [sender.encrypt(b"m%d-%d" % (turn, i), provider=provider) for i in range(3)]
        corpus.normal_messages[f"{name}-turn{turn}"] = wires[-1]
        receiver.decrypt(wires[-1], provider=provider)
    corpus.sessions[f"{name}-initiator"] = initiator.to_bytes()
    corpus.sessions[f"{name}-responder"] = responder.to_bytes()
    assert responder.skipped_key_count > 0
    corpus.sealed[f"{name}-session"] = responder.to_bytes(key=STATE_KEY, provider=provider)
    corpus.sealed[f"{name}-account"] = bob.to_bytes(key=STATE_KEY, provider=provider)


def _build_corpus() -> Corpus:
    corpus = Corpus({}, {}, {}, {}, {}, {}, [], [])
    for post_quantum in (True, False):
        for header_encryption in (True, False):
            for one_time_prekeys in (0, 1):
                _conversation(
                    post_quantum=post_quantum,
                    header_encryption=header_encryption,
                    one_time_prekeys=one_time_prekeys,
                    seed=f"cddl-{post_quantum}-{header_encryption}-{one_time_prekeys}",
                    corpus=corpus,
                )
    provider = DeterministicProvider("cddl-extra")
    # A bundle with a one-time X25519 prekey but no one-time ML-KEM prekey, and the reverse
    # (a relay may assemble either from separately uploaded batches).
    bob = e2ee.Account.generate(provider=provider, now=NOW)
    bob.generate_one_time_prekeys(2, provider=provider)
    full = bob.prekey_bundle()
    corpus.bundles["pq-otk-only"] = dataclasses.replace(
        full,
        one_time_kem_prekey_id=None,
        one_time_kem_prekey=None,
        one_time_kem_prekey_signature=None,
    ).to_bytes()
    corpus.bundles["pq-otkem-only"] = dataclasses.replace(
        full, one_time_prekey_id=None, one_time_prekey=None, one_time_prekey_signature=None
    ).to_bytes()
    # Accounts with replaced signed prekeys, in both kinds; a fresh account of each kind.
    for post_quantum in (True, False):
        account = e2ee.Account.generate(provider=provider, now=NOW, post_quantum=post_quantum)
        corpus.accounts[f"fresh-pq{int(post_quantum)}"] = account.to_bytes()
        account.generate_one_time_prekeys(3, provider=provider)
        account.prekey_bundle()
        for step in range(1, 7):
            account.rotate_signed_prekey(provider=provider, now=NOW + step * 3600)
        corpus.accounts[f"rotated-pq{int(post_quantum)}"] = account.to_bytes()
        corpus.sealed[f"rotated-pq{int(post_quantum)}"] = account.to_bytes(
            key=STATE_KEY, provider=provider
        )
    return corpus


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    transcripts: list[bytes] = []
    sealed_ads: list[bytes] = []
    original = codec.encode

    def recording_encode(value: Any) -> bytes:
        encoded = original(value)
        if isinstance(value, list) and len(value) == 14:
            transcripts.append(encoded)
        if isinstance(value, list) and len(value) == 5 and value[:2] == [1, 18]:
            sealed_ads.append(encoded)
        return encoded

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(codec, "encode", recording_encode)
        built = _build_corpus()
    built.transcripts = transcripts
    built.sealed_ads = sealed_ads
    return built


# --- valid structures ----------------------------------------------------------------------


def test_schema_parses_in_both_validators() -> None:
    for rule in (*TOP_LEVEL_RULES, "e2ee-structure", "transcript", "initial-fields"):
        assert _pycddl_schema(rule) is not None
    assert not cddl_verifier.schema_diagnostics(SCHEMA_PATH.read_text())


def test_every_bundle_shape_validates(corpus: Corpus) -> None:
    shapes = set()
    for data in corpus.bundles.values():
        assert_conforms("prekey-bundle", data)
        shapes.add(frozenset(cbor2.loads(data)))
    # classic, classic + one-time, pq, pq + both, pq + one-time EC only, pq + one-time KEM only
    assert len(shapes) == 6


def test_initial_messages_validate(corpus: Corpus) -> None:
    kinds = set()
    for data in corpus.initial_messages.values():
        assert_conforms("initial-message", data)
        items = cbor2.loads(data)
        kinds.add((items[8] is not None, items[9], items[6] is not None))
    assert kinds == {
        (pq, he, otk) for pq in (True, False) for he in (True, False) for otk in (True, False)
    }


def test_normal_messages_validate(corpus: Corpus) -> None:
    header_sizes = set()
    for data in corpus.normal_messages.values():
        assert_conforms("normal-message", data)
        header_sizes.add(len(cbor2.loads(data)[3]))
    assert header_sizes == {40, 80}


def test_account_states_validate(corpus: Corpus) -> None:
    for name, data in corpus.accounts.items():
        assert_conforms("account-state", data)
        value = cbor2.loads(data)
        if name.startswith("rotated"):
            assert len(value[5]) == 5  # four replaced signed prekeys and the current one
    assert any(cbor2.loads(d)[5][-1][8] for d in corpus.accounts.values()), "no seen base keys"


def test_session_states_validate(corpus: Corpus) -> None:
    for data in corpus.sessions.values():
        assert_conforms("session-state", data)
    pending = [cbor2.loads(d)[8] for d in corpus.sessions.values() if cbor2.loads(d)[8]]
    assert pending
    for fields in pending:
        # The pending initial fields are the seven items of an initial message, without the
        # array head: prepend the head of a 7-element array (0x87) to validate them.
        assert conforms("initial-fields", b"\x87" + fields)


def test_sealed_states_validate(corpus: Corpus) -> None:
    inner_types = set()
    for data in corpus.sealed.values():
        assert_conforms("sealed-state", data)
        inner_types.add(cbor2.loads(data)[2])
    assert inner_types == {16, 17}


def test_transcripts_and_sealed_state_ad_validate(corpus: Corpus) -> None:
    assert len(corpus.transcripts) >= 8
    for data in corpus.transcripts:
        assert conforms("transcript", data)
    assert corpus.sealed_ads
    for data in corpus.sealed_ads:
        assert conforms("sealed-state-ad", data)


# --- the ciphertext bound: schema and code agree -------------------------------------------

LARGEST_CIPHERTEXT = 16 * (262144 // 16 + 1) + 16
"""wire.md REQ-WIRE-12: a 262144-byte plaintext (MAX_PLAINTEXT_SIZE) padded, plus the tag."""


@pytest.mark.parametrize("header_encryption", [True, False], ids=["he1", "he0"])
def test_ciphertext_length_bound_agrees_in_schema_and_code(header_encryption: bool) -> None:
    """[REQ-WIRE-12] The largest message a sender makes has a 262176-byte ciphertext field;
    the schema and parse_message accept it, and both refuse the next length the 16-byte
    granularity allows (262192), although the message still fits MAX_MESSAGE_SIZE."""
    assert LARGEST_CIPHERTEXT == 262176
    provider = DeterministicProvider(f"largest-{header_encryption}")
    bob = e2ee.Account.generate(provider=provider, now=NOW)
    alice = e2ee.Account.generate(provider=provider, now=NOW)
    config = e2ee.SessionConfig(header_encryption=header_encryption)
    initiator = alice.start_session(bob.prekey_bundle(), config=config, provider=provider, now=NOW)
    responder, _ = bob.accept_session(initiator.encrypt(b"hi", provider=provider), now=NOW)
    largest = responder.encrypt(bytes(262144), provider=provider)
    for data, rule in (
        (largest, "normal-message"),
        (initiator.encrypt(bytes(262144), provider=provider), "initial-message"),
    ):
        assert len(cbor2.loads(data)[-1]) == LARGEST_CIPHERTEXT
        assert conforms(rule, data)
        parse_message(data)
        longer = mutate(data, lambda v: v.__setitem__(-1, v[-1] + bytes(16)))
        assert len(longer) <= 270336  # MAX_MESSAGE_SIZE
        assert_rejected(rule, longer)
        with pytest.raises(e2ee.DecodeError):
            parse_message(longer)
    assert initiator.decrypt(largest, provider=provider) == bytes(262144)


# --- mutated structures are rejected -------------------------------------------------------


def _pick(structures: dict[str, bytes], *parts: str) -> bytes:
    for name, data in structures.items():
        if all(part in name for part in parts):
            return data
    raise AssertionError(f"no structure named like {parts}")


def _delete(*keys: int) -> Callable[[Any], None]:
    def change(value: Any) -> None:
        for key in keys:
            del value[key]

    return change


def _set(key: int, new: Any) -> Callable[[Any], None]:
    def change(value: Any) -> None:
        value[key] = new

    return change


# Each mutation table maps a description to (source structure, change, pycddl blind spot?).
Mutation = tuple[str, Callable[[Any], Any], bool]

BUNDLE_MUTATIONS: dict[str, Mutation] = {
    "missing signed-prekey signature": ("pq-he1-otk1", _delete(6), False),
    "ML-KEM prekey id without key": ("pq-he1-otk1", _delete(8), False),
    "one-time ML-KEM prekey without last-resort prekey": ("pq-he1-otk1", _delete(7, 8), False),
    "unknown key 15": ("pq-he1-otk1", _set(15, 0), False),
    "identity key of 31 bytes": ("pq-he1-otk1", _set(2, b"\x01" * 31), False),
    "signed prekey id above 2^32 - 1": ("classic-he1-otk0", _set(3, 2**32), False),
    "protocol version 2": ("pq-he1-otk0", _set(0, 2), False),
    "wrong type": ("classic-he0-otk1", _set(1, 2), False),
    # The reference decoder accepts this one (spec/wire.md, "Known deviations").
    "optional group encoded as null": (
        "pq-he1-otk1",
        lambda v: v.update({9: None, 10: None, 11: None}),
        True,
    ),
}

INITIAL_MESSAGE_MUTATIONS: dict[str, Mutation] = {
    "header of 40 bytes with header encryption on": ("pq-he1", _set(10, b"\x00" * 40), False),
    "ML-KEM ciphertext without its prekey id": ("pq-he1", _set(7, None), False),
    "session id of 15 bytes": ("pq-he0", _set(2, b"\x00" * 15), False),
    "eleven elements": ("classic-he1", lambda v: v[:11], False),
    "header-encryption flag not a boolean": ("classic-he0", _set(9, 0), False),
    "ciphertext of 31 bytes": ("pq-he1", _set(11, b"\x00" * 31), False),
    "normal-message type": ("classic-he1", _set(1, 3), False),
}

NORMAL_MESSAGE_MUTATIONS: dict[str, Mutation] = {
    "type 2": ("pq-he1", _set(1, 2), False),
    "header of 41 bytes": ("pq-he0", _set(3, b"\x00" * 41), False),
    "version 0": ("classic-he1", _set(0, 0), False),
    "six elements": ("classic-he0", lambda v: [*v, b""], False),
}

ACCOUNT_MUTATIONS: dict[str, Mutation] = {
    "post-quantum records in a classic account": ("rotated-pq1", _set(3, False), False),
    "ML-KEM prekeys in a classic account": (
        "rotated-pq0",
        _set(7, [[5, b"\x00" * 64, b"\x00" * 1568, b"\x00" * 64, False]]),
        False,
    ),
    "current signed prekey retired": ("fresh-pq1", lambda v: v[5][-1].__setitem__(9, NOW), True),
    "replaced signed prekey not retired": (
        "rotated-pq1",
        lambda v: v[5][0].__setitem__(9, None),
        True,
    ),
    "no signed prekey": ("fresh-pq1", _set(5, []), True),
    "seen base key of 31 bytes": (
        "fresh-pq1",
        lambda v: v[5][-1].__setitem__(8, [b"\x00" * 31]),
        False,
    ),
    "next prekey id above 2^32": ("fresh-pq1", _set(4, 2**32 + 1), False),
    "missing key 6": ("fresh-pq1", _delete(6), False),
}

SESSION_MUTATIONS: dict[str, Mutation] = {
    "responder with pending initial fields": (
        "pq-he1-otk1-responder",
        _set(8, b"\x00" * 80),
        False,
    ),
    "header key without header encryption": (
        "pq-he0-otk1-initiator",
        _set(18, b"\x00" * 32),
        False,
    ),
    "role 2": ("pq-he1-otk1-initiator", _set(3, 2), False),
    "six receiving chains": (
        "pq-he1-otk1-responder",
        lambda v: v[22].extend([[bytes([i]) * 32, []] for i in range(6)]),
        True,
    ),
    "message number above 2^32 - 1": ("pq-he1-otk1-responder", _set(16, 2**32), False),
    "root key of 16 bytes": ("classic-he1-otk0-initiator", _set(9, b"\x00" * 16), False),
}

SEALED_MUTATIONS: dict[str, Mutation] = {
    "nonce of 12 bytes": ("pq-he1-otk1-account", _set(5, b"\x00" * 12), False),
    "session object id of 32 bytes": ("pq-he1-otk1-account", _set(2, 17), False),
    "envelope version 2": ("pq-he0-otk0-session", _set(0, 2), False),
    "inner type 18": ("rotated-pq0", _set(2, 18), False),
    "missing sealed body": ("pq-he1-otk1-session", _delete(6), False),
}

MUTATION_TABLES: dict[str, tuple[str, str, dict[str, Mutation]]] = {
    "bundle": ("prekey-bundle", "bundles", BUNDLE_MUTATIONS),
    "initial": ("initial-message", "initial_messages", INITIAL_MESSAGE_MUTATIONS),
    "normal": ("normal-message", "normal_messages", NORMAL_MESSAGE_MUTATIONS),
    "account": ("account-state", "accounts", ACCOUNT_MUTATIONS),
    "session": ("session-state", "sessions", SESSION_MUTATIONS),
    "sealed": ("sealed-state", "sealed", SEALED_MUTATIONS),
}

MUTATION_CASES = [
    pytest.param(table, name, id=f"{table}: {name}")
    for table, (_rule, _field, mutations) in MUTATION_TABLES.items()
    for name in sorted(mutations)
]


@pytest.mark.parametrize(("table", "name"), MUTATION_CASES)
def test_mutated_structure_is_rejected(corpus: Corpus, table: str, name: str) -> None:
    rule, field, mutations = MUTATION_TABLES[table]
    source, change, pycddl_blind = mutations[name]
    original = _pick(getattr(corpus, field), source)
    assert conforms(rule, original)
    assert_rejected(rule, mutate(original, change), pycddl_blind=pycddl_blind)


def test_array_is_not_a_bundle(corpus: Corpus) -> None:
    message = _pick(corpus.normal_messages, "pq-he1")
    assert_rejected("prekey-bundle", message, pycddl_blind=True)
    assert_rejected("account-state", message)


def test_mutated_transcript_is_rejected(corpus: Corpus) -> None:
    transcript = corpus.transcripts[0]
    assert cbor2.loads(transcript)[1] is True  # a PQXDH transcript
    assert_rejected("transcript", mutate(transcript, _set(12, None)))
    assert_rejected("transcript", mutate(transcript, _set(3, b"\x02" * 32)))


def test_pending_initial_fields_are_a_sequence_of_initial_fields(corpus: Corpus) -> None:
    for data in corpus.sessions.values():
        pending = cbor2.loads(data)[8]
        if pending is not None:
            assert_rejected("initial-fields", b"\x86" + pending)  # six items are not enough


# --- the committed wire test vectors -------------------------------------------------------

VECTORS_DIR = SCHEMA_PATH.parent.parent / "test_vectors"
VECTOR_FILES = {
    "wire_bundle.json": ("prekey-bundle", "bundle"),
    "wire_initial_message.json": ("initial-message", "message"),
    "wire_normal_message.json": ("normal-message", "message"),
}


def _is_canonical(data: bytes) -> bool:
    try:
        codec.decode(data, max_size=len(data) + 1)
    except e2ee.DecodeError:
        return False
    return True


def _breaks_prose_rule(rule: str, data: bytes) -> bool:
    """The one wire rule CDDL cannot state: (ciphertext length - 16) is a multiple of 16."""
    if rule == "prekey-bundle":
        return False
    ciphertext = cbor2.loads(data)[-1]
    return len(ciphertext) < 32 or (len(ciphertext) - 16) % 16 != 0


@pytest.mark.parametrize("filename", sorted(VECTOR_FILES))
def test_wire_vectors_agree_with_the_schema(filename: str) -> None:
    """Valid cases match the schema; every invalid case breaks the schema, the canonical
    encoding (wire.md section 1) or the ciphertext-length rule."""
    rule, field = VECTOR_FILES[filename]
    document = json.loads((VECTORS_DIR / filename).read_text())
    counts = {"valid": 0, "invalid": 0}
    for group in document["testGroups"]:
        for case in group["tests"]:
            data = bytes.fromhex(case[field])
            label = f"{filename} tcId {case['tcId']}"
            if case["result"] == "valid":
                assert conforms(rule, data), label
                counts["valid"] += 1
            elif case["result"] == "invalid":
                assert (
                    not data
                    or not verifier_conforms(rule, data)
                    or not _is_canonical(data)
                    or _breaks_prose_rule(rule, data)
                ), label
                counts["invalid"] += 1
    assert counts["valid"]
    assert counts["invalid"]
