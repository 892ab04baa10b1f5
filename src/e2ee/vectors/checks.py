"""Per-test checks of ``e2ee vectors verify``: recompute with e2ee's own functions, compare.

One function per test-group type. Each raises :class:`Mismatch` when e2ee disagrees with the
vector. None of them uses :mod:`e2ee.vectors.reference` or the generator: the expected values
were computed there, independently, and are only read here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from e2ee.crypto import primitives
from e2ee.errors import E2EEError
from e2ee.handshake import pqxdh, signing
from e2ee.identity import SignedDeviceList, UserIdentity
from e2ee.limits import (
    HASH_LABEL_TRANSCRIPT,
    MAX_SKIP,
    SIG_LABEL_DEVICE_LIST,
    SIG_LABEL_REGISTRATION_TICKET,
    SIG_LABEL_RELAY_LOGIN,
)
from e2ee.ratchet import chains
from e2ee.relay import api as relay_api
from e2ee.relay import tickets
from e2ee.vectors.common import BUNDLE_FIELD_ATTRIBUTES, category, hx, unhex
from e2ee.vectors.scenario_play import Mismatch, play
from e2ee.wire import codec
from e2ee.wire.messages import PreKeyBundle, message_prefix, parse_message

Group = dict[str, Any]
Test = dict[str, Any]
Check = Callable[[Group, Test], None]

MAX_CHAIN_STEPS = MAX_SKIP
"""The most KDF_CK steps of one ``KdfCkChain`` test: no receiver derives more keys of a chain
for one message (spec/limits.md); the generator's longest chain has 25."""


def _eq(what: str, expected: Any, got: Any) -> None:
    if expected != got:
        raise Mismatch(f"{what}: expected {str(expected)[:72]}, got {str(got)[:72]}")


def _outcome(test: Test, action: Callable[[], Any]) -> Any:
    """Run ``action`` and check success or failure against the test's result and error.

    Returns the action's value on success (None after an expected or acceptable failure).
    """
    result = test["result"]
    if result == "invalid" and "error" not in test:
        raise Mismatch("an invalid case names no error category")
    try:
        value = action()
    except E2EEError as exc:
        got = category(exc)
        if result == "valid":
            raise Mismatch(f"raised {got} ({exc}) for a valid case") from None
        if "error" in test:
            _eq("error category", test["error"], got)
        return None
    if result == "invalid":
        raise Mismatch(f"accepted an invalid case (expected {test.get('error')})")
    return value


# --- primitives -----------------------------------------------------------------------------


def xdh_comp(group: Group, test: Test) -> None:
    shared = _outcome(
        test, lambda: primitives.x25519(unhex(test["private"]), unhex(test["public"]))
    )
    if shared is not None:
        _eq("shared", test["shared"], hx(shared))


def xdh_public_key(group: Group, test: Test) -> None:
    _eq("public", test["public"], hx(primitives.x25519_public_key(unhex(test["private"]))))


def identity_derivation(group: Group, test: Test) -> None:
    seed = unhex(test["seed"])
    identity = primitives.ed25519_public_key(seed)
    _eq("identityKey", test["identityKey"], hx(identity))
    private = primitives.ed25519_seed_to_x25519(seed)
    _eq("x25519Private", test["x25519Private"], hx(private))
    _eq("x25519Public", test["x25519Public"], hx(pqxdh.check_identity_key(identity)))
    _eq("X25519(x25519Private, 9)", test["x25519Public"], hx(primitives.x25519_public_key(private)))


def identity_validation(group: Group, test: Test) -> None:
    public = _outcome(test, lambda: pqxdh.check_identity_key(unhex(test["identityKey"])))
    if public is not None:
        _eq("x25519Public", test["x25519Public"], hx(public))


def bundle_signature(group: Group, test: Test) -> None:
    fields = test["fields"]
    kem_keys = {name: unhex(value) for name, value in group["kemPublicKeys"].items()}
    purpose = group["purpose"]
    if purpose == "signed-prekey":
        kem_name = fields.get("kemPublicKey")
        payload = signing.signed_prekey_payload(
            fields["prekeyId"],
            fields["timestamp"],
            unhex(fields["publicKey"]),
            fields.get("kemPrekeyId"),
            kem_keys[kem_name] if kem_name else None,
        )
    elif purpose == "one-time-prekey":
        payload = signing.one_time_prekey_payload(fields["prekeyId"], unhex(fields["publicKey"]))
    elif purpose == "one-time-kem-prekey":
        payload = signing.one_time_kem_prekey_payload(
            fields["prekeyId"], kem_keys[fields["kemPublicKey"]]
        )
    else:
        raise Mismatch(f"unknown purpose {purpose!r}")
    if not payload.startswith(unhex(group["label"])):
        raise Mismatch("the payload does not start with the group's label")
    if "payload" in test:
        _eq("payload", test["payload"], hx(payload))
    else:
        _eq("payloadSha256", test["payloadSha256"], hashlib.sha256(payload).hexdigest())
    _outcome(
        test,
        lambda: signing.verify(unhex(group["identityKey"]), payload, unhex(test["signature"])),
    )


def hkdf(group: Group, test: Test) -> None:
    okm = primitives.hkdf_sha256(
        unhex(test["salt"]), unhex(test["ikm"]), unhex(test["info"]), test["size"]
    )
    _eq("okm", test["okm"], hx(okm))


def message_aead_encrypt(group: Group, test: Test) -> None:
    key, ad = unhex(test["messageKey"]), unhex(test["ad"])
    enc, auth, iv = chains._expand(key)
    _eq("encKey", test["encKey"], hx(enc))
    _eq("authKey", test["authKey"], hx(auth))
    _eq("iv", test["iv"], hx(iv))
    _eq("ciphertext", test["ciphertext"], hx(chains.encrypt(key, unhex(test["plaintext"]), ad)))
    plaintext = _outcome(test, lambda: chains.decrypt(key, unhex(test["ciphertext"]), ad))
    _eq("plaintext", test["plaintext"], hx(plaintext))


def message_aead_decrypt(group: Group, test: Test) -> None:
    _outcome(
        test,
        lambda: chains.decrypt(
            unhex(test["messageKey"]), unhex(test["ciphertext"]), unhex(test["ad"])
        ),
    )


def header_aead_encrypt(group: Group, test: Test) -> None:
    key, nonce, ad = unhex(test["key"]), unhex(test["nonce"]), unhex(test["ad"])
    header = unhex(test["header"])
    _eq("ratchetKey", test["ratchetKey"], hx(header[:32]))
    _eq("previousChainLength", test["previousChainLength"], int.from_bytes(header[32:36], "big"))
    _eq("messageNumber", test["messageNumber"], int.from_bytes(header[36:40], "big"))
    _eq("sealed", test["sealed"], hx(primitives.xchacha20poly1305_encrypt(key, nonce, header, ad)))
    opened = _outcome(
        test, lambda: primitives.xchacha20poly1305_decrypt(key, nonce, unhex(test["sealed"]), ad)
    )
    _eq("header", test["header"], hx(opened))


def header_aead_decrypt(group: Group, test: Test) -> None:
    _outcome(
        test,
        lambda: primitives.xchacha20poly1305_decrypt(
            unhex(test["key"]), unhex(test["nonce"]), unhex(test["sealed"]), unhex(test["ad"])
        ),
    )


def mlkem_decapsulation(group: Group, test: Test) -> None:
    seed = unhex(group["seed"])
    _eq("encapsulationKey", group["encapsulationKey"], hx(primitives.mlkem1024_public_key(seed)))
    shared = _outcome(
        test, lambda: primitives.mlkem1024_decapsulate(seed, unhex(test["ciphertext"]))
    )
    if shared is not None:
        _eq("sharedSecret", test["sharedSecret"], hx(shared))


def mlkem_key_check(group: Group, test: Test) -> None:
    key = unhex(test["encapsulationKey"])
    _outcome(test, lambda: primitives.mlkem1024_check_public_key(key))
    if "seed" in test:
        _eq(
            "encapsulationKey",
            test["encapsulationKey"],
            hx(primitives.mlkem1024_public_key(unhex(test["seed"]))),
        )


# --- KDF chains -------------------------------------------------------------------------------


def kdf_rk(group: Group, test: Test) -> None:
    rk, ck = chains.kdf_rk(unhex(test["rootKey"]), unhex(test["dhOutput"]))
    _eq("newRootKey", test["newRootKey"], hx(rk))
    _eq("chainKey", test["chainKey"], hx(ck))


def kdf_rk_he(group: Group, test: Test) -> None:
    rk, ck, nhk = chains.kdf_rk_he(unhex(test["rootKey"]), unhex(test["dhOutput"]))
    _eq("newRootKey", test["newRootKey"], hx(rk))
    _eq("chainKey", test["chainKey"], hx(ck))
    _eq("nextHeaderKey", test["nextHeaderKey"], hx(nhk))


def dh_ratchet_step(group: Group, test: Test) -> None:
    their = unhex(test["theirPublicKey"])
    new_private = unhex(test["newPrivateKey"])
    _eq("newPublicKey", test["newPublicKey"], hx(primitives.x25519_public_key(new_private)))
    dh_receive = primitives.x25519(unhex(test["ourPrivateKey"]), their)
    dh_send = primitives.x25519(new_private, their)
    _eq("dhReceive", test["dhReceive"], hx(dh_receive))
    _eq("dhSend", test["dhSend"], hx(dh_send))
    root = unhex(test["rootKey"])
    if test["headerEncryption"]:
        rk1, ckr, nhkr = chains.kdf_rk_he(root, dh_receive)
        rk2, cks, nhks = chains.kdf_rk_he(rk1, dh_send)
        _eq("nextReceivingHeaderKey", test["nextReceivingHeaderKey"], hx(nhkr))
        _eq("nextSendingHeaderKey", test["nextSendingHeaderKey"], hx(nhks))
    else:
        rk1, ckr = chains.kdf_rk(root, dh_receive)
        rk2, cks = chains.kdf_rk(rk1, dh_send)
    _eq("intermediateRootKey", test["intermediateRootKey"], hx(rk1))
    _eq("receivingChainKey", test["receivingChainKey"], hx(ckr))
    _eq("newRootKey", test["newRootKey"], hx(rk2))
    _eq("sendingChainKey", test["sendingChainKey"], hx(cks))


def kdf_ck(group: Group, test: Test) -> None:
    chain_key = unhex(test["chainKey"])
    next_ck, mk = chains.kdf_ck(chain_key)
    _eq("nextChainKey", test["nextChainKey"], hx(next_ck))
    _eq("messageKey", test["messageKey"], hx(mk))
    _eq("next_chain_key", test["nextChainKey"], hx(chains.next_chain_key(chain_key)))
    _eq("message_key", test["messageKey"], hx(chains.message_key(chain_key)))


def kdf_ck_chain(group: Group, test: Test) -> None:
    steps = test["steps"]
    if type(steps) is not int or not 0 <= steps <= MAX_CHAIN_STEPS:
        raise Mismatch(f"steps must be an integer from 0 to {MAX_CHAIN_STEPS}")
    for name in ("messageKeys", "chainKeys"):
        if not isinstance(test[name], list) or len(test[name]) != steps:
            raise Mismatch(f"{name} must list one key per step ({steps})")
    chain_key = unhex(test["chainKey"])
    message_keys, chain_keys = [], []
    for _ in range(steps):
        chain_key, mk = chains.kdf_ck(chain_key)
        message_keys.append(hx(mk))
        chain_keys.append(hx(chain_key))
    _eq("messageKeys", test["messageKeys"], message_keys)
    _eq("chainKeys", test["chainKeys"], chain_keys)


def message_key_expansion(group: Group, test: Test) -> None:
    enc, auth, iv = chains._expand(unhex(test["messageKey"]))
    _eq("okm", test["okm"], hx(enc + auth + iv))
    _eq("encKey", test["encKey"], hx(enc))
    _eq("authKey", test["authKey"], hx(auth))
    _eq("iv", test["iv"], hx(iv))


def handshake_derive(group: Group, test: Test) -> None:
    t = test["transcript"]

    def opt(name: str) -> bytes | None:
        value = t[name]
        if value is None:
            return None
        return unhex(group["kemPrekey"]) if value == "group" else unhex(value)

    transcript = pqxdh.Transcript(
        initiator_identity_key=unhex(t["initiatorIdentityKey"]),
        responder_identity_key=unhex(t["responderIdentityKey"]),
        signed_prekey_id=t["signedPrekeyId"],
        signed_prekey=unhex(t["signedPrekey"]),
        signed_prekey_timestamp=t["signedPrekeyTimestamp"],
        one_time_prekey_id=t["oneTimePrekeyId"],
        one_time_prekey=opt("oneTimePrekey"),
        kem_prekey_id=t["kemPrekeyId"],
        kem_prekey=opt("kemPrekey"),
        kem_ciphertext=opt("kemCiphertext"),
        base_key=unhex(t["baseKey"]),
        header_encryption=t["headerEncryption"],
    )
    _eq("transcriptHash", test["transcriptHash"], hx(transcript.digest()))
    _eq(
        "SHA-256(label || transcriptEncoding)",
        test["transcriptHash"],
        hx(primitives.sha256(HASH_LABEL_TRANSCRIPT + unhex(test["transcriptEncoding"]))),
    )
    kem = test["kemSharedSecret"]
    secrets = pqxdh.derive(
        transcript, [unhex(d) for d in test["dhOutputs"]], None if kem is None else unhex(kem)
    )
    _eq("rootKey", test["rootKey"], hx(secrets.root_key))
    _eq("headerKey", test["headerKey"], hx(secrets.header_key))
    _eq("nextHeaderKey", test["nextHeaderKey"], hx(secrets.next_header_key))
    _eq("sessionId", test["sessionId"], hx(secrets.session_id))
    _eq("associatedData", test["associatedData"], hx(secrets.associated_data))


# --- wire -------------------------------------------------------------------------------------


def _json_value(value: Any) -> Any:
    return hx(value) if isinstance(value, bytes) else value


def bundle_decode(group: Group, test: Test) -> None:
    data = unhex(test["bundle"])
    bundle = _outcome(test, lambda: PreKeyBundle.from_bytes(data))
    if bundle is None or test["result"] != "valid":
        return
    got = {
        name: _json_value(getattr(bundle, attr)) for name, attr in BUNDLE_FIELD_ATTRIBUTES.items()
    }
    _eq("fields", test["fields"], got)
    _eq("re-encoding", test["bundle"], hx(bundle.to_bytes()))


def message_decode(group: Group, test: Test) -> None:
    data = unhex(test["message"])
    parsed = _outcome(test, lambda: parse_message(data))
    if parsed is None:
        return
    got: dict[str, Any] = {
        "kind": "normal" if parsed.initial is None else "initial",
        "sessionId": hx(parsed.session_id),
        "header": hx(parsed.header),
        "ciphertext": hx(parsed.ciphertext),
    }
    initial = parsed.initial
    if initial is not None:
        got.update(
            identityKey=hx(initial.identity_key),
            baseKey=hx(initial.base_key),
            signedPrekeyId=initial.signed_prekey_id,
            oneTimePrekeyId=initial.one_time_prekey_id,
            kemPrekeyId=initial.kem_prekey_id,
            kemCiphertext=None if initial.kem_ciphertext is None else hx(initial.kem_ciphertext),
            headerEncryption=initial.header_encryption,
        )
    _eq("fields", test["fields"], got)
    encoded = (
        message_prefix(parsed.session_id, None if initial is None else initial.encode())
        + codec.encode_bytes(parsed.header)
        + codec.encode_bytes(parsed.ciphertext)
    )
    _eq("re-encoding", test["message"], hx(encoded))


# --- relay structures ------------------------------------------------------------------------


def registration_ticket(group: Group, test: Test) -> None:
    _eq("label", hx(SIG_LABEL_REGISTRATION_TICKET), group["label"])
    _eq("clockSkew", tickets.CLOCK_SKEW, group["clockSkew"])
    data, key = unhex(test["ticket"]), unhex(group["authorityKey"])
    _eq(
        "authorityKey",
        group["authorityKey"],
        hx(tickets.authority_public_key(unhex(group["authoritySeed"]))),
    )
    seen: list[str] = []

    def check() -> tickets.RegistrationTicket:
        try:
            ticket = tickets.read_ticket(data, key)
            tickets.check_ticket(
                ticket,
                origin=test["relayOrigin"],
                user_id=test["userId"],
                user_key=unhex(test["userKey"]),
                now=test["now"],
                max_lifetime=group["maxLifetime"],
            )
        except E2EEError as exc:
            seen.append(str(getattr(exc, "code", "")))
            raise
        return ticket

    ticket = _outcome(test, check)
    if "code" in test and seen:
        _eq("code", test["code"], seen[0])
    if ticket is None or test["result"] != "valid":
        return
    fields = test["fields"]
    got = {
        "origin": ticket.origin,
        "userId": ticket.user_id,
        "userKey": hx(ticket.user_key),
        "issued": ticket.issued,
        "expires": ticket.expires,
    }
    _eq("fields", fields, got)
    issued = tickets.issue_ticket(
        unhex(group["authoritySeed"]),
        origin=fields["origin"],
        user_id=fields["userId"],
        user_key=unhex(fields["userKey"]),
        issued=fields["issued"],
        expires=fields["expires"],
    )
    _eq("issued ticket", test["ticket"], hx(issued))


def device_list(group: Group, test: Test) -> None:
    _eq("label", hx(SIG_LABEL_DEVICE_LIST), group["label"])
    data = unhex(test["signedList"])
    parsed = _outcome(test, lambda: SignedDeviceList.from_bytes(data))
    if parsed is None or test["result"] != "valid":
        return
    listed = parsed.device_list
    got = {
        "userId": listed.user_id,
        "userKey": hx(listed.user_key),
        "counter": listed.counter,
        "devices": [[d, hx(k)] for d, k in listed.devices],
    }
    _eq("fields", test["fields"], got)
    fields = test["fields"]
    identity = UserIdentity(unhex(group["userSeed"]))
    _eq("userKey", group["userKey"], hx(identity.public_key))
    signed = identity.sign_device_list(
        fields["userId"], fields["counter"], {d: unhex(k) for d, k in fields["devices"]}
    )
    _eq("signed list", test["signedList"], hx(signed.to_bytes()))


def relay_login(group: Group, test: Test) -> None:
    _eq("label", hx(SIG_LABEL_RELAY_LOGIN), group["label"])
    payload = signing.relay_login_payload(
        relay_api.login_payload(
            test["relayOrigin"], unhex(test["challenge"]), test["userId"], test["deviceId"]
        )
    )
    _eq("payload", test["payload"], hx(payload))
    _eq(
        "deviceKey",
        group["deviceKey"],
        hx(primitives.ed25519_public_key(unhex(group["deviceSeed"]))),
    )
    signature = unhex(test["signature"])
    _outcome(test, lambda: signing.verify(unhex(group["deviceKey"]), payload, signature))
    if test["result"] == "valid":
        _eq("signature", test["signature"], hx(signing.sign(unhex(group["deviceSeed"]), payload)))


# --- scenarios ------------------------------------------------------------------------------


def scenario(group: Group, test: Test) -> None:
    """Replay the group's setup and the test's steps (``verify`` has checked that the test's
    result and error agree with what its steps expect: :mod:`e2ee.vectors.outcomes`)."""
    play([*group["setup"], *test["steps"]])


CHECKS: dict[str, dict[str, Check]] = {
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
"""schema name -> test-group type -> check."""
