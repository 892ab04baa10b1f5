"""Every decoder of untrusted bytes, fuzzed with hypothesis; and the replay of saved crashes.

The decoders and the property each keeps are in fuzz/targets.py (shared with the
coverage-guided atheris targets of fuzz/fuzz.py): ``PreKeyBundle.from_bytes`` (then
``start_session``), ``e2ee.peek``, ``Account.accept_session``, ``Session.decrypt`` (header
encryption on and off), ``Account.from_bytes`` and ``Session.from_bytes``, plain and sealed.
Each input must be accepted or refused with an ``e2ee.errors`` exception, never anything else;
a refused input leaves the object byte-identical; a loaded state re-serialises identically and
is usable. "Quickly": every input must finish within the deadline below.

Inputs: arbitrary bytes; valid inputs mutated byte-wise (flip, insert, delete, duplicate,
truncate); and valid inputs mutated structurally (a CBOR item anywhere in the decoded value
replaced by another value, or removed), re-encoded canonically so that they get past the
decoder's first checks.

tests/fuzz_regressions/TARGET/* holds inputs that once crashed a target (fuzz/README.md); each is
replayed by :func:`test_saved_crash_inputs_stay_fixed`.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import e2ee
from e2ee.errors import StateError
from e2ee.limits import MAX_STATE_SIZE
from e2ee.wire import codec
from fuzz import targets

TARGET_NAMES = list(targets.TARGETS)
DEADLINE = settings(deadline=timedelta(milliseconds=500))
REGRESSIONS = Path(__file__).resolve().parent / "fuzz_regressions"

EDITS = st.lists(
    st.tuples(
        st.sampled_from(["flip", "insert", "delete", "duplicate", "truncate"]),
        st.integers(0, 2**20),
        st.integers(0, 255),
    ),
    min_size=1,
    max_size=6,
)
CBOR_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64 - 1)
    | st.sampled_from([0, 1, 2, 3, 16, 17, 18, 23, 24, 255, 256, 2**32 - 1, 2**32, 2**63])
    | st.binary(max_size=80)
    | st.sampled_from([16, 24, 32, 40, 64, 80, 1568]).map(bytes),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.integers(0, 30), children, max_size=4)
    ),
    max_leaves=8,
)


def mutate(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(data)
    for kind, position, value in edits:
        at = position % (len(out) + 1)
        if kind == "flip" and at < len(out):
            out[at] ^= value or 1
        elif kind == "insert":
            out[at:at] = bytes([value]) * (1 + value % 4)
        elif kind == "delete":
            del out[at : at + 1 + value % 16]
        elif kind == "duplicate":
            out[at:at] = out[at : at + 1 + value]
        else:
            del out[at:]
    return bytes(out)


def replace_at(value: Any, path: list[int], new: Any, delete: bool) -> Any:
    """``value`` with the item reached by ``path`` replaced by ``new`` (or removed)."""
    if isinstance(value, list) and value and path:
        index = path[0] % len(value)
        copy = list(value)
        if delete and len(path) == 1:
            del copy[index]
        else:
            copy[index] = replace_at(value[index], path[1:], new, delete)
        return copy
    if isinstance(value, dict) and value and path:
        key = sorted(value)[path[0] % len(value)]
        copied = dict(value)
        if delete and len(path) == 1:
            del copied[key]
        else:
            copied[key] = replace_at(value[key], path[1:], new, delete)
        return copied
    return new


@pytest.mark.parametrize("target", TARGET_NAMES)
@DEADLINE
@given(data=st.binary(max_size=4096))
def test_arbitrary_bytes(target: str, data: bytes) -> None:
    targets.run(target, data)


@pytest.mark.parametrize("target", TARGET_NAMES)
@DEADLINE
@given(seed=st.integers(0, 16), edits=EDITS)
def test_mutated_valid_inputs(target: str, seed: int, edits: list[tuple[str, int, int]]) -> None:
    seeds = targets.seeds(target)
    targets.run(target, mutate(seeds[seed % len(seeds)], edits))


@pytest.mark.parametrize("target", TARGET_NAMES)
@DEADLINE
@given(
    seed=st.integers(0, 16),
    path=st.lists(st.integers(0, 2**16), min_size=1, max_size=4),
    new=CBOR_VALUES,
    delete=st.booleans(),
)
def test_structurally_mutated_valid_inputs(
    target: str, seed: int, path: list[int], new: Any, delete: bool
) -> None:
    seeds = targets.seeds(target)
    value = codec.decode(seeds[seed % len(seeds)], max_size=MAX_STATE_SIZE)
    targets.run(target, codec.encode(replace_at(value, path, new, delete)))


EDGE_INPUTS = [
    b"",
    b"\x00",
    b"\x80",  # []
    b"\x81\x01",  # [1]
    b"\x82\x01\x03",  # [1, 3]
    b"\x82\x02\x03",  # [2, 3]: another version
    b"\x85\x01\x03\x40\x40\x40",
    b"\x8c\x01\x02" + b"\xf6" * 10,
    b"\x9f\xff",  # indefinite length
    b"\xa0",  # {}
    b"\xa2\x00\x01\x01\x11",  # {0: 1, 1: 17}
    b"\xbf\xff",
    b"\xc2\x41\x00",  # a tag
    b"\xf9\x00\x00",  # a half float
    b"\x1b" + b"\xff" * 8,
    bytes(range(256)),
]


@pytest.mark.parametrize("target", TARGET_NAMES)
@pytest.mark.parametrize("data", EDGE_INPUTS, ids=range(len(EDGE_INPUTS)))
def test_edge_inputs(target: str, data: bytes) -> None:
    targets.run(target, data)


def test_seeds_are_valid_inputs() -> None:
    """The starting points are accepted (mutations start from inside the format)."""
    for target in TARGET_NAMES:
        for seed in targets.seeds(target):
            if target in ("bundle", "decrypt_he", "decrypt_clear", "account_state"):
                continue  # these go on past decoding into checks that may refuse
            targets.TARGETS[target](seed)


def saved_crashes() -> list[Any]:
    return [
        pytest.param(path.parent.name, path, id=f"{path.parent.name}/{path.name}")
        for path in sorted(REGRESSIONS.glob("*/*"))
        if path.is_file()
    ]


def test_regression_directories_name_targets() -> None:
    assert REGRESSIONS.is_dir()
    for directory in REGRESSIONS.iterdir():
        if directory.is_dir():
            assert directory.name in targets.TARGETS


@pytest.mark.parametrize(
    ("target", "path"), saved_crashes() or [pytest.param("peek", None, id="none-yet")]
)
def test_saved_crash_inputs_stay_fixed(target: str, path: Path | None) -> None:
    if path is not None:
        targets.run(target, path.read_bytes())


@pytest.mark.parametrize("header_encryption", [True, False], ids=["he", "clear"])
def test_state_without_its_current_chain_is_refused(header_encryption: bool) -> None:
    c = targets.context()
    state = c.bob_state[header_encryption]
    value = codec.decode(state, max_size=MAX_STATE_SIZE)
    assert value[14] is not None  # Bob has a receiving chain...
    assert value[22]  # ...which is remembered
    value[22] = []
    with pytest.raises(StateError):
        e2ee.Session.from_bytes(codec.encode(value))
