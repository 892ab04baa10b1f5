"""The randomness provider: everything random the protocol draws comes from here.

Every public call that draws randomness takes ``provider=``; tests and vector generation pass a
provider that replays recorded values, so every run can be reproduced byte for byte.

ML-KEM encapsulation is part of the provider because FIPS 203 encapsulation draws its own
randomness and ``cryptography`` offers no way to pass it in: a replaying provider returns recorded
(shared secret, ciphertext) pairs instead.
"""

from __future__ import annotations

import os
from typing import Protocol

from e2ee.crypto import primitives


class Provider(Protocol):
    """Source of randomness for the protocol."""

    def random_bytes(self, length: int) -> bytes:
        """Return ``length`` bytes from a cryptographically secure source."""
        ...

    def mlkem1024_encapsulate(self, public_key: bytes) -> tuple[bytes, bytes]:
        """Encapsulate to a validated ML-KEM-1024 public key: (shared_secret, ciphertext)."""
        ...


class SystemProvider:
    """The default provider: the operating system's CSPRNG and OpenSSL's ML-KEM."""

    __slots__ = ()

    def random_bytes(self, length: int) -> bytes:
        return os.urandom(length)

    def mlkem1024_encapsulate(self, public_key: bytes) -> tuple[bytes, bytes]:
        return primitives.mlkem1024_encapsulate(public_key)

    def __repr__(self) -> str:
        return "SystemProvider()"


_DEFAULT = SystemProvider()


def default_provider() -> Provider:
    """The process-wide :class:`SystemProvider`."""
    return _DEFAULT
