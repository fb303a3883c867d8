"""Calibration library: reference sets, the least-squares fit, refusals, expiry, QC
suspension, bias corrections and calibration applied on read when grading."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from fibergrade.audit import digest
from fibergrade.calibration import (
    MIN_TOPS,
    CalibrationFields,
    CalibrationRefused,
    NoValidCalibrationError,
    ReferenceSetError,
    TopMeasurement,
    UnknownTopError,
    calibrate,
    calibrate_bias,
    correct_fibres,
    correct_histograms,
    fit_line,
    instrument_state,
    load_reference_set,
    read_top_measurements,
    record_qc,
)
from fibergrade.distribution import summarise, summarise_histograms
from fibergrade.errors import InputError
from fibergrade.measurements import FibreLots, HistogramLots, LotMeta, diameter_problem
from fibergrade.store import PendingSegment, Store
from fibergrade.workflow import grade_lots

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
IH = Path(__file__).resolve().parents[1] / "calibration" / "references" / "ih-23.toml"


def tops(offset: float = 0.2, scale: float = 1.01, n: int = 8) -> list[TopMeasurement]:
    """What an instrument with the given bias reads on the first ``n`` IH-23 tops."""
    ref = load_reference_set("ih-23")
    return [TopMeasurement(t.top, offset + scale * t.mfd_um) for t in ref.tops[:n]]


def wide_reference(tmp_path: Path):
    """IH-23 with validity dates widened, for tests that grade at the real current time
    (grading evaluates calibrations now; the packaged dates are placeholders)."""
    p = tmp_path / "ih-23-wide.toml"
    text = IH.read_text().replace("2025-07-01", "2000-01-01").replace("2027-06-30", "2099-12-31")
    p.write_text(text)
    return load_reference_set(p)


def make_store(tmp_path: Path, instrument: str | None = "OFDA-1") -> Store:
    rng = np.random.default_rng(4)
    sizes = [2000, 2000, 2000]
    means = [13.6, 16.0, 21.0]  # the first lot lies below the finest IH-23 top (14.58 um)
    d = np.concatenate(
        [rng.lognormal(np.log(m), 0.2, n) for m, n in zip(means, sizes, strict=True)]
    )
    lots = FibreLots(("L1", "L2", "L3"), np.r_[0, np.cumsum(sizes)], d.astype(np.float32))
    store = Store.open(tmp_path / "store", create=True)
    meta = {x: LotMeta(x, declared_type="cashmere", instrument_id=instrument) for x in lots.lot_ids}
    store.import_segments([PendingSegment(lots, meta, "lots.csv", "a" * 64)])
    return store


# --------------------------------------------------------------------------- reference sets


def test_reference_set_found_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ref = load_reference_set("ih-23")
    assert ref.id == "ih-23" and len(ref.tops) == 8
    assert ref.top("1").mfd_um == 14.58 and ref.top("1").airflow_mfd_um == 17.64
    assert ref.top("8").mfd_um == 36.83 and ref.top("8").cv_pct == 21.72
    assert "fibre.md" in ref.source and len(ref.digest) == 64


def test_lab_adds_a_series_by_adding_a_file(tmp_path, monkeypatch):
    d = tmp_path / "refs"
    d.mkdir()
    (d / "lab-1.toml").write_text(IH.read_text().replace('id = "ih-23"', 'id = "lab-1"'))
    monkeypatch.setenv("FIBERGRADE_REFERENCES", str(d))
    assert load_reference_set("lab-1").id == "lab-1"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('title = "', 'colour = "red"\ntitle = "', "unknown key reference.colour"),
        ("validity_source =", "x_validity_source =", "unknown key"),
        ("cv_pct = 17.93\n", "", r"missing tops\[0\]\.cv_pct"),
        ("mfd_um = 14.58", "mfd_um = 0.01458", "millimetres"),
        ('valid_until = "2027-06-30"', 'valid_until = "June 2027"', "not an ISO date"),
    ],
)
def test_reference_loader_is_strict(tmp_path, old, new, message):
    p = tmp_path / "bad.toml"
    text = IH.read_text()
    assert old in text
    p.write_text(text.replace(old, new, 1))
    with pytest.raises(ReferenceSetError, match=message):
        load_reference_set(p)


def test_unknown_reference_set_lists_known():
    with pytest.raises(ReferenceSetError, match="ih-23"):
        load_reference_set("ih-99")


# --------------------------------------------------------------------------- measurements file


def test_measurements_file(tmp_path):
    p = tmp_path / "tops.csv"
    p.write_text("# tops\ntop,measured_mfd_um,measured_cv_pct\n1,14.8,18.1\n2,18.9,\n")
    got = read_top_measurements(p)
    assert got == [
        TopMeasurement("1", 14.8, 18.1, 3, str(p)),
        TopMeasurement("2", 18.9, None, 4, str(p)),
    ]


def test_measurements_file_with_a_utf8_bom_reads_as_without(tmp_path):
    """A BOM (Excel's "CSV UTF-8") was refused as a bad header, which the interchange and
    export readers all accept."""
    text = "# tops\r\ntop,measured_mfd_um\r\n1,14.8\r\n2,18.9\r\n"
    plain, bom = tmp_path / "plain.csv", tmp_path / "bom.csv"
    plain.write_bytes(text.encode())
    bom.write_bytes(b"\xef\xbb\xbf" + text.encode())
    strip = [(m.top, m.measured_mfd_um, m.line) for m in read_top_measurements(plain)]
    assert [(m.top, m.measured_mfd_um, m.line) for m in read_top_measurements(bom)] == strip
    assert strip == [("1", 14.8, 3), ("2", 18.9, 4)]


def test_measurements_file_not_utf8_names_the_line(tmp_path):
    p = tmp_path / "tops.csv"
    p.write_bytes(b"top,measured_mfd_um\n1,14.8\n\xff2,18.9\n")
    with pytest.raises(InputError, match="not UTF-8") as e:
        read_top_measurements(p)
    assert (e.value.path, e.value.line) == (str(p), 3)


def test_a_top_unknown_to_the_reference_set_is_named_with_its_file_and_line(tmp_path):
    p = tmp_path / "tops.csv"
    rows = "".join(f"{m.top},{m.measured_mfd_um}\n" for m in tops())
    p.write_text("top,measured_mfd_um\n" + rows + "99,20.0\n")
    store = make_store(tmp_path)
    with pytest.raises(UnknownTopError) as e:
        calibrate(store, "OFDA-1", load_reference_set("ih-23"), read_top_measurements(p), now=T0)
    line = 2 + len(tops())
    assert f"top '99' ({p}, line {line}) is not in reference set ih-23" in str(e.value)
    assert e.value.exit_code == 2  # bad input, as an unknown reference set is
    assert store.results("calibration") == []


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("top,mfd\n1,14.8\n", 1, "header"),
        ("top,measured_mfd_um\n1,abc\n", 2, "not a number"),
        ("top,measured_mfd_um\n1,14.8\n1,14.9\n", 3, "listed twice"),
        ("top,measured_mfd_um\n1,-3\n", 2, "<= 0"),
    ],
)
def test_measurements_file_errors_name_the_line(tmp_path, text, line, message):
    p = tmp_path / "tops.csv"
    p.write_text(text)
    with pytest.raises(InputError, match=message) as e:
        read_top_measurements(p)
    assert e.value.line == line and e.value.path == str(p)


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(
        st.floats(0.5, 200).map(repr),
        st.text(alphabet="0123456789._-+eE \u0661\u0968naif", max_size=8),
    )
)
def test_measurements_file_takes_plain_decimals_only(tmp_path_factory, cell):
    """A measured MFD is a plain decimal number or the file is refused at its line: never
    "1_8.5", other scripts' digits, "nan" or "inf", which float() alone would take."""
    p = tmp_path_factory.mktemp("tops") / "tops.csv"
    p.write_text(f"top,measured_mfd_um\nT1,{cell}\n", encoding="utf-8")
    plain = re.fullmatch(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*", cell, re.ASCII)
    if plain and diameter_problem(float(cell)) is None:
        assert read_top_measurements(p)[0].measured_mfd_um == float(cell)
    else:
        with pytest.raises(InputError) as e:
            read_top_measurements(p)
        assert e.value.line == 2 and e.value.path == str(p)


def test_measurements_file_refuses_underscores_and_non_finite(tmp_path):
    for cell in ("1_8.5", "nan", "inf", "\u0661\u0668"):
        p = tmp_path / "tops.csv"
        p.write_text(f"top,measured_mfd_um,measured_cv_pct\nT1,14.8,{cell}\n", encoding="utf-8")
        with pytest.raises(InputError, match="not a number") as e:
            read_top_measurements(p)
        assert e.value.line == 2


# --------------------------------------------------------------------------- fit


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(10, 40), min_size=3, max_size=12, unique=True),
    st.floats(-1, 1),
    st.floats(0.9, 1.1),
    st.integers(0, 2**31),
)
def test_fit_agrees_with_scipy_and_numpy(x, a, b, seed):
    x = np.array(x)
    if np.ptp(x) < 0.5:
        return
    y = a + b * x + np.random.default_rng(seed).normal(0, 0.1, x.size)
    fit = fit_line(x, y)
    ref = scipy.stats.linregress(x, y)
    assert fit.slope == pytest.approx(ref.slope, rel=1e-9, abs=1e-9)
    assert fit.intercept == pytest.approx(ref.intercept, rel=1e-9, abs=1e-8)
    assert fit.r2 == pytest.approx(ref.rvalue**2, rel=1e-9, abs=1e-9)
    slope, intercept = np.polyfit(x, y, 1)
    assert fit.slope == pytest.approx(slope, rel=1e-7, abs=1e-9)
    np.testing.assert_allclose(fit.residuals, y - (intercept + slope * x), atol=1e-7)


def test_calibration_record_holds_the_line_residuals_and_range(tmp_path):
    store = make_store(tmp_path)
    cid, rec = calibrate(store, "OFDA-1", load_reference_set("ih-23"), tops(), now=T0)
    # an exact linear bias is undone exactly: assigned = (measured - 0.2) / 1.01
    assert rec["line"]["slope"] == pytest.approx(1 / 1.01)
    assert rec["line"]["intercept_um"] == pytest.approx(-0.2 / 1.01)
    assert rec["r2"] == pytest.approx(1.0)
    assert max(abs(t["residual_um"]) for t in rec["tops"]) < 1e-9
    assert rec["range_um"] == [14.58, 36.83]
    assert rec["instrument_id"] == "OFDA-1" and rec["reference"]["id"] == "ih-23"
    assert store.get_result("calibration", cid) == rec


def test_cv_correction_scales_sd_by_the_slope(tmp_path):
    store = make_store(tmp_path)
    ms = [TopMeasurement(m.top, m.measured_mfd_um, 20.0) for m in tops(0.0, 1.1)]
    _, rec = calibrate(store, "OFDA-1", load_reference_set("ih-23"), ms, now=T0)
    # d' = d / 1.1: SD and MFD both scale by 1/1.1, so the CV is unchanged
    assert all(t["corrected_cv_pct"] == pytest.approx(20.0) for t in rec["tops"])


def test_too_few_tops_refused_and_nothing_stored(tmp_path):
    store = make_store(tmp_path)
    with pytest.raises(CalibrationRefused, match=f"at least {MIN_TOPS}"):
        calibrate(store, "OFDA-1", load_reference_set("ih-23"), tops(n=MIN_TOPS - 1), now=T0)
    assert store.results("calibration") == []


def test_residual_above_tolerance_refused_naming_the_top(tmp_path):
    store = make_store(tmp_path)
    ms = tops()
    ms[2] = TopMeasurement("3", ms[2].measured_mfd_um + 1.5)
    with pytest.raises(CalibrationRefused, match="top 3: residual"):
        calibrate(store, "OFDA-1", load_reference_set("ih-23"), ms, now=T0)
    assert store.results("calibration") == []


def test_reference_set_outside_its_validity_refused(tmp_path):
    store = make_store(tmp_path)
    with pytest.raises(CalibrationRefused, match="valid 2025-07-01"):
        calibrate(store, "OFDA-1", load_reference_set("ih-23"), tops(), now=T0.replace(year=2030))


# --------------------------------------------------------------------------- state


def test_expiry(tmp_path):
    store = make_store(tmp_path)
    cid, _ = calibrate(store, "OFDA-1", load_reference_set("ih-23"), tops(), now=T0, valid_days=30)
    assert instrument_state(store, "OFDA-1", now=T0 + timedelta(days=29)).state == "valid"
    later = instrument_state(store, "OFDA-1", now=T0 + timedelta(days=31))
    assert later.state == "expired" and later.calibration_id == cid
    # expiry is capped by the reference set's validity
    _, rec2 = calibrate(
        store, "OFDA-1", load_reference_set("ih-23"), tops(), now=datetime(2027, 6, 1, tzinfo=UTC)
    )
    assert rec2["expires_at"].startswith("2027-06-30")
    # so is a count of days past the calendar's end (it overflowed: a traceback)
    _, rec3 = calibrate(
        store, "OFDA-1", load_reference_set("ih-23"), tops(), now=T0, valid_days=3_000_000
    )
    assert rec3["expires_at"].startswith("2027-06-30")


def test_qc_suspends_and_a_new_calibration_revalidates(tmp_path):
    store = make_store(tmp_path)
    ref = load_reference_set("ih-23")
    cid, _ = calibrate(store, "OFDA-1", ref, tops(), now=T0)
    _, ok = record_qc(store, "OFDA-1", 0.2 + 1.01 * 21.35, 21.35, now=T0 + timedelta(hours=1))
    assert ok["passed"] and ok["calibration_id"] == cid
    assert instrument_state(store, "OFDA-1", now=T0 + timedelta(hours=2)).state == "valid"
    _, bad = record_qc(store, "OFDA-1", 22.6, 21.35, now=T0 + timedelta(hours=3))
    assert not bad["passed"]
    st_ = instrument_state(store, "OFDA-1", now=T0 + timedelta(hours=4))
    assert st_.state == "suspended" and "QC check" in st_.reason
    with pytest.raises(NoValidCalibrationError, match="OFDA-1") as e:
        record_qc(store, "OFDA-1", 21.5, 21.35, now=T0 + timedelta(hours=5))
    assert "--uncalibrated" not in str(e.value)  # a way out for grading only
    # no catch-22: a calibration run can be recorded on a suspended instrument
    cid2, _ = calibrate(store, "OFDA-1", ref, tops(0.1, 1.0), now=T0 + timedelta(hours=6))
    st2 = instrument_state(store, "OFDA-1", now=T0 + timedelta(hours=7))
    assert st2.state == "valid" and st2.calibration_id == cid2


def test_bias_correction_rides_on_the_base_calibration(tmp_path):
    store = make_store(tmp_path)
    ref = load_reference_set("ih-23")
    base, _ = calibrate(store, "LS-2", ref, tops(0.0, 1.0), now=T0)
    _, rec = calibrate_bias(
        store, "OFDA-1", "LS-2", 0.16, source="fibre.md OFDA4000 vs Laserscan", now=T0
    )
    assert rec["line"]["intercept_um"] == pytest.approx(-0.16)
    assert rec["line"]["slope"] == pytest.approx(1.0)
    assert rec["against"] == {"instrument_id": "LS-2", "calibration_id": base}
    assert instrument_state(store, "OFDA-1", now=T0 + timedelta(hours=1)).state == "valid"
    calibrate(store, "LS-2", ref, tops(0.05, 1.0), now=T0 + timedelta(hours=2))
    st_ = instrument_state(store, "OFDA-1", now=T0 + timedelta(hours=3))
    assert st_.state == "base-invalid"


def test_bias_needs_a_valid_base(tmp_path):
    store = make_store(tmp_path)
    with pytest.raises(NoValidCalibrationError, match="LS-2") as e:
        calibrate_bias(store, "OFDA-1", "LS-2", 0.16, source="x", now=T0)
    assert "--uncalibrated" not in str(e.value)


# --------------------------------------------------------------------------- applied on read


def test_correct_fibres_is_the_line_per_lot():
    lots = FibreLots(("a", "b"), [0, 2, 3], np.array([15.0, 17.0, 20.0], np.float32))
    out = correct_fibres(lots, np.array([0.5, -1.0]), np.array([1.0, 2.0]))
    np.testing.assert_allclose(out.diameter_um, [15.5, 17.5, 39.0])
    np.testing.assert_array_equal(lots.diameter_um, [15.0, 17.0, 20.0])  # raw stays raw


@settings(max_examples=40, deadline=None)
@given(st.floats(-0.6, 0.6), st.floats(0.95, 1.05), st.integers(0, 2**31))
def test_correct_histograms_keeps_counts_and_maps_the_mean(a, b, seed):
    rng = np.random.default_rng(seed)
    d = rng.lognormal(np.log(17.0), 0.2, 5000)
    k = np.floor(d).astype(int)
    classes, counts = np.unique(k, return_counts=True)
    hist = HistogramLots(("h",), [0, classes.size], classes.astype(float), classes + 1.0, counts)
    out = correct_histograms(hist, np.array([a]), np.array([b]))
    assert out.counts.sum() == counts.sum() and np.all(out.counts >= 0)
    raw = summarise_histograms(hist)["mfd_um"][0]
    got = summarise_histograms(out)["mfd_um"][0]
    # the even-spread re-cut moves each fibre by less than one class: the mean follows the line
    assert got == pytest.approx(a + b * raw, abs=0.02)


def test_grading_applies_the_calibration_and_names_it(tmp_path):
    store = make_store(tmp_path)
    raw = summarise(store.read_fibres(["L1", "L2", "L3"]))["mfd_um"]
    cid, _ = calibrate(store, "OFDA-1", wide_reference(tmp_path), tops())
    run = grade_lots(store)
    mfd = np.array([r["mfd_um"] for r in run.records])
    np.testing.assert_allclose(mfd, (raw - 0.2) / 1.01, rtol=1e-5)
    assert [r["calibration"] for r in run.records] == [cid] * 3
    assert [r["uncalibrated"] for r in run.records] == [False] * 3
    assert [r["calibration_range_flag"] for r in run.records] == ["below", None, None]
    stored = store.get_result("grade", run.result_id)
    assert stored["lots"][0]["calibration"] == cid
    # joined from the tasks' canonical JSON: the record of the whole, serialised at once
    assert stored["lots"] == run.records
    head = {k: v for k, v in stored.items() if k != "lots"}
    assert digest(head | {"lots": run.records}) == run.result_id
    # raw data unchanged
    again = summarise(store.read_fibres(["L1", "L2", "L3"]))["mfd_um"]
    np.testing.assert_array_equal(raw, again)


def test_grading_without_valid_calibration_is_refused_unless_allowed(tmp_path):
    store = make_store(tmp_path)
    with pytest.raises(NoValidCalibrationError, match="'OFDA-1': no calibration recorded"):
        grade_lots(store)
    assert store.results("grade") == []
    run = grade_lots(store, uncalibrated=True)
    assert all(r["uncalibrated"] and r["calibration"] is None for r in run.records)
    assert "--uncalibrated" in run.records[0]["calibration_note"]
    # an expired calibration gates the same way
    calibrate(store, "OFDA-1", load_reference_set("ih-23"), tops(), now=T0, valid_days=1)
    with pytest.raises(NoValidCalibrationError, match="expired"):
        grade_lots(store)


def test_lots_without_instrument_are_graded_raw_with_a_note(tmp_path):
    store = make_store(tmp_path, instrument=None)
    run = grade_lots(store)
    assert all(r["uncalibrated"] for r in run.records)
    assert run.records[0]["calibration_note"].startswith("lot has no instrument id")


def test_edited_calibration_record_is_detected(tmp_path):
    from fibergrade.errors import StoreCorruptError

    store = make_store(tmp_path)
    cid, _ = calibrate(store, "OFDA-1", wide_reference(tmp_path), tops())
    grade_lots(store)
    path = store.root / "results" / "calibration" / f"{cid}.json"
    os.chmod(path, 0o644)
    path.write_text(path.read_text().replace('"slope":', '"slope":1.0,"x":', 1))
    with pytest.raises(StoreCorruptError, match=cid):
        grade_lots(store)


def test_a_tasks_rows_of_the_calibrations_give_the_same_record_fields():
    nan = float("nan")
    table = (
        (None, nan, nan, "lot has no instrument id; graded on raw diameters"),
        ("cal-a", 14.0, 40.0, None),
        (None, nan, nan, "graded uncalibrated (--uncalibrated): expired"),
    )
    fields = CalibrationFields(table, np.array([0, 1, 1, 2], dtype=np.int32))
    mfd = np.array([15.0, 13.0, 41.0, 16.0])
    whole = fields.record_fields(mfd)
    assert [f["calibration_range_flag"] for f in whole] == [None, "below", "above", None]
    assert whole[1]["calibration_range_um"] == [14.0, 40.0]
    assert whole[2]["calibration_range_um"] is not whole[1]["calibration_range_um"]
    assert whole[3] == {
        "calibration": None,
        "uncalibrated": True,
        "calibration_range_um": None,
        "calibration_range_flag": None,
        "calibration_note": "graded uncalibrated (--uncalibrated): expired",
    }
    rows = [2, 0, 1]
    assert fields.select(rows).record_fields(mfd[rows]) == [whole[i] for i in rows]
