"""Per-session options."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Options for :meth:`e2ee.Account.start_session` and :meth:`e2ee.Account.accept_session`.

    * ``header_encryption`` -- the initiator's choice (default on). It is carried in the initial
      message, authenticated and bound into the key derivation; the responder follows it.
    * ``require_header_encryption`` -- responder policy: refuse initial messages that turn
      header encryption off.
    * ``allow_x3dh`` -- initiator policy: if a bundle's signed prekey has no ML-KEM companion,
      fall back to classic X3DH instead of refusing. Off by default. A responder always refuses
      an X3DH initial message aimed at a signed prekey that has an ML-KEM companion.
    """

    header_encryption: bool = True
    require_header_encryption: bool = False
    allow_x3dh: bool = False


DEFAULT_CONFIG = SessionConfig()
