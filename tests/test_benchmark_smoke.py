"""Smoke test of benchmarks/grading_throughput.py: it runs and reports the six figures.

No timing is asserted: the figures depend on the machine and its load.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "grading_throughput.py"
KEYS = ("ceiling", "baseline", "reference", "fast", "store", "h5py_read")


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(600)
def test_benchmark_runs_and_prints_six_figures(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--fibres", "200000", "--json", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # stdout holds the JSON object and nothing else
    for key in KEYS:
        value = doc[key]
        assert isinstance(value, float), (key, value)
        assert math.isfinite(value) and value > 0, (key, value)
    assert set(doc["ratios"]) >= {"fast_vs_ceiling", "fast_vs_baseline", "store_vs_h5py_read"}
    assert all(math.isfinite(v) and v >= 0 for v in doc["ratios"].values())
    assert doc["details"]["fibres"] == 200_000
    assert json.loads(out.read_text())["ratios"] == doc["ratios"]


CLUSTER_SCRIPT = SCRIPT.with_name("cluster_throughput.py")


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(600)
@pytest.mark.xdist_group("dask-cluster")
def test_cluster_benchmark_runs_and_reports_the_three_paths(tmp_path: Path) -> None:
    out = tmp_path / "cluster.json"
    proc = subprocess.run(
        [sys.executable, str(CLUSTER_SCRIPT), "--fibres", "400000", "--segment-fibres",
         "40000", "--repeats", "1", "--runs", "2", "--json", "--out", str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc == json.loads(out.read_text())
    for key in ("direct", "workers_1", "workers_2"):
        f = doc["figures"][key]
        assert math.isfinite(f["lots_per_s"]) and f["lots_per_s"] > 0, key
        # compared once a round, against the direct path (the reference)
        assert f["same_results"] is (None if key == "direct" else True), key
        assert f["results_compared"] == (0 if key == "direct" else 1), key
        assert len(f["times_s"]) == 2 and f["best_s"] == min(f["times_s"])  # 1 round x 2 runs
    assert set(doc["ratios"]) == {"workers_2_vs_workers_1", "workers_1_time_vs_direct"}
    assert set(doc["stored"]["ratios"]) == set(doc["ratios"])  # storing included, reported
    # one round: its ratios are the best-of-all ones
    for key, r in doc["per_round"].items():
        assert r["each"] == [r["min"]] == [r["median"]] == [r["max"]] == [doc["ratios"][key]]
    assert all(f["lots_per_s"] > 0 for f in doc["stored"]["figures"].values())
    assert doc["details"]["segments"] == 10 and doc["details"]["lots"] == 100
    assert doc["details"]["per_task"]["result_bytes"] > 0


def test_cluster_benchmark_gives_each_rounds_ratios_from_that_rounds_best_runs() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("cluster_throughput", CLUSTER_SCRIPT)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    # 3 rounds of 2 runs each, listed round after round as the benchmark records them
    times = {
        "direct": [1.0, 0.9, 1.0, 1.0, 0.8, 2.0],
        "workers_1": [1.2, 1.1, 1.5, 1.2, 0.9, 1.0],
        "workers_2": [0.8, 0.7, 0.75, 0.6, 0.6, 0.5],
    }
    got = bench.per_round(times, runs=2)
    w2 = got["workers_2_vs_workers_1"]
    assert w2["each"] == pytest.approx([1.1 / 0.7, 1.2 / 0.6, 0.9 / 0.5])
    assert (w2["min"], w2["median"], w2["max"]) == pytest.approx((1.1 / 0.7, 1.8, 2.0))
    w1 = got["workers_1_time_vs_direct"]
    assert w1["each"] == pytest.approx([1.1 / 0.9, 1.2 / 1.0, 0.9 / 0.8])
