"""The relay benchmark's load generator and ceiling run end to end with tiny sizes (no timings)."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import uvicorn

from benchmarks import bench_relay
from e2ee.relay import api
from e2ee.relay.serve import server_options
from tests.relay_support import free_port, threaded_relay


@pytest.mark.parametrize("workload", ["sends", "cycles", "claims"])
def test_load_generator_runs_each_workload_without_errors(
    workload: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with threaded_relay(claim_burst=10_000) as server:
        monkeypatch.setenv("BENCH_RELAY_URL", server.url)
        result = bench_relay.load(server.url, workload, 2, 0.3, "relay", keys=5)
    assert result.count > 0
    assert result.errors == 0
    assert result.duplicates == 0
    assert 0 < result.p50_ms <= result.p99_ms


def test_ceiling_answers_like_the_relay_without_storage() -> None:
    port = free_port()
    config = uvicorn.Config(
        bench_relay.ceiling_app(),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        **server_options(),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.01)  # readiness poll
    try:
        url = f"http://127.0.0.1:{port}"
        r = httpx.post(url + api.MESSAGES, content=b"\xa0")
        assert r.status_code == 200
        r = httpx.post(url + api.MESSAGES, content=b"\0" * (9 * 1024 * 1024))
        assert r.status_code == 413
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_render_reports_the_ratio() -> None:
    row = {"per_s": 1000.0, "p50_ms": 1.0, "p99_ms": 2.0, "errors": 0, "duplicates": 0}
    summary = {"ceiling": row, "sends": row, "cycles": row, "claims": row, "sends_vs_ceiling": 0.5}
    summary["sends_vs_ceiling_per_round"] = [0.4, 0.61]
    text = bench_relay.render(summary)
    assert "sends / ceiling: 0.50 (per round: 0.40 0.61)" in text
    assert "claims" in text
    assert "in-memory" not in text  # a summary from before the reference line still renders

    summary["sends_in_memory"] = dict(row, per_s=1234.0)
    summary["in_memory_vs_ceiling"] = 0.66
    text = bench_relay.render(summary)
    rows = {line[:28].strip(): line[28:].split() for line in text.splitlines()}
    assert rows["sends, in-memory relay"][0] == "1,234"
    assert "in-memory relay / ceiling: 0.66" in text
