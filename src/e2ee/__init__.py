"""e2ee: Signal-class end-to-end encryption for one-to-one chat.

PQXDH (X25519 + ML-KEM-1024) key agreement, with X3DH as an opt-in fallback, and the Double
Ratchet with header encryption, over a strict canonical CBOR wire format. The core is
synchronous and sans-IO: randomness comes from a ``provider`` and time from ``now``.

>>> import e2ee
>>> bob = e2ee.Account.generate()
>>> alice = e2ee.Account.generate()
>>> session = alice.start_session(bob.prekey_bundle())
>>> bob_session, plaintext = bob.accept_session(session.encrypt(b"hello"))
>>> plaintext
b'hello'
>>> session.decrypt(bob_session.encrypt(b"hi"))
b'hi'
"""

from e2ee import errors
from e2ee.account import Account
from e2ee.config import SessionConfig
from e2ee.crypto.provider import Provider, SystemProvider
from e2ee.errors import (
    AuthenticationError,
    DecodeError,
    DuplicateMessageError,
    E2EEError,
    HandshakeError,
    SignatureError,
    StateError,
    TooManySkippedError,
    UnsupportedVersionError,
)
from e2ee.peek import MessageInfo, peek
from e2ee.safety import SafetyNumber, safety_number
from e2ee.session import Session
from e2ee.wire.messages import PreKeyBundle

__version__ = "0.1.0"

__all__ = [
    "Account",
    "AuthenticationError",
    "DecodeError",
    "DuplicateMessageError",
    "E2EEError",
    "HandshakeError",
    "MessageInfo",
    "PreKeyBundle",
    "Provider",
    "SafetyNumber",
    "Session",
    "SessionConfig",
    "SignatureError",
    "StateError",
    "SystemProvider",
    "TooManySkippedError",
    "UnsupportedVersionError",
    "__version__",
    "errors",
    "peek",
    "safety_number",
]
