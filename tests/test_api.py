"""The public API contract from the issue, end to end."""

from __future__ import annotations

import hashlib

import pytest

import e2ee
from e2ee.crypto.provider import SystemProvider
from e2ee.handshake.pqxdh import HandshakeSecrets, Transcript
from e2ee.ratchet.double_ratchet import RatchetState
from e2ee.wire.messages import parse_message
from tests.helpers import NOW, make_pair


def test_issue_example_runs_as_written() -> None:
    bob = e2ee.Account.generate()
    bundle = bob.prekey_bundle()
    bundle = e2ee.PreKeyBundle.from_bytes(bundle.to_bytes())
    alice = e2ee.Account.generate()
    session = alice.start_session(bundle)
    wire = session.encrypt(b"hello")
    bob_session, plaintext = bob.accept_session(wire)
    assert plaintext == b"hello"
    assert session.decrypt(bob_session.encrypt(b"hi")) == b"hi"
    session = e2ee.Session.from_bytes(session.to_bytes())
    bob = e2ee.Account.from_bytes(bob.to_bytes())
    assert session.decrypt(bob_session.encrypt(b"again")) == b"again"
    assert bob_session.decrypt(session.encrypt(b"back")) == b"back"


@pytest.mark.parametrize("header_encryption", [True, False])
@pytest.mark.parametrize("post_quantum", [True, False])
def test_both_handshakes_both_header_modes_both_ways(
    header_encryption: bool, post_quantum: bool
) -> None:
    pair = make_pair(header_encryption=header_encryption, post_quantum=post_quantum)
    assert pair.alice.session_id == pair.bob.session_id
    assert pair.alice.peer_identity_key == pair.bob_account.identity_key
    assert pair.bob.peer_identity_key == pair.alice_account.identity_key
    assert pair.alice.header_encryption is header_encryption
    for i in range(3):
        assert pair.bob.decrypt(pair.alice.encrypt(b"a%d" % i)) == b"a%d" % i
        assert pair.alice.decrypt(pair.bob.encrypt(b"b%d" % i)) == b"b%d" % i


def test_peek_reports_the_session_id_of_both_message_kinds() -> None:
    bob = e2ee.Account.generate(now=NOW)
    alice = e2ee.Account.generate(now=NOW)
    session = alice.start_session(bob.prekey_bundle(), now=NOW)
    first = session.encrypt(b"one")
    info = e2ee.peek(first)
    assert info.kind == "initial"
    assert info.is_initial
    assert info.header_encrypted
    assert info.session_id == session.session_id
    bob_session, _ = bob.accept_session(first, now=NOW)
    reply = bob_session.encrypt(b"two")
    info = e2ee.peek(reply)
    assert info.kind == "normal"
    assert info.session_id == bob_session.session_id == session.session_id


def test_session_id_is_the_labelled_hash_of_the_transcript_hash() -> None:
    """[REQ-HS-11] session id = SHA256("e2ee/v1/session-id\\0" || TH)[0:16], the label spelled
    out from the spec and the hash taken with hashlib; TH is the digest of the transcript of
    this handshake, built from the bundle and the initial message."""
    bob = e2ee.Account.generate(now=NOW)
    bob.generate_one_time_prekeys(1)
    alice = e2ee.Account.generate(now=NOW)
    bundle = bob.prekey_bundle()
    session = alice.start_session(bundle, now=NOW)
    initial = parse_message(session.encrypt(b"one")).initial
    assert initial is not None
    transcript = Transcript(
        initiator_identity_key=alice.identity_key,
        responder_identity_key=bundle.identity_key,
        signed_prekey_id=bundle.signed_prekey_id,
        signed_prekey=bundle.signed_prekey,
        signed_prekey_timestamp=bundle.signed_prekey_timestamp,
        one_time_prekey_id=bundle.one_time_prekey_id,
        one_time_prekey=bundle.one_time_prekey,
        kem_prekey_id=bundle.one_time_kem_prekey_id,
        kem_prekey=bundle.one_time_kem_prekey,
        kem_ciphertext=initial.kem_ciphertext,
        base_key=initial.base_key,
        header_encryption=True,
    )
    label = b"e2ee/v1/session-id\x00"
    expected = hashlib.sha256(label + transcript.digest()).digest()[:16]
    assert session.session_id == expected
    assert bob.accept_session(session.encrypt(b"two"), now=NOW)[0].session_id == expected


def test_initiator_keeps_sending_initial_form_until_a_reply_arrives() -> None:
    bob = e2ee.Account.generate(now=NOW)
    alice = e2ee.Account.generate(now=NOW)
    session = alice.start_session(bob.prekey_bundle(), now=NOW)
    first, second = session.encrypt(b"0"), session.encrypt(b"1")
    assert e2ee.peek(second).is_initial
    assert session.awaiting_reply
    # Message 0 is delayed behind message 1: message 1 creates Bob's session...
    bob_session, plaintext = bob.accept_session(second, now=NOW)
    assert plaintext == b"1"
    # ...and message 0, an initial message of a session Bob holds, goes to decrypt.
    assert e2ee.peek(first).session_id == bob_session.session_id
    assert bob_session.decrypt(first) == b"0"
    assert session.decrypt(bob_session.encrypt(b"reply")) == b"reply"
    assert not session.awaiting_reply
    assert not e2ee.peek(session.encrypt(b"2")).is_initial


def test_repr_shows_no_key_material() -> None:
    pair = make_pair()
    secrets = [pair.alice._ratchet.root_key, pair.alice._ratchet.dhs_private]
    for obj in (pair.alice, pair.bob, pair.alice_account, pair.bob_account, pair.alice._ratchet):
        text = repr(obj)
        for secret in secrets:
            assert secret.hex() not in text


def _ratchet_secrets(ratchet: RatchetState) -> list[bytes]:
    values = [
        ratchet.root_key,
        ratchet.cks,
        ratchet.ckr,
        ratchet.hks,
        ratchet.hkr,
        ratchet.nhks,
        ratchet.nhkr,
        ratchet.dhs_private,
    ]
    for _reference, keys in ratchet.skipped.dump():
        assert isinstance(keys, list)
        values += [key for _number, key in keys]
    return [value for value in values if isinstance(value, bytes)]


def test_repr_of_every_core_object_shows_no_secret_in_any_form() -> None:
    """[REQ-SEC-04] repr() of accounts (with one-time prekeys of both kinds and a replaced
    signed prekey), sessions, ratchet states, skipped-key stores holding keys, bundles, initial
    fields, handshake outputs and providers contains no random value drawn, no ratchet, header,
    skipped or handshake key, and no plaintext: neither as hex nor as a bytes literal."""
    pair = make_pair(one_time_prekeys=2)
    provider = pair.provider
    pair.bob_account.rotate_signed_prekey(provider=provider, now=NOW + 1)
    plaintext = b"plaintext that no repr may show"
    sent = [pair.alice.encrypt(plaintext, provider=provider) for _ in range(3)]
    assert pair.bob.decrypt(sent[-1], provider=provider) == plaintext  # two keys skipped
    assert len(pair.bob._ratchet.skipped) == 2
    bundle = pair.bob_account.prekey_bundle()
    fresh = pair.alice_account.start_session(bundle, provider=provider, now=NOW)
    initial = parse_message(fresh.encrypt(plaintext, provider=provider)).initial
    assert initial is not None
    handshake = HandshakeSecrets(
        root_key=bytes(range(32)),
        header_key=bytes(range(32, 64)),
        next_header_key=bytes(range(64, 96)),
        session_id=bytes(16),
        associated_data=bytes(66),
    )
    secrets = [
        *provider.drawn,
        *_ratchet_secrets(pair.alice._ratchet),
        *_ratchet_secrets(pair.bob._ratchet),
        *_ratchet_secrets(fresh._ratchet),
        handshake.root_key,
        handshake.header_key,
        handshake.next_header_key,
        plaintext,
    ]
    secrets = [secret for secret in secrets if len(secret) >= 16]
    objects: list[object] = [
        pair.alice,
        pair.bob,
        fresh,
        pair.alice_account,
        pair.bob_account,
        pair.alice._ratchet,
        pair.bob._ratchet,
        pair.bob._ratchet.skipped,
        bundle,
        initial,
        handshake,
        SystemProvider(),
    ]
    for obj in objects:
        text = repr(obj)
        for secret in secrets:
            assert secret.hex() not in text.lower(), type(obj).__name__
            assert repr(secret)[2:-1] not in text, type(obj).__name__
