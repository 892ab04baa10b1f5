"""The client layer: a complete, durable E2EE engine for one device of one user.

Not part of the sans-IO core: it uses sqlite3 and threading. The application moves bytes (see
:class:`Client`); spec/client.md documents the store, the receive transaction, device lists,
linking, trust and session selection.
"""

from e2ee.client.client import Client, Directory
from e2ee.client.envelope import Envelope
from e2ee.client.events import Event, Message, ReceiveResult
from e2ee.client.prekeys import PrekeyPolicy, PrekeyUpload
from e2ee.client.store import Store
from e2ee.client.trust import KnownIdentity, TrustPolicy

__all__ = [
    "Client",
    "Directory",
    "Envelope",
    "Event",
    "KnownIdentity",
    "Message",
    "PrekeyPolicy",
    "PrekeyUpload",
    "ReceiveResult",
    "Store",
    "TrustPolicy",
]
