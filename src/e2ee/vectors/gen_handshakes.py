"""Generators of the handshake vectors: PQXDH, X3DH and every rejection."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from e2ee import limits
from e2ee.config import SessionConfig
from e2ee.vectors import reference as ref
from e2ee.vectors.common import JSON, NOW, envelope, note
from e2ee.vectors.gen_kdf import _kdf_ck, _kdf_rk
from e2ee.vectors.gen_primitives import (
    flip,
    forge_message,
    okem_payload,
    opk_payload,
    rnd,
    spk_payload,
)
from e2ee.vectors.providers import LabelledRecorder
from e2ee.vectors.scenario_record import (
    IntentError,
    Scenario,
    ScenarioCase,
    TestFn,
    scenario_group,
)
from e2ee.wire import codec
from e2ee.wire.messages import InitialFields, PreKeyBundle, message_prefix, parse_message

InitiatorCraft = Callable[[Scenario], PreKeyBundle | bytes]
ResponderCraft = Callable[[Scenario, bytes], bytes]

SCENARIO_HEADER = [
    "Scenario vectors: each test replays `setup` (of its group) and then its own `steps` on "
    "fresh parties. A step names an operation of the public API (generate_account, "
    "generate_one_time_prekeys, rotate_signed_prekey, prekey_bundle, start_session, "
    "accept_session, encrypt, decrypt, save_session, load_session, save_account, "
    "load_account), its inputs, every random value it draws in draw order (`random`: label = "
    "purpose, value) and every ML-KEM encapsulation (`kemEncapsulations`: the FIPS 203 "
    "encapsulation randomness m and the resulting shared secret and ciphertext), and "
    "`expect`: its outputs, or the error category it must raise.",
    "`expect.ratchet` is the Double Ratchet state after the step (RK, CKs, CKr, DHs public, "
    "DHr, Ns, Nr, PN, header keys, skipped keys), `expect.handshake` the key agreement "
    "(DH outputs, KEM secret, transcript hash, root key, header keys, session id, AD), "
    "`messageKey` the key an encrypt step used. With an error, stateUnchanged / "
    "accountUnchanged mean that the session / account serialises byte-identically before and "
    "after. Clock: `now` in Unix seconds.",
]

HANDSHAKE_NOTES = {
    "Pqxdh": note("BASIC", "A PQXDH handshake (X25519 + ML-KEM-1024)."),
    "X3dh": note(
        "BASIC",
        "A classic X3DH handshake (the initiator allows it, the bundle has no ML-KEM prekey).",
    ),
    "OneTimePrekey": note("BASIC", "The bundle offers a one-time X25519 prekey."),
    "OneTimeKemPrekey": note("BASIC", "The bundle offers a one-time ML-KEM prekey."),
    "LastResortKem": note("BASIC", "Only the signed prekey's last-resort ML-KEM prekey is used."),
    "HeaderEncryption": note("BASIC", "The initiator turns header encryption on."),
    "NoHeaderEncryption": note("BASIC", "The initiator turns header encryption off."),
    "DelayedInitial": note("FUNCTIONALITY", "Initial-form messages arrive out of order."),
    "Rotation": note("FUNCTIONALITY", "The responder rotated its signed prekey meanwhile."),
    "ClockBoundary": note("EDGE_CASE", "The signed prekey's age is exactly at a limit."),
    "Persistence": note("FUNCTIONALITY", "The account is saved and restored in between."),
    "BadSignature": note("AUTH_BYPASS", "A bundle signature does not verify."),
    "KemStripped": note(
        "AUTH_BYPASS",
        "A downgrade attempt: the ML-KEM prekey is removed from a post-quantum bundle or "
        "initial message.",
    ),
    "StalePrekey": note(
        "DEFINED",
        "The signed prekey is too old, dated in the future, or retired beyond its grace period.",
    ),
    "UnknownPrekey": note(
        "DEFINED",
        "The initial message names a prekey the responder does "
        "not have (never had, or already used).",
    ),
    "Replay": note("AUTH_BYPASS", "An initial message is delivered to accept_session again."),
    "Tampered": note("AUTH_BYPASS", "A field of the initial message was modified in transit."),
    "LowOrderKey": note("CONFIDENTIALITY", "An X25519 key of small order."),
    "NonCanonicalKey": note("EDGE_CASE", "An X25519 key encoded at or above 2^255 - 19."),
    "InvalidKey": note("MODIFIED_PARAMETER", "An identity or ML-KEM key that fails validation."),
    "Policy": note("DEFINED", "A configuration policy (allow_x3dh, require_header_encryption)."),
    "Malformed": note("MODIFIED_PARAMETER", "The input does not decode."),
    "MixedOrderKey": note(
        "EDGE_CASE",
        "The initiator identity key is replaced by the initiator's own key plus a point of "
        "small order: canonical and on the curve, but not in the prime-order subgroup "
        "(identity_keys.json, MixedOrder). The responder must refuse it before any DH "
        "(spec/handshake.md [REQ-HS-20]): handshake_failed. One that skips the check computes "
        "the same DH outputs (X25519 clamping removes the small-order part) and fails only at "
        "the session id, with auth_failed.",
    ),
    "InvalidRatchetKey": note(
        "CONFIDENTIALITY",
        "The first message's clear header carries the ratchet key 0^32, X25519 of which is all "
        "zero (spec/primitives.md [REQ-PRIM-04]). The handshake itself succeeds; the first "
        "decryption refuses the key with auth_failed, which accept_session reports "
        "(spec/handshake.md section 7 step 13; spec/ratchet.md section 6 step 9), with the "
        "account unchanged. The ciphertext is sealed with the message key that the all-zero DH "
        "output leads to, so a responder that does not reject the key accepts the message.",
    ),
    "ReplayMemory": note(
        "AUTH_BYPASS",
        "Before the test, Bob accepted MAX_BASE_KEYS_PER_PREKEY - 1 = 999 first messages "
        "without a one-time prekey on one signed prekey, each with its own base key. The "
        "responder must remember every one of those base keys for as long as it keeps the "
        "signed prekey, and must not evict any (spec/handshake.md [REQ-HS-24]): a responder "
        "with a smaller or evicting memory (an LRU of a few hundred keys) accepts the first "
        "of them again.",
    ),
    "AutomaticRotation": note(
        "FUNCTIONALITY",
        "The 1,000th remembered base key fills the current signed prekey's replay memory, and "
        "accepting that message rotates the signed prekey (spec/handshake.md [REQ-HS-22], "
        "[REQ-HS-24], section 9): its random values list the new signed prekey's key, the "
        "next bundle names the new signed prekey, and the replaced one stays for its grace "
        "period. A responder that never rotates, or rotates one message early or late, "
        "differs in the random values or in the bundle.",
    ),
    "FullReplayMemory": note(
        "DEFINED",
        "The replaced signed prekey's replay memory is full (1,000 base keys). A fresh first "
        "message without a one-time prekey for it must be refused with handshake_failed, a "
        "replayed one with duplicate_message (the duplicate check comes first: "
        "spec/handshake.md section 7 step 7, [REQ-HS-19]), both with the account unchanged; "
        "a first message that uses a one-time prekey is accepted and remembers nothing.",
    ),
}

# --- crafting bundles and initial messages ----------------------------------------------------


def _seed(sc: Scenario, party: str) -> bytes:
    return sc.account(party)._identity_seed


def resign(bundle: PreKeyBundle, seed: bytes) -> PreKeyBundle:
    """Re-sign every key of a bundle with ``seed`` (as a misbehaving server cannot)."""
    out = replace(
        bundle,
        signed_prekey_signature=ref.ed25519_sign(
            seed,
            spk_payload(
                bundle.signed_prekey_id,
                bundle.signed_prekey_timestamp,
                bundle.signed_prekey,
                bundle.kem_prekey_id,
                bundle.kem_prekey,
            ),
        ),
    )
    if bundle.one_time_prekey is not None:
        assert bundle.one_time_prekey_id is not None
        out = replace(
            out,
            one_time_prekey_signature=ref.ed25519_sign(
                seed, opk_payload(bundle.one_time_prekey_id, bundle.one_time_prekey)
            ),
        )
    if bundle.one_time_kem_prekey is not None:
        assert bundle.one_time_kem_prekey_id is not None
        out = replace(
            out,
            one_time_kem_prekey_signature=ref.ed25519_sign(
                seed, okem_payload(bundle.one_time_kem_prekey_id, bundle.one_time_kem_prekey)
            ),
        )
    return out


def strip(
    bundle: PreKeyBundle, *, one_time: bool = False, one_time_kem: bool = False, kem: bool = False
) -> PreKeyBundle:
    out = bundle
    if one_time:
        out = replace(
            out, one_time_prekey_id=None, one_time_prekey=None, one_time_prekey_signature=None
        )
    if one_time_kem or kem:
        out = replace(
            out,
            one_time_kem_prekey_id=None,
            one_time_kem_prekey=None,
            one_time_kem_prekey_signature=None,
        )
    if kem:
        out = replace(out, kem_prekey_id=None, kem_prekey=None)
    return out


def rebuild(
    message: bytes,
    *,
    fields: Mapping[str, Any] | None = None,
    parts: Mapping[str, bytes] | None = None,
    initial: bool = True,
) -> bytes:
    """Re-encode a message with some initial ``fields`` (InitialFields attribute names) or
    ``parts`` (session_id, header, ciphertext) replaced; nothing is re-authenticated."""
    parsed = parse_message(message)
    initial_fields: InitialFields | None = parsed.initial
    if initial_fields is not None and fields:
        initial_fields = replace(initial_fields, **fields)
    parts = parts or {}
    encoded = initial_fields.encode() if (initial_fields is not None and initial) else None
    return (
        message_prefix(parts.get("session_id", parsed.session_id), encoded)
        + codec.encode_bytes(parts.get("header", parsed.header))
        + codec.encode_bytes(parts.get("ciphertext", parsed.ciphertext))
    )


def bundle_of(sc: Scenario) -> PreKeyBundle:
    return PreKeyBundle.from_bytes(sc.memo["bundle"])


# --- groups ---------------------------------------------------------------------------------


def _pq_setup(sc: Scenario) -> None:
    sc.generate_account("bob")
    sc.one_time_prekeys("bob", 2)
    sc.memo["bundle"] = sc.bundle("bob")
    sc.generate_account("alice")


def _x3dh_setup(sc: Scenario) -> None:
    sc.generate_account("bob", post_quantum=False)
    sc.one_time_prekeys("bob", 2)
    sc.memo["bundle"] = sc.bundle("bob")
    sc.generate_account("alice")


def _handshake(
    sc: Scenario,
    bundle: bytes,
    *,
    header_encryption: bool = True,
    allow_x3dh: bool = False,
    now: int = NOW,
    accept_now: int = NOW,
    require: bool = False,
) -> None:
    sc.start("alice", bundle, header_encryption=header_encryption, allow_x3dh=allow_x3dh, now=now)
    first = sc.encrypt("alice", b"Hello Bob, this is Alice.")
    sc.accept("bob", first, now=accept_now, require_header_encryption=require)
    sc.decrypt("alice", sc.encrypt("bob", b"Hi Alice!"))


def _c(name: str, comment: str, flags: list[str], run: TestFn) -> ScenarioCase:
    return ScenarioCase(name, comment, flags, run)


def pqxdh_cases() -> list[ScenarioCase]:
    def full(he: bool) -> TestFn:
        return lambda sc: _handshake(sc, sc.memo["bundle"], header_encryption=he)

    def stripped(he: bool, *, one_time: bool = False, one_time_kem: bool = False) -> TestFn:
        return lambda sc: _handshake(
            sc,
            strip(bundle_of(sc), one_time=one_time, one_time_kem=one_time_kem).to_bytes(),
            header_encryption=he,
        )

    def delayed(sc: Scenario) -> None:
        sc.start("alice", sc.memo["bundle"])
        first = sc.encrypt("alice", b"first")
        second = sc.encrypt("alice", b"second")
        sc.accept("bob", second, comment="the second initial-form message arrives first")
        sc.decrypt("bob", first, comment="the first one goes to the session bob now holds")
        sc.decrypt("alice", sc.encrypt("bob", b"got both"))
        sc.decrypt("bob", sc.encrypt("alice", b"normal form from now on"))

    def grace(sc: Scenario) -> None:
        sc.start("alice", sc.memo["bundle"])
        first = sc.encrypt("alice", b"sent before the rotation")
        sc.rotate("bob", now=NOW + 3600)
        sc.accept("bob", first, now=NOW + 3600 + limits.SIGNED_PREKEY_GRACE_PERIOD)
        sc.decrypt("alice", sc.encrypt("bob", b"still fine"))

    def second_bundle(sc: Scenario) -> None:
        _handshake(sc, sc.bundle("bob"))

    def saved_account(sc: Scenario) -> None:
        sc.start("alice", sc.memo["bundle"])
        first = sc.encrypt("alice", b"hello")
        state = sc.save_account("bob")
        sc.load_account("bob", state)
        sc.accept("bob", first)
        sc.decrypt("alice", sc.encrypt("bob", b"restored and replying"))

    return [
        _c(
            "full-he",
            "PQXDH with one-time X25519 and ML-KEM prekeys, header encryption on",
            ["Pqxdh", "OneTimePrekey", "OneTimeKemPrekey", "HeaderEncryption"],
            full(True),
        ),
        _c(
            "full-plain",
            "PQXDH with one-time X25519 and ML-KEM prekeys, header encryption off",
            ["Pqxdh", "OneTimePrekey", "OneTimeKemPrekey", "NoHeaderEncryption"],
            full(False),
        ),
        _c(
            "last-resort-kem",
            "PQXDH with a one-time X25519 prekey and the last-resort ML-KEM prekey",
            ["Pqxdh", "OneTimePrekey", "LastResortKem", "HeaderEncryption"],
            stripped(True, one_time_kem=True),
        ),
        _c(
            "kem-only",
            "PQXDH with a one-time ML-KEM prekey and no one-time X25519 prekey",
            ["Pqxdh", "OneTimeKemPrekey", "HeaderEncryption"],
            stripped(True, one_time=True),
        ),
        _c(
            "no-one-time-he",
            "PQXDH without one-time prekeys, header encryption on",
            ["Pqxdh", "LastResortKem", "HeaderEncryption"],
            stripped(True, one_time=True, one_time_kem=True),
        ),
        _c(
            "no-one-time-plain",
            "PQXDH without one-time prekeys, header encryption off",
            ["Pqxdh", "LastResortKem", "NoHeaderEncryption"],
            stripped(False, one_time=True, one_time_kem=True),
        ),
        _c(
            "delayed-initial",
            "two initial-form messages; the second arrives first",
            ["Pqxdh", "DelayedInitial"],
            delayed,
        ),
        _c(
            "grace-period",
            "the signed prekey was rotated; a message for the old one arrives "
            "at the end of the grace period",
            ["Pqxdh", "Rotation", "ClockBoundary"],
            grace,
        ),
        _c(
            "oldest-bundle",
            "the signed prekey is exactly MAX_SIGNED_PREKEY_AGE old",
            ["Pqxdh", "ClockBoundary"],
            lambda sc: _handshake(sc, sc.memo["bundle"], now=NOW + limits.MAX_SIGNED_PREKEY_AGE),
        ),
        _c(
            "future-bundle",
            "the signed prekey is dated MAX_SIGNED_PREKEY_FUTURE_SKEW ahead",
            ["Pqxdh", "ClockBoundary"],
            lambda sc: _handshake(
                sc, sc.memo["bundle"], now=NOW - limits.MAX_SIGNED_PREKEY_FUTURE_SKEW
            ),
        ),
        _c(
            "require-he",
            "the responder requires header encryption and gets it",
            ["Pqxdh", "Policy", "HeaderEncryption"],
            lambda sc: _handshake(sc, sc.memo["bundle"], require=True),
        ),
        _c(
            "second-bundle",
            "a second bundle hands out the next one-time prekeys",
            ["Pqxdh", "OneTimePrekey", "OneTimeKemPrekey"],
            second_bundle,
        ),
        _c(
            "saved-account",
            "the responder's account is saved and restored before accepting",
            ["Pqxdh", "Persistence"],
            saved_account,
        ),
    ]


def pqxdh_file() -> JSON:
    return envelope(
        schema="e2ee_scenario_schema_v1.json",
        algorithm="PQXDH",
        header=["PQXDH handshakes that succeed.", *SCENARIO_HEADER],
        notes=HANDSHAKE_NOTES,
        groups=[
            scenario_group(
                "handshake/pqxdh",
                "Bob: post-quantum account with two one-time prekey pairs; Alice: an account",
                _pq_setup,
                pqxdh_cases(),
            )
        ],
    )


def x3dh_file() -> JSON:
    def run(he: bool, one_time: bool) -> TestFn:
        def go(sc: Scenario) -> None:
            bundle = bundle_of(sc) if one_time else strip(bundle_of(sc), one_time=True)
            _handshake(sc, bundle.to_bytes(), header_encryption=he, allow_x3dh=True)

        return go

    def not_allowed(sc: Scenario) -> None:
        sc.start(
            "alice",
            sc.memo["bundle"],
            error="handshake_failed",
            comment="allow_x3dh is off and the bundle has no ML-KEM prekey",
        )

    def replay(with_one_time: bool) -> TestFn:
        def go(sc: Scenario) -> None:
            bundle = bundle_of(sc) if with_one_time else strip(bundle_of(sc), one_time=True)
            sc.start("alice", bundle.to_bytes(), allow_x3dh=True)
            first = sc.encrypt("alice", b"once")
            sc.accept("bob", first)
            sc.accept(
                "bob",
                first,
                error="handshake_failed" if with_one_time else "duplicate_message",
                comment="the same initial message again",
            )

        return go

    def claims_kem(sc: Scenario) -> None:
        sc.start("alice", sc.memo["bundle"], allow_x3dh=True)
        first = sc.encrypt("alice", b"x3dh")
        forged = rebuild(first, fields={"kem_prekey_id": 2, "kem_ciphertext": bytes(1568)})
        sc.accept(
            "bob",
            forged,
            error="handshake_failed",
            comment="names an ML-KEM prekey a classic account does not have",
        )
        sc.accept("bob", first)

    cases = [
        _c(
            "opk-he",
            "X3DH with a one-time prekey, header encryption on",
            ["X3dh", "OneTimePrekey", "HeaderEncryption"],
            run(True, True),
        ),
        _c(
            "opk-plain",
            "X3DH with a one-time prekey, header encryption off",
            ["X3dh", "OneTimePrekey", "NoHeaderEncryption"],
            run(False, True),
        ),
        _c(
            "no-opk-he",
            "X3DH without a one-time prekey, header encryption on",
            ["X3dh", "HeaderEncryption"],
            run(True, False),
        ),
        _c(
            "no-opk-plain",
            "X3DH without a one-time prekey, header encryption off",
            ["X3dh", "NoHeaderEncryption"],
            run(False, False),
        ),
        _c("not-allowed", "the initiator does not allow X3DH", ["X3dh", "Policy"], not_allowed),
        _c(
            "replay-no-opk",
            "an X3DH initial message without one-time prekey, replayed",
            ["X3dh", "Replay"],
            replay(False),
        ),
        _c(
            "replay-opk",
            "an X3DH initial message with a one-time prekey, replayed (the "
            "one-time prekey is gone)",
            ["X3dh", "Replay", "UnknownPrekey"],
            replay(True),
        ),
        _c(
            "claims-kem",
            "an initial message naming an ML-KEM prekey of a classic account",
            ["X3dh", "UnknownPrekey"],
            claims_kem,
        ),
    ]
    return envelope(
        schema="e2ee_scenario_schema_v1.json",
        algorithm="X3DH",
        header=[
            "Classic X3DH handshakes (opt-in fallback) and their rejections.",
            *SCENARIO_HEADER,
        ],
        notes=HANDSHAKE_NOTES,
        groups=[
            scenario_group(
                "handshake/x3dh",
                "Bob: classic account (no ML-KEM) with two one-time prekeys; Alice: an account",
                _x3dh_setup,
                cases,
            )
        ],
    )


# --- rejections ---------------------------------------------------------------------------------


def _initiator_rejection(
    craft: InitiatorCraft, error: str, allow_x3dh: bool = False, now: int = NOW
) -> TestFn:
    def go(sc: Scenario) -> None:
        bundle = craft(sc)
        data = bundle if isinstance(bundle, bytes) else bundle.to_bytes()
        sc.start("alice", data, allow_x3dh=allow_x3dh, now=now, error=error)

    return go


def _responder_setup(sc: Scenario) -> None:
    _pq_setup(sc)
    sc.start("alice", sc.memo["bundle"])
    sc.memo["first"] = sc.encrypt("alice", b"Hello Bob")


def _responder_rejection(
    craft: ResponderCraft, error: str, *, require: bool = False, then_genuine: bool = False
) -> TestFn:
    def go(sc: Scenario) -> None:
        first = sc.memo["first"]
        forged = craft(sc, first)
        sc.accept("bob", forged, require_header_encryption=require, error=error)
        if then_genuine:
            sc.accept("bob", first, comment="the genuine message is still accepted")

    return go


def rejections_file() -> JSON:
    low_order = (0).to_bytes(32, "little")
    order8 = bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")
    non_canonical = (2**255 - 19 + 9).to_bytes(32, "little")

    def seed(sc: Scenario) -> bytes:
        return _seed(sc, "bob")

    def flip_sig(field: str) -> InitiatorCraft:
        def craft(sc: Scenario) -> PreKeyBundle:
            b = bundle_of(sc)
            changes: dict[str, Any] = {field: flip(getattr(b, field), 5)}
            return replace(b, **changes)

        return craft

    def swapped_purpose(sc: Scenario) -> PreKeyBundle:
        b = bundle_of(sc)
        assert b.one_time_prekey_id is not None
        assert b.one_time_prekey is not None
        return replace(
            b,
            one_time_prekey_signature=ref.ed25519_sign(
                seed(sc), okem_payload(b.one_time_prekey_id, b.one_time_prekey)
            ),
        )

    def other_identity(sc: Scenario) -> PreKeyBundle:
        carol = ref.ed25519_public_key(rnd("rejections", "carol identity"))
        return replace(bundle_of(sc), identity_key=carol)

    def resigned(**changes: Any) -> InitiatorCraft:
        def craft(sc: Scenario) -> PreKeyBundle:
            return resign(replace(bundle_of(sc), **changes), seed(sc))

        return craft

    def small_order_identity(sc: Scenario) -> PreKeyBundle:
        return replace(bundle_of(sc), identity_key=ref.ed25519_small_order_points()[3])

    def bad_kem_key(sc: Scenario) -> PreKeyBundle:
        b = bundle_of(sc)
        assert b.one_time_kem_prekey is not None
        key = bytearray(b.one_time_kem_prekey)
        key[0], key[1] = 0xFF, key[1] | 0x0F  # coefficient 0 = 4095 >= q
        return resign(replace(b, one_time_kem_prekey=bytes(key)), seed(sc))

    def msg(**changes: Any) -> ResponderCraft:
        return lambda sc, first: rebuild(first, fields=changes)

    def flip_field(name: str, index: int = 0) -> ResponderCraft:
        def craft(sc: Scenario, first: bytes) -> bytes:
            fields = parse_message(first).initial
            assert fields is not None
            return rebuild(first, fields={name: flip(getattr(fields, name), index)})

        return craft

    def flip_part(part: str, index: int) -> ResponderCraft:
        def craft(sc: Scenario, first: bytes) -> bytes:
            parsed = parse_message(first)
            return rebuild(first, parts={part: flip(getattr(parsed, part), index)})

        return craft

    def downgrade_he(sc: Scenario, first: bytes) -> bytes:
        parsed = parse_message(first)
        return rebuild(
            first, fields={"header_encryption": False}, parts={"header": parsed.header[:40]}
        )

    def normal_form(sc: Scenario, first: bytes) -> bytes:
        return rebuild(first, initial=False)

    def other_initiator(sc: Scenario, first: bytes) -> bytes:
        mallory = ref.ed25519_public_key(rnd("rejections", "mallory"))
        return rebuild(first, fields={"identity_key": mallory})

    def stale(sc: Scenario) -> None:
        first = sc.memo["first"]
        sc.rotate("bob", now=NOW + 3600)
        sc.accept(
            "bob",
            first,
            now=NOW + 3600 + limits.SIGNED_PREKEY_GRACE_PERIOD + 1,
            error="handshake_failed",
            comment="the old signed prekey's grace period is over",
        )

    def x3dh_to_pq(sc: Scenario) -> None:
        stripped = resign(strip(bundle_of(sc), kem=True), seed(sc))
        sc.start(
            "alice",
            stripped.to_bytes(),
            allow_x3dh=True,
            comment="a bundle whose ML-KEM prekey was removed and which Bob's key signed",
        )
        first = sc.encrypt("alice", b"classic")
        sc.accept(
            "bob",
            first,
            error="handshake_failed",
            comment="an X3DH initial message for a signed prekey that has an ML-KEM companion",
        )

    def replay(one_time: bool) -> TestFn:
        def go(sc: Scenario) -> None:
            if one_time:
                first = sc.memo["first"]
            else:
                b = strip(bundle_of(sc), one_time=True, one_time_kem=True)
                sc.start("alice", b.to_bytes())
                first = sc.encrypt("alice", b"once only")
            sc.accept("bob", first)
            sc.accept(
                "bob",
                first,
                error="handshake_failed" if one_time else "duplicate_message",
                comment="the same initial message again",
            )

        return go

    def mixed_order_initiator(sc: Scenario, first: bytes) -> bytes:
        torsion = ref.ed25519_small_order_points()[3]
        mixed = ref.ed25519_mixed_order_key(_seed(sc, "alice"), torsion)
        return rebuild(first, fields={"identity_key": mixed})

    def zero_ratchet_key_first(sc: Scenario) -> None:
        sc.start("alice", sc.memo["bundle"], header_encryption=False)
        first = sc.encrypt("alice", b"Hello Bob")
        handshake = next(s for s in reversed(sc.steps) if s["op"] == "start_session")
        secrets = handshake["expect"]["handshake"]
        root_key = bytes.fromhex(secrets["rootKey"])
        ad = bytes.fromhex(secrets["associatedData"])
        parsed = parse_message(first)
        assert parsed.initial is not None
        header = bytes(32) + parsed.header[32:]  # PN = N = 0
        # the responder starts with RK = SK and DHs = its signed prekey (spec/ratchet.md 3)
        unchecked_dh = ref.x25519(bytes(32), bytes(32))  # all zero, whatever the scalar
        message_key = _kdf_ck(_kdf_rk(root_key, unchecked_dh)[1])[1]
        prefix = message_prefix(parsed.session_id, parsed.initial.encode())
        sc.accept(
            "bob",
            forge_message(prefix, header, message_key, b"from ratchet key zero", ad),
            error="auth_failed",
            comment="the first message's clear header has the ratchet key 0^32",
        )
        sc.accept("bob", first, comment="the genuine message is still accepted")

    def require_he(sc: Scenario) -> None:
        sc.start("alice", sc.memo["bundle"], header_encryption=False)
        first = sc.encrypt("alice", b"no header encryption")
        sc.accept("bob", first, require_header_encryption=True, error="handshake_failed")
        sc.accept("bob", first)

    i = _initiator_rejection
    r = _responder_rejection
    B = ["BadSignature"]
    initiator = [
        _c(
            "spk-signature",
            "signed prekey signature modified",
            B,
            i(flip_sig("signed_prekey_signature"), "signature_invalid"),
        ),
        _c(
            "opk-signature",
            "one-time prekey signature modified",
            B,
            i(flip_sig("one_time_prekey_signature"), "signature_invalid"),
        ),
        _c(
            "okem-signature",
            "one-time ML-KEM prekey signature modified",
            B,
            i(flip_sig("one_time_kem_prekey_signature"), "signature_invalid"),
        ),
        _c(
            "kem-stripped",
            "ML-KEM prekeys removed from the bundle, signatures kept",
            ["KemStripped", "BadSignature"],
            i(lambda sc: strip(bundle_of(sc), kem=True), "signature_invalid", allow_x3dh=True),
        ),
        _c(
            "kem-stripped-resigned",
            "ML-KEM prekeys removed and the bundle re-signed; the initiator does not allow X3DH",
            ["KemStripped", "Policy"],
            i(lambda sc: resign(strip(bundle_of(sc), kem=True), seed(sc)), "handshake_failed"),
        ),
        _c(
            "wrong-purpose",
            "the one-time prekey signed with the one-time ML-KEM label",
            B,
            i(swapped_purpose, "signature_invalid"),
        ),
        _c(
            "other-identity",
            "the bundle's identity key replaced by another one",
            B,
            i(other_identity, "signature_invalid"),
        ),
        _c(
            "timestamp-changed",
            "signed prekey timestamp changed without re-signing",
            B,
            i(
                lambda sc: replace(bundle_of(sc), signed_prekey_timestamp=NOW + 1),
                "signature_invalid",
            ),
        ),
        _c(
            "too-old",
            "signed prekey one second older than MAX_SIGNED_PREKEY_AGE",
            ["StalePrekey"],
            i(
                lambda sc: bundle_of(sc),
                "handshake_failed",
                now=NOW + limits.MAX_SIGNED_PREKEY_AGE + 1,
            ),
        ),
        _c(
            "future",
            "signed prekey dated one second beyond MAX_SIGNED_PREKEY_FUTURE_SKEW",
            ["StalePrekey"],
            i(
                lambda sc: bundle_of(sc),
                "handshake_failed",
                now=NOW - limits.MAX_SIGNED_PREKEY_FUTURE_SKEW - 1,
            ),
        ),
        _c(
            "low-order-spk",
            "signed prekey u = 0 (validly signed)",
            ["LowOrderKey"],
            i(resigned(signed_prekey=low_order), "handshake_failed"),
        ),
        _c(
            "order8-spk",
            "signed prekey of order 8 (validly signed)",
            ["LowOrderKey"],
            i(resigned(signed_prekey=order8), "handshake_failed"),
        ),
        _c(
            "low-order-opk",
            "one-time prekey of order 8 (validly signed)",
            ["LowOrderKey"],
            i(resigned(one_time_prekey=order8), "handshake_failed"),
        ),
        _c(
            "non-canonical-spk",
            "signed prekey p + 9 (validly signed)",
            ["NonCanonicalKey"],
            i(resigned(signed_prekey=non_canonical), "handshake_failed"),
        ),
        _c(
            "small-order-identity",
            "bundle identity key of small order",
            ["InvalidKey"],
            i(small_order_identity, "handshake_failed"),
        ),
        _c(
            "bad-kem-key",
            "one-time ML-KEM prekey fails the modulus check (validly signed)",
            ["InvalidKey"],
            i(bad_kem_key, "handshake_failed"),
        ),
        _c(
            "malformed-bundle",
            "the bundle has a trailing byte",
            ["Malformed"],
            i(lambda sc: sc.memo["bundle"] + b"\x00", "decode_error"),
        ),
    ]
    responder = [
        _c(
            "x3dh-to-pq",
            "X3DH initial message for a post-quantum signed prekey",
            ["KemStripped"],
            x3dh_to_pq,
        ),
        _c(
            "kem-fields-removed",
            "ML-KEM id and ciphertext removed from the initial message",
            ["KemStripped", "Tampered"],
            r(msg(kem_prekey_id=None, kem_ciphertext=None), "handshake_failed"),
        ),
        _c(
            "unknown-spk",
            "unknown signed prekey id",
            ["UnknownPrekey"],
            r(msg(signed_prekey_id=99), "handshake_failed", then_genuine=True),
        ),
        _c(
            "unknown-opk",
            "unknown one-time prekey id",
            ["UnknownPrekey"],
            r(msg(one_time_prekey_id=99), "handshake_failed"),
        ),
        _c(
            "unknown-kem",
            "unknown ML-KEM prekey id",
            ["UnknownPrekey"],
            r(msg(kem_prekey_id=99), "handshake_failed"),
        ),
        _c(
            "stale-spk",
            "signed prekey retired beyond the grace period",
            ["StalePrekey", "Rotation"],
            stale,
        ),
        _c(
            "replay-opk",
            "initial message replayed: its one-time prekeys are used up",
            ["Replay", "UnknownPrekey"],
            replay(True),
        ),
        _c(
            "replay-no-opk",
            "initial message without one-time prekeys replayed",
            ["Replay"],
            replay(False),
        ),
        _c(
            "tampered-ciphertext",
            "a bit of the first message's ciphertext flipped",
            ["Tampered"],
            r(flip_part("ciphertext", 3), "auth_failed", then_genuine=True),
        ),
        _c(
            "tampered-header",
            "a bit of the encrypted header flipped",
            ["Tampered"],
            r(flip_part("header", 30), "auth_failed"),
        ),
        _c(
            "tampered-base-key",
            "a bit of the base key flipped",
            ["Tampered"],
            r(flip_field("base_key"), "auth_failed"),
        ),
        _c(
            "tampered-kem-ciphertext",
            "a bit of the ML-KEM ciphertext flipped",
            ["Tampered"],
            r(flip_field("kem_ciphertext", 100), "auth_failed"),
        ),
        _c(
            "tampered-session-id",
            "a bit of the session id flipped",
            ["Tampered"],
            r(flip_part("session_id", 0), "auth_failed"),
        ),
        _c(
            "other-initiator",
            "the initiator identity key replaced by another valid key",
            ["Tampered"],
            r(other_initiator, "auth_failed"),
        ),
        _c(
            "he-downgrade",
            "header encryption switched off in transit (header cut to 40 bytes)",
            ["Tampered"],
            r(downgrade_he, "auth_failed"),
        ),
        _c(
            "low-order-base-key",
            "base key u = 0",
            ["LowOrderKey"],
            r(msg(base_key=low_order), "handshake_failed"),
        ),
        _c(
            "order8-base-key",
            "base key of order 8",
            ["LowOrderKey"],
            r(msg(base_key=order8), "handshake_failed"),
        ),
        _c(
            "non-canonical-base-key",
            "base key p + 9",
            ["NonCanonicalKey"],
            r(msg(base_key=non_canonical), "handshake_failed"),
        ),
        _c(
            "small-order-initiator",
            "initiator identity key of small order",
            ["InvalidKey"],
            r(msg(identity_key=ref.ed25519_small_order_points()[3]), "handshake_failed"),
        ),
        _c(
            "require-he",
            "the responder requires header encryption, the message has none",
            ["Policy"],
            require_he,
        ),
        _c(
            "normal-form",
            "a normal message handed to accept_session",
            ["Malformed"],
            r(normal_form, "handshake_failed"),
        ),
        _c(
            "version",
            "initial message with protocol version 2",
            ["Malformed"],
            r(lambda sc, first: b"\x8c\x02" + first[2:], "unsupported_version"),
        ),
        _c(
            "mixed-order-initiator",
            "initiator identity key of mixed order (its own key plus a point of order 8)",
            ["InvalidKey", "MixedOrderKey"],
            r(mixed_order_initiator, "handshake_failed", then_genuine=True),
        ),
        _c(
            "zero-ratchet-key-first",
            "header encryption off; the first message's ratchet key is 0^32",
            ["NoHeaderEncryption", "InvalidRatchetKey"],
            zero_ratchet_key_first,
        ),
    ]
    return envelope(
        schema="e2ee_scenario_schema_v1.json",
        algorithm="PQXDH",
        header=[
            "Handshakes that must fail, on the initiator's side (start_session with a "
            "bad bundle) or the responder's (accept_session with a bad initial message; the "
            "account must be unchanged; some tests then accept the genuine message).",
            *SCENARIO_HEADER,
        ],
        notes=HANDSHAKE_NOTES,
        groups=[
            scenario_group(
                "handshake/rejections/initiator",
                "Bob: post-quantum account with "
                "two one-time prekey pairs and his bundle; Alice: an account",
                _pq_setup,
                initiator,
            ),
            scenario_group(
                "handshake/rejections/responder",
                "as above, and Alice has started "
                "a session from Bob's bundle and encrypted her first message",
                _responder_setup,
                responder,
            ),
        ],
    )


# --- replay memory ------------------------------------------------------------------------------

REPLAY_MEMORY = "handshake/replay-memory"


def _first_message(sc: Scenario, number: int) -> bytes:
    """Alice's first message number ``number`` for Bob's first bundle: X3DH, no one-time
    prekey, header encryption off, plaintext ``#<number>``, and a base key of its own (the
    values are labelled in a namespace per number, so message n is the same in every test).
    Only Bob's accept_session is recorded: 1,000 recorded start_session steps would make the
    file several times larger and test nothing about the responder's memory. Each test's
    setup asks for the same 999 messages again: they are made once (a pure function of the
    key below)."""
    alice = sc.account("alice")
    key = (alice.identity_key, sc.memo["bundle"], number)
    if key not in _FIRST_MESSAGES:
        _FIRST_MESSAGES[key] = _make_first_message(sc, number)
    return _FIRST_MESSAGES[key]


_FIRST_MESSAGES: dict[tuple[bytes, bytes, int], bytes] = {}


def _make_first_message(sc: Scenario, number: int) -> bytes:
    provider = LabelledRecorder(f"{REPLAY_MEMORY}/first message #{number}")
    provider.expect(["alice base key private", "alice ratchet key #1 private"])
    session = sc.account("alice").start_session(
        PreKeyBundle.from_bytes(sc.memo["bundle"]),
        config=SessionConfig(header_encryption=False, allow_x3dh=True),
        provider=provider,
        now=NOW,
    )
    message = session.encrypt(b"#%d" % number, provider=provider)
    provider.take()
    return message


def _replay_memory_setup(sc: Scenario) -> None:
    sc.generate_account(
        "bob",
        post_quantum=False,
        comment="classic, so that the first messages are small X3DH ones; no one-time prekeys",
    )
    sc.memo["bundle"] = sc.bundle("bob")
    sc.generate_account("alice", post_quantum=False)
    last = limits.MAX_BASE_KEYS_PER_PREKEY - 1
    for number in range(1, last + 1):
        comment = ""
        if number == 1:
            comment = (
                f"first messages #1 to #{last}: X3DH to signed prekey 1, no one-time prekey, "
                "each with a base key of its own; expect lists plaintext and session id only"
            )
        sc.accept("bob", _first_message(sc, number), debug=False, comment=comment)
    again = sc.bundle(
        "bob", comment=f"{last} base keys remembered: no rotation yet, the same bundle"
    )
    if again != sc.memo["bundle"]:  # pragma: no cover - intent guard
        raise IntentError(f"{REPLAY_MEMORY}: the signed prekey changed before its memory was full")


def _fill(sc: Scenario) -> None:
    """Accept first message #1000: the signed prekey's memory is full and it is replaced."""
    sc.accept(
        "bob",
        _first_message(sc, limits.MAX_BASE_KEYS_PER_PREKEY),
        debug=False,
        rotates=True,
        comment="the 1,000th base key fills signed prekey 1's replay memory: Bob rotates "
        "(random: the new signed prekey's private key)",
    )


def replay_memory_cases() -> list[ScenarioCase]:
    """Three cases, not one per check: each replays the 1,003 steps of the setup, and the
    whole file is replayed by every run of ``vectors verify`` and of the conformance runner.
    Checks with the same outcome share a case (a case has at most one error category)."""
    full = limits.MAX_BASE_KEYS_PER_PREKEY

    def replay(sc: Scenario) -> None:
        sc.accept(
            "bob",
            _first_message(sc, 1),
            error="duplicate_message",
            comment=f"first message #1 again, after {full - 2} later base keys: an evicting "
            "memory has forgotten it",
        )
        _fill(sc)
        for number in (1, full):
            sc.accept(
                "bob",
                _first_message(sc, number),
                error="duplicate_message",
                comment=f"first message #{number} again, now that signed prekey 1 is "
                "replaced and its memory full: the duplicate check comes before the "
                "capacity check",
            )

    def rotation(sc: Scenario) -> None:
        _fill(sc)
        sc.one_time_prekeys("bob", 1)
        bundle = sc.bundle("bob", comment="names the new signed prekey 2 (and one-time prekey 3)")
        new = PreKeyBundle.from_bytes(bundle)
        if new.signed_prekey_id == bundle_of(sc).signed_prekey_id:
            raise IntentError(f"{REPLAY_MEMORY}: the bundle still names the old signed prekey")
        sc.start(
            "alice",
            strip(new, one_time=True).to_bytes(),
            header_encryption=False,
            allow_x3dh=True,
            comment="the new signed prekey 2 without the one-time prekey",
        )
        first = sc.encrypt("alice", b"to the new signed prekey")
        sc.accept(
            "bob",
            first,
            comment="signed prekey 2 has a memory of its own, and it is empty",
        )
        sc.decrypt("alice", sc.encrypt("bob", b"hi"))
        assembled = replace(
            bundle_of(sc),
            one_time_prekey_id=new.one_time_prekey_id,
            one_time_prekey=new.one_time_prekey,
            one_time_prekey_signature=new.one_time_prekey_signature,
        )
        sc.start(
            "alice",
            assembled.to_bytes(),
            header_encryption=False,
            allow_x3dh=True,
            comment="the replaced signed prekey 1 with Bob's one-time prekey 3 (each keeps "
            "its own valid signature, as a relay may assemble bundles)",
            base_key_label="alice base key #2 private",
        )
        first = sc.encrypt("alice", b"with a one-time prekey")
        sc.accept(
            "bob",
            first,
            comment="uses a one-time prekey: accepted although signed prekey 1's memory is full",
        )
        sc.decrypt("alice", sc.encrypt("bob", b"hi again"))

    def fresh_on_full(sc: Scenario) -> None:
        _fill(sc)
        sc.accept(
            "bob",
            _first_message(sc, full + 1),
            error="handshake_failed",
            comment=f"first message #{full + 1}: a new base key for the replaced signed "
            "prekey 1, whose memory is full (within its grace period)",
        )

    return [
        _c(
            "replay",
            f"first message #1 replayed after {full - 1} first messages without a one-time "
            "prekey to one signed prekey, and again (with #1000) once #1000 has filled the "
            "memory",
            ["X3dh", "Replay", "ReplayMemory", "FullReplayMemory"],
            replay,
        ),
        _c(
            "rotation",
            "the 1,000th first message fills the memory and rotates the signed prekey; the "
            "new one accepts a first message, and the replaced one still accepts one that "
            "uses a one-time prekey",
            ["X3dh", "OneTimePrekey", "ReplayMemory", "AutomaticRotation", "FullReplayMemory"],
            rotation,
        ),
        _c(
            "full-memory-refuses-new",
            "a new first message without a one-time prekey for the replaced signed prekey "
            "whose memory is full",
            ["X3dh", "ReplayMemory", "FullReplayMemory"],
            fresh_on_full,
        ),
    ]


def replay_memory_file() -> JSON:
    return envelope(
        schema="e2ee_scenario_schema_v1.json",
        algorithm="X3DH",
        header=[
            "The replay memory of a signed prekey (spec/handshake.md section 8, [REQ-HS-19], "
            "[REQ-HS-22], [REQ-HS-24]): every base key of a first message without a one-time "
            "prekey is remembered, none is evicted, the 1,000th fills the memory and rotates "
            "the signed prekey, and the replaced prekey then refuses new first messages "
            "without a one-time prekey. X3DH with a classic account keeps the file small; "
            "the memory is the same for PQXDH with the last-resort ML-KEM prekey.",
            "The setup's 999 accept_session steps list only plaintext and sessionId in "
            "`expect` (no handshake or ratchet debug outputs); their messages were made "
            "by Alice's account with start_session, which is not recorded.",
            *SCENARIO_HEADER,
        ],
        notes=HANDSHAKE_NOTES,
        groups=[
            scenario_group(
                REPLAY_MEMORY,
                "Bob: a classic account without one-time prekeys; Alice: a classic account. "
                "Bob has accepted first messages #1 to #999 of Alice (X3DH to signed prekey 1, "
                "no one-time prekey, each with a base key of its own); his bundle is unchanged",
                _replay_memory_setup,
                replay_memory_cases(),
            )
        ],
    )
