"""Generators of the KDF-chain vectors: KDF_RK, KDF_RK_HE, DH ratchet steps, KDF_CK,
message-key expansion and the handshake KDF (PQXDH / X3DH), all from the reference code."""

from __future__ import annotations

from e2ee import limits
from e2ee.vectors import reference as ref
from e2ee.vectors.common import JSON, envelope, hx, note
from e2ee.vectors.gen_primitives import case, kem_key, rnd

KDF_NOTES = {
    "Normal": note("BASIC", "Pseudorandom inputs."),
    "HeaderEncryption": note(
        "BASIC", "The header-encryption variant (KDF_RK_HE also outputs the next header key)."
    ),
    "ChainSequence": note("BASIC", "Several consecutive steps of one chain."),
    "EdgeCase": note("EDGE_CASE", "All-zero or all-one input keys."),
}


def _kdf_rk(root_key: bytes, dh: bytes) -> tuple[bytes, bytes]:
    out = ref.hkdf_sha256(root_key, dh, limits.KDF_INFO_ROOT, 64)
    return out[:32], out[32:]


def _kdf_rk_he(root_key: bytes, dh: bytes) -> tuple[bytes, bytes, bytes]:
    out = ref.hkdf_sha256(root_key, dh, limits.KDF_INFO_ROOT_HE, 96)
    return out[:32], out[32:64], out[64:]


def kdf_rk_file() -> JSON:
    ns = "kdf rk"
    plain: list[JSON] = []
    he: list[JSON] = []
    inputs = [(bytes(32), bytes(32), ["EdgeCase"]), (b"\xff" * 32, b"\xff" * 32, ["EdgeCase"])]
    inputs += [(rnd(ns, f"rk {i}"), rnd(ns, f"dh {i}"), ["Normal"]) for i in range(6)]
    for root_key, dh, flags in inputs:
        rk, ck = _kdf_rk(root_key, dh)
        plain.append(
            case(
                "KDF_RK",
                flags,
                rootKey=hx(root_key),
                dhOutput=hx(dh),
                newRootKey=hx(rk),
                chainKey=hx(ck),
            )
        )
        rk, ck, nhk = _kdf_rk_he(root_key, dh)
        he.append(
            case(
                "KDF_RK_HE",
                [*flags, "HeaderEncryption"],
                rootKey=hx(root_key),
                dhOutput=hx(dh),
                newRootKey=hx(rk),
                chainKey=hx(ck),
                nextHeaderKey=hx(nhk),
            )
        )
    steps: list[JSON] = []
    for i in range(6):
        header_encryption = i % 2 == 1
        root_key = rnd(ns, f"step rk {i}")
        our_private = rnd(ns, f"step ours {i}")
        their_private = rnd(ns, f"step theirs {i}")
        new_private = rnd(ns, f"step new {i}")
        their_public = ref.x25519_base(their_private)
        dh_receive = ref.x25519(our_private, their_public)
        dh_send = ref.x25519(new_private, their_public)
        test: JSON = {
            "rootKey": hx(root_key),
            "ourPrivateKey": hx(our_private),
            "theirPublicKey": hx(their_public),
            "newPrivateKey": hx(new_private),
            "newPublicKey": hx(ref.x25519_base(new_private)),
            "dhReceive": hx(dh_receive),
            "dhSend": hx(dh_send),
        }
        if header_encryption:
            rk1, ckr, nhkr = _kdf_rk_he(root_key, dh_receive)
            rk2, cks, nhks = _kdf_rk_he(rk1, dh_send)
            test.update(nextReceivingHeaderKey=hx(nhkr), nextSendingHeaderKey=hx(nhks))
        else:
            rk1, ckr = _kdf_rk(root_key, dh_receive)
            rk2, cks = _kdf_rk(rk1, dh_send)
        test.update(
            intermediateRootKey=hx(rk1),
            receivingChainKey=hx(ckr),
            newRootKey=hx(rk2),
            sendingChainKey=hx(cks),
        )
        flags = ["Normal", "HeaderEncryption"] if header_encryption else ["Normal"]
        steps.append(
            case(
                "DH ratchet step (receive then send)",
                flags,
                headerEncryption=header_encryption,
                **test,
            )
        )
    return envelope(
        schema="e2ee_kdf_rk_schema_v1.json",
        algorithm="KDF_RK",
        header=[
            "KDF_RK(rk, dh) = HKDF-SHA-256(salt = rk, ikm = dh, info = 'e2ee/v1/ratchet/root', "
            "64) -> newRootKey || chainKey.",
            "KDF_RK_HE(rk, dh) = HKDF-SHA-256(salt = rk, ikm = dh, info = "
            "'e2ee/v1/ratchet/root+header-key', 96) -> newRootKey || chainKey || nextHeaderKey.",
            "DhRatchetStep: a whole DH ratchet step: dhReceive = X25519(ours, theirs), then "
            "dhSend = X25519(new, theirs), each through KDF_RK (or KDF_RK_HE).",
        ],
        notes=KDF_NOTES,
        groups=[
            {"type": "KdfRk", "tests": plain},
            {"type": "KdfRkHe", "tests": he},
            {"type": "DhRatchetStep", "tests": steps},
        ],
    )


def _kdf_ck(chain_key: bytes) -> tuple[bytes, bytes]:
    return ref.hmac_sha256(chain_key, b"\x02"), ref.hmac_sha256(chain_key, b"\x01")


def kdf_ck_file() -> JSON:
    ns = "kdf ck"
    single: list[JSON] = []
    keys = [(bytes(32), ["EdgeCase"]), (b"\xff" * 32, ["EdgeCase"])]
    keys += [(rnd(ns, f"ck {i}"), ["Normal"]) for i in range(6)]
    for chain_key, flags in keys:
        next_ck, mk = _kdf_ck(chain_key)
        single.append(
            case(
                "KDF_CK", flags, chainKey=hx(chain_key), nextChainKey=hx(next_ck), messageKey=hx(mk)
            )
        )
    sequences: list[JSON] = []
    for i, count in enumerate((3, 10, 25)):
        chain_key = rnd(ns, f"sequence {i}")
        start = chain_key
        message_keys = []
        chain_keys = []
        for _ in range(count):
            chain_key, mk = _kdf_ck(chain_key)
            message_keys.append(hx(mk))
            chain_keys.append(hx(chain_key))
        sequences.append(
            case(
                f"{count} steps of one chain",
                ["ChainSequence"],
                chainKey=hx(start),
                steps=count,
                messageKeys=message_keys,
                chainKeys=chain_keys,
            )
        )
    return envelope(
        schema="e2ee_kdf_ck_schema_v1.json",
        algorithm="KDF_CK",
        header=[
            "KDF_CK(ck) = (HMAC-SHA-256(ck, 0x02), HMAC-SHA-256(ck, 0x01)) = "
            "(nextChainKey, messageKey).",
            "KdfCkChain: messageKeys[i] is the key of message i of a chain whose first chain "
            "key is chainKey; chainKeys[i] is the chain key after message i.",
        ],
        notes=KDF_NOTES,
        groups=[{"type": "KdfCk", "tests": single}, {"type": "KdfCkChain", "tests": sequences}],
    )


def message_keys_file() -> JSON:
    ns = "message keys"
    tests: list[JSON] = []
    keys = [(bytes(32), ["EdgeCase"]), (b"\xff" * 32, ["EdgeCase"])]
    keys += [(rnd(ns, f"mk {i}"), ["Normal"]) for i in range(6)]
    for message_key, flags in keys:
        okm = ref.hkdf_sha256(bytes(32), message_key, limits.KDF_INFO_MESSAGE_KEYS, 80)
        tests.append(
            case(
                "message-key expansion",
                flags,
                messageKey=hx(message_key),
                okm=hx(okm),
                encKey=hx(okm[:32]),
                authKey=hx(okm[32:64]),
                iv=hx(okm[64:]),
            )
        )
    return envelope(
        schema="e2ee_message_keys_schema_v1.json",
        algorithm="MessageKeyExpansion",
        header=[
            "okm = HKDF-SHA-256(salt = 32 zero bytes, ikm = messageKey, info = "
            "'e2ee/v1/ratchet/message-keys', 80); encKey = okm[0:32], authKey = okm[32:64], "
            "iv = okm[64:80].",
        ],
        notes=KDF_NOTES,
        groups=[{"type": "MessageKeyExpansion", "tests": tests}],
    )


HANDSHAKE_KDF_NOTES = {
    "Pqxdh": note("BASIC", "PQXDH: an ML-KEM shared secret follows the DH outputs."),
    "X3dh": note("BASIC", "X3DH: DH outputs only, X3DH info label."),
    "OneTimePrekey": note("BASIC", "A one-time X25519 prekey was used: four DH outputs."),
    "HeaderEncryption": note("BASIC", "Header encryption is on (bound into the transcript)."),
}


def _transcript_encoding(t: JSON, kem_key_bytes: bytes | None) -> bytes:
    def b(name: str) -> bytes:
        return bytes.fromhex(t[name])

    def tagged(prefix: bytes, value: bytes | None) -> bytes | None:
        return None if value is None else prefix + value

    opk = None if t["oneTimePrekey"] is None else b("oneTimePrekey")
    ct = None if t["kemCiphertext"] is None else b("kemCiphertext")
    return ref.cbor_flat_array(
        [
            limits.PROTOCOL_VERSION,
            ct is not None,
            bool(t["headerEncryption"]),
            b"\x02" + b("initiatorIdentityKey"),
            b"\x02" + b("responderIdentityKey"),
            int(t["signedPrekeyId"]),
            b"\x01" + b("signedPrekey"),
            int(t["signedPrekeyTimestamp"]),
            t["oneTimePrekeyId"],
            tagged(b"\x01", opk),
            t["kemPrekeyId"],
            tagged(b"\x03", kem_key_bytes),
            ct,
            b"\x01" + b("baseKey"),
        ]
    )


def handshake_kdf_file() -> JSON:
    ns = "handshake kdf"
    _, kem_public = kem_key("handshake kdf kem")
    tests: list[JSON] = []
    variants = [
        (True, True, True),
        (True, True, False),
        (True, False, True),
        (True, False, False),
        (False, True, True),
        (False, True, False),
        (False, False, True),
        (False, False, False),
    ]
    for i, (pq, one_time, header_encryption) in enumerate(variants):
        ik_a = ref.ed25519_public_key(rnd(ns, f"alice {i}"))
        ik_b = ref.ed25519_public_key(rnd(ns, f"bob {i}"))
        transcript: JSON = {
            "initiatorIdentityKey": hx(ik_a),
            "responderIdentityKey": hx(ik_b),
            "signedPrekeyId": 1 + i,
            "signedPrekey": hx(ref.x25519_base(rnd(ns, f"spk {i}"))),
            "signedPrekeyTimestamp": 1_800_000_000 - i * 3600,
            "oneTimePrekeyId": 100 + i if one_time else None,
            "oneTimePrekey": hx(ref.x25519_base(rnd(ns, f"opk {i}"))) if one_time else None,
            "kemPrekeyId": 200 + i if pq else None,
            "kemPrekey": "group" if pq else None,
            "kemCiphertext": hx(rnd(ns, f"ct {i}", 1568)) if pq else None,
            "baseKey": hx(ref.x25519_base(rnd(ns, f"base {i}"))),
            "headerEncryption": header_encryption,
        }
        dh = [hx(rnd(ns, f"dh {i} {j}")) for j in range(4 if one_time else 3)]
        kem_secret = rnd(ns, f"ss {i}") if pq else None
        encoding = _transcript_encoding(transcript, kem_public if pq else None)
        transcript_hash = ref.sha256(limits.HASH_LABEL_TRANSCRIPT + encoding)
        ikm = b"\xff" * 32 + b"".join(bytes.fromhex(d) for d in dh) + (kem_secret or b"")
        info = (limits.KDF_INFO_PQXDH if pq else limits.KDF_INFO_X3DH) + transcript_hash
        out = ref.hkdf_sha256(bytes(32), ikm, info, 96)
        flags = ["Pqxdh" if pq else "X3dh"]
        flags += ["OneTimePrekey"] if one_time else []
        flags += ["HeaderEncryption"] if header_encryption else []
        tests.append(
            case(
                f"{'PQXDH' if pq else 'X3DH'}, {'with' if one_time else 'without'} one-time "
                f"prekey, header encryption {'on' if header_encryption else 'off'}",
                flags,
                transcript=transcript,
                dhOutputs=dh,
                kemSharedSecret=None if kem_secret is None else hx(kem_secret),
                transcriptEncoding=hx(encoding),
                transcriptHash=hx(transcript_hash),
                rootKey=hx(out[:32]),
                headerKey=hx(out[32:64]),
                nextHeaderKey=hx(out[64:]),
                sessionId=hx(ref.sha256(limits.HASH_LABEL_SESSION_ID + transcript_hash)[:16]),
                associatedData=hx(b"\x02" + ik_a + b"\x02" + ik_b),
            )
        )
    return envelope(
        schema="e2ee_handshake_kdf_schema_v1.json",
        algorithm="PQXDH-KDF",
        header=[
            "The key derivation shared by both sides of PQXDH / X3DH (pqxdh.derive):",
            "transcriptHash = SHA-256('e2ee/v1/transcript' 0x00 || canonical CBOR array of the "
            "public values, keys with their 1-byte type prefix);",
            "rootKey || headerKey || nextHeaderKey = HKDF-SHA-256(salt = 32 zero bytes, ikm = "
            "32 x 0xFF || DH1 || DH2 || DH3 [|| DH4] [|| SS], info = label || transcriptHash, 96);",
            "sessionId = SHA-256('e2ee/v1/session-id' 0x00 || transcriptHash)[:16]; "
            "associatedData = 0x02 || IK_A || 0x02 || IK_B.",
            "headerKey is the initiator's first sending header key (HKs) and the responder's "
            "first receiving one (NHKr); nextHeaderKey is the responder's first NHKs / the "
            "initiator's first NHKr. transcript.kemPrekey 'group' names the group's kemPrekey.",
        ],
        notes=HANDSHAKE_KDF_NOTES,
        groups=[{"type": "HandshakeDerive", "kemPrekey": hx(kem_public), "tests": tests}],
    )
