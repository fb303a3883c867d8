"""The certificate benchmark runs end to end on a small store (it asserts no timing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "certificate_throughput.py"


@pytest.mark.slow
def test_certificate_benchmark_prints_its_figures():
    r = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--lots",
            "60",
            "--fibres-per-lot",
            "1000",
            "--pdf-sample",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["certified"] + doc["not_certified"] == 60 and doc["certified"] > 0
    for key in ("certify_json", "certify_pdf", "verify_signature", "verify_recompute"):
        assert doc[key] > 0
