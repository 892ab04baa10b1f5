"""The strict canonical CBOR codec and the wire parsers built on it.

* :func:`codec.decode` rejects everything that is not exactly one canonical item of the admitted
  types (uint, negative int, byte string, array, map with integer keys, bool, null) with
  :class:`DecodeError`, and accepts every canonical value: ``decode(encode(v)) == v``.
* :func:`codec.read_flat_array` (the message hot path) is fuzzed against :func:`codec.decode`:
  whenever one accepts a flat array the other must accept it with the same items.
* The message and bundle parsers raise only :class:`e2ee.errors.E2EEError` subclasses on any
  input.
"""

from __future__ import annotations

import contextlib
import functools
import tracemalloc
from collections.abc import Callable
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import e2ee
from e2ee.client.envelope import Content, Envelope
from e2ee.errors import DecodeError, DeviceListError, E2EEError, StateError, UnsupportedVersionError
from e2ee.identity import SignedDeviceList, UserIdentity
from e2ee.limits import (
    MAX_BUNDLE_SIZE,
    MAX_CBOR_DEPTH,
    MAX_MESSAGE_SIZE,
    MAX_STATE_SIZE,
    PROTOCOL_VERSION,
)
from e2ee.testing import DeterministicProvider
from e2ee.wire import codec
from e2ee.wire.messages import PreKeyBundle, parse_message
from tests.helpers import NOW

FlatItem = int | bytes | bool | None

UINT_MAX = 2**64 - 1
NINT_MIN = -(2**64)

# --- helpers -----------------------------------------------------------------------------


def strict_equal(a: Any, b: Any) -> bool:
    """Equality that tells ``True`` from ``1`` and ``False`` from ``0`` (Python does not)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(strict_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def nesting(value: Any) -> int:
    """Number of nested containers (arrays and maps) on the deepest path."""
    if isinstance(value, list):
        return 1 + max((nesting(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((nesting(v) for v in value.values()), default=0)
    return 0


def is_flat(value: Any) -> bool:
    """A list of the items read_flat_array admits: uint, bytes, bool, null."""
    return isinstance(value, list) and all(
        v is None or type(v) in (bool, bytes) or (type(v) is int and v >= 0) for v in value
    )


def decode_or_none(data: bytes, max_size: int) -> tuple[bool, Any]:
    try:
        return True, codec.decode(data, max_size=max_size)
    except DecodeError:
        return False, None


def read_flat_or_none(data: bytes, max_size: int) -> tuple[bool, list[FlatItem], list[int]]:
    try:
        items, offsets = codec.read_flat_array(data, max_size)
    except DecodeError:
        return False, [], []
    return True, items, offsets


def check_decoders_agree(data: bytes, max_size: int) -> None:
    """The differential property; any exception other than DecodeError propagates."""
    flat_ok, items, offsets = read_flat_or_none(data, max_size)
    decode_ok, value = decode_or_none(data, max_size)
    if flat_ok:
        assert decode_ok, f"read_flat_array accepted what decode refuses: {data.hex()}"
        assert strict_equal(value, items)
        # The offsets point at each item's canonical encoding, in order, up to the end.
        assert len(offsets) == len(items)
        ends = [*offsets[1:], len(data)] if offsets else []
        for item, start, end in zip(items, offsets, ends, strict=True):
            assert data[start:end] == codec.encode(item)
    if decode_ok:
        assert codec.encode(value) == data  # accepted means canonical
        if is_flat(value) and len(value) <= 32:
            assert flat_ok, f"decode accepted a flat array read_flat_array refuses: {data.hex()}"


FUZZ = settings(
    # Fuzzing is cheap here: ten times the profile's example count (250 with the CI profile).
    max_examples=10 * settings().max_examples,
    suppress_health_check=[HealthCheck.too_slow],
)
"""Settings of the fuzz tests in this module."""

# --- strategies --------------------------------------------------------------------------

BOUNDARY_INTS = [0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, UINT_MAX]
integers = st.sampled_from(BOUNDARY_INTS + [-1 - n for n in BOUNDARY_INTS]) | st.integers(
    NINT_MIN, UINT_MAX
)
uints = st.sampled_from(BOUNDARY_INTS) | st.integers(0, UINT_MAX)
byte_strings = st.binary(max_size=40) | st.sampled_from([b"", bytes(23), bytes(24), bytes(256)])
leaves: st.SearchStrategy[Any] = st.none() | st.booleans() | integers | byte_strings
cbor_values: st.SearchStrategy[Any] = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.integers(0, 23), children, max_size=5)
    ),
    max_leaves=25,
)
flat_items: st.SearchStrategy[FlatItem] = st.none() | st.booleans() | uints | byte_strings
# Values that are *almost* flat items: what a mutator should put into a message.
near_flat_items: st.SearchStrategy[Any] = (
    flat_items | st.integers(-(2**64), -1) | st.just([]) | st.just({}) | st.lists(uints, max_size=2)
)


@st.composite
def byte_mutations(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """One of ``seeds`` with 1-4 byte-level edits, biased towards CBOR heads."""
    data = bytearray(draw(st.sampled_from(seeds)))
    heads: list[int] = []
    flat_ok, _, offsets = read_flat_or_none(bytes(data), len(data))
    if flat_ok:
        heads = [0, *offsets]
    for _ in range(draw(st.integers(1, 4))):
        at_a_head = draw(st.booleans())
        if heads and at_a_head:
            position = draw(st.sampled_from(heads))
        else:
            position = draw(st.integers(0, max(len(data) - 1, 0)))
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "append"]))
        if op == "append" or not data:
            data += draw(st.binary(min_size=1, max_size=4))
        elif op == "flip":
            data[position % len(data)] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[position % len(data)] = draw(st.integers(0, 255))
        elif op == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del data[position : position + draw(st.integers(1, 4))]
        else:
            del data[position:]
    return bytes(data)


# --- a corpus of real wire structures ----------------------------------------------------


@functools.cache
def corpus() -> dict[str, bytes]:
    """Real bundles and messages (PQXDH and X3DH, header encryption on and off)."""
    out: dict[str, bytes] = {}
    for post_quantum in (True, False):
        for header_encryption in (True, False):
            name = f"pq={post_quantum},he={header_encryption}"
            provider = DeterministicProvider(f"codec-corpus/{name}")
            bob = e2ee.Account.generate(provider=provider, now=NOW, post_quantum=post_quantum)
            bob.generate_one_time_prekeys(1, provider=provider)
            alice = e2ee.Account.generate(provider=provider, now=NOW)
            bundle = bob.prekey_bundle()
            out[f"bundle {name}"] = bundle.to_bytes()
            config = e2ee.SessionConfig(header_encryption=header_encryption, allow_x3dh=True)
            session = alice.start_session(bundle, config=config, provider=provider, now=NOW)
            initial = session.encrypt(b"initial", provider=provider)
            out[f"initial {name}"] = initial
            bob_session, _ = bob.accept_session(initial, provider=provider, now=NOW)
            out[f"normal {name}"] = bob_session.encrypt(b"normal", provider=provider)
    out["bundle no one-time"] = bob.prekey_bundle().to_bytes()
    return out


def messages() -> list[bytes]:
    return [v for k, v in corpus().items() if not k.startswith("bundle")]


def bundles() -> list[bytes]:
    return [v for k, v in corpus().items() if k.startswith("bundle")]


def test_corpus_is_well_formed() -> None:
    for name, data in corpus().items():
        if name.startswith("bundle"):
            assert PreKeyBundle.from_bytes(data).to_bytes() == data
        else:
            parsed = parse_message(data)
            assert (parsed.initial is not None) == name.startswith("initial")
            check_decoders_agree(data, MAX_MESSAGE_SIZE)
    assert len(messages()) == 8
    assert len(bundles()) == 5


# --- decode: rejections ------------------------------------------------------------------

REJECTED: list[tuple[str, str]] = [
    # trailing bytes
    ("0000", "trailing"),
    ("8001", "trailing"),
    ("a0f6", "trailing"),
    ("4100ff", "trailing"),
    # non-minimal integers
    ("1800", "non-minimal"),
    ("1817", "non-minimal"),
    ("190001", "non-minimal"),
    ("1900ff", "non-minimal"),
    ("1a0000ffff", "non-minimal"),
    ("1b00000000ffffffff", "non-minimal"),
    ("3800", "non-minimal"),
    ("3b00000000ffffffff", "non-minimal"),
    # non-minimal lengths
    ("5800", "non-minimal length"),
    ("580100", "non-minimal length"),
    ("59000100", "non-minimal length"),
    ("9800", "non-minimal length"),
    ("980100", "non-minimal length"),
    ("b800", "non-minimal length"),
    ("b8010000", "non-minimal length"),
    ("820181590000", "non-minimal length"),
    # duplicate and unsorted map keys
    ("a201000100", "duplicate key"),
    ("a3010002000100", "duplicate key"),
    ("a202000100", "unsorted keys"),
    ("a2200000f6", "unsorted keys"),
    # indefinite lengths
    ("5fff", "indefinite"),
    ("5f4100ff", "indefinite"),
    ("9fff", "indefinite"),
    ("9f01ff", "indefinite"),
    ("bfff", "indefinite"),
    ("bf0100ff", "indefinite"),
    ("7f6161ff", "indefinite"),
    ("ff", "break"),
    ("1c", "reserved"),
    ("1d", "reserved"),
    ("1e", "reserved"),
    ("5c", "reserved"),
    # text strings
    ("60", "text"),
    ("6161", "text"),
    ("8160", "text"),
    ("a10160", "text"),
    # floats and other simple values
    ("f90000", "float"),
    ("f93c00", "float"),
    ("f97e00", "float"),
    ("fa3f800000", "float"),
    ("fb3ff0000000000000", "float"),
    ("f7", "undefined"),
    ("e0", "simple value"),
    ("f0", "simple value"),
    ("f820", "simple value"),
    ("f8ff", "simple value"),
    # tags, including ones cbor2 would turn into admitted types
    ("c074323031332d30332d32315432303a30343a30305a", "tag"),
    ("c11a514b67b0", "tag"),
    ("c24101", "bignum tag"),
    ("c240", "bignum tag"),
    ("c249010000000000000000", "bignum tag"),
    ("c349010000000000000000", "bignum tag"),
    ("c34100", "bignum tag"),
    ("d81c01", "shareable tag"),
    ("d81c80", "shareable tag"),
    ("d81d00", "shared reference"),
    ("d81c81d81d00", "cyclic shared reference"),
    ("d81ca101d81d00", "cyclic shared reference"),
    ("d9d9f701", "self-describe tag"),
    ("d9010280", "set tag"),
    ("d81e820102", "rational tag"),
    ("d8184100", "embedded CBOR tag"),
    ("c6f6", "unassigned tag"),
    ("db000000000000000101", "tag"),
    # non-integer map keys
    ("a14000", "bytes key"),
    ("a1f500", "bool key"),
    ("a1f400", "bool key"),
    ("a1f600", "null key"),
    ("a18000", "array key"),
    ("a1a000", "map key"),
    ("a1616100", "text key"),
    ("a1f93c0000", "float key"),
    # integer map keys outside 0..23 (wire.md section 1: a key is its one-byte head)
    ("a12000", "negative key"),
    ("a1381800", "negative key"),
    ("a1181800", "key 24"),
    ("a11901f400", "key 500"),
    # integers beyond the 64-bit range (only reachable through bignum tags)
    ("c2490100000000000000ff", "out of range"),
    # truncation
    ("", "empty"),
    ("18", "truncated"),
    ("1901", "truncated"),
    ("4200", "truncated"),
    ("8201", "truncated"),
    ("a101", "truncated"),
    ("5bffffffffffffffff", "huge length"),
    ("9bffffffffffffffff", "huge length"),
    ("bbffffffffffffffff", "huge length"),
    ("5a7fffffff00", "huge length"),
]


@pytest.mark.parametrize(("hex_data", "why"), REJECTED)
def test_decode_rejects(hex_data: str, why: str) -> None:
    with pytest.raises(DecodeError):
        codec.decode(bytes.fromhex(hex_data), max_size=1024)


def _nested(depth: int, kind: str) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value] if kind == "array" else {1: value}
    return value


@pytest.mark.parametrize("kind", ["array", "map"])
def test_decode_nesting_limit(kind: str) -> None:
    deepest = codec.encode(_nested(MAX_CBOR_DEPTH, kind))
    assert strict_equal(codec.decode(deepest, max_size=1024), _nested(MAX_CBOR_DEPTH, kind))
    with pytest.raises(DecodeError):
        codec.decode(codec.encode(_nested(MAX_CBOR_DEPTH + 1, kind)), max_size=1024)


# Hand-written encodings: 0x81 opens a one-element array, 0xa1 0x01 a one-entry map (key 1);
# 0x80 / 0xa0 are the empty array / map.
_OPEN = {"array": b"\x81", "map": b"\xa1\x01"}
_EMPTY = {"array": b"\x80", "map": b"\xa0"}


@pytest.mark.parametrize("inner", ["array", "map"])
@pytest.mark.parametrize("outer", ["array", "map"])
def test_decode_nesting_limit_counts_an_empty_innermost_container(outer: str, inner: str) -> None:
    """[REQ-WIRE-04] More than MAX_CBOR_DEPTH nested arrays or maps are refused whether the
    innermost one is empty or not: the empty container at level 9 is a level like any other."""
    assert MAX_CBOR_DEPTH == 8
    deepest = _OPEN[outer] * 7 + _EMPTY[inner]  # 8 levels
    value = codec.decode(deepest, max_size=1024)
    assert nesting(value) == 8
    too_deep = _OPEN[outer] * 8 + _EMPTY[inner]  # 9 levels
    assert nesting(cbor2.loads(too_deep)) == 9  # plain cbor2, none of our limits
    with pytest.raises(DecodeError):
        codec.decode(too_deep, max_size=1024)
    # read_flat_array admits no nested container at all.
    with pytest.raises(DecodeError):
        codec.read_flat_array(too_deep, 1024)


def test_decode_rejects_very_deep_nesting_without_recursion_error() -> None:
    for data in (b"\x81" * 100_000 + b"\x00", b"\xa1\x01" * 50_000 + b"\x00", b"\x81" * 100_000):
        with pytest.raises(DecodeError):
            codec.decode(data, max_size=len(data))


# --- decode: tags are refused before anything resolves them ------------------------------
# cbor2 resolves value sharing (tags 28/29, RFC 8949 section 3.4 / IANA) and string
# references (tags 256/25) while it decodes. The inputs below are built by hand: each is small,
# but with the references resolved it is a structure of exponential size, or a byte string
# repeated many times. spec/wire.md [REQ-WIRE-04] refuses every tag; these check that the
# refusal comes first, before anything expands the input.

_MiB = 1 << 20


def _head(major: int, value: int) -> bytes:
    """A CBOR head, written out here rather than taken from the codec under test."""
    top = major << 5
    for info, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if value < 24:
            return bytes((top | value,))
        if value < 1 << (8 * width):
            return bytes((top | info,)) + value.to_bytes(width, "big")
    raise ValueError(value)


_SHAREABLE = b"\xd8\x1c"  # tag 28: the next item may be referenced
_SHARED_REF = b"\xd8\x1d"  # tag 29 + uint n: the n-th shareable item seen so far
_STRINGREF_NAMESPACE = b"\xd9\x01\x00"  # tag 256: string references inside
_STRINGREF = b"\xd8\x19"  # tag 25 + uint n: the n-th long-enough string seen so far


def _shared_dag(levels: int, width: int) -> bytes:
    """A_i = shareable [A_(i-1), ref(A_(i-1)) x (width - 1)], A_0 = shareable h''. Resolved,
    it is a tree of width ** levels leaves; as bytes it is about 3 * levels * width."""
    data = _SHAREABLE + b"\x40"
    for level in range(1, levels + 1):
        # Shareable items are numbered in the order they start: A_levels is 0, A_0 is levels.
        ref = _SHARED_REF + _head(0, levels - level + 1)
        data = _SHAREABLE + _head(4, width) + data + ref * (width - 1)
    return data


def _expanding_inputs() -> dict[str, bytes]:
    """Inputs of at most 16 MiB (the state limit) whose references, resolved, make 100 MiB."""
    big = _head(2, _MiB) + bytes(_MiB)
    return {
        "shared reference": _head(4, 101) + _SHAREABLE + big + (_SHARED_REF + b"\x00") * 100,
        "string reference": _STRINGREF_NAMESPACE
        + _head(4, 101)
        + big
        + (_STRINGREF + b"\x00") * 100,
    }


_STATE_READERS: dict[str, tuple[Callable[[bytes], object], type[E2EEError]]] = {
    "codec.decode": (lambda data: codec.decode(data, max_size=MAX_STATE_SIZE), DecodeError),
    "Account.from_bytes": (e2ee.Account.from_bytes, StateError),
    "Session.from_bytes": (e2ee.Session.from_bytes, StateError),
    "UserIdentity.from_bytes": (UserIdentity.from_bytes, StateError),
}
_READERS: dict[str, tuple[Callable[[bytes], object], type[E2EEError]]] = {
    **_STATE_READERS,
    "PreKeyBundle.from_bytes": (PreKeyBundle.from_bytes, DecodeError),
    "SignedDeviceList.from_bytes": (SignedDeviceList.from_bytes, DeviceListError),
    "Envelope.from_bytes": (Envelope.from_bytes, DecodeError),
    "Content.from_bytes": (Content.from_bytes, DecodeError),
}


def test_shared_dag_is_what_it_claims() -> None:
    """The test input itself: plain cbor2 resolves the references into one list object
    referenced ``width`` times per level (so a tree walk visits width ** levels leaves)."""
    value = cbor2.loads(_shared_dag(3, 4))
    assert len(value) == 4
    assert all(item is value[0] for item in value)
    assert len(value[0]) == 4
    assert all(item is value[0][0] for item in value[0])
    assert value[0][0][0] == b""
    assert len(_shared_dag(6, 40)) == 729


@pytest.mark.parametrize("reader", sorted(_READERS))
def test_shared_references_are_refused_before_they_expand(reader: str) -> None:
    """[REQ-WIRE-04] A 729-byte input of value-sharing tags that resolves to 40 ** 6 (4.1e9)
    leaves: every generic-decoder entry point refuses it with its typed error. Before the tags
    were refused ahead of cbor2, the type walk over the resolved value took minutes for each
    entry point (76 s with 30 ** 6 leaves)."""
    read, error = _READERS[reader]
    data = _shared_dag(6, 40)
    assert len(data) <= MAX_BUNDLE_SIZE
    with pytest.raises(error):
        read(data)


@pytest.mark.parametrize("kind", sorted(_expanding_inputs()))
@pytest.mark.parametrize("reader", sorted(_STATE_READERS))
def test_references_to_a_large_string_are_refused_in_small_memory(kind: str, reader: str) -> None:
    """[REQ-WIRE-04] A 1 MiB byte string referenced 100 times (a value-sharing or a string
    reference) is refused without materialising the references: the decoder's peak memory
    stays far below the 100 MiB they stand for (re-encoding the resolved value used to build
    all of it)."""
    read, error = _STATE_READERS[reader]
    data = _expanding_inputs()[kind]
    assert _MiB < len(data) <= MAX_STATE_SIZE
    tracemalloc.start()
    try:
        with pytest.raises(error):
            read(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < _MiB // 4


@pytest.mark.parametrize(
    "hex_data",
    [
        "d81c80",  # shareable []
        "82d81c41ffd81d00",  # [shareable h'ff', ref 0]
        "d901008243616263d81900",  # stringref namespace [h'616263', 25(0)]
        "d9010080",  # an empty stringref namespace
        "d81900",  # a string reference outside a namespace
        "a101d81c00",  # shareable 0 as a map value
        "a1d81c0100",  # a tagged map key
    ],
)
def test_every_tag_is_refused_wherever_it_is(hex_data: str) -> None:
    """[REQ-WIRE-04] No tag is admitted anywhere: top level, inside arrays and maps, as a key."""
    with pytest.raises(DecodeError):
        codec.decode(bytes.fromhex(hex_data), max_size=1024)


def test_decode_size_limit() -> None:
    data = codec.encode([bytes(100), 1, None])
    assert codec.decode(data, max_size=len(data)) == [bytes(100), 1, None]
    for max_size in (len(data) - 1, 10, 0):
        with pytest.raises(DecodeError, match="over the limit"):
            codec.decode(data, max_size=max_size)
    with pytest.raises(DecodeError, match="over the limit"):
        codec.read_flat_array(data, len(data) - 1)
    # The limit is checked before parsing: a huge (garbage) input costs nothing.
    with pytest.raises(DecodeError, match="over the limit"):
        codec.decode(b"\x5f" * (MAX_STATE_SIZE + 1), max_size=MAX_STATE_SIZE)


def test_every_entry_point_applies_its_own_size_limit_first() -> None:
    """[REQ-LIM-07] The limits of limits.md section 3, spelled out here (bundle 8192, message
    270336, state 16777216 bytes): one byte over, each untrusted-input entry point refuses the
    input for its size (DecodeError; StateError for state) before looking at it; at the limit,
    the same garbage is refused for what it is, not for its size."""
    assert (MAX_BUNDLE_SIZE, MAX_MESSAGE_SIZE, MAX_STATE_SIZE) == (8192, 270336, 16777216)
    bob = e2ee.Account.generate(now=NOW)
    session = e2ee.Account.generate(now=NOW).start_session(bob.prekey_bundle(), now=NOW)
    message_readers: list[Any] = [
        parse_message,
        e2ee.peek,
        session.decrypt,
        lambda data: bob.accept_session(data, now=NOW),
    ]
    cases: list[tuple[int, list[Any], type[E2EEError]]] = [
        (8192, [PreKeyBundle.from_bytes], DecodeError),
        (270336, message_readers, DecodeError),
        (16777216, [e2ee.Account.from_bytes, e2ee.Session.from_bytes], e2ee.StateError),
    ]
    for limit, readers, error in cases:
        for read in readers:
            with pytest.raises(error, match="over the limit"):
                read(b"\x8c" + b"\x5f" * limit)
            with pytest.raises(error) as info:
                read(b"\x8c" + b"\x5f" * (limit - 1))
            assert "over the limit" not in str(info.value)


@pytest.mark.parametrize("data", [bytearray(b"\x80"), memoryview(b"\x80"), "80", None, [0x80]])
def test_non_bytes_input_is_a_type_error(data: Any) -> None:
    with pytest.raises(TypeError):
        codec.decode(data, max_size=10)
    with pytest.raises(TypeError):
        codec.read_flat_array(data, 10)


# --- decode: acceptance ------------------------------------------------------------------

ACCEPTED: list[tuple[str, Any]] = [
    ("00", 0),
    ("17", 23),
    ("1818", 24),
    ("18ff", 255),
    ("190100", 256),
    ("1a00010000", 65536),
    ("1b0000000100000000", 2**32),
    ("1bffffffffffffffff", UINT_MAX),
    ("20", -1),
    ("37", -24),
    ("3818", -25),
    ("3bffffffffffffffff", NINT_MIN),
    ("40", b""),
    ("4100", b"\x00"),
    ("5818" + "00" * 24, bytes(24)),
    ("f4", False),
    ("f5", True),
    ("f6", None),
    ("80", []),
    ("a0", {}),
    ("83f4f5f6", [False, True, None]),
    ("8201820203", [1, [2, 3]]),
    ("a2011818174140", {1: 24, 23: b"@"}),
    ("a2000101a10041ff", {0: 1, 1: {0: b"\xff"}}),
]


@pytest.mark.parametrize(("hex_data", "value"), ACCEPTED)
def test_decode_accepts_canonical_values(hex_data: str, value: Any) -> None:
    data = bytes.fromhex(hex_data)
    assert strict_equal(codec.decode(data, max_size=len(data)), value)
    assert codec.encode(value) == data


@pytest.mark.parametrize(
    "hex_data",
    ["a1181800", "a12000", "a1413000", "a1f400"],
    ids=["key 24", "key -1", "bytes key", "bool key"],
)
def test_map_keys_outside_0_to_23_are_rejected(hex_data: str) -> None:
    """Only keys 0..23 (one-byte encodings) are admitted, so RFC 8949's two orderings
    (4.2.1 bytewise, 4.2.3 length-first) coincide and every map has one encoding."""
    with pytest.raises(DecodeError):
        codec.decode(bytes.fromhex(hex_data), max_size=16)


@FUZZ
@given(cbor_values)
def test_decode_inverts_encode(value: Any) -> None:
    data = codec.encode(value)
    if nesting(value) > MAX_CBOR_DEPTH:
        with pytest.raises(DecodeError):
            codec.decode(data, max_size=MAX_STATE_SIZE)
        return
    assert strict_equal(codec.decode(data, max_size=len(data)), value)
    check_decoders_agree(data, len(data))


@FUZZ
@given(st.binary(max_size=48))
@example(b"\x81\xf5")
@example(b"\x82\x01\xf6")
def test_decode_accepts_only_canonical_bytes(data: bytes) -> None:
    ok, value = decode_or_none(data, 64)
    if ok:
        assert codec.encode(value) == data


# --- decode against the earlier decoder ------------------------------------------------------


def reference_decode(data: bytes) -> tuple[bool, Any]:
    """The decoder before the head walk, kept as the reference for what is acceptable: cbor2,
    then a walk over the decoded value admitting only the profile's types, map keys 0..23 in
    ascending order and nesting up to MAX_CBOR_DEPTH, then a canonical re-encoding that must
    equal the input. Only for small inputs: shared-reference tags make it explode."""
    try:
        value = cbor2.loads(
            data, allow_indefinite=False, allow_duplicate_keys=False, max_depth=MAX_CBOR_DEPTH
        )
    except Exception:  # any refusal of cbor2's is a refusal
        return False, None

    def admitted(item: Any, depth: int) -> bool:
        kind = type(item)
        if kind is bytes or kind is bool or item is None:
            return True
        if kind is int:
            return bool(-(2**64) <= item < 2**64)
        if kind is list or kind is dict:
            if depth >= MAX_CBOR_DEPTH:
                return False
            if kind is list:
                return all(admitted(i, depth + 1) for i in item)
            keys = list(item)
            return (
                all(type(k) is int and 0 <= k < 24 for k in keys)
                and keys == sorted(set(keys))
                and all(admitted(i, depth + 1) for i in item.values())
            )
        return False

    if not admitted(value, 0):
        return False, None
    try:
        if cbor2.dumps(value, canonical=True) != data:
            return False, None
    except Exception:  # the same
        return False, None
    return True, value


def check_against_reference(data: bytes) -> None:
    ok, value = decode_or_none(data, len(data) + 1)
    expected_ok, expected = reference_decode(data)
    assert ok == expected_ok, f"decode {'accepts' if ok else 'refuses'} {data.hex()}"
    if ok:
        assert strict_equal(value, expected)


@FUZZ
@given(st.binary(min_size=1, max_size=48))
@example(b"\xd8\x1c\x81\x00")  # a shared value: refused by both
@example(b"\x19\x00\x01")  # a non-minimal head
@example(b"\xa2\x01\x00\x00\x00")  # keys out of order
def test_decode_accepts_what_the_earlier_decoder_accepted_on_random_bytes(data: bytes) -> None:
    """The head walk decides alone now (codec.decode no longer re-encodes): on any input it
    must agree with the earlier decoder, value for value."""
    check_against_reference(data)


@FUZZ
@given(st.data())
def test_decode_accepts_what_the_earlier_decoder_accepted_on_mutated_values(
    draw: st.DataObject,
) -> None:
    seeds = [codec.encode(draw.draw(cbor_values))]
    check_against_reference(draw.draw(byte_mutations(seeds)))


@FUZZ
@given(cbor_values, st.data())
def test_decode_accepts_what_the_earlier_decoder_accepted_on_other_encodings(
    value: Any, draw: st.DataObject
) -> None:
    """cbor2's non-canonical modes: unsorted maps, and every head widened or indefinite."""
    check_against_reference(cbor2.dumps(value))
    check_against_reference(codec.encode(value))
    data = bytearray(codec.encode(value))
    if len(data) > 1:
        index = draw.draw(st.integers(0, len(data) - 1))
        widened = data[:index] + bytes([data[index] | 0x18, 0]) + data[index + 1 :]
        check_against_reference(bytes(widened))


# --- read_flat_array against decode ------------------------------------------------------


@FUZZ
@given(st.binary(max_size=64), st.integers(0, 80))
@example(b"\x81\x00", 2)
@example(b"\x81\x00", 1)
@example(b"\x98\x20" + b"\xf6" * 32, 100)
def test_decoders_agree_on_random_bytes(data: bytes, max_size: int) -> None:
    check_decoders_agree(data, max_size)


@FUZZ
@given(st.lists(near_flat_items, max_size=34).map(codec.encode), st.data())
def test_decoders_agree_on_encoded_arrays(data: bytes, draw: st.DataObject) -> None:
    max_size = draw.draw(st.sampled_from([len(data), len(data) - 1, MAX_MESSAGE_SIZE]))
    check_decoders_agree(data, max_size)


@FUZZ
@given(st.data())
def test_decoders_agree_on_mutated_arrays(draw: st.DataObject) -> None:
    seeds = [codec.encode(draw.draw(st.lists(flat_items, min_size=1, max_size=6)))]
    check_decoders_agree(draw.draw(byte_mutations(seeds)), MAX_MESSAGE_SIZE)


@FUZZ
@given(st.data())
def test_decoders_agree_on_mutated_messages(draw: st.DataObject) -> None:
    check_decoders_agree(draw.draw(byte_mutations(messages())), MAX_MESSAGE_SIZE)


def test_read_flat_array_caps_arrays_at_32_items() -> None:
    """A limit of the message reader only (messages have at most 12 fields)."""
    for count in (32, 33):
        data = codec.encode([None] * count)
        assert codec.decode(data, max_size=100) == [None] * count
        ok, _, _ = read_flat_or_none(data, 100)
        assert ok is (count <= 32)


def test_read_flat_array_offsets() -> None:
    data = codec.encode([1, b"ab", None, True, 300])
    items, offsets = codec.read_flat_array(data, len(data))
    assert items == [1, b"ab", None, True, 300]
    assert offsets == [1, 2, 5, 6, 7]


# --- the message and bundle parsers --------------------------------------------------------


def _parse_message_raises_only_e2ee_errors(data: bytes) -> None:
    with contextlib.suppress(E2EEError):
        parse_message(data)


def _bundle_raises_only_e2ee_errors(data: bytes) -> None:
    with contextlib.suppress(E2EEError):
        PreKeyBundle.from_bytes(data)


@FUZZ
@given(st.binary(max_size=128))
def test_parse_message_random_bytes(data: bytes) -> None:
    _parse_message_raises_only_e2ee_errors(data)


@FUZZ
@given(st.data())
def test_parse_message_mutated_bytes(draw: st.DataObject) -> None:
    _parse_message_raises_only_e2ee_errors(draw.draw(byte_mutations(messages())))


@FUZZ
@given(st.data())
def test_parse_message_mutated_fields(draw: st.DataObject) -> None:
    """Field-level edits that keep the CBOR canonical, so they reach the layout checks."""
    items: list[Any] = list(codec.read_flat_array(draw.draw(st.sampled_from(messages())), 10**6)[0])
    for _ in range(draw.draw(st.integers(1, 3))):
        index = draw.draw(st.integers(0, len(items)))
        action = draw.draw(st.sampled_from(["replace", "insert", "delete"]))
        if action == "insert" or index == len(items):
            items.insert(index, draw.draw(near_flat_items))
        elif action == "replace":
            items[index] = draw.draw(near_flat_items)
        else:
            del items[index]
    _parse_message_raises_only_e2ee_errors(codec.encode(items))


@FUZZ
@given(st.binary(max_size=128))
def test_bundle_random_bytes(data: bytes) -> None:
    _bundle_raises_only_e2ee_errors(data)


@FUZZ
@given(st.data())
def test_bundle_mutated_bytes(draw: st.DataObject) -> None:
    _bundle_raises_only_e2ee_errors(draw.draw(byte_mutations(bundles())))


@FUZZ
@given(st.data())
def test_bundle_mutated_fields(draw: st.DataObject) -> None:
    fields: dict[int, Any] = codec.decode(
        draw.draw(st.sampled_from(bundles())), max_size=MAX_BUNDLE_SIZE
    )
    for _ in range(draw.draw(st.integers(1, 3))):
        key = draw.draw(st.integers(0, 16) | st.sampled_from(sorted(fields)))
        if key in fields and draw.draw(st.booleans()):
            del fields[key]
        else:
            fields[key] = draw.draw(near_flat_items | cbor_values)
    _bundle_raises_only_e2ee_errors(codec.encode(fields))


@pytest.mark.parametrize("keys", [(7, 8), (9, 10, 11), (7, 8, 12, 13, 14)], ids=str)
def test_bundle_rejects_null_for_absent_optional_fields(keys: tuple[int, ...]) -> None:
    minimal: dict[int, Any] = codec.decode(corpus()["bundle no one-time"], max_size=MAX_BUNDLE_SIZE)
    assert sorted(minimal) == list(range(7))
    with pytest.raises(DecodeError):
        PreKeyBundle.from_bytes(codec.encode({**minimal, **dict.fromkeys(keys)}))


def test_bundle_parser_rejects_known_bad_layouts() -> None:
    good: dict[int, Any] = codec.decode(bundles()[0], max_size=MAX_BUNDLE_SIZE)
    bad_edits: list[dict[int, Any]] = [
        {2: bytes(31)},  # identity key size
        {3: -1},  # negative id
        {3: 2**32},  # id beyond u32
        {5: True},  # bool for an int
        {16: 0},  # unknown field
        {1: 2},  # wrong structure type
        {7: None},  # kem group partly absent
    ]
    for edit in bad_edits:
        with pytest.raises(DecodeError):
            PreKeyBundle.from_bytes(codec.encode({**good, **edit}))
    for missing in (2, 3, 4, 5, 6, 8, 10):
        broken = dict(good)
        del broken[missing]
        with pytest.raises(DecodeError):
            PreKeyBundle.from_bytes(codec.encode(broken))
    for not_a_map in ([], 1, b"", [good[2]]):
        with pytest.raises(DecodeError):
            PreKeyBundle.from_bytes(codec.encode(not_a_map))


# --- versions ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["initial", "normal"])
@pytest.mark.parametrize("version", [2, 0, 24, UINT_MAX])
def test_message_with_other_version_is_unsupported(kind: str, version: int) -> None:
    message = corpus()[f"{kind} pq=True,he=True"]
    items = list(codec.read_flat_array(message, MAX_MESSAGE_SIZE)[0])
    assert items[0] == PROTOCOL_VERSION
    items[0] = version
    with pytest.raises(UnsupportedVersionError) as info:
        parse_message(codec.encode(items))
    assert info.value.version == version
    assert info.value.category == "unsupported_version"
    with pytest.raises(UnsupportedVersionError):
        e2ee.peek(codec.encode(items))


def test_message_version_2_byte_patch_is_unsupported() -> None:
    """The version is the byte after the array head; patching it alone is enough."""
    for message in messages():
        assert message[1] == PROTOCOL_VERSION
        patched = message[:1] + b"\x02" + message[2:]
        with pytest.raises(UnsupportedVersionError) as info:
            parse_message(patched)
        assert info.value.version == 2


@pytest.mark.parametrize("version", [2, 0, 24, UINT_MAX])
def test_bundle_with_other_version_is_unsupported(version: int) -> None:
    for data in bundles():
        fields: dict[int, Any] = codec.decode(data, max_size=MAX_BUNDLE_SIZE)
        assert fields[0] == PROTOCOL_VERSION
        fields[0] = version
        with pytest.raises(UnsupportedVersionError) as info:
            PreKeyBundle.from_bytes(codec.encode(fields))
        assert info.value.version == version


@pytest.mark.parametrize(
    ("data", "error"),
    [
        # three items, version 2: the version is checked before the element count
        (bytes.fromhex("830203") + b"\x50" + bytes(16), UnsupportedVersionError),
        (bytes.fromhex("8202ff"), DecodeError),  # the CBOR profile first: 0xff is no item
        (bytes.fromhex("8302036161"), DecodeError),  # a text string breaks the profile
        (bytes.fromhex("8102"), DecodeError),  # fewer than two items: no version to check
        (bytes.fromhex("8202"), DecodeError),  # truncated
    ],
)
def test_message_decoding_order(data: bytes, error: type[E2EEError]) -> None:
    """[REQ-WIRE-05] The CBOR profile first (a flat array), then at least two items, then the
    version, before the type, the element count and the fields."""
    with pytest.raises(error) as info:
        parse_message(data)
    assert type(info.value) is error


def test_a_version_2_bundle_with_an_unknown_key_is_unsupported() -> None:
    """[REQ-WIRE-05] A bundle's allowed keys depend on the version: key 15 is unknown in version
    1, but a version-2 bundle that has it is refused for its version."""
    fields: dict[int, Any] = codec.decode(bundles()[0], max_size=MAX_BUNDLE_SIZE)
    with pytest.raises(UnsupportedVersionError):
        PreKeyBundle.from_bytes(codec.encode({**fields, 0: 2, 15: b"x"}))
    with pytest.raises(DecodeError) as info:  # version 1: the unknown key is the problem
        PreKeyBundle.from_bytes(codec.encode({**fields, 15: b"x"}))
    assert type(info.value) is DecodeError


@pytest.mark.parametrize("version", [-1, -24, -25, NINT_MIN])
def test_a_negative_version_is_a_plain_decode_error(version: int) -> None:
    """[REQ-WIRE-05] A CBOR negative integer (major type 1, admitted by the profile) as the
    version is not an unsigned integer: DecodeError with the category decode_error, not an
    UnsupportedVersionError."""
    for data in bundles():
        fields: dict[int, Any] = codec.decode(data, max_size=MAX_BUNDLE_SIZE)
        fields[0] = version
        with pytest.raises(DecodeError) as info:
            PreKeyBundle.from_bytes(codec.encode(fields))
        assert type(info.value) is DecodeError
        assert info.value.category == "decode_error"


def test_missing_or_mistyped_version_is_a_plain_decode_error() -> None:
    fields: dict[int, Any] = codec.decode(bundles()[0], max_size=MAX_BUNDLE_SIZE)
    for version in (None, True, b"\x01", [1]):
        edited = {**fields, 0: version}
        with pytest.raises(DecodeError) as info:
            PreKeyBundle.from_bytes(codec.encode(edited))
        assert not isinstance(info.value, UnsupportedVersionError)
    del fields[0]
    with pytest.raises(DecodeError) as info:
        PreKeyBundle.from_bytes(codec.encode(fields))
    assert not isinstance(info.value, UnsupportedVersionError)


# RFC 8949 Appendix A examples, plus each head width's first and last value.
@pytest.mark.parametrize(
    ("value", "hex_data"),
    [
        (0, "00"),
        (23, "17"),
        (24, "1818"),
        (255, "18ff"),
        (256, "190100"),
        (65535, "19ffff"),
        (65536, "1a00010000"),
        (4294967295, "1affffffff"),
        (4294967296, "1b0000000100000000"),
        (1000000000000, "1b000000e8d4a51000"),
        (18446744073709551615, "1bffffffffffffffff"),
    ],
)
def test_encode_uint_uses_the_shortest_head(value: int, hex_data: str) -> None:
    assert codec.encode_uint(value).hex() == hex_data
    assert codec.encode(value).hex() == hex_data
