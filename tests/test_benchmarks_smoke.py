"""The core benchmark runs end to end with tiny sizes and reports sane results (no timings)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import bench_core, floor

PLAINTEXT = bench_core.PLAINTEXT
TINY = bench_core.Sizes(stream=3, pingpong=2, setup=1)


@pytest.mark.parametrize("header_encryption", [False, True])
def test_floor_stream_and_pingpong_really_decrypt(header_encryption: bool) -> None:
    assert floor.prepare_stream(3, PLAINTEXT, header_encryption=header_encryption)() == PLAINTEXT
    assert floor.prepare_pingpong(4, PLAINTEXT, header_encryption=header_encryption)() == PLAINTEXT


@pytest.mark.parametrize("post_quantum", [True, False])
@pytest.mark.parametrize("header_encryption", [False, True])
def test_floor_setup_agrees_on_keys(post_quantum: bool, header_encryption: bool) -> None:
    run = floor.prepare_setup(
        2, PLAINTEXT, post_quantum=post_quantum, header_encryption=header_encryption
    )
    assert run() == PLAINTEXT


def test_floor_rejects_a_forged_tag() -> None:
    with pytest.raises(ValueError, match="authentication"):
        floor._open(bytes(32), bytes(floor.MAC_AD_SIZE), bytes(48))


@pytest.mark.parametrize("workload", bench_core.WORKLOADS)
def test_e2ee_bodies_decrypt(workload: bench_core.WorkloadName) -> None:
    for contender in bench_core.contenders([workload]):
        body = contender.prepare(TINY.of(workload), PLAINTEXT)
        assert bench_core.time_once(body, PLAINTEXT) > 0


def test_contenders_cover_the_matrix() -> None:
    keys = {c.key: c for c in bench_core.contenders()}
    for workload in bench_core.WORKLOADS:
        for handshake in ("PQXDH", "X3DH"):
            for he in ("plain", "he"):
                contender = keys[f"{workload}/e2ee/{handshake}/{he}"]
                assert contender.floor_key in keys
                assert keys[contender.floor_key].kind == "floor"
                assert not keys[contender.floor_key].header_encryption
                if he == "he":
                    assert contender.he_floor_key in keys
                    assert keys[contender.he_floor_key].header_encryption
    setup_floors = {
        c.handshake for c in keys.values() if c.workload == "setup" and c.kind == "floor"
    }
    assert setup_floors == {"PQXDH", "X3DH"}


def test_run_reports_positive_rates_and_ratios() -> None:
    results = bench_core.run(rounds=2, sizes=TINY)
    assert len(results) == len(bench_core.contenders())
    floors = [r for r in results if r.contender.kind == "floor"]
    assert {r.contender.workload for r in floors} == set(bench_core.WORKLOADS)
    for result in results:
        assert len(result.rates) == 2
        assert all(rate > 0 and math.isfinite(rate) for rate in result.rates)
        rate = result.rate
        assert rate.min <= rate.median <= rate.max
        if result.contender.kind == "e2ee":
            assert result.ratio is not None
            assert 0 < result.ratio.min <= result.ratio.median <= result.ratio.max
            assert result.best_ratio is not None
            assert result.best_ratio > 0
            assert (result.he_ratio is not None) is result.contender.header_encryption
    table = bench_core.table(results)
    for workload in bench_core.WORKLOADS:
        assert workload in table
    assert "floor" in table


def test_cli_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bench.json"
    argv = ["--rounds", "1", "--scale", "0.001", "--workload", "stream", "--json", str(path)]
    assert bench_core.main(argv) == 0
    out = capsys.readouterr().out
    assert "stream" in out
    assert "e2ee/floor" in out
    data = json.loads(path.read_text())
    assert data["meta"]["rounds"] == 1
    results = data["results"]
    assert {r["workload"] for r in results} == {"stream"}
    assert any(r["kind"] == "floor" for r in results)
    for r in results:
        assert r["rate"]["median"] > 0
        if r["kind"] == "e2ee":
            assert r["ratio_vs_floor"]["median"] > 0


def test_profile_names_the_ratchet() -> None:
    report = bench_core.profile("stream", n=5, top=40)
    assert "double_ratchet.py" in report or "session.py" in report
