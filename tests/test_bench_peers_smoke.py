"""The peer benchmark suite runs end to end in quick mode and reports every row (no timings).

Speed goals are judged by the benchmark itself (``e2ee bench``), never by timed unit tests.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import peers, suite
from e2ee.cli import main as cli_main

PEER_KEYS = ("syndace", "vodozemac", "python-olm")
PEER_MODULES = ("x3dh", "doubleratchet", "vodozemac", "olm")

E2EE_TIMED = {
    "setup/e2ee/PQXDH, HE off, 100 OPKs",
    "setup/e2ee/PQXDH, HE on, 100 OPKs",
    "setup/e2ee/X3DH, HE off, 100 OPKs",
    "setup/e2ee/X3DH, HE on, 100 OPKs",
    "setup/e2ee/PQXDH, HE off, 10 OPKs",
    "setup/e2ee/PQXDH, HE off, 1000 OPKs",
    "setup/floor/PQXDH",
    "setup/floor/X3DH",
    *(
        f"{metric}/{who}"
        for metric in ("pingpong", "stream")
        for who in (
            "floor/HE off",
            "floor/HE on",
            "e2ee/PQXDH, HE off",
            "e2ee/PQXDH, HE on",
            "e2ee/X3DH, HE off",
            "e2ee/X3DH, HE on",
        )
    ),
    "forged/e2ee/HE off, new chain, N = 1,000",
    "forged/e2ee/HE off, current chain, N + 1,000",
    "forged/e2ee/HE on, genuine header, N = 1,000",
    "durable/e2ee/plain store",
    "durable/e2ee/encrypted at rest",
}
SIZES = (
    "session_fresh",
    "session_500_skipped",
    "bytes_per_skipped_key",
    "wire_100",
    "wire_overhead",
)


def _peer_rows(peer: str) -> set[str]:
    return {
        f"setup/{peer}/defaults",
        f"setup/{peer}/100 OPKs",
        f"pingpong/{peer}/defaults",
        f"stream/{peer}/defaults",
        f"forged/{peer}/defaults",
        *(f"{size}/{peer}/defaults" for size in SIZES),
    }


E2EE_ROWS = E2EE_TIMED | {f"{size}/e2ee/HE {he}" for size in SIZES for he in ("off", "on")}
EXPECTED = E2EE_ROWS | {row for peer in PEER_KEYS for row in _peer_rows(peer)}


def _load(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "results.json").read_text())
    return data


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def test_cli_quick_run_reports_every_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["bench", "--out", str(tmp_path), "--quick"]) == 0
    out = capsys.readouterr().out
    assert "targets" in out
    data = _load(tmp_path)
    rows = {row["key"]: row for row in data["rows"]}
    assert set(rows) == EXPECTED
    for key in E2EE_ROWS:
        assert rows[key]["status"] == "ok", key
        assert rows[key]["summary"]["median"] > 0, key
    for peer in peers.PEERS:
        installed = all(_installed(m) for m in peer.modules)
        for key in _peer_rows(peer.key):
            assert rows[key]["status"] == ("ok" if installed else "not installed"), key
        assert data["meta"]["peers"][peer.key]["installed"] is installed
    assert {t["target"] for t in data["targets"]} == {t.name for t in suite.TARGETS}
    if _installed("matplotlib"):
        assert (tmp_path / "chart.png").stat().st_size > 0
        assert data["meta"]["chart"] == "chart.png"


def test_missing_peers_are_reported_not_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module in PEER_MODULES:
        monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    assert suite.main(["--out", str(tmp_path), "--quick"]) == 0
    data = _load(tmp_path)
    rows = {row["key"]: row for row in data["rows"]}
    assert set(rows) == EXPECTED
    for peer in PEER_KEYS:
        assert data["meta"]["peers"][peer]["installed"] is False
        for key in _peer_rows(peer):
            assert rows[key]["status"] == "not installed", key
            assert rows[key]["summary"] is None
            assert "not installed" in rows[key]["note"]
    targets = {t["target"]: t for t in data["targets"]}
    assert targets["stream >= 3x Syndace"]["met"] is None
    assert targets["session <= 512 B"]["met"] is True


def test_olm_message_codec_round_trips() -> None:
    fields: list[tuple[int, int | bytes]] = [(0x0A, bytes(range(32))), (0x10, 300), (0x22, b"c")]
    message = peers.encode_olm_message(3, fields, b"m" * 8)
    assert peers.parse_olm_message(message) == (3, fields, b"m" * 8)
    forged = peers.forge_olm_counter(message, peers.MAX_OLM_GAP)
    assert peers.parse_olm_message(forged) == (
        3,
        [(0x0A, bytes(range(32))), (0x10, peers.MAX_OLM_GAP), (0x22, b"c")],
        bytes(8),
    )


def test_bench_needs_out(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli_main(["bench"])
    assert "--out" in capsys.readouterr().err
