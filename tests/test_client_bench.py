"""The client benchmark runs end to end with tiny sizes (no timings asserted)."""

from __future__ import annotations

from benchmarks import bench_client


def test_bench_client_runs() -> None:
    results = bench_client.run(messages=3, rounds=1, held=50)
    assert all(r["median"] > 0 for r in results.values())
    assert any(name.startswith("durable receive") for name in results)
    assert "durable receive, plain, 50 sessions held" in results
