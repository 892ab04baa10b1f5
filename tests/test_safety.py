"""Safety numbers: 60 digits, the same on both sides, a scannable payload, documented algorithm."""

from __future__ import annotations

import hashlib

import pytest

import e2ee
from e2ee import safety
from e2ee.errors import DecodeError
from e2ee.identity import UserIdentity
from e2ee.testing import DeterministicProvider

PROVIDER = DeterministicProvider("safety")
ALICE = UserIdentity.generate(provider=PROVIDER).public_key
BOB = UserIdentity.generate(provider=PROVIDER).public_key
MALLORY = UserIdentity.generate(provider=PROVIDER).public_key


def test_both_sides_see_the_same_sixty_digits() -> None:
    mine = e2ee.safety_number(ALICE, "alice", BOB, "bob")
    theirs = e2ee.safety_number(BOB, "bob", ALICE, "alice")
    assert mine.digits == theirs.digits
    assert len(mine.digits) == 60
    assert mine.digits.isdigit()
    assert len(mine.groups) == 12
    assert str(mine).count(" ") == 11
    assert mine.scannable != theirs.scannable
    assert mine.matches_scanned(theirs.scannable)
    assert theirs.matches_scanned(mine.scannable)
    assert not mine.matches_scanned(mine.scannable)  # my own screen is not the peer's


def test_a_different_key_or_id_changes_the_number() -> None:
    base = e2ee.safety_number(ALICE, "alice", BOB, "bob")
    assert e2ee.safety_number(ALICE, "alice", MALLORY, "bob").digits != base.digits
    assert e2ee.safety_number(ALICE, "alice", BOB, "bobby").digits != base.digits
    mitm = e2ee.safety_number(MALLORY, "bob", ALICE, "alice")
    assert not base.matches_scanned(mitm.scannable)


def test_algorithm_as_documented() -> None:
    digest = hashlib.sha512(b"e2ee/v1/safety-number\x00" + b"\x00\x01" + ALICE + b"alice").digest()
    for _ in range(5_200):
        digest = hashlib.sha512(digest + ALICE).digest()
    half = "".join(
        f"{int.from_bytes(digest[i : i + 5], 'big') % 100_000:05d}" for i in range(0, 30, 5)
    )
    number = e2ee.safety_number(ALICE, "alice", BOB, "bob").digits
    assert half in (number[:30], number[30:])
    assert safety.ITERATIONS == 5_200


@pytest.mark.parametrize(
    "payload", [b"", b"\xa0", b"\xa3\x00\x02\x01\x40\x02\x40", bytes(200), b"\x80"]
)
def test_malformed_scans_raise_decode_error(payload: bytes) -> None:
    with pytest.raises(DecodeError):
        e2ee.safety_number(ALICE, "alice", BOB, "bob").matches_scanned(payload)


def test_type_errors_for_programming_mistakes() -> None:
    with pytest.raises(TypeError):
        e2ee.safety_number(ALICE[:31], "alice", BOB, "bob")
