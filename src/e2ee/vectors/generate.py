"""``e2ee vectors generate --out DIR``: write every vector file, its schema and the manifest.

Generation is a pure function of this source code: every random value is SHAKE-256 of a fixed
label (:func:`e2ee.vectors.providers.derive_value`), ML-KEM encapsulations are the FIPS 203
deterministic ``Encaps_internal(ek, m)`` with a labelled ``m``, the clock is fixed, and files are
written with sorted keys. Running it twice, anywhere, gives the same bytes, which is what the
test suite checks against the committed test_vectors/.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from e2ee.vectors import (
    gen_conversations,
    gen_handshakes,
    gen_kdf,
    gen_primitives,
    gen_relay,
    gen_wire,
)
from e2ee.vectors.common import (
    JSON,
    MANIFEST_NAME,
    SCHEMA_DIR,
    SCHEMA_VERSION,
    SPEC_VERSION,
    dump_json,
)
from e2ee.vectors.schemas import SCHEMAS

FILES: dict[str, Callable[[], JSON]] = {
    "x25519.json": gen_primitives.x25519_file,
    "identity_keys.json": gen_primitives.identity_keys_file,
    "bundle_signatures.json": gen_primitives.ed25519_file,
    "hkdf_sha256.json": gen_primitives.hkdf_file,
    "message_aead.json": gen_primitives.message_aead_file,
    "header_aead.json": gen_primitives.header_aead_file,
    "mlkem1024.json": gen_primitives.mlkem_file,
    "kdf_rk.json": gen_kdf.kdf_rk_file,
    "kdf_ck.json": gen_kdf.kdf_ck_file,
    "message_keys.json": gen_kdf.message_keys_file,
    "handshake_kdf.json": gen_kdf.handshake_kdf_file,
    "wire_bundle.json": gen_wire.bundle_file,
    "wire_initial_message.json": gen_wire.initial_message_file,
    "wire_normal_message.json": gen_wire.normal_message_file,
    "handshake_pqxdh.json": gen_handshakes.pqxdh_file,
    "handshake_x3dh.json": gen_handshakes.x3dh_file,
    "handshake_rejections.json": gen_handshakes.rejections_file,
    "handshake_replay_memory.json": gen_handshakes.replay_memory_file,
    "conversation_basic.json": gen_conversations.basic_file,
    "conversation_out_of_order.json": gen_conversations.out_of_order_file,
    "conversation_limits.json": gen_conversations.limits_file,
    "conversation_replay.json": gen_conversations.replay_file,
    "conversation_tamper.json": gen_conversations.tamper_file,
    "conversation_header_encryption.json": gen_conversations.header_encryption_file,
    "conversation_state.json": gen_conversations.state_file,
    "relay_signatures.json": gen_relay.relay_signatures_file,
}
"""Output file name -> generator."""


def build() -> dict[str, bytes]:
    """Every file of the vector directory (relative path -> bytes), manifest included."""
    out: dict[str, bytes] = {}
    manifest: dict[str, JSON] = {}
    total = 0
    for name, make in FILES.items():
        data = make()
        out[name] = dump_json(data)
        total += data["numberOfTests"]
        manifest[name] = {
            "sha256": hashlib.sha256(out[name]).hexdigest(),
            "schema": data["schema"],
            "numberOfTests": data["numberOfTests"],
        }
    for schema_name, schema in SCHEMAS.items():
        path = f"{SCHEMA_DIR}/{schema_name}"
        out[path] = dump_json(schema)
        manifest[path] = {"sha256": hashlib.sha256(out[path]).hexdigest()}
    out[MANIFEST_NAME] = dump_json(
        {
            "schema": "e2ee_manifest_schema_v1.json",
            "schemaVersion": SCHEMA_VERSION,
            "specVersion": SPEC_VERSION,
            "numberOfTests": total,
            "files": manifest,
        }
    )
    return out


def generate(out_dir: Path) -> dict[str, bytes]:
    """Write every file under ``out_dir`` (created if needed); return what was written.

    Files of the directory that this version does not produce are left alone (the
    hand-written README.md among them).
    """
    files = build()
    for name, data in files.items():
        path = out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files
