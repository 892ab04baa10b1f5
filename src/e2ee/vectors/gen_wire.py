"""Generators of the wire-encoding vectors: prekey bundles, initial and normal messages.

The bytes are assembled by hand (CBOR heads from :mod:`e2ee.vectors.reference`), so that the
invalid encodings (indefinite lengths, duplicate keys, non-minimal heads, trailing bytes) can
be written at all; e2ee's codec is not used here.
"""

from __future__ import annotations

import struct
from typing import Any

from e2ee import limits
from e2ee.vectors import reference as ref
from e2ee.vectors.common import JSON, envelope, hx, note
from e2ee.vectors.gen_primitives import case, kem_key, rnd

WIRE_NOTES = {
    "Valid": note("BASIC", "A canonical encoding; the decoded fields are given."),
    "EdgeCaseInteger": note("EDGE_CASE", "Integers at the boundaries of the CBOR head sizes."),
    "IndefiniteLength": note(
        "CAN_OF_WORMS", "An indefinite-length array, map or byte string (not canonical CBOR)."
    ),
    "DuplicateKey": note("CAN_OF_WORMS", "A map key occurs twice."),
    "UnsortedKeys": note("CAN_OF_WORMS", "Map keys are not in canonical order."),
    "TrailingBytes": note("MODIFIED_PARAMETER", "Bytes follow the structure."),
    "NonMinimalInteger": note(
        "CAN_OF_WORMS",
        "An integer, length or map key is encoded with more bytes than needed (RFC 8949 "
        "section 4.2.1 requires the shortest head).",
    ),
    "WrongLength": note("MODIFIED_PARAMETER", "A key, id, header or ciphertext has a bad size."),
    "UnknownVersion": note(
        "DEFINED", "A protocol version this implementation does not speak: unsupported_version."
    ),
    "WrongType": note("MODIFIED_PARAMETER", "The structure-type field names another structure."),
    "WrongItemType": note(
        "MODIFIED_PARAMETER", "A field has the wrong CBOR type (text, negative, float, tag...)."
    ),
    "MissingField": note("MODIFIED_PARAMETER", "A required field is absent."),
    "UnknownField": note("MODIFIED_PARAMETER", "A map key the format does not define."),
    "IncompleteGroup": note(
        "MODIFIED_PARAMETER",
        "An optional prekey is present without its id or signature (all or nothing).",
    ),
    "Truncated": note("MODIFIED_PARAMETER", "The encoding ends early (or is empty)."),
    "TooLarge": note("DEFINED", "Larger than the size limit of the structure."),
    "ExplicitNull": note(
        "CAN_OF_WORMS",
        "An optional bundle field is present with the value null instead of being absent. "
        "That would be a second encoding of the same bundle, so it is rejected "
        "(spec/wire.md section 3: absent fields are omitted, never null).",
    ),
    "HeaderModeMismatch": note(
        "MODIFIED_PARAMETER", "The header size does not match the header-encryption flag."
    ),
    "TooDeep": note(
        "CAN_OF_WORMS",
        f"Arrays nested deeper than MAX_CBOR_DEPTH = {limits.MAX_CBOR_DEPTH} (spec/wire.md "
        "section 1), within the structure's size limit. A decoder without a depth limit "
        "recurses once per level and may exhaust its stack; it must refuse the input.",
    ),
    "NonIntegerKey": note(
        "CAN_OF_WORMS",
        "A map key that is not an integer (true, a text string), placed where canonical order "
        "puts it. Map keys are integers 0..23 (spec/wire.md section 1). In some languages true "
        "equals 1, so a decoder that builds a dictionary first may read `true: 1` as the key 1.",
    ),
    "SharedValue": note(
        "CAN_OF_WORMS",
        "CBOR value sharing (tags 28 and 29) or string references (tags 256 and 25). No tag is "
        "admitted (spec/wire.md section 1), and a decoder must refuse them before it resolves "
        "them: resolved, one field reads as a copy of another, and a few hundred bytes of "
        "nested references stand for a value of exponential size, whose walk or re-encoding "
        "never ends.",
    ),
    "Undefined": note(
        "CAN_OF_WORMS",
        "The simple value undefined (0xf7) where null (0xf6) is allowed. Only false, true and "
        "null are admitted (spec/wire.md section 1); decoders that map undefined to their null "
        "accept it, giving the message a second encoding.",
    ),
}


def uint(value: int, width: int | None = None) -> bytes:
    """Unsigned integer head; ``width`` (1, 2, 4, 8) forces a longer, non-minimal head."""
    if width is None:
        return ref.cbor_head(0, value)
    info = {1: 24, 2: 25, 4: 26, 8: 27}[width]
    return bytes((info,)) + value.to_bytes(width, "big")


def bstr(value: bytes, width: int | None = None) -> bytes:
    if width is None:
        return ref.cbor_head(2, len(value)) + value
    info = {1: 24, 2: 25, 4: 26, 8: 27}[width]
    return bytes((0x40 | info,)) + len(value).to_bytes(width, "big") + value


def array(items: list[bytes]) -> bytes:
    return ref.cbor_head(4, len(items)) + b"".join(items)


def cmap(pairs: list[tuple[bytes, bytes]]) -> bytes:
    return ref.cbor_head(5, len(pairs)) + b"".join(k + v for k, v in pairs)


SHAREABLE, SHARED_REF = b"\xd8\x1c", b"\xd8\x1d"  # tag 28, tag 29 (RFC 8949 registry)
STRINGREF_NAMESPACE, STRINGREF = b"\xd9\x01\x00", b"\xd8\x19"  # tag 256, tag 25


def shared_dag(levels: int, width: int) -> bytes:
    """A_i = 28([A_(i-1), 29(index of A_(i-1)) x (width - 1)]), A_0 = 28(h''): about
    3 * levels * width bytes that resolve to width ** levels leaves. Shareable items are
    numbered in the order they start, so A_levels is 0 and A_(i-1) is levels - i + 1."""
    data = SHAREABLE + bstr(b"")
    for level in range(1, levels + 1):
        reference = SHARED_REF + uint(levels - level + 1)
        data = SHAREABLE + ref.cbor_head(4, width) + data + reference * (width - 1)
    return data


MAX_CIPHERTEXT_SIZE = (limits.MAX_PLAINTEXT_SIZE // 16 + 1) * 16 + limits.MESSAGE_TAG_SIZE
"""spec/wire.md [REQ-WIRE-12]: a padded MAX_PLAINTEXT_SIZE plaintext plus the tag (262176)."""

NULL, TRUE, FALSE, UNDEFINED = b"\xf6", b"\xf5", b"\xf4", b"\xf7"

# --- bundles --------------------------------------------------------------------------------

_BUNDLE_NAMES = {
    2: "identityKey",
    3: "signedPrekeyId",
    4: "signedPrekey",
    5: "signedPrekeyTimestamp",
    6: "signedPrekeySignature",
    7: "kemPrekeyId",
    8: "kemPrekey",
    9: "oneTimePrekeyId",
    10: "oneTimePrekey",
    11: "oneTimePrekeySignature",
    12: "oneTimeKemPrekeyId",
    13: "oneTimeKemPrekey",
    14: "oneTimeKemPrekeySignature",
}


def _bundle_values(
    ns: str,
    *,
    kem: bool,
    one_time: bool,
    one_time_kem: bool,
    spk_id: int = 1,
    timestamp: int = 1_800_000_000,
) -> dict[int, int | bytes]:
    seed = rnd(ns, "identity")
    values: dict[int, int | bytes] = {
        0: limits.PROTOCOL_VERSION,
        1: limits.TYPE_PREKEY_BUNDLE,
        2: ref.ed25519_public_key(seed),
        3: spk_id,
        4: ref.x25519_base(rnd(ns, "spk")),
        5: timestamp,
        6: ref.ed25519_sign(seed, b"spk signature"),
    }
    if kem:
        values[7] = spk_id + 1
        values[8] = kem_key("wire kem")[1]
    if one_time:
        values[9] = spk_id + 2
        values[10] = ref.x25519_base(rnd(ns, "opk"))
        values[11] = ref.ed25519_sign(seed, b"opk signature")
    if one_time_kem:
        values[12] = spk_id + 3
        values[13] = kem_key("wire one-time kem")[1]
        values[14] = ref.ed25519_sign(seed, b"okem signature")
    return values


def _encode_value(value: int | bytes) -> bytes:
    return uint(value) if isinstance(value, int) else bstr(value)


def _bundle_pairs(values: dict[int, int | bytes]) -> list[tuple[bytes, bytes]]:
    return [(uint(k), _encode_value(v)) for k, v in sorted(values.items())]


def _bundle_fields(values: dict[int, int | bytes]) -> JSON:
    fields: JSON = {name: None for name in _BUNDLE_NAMES.values()}
    for key, value in values.items():
        if key in _BUNDLE_NAMES:
            fields[_BUNDLE_NAMES[key]] = value if isinstance(value, int) else hx(value)
    return fields


def _replace(pairs: list[tuple[bytes, bytes]], key: int, value: bytes) -> list[tuple[bytes, bytes]]:
    return [(k, value if k == uint(key) else v) for k, v in pairs]


def _without(pairs: list[tuple[bytes, bytes]], *keys: int) -> list[tuple[bytes, bytes]]:
    drop = {uint(k) for k in keys}
    return [(k, v) for k, v in pairs if k not in drop]


def bundle_file() -> JSON:
    ns = "wire bundle"
    valid: list[JSON] = []
    shapes = [
        ("classic, no one-time prekey", {"kem": False, "one_time": False, "one_time_kem": False}),
        ("classic with a one-time prekey", {"kem": False, "one_time": True, "one_time_kem": False}),
        (
            "post-quantum, last-resort ML-KEM prekey only",
            {"kem": True, "one_time": False, "one_time_kem": False},
        ),
        (
            "post-quantum with both one-time prekeys",
            {"kem": True, "one_time": True, "one_time_kem": True},
        ),
        (
            "post-quantum with a one-time ML-KEM prekey only",
            {"kem": True, "one_time": False, "one_time_kem": True},
        ),
    ]
    for comment, shape in shapes:
        values = _bundle_values(ns, **shape)
        valid.append(
            case(
                comment,
                ["Valid"],
                bundle=hx(cmap(_bundle_pairs(values))),
                fields=_bundle_fields(values),
            )
        )
    for spk_id, timestamp in ((2**32 - 4, 2**63 - 1), (0, 0), (21, 23), (22, 255)):
        values = _bundle_values(
            ns, kem=False, one_time=True, one_time_kem=False, spk_id=spk_id, timestamp=timestamp
        )
        valid.append(
            case(
                f"signed prekey id {spk_id}, timestamp {timestamp}",
                ["Valid", "EdgeCaseInteger"],
                bundle=hx(cmap(_bundle_pairs(values))),
                fields=_bundle_fields(values),
            )
        )
    base_values = _bundle_values(ns, kem=False, one_time=True, one_time_kem=False)
    base = _bundle_pairs(base_values)
    canonical = cmap(base)
    invalid: list[JSON] = []

    def bad(comment: str, flags: list[str], data: bytes, error: str = "decode_error") -> None:
        invalid.append(case(comment, flags, "invalid", bundle=hx(data), error=error))

    bad(
        "indefinite-length map",
        ["IndefiniteLength"],
        b"\xbf" + b"".join(k + v for k, v in base) + b"\xff",
    )
    identity = base_values[2]
    assert isinstance(identity, bytes)
    bad(
        "identity key as an indefinite-length byte string",
        ["IndefiniteLength"],
        cmap(_replace(base, 2, b"\x5f" + bstr(identity[:16]) + bstr(identity[16:]) + b"\xff")),
    )
    dup = [*base[:3], base[2], *base[3:]]
    bad("identity key (key 2) twice, same value", ["DuplicateKey"], cmap(dup))
    other = ref.ed25519_public_key(rnd(ns, "other identity"))
    bad(
        "key 2 twice, different values",
        ["DuplicateKey"],
        cmap([*base[:3], (uint(2), bstr(other)), *base[3:]]),
    )
    bad("keys 3 and 4 swapped", ["UnsortedKeys"], cmap([*base[:3], base[4], base[3], *base[5:]]))
    bad("a zero byte after the map", ["TrailingBytes"], canonical + b"\x00")
    bad("two bundles back to back", ["TrailingBytes"], canonical + canonical)
    bad(
        "signed prekey id 1 as 0x18 0x01",
        ["NonMinimalInteger"],
        cmap(_replace(base, 3, uint(1, 1))),
    )
    bad(
        "signed prekey id 1 as an 8-byte integer",
        ["NonMinimalInteger"],
        cmap(_replace(base, 3, uint(1, 8))),
    )
    bad("version 1 as 0x18 0x01", ["NonMinimalInteger"], cmap(_replace(base, 0, uint(1, 1))))
    bad(
        "map key 4 as 0x18 0x04",
        ["NonMinimalInteger"],
        cmap([(uint(4, 1) if k == uint(4) else k, v) for k, v in base]),
    )
    bad(
        "map length in a 1-byte head",
        ["NonMinimalInteger"],
        b"\xb8" + bytes((len(base),)) + b"".join(k + v for k, v in base),
    )
    spk = base_values[4]
    assert isinstance(spk, bytes)
    bad(
        "signed prekey length 32 as 0x59 0x00 0x20",
        ["NonMinimalInteger"],
        cmap(_replace(base, 4, bstr(spk, 2))),
    )
    bad(
        "timestamp with an 8-byte head",
        ["NonMinimalInteger"],
        cmap(_replace(base, 5, uint(1_800_000_000, 8))),
    )
    bad("version 2", ["UnknownVersion"], cmap(_replace(base, 0, uint(2))), "unsupported_version")
    bad("version 0", ["UnknownVersion"], cmap(_replace(base, 0, uint(0))), "unsupported_version")
    bad(
        "version 255", ["UnknownVersion"], cmap(_replace(base, 0, uint(255))), "unsupported_version"
    )
    bad("no version", ["MissingField"], cmap(_without(base, 0)))
    bad("structure type 2 (initial message)", ["WrongType"], cmap(_replace(base, 1, uint(2))))
    bad("structure type 16 (account state)", ["WrongType"], cmap(_replace(base, 1, uint(16))))
    bad("unknown key 15", ["UnknownField"], cmap([*base, (uint(15), uint(0))]))
    bad("negative key -1", ["UnknownField"], cmap([(b"\x20", uint(0)), *base]))
    bad("no signed prekey signature", ["MissingField"], cmap(_without(base, 6)))
    bad("no identity key", ["MissingField"], cmap(_without(base, 2)))
    bad("identity key of 31 bytes", ["WrongLength"], cmap(_replace(base, 2, bstr(identity[:31]))))
    bad(
        "identity key of 33 bytes",
        ["WrongLength"],
        cmap(_replace(base, 2, bstr(identity + b"\x00"))),
    )
    bad("signed prekey of 31 bytes", ["WrongLength"], cmap(_replace(base, 4, bstr(spk[:31]))))
    sig = base_values[6]
    assert isinstance(sig, bytes)
    bad("signature of 63 bytes", ["WrongLength"], cmap(_replace(base, 6, bstr(sig[:63]))))
    bad("signed prekey id 2^32", ["WrongLength"], cmap(_replace(base, 3, uint(2**32))))
    bad("timestamp 2^63", ["WrongLength"], cmap(_replace(base, 5, uint(2**63))))
    bad(
        "one-time prekey id without its key and signature",
        ["IncompleteGroup"],
        cmap(_without(base, 10, 11)),
    )
    bad("one-time prekey without its signature", ["IncompleteGroup"], cmap(_without(base, 11)))
    bad("negative timestamp", ["WrongItemType"], cmap(_replace(base, 5, b"\x20")))
    bad("signed prekey id as true", ["WrongItemType"], cmap(_replace(base, 3, TRUE)))
    bad(
        "identity key as a text string",
        ["WrongItemType"],
        cmap(_replace(base, 2, ref.cbor_head(3, 32) + b"a" * 32)),
    )
    bad(
        "timestamp as a float",
        ["WrongItemType"],
        cmap(_replace(base, 5, b"\xfb" + struct.pack(">d", 1.8e9))),
    )
    bad(
        "timestamp as a tagged bignum",
        ["WrongItemType"],
        cmap(_replace(base, 5, b"\xc2" + bstr((1_800_000_000).to_bytes(4, "big")))),
    )
    bad(
        "identity key inside an array",
        ["WrongItemType"],
        cmap(_replace(base, 2, array([bstr(identity)]))),
    )
    bad("an array instead of a map", ["WrongItemType"], array([v for _, v in base]))
    bad("empty input", ["Truncated"], b"")
    bad("last byte missing", ["Truncated"], canonical[:-1])
    bad(
        "signature of 9000 bytes (bundle over 8 KiB)",
        ["TooLarge"],
        cmap(_replace(base, 6, bstr(bytes(9000)))),
    )
    pq_values = _bundle_values(ns, kem=True, one_time=False, one_time_kem=True)
    pq = _bundle_pairs(pq_values)
    kem_public = pq_values[8]
    assert isinstance(kem_public, bytes)
    bad(
        "ML-KEM prekey of 1567 bytes", ["WrongLength"], cmap(_replace(pq, 8, bstr(kem_public[:-1])))
    )
    bad(
        "one-time ML-KEM prekey without a last-resort ML-KEM prekey",
        ["IncompleteGroup"],
        cmap(_without(pq, 7, 8)),
    )
    bad("ML-KEM prekey without its id", ["IncompleteGroup"], cmap(_without(pq, 7)))
    invalid.append(
        case(
            "one-time prekey fields present as null",
            ["ExplicitNull"],
            "invalid",
            bundle=hx(
                cmap(
                    sorted(
                        [
                            *_bundle_pairs({k: v for k, v in base_values.items() if k < 9}),
                            (uint(9), NULL),
                            (uint(10), NULL),
                            (uint(11), NULL),
                        ]
                    )
                )
            ),
            error="decode_error",
        )
    )
    bad(
        "4000 nested one-element arrays around 0 (4001 bytes, within MAX_BUNDLE_SIZE)",
        ["TooDeep"],
        b"\x81" * 4000 + b"\x00",
    )
    bad(
        "extra map key true (0xf5) with the value 1, after key 11",
        ["NonIntegerKey"],
        cmap([*base, (TRUE, uint(1))]),
    )
    bad(
        'extra map key "a" (a text string), after key 11',
        ["NonIntegerKey"],
        cmap([*base, (ref.cbor_head(3, 1) + b"a", uint(0))]),
    )
    bad(
        "identity key (key 2) shareable (tag 28), signed prekey (key 4) a shared reference to it "
        "(tag 29)",
        ["SharedValue", "WrongItemType"],
        cmap(_replace(_replace(base, 2, SHAREABLE + bstr(identity)), 4, SHARED_REF + uint(0))),
    )
    bad(
        "the map in a string-reference namespace (tag 256), the signed prekey (key 4) string "
        "reference 0 (tag 25) to the identity key",
        ["SharedValue", "WrongItemType"],
        STRINGREF_NAMESPACE + cmap(_replace(base, 4, STRINGREF + uint(0))),
    )
    dag = shared_dag(6, 30)
    bad(
        f"identity key (key 2) replaced by {len(dag)} bytes of nested value sharing that resolve "
        "to 30^6 leaves",
        ["SharedValue", "WrongItemType"],
        cmap(_replace(base, 2, dag)),
    )
    # spec/wire.md [REQ-WIRE-05]: a version that is not an unsigned integer is a decode_error,
    # not an unsupported version.
    bad("version -1 (a CBOR negative integer)", ["WrongItemType"], cmap(_replace(base, 0, b"\x20")))
    return envelope(
        schema="e2ee_wire_bundle_schema_v1.json",
        algorithm="e2ee-prekey-bundle",
        header=[
            "Prekey bundles: a canonical CBOR map with integer keys 0..14 (spec/wire.cddl).",
            "Valid: PreKeyBundle decoding yields `fields` (null = absent) and re-encoding gives "
            "the same bytes. Invalid: decoding fails with `error`. Signatures are not checked by "
            "decoding (see bundle_signatures.json and the handshake vectors).",
        ],
        notes=WIRE_NOTES,
        groups=[
            {"type": "BundleDecode", "tests": valid},
            {"type": "BundleDecode", "tests": invalid},
        ],
    )


# --- messages -------------------------------------------------------------------------------


def _message_items(
    ns: str,
    *,
    initial: bool,
    header_encryption: bool,
    one_time_id: int | None = None,
    kem: bool = False,
    spk_id: int = 1,
    ct_size: int = 32,
) -> list[tuple[str, bytes, Any]]:
    """(field name, encoded item, JSON value) for each array item of a message."""
    items: list[tuple[str, bytes, Any]] = [
        ("version", uint(limits.PROTOCOL_VERSION), None),
        (
            "type",
            uint(limits.TYPE_INITIAL_MESSAGE if initial else limits.TYPE_NORMAL_MESSAGE),
            None,
        ),
    ]
    session_id = rnd(ns, "session id", 16)
    items.append(("sessionId", bstr(session_id), hx(session_id)))
    if initial:
        identity = ref.ed25519_public_key(rnd(ns, "identity"))
        base = ref.x25519_base(rnd(ns, "base"))
        items += [
            ("identityKey", bstr(identity), hx(identity)),
            ("baseKey", bstr(base), hx(base)),
            ("signedPrekeyId", uint(spk_id), spk_id),
            ("oneTimePrekeyId", NULL if one_time_id is None else uint(one_time_id), one_time_id),
        ]
        if kem:
            ct = rnd(ns, "kem ciphertext", limits.MLKEM1024_CIPHERTEXT_SIZE)
            items += [
                ("kemPrekeyId", uint(spk_id + 1), spk_id + 1),
                ("kemCiphertext", bstr(ct), hx(ct)),
            ]
        else:
            items += [("kemPrekeyId", NULL, None), ("kemCiphertext", NULL, None)]
        items.append(("headerEncryption", TRUE if header_encryption else FALSE, header_encryption))
    header = rnd(ns, "header", 80 if header_encryption else 40)
    body = rnd(ns, "ciphertext", ct_size)
    items += [("header", bstr(header), hx(header)), ("ciphertext", bstr(body), hx(body))]
    return items


def _encode(items: list[tuple[str, bytes, Any]]) -> bytes:
    return array([item for _, item, _ in items])


def _fields(items: list[tuple[str, bytes, Any]], initial: bool) -> JSON:
    fields: JSON = {"kind": "initial" if initial else "normal"}
    fields.update({name: value for name, _, value in items if name not in ("version", "type")})
    return fields


def _swap(items: list[tuple[str, bytes, Any]], name: str, encoded: bytes) -> bytes:
    return array([encoded if n == name else item for n, item, _ in items])


def _drop(items: list[tuple[str, bytes, Any]], *names: str) -> bytes:
    kept = [item for n, item, _ in items if n not in names]
    return array(kept)


def _common_invalid(items: list[tuple[str, bytes, Any]], ns: str, bad: Any, count: int) -> None:
    encoded = _encode(items)
    body = b"".join(item for _, item, _ in items)
    session_id = rnd(ns, "session id", 16)
    bad("indefinite-length array", ["IndefiniteLength"], b"\x9f" + body + b"\xff")
    bad(
        "session id as an indefinite-length byte string",
        ["IndefiniteLength"],
        _swap(items, "sessionId", b"\x5f" + bstr(session_id[:8]) + bstr(session_id[8:]) + b"\xff"),
    )
    bad("a zero byte after the array", ["TrailingBytes"], encoded + b"\x00")
    bad("the message twice", ["TrailingBytes"], encoded + encoded)
    bad("array length in a 1-byte head", ["NonMinimalInteger"], b"\x98" + bytes((count,)) + body)
    bad("version 1 as 0x18 0x01", ["NonMinimalInteger"], _swap(items, "version", uint(1, 1)))
    bad(
        "session id length 16 as 0x58 0x10",
        ["NonMinimalInteger"],
        _swap(items, "sessionId", bstr(session_id, 1)),
    )
    bad("version 2", ["UnknownVersion"], _swap(items, "version", uint(2)), "unsupported_version")
    bad("version 0", ["UnknownVersion"], _swap(items, "version", uint(0)), "unsupported_version")
    bad(
        "version 1000",
        ["UnknownVersion"],
        _swap(items, "version", uint(1000)),
        "unsupported_version",
    )
    bad("structure type 1 (bundle)", ["WrongType"], _swap(items, "type", uint(1)))
    bad("structure type 4", ["WrongType"], _swap(items, "type", uint(4)))
    bad("one item missing", ["MissingField"], _drop(items, "ciphertext"))
    bad("one item too many", ["UnknownField"], array([i for _, i, _ in items] + [NULL]))
    bad("session id of 15 bytes", ["WrongLength"], _swap(items, "sessionId", bstr(session_id[:15])))
    bad(
        "session id of 17 bytes",
        ["WrongLength"],
        _swap(items, "sessionId", bstr(session_id + b"\x00")),
    )
    bad(
        "ciphertext of 16 bytes (tag only)",
        ["WrongLength"],
        _swap(items, "ciphertext", bstr(bytes(16))),
    )
    bad("ciphertext of 33 bytes", ["WrongLength"], _swap(items, "ciphertext", bstr(bytes(33))))
    bad("empty ciphertext", ["WrongLength"], _swap(items, "ciphertext", bstr(b"")))
    bad(
        "session id as a text string",
        ["WrongItemType"],
        _swap(items, "sessionId", ref.cbor_head(3, 16) + b"s" * 16),
    )
    bad("header as null", ["WrongItemType"], _swap(items, "header", NULL))
    bad(
        "ciphertext inside an array",
        ["WrongItemType"],
        _swap(items, "ciphertext", array([bstr(bytes(32))])),
    )
    bad("version as a half float", ["WrongItemType"], _swap(items, "version", b"\xf9\x3c\x00"))
    bad(
        "a map instead of an array",
        ["WrongItemType"],
        cmap([(uint(i), item) for i, (_, item, _) in enumerate(items)]),
    )
    bad("empty input", ["Truncated"], b"")
    bad("last byte missing", ["Truncated"], encoded[:-1])
    bad("only the array head", ["Truncated"], encoded[:1])


def initial_message_file() -> JSON:
    ns = "wire initial"
    valid: list[JSON] = []
    shapes: list[tuple[str, JSON, list[str]]] = [
        (
            "X3DH, no one-time prekey, header encryption off",
            {"header_encryption": False},
            ["Valid"],
        ),
        (
            "X3DH with a one-time prekey, header encryption on",
            {"header_encryption": True, "one_time_id": 3},
            ["Valid"],
        ),
        (
            "PQXDH with a one-time prekey, header encryption on",
            {"header_encryption": True, "one_time_id": 3, "kem": True},
            ["Valid"],
        ),
        (
            "PQXDH, no one-time prekey, header encryption off, 64-byte ciphertext",
            {"header_encryption": False, "kem": True, "ct_size": 64},
            ["Valid"],
        ),
        (
            "signed prekey id 2^32 - 2, one-time prekey id 0",
            {"header_encryption": True, "one_time_id": 0, "spk_id": 2**32 - 2},
            ["Valid", "EdgeCaseInteger"],
        ),
        (
            "ids 23 and 24 (last 1-byte and first 2-byte integer heads)",
            {"header_encryption": False, "one_time_id": 24, "spk_id": 23},
            ["Valid", "EdgeCaseInteger"],
        ),
        (
            "ids 255 and 256",
            {"header_encryption": False, "one_time_id": 256, "spk_id": 255},
            ["Valid", "EdgeCaseInteger"],
        ),
        (
            "ids 65535 and 65536",
            {"header_encryption": False, "one_time_id": 65536, "spk_id": 65534},
            ["Valid", "EdgeCaseInteger"],
        ),
    ]
    for comment, shape, flags in shapes:
        items = _message_items(ns, initial=True, **shape)
        valid.append(case(comment, flags, message=hx(_encode(items)), fields=_fields(items, True)))
    items = _message_items(ns, initial=True, header_encryption=False, one_time_id=7)
    invalid: list[JSON] = []

    def bad(comment: str, flags: list[str], data: bytes, error: str = "decode_error") -> None:
        invalid.append(case(comment, flags, "invalid", message=hx(data), error=error))

    _common_invalid(items, ns, bad, 12)
    identity = bytes.fromhex(dict((n, v) for n, _, v in items)["identityKey"])
    base = bytes.fromhex(dict((n, v) for n, _, v in items)["baseKey"])
    bad(
        "signed prekey id 1 as 0x18 0x01",
        ["NonMinimalInteger"],
        _swap(items, "signedPrekeyId", uint(1, 1)),
    )
    bad(
        "one-time prekey id 7 as a 4-byte integer",
        ["NonMinimalInteger"],
        _swap(items, "oneTimePrekeyId", uint(7, 4)),
    )
    bad(
        "identity key of 31 bytes",
        ["WrongLength"],
        _swap(items, "identityKey", bstr(identity[:31])),
    )
    bad("base key of 33 bytes", ["WrongLength"], _swap(items, "baseKey", bstr(base + b"\x00")))
    bad("signed prekey id 2^32", ["WrongLength"], _swap(items, "signedPrekeyId", uint(2**32)))
    bad("negative signed prekey id", ["WrongItemType"], _swap(items, "signedPrekeyId", b"\x20"))
    bad(
        "one-time prekey id as a byte string",
        ["WrongItemType"],
        _swap(items, "oneTimePrekeyId", bstr(b"\x07")),
    )
    bad(
        "header-encryption flag as the integer 0",
        ["WrongItemType"],
        _swap(items, "headerEncryption", uint(0)),
    )
    bad(
        "ML-KEM prekey id without a ciphertext",
        ["IncompleteGroup"],
        _swap(items, "kemPrekeyId", uint(2)),
    )
    bad(
        "ML-KEM ciphertext without a prekey id",
        ["IncompleteGroup"],
        _swap(items, "kemCiphertext", bstr(bytes(limits.MLKEM1024_CIPHERTEXT_SIZE))),
    )
    pq_items = _message_items(ns, initial=True, header_encryption=False, kem=True)
    ct = bytes.fromhex(dict((n, v) for n, _, v in pq_items)["kemCiphertext"])
    bad(
        "ML-KEM ciphertext of 1567 bytes",
        ["WrongLength"],
        _swap(pq_items, "kemCiphertext", bstr(ct[:-1])),
    )
    bad(
        "80-byte (encrypted) header with the flag off",
        ["HeaderModeMismatch"],
        _swap(items, "header", bstr(bytes(80))),
    )
    bad(
        "40-byte header with the flag on",
        ["HeaderModeMismatch"],
        _swap(items, "headerEncryption", TRUE),
    )
    bad("header of 41 bytes", ["WrongLength"], _swap(items, "header", bstr(bytes(41))))
    no_one_time = _message_items(ns, initial=True, header_encryption=False)
    bad(
        "one-time prekey id undefined (0xf7) instead of null",
        ["Undefined"],
        _swap(no_one_time, "oneTimePrekeyId", UNDEFINED),
    )
    bad(
        "ML-KEM prekey id and ciphertext undefined (0xf7) instead of null",
        ["Undefined"],
        array(
            [
                UNDEFINED if n in ("kemPrekeyId", "kemCiphertext") else item
                for n, item, _ in no_one_time
            ]
        ),
    )
    return envelope(
        schema="e2ee_wire_message_schema_v1.json",
        algorithm="e2ee-initial-message",
        header=[
            "Initial messages: a canonical CBOR array [version, 2, session_id, identity_key, "
            "base_key, signed_prekey_id, one_time_prekey_id / null, kem_prekey_id / null, "
            "kem_ciphertext / null, header_encryption, header, ciphertext] (spec/wire.cddl).",
            "Valid: parsing yields `fields`; re-encoding them gives the same bytes. Invalid: "
            "parsing fails with `error`. Nothing is authenticated at this stage.",
        ],
        notes=WIRE_NOTES,
        groups=[
            {"type": "MessageDecode", "tests": valid},
            {"type": "MessageDecode", "tests": invalid},
        ],
    )


def normal_message_file() -> JSON:
    ns = "wire normal"
    valid: list[JSON] = []
    for comment, header_encryption, size in (
        ("header in clear, one-block ciphertext", False, 32),
        ("encrypted header, one-block ciphertext", True, 32),
        ("header in clear, 1024-byte body", False, 1040),
        ("encrypted header, two blocks", True, 48),
    ):
        items = _message_items(
            ns + comment, initial=False, header_encryption=header_encryption, ct_size=size
        )
        valid.append(
            case(comment, ["Valid"], message=hx(_encode(items)), fields=_fields(items, False))
        )
    items = _message_items(ns, initial=False, header_encryption=False)
    invalid: list[JSON] = []

    def bad(comment: str, flags: list[str], data: bytes, error: str = "decode_error") -> None:
        invalid.append(case(comment, flags, "invalid", message=hx(data), error=error))

    _common_invalid(items, ns, bad, 5)
    header = bytes.fromhex(dict((n, v) for n, _, v in items)["header"])
    bad(
        "header length 40 as 0x59 0x00 0x28",
        ["NonMinimalInteger"],
        _swap(items, "header", bstr(header, 2)),
    )
    for size in (0, 39, 41, 79, 81):
        bad(f"header of {size} bytes", ["WrongLength"], _swap(items, "header", bstr(bytes(size))))
    bad(
        "structure type 2 with the 5 items of a normal message",
        ["WrongType"],
        _swap(items, "type", uint(2)),
    )
    bad("header as true", ["WrongItemType"], _swap(items, "header", TRUE))
    # The size limits (spec/wire.md [REQ-WIRE-12], section 6). The lengths keep the ciphertext
    # a tag plus whole blocks, so only the limit refuses them.
    size = MAX_CIPHERTEXT_SIZE + 16
    bad(
        f"ciphertext of MAX_CIPHERTEXT_SIZE + 16 = {size} bytes (the message is within "
        "MAX_MESSAGE_SIZE)",
        ["TooLarge"],
        _swap(items, "ciphertext", bstr(bytes(size))),
    )
    fixed = len(_drop(items, "ciphertext")) + 5  # the rest of the message and a 5-byte head
    size = -(-(limits.MAX_MESSAGE_SIZE + 1 - fixed - 16) // 16) * 16 + 16
    oversized = _swap(items, "ciphertext", bstr(bytes(size)))
    assert len(oversized) > limits.MAX_MESSAGE_SIZE
    bad(
        f"message of {len(oversized)} bytes, over MAX_MESSAGE_SIZE = {limits.MAX_MESSAGE_SIZE}",
        ["TooLarge"],
        oversized,
    )
    return envelope(
        schema="e2ee_wire_message_schema_v1.json",
        algorithm="e2ee-normal-message",
        header=[
            "Normal messages: a canonical CBOR array [version, 3, session_id, header, "
            "ciphertext] (spec/wire.cddl); header is 40 bytes in clear or 80 bytes encrypted.",
            "Valid: parsing yields `fields`; re-encoding them gives the same bytes. Invalid: "
            "parsing fails with `error`.",
        ],
        notes=WIRE_NOTES,
        groups=[
            {"type": "MessageDecode", "tests": valid},
            {"type": "MessageDecode", "tests": invalid},
        ],
    )
