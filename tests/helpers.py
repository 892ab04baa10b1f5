"""Test helpers: account/session pairs with reproducible randomness."""

from __future__ import annotations

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
