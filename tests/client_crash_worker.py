"""Receive a batch of envelopes into a client store, crashing at an injected point.

Usage: python tests/client_crash_worker.py STORE ENVELOPE_DIR
Environment: E2EE_CRASH_POINT (before_decrypt | after_decrypt | after_save | after_commit) and
E2EE_CRASH_AT (crash on the n-th time that point is reached, default 1). Exits with status 77
when it crashes (os._exit: no cleanup, no commit, no flush), 0 when every envelope was handled.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from e2ee.client import Client

CRASH_STATUS = 77


def main() -> int:
    store_path, envelope_dir = sys.argv[1], Path(sys.argv[2])
    point = os.environ.get("E2EE_CRASH_POINT")
    crash_at = int(os.environ.get("E2EE_CRASH_AT", "1"))
    hits = 0

    def hook(name: str) -> None:
        nonlocal hits
        if name == point:
            hits += 1
            if hits == crash_at:
                os._exit(CRASH_STATUS)

    client = Client.open(store_path)
    client.store.checkpoint_hook = hook
    for path in sorted(envelope_dir.iterdir()):
        client.receive(path.read_bytes())  # redelivered envelopes come back as duplicates
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
