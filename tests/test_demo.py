"""``e2ee demo --json`` runs end to end against its own relay process and reports success."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.relay_support import PROJECT_ROOT


def test_demo_json_reports_a_successful_conversation() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "e2ee.cli", "demo", "--json"],
        capture_output=True,
        timeout=60,
        cwd=PROJECT_ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    report = json.loads(proc.stdout)
    assert report["ok"] is True
    assert all(report["checks"].values()), report["checks"]
    # what each device read is exactly what was sent to it
    sent = [m["text"] for m in report["sent"]]
    read = {device: [r["text"] for r in rows] for device, rows in report["read"].items()}
    assert sorted(read["bob/1"]) == sorted(sent)  # bob/1 took part from start to end
    assert sorted(read["alice/2"]) == sorted(sent)
    assert set(report["users"]) == {"alice", "bob"}
    assert all(len(devices) == 2 for devices in report["users"].values())
    # out of order, duplicate, reinstall
    ooo = report["out_of_order"]
    assert ooo["delivery_order"] != sorted(ooo["delivery_order"])
    assert sorted(ooo["read"]) == [f"message {i} of 5" for i in range(5)]
    assert ooo["duplicate_detected"] is True
    kinds = {(e["kind"], e["device"]) for e in report["reinstall"]["alice_events"]}
    assert ("session_new", 3) in kinds
    # the relay stored ciphertext only
    storage = report["relay_storage"]
    assert storage["plaintexts_found"] == []
    assert storage["plaintexts_searched"] == len(sent)
    assert storage["bytes_searched"] > 0
    assert storage["envelopes"]
    assert {e["kind"] for e in storage["envelopes"]} <= {"initial", "normal"}
    assert all(e["header_encrypted"] for e in storage["envelopes"])
    # both sides compare the same safety number
    numbers = set(report["safety_numbers"]["by_device"].values())
    assert report["safety_numbers"]["match"] is True
    assert len(numbers) == 1
    assert len(numbers.pop().replace(" ", "")) == 60
    assert report["timings_ms"]
    # nothing secret: no hex string as long as a key appears anywhere in the output
    assert not any(len(word) >= 64 for word in proc.stdout.decode().replace('"', " ").split())
