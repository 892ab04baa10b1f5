"""Forward secrecy as a property: what a stolen state does *not* give away.

The attacker steals a party's complete serialised state (account and session) at a random point
of a random conversation, and has every ciphertext ever sent. Checked:

* the stolen state, loaded, decrypts none of the messages the party had already decrypted
  (``DuplicateMessageError`` or ``AuthenticationError``), and the stolen account cannot accept
  the session's first message again;
* no message key of a message the party had already decrypted, nor of one it had sent, is in
  the *closure* of the stolen state: every key derivable, with the real KDFs of
  :mod:`e2ee.ratchet.chains`, from the stolen chain keys (``CKs`` and ``CKr``, ``MAX_SKIP`` + 1
  keys forward each), from the stolen root key and ratchet private key combined with every ratchet
  public key that ever appeared (a DH step the attacker performs itself, ``MAX_SKIP`` + 1 keys
  forward), and the stored skipped keys;
* the documented exception (spec/ratchet.md, "Rollback", [REQ-DR-RB-05]): messages that were
  skipped and are still waiting have their keys in the stolen state. The closure meets the
  decrypted-or-waiting messages in exactly that set, computed from an independent model of the
  receiver (:class:`tests.test_hostile_network.ReceiverModel`);
* after Bob accepted a session, his stolen account does not recover the session's root secret:
  re-running the responder computation with every private key the account still holds gives
  another root key (the one-time prekeys are gone). With the account copy from *before* the
  acceptance it does (the control). A session that used no one-time prekey is the documented
  exception: its root secret is recoverable until the signed prekey is deleted.

The same check runs over every conversation in test_vectors/: each vector is replayed through
the public API and, after every step, the state of each party at that point must fail to decrypt
every message the party had already received.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import e2ee
from e2ee.crypto import primitives
from e2ee.errors import (
    AuthenticationError,
    DuplicateMessageError,
    E2EEError,
    HandshakeError,
)
from e2ee.handshake import pqxdh
from e2ee.limits import MAX_SKIP, MAX_STATE_SIZE
from e2ee.ratchet import chains
from e2ee.testing import DeterministicProvider
from e2ee.vectors.common import capture_handshake
from e2ee.vectors.providers import LabelledReplay
from e2ee.wire import codec
from e2ee.wire.messages import PreKeyBundle, parse_message
from tests.conftest import PROJECT_ROOT
from tests.helpers import NOW
from tests.test_hostile_network import ReceiverModel

ALICE, BOB = "alice", "bob"
OTHER = {ALICE: BOB, BOB: ALICE}


# --- the attacker's closure ------------------------------------------------------------------


def walk(chain_key: bytes, steps: int = MAX_SKIP) -> set[bytes]:
    """The message keys of a chain key and of the ``steps`` chain keys after it."""
    keys = set()
    for _ in range(steps + 1):
        keys.add(chains.message_key(chain_key))
        chain_key = chains.next_chain_key(chain_key)
    return keys


def state_map(state: bytes) -> dict[int, Any]:
    value: dict[int, Any] = codec.decode(state, max_size=MAX_STATE_SIZE)
    return value


def closure(state: bytes, ratchet_keys: Iterable[bytes], steps: int = MAX_SKIP) -> set[bytes]:
    """Every message key an attacker derives from a stolen session state (spec/state.md,
    section 3) and the ratchet public keys seen on the wire."""
    f = state_map(state)
    header_encryption, root_key, dhs_private = f[4], f[9], f[10]
    keys = {key for _, stored in f[22] for _, key in stored}
    for chain_key in (f[13], f[14]):
        if chain_key is not None:
            keys |= walk(chain_key, steps)
    for public in set(ratchet_keys):
        try:
            dh = primitives.x25519(dhs_private, public)
        except E2EEError:
            continue
        if header_encryption:
            chain_key = chains.kdf_rk_he(root_key, dh)[1]
        else:
            chain_key = chains.kdf_rk(root_key, dh)[1]
        keys |= walk(chain_key, steps)
    return keys


# --- a recorded conversation -------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    sender: str
    wire: bytes
    plaintext: bytes
    message_key: bytes
    ratchet_key: bytes
    n: int
    pn: int


@dataclass
class Conversation:
    """Two parties; every message with its message key (read from the sender before encrypt)."""

    accounts: dict[str, e2ee.Account]
    sessions: dict[str, e2ee.Session]
    provider: DeterministicProvider
    models: dict[str, ReceiverModel]
    sent: list[Sent] = field(default_factory=list)
    decrypted: dict[str, list[Sent]] = field(default_factory=lambda: {ALICE: [], BOB: []})

    @classmethod
    def start(
        cls, *, header_encryption: bool, seed: str, one_time_prekeys: int = 1
    ) -> Conversation:
        provider = DeterministicProvider(seed)
        bob_account = e2ee.Account.generate(provider=provider, now=NOW)
        bob_account.generate_one_time_prekeys(one_time_prekeys, provider=provider)
        alice_account = e2ee.Account.generate(provider=provider, now=NOW)
        alice = alice_account.start_session(
            bob_account.prekey_bundle(),
            config=e2ee.SessionConfig(header_encryption=header_encryption),
            provider=provider,
            now=NOW,
        )
        conversation = cls(
            accounts={ALICE: alice_account, BOB: bob_account},
            sessions={ALICE: alice},
            provider=provider,
            models={
                ALICE: ReceiverModel(header_encryption, dhr=alice._ratchet.dhr),
                BOB: ReceiverModel(header_encryption, dhr=None),
            },
        )
        first = conversation.send(ALICE)
        bob, plaintext = bob_account.accept_session(first.wire, provider=provider, now=NOW)
        assert plaintext == first.plaintext
        conversation.sessions[BOB] = bob
        conversation._accepted(BOB, first)
        return conversation

    def send(self, sender: str) -> Sent:
        session = self.sessions[sender]
        r = session._ratchet
        assert r.cks is not None
        key, ratchet_key, n, pn = chains.message_key(r.cks), r.dhs_public, r.ns, r.pn
        plaintext = b"%s %d" % (sender.encode(), len(self.sent))
        wire = session.encrypt(plaintext, provider=self.provider)
        message = Sent(sender, wire, plaintext, key, ratchet_key, n, pn)
        self.sent.append(message)
        return message

    def deliver(self, message: Sent) -> bool:
        """Deliver; True if accepted (the model says whether it must be)."""
        receiver = OTHER[message.sender]
        model = self.models[receiver]
        if model.predict(message.ratchet_key, message.n).value != "accept":
            with pytest.raises(E2EEError):
                self.sessions[receiver].decrypt(message.wire, provider=self.provider)
            return False
        assert self.sessions[receiver].decrypt(message.wire, provider=self.provider) == (
            message.plaintext
        )
        self._accepted(receiver, message)
        return True

    def _accepted(self, receiver: str, message: Sent) -> None:
        self.models[receiver].accept(message.ratchet_key, message.n, message.pn)
        self.decrypted[receiver].append(message)

    def waiting(self, receiver: str) -> set[bytes]:
        """Message keys of messages to ``receiver`` that it skipped and still waits for."""
        model = self.models[receiver]
        return {
            m.message_key
            for m in self.sent
            if m.sender != receiver and m.n in model.chains.get(m.ratchet_key, {})
        }


@dataclass(frozen=True)
class Theft:
    victim: str
    account: bytes
    session: bytes
    decrypted: tuple[Sent, ...]
    sent_by_victim: tuple[Sent, ...]
    waiting: frozenset[bytes]


def steal(conversation: Conversation, victim: str) -> Theft:
    return Theft(
        victim=victim,
        account=conversation.accounts[victim].to_bytes(),
        session=conversation.sessions[victim].to_bytes(),
        decrypted=tuple(conversation.decrypted[victim]),
        sent_by_victim=tuple(m for m in conversation.sent if m.sender == victim),
        waiting=frozenset(conversation.waiting(victim)),
    )


def check_theft(theft: Theft, all_messages: list[Sent]) -> None:
    # 1. The stolen state decrypts none of the messages already decrypted.
    stolen = e2ee.Session.from_bytes(theft.session)
    for message in theft.decrypted:
        with pytest.raises((DuplicateMessageError, AuthenticationError)):
            stolen.decrypt(message.wire, provider=DeterministicProvider("attacker"))
    assert stolen.to_bytes() == theft.session
    if theft.victim == BOB:
        account = e2ee.Account.from_bytes(theft.account)
        with pytest.raises(HandshakeError):
            account.accept_session(
                theft.decrypted[0].wire, provider=DeterministicProvider("attacker"), now=NOW
            )

    # 2. The closure holds no key of a decrypted or sent message; of the decrypted-or-waiting
    #    messages it holds exactly the waiting ones.
    derivable = closure(theft.session, (m.ratchet_key for m in all_messages))
    decrypted = {m.message_key for m in theft.decrypted}
    assert not derivable & decrypted
    assert not derivable & {m.message_key for m in theft.sent_by_victim}
    assert derivable & (decrypted | theft.waiting) == theft.waiting


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.sampled_from([ALICE, BOB]), st.integers(1, 4)),
        st.tuples(st.just("deliver"), st.integers(0, 2**16), st.just(0)),
        st.tuples(st.just("drop"), st.integers(0, 2**16), st.just(0)),
    ),
    max_size=40,
)


@given(
    header_encryption=st.booleans(),
    ops=OPS,
    steal_at=st.integers(0, 40),
    victim=st.sampled_from([ALICE, BOB]),
)
def test_stolen_state_does_not_reveal_past_messages(
    header_encryption: bool, ops: list[tuple[str, Any, int]], steal_at: int, victim: str
) -> None:
    conversation = Conversation.start(header_encryption=header_encryption, seed="fs")
    in_flight: list[Sent] = []
    theft: Theft | None = None
    for index, (op, arg, count) in enumerate(ops):
        if index == steal_at:
            theft = steal(conversation, victim)
        if op == "send":
            in_flight += [conversation.send(arg) for _ in range(count)]
        elif in_flight:
            message = in_flight.pop(arg % len(in_flight))
            if op == "deliver":
                conversation.deliver(message)
    if theft is None:
        theft = steal(conversation, victim)
    check_theft(theft, conversation.sent)


@pytest.mark.parametrize("header_encryption", [True, False], ids=["he", "clear"])
def test_waiting_skipped_keys_are_the_exception(header_encryption: bool) -> None:
    """A fixed conversation with messages skipped on two chains, stolen from both parties."""
    c = Conversation.start(header_encryption=header_encryption, seed="fs-fixed")
    reply = c.send(BOB)
    assert c.deliver(reply)
    early = [c.send(ALICE) for _ in range(5)]
    assert c.deliver(early[4])  # skips 0..3
    assert c.deliver(early[1])
    assert c.deliver(c.send(BOB))
    late = [c.send(ALICE) for _ in range(3)]
    assert c.deliver(late[2])  # a DH step; PN covers early[...]; skips late[0..1]
    theft = steal(c, BOB)
    expected = {m.message_key for m in (early[0], early[2], early[3], late[0], late[1])}
    assert theft.waiting == expected
    check_theft(theft, c.sent)
    check_theft(steal(c, ALICE), c.sent)


# --- the account after accept_session -----------------------------------------------------------


def responder_root_keys(
    account_state: bytes, first_message: bytes, bundle: PreKeyBundle
) -> set[bytes]:
    """Every root key the responder computation yields with the private keys an account state
    holds (spec/state.md, section 2): each signed prekey, each one-time EC prekey or none, each
    ML-KEM seed (one-time or last resort). The public values come from the message and bundle."""
    f = state_map(account_state)
    identity_seed = f[2]
    initial = parse_message(first_message).initial
    assert initial is not None
    initiator_dh = pqxdh.check_identity_key(initial.identity_key)
    one_time_privates: list[bytes | None] = [None, *(record[1] for record in f[6])]
    kem_seeds = [record[1] for record in f[7]] + [s[6] for s in f[5] if s[6] is not None]
    roots = set()
    for spk in f[5]:
        for one_time_private in one_time_privates:
            dh_outputs = pqxdh.responder_dh(
                identity_dh_private=primitives.ed25519_seed_to_x25519(identity_seed),
                signed_prekey_private=spk[2],
                one_time_prekey_private=one_time_private,
                initiator_identity_dh=initiator_dh,
                base_key=initial.base_key,
            )
            for seed in kem_seeds:
                assert initial.kem_ciphertext is not None
                transcript = pqxdh.Transcript(
                    initiator_identity_key=initial.identity_key,
                    responder_identity_key=bundle.identity_key,
                    signed_prekey_id=bundle.signed_prekey_id,
                    signed_prekey=bundle.signed_prekey,
                    signed_prekey_timestamp=bundle.signed_prekey_timestamp,
                    one_time_prekey_id=initial.one_time_prekey_id,
                    one_time_prekey=bundle.one_time_prekey,
                    kem_prekey_id=initial.kem_prekey_id,
                    kem_prekey=bundle.one_time_kem_prekey or bundle.kem_prekey,
                    kem_ciphertext=initial.kem_ciphertext,
                    base_key=initial.base_key,
                    header_encryption=initial.header_encryption,
                )
                kem_secret = primitives.mlkem1024_decapsulate(seed, initial.kem_ciphertext)
                roots.add(pqxdh.derive(transcript, dh_outputs, kem_secret).root_key)
    return roots


def _accepted_session() -> tuple[bytes, bytes, bytes, PreKeyBundle, bytes]:
    """(Bob's account before, and after, accepting; the first message; the bundle it was made
    from; the session's root secret). Bob's account also holds other sessions' prekeys."""
    provider = DeterministicProvider("fs-account")
    bob = e2ee.Account.generate(provider=provider, now=NOW)
    bob.generate_one_time_prekeys(3, provider=provider)
    bob.prekey_bundle()  # handed out for another session: its keys stay in the account
    bundle = bob.prekey_bundle()
    alice = e2ee.Account.generate(provider=provider, now=NOW)
    first = alice.start_session(bundle, provider=provider, now=NOW).encrypt(b"first")
    before = bob.to_bytes()
    with capture_handshake() as calls:
        bob.accept_session(first, provider=provider, now=NOW)
    return before, bob.to_bytes(), first, bundle, bytes.fromhex(calls[0]["rootKey"])


def test_stolen_account_does_not_recover_the_root_secret() -> None:
    before, after, first, bundle, root = _accepted_session()
    assert bundle.one_time_prekey is not None
    assert bundle.one_time_kem_prekey is not None
    assert root in responder_root_keys(before, first, bundle)  # the control: it has teeth
    assert root not in responder_root_keys(after, first, bundle)
    with pytest.raises(HandshakeError):
        e2ee.Account.from_bytes(after).accept_session(
            first, provider=DeterministicProvider("attacker"), now=NOW
        )


def test_session_without_one_time_prekeys_is_the_documented_exception() -> None:
    """No one-time prekey left: the root secret depends only on the signed prekey (and its
    last-resort ML-KEM key), so a stolen account recovers it until the signed prekey is
    deleted (rotation plus the grace period)."""
    provider = DeterministicProvider("fs-last-resort")
    bob = e2ee.Account.generate(provider=provider, now=NOW)
    bundle = bob.prekey_bundle()
    assert bundle.one_time_prekey is None
    assert bundle.one_time_kem_prekey is None
    alice = e2ee.Account.generate(provider=provider, now=NOW)
    first = alice.start_session(bundle, provider=provider, now=NOW).encrypt(b"first")
    with capture_handshake() as calls:
        bob.accept_session(first, provider=provider, now=NOW)
    root = bytes.fromhex(calls[0]["rootKey"])
    assert root in responder_root_keys(bob.to_bytes(), first, bundle)
    bob.rotate_signed_prekey(provider=provider, now=NOW + 1)
    assert root in responder_root_keys(bob.to_bytes(), first, bundle)  # grace period
    later = NOW + 1 + 15 * 24 * 3600
    bob.rotate_signed_prekey(provider=provider, now=later)
    assert root not in responder_root_keys(bob.to_bytes(), first, bundle)


# --- the published conversation vectors -------------------------------------------------------

VECTOR_DIR = PROJECT_ROOT / "test_vectors"
CONVERSATION_FILES = sorted(VECTOR_DIR.glob("conversation_*.json"))


@dataclass
class _Party:
    account: e2ee.Account | None = None
    session: e2ee.Session | None = None
    received: list[bytes] = field(default_factory=list)
    first: bytes | None = None
    """The initial message this party accepted with its account."""


class _Replay:
    """Replays scenario steps through the public API, tracking what each party received."""

    def __init__(self) -> None:
        self.parties: dict[str, _Party] = {ALICE: _Party(), BOB: _Party()}
        self.saved: dict[bytes, list[bytes]] = {}

    def step(self, step: dict[str, Any]) -> None:
        party = self.parties[step["party"]]
        provider = LabelledReplay(step.get("random", []), step.get("kemEncapsulations", []))
        expect = step["expect"]
        try:
            self._run(step, party, provider)
        except E2EEError:
            assert "error" in expect, f"{step['op']} failed but the vector expects success"
            return
        assert "error" not in expect, f"{step['op']} succeeded but the vector expects an error"

    def _run(self, step: dict[str, Any], party: _Party, provider: LabelledReplay) -> None:
        op, expect = step["op"], step["expect"]
        now = int(step.get("now", NOW))
        if op == "generate_account":
            party.account = e2ee.Account.generate(
                provider=provider, now=now, post_quantum=bool(step["postQuantum"])
            )
        elif op == "generate_one_time_prekeys":
            assert party.account is not None
            party.account.generate_one_time_prekeys(int(step["count"]), provider=provider)
        elif op == "rotate_signed_prekey":
            assert party.account is not None
            party.account.rotate_signed_prekey(provider=provider, now=now)
        elif op == "prekey_bundle":
            assert party.account is not None
            party.account.prekey_bundle()
        elif op == "start_session":
            assert party.account is not None
            config = step["config"]
            party.session = party.account.start_session(
                PreKeyBundle.from_bytes(bytes.fromhex(step["bundle"])),
                config=e2ee.SessionConfig(
                    header_encryption=bool(config["headerEncryption"]),
                    allow_x3dh=bool(config["allowX3dh"]),
                ),
                provider=provider,
                now=now,
            )
            party.received = []
        elif op == "accept_session":
            assert party.account is not None
            message = bytes.fromhex(step["message"])
            config = e2ee.SessionConfig(
                require_header_encryption=bool(step["config"]["requireHeaderEncryption"])
            )
            party.session, plaintext = party.account.accept_session(
                message, config=config, provider=provider, now=now
            )
            assert plaintext.hex() == expect["plaintext"]
            party.received = [message]
            party.first = message
        elif op == "encrypt":
            assert party.session is not None
            for _ in range(int(step.get("repeat", 1))):
                wire = party.session.encrypt(bytes.fromhex(step["plaintext"]), provider=provider)
            if "message" in expect:
                assert wire.hex() == expect["message"]
        elif op == "decrypt":
            assert party.session is not None
            message = bytes.fromhex(step["message"])
            plaintext = party.session.decrypt(message, provider=provider)
            assert plaintext.hex() == expect["plaintext"]
            party.received.append(message)
        elif op == "save_session":
            assert party.session is not None
            key = step.get("stateKey")
            state = party.session.to_bytes(
                key=None if key is None else bytes.fromhex(key), provider=provider
            )
            self.saved[state] = list(party.received)
        elif op == "load_session":
            key = step.get("stateKey")
            state = bytes.fromhex(step["state"])
            party.session = e2ee.Session.from_bytes(
                state, key=None if key is None else bytes.fromhex(key)
            )
            party.received = list(self.saved[state])
        elif op == "save_account":
            assert party.account is not None
            party.account.to_bytes()
        elif op == "load_account":
            party.account = e2ee.Account.from_bytes(bytes.fromhex(step["state"]))
        else:  # pragma: no cover - a new operation: extend this replayer
            raise AssertionError(f"unknown operation {op!r}")

    def check_forward_secrecy(self) -> int:
        """Every party's current state fails on every message it already received."""
        checked = 0
        for party in self.parties.values():
            if party.session is not None and party.received:
                state = party.session.to_bytes()
                copy = e2ee.Session.from_bytes(state)
                for message in party.received:
                    with pytest.raises((DuplicateMessageError, AuthenticationError)):
                        copy.decrypt(message, provider=DeterministicProvider("attacker"))
                    checked += 1
                assert copy.to_bytes() == state
            if party.account is not None and party.first is not None:
                account = e2ee.Account.from_bytes(party.account.to_bytes())
                with pytest.raises((HandshakeError, DuplicateMessageError)):
                    account.accept_session(
                        party.first, provider=DeterministicProvider("attacker"), now=NOW
                    )
        return checked


def _tests(path: Path) -> list[Any]:
    data = json.loads(path.read_text())
    return [
        pytest.param(group["setup"], test["steps"], id=f"{path.stem}-{test['tcId']}")
        for group in data["testGroups"]
        for test in group["tests"]
    ]


@pytest.mark.parametrize(
    ("setup", "steps"), [p for path in CONVERSATION_FILES for p in _tests(path)]
)
def test_forward_secrecy_over_the_conversation_vectors(
    setup: list[dict[str, Any]], steps: list[dict[str, Any]]
) -> None:
    replay = _Replay()
    checked = 0
    for step in [*setup, *steps]:
        replay.step(step)
        checked += replay.check_forward_secrecy()
    assert checked > 0


def test_every_conversation_vector_file_is_replayed() -> None:
    assert len(CONVERSATION_FILES) >= 7


# --- nothing leaks through representations ----------------------------------------------------


def test_reprs_show_no_key_material(monkeypatch: pytest.MonkeyPatch) -> None:
    """A state is also stolen through logs and tracebacks: repr() of every object holding
    secrets shows none of them ([REQ-SEC-04]), in hex or as a bytes literal."""
    made: list[pqxdh.HandshakeSecrets] = []
    original = pqxdh.derive

    def keep(*args: Any) -> pqxdh.HandshakeSecrets:
        secrets = original(*args)
        made.append(secrets)
        return secrets

    monkeypatch.setattr(pqxdh, "derive", keep)
    c = Conversation.start(header_encryption=True, seed="repr")
    assert c.deliver(c.send(BOB))
    c.send(ALICE)
    assert c.deliver(c.send(ALICE))  # Bob now holds a skipped key
    secrets: set[bytes] = {m.message_key for m in c.sent} | {m.plaintext for m in c.sent}
    for session in c.sessions.values():
        f = state_map(session.to_bytes())
        secrets |= {f[i] for i in (9, 10, 13, 14, 18, 19, 20, 21) if f[i] is not None}
        secrets |= {key for _, stored in f[22] for _, key in stored}
    for account in c.accounts.values():
        f = state_map(account.to_bytes())
        secrets.add(f[2])
        secrets |= {record[2] for record in f[5]} | {record[6] for record in f[5] if record[6]}
        secrets |= {record[1] for record in f[6] + f[7]}
    for handshake in made:
        secrets |= {handshake.root_key, handshake.header_key, handshake.next_header_key}
    bob = c.sessions[BOB]
    assert len(bob._ratchet.skipped) == 1
    first = parse_message(c.sent[0].wire)
    objects: list[object] = [
        *c.accounts.values(),
        *c.sessions.values(),
        bob._ratchet,
        bob._ratchet.skipped,
        PreKeyBundle.from_bytes(c.accounts[BOB].prekey_bundle().to_bytes()),
        first.initial,
        *made,
        c.provider,
    ]
    for obj in objects:
        text = repr(obj)
        for secret in secrets:
            assert secret.hex() not in text, type(obj).__name__
            assert repr(secret)[2:-1] not in text, type(obj).__name__
