"""Every protocol constant, limit and label of e2ee, in one table.

The values here are part of the specification (spec/): changing any of them changes the wire
format or the key schedule and requires a version bump, regenerated test vectors and a
CHANGELOG entry.
"""

from __future__ import annotations

from typing import Final

# --- versions -------------------------------------------------------------------------------
PROTOCOL_VERSION: Final = 1
"""Version carried in every wire structure (bundle, initial message, normal message)."""
STATE_VERSION: Final = 1
"""Version of the persisted account and session layouts."""
SEALED_STATE_VERSION: Final = 1
"""Version of the encrypted-at-rest envelope around persisted state."""

# --- structure types (the second element / key 1 of every top-level structure) --------------
TYPE_PREKEY_BUNDLE: Final = 1
TYPE_INITIAL_MESSAGE: Final = 2
TYPE_NORMAL_MESSAGE: Final = 3
TYPE_ACCOUNT_STATE: Final = 16
TYPE_SESSION_STATE: Final = 17
TYPE_SEALED_STATE: Final = 18
# Client layer (e2ee.identity, e2ee.client; spec/client.md). Public structures of the client
# layer, not of the core protocol: their values are disjoint from the core's.
TYPE_USER_IDENTITY_STATE: Final = 19
TYPE_DEVICE_LIST: Final = 32
TYPE_SIGNED_DEVICE_LIST: Final = 33
TYPE_ENVELOPE: Final = 34
TYPE_CONTENT: Final = 35
TYPE_LINK_REQUEST: Final = 36
TYPE_LINK_APPROVAL: Final = 37
# Relay layer (e2ee.relay.tickets; spec/relay.md): a platform's registration ticket.
TYPE_REGISTRATION_TICKET: Final = 38
TYPE_SIGNED_REGISTRATION_TICKET: Final = 39

# --- key encodings (type prefixes used inside every KDF and signature input) ---------------
# Disjoint one-byte prefixes so that no curve key encoding can be mistaken for a KEM key
# encoding (PQXDH security considerations).
KEY_TYPE_X25519: Final = b"\x01"
KEY_TYPE_ED25519: Final = b"\x02"
KEY_TYPE_MLKEM1024: Final = b"\x03"

X25519_KEY_SIZE: Final = 32
ED25519_KEY_SIZE: Final = 32
ED25519_SIGNATURE_SIZE: Final = 64
MLKEM1024_PUBLIC_KEY_SIZE: Final = 1568
MLKEM1024_CIPHERTEXT_SIZE: Final = 1568
MLKEM1024_SEED_SIZE: Final = 64
SHARED_SECRET_SIZE: Final = 32
SESSION_ID_SIZE: Final = 16

# --- signature purpose labels --------------------------------------------------------------
# Every signature made by an identity key covers one of these labels first, so that a signature
# made for one purpose is never valid for another. Later layers add theirs here.
SIG_LABEL_SIGNED_PREKEY: Final = b"e2ee/v1/sig/signed-prekey\x00"
SIG_LABEL_ONE_TIME_PREKEY: Final = b"e2ee/v1/sig/one-time-prekey\x00"
SIG_LABEL_ONE_TIME_KEM_PREKEY: Final = b"e2ee/v1/sig/one-time-kem-prekey\x00"
SIG_LABEL_DEVICE_LIST: Final = b"e2ee/v1/sig/device-list\x00"
SIG_LABEL_RELAY_LOGIN: Final = b"e2ee/v1/sig/relay-login\x00"
SIG_LABEL_REGISTRATION_TICKET: Final = b"e2ee/v1/sig/registration-ticket\x00"
SIGNATURE_LABELS: Final = (
    SIG_LABEL_SIGNED_PREKEY,
    SIG_LABEL_ONE_TIME_PREKEY,
    SIG_LABEL_ONE_TIME_KEM_PREKEY,
    SIG_LABEL_DEVICE_LIST,
    SIG_LABEL_RELAY_LOGIN,
    SIG_LABEL_REGISTRATION_TICKET,
)

# --- KDF labels (HKDF info strings) --------------------------------------------------------
KDF_INFO_PQXDH: Final = b"e2ee/v1/pqxdh/X25519/SHA-256/ML-KEM-1024"
KDF_INFO_X3DH: Final = b"e2ee/v1/x3dh/X25519/SHA-256"
KDF_INFO_ROOT: Final = b"e2ee/v1/ratchet/root"
KDF_INFO_ROOT_HE: Final = b"e2ee/v1/ratchet/root+header-key"
KDF_INFO_MESSAGE_KEYS: Final = b"e2ee/v1/ratchet/message-keys"
KDF_INFO_STATE_AT_REST: Final = b"e2ee/v1/state-at-rest"
HASH_LABEL_TRANSCRIPT: Final = b"e2ee/v1/transcript\x00"
HASH_LABEL_SESSION_ID: Final = b"e2ee/v1/session-id\x00"
KDF_CK_MESSAGE_KEY_BYTE: Final = b"\x01"
KDF_CK_CHAIN_KEY_BYTE: Final = b"\x02"
X3DH_F: Final = b"\xff" * 32
"""The 32 0xFF bytes prepended to the DH outputs (X3DH section 2.2, for X25519)."""
HKDF_ZERO_SALT: Final = b"\x00" * 32

# --- message encryption ----------------------------------------------------------------------
MESSAGE_TAG_SIZE: Final = 16
"""Truncated HMAC-SHA-256 tag length (128 bits)."""
HEADER_PLAINTEXT_SIZE: Final = 40
"""ratchet public key (32) || previous chain length (u32 BE) || message number (u32 BE)."""
HEADER_NONCE_SIZE: Final = 24
HEADER_TAG_SIZE: Final = 16
ENCRYPTED_HEADER_SIZE: Final = HEADER_NONCE_SIZE + HEADER_PLAINTEXT_SIZE + HEADER_TAG_SIZE
MAX_COUNTER: Final = 2**32 - 1

# --- Double Ratchet limits -------------------------------------------------------------------
MAX_SKIP: Final = 1_000
"""Most message keys derived on a chain for one incoming message (larger jumps are refused)."""
MAX_PREVIOUS_CHAIN_SKIP: Final = 1_000
"""Most keys derived for the rest of the previous chain at a DH step (the rest is dropped)."""
MAX_SKIPPED_KEYS: Final = 2_000
"""Most skipped message keys stored per session (oldest evicted first)."""
MAX_RECEIVING_CHAINS: Final = 5
"""Receiving chains remembered per session (for skipped keys and duplicate detection)."""

# --- handshake / account limits -------------------------------------------------------------
MAX_SIGNED_PREKEY_AGE: Final = 30 * 24 * 3600
"""A bundle whose signed prekey is older than this (seconds) is refused by the initiator."""
MAX_SIGNED_PREKEY_FUTURE_SKEW: Final = 24 * 3600
"""A signed prekey dated further than this in the future is refused."""
SIGNED_PREKEY_GRACE_PERIOD: Final = 14 * 24 * 3600
"""How long a replaced signed prekey still accepts initial messages."""
MAX_OLD_SIGNED_PREKEYS: Final = 4
MAX_BASE_KEYS_PER_PREKEY: Final = 1_000
"""Base keys remembered per signed prekey for replay protection; when full, rotate."""
MAX_ONE_TIME_PREKEYS: Final = 1_000
"""One-time EC (and, separately, ML-KEM) prekeys an account holds at most."""

# --- sizes -----------------------------------------------------------------------------------
MAX_PLAINTEXT_SIZE: Final = 256 * 1024
MAX_MESSAGE_SIZE: Final = MAX_PLAINTEXT_SIZE + 8 * 1024
MAX_BUNDLE_SIZE: Final = 8 * 1024
MAX_STATE_SIZE: Final = 16 * 1024 * 1024
MAX_CBOR_DEPTH: Final = 8
