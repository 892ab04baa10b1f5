"""The conformance protocol's constants, shared by the runner and the reference adapter.

spec/conformance.md is the normative description; this module only names things.

One JSON object per line in each direction (UTF-8, no embedded newlines). A request is
``{"id": <int>, "op": <name>, ...arguments}``; its response is ``{"id": <same>, "result":
{...}}`` or ``{"id": <same>, "error": {"category": <string>, "message": <string>}}``. Bytes
are lowercase hex strings, as in the vectors.
"""

from __future__ import annotations

import json
from typing import Any

PROTOCOL_NAME = "e2ee-conformance"
PROTOCOL_VERSION = 1

MAX_LINE_BYTES = 16 * 1024 * 1024
"""Longest response line the runner reads (a longer one is a protocol violation)."""

DEFAULT_TIMEOUT = 10.0
"""Seconds the runner waits for the response to one request."""
DEFAULT_STARTUP_TIMEOUT = 30.0
"""Seconds the runner waits for the response to ``hello`` (process start included)."""
DEFAULT_MAX_RESTARTS = 3
"""Times the runner restarts an adapter that crashed, hung or broke the protocol."""

STATE_CAPABILITY = "state"
"""Capability for e2ee's persisted-state format (spec/state.md): the ``save_*``/``load_*``
scenario operations. A scenario case using one of them also needs this capability."""

STATE_OPS = frozenset({"save_account", "load_account", "save_session", "load_session"})

SCENARIO_OPS = (
    "generate_account",
    "generate_one_time_prekeys",
    "rotate_signed_prekey",
    "prekey_bundle",
    "start_session",
    "accept_session",
    "encrypt",
    "decrypt",
    "save_session",
    "load_session",
    "save_account",
    "load_account",
)
"""The scenario operations, named and shaped exactly as the steps of the scenario vectors."""

SCENARIO_CONTROL_OPS = ("reset", "fingerprint")
"""Scenario bookkeeping: forget every party; fingerprint a party's session or account."""

DEBUG_OUTPUTS = frozenset({"handshake", "ratchet", "messageKey"})
"""Scenario outputs an adapter may omit (or give in part); compared only where given."""

E2EE_ERROR_CATEGORIES = (
    "decode_error",
    "unsupported_version",
    "handshake_failed",
    "signature_invalid",
    "auth_failed",
    "duplicate_message",
    "too_many_skipped",
    "state_corrupt",
    "local_error",
    "exhausted",
    "device_list_invalid",
    "relay_bad_request",
    "relay_forbidden",
)
"""The ``category`` strings of :mod:`e2ee.errors` an adapter maps its own errors onto. The
``relay_*`` categories also carry the relay's error ``code`` (spec/conformance.md section 4)."""

PROTOCOL_ERROR_CATEGORIES = (
    "unsupported_operation",
    "bad_request",
    "replay_mismatch",
    "internal_error",
)
"""Errors about the request rather than the cryptography; never an expected outcome."""

RELAY_OPS = (
    "registration_ticket_check",
    "registration_ticket_issue",
    "device_list_verify",
    "device_list_sign",
    "relay_login_payload",
    "relay_login_sign",
    "verify_signature",
)
"""The relay layer's signed structures (relay_signatures.json): check and make a registration
ticket, a signed device list and a login signature; ``verify_signature`` checks the latter."""

AREA_OPS: dict[str, tuple[str, ...]] = {
    "x25519": ("x25519", "x25519_public_key"),
    "identity_keys": ("identity_key_from_seed", "identity_key_to_x25519"),
    "bundle_signatures": ("bundle_signature_payload", "verify_signature"),
    "hkdf_sha256": ("hkdf_sha256",),
    "message_aead": ("message_key_expand", "message_encrypt", "message_decrypt"),
    "header_aead": ("header_seal", "header_open"),
    "mlkem1024": ("mlkem_public_key", "mlkem_decapsulate", "mlkem_check_encapsulation_key"),
    "kdf_rk": ("kdf_rk", "kdf_rk_he", "x25519", "x25519_public_key"),
    "kdf_ck": ("kdf_ck",),
    "message_keys": ("message_key_expand",),
    "handshake_kdf": ("handshake_derive",),
    "wire_bundle": ("decode_bundle",),
    "wire_initial_message": ("decode_message",),
    "wire_normal_message": ("decode_message",),
    "handshake_pqxdh": SCENARIO_OPS + SCENARIO_CONTROL_OPS,
    "handshake_x3dh": SCENARIO_OPS + SCENARIO_CONTROL_OPS,
    "handshake_rejections": SCENARIO_OPS + SCENARIO_CONTROL_OPS,
    "handshake_replay_memory": SCENARIO_OPS + SCENARIO_CONTROL_OPS,
    "conversation_basic": SCENARIO_OPS + SCENARIO_CONTROL_OPS,
    "conversation_out_of_order": SCENARIO_OPS + SCENARIO_CONTROL_OPS,
    "conversation_limits": SCENARIO_OPS + SCENARIO_CONTROL_OPS,
    "conversation_replay": SCENARIO_OPS + SCENARIO_CONTROL_OPS,
    "conversation_tamper": SCENARIO_OPS + SCENARIO_CONTROL_OPS,
    "conversation_header_encryption": SCENARIO_OPS + SCENARIO_CONTROL_OPS,
    "conversation_state": SCENARIO_OPS + SCENARIO_CONTROL_OPS,
    "relay_signatures": RELAY_OPS,
}
"""Area (= vector file name without ``.json``) -> the operations its cases send."""


def area_of(file_name: str) -> str:
    """The area of a vector file: its name without ``.json``."""
    return file_name[:-5] if file_name.endswith(".json") else file_name


def encode_line(message: dict[str, Any]) -> bytes:
    """One protocol line: compact JSON, ASCII only, newline-terminated."""
    return (json.dumps(message, separators=(",", ":"), ensure_ascii=True) + "\n").encode("ascii")
