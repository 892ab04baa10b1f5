"""JSON Schemas (draft 2020-12) of the vector file formats, written to test_vectors/schemas/.

One schema per format; every test object is closed (``additionalProperties: false``) so a
field cannot appear in the vectors without being described here.
"""

from __future__ import annotations

from typing import Any

from e2ee.vectors.common import JSON, SCHEMA_VERSION, SPEC_VERSION

DRAFT = "https://json-schema.org/draft/2020-12/schema"
CATEGORIES = [
    "decode_error",
    "unsupported_version",
    "handshake_failed",
    "signature_invalid",
    "auth_failed",
    "duplicate_message",
    "too_many_skipped",
    "state_corrupt",
]


def hexs(size: int | None = None) -> JSON:
    if size is None:
        return {"type": "string", "pattern": "^([0-9a-f]{2})*$"}
    return {"type": "string", "pattern": f"^[0-9a-f]{{{2 * size}}}$"}


def nullable(schema: JSON) -> JSON:
    return {"anyOf": [schema, {"type": "null"}]}


UINT: JSON = {"type": "integer", "minimum": 0}
BOOL: JSON = {"type": "boolean"}
STR: JSON = {"type": "string"}
H32 = hexs(32)


def obj(properties: dict[str, Any], required: list[str] | None = None) -> JSON:
    return {
        "type": "object",
        "properties": properties,
        "required": sorted(properties) if required is None else sorted(required),
        "additionalProperties": False,
    }


RELAY_CATEGORIES = [
    "relay_bad_request",
    "relay_forbidden",
    "device_list_invalid",
    "signature_invalid",
]
"""The error categories of relay_signatures.json (e2ee.errors)."""


def case_object(
    properties: dict[str, Any],
    optional: list[str] | None = None,
    categories: list[str] = CATEGORIES,
) -> JSON:
    props: dict[str, Any] = {
        "tcId": {"type": "integer", "minimum": 1},
        "comment": STR,
        "flags": {"type": "array", "items": STR},
        "result": {"enum": ["valid", "invalid", "acceptable"]},
        "error": {"enum": categories},
        **properties,
    }
    optional = [*(optional or []), "error"]
    schema = obj(props, [k for k in props if k not in optional])
    schema["if"] = {"properties": {"result": {"const": "invalid"}}}
    schema["then"] = {"required": ["error"]}
    return schema


def group(kind: str, test: JSON, extra: dict[str, Any] | None = None) -> JSON:
    props: dict[str, Any] = {
        "type": {"const": kind},
        **(extra or {}),
        "tests": {"type": "array", "items": test},
    }
    return obj(props)


def envelope(name: str, title: str, groups: list[JSON]) -> JSON:
    note = obj({"bugType": STR, "description": STR})
    return {
        "$schema": DRAFT,
        "$id": name,
        "title": title,
        "type": "object",
        "properties": {
            "algorithm": STR,
            "header": {"type": "array", "items": STR},
            "notes": {"type": "object", "additionalProperties": note},
            "numberOfTests": UINT,
            "schema": {"const": name},
            "schemaVersion": {"const": SCHEMA_VERSION},
            "specVersion": {"const": SPEC_VERSION},
            "testGroups": {"type": "array", "items": {"oneOf": groups}},
        },
        "required": [
            "algorithm",
            "header",
            "notes",
            "numberOfTests",
            "schema",
            "schemaVersion",
            "specVersion",
            "testGroups",
        ],
        "additionalProperties": False,
    }


# --- scenario steps ---------------------------------------------------------------------------

_RANDOM = {"type": "array", "items": obj({"label": STR, "value": hexs()})}
_KEM = {
    "type": "array",
    "items": obj(
        {
            "label": STR,
            "m": H32,
            "encapsulationKeySha256": H32,
            "sharedSecret": H32,
            "ciphertext": hexs(1568),
        }
    ),
}
_RATCHET = obj(
    {
        "RK": H32,
        "CKs": nullable(H32),
        "CKr": nullable(H32),
        "DHs": H32,
        "DHr": nullable(H32),
        "Ns": UINT,
        "Nr": UINT,
        "PN": UINT,
        "HKs": nullable(H32),
        "HKr": nullable(H32),
        "NHKs": nullable(H32),
        "NHKr": nullable(H32),
        "awaitingReply": BOOL,
        "skippedCount": UINT,
        "skipped": nullable({"type": "array", "items": obj({"chain": H32, "n": UINT, "mk": H32})}),
    }
)
_HANDSHAKE = obj(
    {
        "dhOutputs": {"type": "array", "items": H32, "minItems": 3, "maxItems": 4},
        "kemSharedSecret": nullable(H32),
        "transcriptHash": H32,
        "rootKey": H32,
        "headerKey": H32,
        "nextHeaderKey": H32,
        "sessionId": hexs(16),
        "associatedData": hexs(66),
    }
)
_EXPECT = obj(
    {
        "error": {"enum": CATEGORIES},
        "stateUnchanged": {"const": True},
        "accountUnchanged": {"const": True},
        "identityKey": H32,
        "bundle": hexs(),
        "sessionId": hexs(16),
        "handshake": _HANDSHAKE,
        "ratchet": _RATCHET,
        "plaintext": hexs(),
        "message": hexs(),
        "messageKey": H32,
        "state": hexs(),
    },
    [],
)
_OPS = {
    "generate_account": ["postQuantum", "now"],
    "generate_one_time_prekeys": ["count"],
    "rotate_signed_prekey": ["now"],
    "prekey_bundle": [],
    "save_account": [],
    "load_account": ["state"],
    "start_session": ["bundle", "config", "now"],
    "accept_session": ["message", "config", "now"],
    "encrypt": ["plaintext"],
    "decrypt": ["message"],
    "save_session": ["stateKey"],
    "load_session": ["state", "stateKey"],
}
_STEP: JSON = {
    "type": "object",
    "properties": {
        "op": {"enum": sorted(_OPS)},
        "party": STR,
        "comment": STR,
        "random": _RANDOM,
        "kemEncapsulations": _KEM,
        "expect": _EXPECT,
        "postQuantum": BOOL,
        "now": UINT,
        "count": UINT,
        "bundle": hexs(),
        "config": {
            "type": "object",
            "properties": {
                "headerEncryption": BOOL,
                "allowX3dh": BOOL,
                "requireHeaderEncryption": BOOL,
            },
            "additionalProperties": False,
        },
        "message": hexs(),
        "plaintext": hexs(),
        "repeat": {"type": "integer", "minimum": 2},
        "state": hexs(),
        "stateKey": nullable(H32),
    },
    "required": ["op", "party", "random", "expect"],
    "additionalProperties": False,
    "allOf": [
        {"if": {"properties": {"op": {"const": op}}}, "then": {"required": required}}
        for op, required in sorted(_OPS.items())
        if required
    ],
}
_STEPS = {"type": "array", "items": _STEP}

# --- the schemas ------------------------------------------------------------------------------


def _schemas() -> dict[str, JSON]:
    bundle_fields = obj(
        {
            "identityKey": H32,
            "signedPrekeyId": UINT,
            "signedPrekey": H32,
            "signedPrekeyTimestamp": UINT,
            "signedPrekeySignature": hexs(64),
            "kemPrekeyId": nullable(UINT),
            "kemPrekey": nullable(hexs(1568)),
            "oneTimePrekeyId": nullable(UINT),
            "oneTimePrekey": nullable(H32),
            "oneTimePrekeySignature": nullable(hexs(64)),
            "oneTimeKemPrekeyId": nullable(UINT),
            "oneTimeKemPrekey": nullable(hexs(1568)),
            "oneTimeKemPrekeySignature": nullable(hexs(64)),
        }
    )
    message_fields = obj(
        {
            "kind": {"enum": ["initial", "normal"]},
            "sessionId": hexs(16),
            "header": hexs(),
            "ciphertext": hexs(),
            "identityKey": H32,
            "baseKey": H32,
            "signedPrekeyId": UINT,
            "oneTimePrekeyId": nullable(UINT),
            "kemPrekeyId": nullable(UINT),
            "kemCiphertext": nullable(hexs(1568)),
            "headerEncryption": BOOL,
        },
        ["kind", "sessionId", "header", "ciphertext"],
    )
    signature_fields = obj(
        {
            "prekeyId": UINT,
            "timestamp": UINT,
            "publicKey": H32,
            "kemPrekeyId": UINT,
            "kemPublicKey": STR,
        },
        ["prekeyId"],
    )
    transcript = obj(
        {
            "initiatorIdentityKey": H32,
            "responderIdentityKey": H32,
            "signedPrekeyId": UINT,
            "signedPrekey": H32,
            "signedPrekeyTimestamp": UINT,
            "oneTimePrekeyId": nullable(UINT),
            "oneTimePrekey": nullable(H32),
            "kemPrekeyId": nullable(UINT),
            "kemPrekey": nullable(STR),
            "kemCiphertext": nullable(hexs(1568)),
            "baseKey": H32,
            "headerEncryption": BOOL,
        }
    )
    keys3 = {"rootKey": H32, "dhOutput": H32, "newRootKey": H32, "chainKey": H32}
    return {
        "e2ee_x25519_schema_v1.json": envelope(
            "e2ee_x25519_schema_v1.json",
            "X25519 computations and public-key derivation",
            [
                group(
                    "XdhComp",
                    case_object(
                        {"private": H32, "public": H32, "shared": H32, "rfc7748Shared": H32},
                        ["shared", "rfc7748Shared"],
                    ),
                    {"curve": {"const": "curve25519"}},
                ),
                group(
                    "XdhPublicKey",
                    case_object({"private": H32, "public": H32}),
                    {"curve": {"const": "curve25519"}},
                ),
            ],
        ),
        "e2ee_identity_key_schema_v1.json": envelope(
            "e2ee_identity_key_schema_v1.json",
            "Identity keys: Ed25519 to X25519 and validation",
            [
                group(
                    "IdentityKeyDerivation",
                    case_object(
                        {"seed": H32, "identityKey": H32, "x25519Private": H32, "x25519Public": H32}
                    ),
                ),
                group(
                    "IdentityKeyValidation",
                    case_object({"identityKey": H32, "x25519Public": H32}, ["x25519Public"]),
                ),
            ],
        ),
        "e2ee_bundle_signature_schema_v1.json": envelope(
            "e2ee_bundle_signature_schema_v1.json",
            "Ed25519 signatures on prekeys",
            [
                group(
                    "BundleSignatureVerify",
                    case_object(
                        {
                            "fields": signature_fields,
                            "payload": hexs(),
                            "payloadSha256": H32,
                            "signature": hexs(),
                        },
                        ["payload", "payloadSha256"],
                    ),
                    {
                        "purpose": {
                            "enum": ["signed-prekey", "one-time-prekey", "one-time-kem-prekey"]
                        },
                        "label": hexs(),
                        "identityKey": H32,
                        "kemPublicKeys": {"type": "object", "additionalProperties": hexs(1568)},
                    },
                )
            ],
        ),
        "e2ee_hkdf_schema_v1.json": envelope(
            "e2ee_hkdf_schema_v1.json",
            "HKDF-SHA-256",
            [
                group(
                    "HkdfTest",
                    case_object(
                        {"ikm": hexs(), "salt": hexs(), "info": hexs(), "size": UINT, "okm": hexs()}
                    ),
                )
            ],
        ),
        "e2ee_message_aead_schema_v1.json": envelope(
            "e2ee_message_aead_schema_v1.json",
            "Message encryption (AES-256-CBC + HMAC-SHA-256/128)",
            [
                group(
                    "MessageAeadEncrypt",
                    case_object(
                        {
                            "messageKey": H32,
                            "encKey": H32,
                            "authKey": H32,
                            "iv": hexs(16),
                            "ad": hexs(),
                            "plaintext": hexs(),
                            "ciphertext": hexs(),
                        }
                    ),
                ),
                group(
                    "MessageAeadDecrypt",
                    case_object({"messageKey": H32, "ad": hexs(), "ciphertext": hexs()}),
                ),
            ],
        ),
        "e2ee_header_aead_schema_v1.json": envelope(
            "e2ee_header_aead_schema_v1.json",
            "Header encryption (XChaCha20-Poly1305)",
            [
                group(
                    "HeaderAeadEncrypt",
                    case_object(
                        {
                            "key": H32,
                            "nonce": hexs(24),
                            "ad": hexs(),
                            "header": hexs(40),
                            "ratchetKey": H32,
                            "previousChainLength": UINT,
                            "messageNumber": UINT,
                            "sealed": hexs(56),
                        }
                    ),
                ),
                group(
                    "HeaderAeadDecrypt",
                    case_object({"key": H32, "nonce": hexs(24), "ad": hexs(), "sealed": hexs()}),
                ),
            ],
        ),
        "e2ee_mlkem_schema_v1.json": envelope(
            "e2ee_mlkem_schema_v1.json",
            "ML-KEM-1024 decapsulation and encapsulation-key checks",
            [
                group(
                    "MlKemDecapsulation",
                    case_object(
                        {"m": H32, "ciphertext": hexs(), "sharedSecret": H32}, ["m", "sharedSecret"]
                    ),
                    {
                        "parameterSet": {"const": "ML-KEM-1024"},
                        "seed": hexs(64),
                        "encapsulationKey": hexs(1568),
                    },
                ),
                group(
                    "MlKemEncapsulationKeyCheck",
                    case_object({"encapsulationKey": hexs(), "seed": hexs(64)}, ["seed"]),
                    {"parameterSet": {"const": "ML-KEM-1024"}},
                ),
            ],
        ),
        "e2ee_kdf_rk_schema_v1.json": envelope(
            "e2ee_kdf_rk_schema_v1.json",
            "KDF_RK, KDF_RK_HE and DH ratchet steps",
            [
                group("KdfRk", case_object(keys3)),
                group("KdfRkHe", case_object({**keys3, "nextHeaderKey": H32})),
                group(
                    "DhRatchetStep",
                    case_object(
                        {
                            "headerEncryption": BOOL,
                            "rootKey": H32,
                            "ourPrivateKey": H32,
                            "theirPublicKey": H32,
                            "newPrivateKey": H32,
                            "newPublicKey": H32,
                            "dhReceive": H32,
                            "dhSend": H32,
                            "intermediateRootKey": H32,
                            "receivingChainKey": H32,
                            "newRootKey": H32,
                            "sendingChainKey": H32,
                            "nextReceivingHeaderKey": H32,
                            "nextSendingHeaderKey": H32,
                        },
                        ["nextReceivingHeaderKey", "nextSendingHeaderKey"],
                    ),
                ),
            ],
        ),
        "e2ee_kdf_ck_schema_v1.json": envelope(
            "e2ee_kdf_ck_schema_v1.json",
            "KDF_CK",
            [
                group(
                    "KdfCk", case_object({"chainKey": H32, "nextChainKey": H32, "messageKey": H32})
                ),
                group(
                    "KdfCkChain",
                    case_object(
                        {
                            "chainKey": H32,
                            "steps": UINT,
                            "messageKeys": {"type": "array", "items": H32},
                            "chainKeys": {"type": "array", "items": H32},
                        }
                    ),
                ),
            ],
        ),
        "e2ee_message_keys_schema_v1.json": envelope(
            "e2ee_message_keys_schema_v1.json",
            "Message-key expansion",
            [
                group(
                    "MessageKeyExpansion",
                    case_object(
                        {
                            "messageKey": H32,
                            "okm": hexs(80),
                            "encKey": H32,
                            "authKey": H32,
                            "iv": hexs(16),
                        }
                    ),
                )
            ],
        ),
        "e2ee_handshake_kdf_schema_v1.json": envelope(
            "e2ee_handshake_kdf_schema_v1.json",
            "PQXDH / X3DH key derivation",
            [
                group(
                    "HandshakeDerive",
                    case_object(
                        {
                            "transcript": transcript,
                            "dhOutputs": {"type": "array", "items": H32},
                            "kemSharedSecret": nullable(H32),
                            "transcriptEncoding": hexs(),
                            "transcriptHash": H32,
                            "rootKey": H32,
                            "headerKey": H32,
                            "nextHeaderKey": H32,
                            "sessionId": hexs(16),
                            "associatedData": hexs(66),
                        }
                    ),
                    {"kemPrekey": hexs(1568)},
                )
            ],
        ),
        "e2ee_wire_bundle_schema_v1.json": envelope(
            "e2ee_wire_bundle_schema_v1.json",
            "Prekey bundle encoding",
            [
                group(
                    "BundleDecode",
                    case_object({"bundle": hexs(), "fields": bundle_fields}, ["fields"]),
                )
            ],
        ),
        "e2ee_wire_message_schema_v1.json": envelope(
            "e2ee_wire_message_schema_v1.json",
            "Initial and normal message encoding",
            [
                group(
                    "MessageDecode",
                    case_object({"message": hexs(), "fields": message_fields}, ["fields"]),
                )
            ],
        ),
        "e2ee_scenario_schema_v1.json": envelope(
            "e2ee_scenario_schema_v1.json",
            "Handshake and conversation scenarios",
            [
                group(
                    "ScenarioTest",
                    case_object({"steps": _STEPS}),
                    {"name": STR, "comment": STR, "setup": _STEPS},
                )
            ],
        ),
        "e2ee_relay_signature_schema_v1.json": envelope(
            "e2ee_relay_signature_schema_v1.json",
            "Registration tickets, signed device lists and the relay login signature",
            [
                group(
                    "RegistrationTicketVerify",
                    case_object(
                        {
                            "ticket": hexs(),
                            "relayOrigin": STR,
                            "userId": STR,
                            "userKey": H32,
                            "now": UINT,
                            "code": {"const": "bad_ticket"},
                            "fields": obj(
                                {
                                    "origin": STR,
                                    "userId": STR,
                                    "userKey": H32,
                                    "issued": UINT,
                                    "expires": UINT,
                                }
                            ),
                        },
                        ["code", "fields"],
                        RELAY_CATEGORIES,
                    ),
                    {
                        "authoritySeed": H32,
                        "authorityKey": H32,
                        "label": hexs(),
                        "maxLifetime": UINT,
                        "clockSkew": UINT,
                    },
                ),
                group(
                    "DeviceListVerify",
                    case_object(
                        {
                            "signedList": hexs(),
                            "fields": obj(
                                {
                                    "userId": STR,
                                    "userKey": H32,
                                    "counter": UINT,
                                    "devices": {
                                        "type": "array",
                                        "items": {
                                            "type": "array",
                                            "prefixItems": [UINT, H32],
                                            "minItems": 2,
                                            "maxItems": 2,
                                        },
                                    },
                                }
                            ),
                        },
                        ["fields"],
                        RELAY_CATEGORIES,
                    ),
                    {"userSeed": H32, "userKey": H32, "label": hexs()},
                ),
                group(
                    "RelayLoginSignature",
                    case_object(
                        {
                            "relayOrigin": STR,
                            "challenge": hexs(),
                            "userId": STR,
                            "deviceId": UINT,
                            "payload": hexs(),
                            "signature": hexs(),
                        },
                        None,
                        RELAY_CATEGORIES,
                    ),
                    {"deviceSeed": H32, "deviceKey": H32, "label": hexs()},
                ),
            ],
        ),
        "e2ee_manifest_schema_v1.json": {
            "$schema": DRAFT,
            "$id": "e2ee_manifest_schema_v1.json",
            "title": "MANIFEST.json: the sha256 of every file of the vector directory",
            **obj(
                {
                    "schema": {"const": "e2ee_manifest_schema_v1.json"},
                    "schemaVersion": {"const": SCHEMA_VERSION},
                    "specVersion": {"const": SPEC_VERSION},
                    "numberOfTests": UINT,
                    "files": {
                        "type": "object",
                        "additionalProperties": obj(
                            {"sha256": H32, "schema": STR, "numberOfTests": UINT},
                            ["sha256"],
                        ),
                    },
                }
            ),
        },
    }


SCHEMAS = _schemas()
"""schema file name -> schema."""
