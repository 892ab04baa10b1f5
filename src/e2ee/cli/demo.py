"""``e2ee demo``: an in-process conversation that shows what the library does.

Everything printed is public: sizes, counters, ids and the plaintexts of the demo itself.
No key material is ever shown.
"""

from __future__ import annotations

import time
from typing import Any

import e2ee


def run_demo(*, header_encryption: bool = True) -> dict[str, Any]:
    config = e2ee.SessionConfig(header_encryption=header_encryption)
    steps: list[dict[str, Any]] = []
    started = time.perf_counter()

    bob = e2ee.Account.generate()
    bob.generate_one_time_prekeys(5)
    bundle = e2ee.PreKeyBundle.from_bytes(bob.prekey_bundle().to_bytes())
    steps.append(
        {
            "event": "bob publishes a prekey bundle",
            "bytes": len(bundle.to_bytes()),
            "post_quantum": bundle.post_quantum,
        }
    )

    alice = e2ee.Account.generate()
    alice_session = alice.start_session(bundle, config=config)
    first = alice_session.encrypt(b"Hi Bob, this is Alice.")
    info = e2ee.peek(first)
    steps.append(
        {
            "event": "alice starts a PQXDH session and sends an initial message",
            "kind": info.kind,
            "bytes": len(first),
            "session_id": info.session_id.hex(),
        }
    )

    bob_session, plaintext = bob.accept_session(first, config=config)
    steps.append({"event": "bob accepts the session", "read": plaintext.decode()})

    reply = bob_session.encrypt(b"Hello Alice! Got it.")
    steps.append(
        {
            "event": "alice reads bob's reply",
            "read": alice_session.decrypt(reply).decode(),
            "bytes": len(reply),
        }
    )

    burst = [alice_session.encrypt(f"message {i}".encode()) for i in range(5)]
    order = [4, 0, 3, 1, 2]
    read = [bob_session.decrypt(burst[i]).decode() for i in order]
    steps.append(
        {
            "event": "bob reads five messages delivered out of order",
            "delivery_order": order,
            "read": read,
        }
    )

    try:
        bob_session.decrypt(burst[0])
        duplicate = "accepted (wrong!)"
    except e2ee.DuplicateMessageError as exc:
        duplicate = f"rejected: {exc.category}"
    steps.append({"event": "a duplicate delivery", "result": duplicate})

    tampered = bytearray(alice_session.encrypt(b"tamper with me"))
    tampered[-5] ^= 0x01
    before = bob_session.to_bytes()
    try:
        bob_session.decrypt(bytes(tampered))
        tamper = "accepted (wrong!)"
    except e2ee.E2EEError as exc:
        tamper = f"rejected: {exc.category}"
    steps.append(
        {
            "event": "a tampered message",
            "result": tamper,
            "state_unchanged": bob_session.to_bytes() == before,
        }
    )

    saved = bob_session.to_bytes()
    bob_session = e2ee.Session.from_bytes(saved)
    again = bob_session.decrypt(alice_session.encrypt(b"still there after a restart?"))
    steps.append(
        {
            "event": "bob saves and reloads his session",
            "state_bytes": len(saved),
            "read": again.decode(),
        }
    )

    elapsed_ms = (time.perf_counter() - started) * 1000
    ok = (
        plaintext == b"Hi Bob, this is Alice."
        and read == [f"message {i}" for i in order]
        and duplicate.startswith("rejected")
        and tamper.startswith("rejected")
        and steps[-2]["state_unchanged"]
    )
    return {
        "ok": ok,
        "version": e2ee.__version__,
        "header_encryption": header_encryption,
        "steps": steps,
        "elapsed_ms": round(elapsed_ms, 1),
    }


def render(report: dict[str, Any]) -> str:
    lines = [
        f"e2ee {report['version']} demo (header encryption "
        f"{'on' if report['header_encryption'] else 'off'})",
        "",
    ]
    for number, step in enumerate(report["steps"], 1):
        details = ", ".join(f"{k}={v}" for k, v in step.items() if k != "event")
        lines.append(f"{number}. {step['event']}")
        if details:
            lines.append(f"   {details}")
    lines.append("")
    lines.append(f"{'OK' if report['ok'] else 'FAILED'}: finished in {report['elapsed_ms']} ms")
    return "\n".join(lines)
