"""Cryptographic primitives and the randomness provider.

:mod:`e2ee.crypto.primitives` is the only module of e2ee that imports ``cryptography`` or
``nacl``; it translates their exceptions into :mod:`e2ee.errors` at that boundary.
"""

from e2ee.crypto.provider import Provider, SystemProvider, default_provider

__all__ = ["Provider", "SystemProvider", "default_provider"]
