"""Generators of the primitive vectors: X25519, identity keys, Ed25519 bundle signatures,
HKDF, the message AEAD, the header AEAD and ML-KEM-1024.

Every expected value comes from :mod:`e2ee.vectors.reference` (written from the standards),
every expected *rejection* from the key-validation policy stated in spec/primitives.md; the
library itself is never consulted here.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

from e2ee import limits
from e2ee.vectors import reference as ref
from e2ee.vectors.common import JSON, envelope, hx, note
from e2ee.vectors.providers import derive_value

P = ref.P25519


def rnd(namespace: str, label: str, length: int = 32) -> bytes:
    return derive_value(namespace, label, length)


def case(comment: str, flags: list[str], result: str = "valid", **fields: Any) -> JSON:
    test: JSON = {"comment": comment, "flags": flags, "result": result}
    test.update(fields)
    return test


def flip(data: bytes, index: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[index] ^= 1 << bit
    return bytes(out)


# --- X25519 ---------------------------------------------------------------------------------

_U_ORDER8_A = 325606250916557431795983626356110631294008115727848805560023387167927233504
_U_ORDER8_B = 39382357235489614581723060781553021112529911719440698176882885853963445705823

X25519_NOTES = {
    "Normal": note("BASIC", "Pseudorandom private and public keys; must be accepted."),
    "Ktv": note("BASIC", "Known test vector from RFC 7748 section 5.2 / 6.1."),
    "Twist": note(
        "DEFINED",
        "The public key lies on the quadratic twist. X25519 is defined there and e2ee accepts "
        "it (the result is not all-zero); the shared value follows RFC 7748.",
    ),
    "LowOrderPublic": note(
        "CONFIDENTIALITY",
        "The public key is a point of small order: X25519 yields the all-zero value. e2ee "
        "rejects it (handshake_failed; on an established session a bad ratchet key is "
        "auth_failed). rfc7748Shared shows what an unchecked implementation computes.",
    ),
    "NonCanonicalPublic": note(
        "EDGE_CASE",
        "The public key encodes an integer >= 2^255 - 19 (or has the top bit set). RFC 7748 "
        "reduces such values; e2ee's policy is stricter and rejects every non-canonical "
        "encoding (handshake_failed), so all implementations agree on one encoding per key.",
    ),
    "PublicKeyDerivation": note(
        "BASIC",
        "Public key of a private key (X25519 with the base point 9), including private keys "
        "that exercise clamping.",
    ),
}


def _x25519_case(private: bytes, public: bytes, comment: str, flags: list[str]) -> JSON:
    canonical = int.from_bytes(public, "little") < P
    shared = ref.x25519(private, public)
    if not canonical:
        return case(
            comment,
            flags,
            "invalid",
            private=hx(private),
            public=hx(public),
            error="handshake_failed",
            rfc7748Shared=hx(shared),
        )
    if shared == bytes(32):
        return case(
            comment,
            flags,
            "invalid",
            private=hx(private),
            public=hx(public),
            error="handshake_failed",
            rfc7748Shared=hx(shared),
        )
    return case(comment, flags, private=hx(private), public=hx(public), shared=hx(shared))


def x25519_file() -> JSON:
    ns = "x25519"
    comp: list[JSON] = []
    comp.append(
        _x25519_case(
            bytes.fromhex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4"),
            bytes.fromhex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c"),
            "RFC 7748 section 5.2, first vector",
            ["Ktv"],
        )
    )
    alice = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    bob = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
    comp.append(
        _x25519_case(alice, ref.x25519_base(bob), "RFC 7748 section 6.1 (Alice's view)", ["Ktv"])
    )
    for i in range(12):
        private = rnd(ns, f"normal private {i}")
        public = ref.x25519_base(rnd(ns, f"normal peer {i}"))
        comp.append(_x25519_case(private, public, f"pseudorandom key pair {i}", ["Normal"]))
    twist: list[int] = []
    u = 2
    while len(twist) < 4:
        if ref.x25519_is_on_twist(u):
            twist.append(u)
        u += 1
    for i, value in enumerate(twist):
        comp.append(
            _x25519_case(
                rnd(ns, f"twist private {i}"),
                value.to_bytes(32, "little"),
                f"public key u={value} on the twist",
                ["Twist"],
            )
        )
    low_order = [
        (0, "u = 0"),
        (1, "u = 1"),
        (_U_ORDER8_A, "a point of order 8"),
        (_U_ORDER8_B, "the other point of order 8"),
        (P - 1, "u = p - 1"),
    ]
    for value, comment in low_order:
        for i in range(2):
            comp.append(
                _x25519_case(
                    rnd(ns, f"low order private {value} {i}"),
                    value.to_bytes(32, "little"),
                    f"low-order public key: {comment}",
                    ["LowOrderPublic"],
                )
            )
    non_canonical = [
        (P, "u = p (non-canonical 0)", ["NonCanonicalPublic", "LowOrderPublic"]),
        (P + 1, "u = p + 1 (non-canonical 1)", ["NonCanonicalPublic", "LowOrderPublic"]),
        (2**255 - 1, "u = 2^255 - 1 (non-canonical 18)", ["NonCanonicalPublic"]),
        (P + 9, "u = p + 9 (non-canonical base point)", ["NonCanonicalPublic"]),
    ]
    for value, comment, flags in non_canonical:
        comp.append(
            _x25519_case(
                rnd(ns, f"non-canonical private {value}"),
                value.to_bytes(32, "little"),
                comment,
                flags,
            )
        )
    for i in range(4):
        top_bit = bytearray(ref.x25519_base(rnd(ns, f"top bit peer {i}")))
        top_bit[31] |= 0x80
        comp.append(
            _x25519_case(
                rnd(ns, f"top bit private {i}"),
                bytes(top_bit),
                "a valid public key with the unused top bit set",
                ["NonCanonicalPublic"],
            )
        )
    derivation: list[JSON] = []
    privates = [
        (bytes(32), "all-zero private key (clamping sets bit 254)"),
        (b"\xff" * 32, "all-ones private key (clamping clears bits 0-2 and 255)"),
        (alice, "RFC 7748 section 6.1 Alice"),
        (bob, "RFC 7748 section 6.1 Bob"),
    ] + [(rnd(ns, f"derivation {i}"), f"pseudorandom private key {i}") for i in range(6)]
    for private, comment in privates:
        derivation.append(
            case(
                comment,
                ["PublicKeyDerivation"],
                private=hx(private),
                public=hx(ref.x25519_base(private)),
            )
        )
    return envelope(
        schema="e2ee_x25519_schema_v1.json",
        algorithm="X25519",
        header=[
            "X25519 as e2ee uses it (RFC 7748, plus e2ee's key-validation policy).",
            "XdhComp: shared = X25519(private, public), or the error e2ee raises.",
            "XdhPublicKey: public = X25519(private, 9).",
        ],
        notes=X25519_NOTES,
        groups=[
            {"type": "XdhComp", "curve": "curve25519", "tests": comp},
            {"type": "XdhPublicKey", "curve": "curve25519", "tests": derivation},
        ],
    )


# --- identity keys (Ed25519 keys used for X25519) --------------------------------------------

IDENTITY_NOTES = {
    "Normal": note("BASIC", "An identity key made from a pseudorandom seed."),
    "Ktv": note("BASIC", "A seed from RFC 8032 section 7.1."),
    "SmallOrderIdentityKey": note(
        "CONFIDENTIALITY",
        "The identity key is a point of order dividing 8; its X25519 form would make DH "
        "outputs predictable. Rejected with handshake_failed.",
    ),
    "NonCanonicalIdentityKey": note(
        "EDGE_CASE",
        "The encoded y coordinate is >= p (or x = 0 with the sign bit set): not the unique "
        "encoding of a point. Rejected with handshake_failed.",
    ),
    "MixedOrder": note(
        "CONFIDENTIALITY",
        "A valid key plus a point of order 8: canonical and on the curve, but outside the "
        "prime-order subgroup ([L]A is not the neutral element). Rejected with "
        "handshake_failed.",
    ),
    "NotOnCurve": note(
        "MODIFIED_PARAMETER", "No point has this y coordinate. Rejected with handshake_failed."
    ),
}

_RFC8032_SEEDS = [
    "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
    "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
    "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
]


def identity_keys_file() -> JSON:
    ns = "identity keys"
    derivation: list[JSON] = []
    seeds = [(bytes.fromhex(s), "RFC 8032 test seed", ["Ktv"]) for s in _RFC8032_SEEDS]
    seeds += [(rnd(ns, f"seed {i}"), f"pseudorandom seed {i}", ["Normal"]) for i in range(5)]
    for seed, comment, flags in seeds:
        public = ref.ed25519_public_key(seed)
        derivation.append(
            case(
                comment,
                flags,
                seed=hx(seed),
                identityKey=hx(public),
                x25519Private=hx(ref.ed25519_seed_to_x25519(seed)),
                x25519Public=hx(ref.ed25519_public_to_x25519(public)),
            )
        )
    validation: list[JSON] = []
    for i in range(3):
        public = ref.ed25519_public_key(rnd(ns, f"valid {i}"))
        validation.append(
            case(
                "a valid identity key",
                ["Normal"],
                identityKey=hx(public),
                x25519Public=hx(ref.ed25519_public_to_x25519(public)),
            )
        )
    for point in ref.ed25519_small_order_points():
        validation.append(
            case(
                "identity key of small order",
                ["SmallOrderIdentityKey"],
                "invalid",
                identityKey=hx(point),
                error="handshake_failed",
            )
        )
    for y in (3, 4, 5):
        assert ref.ed_decode(y.to_bytes(32, "little")) is not None
        validation.append(
            case(
                f"y = {y} + p: a non-canonical encoding of a valid point",
                ["NonCanonicalIdentityKey"],
                "invalid",
                identityKey=hx((y + P).to_bytes(32, "little")),
                error="handshake_failed",
            )
        )
    validation.append(
        case(
            "x = 0 with the sign bit set (negative zero)",
            ["NonCanonicalIdentityKey"],
            "invalid",
            identityKey=hx((1 | (1 << 255)).to_bytes(32, "little")),
            error="handshake_failed",
        )
    )
    for i, torsion in enumerate(ref.ed25519_small_order_points()[3:5]):
        validation.append(
            case(
                "a valid key plus a point of order 8",
                ["MixedOrder"],
                "invalid",
                identityKey=hx(ref.ed25519_mixed_order_key(rnd(ns, f"mixed {i}"), torsion)),
                error="handshake_failed",
            )
        )
    y = 2
    found = 0
    while found < 3:
        if ref.ed_decode(y.to_bytes(32, "little")) is None:
            validation.append(
                case(
                    f"y = {y} is not the y coordinate of a curve point",
                    ["NotOnCurve"],
                    "invalid",
                    identityKey=hx(y.to_bytes(32, "little")),
                    error="handshake_failed",
                )
            )
            found += 1
        y += 1
    return envelope(
        schema="e2ee_identity_key_schema_v1.json",
        algorithm="Ed25519-to-X25519",
        header=[
            "Identity keys are Ed25519 keys, also used for X25519 (DH1 and DH2 of the handshake).",
            "IdentityKeyDerivation: seed -> Ed25519 public key, its X25519 form (RFC 7748 "
            "section 4.1 map u = (1+y)/(1-y)), and the clamped X25519 private scalar.",
            "IdentityKeyValidation: which identity keys a bundle or initial message may carry.",
        ],
        notes=IDENTITY_NOTES,
        groups=[
            {"type": "IdentityKeyDerivation", "tests": derivation},
            {"type": "IdentityKeyValidation", "tests": validation},
        ],
    )


# --- Ed25519 bundle signatures ----------------------------------------------------------------

SIGNATURE_NOTES = {
    "Valid": note("BASIC", "A signature the identity key made over this exact payload."),
    "ModifiedSignature": note("MODIFIED_PARAMETER", "One bit of R or S is flipped."),
    "ModifiedPayload": note(
        "MODIFIED_PARAMETER",
        "The signature is genuine but for a payload that differs in one field (id, time, key).",
    ),
    "WrongPurpose": note(
        "AUTH_BYPASS",
        "A genuine signature by the same identity over the same key, made for another purpose "
        "label: labels keep signatures from being reused across purposes.",
    ),
    "KemStripped": note(
        "AUTH_BYPASS",
        "The signed prekey's signature covers its ML-KEM companion; checking it against the "
        "payload without the companion (a downgrade to X3DH) must fail.",
    ),
    "WrongIdentity": note("AUTH_BYPASS", "Signed by another identity key."),
    "NonCanonicalS": note(
        "SIGNATURE_MALLEABILITY",
        "S is replaced by S + L: the same equation holds but S is not reduced. Strict "
        "verification (RFC 8032 section 5.1.7, libsodium) rejects it.",
    ),
    "SmallOrderPublicKey": note(
        "SIGNATURE_MALLEABILITY",
        "The identity key has small order and the signature is (R = identity, S = 0), which a "
        "non-strict verifier accepts for every message. Must be rejected.",
    ),
    "SmallOrderR": note(
        "SIGNATURE_MALLEABILITY", "R is a point of small order; strict verification rejects it."
    ),
    "WrongLength": note("MODIFIED_PARAMETER", "The signature is not 64 bytes."),
    "ZeroSignature": note("MODIFIED_PARAMETER", "64 zero bytes."),
    "SmallOrderRValidEquation": note(
        "SIGNATURE_MALLEABILITY",
        "R is the neutral element (01 00..00, of small order) and S = k * a mod L (k = "
        "SHA-512(R || A || M) mod L, a the signer's secret scalar), so the cofactorless "
        "equation [S]B = R + [k]A holds and a verifier that checks only the equation (OpenSSL "
        "does) accepts the signature. spec/primitives.md [REQ-PRIM-07] rejects every "
        "small-order R: signature_invalid. The SmallOrderR cases fail the equation as well, so "
        "they do not show whether the R check is made.",
    ),
}

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def spk_payload(
    prekey_id: int, timestamp: int, key: bytes, kem_id: int | None, kem_key: bytes | None
) -> bytes:
    """The signed prekey payload, written out from spec/handshake.md."""
    payload = (
        limits.SIG_LABEL_SIGNED_PREKEY + _U32.pack(prekey_id) + _U64.pack(timestamp) + b"\x01" + key
    )
    if kem_id is not None and kem_key is not None:
        payload += _U32.pack(kem_id) + b"\x03" + kem_key
    return payload


def opk_payload(prekey_id: int, key: bytes) -> bytes:
    return limits.SIG_LABEL_ONE_TIME_PREKEY + _U32.pack(prekey_id) + b"\x01" + key


def okem_payload(prekey_id: int, key: bytes) -> bytes:
    return limits.SIG_LABEL_ONE_TIME_KEM_PREKEY + _U32.pack(prekey_id) + b"\x03" + key


def kem_key(label: str) -> tuple[bytes, bytes]:
    """(seed, ML-KEM-1024 public key) for a label."""
    seed = rnd("ml-kem keys", label, 64)
    return seed, ref.mlkem1024_keygen(seed)[0]


PAYLOAD_LISTED = 256
"""Payloads up to this size are given in full; longer ones (with an ML-KEM key) by SHA-256."""


def payload_fields(payload: bytes) -> JSON:
    if len(payload) <= PAYLOAD_LISTED:
        return {"payload": hx(payload)}
    return {"payloadSha256": hashlib.sha256(payload).hexdigest()}


def _sig_tests(
    seed: bytes,
    other_seed: bytes,
    purpose: str,
    fields_list: list[JSON],
    payload_of: Any,
    wrong_purpose: Any,
    modified: list[tuple[str, JSON]],
) -> list[JSON]:
    tests: list[JSON] = []
    for fields in fields_list:
        payload = payload_of(fields)
        tests.append(
            case(
                f"{purpose}: genuine signature",
                ["Valid"],
                fields=fields,
                signature=hx(ref.ed25519_sign(seed, payload)),
                **payload_fields(payload),
            )
        )
    fields = fields_list[0]
    payload = payload_of(fields)
    good = ref.ed25519_sign(seed, payload)

    def bad(comment: str, flags: list[str], signature: bytes, f: JSON | None = None) -> JSON:
        f = fields if f is None else f
        return case(
            comment,
            flags,
            "invalid",
            fields=f,
            signature=hx(signature),
            error="signature_invalid",
            **payload_fields(payload_of(f)),
        )

    for index, bit, what in ((0, 0, "R"), (31, 6, "R"), (32, 0, "S"), (63, 4, "S")):
        tests.append(
            bad(
                f"bit {bit} of byte {index} ({what}) flipped",
                ["ModifiedSignature"],
                flip(good, index, bit),
            )
        )
    big_r, s = ref.ed25519_sign_parts(seed, payload)
    tests.append(
        bad("S + L instead of S", ["NonCanonicalS"], big_r + (s + ref.ED_L).to_bytes(32, "little"))
    )
    tests.append(
        bad("signed by another identity", ["WrongIdentity"], ref.ed25519_sign(other_seed, payload))
    )
    tests.append(
        bad(
            "same key signed for another purpose",
            ["WrongPurpose"],
            ref.ed25519_sign(seed, wrong_purpose(fields)),
        )
    )
    for comment, changed in modified:
        tests.append(bad(comment, ["ModifiedPayload"], ref.ed25519_sign(seed, payload_of(changed))))
    small_r = ref.ed25519_small_order_points()[3]
    tests.append(bad("R of small order", ["SmallOrderR"], small_r + good[32:]))
    tests.append(bad("63-byte signature", ["WrongLength"], good[:63]))
    tests.append(bad("all-zero signature", ["ZeroSignature"], bytes(64)))
    return tests


def ed25519_file() -> JSON:
    ns = "ed25519 signatures"
    seed = rnd(ns, "identity seed")
    other = rnd(ns, "other identity seed")
    identity = ref.ed25519_public_key(seed)
    _, kem_a = kem_key("signature kem a")
    _, kem_b = kem_key("signature kem b")

    def x(label: str) -> str:
        return hx(ref.x25519_base(rnd(ns, label)))

    groups: list[JSON] = []
    # signed prekey with its ML-KEM companion
    spk_fields = [
        {
            "prekeyId": 1,
            "timestamp": 1_800_000_000,
            "publicKey": x("spk 1"),
            "kemPrekeyId": 2,
            "kemPublicKey": "A",
        },
        {
            "prekeyId": 4_294_967_295,
            "timestamp": 0,
            "publicKey": x("spk 2"),
            "kemPrekeyId": 4_294_967_294,
            "kemPublicKey": "B",
        },
    ]
    kem_by_name = {"A": kem_a, "B": kem_b}

    def spk_of(f: JSON) -> bytes:
        kem = kem_by_name[f["kemPublicKey"]] if f.get("kemPublicKey") else None
        return spk_payload(
            f["prekeyId"], f["timestamp"], bytes.fromhex(f["publicKey"]), f.get("kemPrekeyId"), kem
        )

    def spk_wrong(f: JSON) -> bytes:
        return opk_payload(f["prekeyId"], bytes.fromhex(f["publicKey"]))

    f0 = spk_fields[0]
    tests = _sig_tests(
        seed,
        other,
        "signed prekey with ML-KEM companion",
        spk_fields,
        spk_of,
        spk_wrong,
        [
            ("signature for prekey id 2, checked for id 1", {**f0, "prekeyId": 2}),
            ("signature for another timestamp", {**f0, "timestamp": 1_800_000_001}),
            ("signature for another ML-KEM id", {**f0, "kemPrekeyId": 3}),
            ("signature over another ML-KEM key", {**f0, "kemPublicKey": "B"}),
        ],
    )
    # the downgrade: a companion-covering signature checked without the companion
    stripped = {k: v for k, v in f0.items() if k not in ("kemPrekeyId", "kemPublicKey")}
    tests.append(
        case(
            "signature covers the ML-KEM companion; payload without it",
            ["KemStripped"],
            "invalid",
            fields=stripped,
            **payload_fields(spk_of(stripped)),
            signature=hx(ref.ed25519_sign(seed, spk_of(f0))),
            error="signature_invalid",
        )
    )
    groups.append(
        {
            "type": "BundleSignatureVerify",
            "purpose": "signed-prekey",
            "label": hx(limits.SIG_LABEL_SIGNED_PREKEY),
            "identityKey": hx(identity),
            "kemPublicKeys": {"A": hx(kem_a), "B": hx(kem_b)},
            "tests": tests,
        }
    )
    # classic signed prekey (no companion)
    classic = [
        {"prekeyId": 7, "timestamp": 1_799_990_000, "publicKey": x("classic spk 1")},
        {"prekeyId": 0, "timestamp": 2**63 - 1, "publicKey": x("classic spk 2")},
    ]
    c0 = classic[0]
    groups.append(
        {
            "type": "BundleSignatureVerify",
            "purpose": "signed-prekey",
            "label": hx(limits.SIG_LABEL_SIGNED_PREKEY),
            "identityKey": hx(identity),
            "kemPublicKeys": {},
            "tests": _sig_tests(
                seed,
                other,
                "classic signed prekey",
                classic,
                spk_of,
                spk_wrong,
                [
                    ("signature for another id", {**c0, "prekeyId": 8}),
                    ("signature for another timestamp", {**c0, "timestamp": 1_799_990_001}),
                    ("signature over another key", {**c0, "publicKey": x("classic spk 2")}),
                ],
            ),
        }
    )
    # one-time X25519 prekeys

    def opk_of(f: JSON) -> bytes:
        return opk_payload(f["prekeyId"], bytes.fromhex(f["publicKey"]))

    def opk_wrong(f: JSON) -> bytes:
        return spk_payload(f["prekeyId"], 0, bytes.fromhex(f["publicKey"]), None, None)

    opks = [{"prekeyId": 3, "publicKey": x("opk 1")}, {"prekeyId": 1000, "publicKey": x("opk 2")}]
    groups.append(
        {
            "type": "BundleSignatureVerify",
            "purpose": "one-time-prekey",
            "label": hx(limits.SIG_LABEL_ONE_TIME_PREKEY),
            "identityKey": hx(identity),
            "kemPublicKeys": {},
            "tests": _sig_tests(
                seed,
                other,
                "one-time prekey",
                opks,
                opk_of,
                opk_wrong,
                [
                    ("signature for another id", {**opks[0], "prekeyId": 4}),
                    ("signature over another key", {**opks[0], "publicKey": x("opk 2")}),
                ],
            ),
        }
    )
    # one-time ML-KEM prekeys

    def okem_of(f: JSON) -> bytes:
        return okem_payload(f["prekeyId"], kem_by_name[f["kemPublicKey"]])

    def okem_wrong(f: JSON) -> bytes:
        # the same key signed as the signed prekey's companion
        return spk_payload(
            1,
            1_800_000_000,
            ref.x25519_base(rnd(ns, "spk 1")),
            f["prekeyId"],
            kem_by_name[f["kemPublicKey"]],
        )

    okems = [{"prekeyId": 4, "kemPublicKey": "A"}, {"prekeyId": 6, "kemPublicKey": "B"}]
    groups.append(
        {
            "type": "BundleSignatureVerify",
            "purpose": "one-time-kem-prekey",
            "label": hx(limits.SIG_LABEL_ONE_TIME_KEM_PREKEY),
            "identityKey": hx(identity),
            "kemPublicKeys": {"A": hx(kem_a), "B": hx(kem_b)},
            "tests": _sig_tests(
                seed,
                other,
                "one-time ML-KEM prekey",
                okems,
                okem_of,
                okem_wrong,
                [
                    ("signature for another id", {**okems[0], "prekeyId": 5}),
                    ("signature over another key", {**okems[0], "kemPublicKey": "B"}),
                ],
            ),
        }
    )
    # small-order identity key with the universal forgery (R = identity, S = 0)
    neutral = ref.ed25519_small_order_points()[2]  # 0100..00, the neutral element
    forgery_fields = opks[0]
    groups.append(
        {
            "type": "BundleSignatureVerify",
            "purpose": "one-time-prekey",
            "label": hx(limits.SIG_LABEL_ONE_TIME_PREKEY),
            "identityKey": hx(neutral),
            "kemPublicKeys": {},
            "tests": [
                case(
                    "identity key = neutral element, signature (R = neutral, S = 0)",
                    ["SmallOrderPublicKey"],
                    "invalid",
                    fields=forgery_fields,
                    **payload_fields(opk_of(forgery_fields)),
                    signature=hx(neutral + bytes(32)),
                    error="signature_invalid",
                )
            ],
        }
    )
    # R of small order with the cofactorless equation holding: only the small-order R rule
    # rejects it (a group of its own, so that the tcIds of the cases above stay as they were)
    neutral_r_fields = opks[0]
    neutral_r_payload = opk_of(neutral_r_fields)
    groups.append(
        {
            "type": "BundleSignatureVerify",
            "purpose": "one-time-prekey",
            "label": hx(limits.SIG_LABEL_ONE_TIME_PREKEY),
            "identityKey": hx(identity),
            "kemPublicKeys": {},
            "tests": [
                case(
                    "R = neutral element, S = k * a mod L: the cofactorless equation holds",
                    ["SmallOrderRValidEquation"],
                    "invalid",
                    fields=neutral_r_fields,
                    **payload_fields(neutral_r_payload),
                    signature=hx(ref.ed25519_neutral_r_signature(seed, neutral_r_payload)),
                    error="signature_invalid",
                )
            ],
        }
    )
    return envelope(
        schema="e2ee_bundle_signature_schema_v1.json",
        algorithm="Ed25519",
        header=[
            "Identity-key signatures on prekeys, as a bundle carries them (RFC 8032 Ed25519, "
            "strict verification).",
            "payload = label || fields (ids u32 BE, time u64 BE, keys with a 1-byte type: "
            "0x01 X25519, 0x03 ML-KEM-1024); kemPublicKey names a key of the group's "
            "kemPublicKeys. Verifiers rebuild the payload from the fields, compare it with "
            "`payload` (or, for payloads over 256 bytes, its SHA-256 with `payloadSha256`), "
            "then verify `signature` with the group's identityKey.",
        ],
        notes=SIGNATURE_NOTES,
        groups=groups,
    )


# --- HKDF -----------------------------------------------------------------------------------

HKDF_NOTES = {
    "Rfc5869": note("BASIC", "RFC 5869 appendix A test case."),
    "ProtocolLabel": note("BASIC", "HKDF as e2ee calls it, with one of its info labels."),
}


def hkdf_file() -> JSON:
    ns = "hkdf"
    tests: list[JSON] = []
    rfc = [
        ("0b" * 22, "000102030405060708090a0b0c", "f0f1f2f3f4f5f6f7f8f9", 42),
        (
            bytes(range(0x00, 0x50)).hex(),
            bytes(range(0x60, 0xB0)).hex(),
            bytes(range(0xB0, 0x100)).hex(),
            82,
        ),
        ("0b" * 22, "", "", 42),
    ]
    for i, (ikm_hex, salt_hex, info_hex, length) in enumerate(rfc):
        okm = ref.hkdf_sha256(
            bytes.fromhex(salt_hex), bytes.fromhex(ikm_hex), bytes.fromhex(info_hex), length
        )
        tests.append(
            case(
                f"RFC 5869 test case {i + 1}",
                ["Rfc5869"],
                ikm=ikm_hex,
                salt=salt_hex,
                info=info_hex,
                size=length,
                okm=hx(okm),
            )
        )
    labels = [
        ("pqxdh", limits.KDF_INFO_PQXDH, 96),
        ("x3dh", limits.KDF_INFO_X3DH, 96),
        ("root", limits.KDF_INFO_ROOT, 64),
        ("root+header-key", limits.KDF_INFO_ROOT_HE, 96),
        ("message-keys", limits.KDF_INFO_MESSAGE_KEYS, 80),
        ("state-at-rest", limits.KDF_INFO_STATE_AT_REST, 32),
    ]
    for name, info, size in labels:
        for salt_kind in ("zero", "key"):
            salt = bytes(32) if salt_kind == "zero" else rnd(ns, f"{name} salt")
            ikm = rnd(ns, f"{name} ikm {salt_kind}", 128 if name in ("pqxdh", "x3dh") else 32)
            tests.append(
                case(
                    f"info {info.decode()!r}, {salt_kind} salt, {size} bytes",
                    ["ProtocolLabel"],
                    ikm=hx(ikm),
                    salt=hx(salt),
                    info=hx(info),
                    size=size,
                    okm=hx(ref.hkdf_sha256(salt, ikm, info, size)),
                )
            )
    return envelope(
        schema="e2ee_hkdf_schema_v1.json",
        algorithm="HKDF-SHA-256",
        header=["HKDF-SHA-256 (RFC 5869): okm = HKDF(salt, ikm, info, size)."],
        notes=HKDF_NOTES,
        groups=[{"type": "HkdfTest", "tests": tests}],
    )


# --- the message AEAD (AES-256-CBC + truncated HMAC-SHA-256) ----------------------------------

MESSAGE_AEAD_NOTES = {
    "Valid": note("BASIC", "Encryption and decryption of a message."),
    "PaddingBoundary": note("EDGE_CASE", "Plaintext length at a multiple of 16 or next to it."),
    "ModifiedCiphertext": note("AUTH_BYPASS", "A bit of the CBC ciphertext is flipped."),
    "ModifiedTag": note("AUTH_BYPASS", "A bit of the 16-byte tag is flipped."),
    "ModifiedAd": note("AUTH_BYPASS", "The associated data differs."),
    "WrongKey": note("AUTH_BYPASS", "Decryption with another message key."),
    "Truncated": note("MODIFIED_PARAMETER", "Bytes removed from the end or a block dropped."),
    "BadPadding": note(
        "CAN_OF_WORMS",
        "The tag is valid (computed by the test author) but the PKCS#7 padding is not: "
        "decryption must still fail, with the same error as a bad tag (no padding oracle).",
    ),
    "BadLength": note(
        "CAN_OF_WORMS", "Valid tag over a body whose length is not a multiple of 16."
    ),
}


def _message_parts(message_key: bytes) -> tuple[bytes, bytes, bytes]:
    return ref.message_key_expansion(message_key, limits.KDF_INFO_MESSAGE_KEYS)


def _seal_raw(message_key: bytes, body: bytes, ad: bytes) -> bytes:
    _, auth, _ = _message_parts(message_key)
    return body + ref.hmac_sha256(auth, ad + body)[: limits.MESSAGE_TAG_SIZE]


def _message_encrypt(message_key: bytes, plaintext: bytes, ad: bytes) -> bytes:
    enc, _, iv = _message_parts(message_key)
    return _seal_raw(message_key, ref.aes256_cbc_encrypt_raw(enc, iv, ref.pkcs7(plaintext)), ad)


def forge_message(
    prefix: bytes, header: bytes, message_key: bytes, plaintext: bytes, ad: bytes
) -> bytes:
    """A message of ``prefix`` (the wire bytes before the header) and ``header`` (as sent)
    whose ciphertext authenticates under ``message_key`` (spec/ratchet.md section 5: the tag
    covers AD || prefix || bstr(header) || C). Written with the reference functions."""
    mac_prefix = prefix + ref.cbor_head(2, len(header)) + header
    ciphertext = _message_encrypt(message_key, plaintext, ad + mac_prefix)
    return mac_prefix + ref.cbor_head(2, len(ciphertext)) + ciphertext


def message_aead_file() -> JSON:
    ns = "message aead"
    valid: list[JSON] = []
    invalid: list[JSON] = []
    for i, size in enumerate((0, 1, 15, 16, 17, 31, 32, 33, 100, 1000)):
        mk = rnd(ns, f"message key {i}")
        ad = rnd(ns, f"ad {i}", 66 + i * 7)
        plaintext = rnd(ns, f"plaintext {i}", size)
        enc, auth, iv = _message_parts(mk)
        valid.append(
            case(
                f"{size}-byte plaintext",
                ["Valid", "PaddingBoundary"] if size % 16 in (0, 1, 15) else ["Valid"],
                messageKey=hx(mk),
                encKey=hx(enc),
                authKey=hx(auth),
                iv=hx(iv),
                ad=hx(ad),
                plaintext=hx(plaintext),
                ciphertext=hx(_message_encrypt(mk, plaintext, ad)),
            )
        )
    mk = rnd(ns, "tamper key")
    ad = rnd(ns, "tamper ad", 80)
    plaintext = rnd(ns, "tamper plaintext", 40)
    ct = _message_encrypt(mk, plaintext, ad)
    enc, _, iv = _message_parts(mk)

    def bad(
        comment: str, flags: list[str], ciphertext: bytes, *, key: bytes = mk, data: bytes = ad
    ) -> JSON:
        return case(
            comment,
            flags,
            "invalid",
            messageKey=hx(key),
            ad=hx(data),
            ciphertext=hx(ciphertext),
            error="auth_failed",
        )

    invalid += [
        bad("first ciphertext bit flipped", ["ModifiedCiphertext"], flip(ct, 0)),
        bad("bit in the last block flipped", ["ModifiedCiphertext"], flip(ct, 47, 7)),
        bad("first tag bit flipped", ["ModifiedTag"], flip(ct, len(ct) - 16)),
        bad("last tag bit flipped", ["ModifiedTag"], flip(ct, len(ct) - 1, 7)),
        bad("tag zeroed", ["ModifiedTag"], ct[:-16] + bytes(16)),
        bad("AD bit flipped", ["ModifiedAd"], ct, data=flip(ad, 0)),
        bad("AD truncated by one byte", ["ModifiedAd"], ct, data=ad[:-1]),
        bad("empty AD", ["ModifiedAd"], ct, data=b""),
        bad("another message key", ["WrongKey"], ct, key=rnd(ns, "wrong key")),
        bad("last byte removed", ["Truncated"], ct[:-1]),
        bad("first block dropped", ["Truncated"], ct[16:]),
        bad("only the tag", ["Truncated"], ct[-16:]),
    ]
    unpadded = ref.aes256_cbc_encrypt_raw(enc, iv, bytes(range(32)))
    invalid.append(
        bad(
            "valid tag, last byte 0x1f is no PKCS#7 padding",
            ["BadPadding"],
            _seal_raw(mk, unpadded, ad),
        )
    )
    zero_pad = ref.aes256_cbc_encrypt_raw(enc, iv, bytes(16))
    invalid.append(bad("valid tag, padding byte 0x00", ["BadPadding"], _seal_raw(mk, zero_pad, ad)))
    wrong_pad = ref.aes256_cbc_encrypt_raw(enc, iv, b"A" * 13 + b"\x01\x02\x03")
    invalid.append(
        bad(
            "valid tag, padding 0x03 with wrong filler",
            ["BadPadding"],
            _seal_raw(mk, wrong_pad, ad),
        )
    )
    big_pad = ref.aes256_cbc_encrypt_raw(enc, iv, b"B" * 15 + b"\x11")
    invalid.append(bad("valid tag, padding byte 17", ["BadPadding"], _seal_raw(mk, big_pad, ad)))
    invalid.append(
        bad("valid tag, body of 20 bytes", ["BadLength"], _seal_raw(mk, unpadded[:20], ad))
    )
    invalid.append(bad("valid tag, empty body", ["BadLength"], _seal_raw(mk, b"", ad)))
    return envelope(
        schema="e2ee_message_aead_schema_v1.json",
        algorithm="AES-256-CBC-HMAC-SHA-256-128",
        header=[
            "ENCRYPT/DECRYPT of the Double Ratchet (e2ee spec, Signal Double Ratchet 5.2):",
            "encKey || authKey || iv = HKDF-SHA-256(salt = 32 zero bytes, ikm = messageKey, "
            "info = 'e2ee/v1/ratchet/message-keys', 80);",
            "ciphertext = AES-256-CBC(encKey, iv, PKCS#7(plaintext)) || "
            "HMAC-SHA-256(authKey, ad || body)[:16]. The tag is checked first, in constant "
            "time; every failure is auth_failed.",
        ],
        notes=MESSAGE_AEAD_NOTES,
        groups=[
            {"type": "MessageAeadEncrypt", "tests": valid},
            {"type": "MessageAeadDecrypt", "tests": invalid},
        ],
    )


# --- the header AEAD (XChaCha20-Poly1305) ------------------------------------------------------

HEADER_AEAD_NOTES = {
    "Valid": note("BASIC", "A header sealed under a header key."),
    "ModifiedNonce": note("AUTH_BYPASS", "A bit of the 24-byte nonce is flipped."),
    "ModifiedCiphertext": note("AUTH_BYPASS", "A bit of the sealed header is flipped."),
    "ModifiedTag": note("AUTH_BYPASS", "A bit of the Poly1305 tag is flipped."),
    "ModifiedAd": note("AUTH_BYPASS", "The associated data (AD || wire prefix) differs."),
    "WrongKey": note("AUTH_BYPASS", "Another header key (e.g. the next header key)."),
    "Truncated": note("MODIFIED_PARAMETER", "The sealed header is shorter than 56 bytes."),
}


def header_aead_file() -> JSON:
    ns = "header aead"
    valid: list[JSON] = []
    for i in range(8):
        key = rnd(ns, f"header key {i}")
        nonce = rnd(ns, f"nonce {i}", 24)
        ad = rnd(ns, f"ad {i}", 66) + rnd(ns, f"prefix {i}", 21 + (1700 if i == 7 else 0))
        ratchet = ref.x25519_base(rnd(ns, f"ratchet {i}"))
        pn, n = [
            (0, 0),
            (0, 1),
            (3, 0),
            (3, 7),
            (1000, 999),
            (2**32 - 1, 2**32 - 2),
            (0, 0),
            (5, 2),
        ][i]
        header = ratchet + _U32.pack(pn) + _U32.pack(n)
        valid.append(
            case(
                f"header PN={pn} N={n}" + (" (initial-message prefix)" if i == 7 else ""),
                ["Valid"],
                key=hx(key),
                nonce=hx(nonce),
                ad=hx(ad),
                header=hx(header),
                ratchetKey=hx(ratchet),
                previousChainLength=pn,
                messageNumber=n,
                sealed=hx(ref.xchacha20poly1305_encrypt(key, nonce, header, ad)),
            )
        )
    key = rnd(ns, "tamper key")
    nonce = rnd(ns, "tamper nonce", 24)
    ad = rnd(ns, "tamper ad", 87)
    header = ref.x25519_base(rnd(ns, "tamper ratchet")) + _U32.pack(2) + _U32.pack(5)
    sealed = ref.xchacha20poly1305_encrypt(key, nonce, header, ad)

    def bad(
        comment: str,
        flags: list[str],
        *,
        k: bytes = key,
        n: bytes = nonce,
        a: bytes = ad,
        s: bytes = sealed,
    ) -> JSON:
        return case(
            comment,
            flags,
            "invalid",
            key=hx(k),
            nonce=hx(n),
            ad=hx(a),
            sealed=hx(s),
            error="auth_failed",
        )

    invalid = [
        bad("first nonce bit flipped", ["ModifiedNonce"], n=flip(nonce, 0)),
        bad("bit in the nonce's last 8 bytes flipped", ["ModifiedNonce"], n=flip(nonce, 20, 3)),
        bad("first sealed bit flipped", ["ModifiedCiphertext"], s=flip(sealed, 0)),
        bad("bit of the counters flipped", ["ModifiedCiphertext"], s=flip(sealed, 39, 1)),
        bad("first tag bit flipped", ["ModifiedTag"], s=flip(sealed, 40)),
        bad("last tag bit flipped", ["ModifiedTag"], s=flip(sealed, 55, 7)),
        bad("AD bit flipped", ["ModifiedAd"], a=flip(ad, 70)),
        bad("AD without the wire prefix", ["ModifiedAd"], a=ad[:66]),
        bad("empty AD", ["ModifiedAd"], a=b""),
        bad("another header key", ["WrongKey"], k=rnd(ns, "next header key")),
        bad("tag removed", ["Truncated"], s=sealed[:40]),
        bad("one byte short", ["Truncated"], s=sealed[:55]),
    ]
    return envelope(
        schema="e2ee_header_aead_schema_v1.json",
        algorithm="XChaCha20-Poly1305",
        header=[
            "Header encryption: sealed = XChaCha20-Poly1305(key = header key, nonce (24 bytes), "
            "plaintext = header, ad = AD || wire prefix); header = ratchet key (32) || PN (u32 "
            "BE) || N (u32 BE). On the wire the header field is nonce || sealed (80 bytes).",
        ],
        notes=HEADER_AEAD_NOTES,
        groups=[
            {"type": "HeaderAeadEncrypt", "tests": valid},
            {"type": "HeaderAeadDecrypt", "tests": invalid},
        ],
    )


# --- ML-KEM-1024 ------------------------------------------------------------------------------

MLKEM_NOTES = {
    "Valid": note("BASIC", "Decapsulation of a ciphertext made by Encaps_internal(ek, m)."),
    "ImplicitRejection": note(
        "DEFINED",
        "The ciphertext was modified: decapsulation does not fail but returns "
        "J(z || c) (FIPS 203 implicit rejection); the handshake then fails to authenticate.",
    ),
    "KeyFromSeed": note("BASIC", "The encapsulation key derived from the 64-byte seed d || z."),
    "ModulusOverflow": note(
        "CAN_OF_WORMS",
        "A coefficient of the encapsulation key is >= q = 3329: FIPS 203 section 7.2's "
        "modulus check fails; e2ee refuses the key (handshake_failed).",
    ),
    "WrongLength": note("MODIFIED_PARAMETER", "A key or ciphertext of the wrong length."),
}


def _set_coefficient(ek: bytes, index: int, value: int) -> bytes:
    """Set the 12-bit coefficient ``index`` of t_hat to ``value`` (may be >= q)."""
    out = bytearray(ek)
    byte = (index // 2) * 3
    if index % 2 == 0:
        out[byte] = value & 0xFF
        out[byte + 1] = (out[byte + 1] & 0xF0) | (value >> 8)
    else:
        out[byte + 1] = (out[byte + 1] & 0x0F) | ((value & 0x0F) << 4)
        out[byte + 2] = value >> 4
    return bytes(out)


def mlkem_file() -> JSON:
    groups: list[JSON] = []
    for key_index in range(2):
        seed, ek = kem_key(f"mlkem vectors key {key_index}")
        _, dk = ref.mlkem1024_keygen(seed)
        tests: list[JSON] = []
        for i in range(3):
            m = rnd("mlkem", f"key {key_index} m {i}")
            shared, ct = ref.mlkem1024_encaps(ek, m)
            assert ref.mlkem1024_decaps(dk, ct) == shared
            tests.append(
                case(
                    f"encapsulation {i}",
                    ["Valid"],
                    m=hx(m),
                    ciphertext=hx(ct),
                    sharedSecret=hx(shared),
                )
            )
        _, ct = ref.mlkem1024_encaps(ek, rnd("mlkem", f"key {key_index} m 0"))
        for index, bit in ((0, 0), (1000, 3), (1567, 7)):
            bad_ct = flip(ct, index, bit)
            tests.append(
                case(
                    f"ciphertext bit {bit} of byte {index} flipped",
                    ["ImplicitRejection"],
                    ciphertext=hx(bad_ct),
                    sharedSecret=hx(ref.mlkem1024_decaps(dk, bad_ct)),
                )
            )
        tests.append(
            case(
                "ciphertext one byte short",
                ["WrongLength"],
                "invalid",
                ciphertext=hx(ct[:-1]),
                error="handshake_failed",
            )
        )
        tests.append(
            case(
                "ciphertext one byte long",
                ["WrongLength"],
                "invalid",
                ciphertext=hx(ct + b"\x00"),
                error="handshake_failed",
            )
        )
        groups.append(
            {
                "type": "MlKemDecapsulation",
                "parameterSet": "ML-KEM-1024",
                "seed": hx(seed),
                "encapsulationKey": hx(ek),
                "tests": tests,
            }
        )
    checks: list[JSON] = []
    for i in range(2):
        seed, ek = kem_key(f"mlkem check key {i}")
        checks.append(
            case(
                "encapsulation key derived from its seed",
                ["KeyFromSeed"],
                seed=hx(seed),
                encapsulationKey=hx(ek),
            )
        )
    _, ek = kem_key("mlkem check key 0")
    for index, value in ((0, 3329), (511, 4095), (1023, 3330)):
        bad_ek = _set_coefficient(ek, index, value)
        assert not ref.mlkem1024_encaps_key_ok(bad_ek)
        checks.append(
            case(
                f"coefficient {index} set to {value}",
                ["ModulusOverflow"],
                "invalid",
                encapsulationKey=hx(bad_ek),
                error="handshake_failed",
            )
        )
    checks.append(
        case(
            "key one byte short",
            ["WrongLength"],
            "invalid",
            encapsulationKey=hx(ek[:-1]),
            error="handshake_failed",
        )
    )
    checks.append(
        case(
            "ML-KEM-768 sized key (1184 bytes)",
            ["WrongLength"],
            "invalid",
            encapsulationKey=hx(ek[:1152] + ek[-32:]),
            error="handshake_failed",
        )
    )
    groups.append(
        {"type": "MlKemEncapsulationKeyCheck", "parameterSet": "ML-KEM-1024", "tests": checks}
    )
    return envelope(
        schema="e2ee_mlkem_schema_v1.json",
        algorithm="ML-KEM-1024",
        header=[
            "ML-KEM-1024 (FIPS 203) as e2ee uses it. Keys are stored as the 64-byte seed d || z.",
            "MlKemDecapsulation: sharedSecret = Decaps(dk from seed, ciphertext); `m` is the "
            "encapsulation randomness (ciphertext = Encaps_internal(ek, m)) for implementations "
            "that can encapsulate deterministically.",
            "MlKemEncapsulationKeyCheck: keys an initiator must refuse to encapsulate to; a "
            "valid case also gives the seed it derives from.",
        ],
        notes=MLKEM_NOTES,
        groups=groups,
    )


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
