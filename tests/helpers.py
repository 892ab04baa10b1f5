"""Test helpers: account/session pairs with reproducible randomness."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import e2ee
from e2ee.testing import DeterministicProvider

NOW = 1_800_000_000


@dataclass
class Pair:
    alice_account: e2ee.Account
    bob_account: e2ee.Account
    alice: e2ee.Session
    bob: e2ee.Session
    provider: DeterministicProvider


def make_pair(
    *,
    header_encryption: bool = True,
    post_quantum: bool = True,
    one_time_prekeys: int = 1,
    seed: str = "pair",
) -> Pair:
    """Alice starts a session with Bob; Bob accepts it; Bob replies once so both can send."""
    provider = DeterministicProvider(seed)
    bob_account = e2ee.Account.generate(provider=provider, now=NOW, post_quantum=post_quantum)
    bob_account.generate_one_time_prekeys(one_time_prekeys, provider=provider)
    alice_account = e2ee.Account.generate(provider=provider, now=NOW)
    config = e2ee.SessionConfig(header_encryption=header_encryption, allow_x3dh=True)
    alice = alice_account.start_session(
        bob_account.prekey_bundle(), config=config, provider=provider, now=NOW
    )
    bob, plaintext = bob_account.accept_session(
        alice.encrypt(b"first", provider=provider), provider=provider, now=NOW
    )
    assert plaintext == b"first"
    assert alice.decrypt(bob.encrypt(b"reply", provider=provider), provider=provider) == b"reply"
    return Pair(alice_account, bob_account, alice, bob, provider)


def flip_bit(data: bytes, index: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[index] ^= 1 << bit
    return bytes(out)


QUERIES = ("SELECT", "INSERT", "UPDATE", "DELETE")


def table_reads_without_index(
    conn: sqlite3.Connection, statements: list[str], *, ranges: bool
) -> list[tuple[str, str]]:
    """(statement, plan step) for each step of the traced ``statements`` (expanded SQL from
    ``set_trace_callback``) that reads a table other than by an index search with an equality
    constraint (or, with ``ranges``, a range one): what makes a statement's work grow with the
    table. SQLite calls a min/max read with no usable index "SEARCH t", with no constraint."""
    found = []
    for statement in statements:
        if statement.split()[0] not in QUERIES:
            continue
        for *_, step in conn.execute("EXPLAIN QUERY PLAN " + statement):
            if not step.startswith(("SCAN", "SEARCH")):
                continue
            bounded = "=?" in step or (ranges and ("<?" in step or ">?" in step))
            if not (step.startswith("SEARCH") and bounded):
                found.append((statement, step))
    return found
