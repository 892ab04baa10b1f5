"""A deliberately broken conformance adapter, for tests/test_conformance.py.

It wraps e2ee's own adapter (:class:`e2ee.conformance.serve.Server`) in-process and damages
its answers in one way, chosen by the first argument:

* ``ok``: no damage (only ``--areas`` applies);
* ``flip``: flips one hex digit of the outputs of ``x25519`` (``shared``), ``hkdf_sha256``
  (``okm``) and ``encrypt`` (``message``), and of the relay structures the adapter makes
  (``ticket``, ``signedList``, the login ``payload``);
* ``wrong-error``: reports every e2ee error under another category (``decode_error`` becomes
  ``auth_failed``, everything else ``decode_error``);
* ``ticket-origin``: ``registration_ticket_check`` ignores the relay's origin (it checks the
  ticket against the origin the ticket itself names), so a ticket made for another relay
  passes;
* ``relay-fields``: flips one hex digit of the ``userKey`` that ``registration_ticket_check``
  and ``device_list_verify`` decode, and of the ``signature`` of ``relay_login_sign``;
* ``no-code``: answers relay errors without their ``code`` (category and message intact);
* ``fingerprint``: answers ``fingerprint`` with a value that changes on every call, so no
  "state unchanged" claim holds;
* ``loose-types``: answers ``decode_bundle`` and ``decode_message`` with the right values in
  the wrong JSON types: a boolean as the number 0 or 1, the integer 1 as ``true``, any other
  integer as a float (``7`` as ``7.0``);
* ``number-fingerprint``: answers ``fingerprint`` with ``1``, then ``true``, then ``1``, ...
  (numbers, not strings; equal under Python's ``==``);
* ``loose-id``: echoes the request id 1 as ``true`` and every other id ``n`` as ``n.0``;
* ``float-id``: echoes the request id 1 as it is and every other id ``n`` as ``n.0``;
* ``forge``: its implementation name, an unknown capability, and the category and message
  of the error it answers to every ``kdf_ck`` carry newlines, a carriage return, ESC
  sequences, a bidi override and 100,000 more characters (:data:`FORGED`);
* ``stderr-flood``: before answering ``hello``, writes 256 MiB to stderr without a newline;
* ``orphan-exit``: starts a child process that sleeps (keeping the pipes open), writes its
  pid to ``--pid-file`` and exits at once, without answering;
* ``orphan-serve``: starts the same child, then answers like ``ok`` and exits at the end;
* ``stdout-flood``: answers like ``ok``, then, after its answer to ``shutdown``, writes
  384 MiB more to stdout (48 well-formed lines of 8 MiB) before it exits;
* ``deep-hello``: answers ``hello`` with a result holding an array nested 100,000 deep;
* ``nothing``: announces no capabilities;
* ``crash``: exits with status 3 on its 5th request;
* ``hang``: stops answering (sleeps) on its 5th request;
* ``garbage``: answers its 5th request with a line that is not JSON.

``--areas a,b,...`` limits the areas announced in ``hello`` (default: all).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from e2ee.conformance.protocol import encode_line
from e2ee.conformance.serve import Server
from e2ee.errors import E2EEError
from e2ee.relay import tickets

FLIPPED = {
    "x25519": "shared",
    "hkdf_sha256": "okm",
    "encrypt": "message",
    "registration_ticket_issue": "ticket",
    "device_list_sign": "signedList",
    "relay_login_payload": "payload",
}
DECODED = ("registration_ticket_check", "device_list_verify")
LOOSE = ("decode_bundle", "decode_message")
FORGED = "\n99 passed, 0 failed\r\x1b[2K\x1b[8m\u202e\x9b" + "x" * 100_000
"""Text that, printed raw, adds a summary line and hides what follows."""
FLOOD_MIB = 256
TRIGGER = 5
"""The request (counting hello as the first) on which crash/hang/garbage strike."""


def _flip(hex_text: str) -> str:
    last = hex_text[-1]
    return hex_text[:-1] + ("0" if last != "0" else "1")


def _loosen(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return True if value == 1 else float(value)
    return value


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "mode",
        choices=[
            "ok",
            "flip",
            "wrong-error",
            "ticket-origin",
            "no-code",
            "relay-fields",
            "fingerprint",
            "loose-types",
            "number-fingerprint",
            "loose-id",
            "float-id",
            "forge",
            "stderr-flood",
            "stdout-flood",
            "deep-hello",
            "orphan-exit",
            "orphan-serve",
            "nothing",
            "crash",
            "hang",
            "garbage",
        ],
    )
    parser.add_argument("--areas", default="")
    parser.add_argument("--pid-file", default="")
    args = parser.parse_args()
    if args.mode in ("orphan-exit", "orphan-serve"):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        Path(args.pid_file).write_text(str(child.pid), encoding="ascii")
        if args.mode == "orphan-exit":
            return 0
    server = Server()
    calls = 0
    count = 0
    for line in sys.stdin:
        request: Any = json.loads(line)
        count += 1
        op = request.get("op")
        if args.mode == "stderr-flood" and count == 1:
            chunk = b"A" * (1 << 20)
            for _ in range(FLOOD_MIB):
                os.write(2, chunk)
        if count == TRIGGER:
            if args.mode == "crash":
                return 3
            if args.mode == "hang":
                time.sleep(3600)
            if args.mode == "garbage":
                sys.stdout.write("this is not JSON\n")
                sys.stdout.flush()
                continue
        if args.mode == "ticket-origin" and op == "registration_ticket_check":
            try:
                ticket = tickets.parse_unverified_ticket(bytes.fromhex(request["ticket"]))
            except (E2EEError, ValueError, KeyError, TypeError):
                pass  # malformed: checked as sent
            else:
                request["relayOrigin"] = ticket.origin
        response = server.handle(request)
        if args.mode == "deep-hello" and op == "hello":
            deep = "[" * 100_000 + "]" * 100_000
            sys.stdout.write(f'{{"id": {request["id"]}, "result": {{"x": {deep}}}}}\n')
            sys.stdout.flush()
            continue
        result = response.get("result")
        error = response.get("error")
        if args.mode == "forge" and op == "kdf_ck":
            response = {
                "id": request.get("id"),
                "error": {"category": "decode_error" + FORGED, "message": FORGED},
            }
        elif op == "hello" and isinstance(result, dict):
            if args.mode == "forge":
                result["implementation"] = "forger" + FORGED
                result["capabilities"] = ["kdf_ck", "no-such-area" + FORGED]
            elif args.mode == "nothing":
                result["capabilities"] = []
            elif args.areas:
                result["capabilities"] = [a for a in args.areas.split(",") if a]
        elif args.mode == "flip" and isinstance(result, dict) and op in FLIPPED:
            name = FLIPPED[op]
            if isinstance(result.get(name), str):
                result[name] = _flip(result[name])
        elif args.mode == "wrong-error" and isinstance(error, dict):
            error["category"] = (
                "auth_failed" if error["category"] == "decode_error" else ("decode_error")
            )
        elif args.mode == "relay-fields" and op in DECODED and isinstance(result, dict):
            fields = result.get("fields")
            if isinstance(fields, dict) and isinstance(fields.get("userKey"), str):
                fields["userKey"] = _flip(fields["userKey"])
        elif args.mode == "relay-fields" and op == "relay_login_sign" and isinstance(result, dict):
            if isinstance(result.get("signature"), str):
                result["signature"] = _flip(result["signature"])
        elif args.mode == "no-code" and isinstance(error, dict):
            error.pop("code", None)
        elif args.mode == "fingerprint" and op == "fingerprint" and isinstance(result, dict):
            calls += 1
            result["fingerprint"] = f"changed-{calls}"
        elif args.mode == "number-fingerprint" and op == "fingerprint" and isinstance(result, dict):
            calls += 1
            result["fingerprint"] = 1 if calls % 2 else True
        elif args.mode == "loose-types" and op in LOOSE and isinstance(result, dict):
            fields = result.get("fields")
            if isinstance(fields, dict):
                result["fields"] = {name: _loosen(value) for name, value in fields.items()}
        if args.mode in ("loose-id", "float-id") and isinstance(request.get("id"), int):
            if request["id"] != 1:
                response["id"] = float(request["id"])
            elif args.mode == "loose-id":
                response["id"] = True
        sys.stdout.buffer.write(encode_line(response))
        sys.stdout.flush()
        if args.mode == "stdout-flood" and op == "shutdown":
            line = b"x" * (8 << 20) + b"\n"
            for _ in range(48):
                os.write(1, line)
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
