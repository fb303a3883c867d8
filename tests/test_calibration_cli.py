"""Calibration through the installed ``fibergrade`` console script: calibrate, qc,
calibrations, and grading gated by calibration (``--uncalibrated``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fibergrade.adapters.writers import write_fibre_csv, write_lot_manifest
from fibergrade.measurements import FibreLots, LotMeta

pytestmark = pytest.mark.integration

EXE = shutil.which("fibergrade", path=str(Path(sys.executable).parent)) or "fibergrade"
IH = Path(__file__).resolve().parents[1] / "calibration" / "references" / "ih-23.toml"
ASSIGNED = [14.58, 18.73, 21.35, 23.51, 27.98, 30.61, 33.34, 36.83]


def run(*args: str, store: Path, cwd: Path):
    return subprocess.run(
        [EXE, *args, "--store", str(store)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        check=False,
    )


@pytest.fixture
def lab(tmp_path) -> dict[str, Path]:
    """Two lots measured on OFDA-1 imported into a store; a tops file; a reference set
    with widened validity (grading runs at the real current time)."""
    rng = np.random.default_rng(7)
    d = np.concatenate([rng.lognormal(np.log(m), 0.2, 2000) for m in (13.8, 16.5)])
    lots = FibreLots(("K-1", "K-2"), [0, 2000, 4000], d.astype(np.float32))
    write_fibre_csv(tmp_path / "ofda.csv", lots)
    write_lot_manifest(
        tmp_path / "lots.csv",
        [LotMeta(x, "cashmere", "MN", client="Coop", instrument_id="OFDA-1") for x in lots.lot_ids],
    )
    tops = ["top,measured_mfd_um,measured_cv_pct"] + [
        f"{i + 1},{0.2 + 1.01 * a:.3f},20.0" for i, a in enumerate(ASSIGNED)
    ]
    (tmp_path / "tops.csv").write_text("\n".join(tops) + "\n")
    ref = tmp_path / "ih-23-wide.toml"
    ref.write_text(
        IH.read_text().replace("2025-07-01", "2000-01-01").replace("2027-06-30", "2099-12-31")
    )
    work = tmp_path / "elsewhere"  # commands run from a directory with no calibration/
    work.mkdir()
    store = tmp_path / "store"
    r = run("import", str(tmp_path / "ofda.csv"), "--lots", str(tmp_path / "lots.csv"),
            store=store, cwd=work)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return {"dir": tmp_path, "store": store, "cwd": work, "tops": tmp_path / "tops.csv", "ref": ref}


def test_gating_calibrate_grade_qc_recalibrate(lab):
    s, cwd = lab["store"], lab["cwd"]
    r = run("grade", store=s, cwd=cwd)
    assert r.returncode == 4 and "OFDA-1" in r.stderr and "--uncalibrated" in r.stderr
    assert not (s / "results" / "grade").exists()

    r = run("grade", "--uncalibrated", "--json", store=s, cwd=cwd)
    assert r.returncode == 0, r.stderr
    recs = json.loads(r.stdout)
    assert all(x["uncalibrated"] and x["calibration"] is None for x in recs)
    r = run("grade", "--uncalibrated", store=s, cwd=cwd)
    assert "UNCAL" in r.stdout

    r = run("calibrate", "--instrument", "OFDA-1", "--reference", str(lab["ref"]),
            str(lab["tops"]), "--operator", "ann", "--json", store=s, cwd=cwd)  # fmt: skip
    assert r.returncode == 0, r.stderr
    cal = json.loads(r.stdout)
    assert cal["line"]["slope"] == pytest.approx(1 / 1.01, abs=1e-4)
    assert cal["operator"] == "ann" and len(cal["tops"]) == 8
    assert (s / "results" / "calibration" / f"{cal['id']}.json").exists()

    r = run("grade", "--json", store=s, cwd=cwd)
    assert r.returncode == 0, r.stderr
    recs = json.loads(r.stdout)
    assert [x["calibration"] for x in recs] == [cal["id"]] * 2
    assert [x["calibration_range_flag"] for x in recs] == ["below", None]
    assert not any(x["uncalibrated"] for x in recs)

    r = run("calibrations", "--json", store=s, cwd=cwd)
    rows = json.loads(r.stdout)
    assert [(x["id"], x["state"]) for x in rows] == [(cal["id"], "valid")]

    r = run("qc", "--instrument", "OFDA-1", "--assigned", "21.35", "23.0", store=s, cwd=cwd)
    assert r.returncode == 1 and "FAIL" in r.stdout
    r = run("grade", store=s, cwd=cwd)
    assert r.returncode == 4 and "suspended" in r.stderr
    r = run("calibrations", store=s, cwd=cwd)
    assert "suspended" in r.stdout

    # recording a new calibration on the suspended instrument re-validates it
    r = run("calibrate", "--instrument", "OFDA-1", "--reference", str(lab["ref"]),
            str(lab["tops"]), "--json", store=s, cwd=cwd)  # fmt: skip
    assert r.returncode == 0, r.stderr
    cal2 = json.loads(r.stdout)["id"]
    r = run("grade", "--json", store=s, cwd=cwd)
    assert r.returncode == 0 and json.loads(r.stdout)[0]["calibration"] == cal2
    r = run("qc", "--instrument", "OFDA-1", "--reference", str(lab["ref"]), "--top", "3",
            f"{0.2 + 1.01 * 21.35:.3f}", "--json", store=s, cwd=cwd)  # fmt: skip
    assert r.returncode == 0 and json.loads(r.stdout)["passed"]


def test_refused_fit_stores_nothing(lab):
    s, cwd = lab["store"], lab["cwd"]
    few = lab["dir"] / "few.csv"
    few.write_text("\n".join(lab["tops"].read_text().splitlines()[:4]) + "\n")
    r = run("calibrate", "--instrument", "OFDA-1", "--reference", str(lab["ref"]), str(few),
            store=s, cwd=cwd)  # fmt: skip
    assert r.returncode == 4 and "at least 5" in r.stderr
    bad = lab["dir"] / "bad.csv"
    bad.write_text(lab["tops"].read_text().replace("\n3,21.764,", "\n3,23.264,", 1))
    r = run("calibrate", "--instrument", "OFDA-1", "--reference", str(lab["ref"]), str(bad),
            store=s, cwd=cwd)  # fmt: skip
    assert r.returncode == 4 and "top 3: residual" in r.stderr
    r = run("calibrations", "--json", store=s, cwd=cwd)
    assert json.loads(r.stdout) == []


def test_packaged_reference_set_found_by_name_from_any_directory(lab):
    r = run("calibrate", "--instrument", "OFDA-1", "--reference", "ih-99", str(lab["tops"]),
            store=lab["store"], cwd=lab["cwd"])  # fmt: skip
    assert r.returncode == 2 and "ih-23" in r.stderr  # the packaged set is listed


def test_a_top_the_reference_set_lacks_is_bad_input_in_calibrate_and_in_qc(lab):
    """The same mistake, a top the set does not hold, exits 2 (bad input) through both
    commands, names the set's tops and stores nothing."""
    s, cwd = lab["store"], lab["cwd"]
    bad = lab["dir"] / "tops-99.csv"
    bad.write_text(lab["tops"].read_text() + "99,20.0,20.0\n")
    r = run("calibrate", "--instrument", "OFDA-1", "--reference", str(lab["ref"]), str(bad),
            store=s, cwd=cwd)  # fmt: skip
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert f"top '99' ({bad}, line 10) is not in reference set ih-23" in r.stderr
    assert "its tops: 1, 2, 3, 4, 5, 6, 7, 8" in r.stderr and "Traceback" not in r.stderr
    assert json.loads(run("calibrations", "--json", store=s, cwd=cwd).stdout) == []

    r = run("qc", "--instrument", "OFDA-1", "--reference", str(lab["ref"]), "--top", "99",
            "20.0", store=s, cwd=cwd)  # fmt: skip
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "top '99' is not in reference set ih-23 (its tops: 1, 2, 3" in r.stderr
    assert not (s / "results" / "qc").exists()


def test_a_qc_value_typed_in_millimetres_is_bad_input_with_the_unit_named(lab):
    """0.0165 (mm) for 16.5 um is a typing mistake: exit 2 with the unit hint, not a
    calibration failure (4), and never converted or recorded."""
    s, cwd = lab["store"], lab["cwd"]
    for args in (["--assigned", "16.5", "0.0165"], ["--assigned", "0.0165", "16.5"]):
        r = run("qc", "--instrument", "OFDA-1", *args, store=s, cwd=cwd)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert "0.0165 um looks like millimetres" in r.stderr, r.stderr
        assert "expected in micrometres" in r.stderr and "Traceback" not in r.stderr
    r = run("qc", "--instrument", "OFDA-1", "--assigned", "16.5", "16.5", "--tolerance", "-1",
            store=s, cwd=cwd)  # fmt: skip
    assert r.returncode == 2 and "tolerance must be a positive number" in r.stderr
    assert not (s / "results" / "qc").exists()


def test_edited_calibration_record_detected_via_digest(lab):
    s, cwd = lab["store"], lab["cwd"]
    r = run("calibrate", "--instrument", "OFDA-1", "--reference", str(lab["ref"]),
            str(lab["tops"]), "--json", store=s, cwd=cwd)  # fmt: skip
    cid = json.loads(r.stdout)["id"]
    assert run("grade", store=s, cwd=cwd).returncode == 0
    path = s / "results" / "calibration" / f"{cid}.json"
    path.write_text(path.read_text().replace('"operator":null', '"operator":"mallory"'))
    for cmd in (["grade"], ["calibrations"]):
        r = run(*cmd, store=s, cwd=cwd)
        assert r.returncode == 3 and "does not match the digest" in r.stderr and cid in r.stderr


def test_bias_correction_against_another_instrument(lab):
    s, cwd = lab["store"], lab["cwd"]
    r = run("calibrate", "--instrument", "LS-2", "--reference", str(lab["ref"]),
            str(lab["tops"]), "--json", store=s, cwd=cwd)  # fmt: skip
    assert r.returncode == 0, r.stderr
    source = "fibre.md: OFDA4000 vs Laserscan"
    r = run("calibrate", "--instrument", "OFDA-1", "--against", "LS-2", "--bias", "0.16",
            "--bias-source", source, "--json", store=s, cwd=cwd)  # fmt: skip
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["method"] == "bias" and rec["bias_um"] == 0.16
    r = run("grade", "--json", store=s, cwd=cwd)
    assert r.returncode == 0 and json.loads(r.stdout)[0]["calibration"] == rec["id"]
    r = run("calibrate", "--instrument", "OFDA-1", "--against", "LS-2", str(lab["tops"]),
            store=s, cwd=cwd)  # fmt: skip
    assert r.returncode == 2


def calibrate_reading_low(lab: dict[str, Path], instrument: str) -> None:
    """Calibrate ``instrument`` on tops it reads 2 % low: a line of slope ~1.02."""
    tops = ["top,measured_mfd_um,measured_cv_pct"]
    tops += [f"{i + 1},{0.98 * a:.3f},20.0" for i, a in enumerate(ASSIGNED)]
    path = lab["dir"] / f"low-{instrument}.csv"
    path.write_text("\n".join(tops) + "\n")
    r = run("calibrate", "--instrument", instrument, "--reference", str(lab["ref"]), str(path),
            store=lab["store"], cwd=lab["cwd"])  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_a_diameter_only_the_calibration_takes_out_of_range_is_named_as_such(lab):
    """A raw 199.9 um fibre is accepted at import; an instrument that reads 2 % low gets a
    line with slope ~1.02 that takes it above 200 um. That is refused (never clipped) as
    the calibration's doing, with the raw value and the line, not as a bad input file."""
    d, s, cwd = lab["dir"], lab["store"], lab["cwd"]
    coarse = np.full(50, 16.0, dtype=np.float32)
    coarse[7] = 199.9
    write_fibre_csv(d / "coarse.csv", FibreLots(("BIG-1",), [0, 50], coarse))
    write_lot_manifest(
        d / "big.csv", [LotMeta("BIG-1", "cashmere", "MN", client="Coop", instrument_id="OFDA-2")]
    )
    r = run("import", str(d / "coarse.csv"), "--lots", str(d / "big.csv"), store=s, cwd=cwd)
    assert r.returncode == 0, r.stderr
    calibrate_reading_low(lab, "OFDA-2")
    r = run("grade", "BIG-1", store=s, cwd=cwd)
    assert r.returncode == 4, r.stderr
    assert "lot 'BIG-1', fibre 7: the calibrated diameter 20" in r.stderr
    assert "the raw 199.900 um is in range" in r.stderr and "calibration line" in r.stderr


def test_a_histogram_class_only_the_calibration_takes_out_of_range_is_named_as_such(lab):
    """The histogram path of the test above: a [199, 200) um class mapped past 200 um was a
    DataModelError (exit 2) naming no lot, file or calibration."""
    d, s, cwd = lab["dir"], lab["store"], lab["cwd"]
    (d / "h.csv").write_text("lot_id,lower_um,upper_um,count\nHB-1,15,16,40\nHB-1,199,200,1\n")
    write_lot_manifest(d / "hm.csv", [LotMeta("HB-1", "cashmere", "MN", client="Coop",
                                              instrument_id="OFDA-3")])  # fmt: skip
    r = run("import", str(d / "h.csv"), "--lots", str(d / "hm.csv"), store=s, cwd=cwd)
    assert r.returncode == 0, r.stderr
    calibrate_reading_low(lab, "OFDA-3")
    for workers in ((), ("--workers", "1")):
        r = run("grade", "HB-1", *workers, store=s, cwd=cwd)
        assert r.returncode == 4, r.stderr
        assert "lot 'HB-1': the class [199, 200) um (1 fibre(s))" in r.stderr
        assert "calibration line" in r.stderr


def test_a_class_mapped_below_1_um_is_refused_as_per_fibre_diameters_are():
    from fibergrade.calibration import CalibrationRefused, correct_histograms
    from fibergrade.measurements import HistogramLots

    hist = HistogramLots(
        ("H",), np.array([0, 2]), np.array([1.0, 18.0]), np.array([2.0, 19.0]), np.array([2, 5])
    )
    with pytest.raises(CalibrationRefused, match=r"lot 'H': the class \[1, 2\) um"):
        correct_histograms(hist, np.array([-0.5]), np.array([1.0]))
    empty = HistogramLots(
        ("H",), np.array([0, 2]), np.array([1.0, 18.0]), np.array([2.0, 19.0]), np.array([0, 5])
    )
    out = correct_histograms(empty, np.array([-0.5]), np.array([1.0]))
    assert int(out.counts.sum()) == 5  # an empty class mapped below 1 um holds nothing


_GOOD_CALIBRATION = {
    "kind": "calibration",
    "instrument_id": "OFDA-1",
    "created_at": "2026-11-01T00:00:00+00:00",
    "expires_at": "2099-01-01T00:00:00+00:00",
    "method": "reference-tops",
    "line": {"intercept_um": 0.0, "slope": 1.0},
    "reference": {"id": "ih-23"},
    "range_um": [14.58, 36.83],
}


@pytest.mark.parametrize(
    "record",
    [
        {"kind": "calibration", "instrument_id": "OFDA-1"},
        _GOOD_CALIBRATION | {"against": "X"},
        _GOOD_CALIBRATION | {"reference": {}},
        _GOOD_CALIBRATION | {"range_um": [1.0]},
        _GOOD_CALIBRATION | {"line": {"intercept_um": "0", "slope": 1.0}},
        _GOOD_CALIBRATION | {"created_at": "yesterday"},
    ],
)
def test_a_logged_calibration_record_this_software_never_writes_is_named(lab, record):
    """One written by hand (logged too, since the log is unkeyed) used to crash grade and
    calibrations with a KeyError or TypeError traceback for good; now it is named, exit 3."""
    from fibergrade.store import Store

    s, cwd = lab["store"], lab["cwd"]
    rid = Store.open(s).put_result("calibration", record)
    for args in (("grade",), ("calibrations",), ("grade", "--uncalibrated")):
        r = run(*args, store=s, cwd=cwd)
        assert r.returncode == 3 and f"calibration record {rid[:16]}" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr


def test_empty_classes_mapped_out_of_range_are_dropped_not_refused():
    """An export lists every class up to 200 um, most of them empty: a line of slope 1.02
    maps the empty top classes past 200 um, which holds nothing to clip (it refused the
    lot); the fibres keep their count."""
    from fibergrade.calibration import correct_histograms
    from fibergrade.measurements import HistogramLots

    counts = np.zeros(200, dtype=np.int64)
    counts[15] = 40
    lower = np.arange(200, dtype=np.float64)
    hist = HistogramLots(("H",), np.array([0, 200]), lower, lower + 1.0, counts)
    for a, b in ((0.0, 1.02), (-0.3, 1.0), (0.3, 1.0)):
        out = correct_histograms(hist, np.array([a]), np.array([b]))
        assert int(out.counts.sum()) == 40 and float(out.upper_um.max()) <= 200.0
