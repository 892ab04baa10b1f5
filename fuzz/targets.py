"""Fuzz targets: every decoder of untrusted bytes, with the property each must keep.

A target takes arbitrary bytes and feeds them to one entry point. The entry point may succeed or
raise an :class:`e2ee.errors.E2EEError`; anything else escaping is a bug (the fuzzer reports it
as a crash). After an error, the object the call was made on must serialise byte-identically
(``AssertionError`` otherwise). A state that loads must also re-serialise to the same bytes and
be usable: encrypting and decrypting with it raise only e2ee errors.

Used by fuzz/fuzz.py (atheris, coverage-guided), by tests/test_fuzz_decoders.py (hypothesis) and
by tests/test_fuzz_regressions.py (replays of saved crash inputs). Everything is deterministic.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass

import e2ee
from e2ee.errors import E2EEError
from e2ee.testing import DeterministicProvider

NOW = 1_800_000_000
STATE_KEY = bytes(range(32))


@dataclass(frozen=True)
class Context:
    """Valid objects and inputs, made once from a fixed seed."""

    bob_account_state: bytes
    bundle: bytes
    classic_bundle: bytes
    initial: dict[bool, bytes]
    """Header encryption on/off -> an initial message to Bob's account."""
    normal: dict[bool, bytes]
    """Header encryption on/off -> a normal message to Alice's session."""
    alice_state: dict[bool, bytes]
    bob_state: dict[bool, bytes]
    pending_state: bytes
    """An initiator session still awaiting its reply."""
    sealed_session: bytes
    sealed_account: bytes


@functools.cache
def context() -> Context:
    provider = DeterministicProvider("fuzz-context")
    bob = e2ee.Account.generate(provider=provider, now=NOW)
    bob.generate_one_time_prekeys(4, provider=provider)
    bundle = bob.prekey_bundle()
    classic = e2ee.Account.generate(provider=provider, now=NOW, post_quantum=False)
    alice_account = e2ee.Account.generate(provider=provider, now=NOW)
    initial: dict[bool, bytes] = {}
    normal: dict[bool, bytes] = {}
    alice_state: dict[bool, bytes] = {}
    bob_state: dict[bool, bytes] = {}
    pending = b""
    bob_before = bob.to_bytes()
    for he in (True, False):
        config = e2ee.SessionConfig(header_encryption=he)
        alice = alice_account.start_session(
            bob.prekey_bundle(), config=config, provider=provider, now=NOW
        )
        initial[he] = alice.encrypt(b"initial", provider=provider)
        if he:
            pending = alice.to_bytes()
        scratch = e2ee.Account.from_bytes(bob.to_bytes())
        bob_session, _ = scratch.accept_session(initial[he], provider=provider, now=NOW)
        alice.decrypt(bob_session.encrypt(b"reply", provider=provider), provider=provider)
        bob_session.decrypt(alice.encrypt(b"skipped", provider=provider), provider=provider)
        alice.encrypt(b"lost", provider=provider)
        bob_session.decrypt(alice.encrypt(b"after a gap", provider=provider), provider=provider)
        normal[he] = bob_session.encrypt(b"normal", provider=provider)
        alice_state[he] = alice.to_bytes()
        bob_state[he] = bob_session.to_bytes()
    account = e2ee.Account.from_bytes(bob_before)
    return Context(
        bob_account_state=bob_before,
        bundle=bundle.to_bytes(),
        classic_bundle=classic.prekey_bundle().to_bytes(),
        initial=initial,
        normal=normal,
        alice_state=alice_state,
        bob_state=bob_state,
        pending_state=pending,
        sealed_session=e2ee.Session.from_bytes(bob_state[True]).to_bytes(
            key=STATE_KEY, provider=provider
        ),
        sealed_account=account.to_bytes(key=STATE_KEY, provider=provider),
    )


def _provider() -> DeterministicProvider:
    return DeterministicProvider("fuzz-run")


def _use_session(session: e2ee.Session) -> None:
    """A loaded session must be usable: errors are e2ee errors."""
    c = context()
    for message in (c.normal[True], c.normal[False], c.initial[True]):
        with contextlib.suppress(E2EEError):
            session.decrypt(message, provider=_provider())
    with contextlib.suppress(E2EEError):
        session.encrypt(b"after load", provider=_provider())


def bundle(data: bytes) -> None:
    PreKeyBundle = e2ee.PreKeyBundle
    parsed = PreKeyBundle.from_bytes(data)
    assert PreKeyBundle.from_bytes(parsed.to_bytes()) == parsed
    account = e2ee.Account.generate(provider=_provider(), now=NOW)
    account.start_session(parsed, provider=_provider(), now=NOW)


def peek(data: bytes) -> None:
    e2ee.peek(data)


def accept_session(data: bytes) -> None:
    account = e2ee.Account.from_bytes(context().bob_account_state)
    before = account.to_bytes()
    try:
        account.accept_session(data, provider=_provider(), now=NOW)
    except E2EEError:
        assert account.to_bytes() == before, "accept_session changed the account on error"
        raise


def _decrypt(header_encryption: bool, data: bytes) -> None:
    session = e2ee.Session.from_bytes(context().alice_state[header_encryption])
    before = session.to_bytes()
    try:
        session.decrypt(data, provider=_provider())
    except E2EEError:
        assert session.to_bytes() == before, "decrypt changed the session on error"
        raise


def decrypt_he(data: bytes) -> None:
    _decrypt(True, data)


def decrypt_clear(data: bytes) -> None:
    _decrypt(False, data)


def account_state(data: bytes) -> None:
    account = e2ee.Account.from_bytes(data)
    assert account.to_bytes() == data, "a loaded account does not re-serialise identically"
    account.prekey_bundle()
    with contextlib.suppress(E2EEError):
        account.accept_session(context().initial[True], provider=_provider(), now=NOW)


def session_state(data: bytes) -> None:
    session = e2ee.Session.from_bytes(data)
    assert session.to_bytes() == data, "a loaded session does not re-serialise identically"
    _use_session(session)


def sealed_session_state(data: bytes) -> None:
    session = e2ee.Session.from_bytes(data, key=STATE_KEY)
    _use_session(session)


def sealed_account_state(data: bytes) -> None:
    e2ee.Account.from_bytes(data, key=STATE_KEY).prekey_bundle()


TARGETS: dict[str, Callable[[bytes], None]] = {
    "bundle": bundle,
    "peek": peek,
    "accept_session": accept_session,
    "decrypt_he": decrypt_he,
    "decrypt_clear": decrypt_clear,
    "account_state": account_state,
    "session_state": session_state,
    "sealed_session_state": sealed_session_state,
    "sealed_account_state": sealed_account_state,
}


def seeds(target: str) -> list[bytes]:
    """Valid inputs for a target (the starting corpus)."""
    c = context()
    messages = [*c.initial.values(), *c.normal.values()]
    return {
        "bundle": [c.bundle, c.classic_bundle],
        "peek": messages,
        "accept_session": list(c.initial.values()),
        "decrypt_he": [c.normal[True], c.initial[True]],
        "decrypt_clear": [c.normal[False], c.initial[False]],
        "account_state": [c.bob_account_state],
        "session_state": [*c.alice_state.values(), *c.bob_state.values(), c.pending_state],
        "sealed_session_state": [c.sealed_session],
        "sealed_account_state": [c.sealed_account],
    }[target]


def run(target: str, data: bytes) -> None:
    """One input: success or an e2ee error is fine; anything else propagates."""
    with contextlib.suppress(E2EEError):
        TARGETS[target](data)
