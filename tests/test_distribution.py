"""The distribution core: the fast kernel against the numpy reference, and the invariants
the issue names (order, splitting, CF + PF, CV, SF, histogram totals)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fibergrade.adapters.writers import to_histograms
from fibergrade.distribution import (
    BINNED,
    FIGURES,
    LotSummary,
    derive,
    summarise,
    summarise_histograms,
    summarise_reference,
)
from fibergrade.errors import DataModelError, MeasurementError
from fibergrade.measurements import FibreLots, HistogramLots

ENGINES = ("reference", "fast")
EXACT = ("min_um", "max_um", "cf_pct", "pf_pct", "coarse_count_pct", "p5_um", "p50_um", "p95_um")


def make_lots(sizes, diameters, **cols) -> FibreLots:
    off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return FibreLots(
        tuple(f"lot{i}" for i in range(len(sizes))),
        off,
        np.asarray(diameters, np.float32),
        **cols,
    )


def assert_same(a: LotSummary, b: LotSummary, rtol: float = 1e-9) -> None:
    assert a.lot_ids == b.lot_ids
    np.testing.assert_array_equal(a.n, b.n)
    np.testing.assert_array_equal(a.histogram, b.histogram)
    np.testing.assert_array_equal(a.status, b.status)
    for f in FIGURES:
        x, y = a.figures[f], b.figures[f]
        np.testing.assert_array_equal(np.isnan(x), np.isnan(y), err_msg=f)
        if f in EXACT:
            np.testing.assert_array_equal(x, y, err_msg=f)
        else:
            np.testing.assert_allclose(x, y, rtol=rtol, atol=1e-9, equal_nan=True, err_msg=f)


diam = st.floats(1.0, 200.0, width=32, allow_nan=False, allow_infinity=False)


@st.composite
def lot_tables(draw, max_lots: int = 8, max_size: int = 60, optional: bool = True):
    sizes = draw(st.lists(st.integers(0, max_size), min_size=1, max_size=max_lots))
    n = int(sum(sizes))
    d = draw(hnp.arrays(np.float32, n, elements=diam))
    cols = {}
    if optional and draw(st.booleans()):
        cols["curvature_deg_mm"] = draw(
            hnp.arrays(np.float32, n, elements=st.floats(0, 300, width=32))
        )
        cols["medullated"] = draw(hnp.arrays(np.bool_, n))
        cols["length_mm"] = draw(hnp.arrays(np.float32, n, elements=st.floats(0, 150, width=32)))
    return make_lots(sizes, d, **cols)


@settings(max_examples=150, deadline=None)
@given(lot_tables())
def test_fast_kernel_agrees_with_reference(lots):
    reference = summarise_reference(lots)
    assert_same(reference, summarise(lots, engine="fast"))
    # the serial kernel (one thread; summarise_lots runs several at once) is the same code
    assert_same(reference, summarise(lots, engine="fast", parallel=False))


@settings(max_examples=60, deadline=None)
@given(lot_tables(optional=False), st.randoms(use_true_random=False))
def test_order_of_fibres_within_a_lot_does_not_matter(lots, rnd):
    perm = np.concatenate(
        [
            lots.offsets[i] + np.array(rnd.sample(range(int(n)), int(n)), dtype=np.int64)
            for i, n in enumerate(np.diff(lots.offsets))
        ]
        + [np.zeros(0, np.int64)]
    )
    shuffled = FibreLots(lots.lot_ids, lots.offsets, lots.diameter_um[perm])
    for engine in ENGINES:
        assert_same(summarise(lots, engine=engine), summarise(shuffled, engine=engine), 1e-9)


@settings(max_examples=60, deadline=None)
@given(lot_tables(), st.data())
def test_splitting_the_lots_gives_the_same_per_lot_results(lots, data):
    cut = data.draw(st.integers(0, lots.n_lots))
    head, tail = lots.select(range(cut)), lots.select(range(cut, lots.n_lots))
    for engine in ENGINES:
        whole = summarise(lots, engine=engine)
        parts = LotSummary.concat([summarise(head, engine=engine), summarise(tail, engine=engine)])
        assert_same(whole, parts, 1e-12)
        # counted straight into the rows of one joined histogram (what summarise_lots does),
        # over rows that held garbage before
        joined = np.full((lots.n_lots, 200), -7, np.int64)
        into = [
            summarise(head, engine=engine, histogram_out=joined[:cut]),
            summarise(tail, engine=engine, histogram_out=joined[cut:]),
        ]
        assert all(np.shares_memory(p.histogram, joined) for p in into if p.n_lots)
        assert_same(whole, LotSummary.concat(into, joined), 1e-12)


@settings(max_examples=80, deadline=None)
@given(lot_tables(), st.floats(5.0, 60.0))
def test_identities_hold_for_every_lot(lots, cut):
    for engine in ENGINES:
        s = summarise(lots, cut, engine=engine)
        ok = s.n > 0
        np.testing.assert_allclose(s["cf_pct"][ok] + s["pf_pct"][ok], 100.0)
        two = s.n > 1
        np.testing.assert_allclose(
            s["cv_pct"][two], 100.0 * s["sd_um"][two] / s["mfd_um"][two], rtol=1e-12
        )
        np.testing.assert_array_equal(s.histogram.sum(axis=1), s.n)
        # percentiles are ordered and inside the observed range
        assert np.all(s["p5_um"][ok] <= s["p50_um"][ok])
        assert np.all(s["p50_um"][ok] <= s["p95_um"][ok])
        assert np.all(s["min_um"][ok] <= s["p5_um"][ok])
        assert np.all(s["p95_um"][ok] <= s["max_um"][ok])
        assert np.all((s["coarse_mass_pct"][ok] >= 0) & (s["coarse_mass_pct"][ok] <= 100))


@given(st.floats(1.0, 200.0), st.floats(0.0, 60.0), st.floats(0.0, 60.0))
def test_spinning_fineness_equals_mfd_at_cv_24_and_grows_with_cv(mfd, cv1, cv2):
    def sf(cv: float) -> float:
        one = np.array([2])
        sd = np.array([cv / 100 * mfd])
        return float(derive(one, np.array([mfd]), sd, one, np.zeros(1), np.ones(1))["sf_um"][0])

    # equal to the precision of the published constant: 0.881 * sqrt(1 + 5 * 0.24^2)
    assert sf(24.0) == pytest.approx(mfd, rel=2e-4)
    assert sf(24.0) == pytest.approx(0.881 * math.sqrt(1.288) * mfd, rel=1e-12)
    lo, hi = sorted((cv1, cv2))
    assert sf(lo) <= sf(hi)


@pytest.mark.parametrize("engine", ENGINES)
def test_hand_computed_lot(engine):
    s = summarise(make_lots([4], [10.0, 20.0, 30.0, 40.0]), engine=engine)
    r = s.to_records()[0]
    assert r["n"] == 4
    assert r["mfd_um"] == pytest.approx(25.0)
    assert r["sd_um"] == pytest.approx(math.sqrt(500.0 / 3.0))
    assert r["cv_pct"] == pytest.approx(100 * math.sqrt(500.0 / 3.0) / 25.0)
    assert r["cf_pct"] == pytest.approx(75.0)  # 30.0 itself counts as <= 30
    assert r["coarse_mass_pct"] == pytest.approx(100 * 1600 / 3000)
    assert r["min_um"] == 10.0 and r["max_um"] == 40.0
    # P50: target 2 fibres, reached in the 0.1-um class [20.0, 20.1): interpolated to its top
    assert r["p50_um"] == pytest.approx(20.1)
    assert r["histogram"] == {
        "class_um": 1.0,
        "first_lower_um": 10.0,
        "counts": [1] + [0] * 9 + [1] + [0] * 9 + [1] + [0] * 9 + [1],
    }
    assert r["status"] == "ok" and r["basis"] == "fibres"
    assert r["binned"] == list(BINNED["fibres"])


@pytest.mark.parametrize("engine", ENGINES)
def test_empty_and_single_fibre_lots_are_explicit(engine):
    s = summarise(make_lots([0, 1, 2], [17.0, 15.0, 16.0]), engine=engine)
    empty, one, two = s.to_records()
    assert empty["status"] == "empty" and empty["n"] == 0
    assert all(empty[f] is None for f in FIGURES)
    assert one["status"] == "single-fibre"
    assert one["mfd_um"] == pytest.approx(17.0)
    assert one["sd_um"] is None and one["cv_pct"] is None and one["sf_um"] is None
    assert two["status"] == "ok" and two["sd_um"] == pytest.approx(math.sqrt(0.5))
    # absent optional columns are undefined, not zero
    assert two["curvature_mean_deg_mm"] is None and two["medullated_pct"] is None


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("value", "words"),
    [
        (float("nan"), "NaN"),
        (0.0, "<= 0"),
        (-3.0, "<= 0"),
        (200.5, "above 200"),
        (0.016, "millimetres"),
        (float("inf"), "above 200"),
    ],
)
def test_bad_values_name_the_lot_and_fibre(engine, value, words):
    d = [15.0, 16.0, 17.0, 18.0, value, 19.0]
    with pytest.raises(MeasurementError) as info:
        summarise(make_lots([3, 3], d), engine=engine)
    assert info.value.lot_id == "lot1" and info.value.index == 1
    assert words in str(info.value)


@pytest.mark.parametrize("engine", ENGINES)
def test_nan_in_optional_column_is_refused(engine):
    lots = make_lots([2], [15.0, 16.0], curvature_deg_mm=np.array([50, np.nan], np.float32))
    with pytest.raises(DataModelError, match="curvature_deg_mm"):
        summarise(lots, engine=engine)


def test_first_bad_value_is_reported_in_storage_order():
    d = [15.0, -1.0, 16.0, 0.001]
    for engine in ENGINES:
        with pytest.raises(MeasurementError) as info:
            summarise(make_lots([2, 2], d), engine=engine)
        assert (info.value.lot_id, info.value.index) == ("lot0", 1)


def test_200_um_is_allowed_and_lands_in_the_last_class():
    for engine in ENGINES:
        s = summarise(make_lots([2], [200.0, 199.5]), engine=engine)
        assert s.histogram[0, 199] == 2 and s.to_records()[0]["max_um"] == 200.0


def test_cut_must_be_physical():
    with pytest.raises(DataModelError):
        summarise(make_lots([1], [15.0]), cut_um=0.0)


# --- histogram-only lots -------------------------------------------------------------------


def test_histogram_lots_agree_with_per_fibre_figures_within_binning():
    rng = np.random.default_rng(3)
    sizes = [4000, 2500, 0, 1]
    d = np.exp(rng.normal(np.log([15.5, 19.0, 1, 18.0]).repeat(sizes), 0.2)).astype(np.float32)
    lots = make_lots(sizes, d)
    exact = summarise(lots)
    binned = summarise_histograms(to_histograms(lots))
    np.testing.assert_array_equal(binned.n, exact.n)
    np.testing.assert_array_equal(binned.histogram, exact.histogram)
    ok = exact.n > 1
    # mid-point figures: within half a class of the exact ones
    np.testing.assert_allclose(binned["mfd_um"][ok], exact["mfd_um"][ok], atol=0.05)
    np.testing.assert_allclose(binned["sd_um"][ok], exact["sd_um"][ok], atol=0.1)
    np.testing.assert_allclose(binned["p50_um"][ok], exact["p50_um"][ok], atol=0.5)
    np.testing.assert_allclose(binned["cf_pct"][ok] + binned["pf_pct"][ok], 100.0)
    assert list(binned.basis) == ["histogram"] * 4
    rec = binned.to_records()
    assert rec[2]["status"] == "empty" and rec[3]["status"] == "single-fibre"
    assert "mfd_um" in rec[0]["binned"]


def test_histogram_cut_inside_a_class_is_split_in_proportion():
    h = HistogramLots(("a",), np.array([0, 2]), [29.0, 30.0], [30.0, 31.0], [10, 10])
    r = summarise_histograms(h, cut_um=29.5).to_records()[0]
    assert r["cf_pct"] == pytest.approx(25.0)  # half of the first class is <= 29.5
    assert r["mfd_um"] == pytest.approx(30.0)
    assert r["min_um"] == 29.0 and r["max_um"] == 31.0
    # mass above the cut: integral of d^2 over [29.5, 31) against [29, 31), counts equal
    expected = (31**3 - 29.5**3) / (31**3 - 29**3)
    assert r["coarse_mass_pct"] == pytest.approx(100 * expected)


def test_histogram_classes_wider_than_one_micrometre_are_refused():
    h = HistogramLots(("a",), np.array([0, 1]), [14.0], [16.0], [5])
    with pytest.raises(DataModelError, match="1-um"):
        summarise_histograms(h)


@given(
    st.lists(st.integers(0, 50), min_size=1, max_size=40),
    st.integers(5, 150),
)
def test_histogram_totals_and_identities(counts, start):
    k = len(counts)
    lo = np.arange(start, start + k, dtype=np.float64)
    lo = lo[lo + 1 <= 200]
    counts = counts[: lo.size]
    h = HistogramLots(("a",), np.array([0, lo.size]), lo, lo + 1, counts)
    s = summarise_histograms(h)
    assert s.n[0] == sum(counts) == s.histogram[0].sum()
    if s.n[0] > 0:
        assert s["cf_pct"][0] + s["pf_pct"][0] == pytest.approx(100.0)
        assert s["min_um"][0] <= s["p5_um"][0] <= s["p50_um"][0] <= s["p95_um"][0] <= s["max_um"][0]


def test_histogram_lots_count_into_a_given_histogram_too():
    h = HistogramLots(("a", "b"), np.array([0, 2, 3]), [14, 15, 20], [15, 16, 21], [4, 6, 1])
    out = np.full((2, 200), 99, np.int64)
    s = summarise_histograms(h, histogram_out=out)
    assert s.histogram is out
    np.testing.assert_array_equal(out, summarise_histograms(h).histogram)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_histogram_out_of_the_wrong_shape_or_type_is_refused(engine):
    lots = make_lots([2, 1], [15.0, 16.0, 17.0])
    for bad in (np.zeros((3, 200), np.int64), np.zeros((2, 200), np.int32)):
        with pytest.raises(DataModelError, match="histogram_out"):
            summarise(lots, engine=engine, histogram_out=bad)
    s = summarise(lots, engine=engine)
    with pytest.raises(DataModelError, match="joined histogram"):
        LotSummary.concat([s, s], np.zeros((3, 200), np.int64))
