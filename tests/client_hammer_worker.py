"""Hammer one session of a client store from several threads of one process.

Usage: python tests/client_hammer_worker.py send STORE OUT_DIR TAG COUNT THREADS
       python tests/client_hammer_worker.py receive STORE IN_DIR THREADS
``send`` encrypts COUNT messages per thread to user "bob" and writes each envelope to OUT_DIR;
``receive`` claims envelope files from IN_DIR (atomic rename) and receives them.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from e2ee.client import Client


def send(client: Client, out: Path, tag: str, count: int, threads: int) -> None:
    def work(thread: int) -> None:
        for index in range(count):
            body = f"{tag}-{thread}-{index}".encode()
            for envelope in client.send("bob", body):
                name = f"{tag}-{thread}-{index:04d}"
                (out / (name + ".tmp")).write_bytes(envelope.to_bytes())
                os.replace(out / (name + ".tmp"), out / name)

    run_threads(work, threads)


def receive(client: Client, source: Path, threads: int) -> None:
    def work(thread: int) -> None:
        for path in sorted(source.iterdir()):
            if path.suffix:
                continue
            claimed = path.with_suffix(f".claimed{os.getpid()}-{thread}")
            try:
                os.rename(path, claimed)
            except FileNotFoundError:
                continue  # another worker took it
            client.receive(claimed.read_bytes())

    run_threads(work, threads)


def run_threads(work: object, threads: int) -> None:
    errors: list[BaseException] = []

    def guarded(thread: int) -> None:
        try:
            work(thread)  # type: ignore[operator]
        except BaseException as exc:  # reported below
            errors.append(exc)

    pool = [threading.Thread(target=guarded, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if errors:
        raise errors[0]


def main() -> int:
    mode, store = sys.argv[1], sys.argv[2]
    client = Client.open(store)
    if mode == "send":
        send(client, Path(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
    else:
        receive(client, Path(sys.argv[3]), int(sys.argv[4]))
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
