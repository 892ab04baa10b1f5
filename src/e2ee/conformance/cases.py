"""One driver per vector test-group type: turn a test case into requests, judge the responses.

The drivers mirror :mod:`e2ee.vectors.checks` (which recomputes the same values in-process), but
every value comes from the adapter. Each raises :class:`Mismatch` when a response differs from
the vector; :class:`e2ee.conformance.adapter.ProtocolFailure` passes through (the runner counts
it as a failure of the case).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, Protocol

from e2ee.conformance.adapter import AdapterError, brief, shown
from e2ee.conformance.protocol import DEBUG_OUTPUTS, PROTOCOL_ERROR_CATEGORIES, STATE_OPS
from e2ee.vectors.outcomes import result_problem

Group = dict[str, Any]
Test = dict[str, Any]
JSON = dict[str, Any]


class Mismatch(AssertionError):
    """A response differs from what the vector expects."""


class Call(Protocol):
    def __call__(self, op: str, arguments: JSON) -> JSON: ...


Driver = Callable[[Call, Group, Test], None]


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def same(expected: Any, got: Any) -> bool:
    """Whether two JSON values are equal: same JSON type and value, recursively.

    Python's ``==`` is not JSON equality: ``True == 1``, ``False == 0`` and ``1 == 1.0``, so an
    adapter answering ``true`` for the integer 1, ``0`` for ``false`` or ``1.0`` for 1 would
    pass. Here a boolean is not a number and a float is not an integer. The one normalisation
    is the one spec/conformance.md section 2 allows: two hex strings compare case-insensitively.
    """
    if isinstance(expected, str):
        if not isinstance(got, str):
            return False
        if _HEX_DIGITS.issuperset(expected) and _HEX_DIGITS.issuperset(got):
            return expected.lower() == got.lower()
        return expected == got
    if isinstance(expected, list):
        return (
            isinstance(got, list)
            and len(got) == len(expected)
            and all(same(e, g) for e, g in zip(expected, got, strict=True))
        )
    if isinstance(expected, dict):
        return (
            isinstance(got, dict)
            and got.keys() == expected.keys()
            and all(same(value, got[key]) for key, value in expected.items())
        )
    # null, true/false and numbers: the types must match before the values are compared.
    return type(got) is type(expected) and bool(got == expected)


def _eq(what: str, expected: Any, got: Any) -> None:
    if not same(expected, got):
        if isinstance(expected, dict) and isinstance(got, dict):
            keys = sorted(
                str(k)
                for k in set(expected) | set(got)
                if k not in expected or k not in got or not same(expected[k], got[k])
            )
            raise Mismatch(f"{what} differs in {brief(keys)}")
        raise Mismatch(f"{what}: expected {brief(expected)}, got {brief(got)}")


def _name(value: Any) -> str:
    """A name from a vector (an operation, a party) as the report shows it."""
    return shown(value) if isinstance(value, str) else brief(value)


def _get(result: JSON, name: str, op: str) -> Any:
    if name not in result:
        raise Mismatch(f"the {op} result has no {name!r}")
    return result[name]


def _expect(result: JSON, op: str, test: Test, *names: str) -> None:
    for name in names:
        _eq(name, test[name], _get(result, name, op))


RESULTS = ("valid", "invalid", "acceptable")
"""The values of a case's ``result``."""


def case_problem(group: Group, test: Test) -> str | None:
    """Why a case is unusable as a vector (checked before anything is sent), or None.

    A case that may fail (``invalid``, ``acceptable``) names the one ``error`` category that
    passes: without it, any failure passed, ``internal_error`` included. Its result must also
    be one its group type checks (:func:`e2ee.vectors.outcomes.result_problem`).
    """
    result = test.get("result")
    if not isinstance(result, str) or result not in RESULTS:
        return f"'result' must be one of {', '.join(RESULTS)}"
    if result != "valid" and not isinstance(test.get("error"), str):
        return f"an {result} case must name its expected 'error' category"
    return result_problem(group, test)


def _protocol_error(exc: AdapterError) -> bool:
    """Errors about the request, not the cryptography: never an expected outcome."""
    return exc.category in PROTOCOL_ERROR_CATEGORIES


def _outcome(test: Test, call: Call, op: str, arguments: JSON) -> JSON | None:
    """Send one request and judge success or failure by the case's ``result`` and ``error``.

    Returns the result on success (None after an expected or acceptable failure).
    """
    expected = test["result"]
    try:
        result = call(op, arguments)
    except AdapterError as exc:
        if _protocol_error(exc):
            raise Mismatch(f"{op} failed with the protocol error {exc}") from None
        if expected == "valid":
            raise Mismatch(f"{op} failed with {exc} for a valid case") from None
        if exc.category != test["error"]:
            raise Mismatch(
                f"{op}: error category: expected {test['error']}, got {shown(exc.category)}"
                + (f" ({exc.message})" if exc.message else "")
            ) from None
        if "code" in test and not same(test["code"], exc.code):
            raise Mismatch(
                f"{op}: relay code: expected {brief(test['code'])}, got {_code(exc)}"
            ) from None
        return None
    if expected == "invalid":
        raise Mismatch(f"{op} accepted an invalid case (expected {test.get('error')})")
    return result


def _code(exc: AdapterError) -> str:
    if exc.code is None:
        return "none"
    return shown(exc.code) if isinstance(exc.code, str) else brief(exc.code)


def _one(call: Call, op: str, arguments: JSON) -> JSON:
    """A request that must succeed (an intermediate value of a valid computation)."""
    try:
        return call(op, arguments)
    except AdapterError as exc:
        raise Mismatch(f"{op} failed with {exc}") from None


# --- primitives -----------------------------------------------------------------------------


def xdh_comp(call: Call, group: Group, test: Test) -> None:
    result = _outcome(test, call, "x25519", {"private": test["private"], "public": test["public"]})
    if result is not None:
        _eq("shared", test["shared"], _get(result, "shared", "x25519"))


def xdh_public_key(call: Call, group: Group, test: Test) -> None:
    result = _one(call, "x25519_public_key", {"private": test["private"]})
    _expect(result, "x25519_public_key", test, "public")


def identity_derivation(call: Call, group: Group, test: Test) -> None:
    result = _one(call, "identity_key_from_seed", {"seed": test["seed"]})
    _expect(result, "identity_key_from_seed", test, "identityKey", "x25519Private", "x25519Public")
    result = _one(call, "identity_key_to_x25519", {"identityKey": test["identityKey"]})
    _expect(result, "identity_key_to_x25519", test, "x25519Public")


def identity_validation(call: Call, group: Group, test: Test) -> None:
    op = "identity_key_to_x25519"
    result = _outcome(test, call, op, {"identityKey": test["identityKey"]})
    if result is not None:
        _expect(result, op, test, "x25519Public")


def bundle_signature(call: Call, group: Group, test: Test) -> None:
    fields = dict(test["fields"])
    if fields.get("kemPublicKey") is not None:
        fields["kemPublicKey"] = group["kemPublicKeys"][fields["kemPublicKey"]]
    op = "bundle_signature_payload"
    payload = _get(_one(call, op, {"purpose": group["purpose"], "fields": fields}), "payload", op)
    if not isinstance(payload, str):
        raise Mismatch("payload is not a hex string")
    if "payload" in test:
        _eq("payload", test["payload"], payload)
    else:
        try:
            digest = hashlib.sha256(bytes.fromhex(payload)).hexdigest()
        except ValueError:
            raise Mismatch("payload is not hex") from None
        _eq("SHA-256(payload)", test["payloadSha256"], digest)
    _outcome(
        test,
        call,
        "verify_signature",
        {"identityKey": group["identityKey"], "payload": payload, "signature": test["signature"]},
    )


def hkdf(call: Call, group: Group, test: Test) -> None:
    arguments = {name: test[name] for name in ("salt", "ikm", "info", "size")}
    _expect(_one(call, "hkdf_sha256", arguments), "hkdf_sha256", test, "okm")


def message_aead_encrypt(call: Call, group: Group, test: Test) -> None:
    key, ad = test["messageKey"], test["ad"]
    result = _one(call, "message_key_expand", {"messageKey": key})
    _expect(result, "message_key_expand", test, "encKey", "authKey", "iv")
    result = _one(
        call, "message_encrypt", {"messageKey": key, "plaintext": test["plaintext"], "ad": ad}
    )
    _expect(result, "message_encrypt", test, "ciphertext")
    arguments = {"messageKey": key, "ciphertext": test["ciphertext"], "ad": ad}
    opened = _outcome(test, call, "message_decrypt", arguments)
    if opened is not None:
        _expect(opened, "message_decrypt", test, "plaintext")


def message_aead_decrypt(call: Call, group: Group, test: Test) -> None:
    arguments = {name: test[name] for name in ("messageKey", "ciphertext", "ad")}
    opened = _outcome(test, call, "message_decrypt", arguments)
    if opened is not None and "plaintext" in test:
        _expect(opened, "message_decrypt", test, "plaintext")


def header_aead_encrypt(call: Call, group: Group, test: Test) -> None:
    arguments = {name: test[name] for name in ("key", "nonce", "header", "ad")}
    _expect(_one(call, "header_seal", arguments), "header_seal", test, "sealed")
    arguments = {name: test[name] for name in ("key", "nonce", "sealed", "ad")}
    opened = _outcome(test, call, "header_open", arguments)
    if opened is not None:
        _expect(opened, "header_open", test, "header")


def header_aead_decrypt(call: Call, group: Group, test: Test) -> None:
    arguments = {name: test[name] for name in ("key", "nonce", "sealed", "ad")}
    opened = _outcome(test, call, "header_open", arguments)
    if opened is not None and "header" in test:
        _expect(opened, "header_open", test, "header")


def mlkem_decapsulation(call: Call, group: Group, test: Test) -> None:
    result = _one(call, "mlkem_public_key", {"seed": group["seed"]})
    _eq("encapsulationKey", group["encapsulationKey"], _get(result, "encapsulationKey", "mlkem"))
    arguments = {"seed": group["seed"], "ciphertext": test["ciphertext"]}
    shared = _outcome(test, call, "mlkem_decapsulate", arguments)
    if shared is not None:
        _expect(shared, "mlkem_decapsulate", test, "sharedSecret")


def mlkem_key_check(call: Call, group: Group, test: Test) -> None:
    arguments = {"encapsulationKey": test["encapsulationKey"]}
    _outcome(test, call, "mlkem_check_encapsulation_key", arguments)
    if "seed" in test:
        result = _one(call, "mlkem_public_key", {"seed": test["seed"]})
        _expect(result, "mlkem_public_key", test, "encapsulationKey")


# --- KDF chains -------------------------------------------------------------------------------


def kdf_rk(call: Call, group: Group, test: Test) -> None:
    result = _one(call, "kdf_rk", {"rootKey": test["rootKey"], "dhOutput": test["dhOutput"]})
    _expect(result, "kdf_rk", test, "newRootKey", "chainKey")


def kdf_rk_he(call: Call, group: Group, test: Test) -> None:
    result = _one(call, "kdf_rk_he", {"rootKey": test["rootKey"], "dhOutput": test["dhOutput"]})
    _expect(result, "kdf_rk_he", test, "newRootKey", "chainKey", "nextHeaderKey")


def dh_ratchet_step(call: Call, group: Group, test: Test) -> None:
    """A whole DH ratchet step from x25519, x25519_public_key and kdf_rk / kdf_rk_he; each
    stage is fed the vector's value for the previous one, so a difference is pinpointed."""
    result = _one(call, "x25519_public_key", {"private": test["newPrivateKey"]})
    _eq("newPublicKey", test["newPublicKey"], _get(result, "public", "x25519_public_key"))
    for private, expected in (("ourPrivateKey", "dhReceive"), ("newPrivateKey", "dhSend")):
        arguments = {"private": test[private], "public": test["theirPublicKey"]}
        _eq(expected, test[expected], _get(_one(call, "x25519", arguments), "shared", "x25519"))
    he = bool(test["headerEncryption"])
    op = "kdf_rk_he" if he else "kdf_rk"
    stages = (
        (
            "rootKey",
            "dhReceive",
            "intermediateRootKey",
            "receivingChainKey",
            "nextReceivingHeaderKey",
        ),
        ("intermediateRootKey", "dhSend", "newRootKey", "sendingChainKey", "nextSendingHeaderKey"),
    )
    for root, dh, new_root, chain, header in stages:
        result = _one(call, op, {"rootKey": test[root], "dhOutput": test[dh]})
        _eq(new_root, test[new_root], _get(result, "newRootKey", op))
        _eq(chain, test[chain], _get(result, "chainKey", op))
        if he:
            _eq(header, test[header], _get(result, "nextHeaderKey", op))


def kdf_ck(call: Call, group: Group, test: Test) -> None:
    result = _one(call, "kdf_ck", {"chainKey": test["chainKey"]})
    _expect(result, "kdf_ck", test, "nextChainKey", "messageKey")


def kdf_ck_chain(call: Call, group: Group, test: Test) -> None:
    chain_key = test["chainKey"]
    for step in range(test["steps"]):
        result = _one(call, "kdf_ck", {"chainKey": chain_key})
        _eq(f"messageKeys[{step}]", test["messageKeys"][step], _get(result, "messageKey", "kdf_ck"))
        _eq(f"chainKeys[{step}]", test["chainKeys"][step], _get(result, "nextChainKey", "kdf_ck"))
        chain_key = test["chainKeys"][step]


def message_key_expansion(call: Call, group: Group, test: Test) -> None:
    result = _one(call, "message_key_expand", {"messageKey": test["messageKey"]})
    _expect(result, "message_key_expand", test, "encKey", "authKey", "iv")


def handshake_derive(call: Call, group: Group, test: Test) -> None:
    transcript = {
        name: group["kemPrekey"] if value == "group" else value
        for name, value in test["transcript"].items()
    }
    arguments = {
        "transcript": transcript,
        "dhOutputs": test["dhOutputs"],
        "kemSharedSecret": test["kemSharedSecret"],
    }
    op = "handshake_derive"
    result = _one(call, op, arguments)
    names = ("transcriptHash", "rootKey", "headerKey", "nextHeaderKey", "sessionId")
    _expect(result, op, test, *names, "associatedData")
    if "transcriptEncoding" in result:
        _expect(result, op, test, "transcriptEncoding")


# --- wire ------------------------------------------------------------------------------------


def bundle_decode(call: Call, group: Group, test: Test) -> None:
    result = _outcome(test, call, "decode_bundle", {"bundle": test["bundle"]})
    if result is None or test["result"] != "valid":
        return
    _expect(result, "decode_bundle", test, "fields")
    if "encoding" in result:
        _eq("re-encoding", test["bundle"], result["encoding"])


def message_decode(call: Call, group: Group, test: Test) -> None:
    result = _outcome(test, call, "decode_message", {"message": test["message"]})
    if result is None or test["result"] != "valid":
        return
    _expect(result, "decode_message", test, "fields")
    if "encoding" in result:
        _eq("re-encoding", test["message"], result["encoding"])


# --- relay structures ----------------------------------------------------------------------


def registration_ticket(call: Call, group: Group, test: Test) -> None:
    """Check the ticket as the relay does (category and relay code); a valid one must decode
    to the vector's fields and be exactly what the issuer makes from them."""
    op = "registration_ticket_check"
    arguments = {
        "ticket": test["ticket"],
        "authorityKey": group["authorityKey"],
        "relayOrigin": test["relayOrigin"],
        "userId": test["userId"],
        "userKey": test["userKey"],
        "now": test["now"],
        "maxLifetime": group["maxLifetime"],
    }
    result = _outcome(test, call, op, arguments)
    if result is None or test["result"] != "valid":
        return
    _expect(result, op, test, "fields")
    op = "registration_ticket_issue"
    arguments = {"authoritySeed": group["authoritySeed"], "fields": test["fields"]}
    _eq("issued ticket", test["ticket"], _get(_one(call, op, arguments), "ticket", op))


def device_list(call: Call, group: Group, test: Test) -> None:
    """Decode and verify the signed list; a valid one must give the vector's fields and be
    exactly what the user key signs for them."""
    op = "device_list_verify"
    result = _outcome(test, call, op, {"signedList": test["signedList"]})
    if result is None or test["result"] != "valid":
        return
    _expect(result, op, test, "fields")
    fields = {name: test["fields"][name] for name in ("userId", "counter", "devices")}
    op = "device_list_sign"
    arguments = {"userSeed": group["userSeed"], "fields": fields}
    _eq("signed list", test["signedList"], _get(_one(call, op, arguments), "signedList", op))


def relay_login(call: Call, group: Group, test: Test) -> None:
    """The login payload the relay builds, its signature verified under the device key; a
    valid signature must be exactly what the device signs."""
    login = {name: test[name] for name in ("relayOrigin", "challenge", "userId", "deviceId")}
    op = "relay_login_payload"
    payload = _get(_one(call, op, login), "payload", op)
    _eq("payload", test["payload"], payload)
    arguments = {
        "identityKey": group["deviceKey"],
        "payload": payload,
        "signature": test["signature"],
    }
    _outcome(test, call, "verify_signature", arguments)
    if test["result"] == "valid":
        op = "relay_login_sign"
        result = _one(call, op, {"deviceSeed": group["deviceSeed"], **login})
        _eq("signature", test["signature"], _get(result, "signature", op))


# --- scenarios ------------------------------------------------------------------------------


def uses_state(group: Group, test: Test) -> bool:
    """Whether a scenario case needs the ``state`` capability (a save/load step)."""
    return any(step.get("op") in STATE_OPS for step in [*group["setup"], *test["steps"]])


def _compare_debug(what: str, expected: Any, got: Any) -> None:
    """Debug outputs: compare the keys the adapter gives; a null ``skipped`` is not listed."""
    if isinstance(expected, dict) and isinstance(got, dict):
        for key, value in got.items():
            if key not in expected:
                raise Mismatch(f"{what} has {brief(key)}, which the vector does not know")
            if key == "skipped" and expected[key] is None:
                continue
            _eq(f"{what}.{key}", expected[key], value)
        return
    _eq(what, expected, got)


def _fingerprint(call: Call, party: str, of: str) -> Any:
    result = _one(call, "fingerprint", {"party": party, "of": of})
    return _get(result, "fingerprint", "fingerprint")


def _play_step(call: Call, step: JSON) -> None:
    op, party, expect = step["op"], str(step.get("party")), step["expect"]
    request = {k: v for k, v in step.items() if k not in ("op", "expect", "comment")}
    unchanged = [flag for flag in ("stateUnchanged", "accountUnchanged") if expect.get(flag)]
    of = "account" if op in ("start_session", "accept_session") else "session"
    before = _fingerprint(call, party, of) if unchanged and "error" in expect else None
    try:
        result = call(op, request)
    except AdapterError as exc:
        if _protocol_error(exc):
            raise Mismatch(f"failed with the protocol error {exc}") from None
        if "error" not in expect:
            raise Mismatch(f"failed with {exc}, expected success") from None
        if exc.category != expect["error"]:
            detail = f" ({exc.message})" if exc.message else ""
            raise Mismatch(
                f"error category: expected {expect['error']}, got {shown(exc.category)}{detail}"
            ) from None
        if unchanged:
            after = _fingerprint(call, party, of)
            # Fingerprints are strings (null: no such object); compared as such, so that
            # 1 and then true, or 1 and then 1.0, do not count as unchanged.
            if not isinstance(before, str) or not isinstance(after, str) or after != before:
                raise Mismatch(
                    f"{unchanged[0]} does not hold (fingerprint of the {of} changed)"
                ) from None
        return
    if "error" in expect:
        raise Mismatch(f"succeeded, expected {expect['error']}")
    for key, value in expect.items():
        if key in DEBUG_OUTPUTS:
            if key in result:
                _compare_debug(key, value, result[key])
            continue
        _eq(key, value, _get(result, key, op))


def scenario(call: Call, group: Group, test: Test) -> None:
    """Reset the adapter's parties, then replay the group's setup and the test's steps."""
    _one(call, "reset", {})
    for index, step in enumerate([*group["setup"], *test["steps"]]):
        try:
            _play_step(call, step)
        except Mismatch as exc:
            where = "setup" if index < len(group["setup"]) else "step"
            number = index if where == "setup" else index - len(group["setup"])
            raise Mismatch(
                f"{where} {number} ({_name(step['op'])} by {_name(step.get('party'))}): {exc}"
            ) from None


DRIVERS: dict[str, dict[str, Driver]] = {
    "e2ee_x25519_schema_v1.json": {"XdhComp": xdh_comp, "XdhPublicKey": xdh_public_key},
    "e2ee_identity_key_schema_v1.json": {
        "IdentityKeyDerivation": identity_derivation,
        "IdentityKeyValidation": identity_validation,
    },
    "e2ee_bundle_signature_schema_v1.json": {"BundleSignatureVerify": bundle_signature},
    "e2ee_hkdf_schema_v1.json": {"HkdfTest": hkdf},
    "e2ee_message_aead_schema_v1.json": {
        "MessageAeadEncrypt": message_aead_encrypt,
        "MessageAeadDecrypt": message_aead_decrypt,
    },
    "e2ee_header_aead_schema_v1.json": {
        "HeaderAeadEncrypt": header_aead_encrypt,
        "HeaderAeadDecrypt": header_aead_decrypt,
    },
    "e2ee_mlkem_schema_v1.json": {
        "MlKemDecapsulation": mlkem_decapsulation,
        "MlKemEncapsulationKeyCheck": mlkem_key_check,
    },
    "e2ee_kdf_rk_schema_v1.json": {
        "KdfRk": kdf_rk,
        "KdfRkHe": kdf_rk_he,
        "DhRatchetStep": dh_ratchet_step,
    },
    "e2ee_kdf_ck_schema_v1.json": {"KdfCk": kdf_ck, "KdfCkChain": kdf_ck_chain},
    "e2ee_message_keys_schema_v1.json": {"MessageKeyExpansion": message_key_expansion},
    "e2ee_handshake_kdf_schema_v1.json": {"HandshakeDerive": handshake_derive},
    "e2ee_wire_bundle_schema_v1.json": {"BundleDecode": bundle_decode},
    "e2ee_wire_message_schema_v1.json": {"MessageDecode": message_decode},
    "e2ee_scenario_schema_v1.json": {"ScenarioTest": scenario},
    "e2ee_relay_signature_schema_v1.json": {
        "RegistrationTicketVerify": registration_ticket,
        "DeviceListVerify": device_list,
        "RelayLoginSignature": relay_login,
    },
}
"""schema name -> test-group type -> driver."""
