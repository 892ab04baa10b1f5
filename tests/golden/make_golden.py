"""Generate the golden state files that tests/test_state.py loads.

Run from the project root::

    .venv/bin/python -m tests.golden.make_golden

It writes, next to this script, a v1 account (post-quantum, three one-time prekeys, one of them
handed out in a bundle) and v1 session pairs in the middle of a conversation (header encryption
on and off), each as plain ``.cbor`` state and as a ``.sealed.cbor`` variant under a fixed
32-byte key, plus the next wire messages each object would receive (``.bin``) and
``manifest.json`` with the plaintexts (hex) those messages must decrypt to.

Everything random comes from :class:`e2ee.testing.DeterministicProvider` seeds and the clock is
fixed at ``NOW``, so a rerun reproduces every file byte for byte -- except ML-KEM encapsulation,
whose randomness ``cryptography`` cannot take: encapsulations are recorded in
``encapsulations.json`` on the first run and replayed on later runs.

The files are compatibility fixtures: a release must keep loading them. Regenerate them only for
a deliberate change of the persisted layout, which needs a state-version bump; then keep these
files (they remain the v1 goldens) and add new ones for the new version.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import e2ee
from e2ee.crypto import primitives
from e2ee.limits import STATE_VERSION
from e2ee.testing import DeterministicProvider

NOW = 1_800_000_000
SEAL_KEY = bytes(range(32))
GOLDEN_DIR = Path(__file__).resolve().parent
ENCAPSULATIONS_FILE = "encapsulations.json"
MANIFEST_FILE = "manifest.json"


class GoldenProvider(DeterministicProvider):
    """A DeterministicProvider whose ML-KEM encapsulations are replayed when recorded."""

    def __init__(self, seed: str, encapsulations: dict[str, dict[str, str]]) -> None:
        super().__init__(seed)
        self._recorded = encapsulations

    def mlkem1024_encapsulate(self, public_key: bytes) -> tuple[bytes, bytes]:
        name = hashlib.sha256(public_key).hexdigest()
        entry = self._recorded.get(name)
        if entry is None:
            shared, ciphertext = primitives.mlkem1024_encapsulate(public_key)
            entry = {"shared_secret": shared.hex(), "ciphertext": ciphertext.hex()}
            self._recorded[name] = entry
        primitives.mlkem1024_check_public_key(public_key)
        result = bytes.fromhex(entry["shared_secret"]), bytes.fromhex(entry["ciphertext"])
        self.encapsulations.append(result)
        return result


class Writer:
    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.states: list[dict[str, Any]] = []

    def write(self, name: str, data: bytes) -> str:
        (self.out_dir / name).write_bytes(data)
        return name

    def add_state(
        self,
        name: str,
        kind: str,
        obj: e2ee.Account | e2ee.Session,
        messages: list[tuple[bytes, bytes]],
        description: str,
    ) -> None:
        seal_seed = f"golden/seal/{name}"
        entry: dict[str, Any] = {
            "name": name,
            "type": kind,
            "description": description,
            "file": self.write(f"{name}.cbor", obj.to_bytes()),
            "sealed_file": self.write(
                f"{name}.sealed.cbor",
                obj.to_bytes(key=SEAL_KEY, provider=DeterministicProvider(seal_seed)),
            ),
            "seal_seed": seal_seed,
            "messages": [
                {
                    "file": self.write(f"{name}.message{i}.bin", wire),
                    "plaintext_hex": plaintext.hex(),
                }
                for i, (wire, plaintext) in enumerate(messages)
            ],
        }
        self.states.append(entry)


def make_account(writer: Writer, encapsulations: dict[str, dict[str, str]]) -> None:
    provider = GoldenProvider("golden/account_v1", encapsulations)
    account = e2ee.Account.generate(provider=provider, now=NOW, post_quantum=True)
    account.generate_one_time_prekeys(3, provider=provider)
    bundle = account.prekey_bundle()  # hands out the first one-time prekey of each kind
    # Snapshot before the initial message arrives; then record what the account will receive.
    snapshot = e2ee.Account.from_bytes(account.to_bytes())
    initiator = e2ee.Account.generate(provider=provider, now=NOW)
    session = initiator.start_session(bundle, provider=provider, now=NOW)
    plaintext = b"golden account_v1: first message \x00\xff"
    message = session.encrypt(plaintext, provider=provider)
    writer.add_state(
        "account_v1",
        "account",
        snapshot,
        [(message, plaintext)],
        "post-quantum account, 3 one-time EC + 3 one-time ML-KEM prekeys, the first of each "
        "handed out in a bundle; message0 is a PQXDH initial message using them",
    )


def make_session_pair(
    writer: Writer, encapsulations: dict[str, dict[str, str]], header_encryption: bool
) -> None:
    mode = "he" if header_encryption else "no_he"
    provider = GoldenProvider(f"golden/session_v1_{mode}", encapsulations)
    bob_account = e2ee.Account.generate(provider=provider, now=NOW, post_quantum=True)
    bob_account.generate_one_time_prekeys(1, provider=provider)
    alice_account = e2ee.Account.generate(provider=provider, now=NOW)
    config = e2ee.SessionConfig(header_encryption=header_encryption)
    alice = alice_account.start_session(
        bob_account.prekey_bundle(), config=config, provider=provider, now=NOW
    )
    bob, first = bob_account.accept_session(
        alice.encrypt(b"hello bob", provider=provider), provider=provider, now=NOW
    )
    assert first == b"hello bob"

    def send(sender: e2ee.Session, text: str) -> tuple[bytes, bytes]:
        plaintext = f"golden {mode}: {text}".encode()
        return sender.encrypt(plaintext, provider=provider), plaintext

    # A conversation with a DH step in each direction and one delayed message each way.
    for i in range(2):
        wire, plaintext = send(bob, f"bob {i}")
        assert alice.decrypt(wire, provider=provider) == plaintext
    a0, a1, a2 = (send(alice, f"alice {i}") for i in range(3))
    assert bob.decrypt(a0[0], provider=provider) == a0[1]
    assert bob.decrypt(a2[0], provider=provider) == a2[1]
    b0, b1, b2 = (send(bob, f"bob {i}") for i in range(2, 5))
    assert alice.decrypt(b0[0], provider=provider) == b0[1]
    assert alice.decrypt(b2[0], provider=provider) == b2[1]
    assert alice.skipped_key_count == bob.skipped_key_count == 1

    alice_snapshot = e2ee.Session.from_bytes(alice.to_bytes())
    bob_snapshot = e2ee.Session.from_bytes(bob.to_bytes())
    # The next messages each side receives: the peer's next one, then the delayed one. Alice's
    # next message starts a new chain (she has received on Bob's new ratchet key).
    to_alice = [send(bob, "bob next"), b1]
    to_bob = [send(alice, "alice next"), a1]
    what = f"mid-conversation session, header encryption {'on' if header_encryption else 'off'}"
    writer.add_state(
        f"session_v1_{mode}_alice",
        "session",
        alice_snapshot,
        to_alice,
        f"{what}, initiator side; message0 continues Bob's chain, message1 was delayed",
    )
    writer.add_state(
        f"session_v1_{mode}_bob",
        "session",
        bob_snapshot,
        to_bob,
        f"{what}, responder side; message0 starts a new chain, message1 was delayed",
    )


def verify(out_dir: Path, manifest: dict[str, Any]) -> None:
    """Load every written file the way test_state does (a generator must not emit junk)."""
    key = bytes.fromhex(manifest["seal_key_hex"])
    for entry in manifest["states"]:
        for sealed in (False, True):
            data = (out_dir / entry["sealed_file" if sealed else "file"]).read_bytes()
            obj: e2ee.Account | e2ee.Session
            if entry["type"] == "account":
                obj = e2ee.Account.from_bytes(data, key=key if sealed else None)
            else:
                obj = e2ee.Session.from_bytes(data, key=key if sealed else None)
            assert obj.to_bytes() == (out_dir / entry["file"]).read_bytes()
            for message in entry["messages"]:
                wire = (out_dir / message["file"]).read_bytes()
                if isinstance(obj, e2ee.Account):
                    _, plaintext = obj.accept_session(wire, now=manifest["now"])
                else:
                    plaintext = obj.decrypt(wire)
                assert plaintext.hex() == message["plaintext_hex"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=GOLDEN_DIR, help="output directory")
    args = parser.parse_args(argv)
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    # Recorded encapsulations are read from the output directory, else from the committed set.
    recorded_path = out_dir / ENCAPSULATIONS_FILE
    if not recorded_path.exists():
        recorded_path = GOLDEN_DIR / ENCAPSULATIONS_FILE
    encapsulations: dict[str, dict[str, str]] = (
        json.loads(recorded_path.read_text()) if recorded_path.exists() else {}
    )
    writer = Writer(out_dir)
    make_account(writer, encapsulations)
    make_session_pair(writer, encapsulations, header_encryption=True)
    make_session_pair(writer, encapsulations, header_encryption=False)
    manifest = {
        "generator": "tests/golden/make_golden.py (python -m tests.golden.make_golden)",
        "state_version": STATE_VERSION,
        "now": NOW,
        "seal_key_hex": SEAL_KEY.hex(),
        "states": writer.states,
    }
    verify(out_dir, manifest)
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    (out_dir / ENCAPSULATIONS_FILE).write_text(
        json.dumps(encapsulations, indent=2, sort_keys=True) + "\n"
    )
    print(f"wrote {len(writer.states)} golden states to {out_dir}")


if __name__ == "__main__":
    main()
