"""Generators of the conversation vectors: whole sessions after the handshake."""

from __future__ import annotations

import struct
from collections.abc import Callable

from e2ee import limits
from e2ee.vectors import reference as ref
from e2ee.vectors.common import JSON, envelope, note
from e2ee.vectors.gen_handshakes import SCENARIO_HEADER, rebuild
from e2ee.vectors.gen_kdf import _kdf_ck, _kdf_rk, _kdf_rk_he
from e2ee.vectors.gen_primitives import flip, forge_message, rnd
from e2ee.vectors.scenario_record import (
    Scenario,
    ScenarioCase,
    SetupFn,
    TestFn,
    scenario_group,
)
from e2ee.wire.messages import message_prefix, parse_message

_COUNTERS = struct.Struct(">II")
"""PN and N, as a clear header ends (spec/ratchet.md section 5)."""

CONVERSATION_NOTES = {
    "Pqxdh": note("BASIC", "The session was established with PQXDH."),
    "X3dh": note("BASIC", "The session was established with X3DH."),
    "HeaderEncryption": note("BASIC", "Header encryption is on."),
    "NoHeaderEncryption": note("BASIC", "Header encryption is off (headers in clear, MACed)."),
    "PingPong": note("BASIC", "Strict alternation: a DH ratchet step on every message."),
    "Burst": note("BASIC", "Several messages on one chain before the other side answers."),
    "PlaintextSize": note("EDGE_CASE", "Empty and block-boundary plaintexts."),
    "OutOfOrder": note(
        "FUNCTIONALITY",
        "Messages delivered in another order than sent: skipped message keys are stored and used.",
    ),
    "PreviousChain": note(
        "FUNCTIONALITY",
        "A late message of a previous receiving chain, found through PN at the DH step.",
    ),
    "SkipLimit": note(
        "DEFINED",
        f"Skipped-key limits: at most MAX_SKIP = {limits.MAX_SKIP} keys derived for one "
        f"message (too_many_skipped beyond), MAX_PREVIOUS_CHAIN_SKIP = "
        f"{limits.MAX_PREVIOUS_CHAIN_SKIP} for the rest of a previous chain, "
        f"MAX_SKIPPED_KEYS = {limits.MAX_SKIPPED_KEYS} stored (oldest evicted first), "
        f"MAX_RECEIVING_CHAINS = {limits.MAX_RECEIVING_CHAINS} remembered chains. A message "
        "whose key was discarded is reported as duplicate_message.",
    ),
    "Duplicate": note("AUTH_BYPASS", "A message delivered a second time (replay)."),
    "Tampered": note(
        "AUTH_BYPASS",
        "A message modified in transit: the session is unchanged "
        "and the genuine message still decrypts afterwards.",
    ),
    "WrongSession": note("AUTH_BYPASS", "A message of another session or direction."),
    "Malformed": note("MODIFIED_PARAMETER", "The message does not parse."),
    "HeaderKeyRotation": note(
        "FUNCTIONALITY",
        "Header keys change at every DH step; old header keys still open late messages.",
    ),
    "HeaderModeMismatch": note("MODIFIED_PARAMETER", "A header of the other mode's size."),
    "StateRestore": note(
        "FUNCTIONALITY",
        "The session is saved and restored mid-conversation (plain or sealed with a state key).",
    ),
    "CorruptState": note("MODIFIED_PARAMETER", "Saved state that must not load (state_corrupt)."),
    "MaxCounter": note(
        "EDGE_CASE",
        "A header (sealed under the receiver's current header key with header encryption) "
        "whose message number N is MAX_COUNTER = 2^32 - 1, on the receiver's current chain. "
        "spec/ratchet.md [REQ-DR-25]: refused with decode_error before any other step. A "
        "receiver that skips this rule refuses it as too_many_skipped instead.",
    ),
    "InvalidRatchetKey": note(
        "CONFIDENTIALITY",
        "A header (sealed under the receiver's next header key with header encryption) whose "
        "ratchet key is 32 zero bytes: X25519 with it is all zero (spec/primitives.md "
        "[REQ-PRIM-04]). On an established session the key is refused with auth_failed "
        "(spec/ratchet.md section 6 step 9) and the session is unchanged. The ciphertext is "
        "sealed with the message key that the all-zero DH output leads to, so a receiver that "
        "does not reject the key decrypts the message instead of refusing it.",
    ),
    "NoReceivingChain": note(
        "AUTH_BYPASS",
        "The initiator has not yet received a reply, so it has no receiving chain, and gets a "
        "clear header whose ratchet key is its DHr (the responder's signed prekey): the "
        "message names the current chain, which has no CKr. spec/ratchet.md [REQ-DR-14]: "
        "auth_failed, session unchanged. The ciphertext is sealed with the message key that a "
        "receiver treating the message as the start of a new chain (a DH ratchet step with "
        "DH(DHs, DHr)) would derive, so such a receiver decrypts it instead of refusing it.",
    ),
}

GREET = b"Hello Bob, this is Alice."


def _setup(post_quantum: bool, header_encryption: bool) -> SetupFn:
    def setup(sc: Scenario) -> None:
        sc.generate_account("bob", post_quantum=post_quantum)
        sc.one_time_prekeys("bob", 1)
        bundle = sc.bundle("bob")
        sc.generate_account("alice")
        sc.start("alice", bundle, header_encryption=header_encryption, allow_x3dh=not post_quantum)
        sc.memo["first"] = sc.encrypt("alice", GREET)
        sc.accept("bob", sc.memo["first"])
        sc.decrypt("alice", sc.encrypt("bob", b"Hi Alice!"))

    return setup


_SETUPS = {
    "pqxdh-he": (True, True),
    "pqxdh-plain": (True, False),
    "x3dh-he": (False, True),
    "x3dh-plain": (False, False),
}


def _flags(group: str) -> list[str]:
    pq, he = _SETUPS[group]
    return ["Pqxdh" if pq else "X3dh", "HeaderEncryption" if he else "NoHeaderEncryption"]


def _group(file: str, group: str, cases: list[ScenarioCase]) -> JSON:
    pq, he = _SETUPS[group]
    for c in cases:
        c.flags = [*_flags(group), *c.flags]
    return scenario_group(
        f"{file}/{group}",
        f"{'PQXDH' if pq else 'X3DH'} session, header encryption {'on' if he else 'off'}; "
        "setup: handshake, first message, one reply",
        _setup(pq, he),
        cases,
    )


def _each(file: str, groups: list[str], make: Callable[[], list[ScenarioCase]]) -> list[JSON]:
    return [_group(file, group, make()) for group in groups]


def _file(name: str, algorithm: str, header: list[str], groups: list[JSON]) -> JSON:
    return envelope(
        schema="e2ee_scenario_schema_v1.json",
        algorithm=algorithm,
        header=[*header, *SCENARIO_HEADER],
        notes=CONVERSATION_NOTES,
        groups=groups,
    )


# --- basic --------------------------------------------------------------------------------------


def _basic_cases() -> list[ScenarioCase]:
    def ping_pong(sc: Scenario) -> None:
        for i in range(3):
            sc.decrypt("bob", sc.encrypt("alice", b"ping %d" % i))
            sc.decrypt("alice", sc.encrypt("bob", b"pong %d" % i))

    def bursts(sc: Scenario) -> None:
        for sender, receiver, count in (
            ("alice", "bob", 3),
            ("bob", "alice", 2),
            ("alice", "bob", 1),
            ("bob", "alice", 4),
        ):
            messages = [sc.encrypt(sender, b"%s %d" % (sender.encode(), i)) for i in range(count)]
            for message in messages:
                sc.decrypt(receiver, message)

    def sizes(sc: Scenario) -> None:
        for size in (0, 1, 15, 16, 17, 1000):
            sc.decrypt("bob", sc.encrypt("alice", rnd("plaintexts", f"size {size}", size)))
        sc.decrypt("alice", sc.encrypt("bob", b""))

    return [
        ScenarioCase(
            "ping-pong", "three round trips, one message each way", ["PingPong"], ping_pong
        ),
        ScenarioCase("bursts", "bursts of 3, 2, 1 and 4 messages", ["Burst"], bursts),
        ScenarioCase(
            "sizes", "plaintexts of 0, 1, 15, 16, 17 and 1000 bytes", ["PlaintextSize"], sizes
        ),
    ]


def basic_file() -> JSON:
    return _file(
        "basic",
        "DoubleRatchet",
        ["Whole conversations in order, in all four modes."],
        _each("conversation/basic", list(_SETUPS), _basic_cases),
    )


# --- out of order -------------------------------------------------------------------------------


def _ooo_cases() -> list[ScenarioCase]:
    def reversed_chain(sc: Scenario) -> None:
        messages = [sc.encrypt("alice", b"m%d" % i) for i in range(5)]
        for i in (4, 0, 3, 1, 2):
            sc.decrypt("bob", messages[i])
        sc.decrypt("alice", sc.encrypt("bob", b"all five"))

    def previous_chain(sc: Scenario) -> None:
        a0, a1 = sc.encrypt("alice", b"a0"), sc.encrypt("alice", b"a1")
        sc.decrypt("bob", a0)
        sc.decrypt("alice", sc.encrypt("bob", b"b0"))
        a2 = sc.encrypt("alice", b"a2 (new chain)")
        sc.decrypt("bob", a2, comment="DH step: a1 of the previous chain is skipped via PN")
        sc.decrypt("bob", a1, comment="the late message of the previous chain")

    def two_steps_late(sc: Scenario) -> None:
        late = sc.encrypt("alice", b"late")
        sc.decrypt("bob", sc.encrypt("alice", b"on time"))
        for i in range(2):
            sc.decrypt("alice", sc.encrypt("bob", b"b%d" % i))
            sc.decrypt("bob", sc.encrypt("alice", b"a%d" % i))
        sc.decrypt("bob", late, comment="a message from two DH steps ago")

    def crossing(sc: Scenario) -> None:
        a = sc.encrypt("alice", b"alice speaks")
        b = sc.encrypt("bob", b"bob speaks at the same time")
        sc.decrypt("alice", b)
        sc.decrypt("bob", a)
        a2 = sc.encrypt("alice", b"after crossing")
        b2 = sc.encrypt("bob", b"after crossing too")
        sc.decrypt("bob", a2)
        sc.decrypt("alice", b2)

    def skipped_then_chain(sc: Scenario) -> None:
        messages = [sc.encrypt("alice", b"x%d" % i) for i in range(4)]
        sc.decrypt("bob", messages[3])
        sc.decrypt("alice", sc.encrypt("bob", b"reply"))
        sc.decrypt("bob", sc.encrypt("alice", b"new chain"))
        for i in (2, 0, 1):
            sc.decrypt("bob", messages[i])

    return [
        ScenarioCase(
            "reversed", "five messages delivered as 4, 0, 3, 1, 2", ["OutOfOrder"], reversed_chain
        ),
        ScenarioCase(
            "previous-chain",
            "a message of the previous chain arrives after the DH step",
            ["OutOfOrder", "PreviousChain"],
            previous_chain,
        ),
        ScenarioCase(
            "two-steps-late",
            "a message arrives two DH steps late",
            ["OutOfOrder", "PreviousChain"],
            two_steps_late,
        ),
        ScenarioCase("crossing", "both sides send before receiving", ["OutOfOrder"], crossing),
        ScenarioCase(
            "skipped-keys-kept",
            "skipped keys of an old chain are used after a new chain started",
            ["OutOfOrder", "PreviousChain"],
            skipped_then_chain,
        ),
    ]


def out_of_order_file() -> JSON:
    return _file(
        "out of order",
        "DoubleRatchet",
        ["Out-of-order delivery."],
        _each("conversation/out-of-order", ["pqxdh-he", "x3dh-plain", "x3dh-he"], _ooo_cases),
    )


# --- limits -------------------------------------------------------------------------------------


def _limit_cases(header_encryption: bool) -> list[ScenarioCase]:
    skip = limits.MAX_SKIP

    def gap(size: int, error: str | None) -> TestFn:
        def go(sc: Scenario) -> None:
            sc.decrypt("bob", sc.encrypt("alice", b"starts the chain"))
            sc.encrypt("alice", b"dropped", repeat=size)
            last = sc.encrypt("alice", b"after the gap")
            sc.decrypt("bob", last, error=error, comment=f"{size} keys would have to be skipped")
            if error is not None:
                sc.decrypt("alice", sc.encrypt("bob", b"still talking"))

        return go

    def new_chain_gap(size: int, error: str | None) -> TestFn:
        def go(sc: Scenario) -> None:
            sc.encrypt("alice", b"dropped", repeat=size)
            last = sc.encrypt("alice", b"first delivered of a new chain")
            sc.decrypt("bob", last, error=error, comment=f"new chain, message number {size}")

        return go

    def previous_chain_cap(sc: Scenario) -> None:
        sent = [sc.encrypt("alice", b"kept 0")]
        sc.decrypt("bob", sent[0])
        sc.encrypt("alice", b"dropped", repeat=skip - 1)
        sent.append(sc.encrypt("alice", b"last kept"))
        beyond = sc.encrypt("alice", b"beyond the cap")
        sc.decrypt("alice", sc.encrypt("bob", b"b"))
        sc.decrypt(
            "bob",
            sc.encrypt("alice", b"new chain"),
            comment=f"PN = {skip + 2}: only {skip} keys of the previous chain are derived",
        )
        sc.decrypt("bob", sent[1], comment="the last key kept")
        sc.decrypt(
            "bob",
            beyond,
            error="duplicate_message",
            comment="its key was never derived (beyond MAX_PREVIOUS_CHAIN_SKIP)",
        )

    def eviction(sc: Scenario) -> None:
        oldest = sc.encrypt("alice", b"oldest skipped")
        sc.encrypt("alice", b"dropped", repeat=skip - 1)
        sc.decrypt("bob", sc.encrypt("alice", b"chain 1 end"), comment=f"{skip} keys skipped")
        sc.decrypt("alice", sc.encrypt("bob", b"b1"))
        sc.encrypt("alice", b"dropped", repeat=skip)
        sc.decrypt(
            "bob", sc.encrypt("alice", b"chain 2 end"), comment=f"{2 * skip} keys stored: the cap"
        )
        sc.decrypt("alice", sc.encrypt("bob", b"b2"))
        sc.encrypt("alice", b"dropped")
        sc.decrypt(
            "bob", sc.encrypt("alice", b"chain 3"), comment="one more skipped key evicts the oldest"
        )
        sc.decrypt("bob", oldest, error="duplicate_message", comment="its key was evicted")

    def chain_eviction(sc: Scenario) -> None:
        late = sc.encrypt("alice", b"late")
        sc.decrypt("bob", sc.encrypt("alice", b"on time"))
        for i in range(limits.MAX_RECEIVING_CHAINS):
            sc.decrypt("alice", sc.encrypt("bob", b"b%d" % i))
            sc.decrypt("bob", sc.encrypt("alice", b"a%d" % i))
        sc.decrypt(
            "bob",
            late,
            error="auth_failed",
            comment="its chain is forgotten: the message is taken for a new chain and "
            "fails authentication",
        )

    cases = [
        ScenarioCase(
            "gap-over",
            f"a gap of MAX_SKIP + 1 = {skip + 1} messages",
            ["SkipLimit"],
            gap(skip + 1, "too_many_skipped"),
        ),
    ]
    if not header_encryption:
        cases += [
            ScenarioCase(
                "gap-max",
                f"a gap of exactly MAX_SKIP = {skip} messages",
                ["SkipLimit"],
                gap(skip, None),
            ),
            ScenarioCase(
                "new-chain-max",
                f"the first message of a new chain has N = {skip}",
                ["SkipLimit"],
                new_chain_gap(skip, None),
            ),
            ScenarioCase(
                "new-chain-over",
                f"the first message of a new chain has N = {skip + 1}",
                ["SkipLimit"],
                new_chain_gap(skip + 1, "too_many_skipped"),
            ),
            ScenarioCase(
                "previous-chain-cap",
                "keys of a previous chain beyond MAX_PREVIOUS_CHAIN_SKIP are discarded",
                ["SkipLimit", "PreviousChain"],
                previous_chain_cap,
            ),
            ScenarioCase(
                "key-eviction",
                "more than MAX_SKIPPED_KEYS skipped keys: the oldest is evicted",
                ["SkipLimit"],
                eviction,
            ),
            ScenarioCase(
                "chain-eviction",
                "more than MAX_RECEIVING_CHAINS chains: the oldest is forgotten",
                ["SkipLimit"],
                chain_eviction,
            ),
        ]
    return cases


def limits_file() -> JSON:
    return _file(
        "limits",
        "DoubleRatchet",
        ["Skipped-message limits."],
        [
            _group("conversation/limits", "x3dh-plain", _limit_cases(False)),
            _group("conversation/limits", "x3dh-he", _limit_cases(True)),
        ],
    )


# --- replay and tampering -------------------------------------------------------------------------


def _replay_cases() -> list[ScenarioCase]:
    def last(sc: Scenario) -> None:
        message = sc.encrypt("alice", b"once")
        sc.decrypt("bob", message)
        sc.decrypt("bob", message, error="duplicate_message")
        sc.decrypt("bob", sc.encrypt("alice", b"next"))

    def skipped_used(sc: Scenario) -> None:
        m0, m1 = sc.encrypt("alice", b"m0"), sc.encrypt("alice", b"m1")
        sc.decrypt("bob", m1)
        sc.decrypt("bob", m0)
        sc.decrypt(
            "bob", m0, error="duplicate_message", comment="the skipped key was used and deleted"
        )

    def old_chain(sc: Scenario) -> None:
        message = sc.encrypt("alice", b"old chain")
        sc.decrypt("bob", message)
        sc.decrypt("alice", sc.encrypt("bob", b"b"))
        sc.decrypt("bob", sc.encrypt("alice", b"new chain"))
        sc.decrypt("bob", message, error="duplicate_message")

    def initial_again(sc: Scenario) -> None:
        sc.decrypt(
            "bob",
            sc.memo["first"],
            error="duplicate_message",
            comment="the initial message, handed to the session it created",
        )

    def reply_again(sc: Scenario) -> None:
        reply = sc.encrypt("bob", b"reply")
        sc.decrypt("alice", reply)
        sc.decrypt("alice", reply, error="duplicate_message")
        sc.decrypt("bob", sc.encrypt("alice", b"fine"))

    return [
        ScenarioCase("last", "the last message delivered twice", ["Duplicate"], last),
        ScenarioCase(
            "skipped",
            "a message whose skipped key was used, delivered again",
            ["Duplicate", "OutOfOrder"],
            skipped_used,
        ),
        ScenarioCase(
            "old-chain",
            "a message of a previous chain delivered again",
            ["Duplicate", "PreviousChain"],
            old_chain,
        ),
        ScenarioCase(
            "initial",
            "the initial message delivered again to the new session",
            ["Duplicate"],
            initial_again,
        ),
        ScenarioCase(
            "responder", "a responder's message delivered twice", ["Duplicate"], reply_again
        ),
    ]


def replay_file() -> JSON:
    return _file(
        "replay",
        "DoubleRatchet",
        ["Duplicated messages."],
        _each("conversation/replay", ["pqxdh-plain", "x3dh-he"], _replay_cases),
    )


def _tamper_cases(header_encryption: bool) -> list[ScenarioCase]:
    def tampered(craft: Callable[[bytes], bytes], error: str) -> TestFn:
        def go(sc: Scenario) -> None:
            message = sc.encrypt("alice", b"tamper with me")
            sc.decrypt("bob", craft(message), error=error)
            sc.decrypt("bob", message, comment="the genuine message")

        return go

    def part(name: str, index: int) -> Callable[[bytes], bytes]:
        def craft(message: bytes) -> bytes:
            parsed = parse_message(message)
            return rebuild(message, parts={name: flip(getattr(parsed, name), index)})

        return craft

    def counter(message: bytes) -> bytes:
        parsed = parse_message(message)
        header = bytearray(parsed.header)
        header[-1] ^= 1
        return rebuild(message, parts={"header": bytes(header)})

    def other_mode(message: bytes) -> bytes:
        parsed = parse_message(message)
        header = parsed.header[:40] if header_encryption else bytes(24) + parsed.header + bytes(16)
        return rebuild(message, parts={"header": header})

    def reflected(sc: Scenario) -> None:
        message = sc.encrypt("alice", b"to myself?")
        sc.decrypt(
            "alice",
            message,
            error="auth_failed",
            comment="alice's own message delivered back to her",
        )
        sc.decrypt("bob", message)

    def initial_to_initiator(sc: Scenario) -> None:
        sc.decrypt(
            "alice",
            sc.memo["first"],
            error="auth_failed",
            comment="an initial-form message delivered to its initiator",
        )

    def other_session(sc: Scenario) -> None:
        message = sc.encrypt("alice", b"for bob")
        sid = rnd("tamper", "other session id", 16)
        sc.decrypt(
            "bob",
            rebuild(message, parts={"session_id": sid}),
            error="auth_failed",
            comment="the session id of another session",
        )
        sc.decrypt("bob", message)

    def initial_fields(sc: Scenario) -> None:
        message = sc.memo["first"]
        forged = rebuild(message, fields={"signed_prekey_id": 77})
        sc.decrypt(
            "bob",
            forged,
            error="auth_failed",
            comment="initial fields that differ from the session's handshake",
        )

    cases = [
        ScenarioCase(
            "body",
            "a bit of the ciphertext body flipped",
            ["Tampered"],
            tampered(part("ciphertext", 0), "auth_failed"),
        ),
        ScenarioCase(
            "tag",
            "a bit of the tag flipped",
            ["Tampered"],
            tampered(part("ciphertext", -1), "auth_failed"),
        ),
        ScenarioCase(
            "header",
            "a bit of the header flipped",
            ["Tampered"],
            tampered(part("header", 5), "auth_failed"),
        ),
        ScenarioCase(
            "counter",
            "the message number in the header changed",
            ["Tampered"],
            tampered(counter, "auth_failed"),
        ),
        ScenarioCase("session-id", "another session's id", ["WrongSession"], other_session),
        ScenarioCase(
            "version",
            "protocol version 2",
            ["Malformed"],
            tampered(lambda m: m[:1] + b"\x02" + m[2:], "unsupported_version"),
        ),
        ScenarioCase(
            "truncated",
            "the last byte removed",
            ["Malformed"],
            tampered(lambda m: m[:-1], "decode_error"),
        ),
        ScenarioCase(
            "trailing",
            "a byte appended",
            ["Malformed"],
            tampered(lambda m: m + b"\x00", "decode_error"),
        ),
        ScenarioCase(
            "header-mode",
            "a header of the other mode's size",
            ["HeaderModeMismatch"],
            tampered(other_mode, "decode_error"),
        ),
        ScenarioCase(
            "reflected", "a message delivered back to its sender", ["WrongSession"], reflected
        ),
        ScenarioCase(
            "initial-to-initiator",
            "an initial message delivered to its initiator",
            ["WrongSession"],
            initial_to_initiator,
        ),
        ScenarioCase(
            "initial-fields",
            "an initial-form message whose handshake fields were "
            "changed, to the responder's session",
            ["Tampered"],
            initial_fields,
        ),
    ]
    if header_encryption:
        cases.append(
            ScenarioCase(
                "nonce",
                "a bit of the header nonce flipped",
                ["Tampered"],
                tampered(part("header", 0), "auth_failed"),
            )
        )
        cases.append(
            ScenarioCase(
                "header-key",
                "the header sealed under a key nobody has",
                ["Tampered"],
                tampered(_reseal, "auth_failed"),
            )
        )
    return cases


def _reseal(message: bytes) -> bytes:
    parsed = parse_message(message)
    nonce = parsed.header[:24]
    forged_key = rnd("tamper", "forged header key")
    plain_header = bytes(40)
    sealed = ref.xchacha20poly1305_encrypt(forged_key, nonce, plain_header, b"")
    return rebuild(message, parts={"header": nonce + sealed})


def _seal_header(sc: Scenario, key: bytes, header: bytes, ad: bytes, prefix: bytes) -> bytes:
    """A header sealed as spec/ratchet.md [REQ-DR-05] does: nonce || XChaCha20-Poly1305."""
    nonce = rnd(sc.namespace, "forged header nonce", 24)
    return nonce + ref.xchacha20poly1305_encrypt(key, nonce, header, ad + prefix)


def _header_field_cases(header_encryption: bool) -> list[ScenarioCase]:
    """Headers with a field no sender writes, on Bob's established session (Alice's next
    message is genuine and still decrypts afterwards)."""

    def counter_max(sc: Scenario) -> None:
        message = sc.encrypt("alice", b"the genuine message")
        r = sc.session("bob")._ratchet
        assert r.dhr is not None
        header = r.dhr + _COUNTERS.pack(0, limits.MAX_COUNTER)
        prefix = message_prefix(parse_message(message).session_id, None)
        if header_encryption:
            assert r.hkr is not None
            header = _seal_header(sc, r.hkr, header, r.associated_data, prefix)
        forged = prefix + ref.cbor_head(2, len(header)) + header
        forged += ref.cbor_head(2, 32) + rnd(sc.namespace, "forged ciphertext", 32)
        sc.decrypt(
            "bob",
            forged,
            error="decode_error",
            comment="the current chain's ratchet key with N = MAX_COUNTER",
        )
        sc.decrypt("bob", message, comment="the genuine message")

    def zero_ratchet_key(sc: Scenario) -> None:
        message = sc.encrypt("alice", b"the genuine message")
        r = sc.session("bob")._ratchet
        header = bytes(32) + _COUNTERS.pack(r.nr, 0)
        prefix = message_prefix(parse_message(message).session_id, None)
        unchecked_dh = ref.x25519(r.dhs_private, bytes(32))  # all zero
        if header_encryption:
            assert r.nhkr is not None
            chain_key = _kdf_rk_he(r.root_key, unchecked_dh)[1]
            header = _seal_header(sc, r.nhkr, header, r.associated_data, prefix)
        else:
            chain_key = _kdf_rk(r.root_key, unchecked_dh)[1]
        forged = forge_message(
            prefix, header, _kdf_ck(chain_key)[1], b"from ratchet key zero", r.associated_data
        )
        sc.decrypt(
            "bob",
            forged,
            error="auth_failed",
            comment="a new chain with the ratchet key 0^32",
        )
        sc.decrypt("bob", message, comment="the genuine message")

    return [
        ScenarioCase(
            "counter-max",
            "a header with the message number N = MAX_COUNTER",
            ["MaxCounter"],
            counter_max,
        ),
        ScenarioCase(
            "zero-ratchet-key",
            "a header with the ratchet key 0^32 (X25519 gives all zero)",
            ["InvalidRatchetKey"],
            zero_ratchet_key,
        ),
    ]


def _awaiting_reply_setup(sc: Scenario) -> None:
    sc.generate_account("bob")
    sc.one_time_prekeys("bob", 1)
    bundle = sc.bundle("bob")
    sc.generate_account("alice")
    sc.start("alice", bundle, header_encryption=False)
    sc.memo["first"] = sc.encrypt("alice", GREET)
    sc.accept("bob", sc.memo["first"])


def _awaiting_reply_cases() -> list[ScenarioCase]:
    def dhr_without_chain(sc: Scenario) -> None:
        reply = sc.encrypt("bob", b"Hi Alice!")
        r = sc.session("alice")._ratchet
        assert r.dhr is not None
        assert r.ckr is None
        header = r.dhr + _COUNTERS.pack(0, 0)
        new_chain_dh = ref.x25519(r.dhs_private, r.dhr)
        chain_key = _kdf_rk(r.root_key, new_chain_dh)[1]
        prefix = message_prefix(parse_message(reply).session_id, None)
        forged = forge_message(
            prefix, header, _kdf_ck(chain_key)[1], b"on a chain you do not have", r.associated_data
        )
        sc.decrypt(
            "alice",
            forged,
            error="auth_failed",
            comment="ratchet key = Alice's DHr (Bob's signed prekey), N = 0, before any reply",
        )
        sc.decrypt("alice", reply, comment="Bob's genuine reply")

    return [
        ScenarioCase(
            "dhr-without-receiving-chain",
            "before the first reply, a clear header whose ratchet key is the initiator's DHr",
            ["Pqxdh", "NoHeaderEncryption", "NoReceivingChain"],
            dhr_without_chain,
        )
    ]


def tamper_file() -> JSON:
    return _file(
        "tamper",
        "DoubleRatchet",
        ["Modified, misdirected and malformed messages on an established session."],
        [
            _group("conversation/tamper", "pqxdh-he", _tamper_cases(True)),
            _group("conversation/tamper", "x3dh-plain", _tamper_cases(False)),
            # later additions, in groups of their own so that the tcIds above stay as they were
            _group("conversation/tamper-header", "pqxdh-he", _header_field_cases(True)),
            _group("conversation/tamper-header", "x3dh-plain", _header_field_cases(False)),
            scenario_group(
                "conversation/tamper/awaiting-reply",
                "PQXDH session, header encryption off; setup: handshake and first message, "
                "no reply yet",
                _awaiting_reply_setup,
                _awaiting_reply_cases(),
            ),
        ],
    )


# --- header encryption --------------------------------------------------------------------------


def _he_cases() -> list[ScenarioCase]:
    def rotation(sc: Scenario) -> None:
        for i in range(4):
            sc.decrypt("bob", sc.encrypt("alice", b"a%d" % i))
            sc.decrypt("alice", sc.encrypt("bob", b"b%d" % i))

    def old_header_key(sc: Scenario) -> None:
        late = sc.encrypt("alice", b"sealed under the previous header key")
        sc.decrypt("bob", sc.encrypt("alice", b"on time"))
        sc.decrypt("alice", sc.encrypt("bob", b"b"))
        sc.decrypt("bob", sc.encrypt("alice", b"new header key"))
        sc.decrypt("bob", late, comment="opened with a remembered header key")

    def next_key_first(sc: Scenario) -> None:
        sc.decrypt("alice", sc.encrypt("bob", b"b0"))
        a = [sc.encrypt("alice", b"a%d" % i) for i in range(3)]
        sc.decrypt("bob", a[2], comment="a new chain, opened with the next header key")
        sc.decrypt("bob", a[0])
        sc.decrypt("bob", a[1])

    return [
        ScenarioCase(
            "rotation", "header keys rotate at each DH step", ["HeaderKeyRotation"], rotation
        ),
        ScenarioCase(
            "old-header-key",
            "a late message under the previous header key",
            ["HeaderKeyRotation", "OutOfOrder"],
            old_header_key,
        ),
        ScenarioCase(
            "next-header-key",
            "the first delivered message of a new chain is not its first",
            ["HeaderKeyRotation", "OutOfOrder"],
            next_key_first,
        ),
    ]


def header_encryption_file() -> JSON:
    return _file(
        "header encryption",
        "DoubleRatchet-HE",
        ["Header encryption: header keys, their rotation and their trial order."],
        _each("conversation/header-encryption", ["pqxdh-he", "x3dh-he"], _he_cases),
    )


# --- state ----------------------------------------------------------------------------------

STATE_KEY = bytes.fromhex("5f" * 32)


def _state_cases() -> list[ScenarioCase]:
    def restore(key: bytes | None) -> TestFn:
        def go(sc: Scenario) -> None:
            pending = [sc.encrypt("alice", b"p%d" % i) for i in range(3)]
            sc.decrypt("bob", pending[2])
            state = sc.save_session("bob", key=key, comment="with two skipped keys")
            sc.load_session("bob", state, key=key)
            sc.decrypt("bob", pending[0])
            sc.decrypt("bob", pending[1])
            alice_state = sc.save_session("alice", key=key)
            sc.load_session("alice", alice_state, key=key)
            sc.decrypt("alice", sc.encrypt("bob", b"after restore"))
            sc.decrypt("bob", sc.encrypt("alice", b"and back"))

        return go

    def replay_after_restore(sc: Scenario) -> None:
        message = sc.encrypt("alice", b"received before saving")
        sc.decrypt("bob", message)
        sc.load_session("bob", sc.save_session("bob"))
        sc.decrypt("bob", message, error="duplicate_message")

    def corrupt(
        craft: Callable[[bytes], bytes], key: bytes | None, load_key: bytes | None
    ) -> TestFn:
        def go(sc: Scenario) -> None:
            state = sc.save_session("bob", key=key)
            sc.load_session("bob", craft(state), key=load_key, error="state_corrupt")
            sc.decrypt("bob", sc.encrypt("alice", b"the session in memory is intact"))

        return go

    def account_as_session(sc: Scenario) -> None:
        state = sc.save_account("bob")
        sc.load_session("bob", state, error="state_corrupt")

    other_key = bytes.fromhex("a0" * 32)

    def same(state: bytes) -> bytes:
        return state

    cases = [
        ScenarioCase(
            "plain", "both sides saved and restored (plain state)", ["StateRestore"], restore(None)
        ),
        ScenarioCase(
            "sealed",
            "both sides saved and restored, sealed with a state key",
            ["StateRestore"],
            restore(STATE_KEY),
        ),
        ScenarioCase(
            "replay-after-restore",
            "a message received before saving is still a duplicate after restoring",
            ["StateRestore", "Duplicate"],
            replay_after_restore,
        ),
        ScenarioCase(
            "wrong-key",
            "sealed state opened with another key",
            ["CorruptState"],
            corrupt(same, STATE_KEY, other_key),
        ),
        ScenarioCase(
            "sealed-bit",
            "a bit of the sealed state flipped",
            ["CorruptState"],
            corrupt(lambda s: flip(s, len(s) - 20), STATE_KEY, STATE_KEY),
        ),
        ScenarioCase(
            "sealed-no-key",
            "sealed state loaded without a key",
            ["CorruptState"],
            corrupt(same, STATE_KEY, None),
        ),
        ScenarioCase(
            "plain-with-key",
            "plain state loaded with a key",
            ["CorruptState"],
            corrupt(same, None, STATE_KEY),
        ),
        ScenarioCase(
            "truncated",
            "plain state without its last byte",
            ["CorruptState"],
            corrupt(lambda s: s[:-1], None, None),
        ),
        ScenarioCase(
            "trailing",
            "plain state with a byte appended",
            ["CorruptState"],
            corrupt(lambda s: s + b"\x00", None, None),
        ),
        ScenarioCase(
            "version",
            "state version 2",
            ["CorruptState"],
            corrupt(lambda s: s[:2] + b"\x02" + s[3:], None, None),
        ),
        ScenarioCase(
            "type",
            "state type 16 (account) in a session state",
            ["CorruptState"],
            corrupt(lambda s: s[:4] + b"\x10" + s[5:], None, None),
        ),
        ScenarioCase(
            "account", "an account state loaded as a session", ["CorruptState"], account_as_session
        ),
    ]
    return cases


def state_file() -> JSON:
    return _file(
        "state",
        "DoubleRatchet-State",
        [
            "Session state saved and restored mid-conversation, and state that must not load. "
            "Saved state is canonical CBOR (spec/state.md); sealed state is XChaCha20-Poly1305 "
            "under a key derived from the 32-byte stateKey."
        ],
        _each("conversation/state", ["pqxdh-he", "x3dh-plain"], _state_cases),
    )
