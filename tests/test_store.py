"""Tests of the embedded store (shared/DESIGN.md, "Store") on real HDF5 files."""

from __future__ import annotations

import fcntl
import hashlib
import json
import mmap
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fibergrade import __version__
from fibergrade.errors import (
    DataModelError,
    LotConflictError,
    LotNotFoundError,
    MeasurementError,
    StoreCorruptError,
    StoreError,
    StoreLockedError,
)
from fibergrade.measurements import FibreLots, HistogramLots, LotMeta
from fibergrade.store import PendingSegment, Store, read_segment_file, sha256_file


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def fibres(ids: list[str], sizes: list[int], seed: int = 0, *, optional: bool = True) -> FibreLots:
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    cols = {}
    if optional:
        cols = {
            "length_mm": rng.uniform(10, 60, n).astype(np.float32),
            "curvature_deg_mm": rng.uniform(20, 90, n).astype(np.float32),
            "medullated": rng.random(n) < 0.1,
        }
    return FibreLots(tuple(ids), off, rng.normal(16, 3, n).clip(5, 60).astype(np.float32), **cols)


def histograms(ids: list[str], seed: int = 0) -> HistogramLots:
    rng = np.random.default_rng(seed)
    k = rng.integers(1, 8, len(ids))
    lower = np.concatenate([np.arange(10, 10 + m, dtype=np.float64) for m in k])
    return HistogramLots(
        tuple(ids),
        np.concatenate([[0], np.cumsum(k)]),
        lower,
        lower + 1.0,
        rng.integers(0, 500, int(k.sum())),
    )


def assert_same_fibres(a: FibreLots, b: FibreLots) -> None:
    assert a.lot_ids == b.lot_ids
    np.testing.assert_array_equal(a.offsets, b.offsets)
    assert a.diameter_um.dtype == b.diameter_um.dtype == np.float32
    np.testing.assert_array_equal(a.diameter_um.view(np.uint32), b.diameter_um.view(np.uint32))
    for name in ("length_mm", "curvature_deg_mm", "medullated"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(x, y)


def assert_same_histograms(a: HistogramLots, b: HistogramLots) -> None:
    assert a.lot_ids == b.lot_ids
    for name in ("offsets", "lower_um", "upper_um", "counts"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def lot_slice(table: FibreLots, lot_id: str) -> np.ndarray:
    i = table.lot_ids.index(lot_id)
    return table.diameter_um[table.offsets[i] : table.offsets[i + 1]]


# ------------------------------------------------------------------ opening


def test_open_missing_without_create_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        Store.open(tmp_path / "nowhere", create=False)
    assert not (tmp_path / "nowhere").exists()
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreError, match="not a fibergrade store"):
        Store.open(tmp_path / "plain", create=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        Store.open(tmp_path / "file")


def test_empty_store(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s")
    assert store.root == tmp_path / "s"
    assert store.segments() == [] and store.lots() == []
    assert store.read_fibres().n_lots == 0
    assert store.read_histograms().n_lots == 0
    assert store.read_fibres([]).n_fibres == 0
    assert Store.open(tmp_path / "s", create=False).lots() == []


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("optional", [True, False])
def test_fibre_round_trip(tmp_path: Path, optional: bool) -> None:
    store = Store.open(tmp_path)
    table = fibres(["L1", "L2", "L3"], [5, 0, 7], seed=1, optional=optional)
    meta = {
        "L1": LotMeta(
            "L1",
            declared_type="cashmere",
            origin="MN",
            region="Gobi-Altai",
            gi_code="GI-1",
            client="Ölzii LLC",
            instrument_id="ofda-2000-1",
            calibration_id="cal-7",
            received_at="2024-05-01T08:00:00Z",
            measured_at="2024-05-02T09:30:00Z",
            extra={"bale": "17"},
        )
    }
    out = store.import_fibres(table, meta, source_name="run1.csv", source_digest=sha("run1"))
    assert out.already_imported is False
    assert out.lot_ids == ("L1", "L2", "L3") and out.n_rows == 12
    assert out.source_name == "run1.csv"
    assert out.segment == sha256_file(store.segment_path(out.segment))

    for s in (store, Store.open(tmp_path, create=False)):
        assert_same_fibres(s.read_fibres(), table)
        assert_same_fibres(s.read_fibres(["L1", "L2", "L3"]), table)
        seg_table = s.read_segment(out.segment)
        assert isinstance(seg_table, FibreLots)
        assert_same_fibres(seg_table, table)
        assert s.lot("L1").meta == meta["L1"]
        assert s.lot("L2").meta == LotMeta("L2")
        assert [(r.lot_id, r.index, r.n, r.kind) for r in s.lots()] == [
            ("L1", 0, 5, "fibres"),
            ("L2", 1, 0, "fibres"),
            ("L3", 2, 7, "fibres"),
        ]
        (seg,) = s.segments()
        assert seg.digest == out.segment and seg.kind == "fibres"
        assert seg.source_name == "run1.csv" and seg.source_digest == sha("run1")
        assert seg.lot_ids == ("L1", "L2", "L3") and seg.n_rows == 12
        assert seg.path == tmp_path / "segments" / f"{seg.digest}.h5"
        assert seg.created_at.endswith("Z")


def test_histogram_round_trip(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    table = histograms(["H1", "H2"], seed=3)
    out = store.import_histograms(table, {}, source_name="laser.csv", source_digest=sha("h"))
    assert out.n_rows == table.lower_um.size
    reopened = Store.open(tmp_path)
    assert_same_histograms(reopened.read_histograms(), table)
    assert_same_histograms(reopened.read_histograms(["H2", "H1"]), _hist_select(table, [1, 0]))
    seg_table = reopened.read_segment(out.segment)
    assert isinstance(seg_table, HistogramLots)
    assert_same_histograms(seg_table, table)
    rec = reopened.lot("H2")
    assert rec.kind == "histogram" and rec.index == 1
    assert rec.n == int(table.counts[table.offsets[1] : table.offsets[2]].sum())
    assert reopened.segments()[0].kind == "histogram"


def _hist_select(t: HistogramLots, idx: list[int]) -> HistogramLots:
    parts = [slice(t.offsets[i], t.offsets[i + 1]) for i in idx]
    sizes = [p.stop - p.start for p in parts]
    return HistogramLots(
        tuple(t.lot_ids[i] for i in idx),
        np.concatenate([[0], np.cumsum(sizes)]),
        np.concatenate([t.lower_um[p] for p in parts]),
        np.concatenate([t.upper_um[p] for p in parts]),
        np.concatenate([t.counts[p] for p in parts]),
    )


def test_segment_file_layout(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    table = fibres(["A", "B"], [3, 4], optional=True)
    out = store.import_fibres(
        table, {"A": LotMeta("A", client="c")}, source_name="x.csv", source_digest=sha("x")
    )
    with h5py.File(store.segment_path(out.segment), "r") as f:
        assert f.attrs["format"] == "fibergrade-segment"
        assert int(f.attrs["format_version"]) == 1
        assert f.attrs["kind"] == "fibres"
        assert f.attrs["source_name"] == "x.csv"
        assert f.attrs["source_digest"] == sha("x")
        assert f.attrs["software_version"] == __version__
        assert str(f.attrs["created_at"]).startswith("20")
        metas = json.loads(f.attrs["lots_meta"])
        assert [LotMeta.from_dict(m) for m in metas] == [LotMeta("A", client="c"), LotMeta("B")]
        d = f["fibres/diameter_um"]
        assert d.dtype == np.float32 and d.chunks is None and d.compression is None
        assert f["fibres/medullated"].dtype == np.bool_
        assert f["fibres/length_mm"].dtype == np.float32
        assert f["lots/offsets"].dtype == np.int64
        assert f["lots/lot_id"].asstr()[()].tolist() == ["A", "B"]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_random_tables_round_trip(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    root = tmp_path_factory.mktemp("hyp")
    store = Store.open(root)
    n_segments = data.draw(st.integers(1, 3))
    expected: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
    for s in range(n_segments):
        sizes = data.draw(st.lists(st.integers(0, 40), min_size=1, max_size=4))
        ids = [f"s{s}-l{i}-ü" for i in range(len(sizes))]
        n = sum(sizes)
        diam = np.array(
            data.draw(
                st.lists(st.floats(1, 200, width=32), min_size=n, max_size=n),
            ),
            dtype=np.float32,
        )
        present = data.draw(
            st.sets(st.sampled_from(["length_mm", "curvature_deg_mm", "medullated"]))
        )
        rng = np.random.default_rng(s)
        cols = {
            name: (rng.random(n) < 0.5) if name == "medullated" else rng.random(n, np.float32)
            for name in present
        }
        off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        table = FibreLots(tuple(ids), off, diam, **cols)
        store.import_fibres(table, {}, source_name=f"{s}.csv", source_digest=sha(f"{root}{s}"))
        for i, lot_id in enumerate(ids):
            sl = slice(off[i], off[i + 1])
            expected[lot_id] = (diam[sl], {k: v[sl] for k, v in cols.items()})

    ids = list(expected)
    wanted = data.draw(st.permutations(ids)).copy()
    wanted = wanted[: data.draw(st.integers(0, len(wanted)))]
    got = Store.open(root).read_fibres(wanted)
    assert list(got.lot_ids) == wanted
    # an optional column is kept when every segment read has it (FibreLots.concat)
    got_optional = set(got.optional_columns())
    column_sets = [set(expected[x][1]) for x in wanted]
    assert got_optional == (set.intersection(*column_sets) if wanted else set())
    for i, lot_id in enumerate(wanted):
        sl = slice(got.offsets[i], got.offsets[i + 1])
        diam, cols = expected[lot_id]
        np.testing.assert_array_equal(got.diameter_um[sl].view(np.uint32), diam.view(np.uint32))
        for name in got_optional:
            np.testing.assert_array_equal(getattr(got, name)[sl], cols[name])


# ------------------------------------------------------------------ reading


def _three_segments(tmp_path: Path) -> tuple[Store, list[FibreLots]]:
    store = Store.open(tmp_path)
    tables = [
        fibres(["a1", "a2", "a3"], [3, 2, 4], seed=10),
        histograms(["h1"], seed=11),
        fibres(["b1", "b2"], [5, 1], seed=12),
        fibres(["c1"], [6], seed=13, optional=False),
    ]
    for i, t in enumerate(tables):
        if isinstance(t, HistogramLots):
            store.import_histograms(t, {}, source_name=f"{i}.csv", source_digest=sha(str(i)))
        else:
            store.import_fibres(t, {}, source_name=f"{i}.csv", source_digest=sha(str(i)))
    return store, [t for t in tables if isinstance(t, FibreLots)]


def test_lot_and_segment_order(tmp_path: Path) -> None:
    store, _ = _three_segments(tmp_path)
    assert [s.source_name for s in store.segments()] == ["0.csv", "1.csv", "2.csv", "3.csv"]
    assert [r.lot_id for r in store.lots()] == ["a1", "a2", "a3", "h1", "b1", "b2", "c1"]
    assert store.read_fibres().lot_ids == ("a1", "a2", "a3", "b1", "b2", "c1")
    assert store.read_histograms().lot_ids == ("h1",)


def test_read_subset_across_segments_keeps_requested_order(tmp_path: Path) -> None:
    store, tables = _three_segments(tmp_path)
    whole = FibreLots.concat(tables)
    wanted = ["c1", "a3", "b1", "a1"]
    got = store.read_fibres(wanted)
    assert list(got.lot_ids) == wanted
    for lot_id in wanted:
        np.testing.assert_array_equal(lot_slice(got, lot_id), lot_slice(whole, lot_id))
    # c1 has no optional columns, so the gathered table has none (FibreLots.concat)
    assert got.optional_columns() == {}
    # lots from segments that all have the optional columns keep them
    got = store.read_fibres(["b2", "a2", "a1"])
    assert set(got.optional_columns()) == {"length_mm", "curvature_deg_mm", "medullated"}
    expected = FibreLots.concat(tables[:2]).select([4, 1, 0])
    assert_same_fibres(got, expected)


def test_read_errors(tmp_path: Path) -> None:
    store, _ = _three_segments(tmp_path)
    with pytest.raises(LotNotFoundError) as e:
        store.read_fibres(["a1", "zz", "yy"])
    assert e.value.lot_ids == ("zz", "yy")
    with pytest.raises(LotNotFoundError):
        store.lot("zz")
    with pytest.raises(LotNotFoundError):
        store.read_histograms(["nope"])
    with pytest.raises(StoreError, match="read_histograms"):
        store.read_fibres(["a1", "h1"])
    with pytest.raises(StoreError, match="read_fibres"):
        store.read_histograms(["a1"])
    with pytest.raises(StoreError, match="twice"):
        store.read_fibres(["a1", "a1"])
    with pytest.raises(StoreError, match="no segment"):
        store.read_segment("0" * 64)
    with pytest.raises(StoreError, match="no segment"):
        store.segment_path("0" * 64)


# ------------------------------------------------------------------ imports


def test_reimport_does_nothing(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    table = fibres(["L1"], [4])
    first = store.import_fibres(table, {}, source_name="a.csv", source_digest=sha("a"))
    before = files_under(tmp_path)
    again = store.import_fibres(table, {}, source_name="a.csv", source_digest=sha("a"))
    assert again.already_imported and again.segment == first.segment
    assert again.lot_ids == first.lot_ids and again.n_rows == first.n_rows
    # the same source under another file name is still the same source
    renamed = Store.open(tmp_path).import_fibres(
        table, {}, source_name="copy-of-a.csv", source_digest=sha("a")
    )
    assert renamed.already_imported and renamed.segment == first.segment
    assert files_under(tmp_path) == before
    assert len(Store.open(tmp_path).segments()) == 1


def test_conflict_raises_before_writing(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    first = store.import_fibres(
        fibres(["L1", "L2"], [3, 3]), {}, source_name="first.csv", source_digest=sha("1")
    )
    before = files_under(tmp_path)
    with pytest.raises(LotConflictError) as e:
        store.import_fibres(
            fibres(["L9", "L2"], [1, 1], seed=5),
            {},
            source_name="second.csv",
            source_digest=sha("2"),
        )
    msg = str(e.value)
    assert "'L2'" in msg and first.segment in msg and "first.csv" in msg
    assert files_under(tmp_path) == before
    assert [r.lot_id for r in Store.open(tmp_path).lots()] == ["L1", "L2"]


def test_batch_import_is_validated_as_a_whole(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    store.import_fibres(fibres(["X"], [2]), {}, source_name="x.csv", source_digest=sha("x"))
    before = files_under(tmp_path)
    ok = PendingSegment(fibres(["A"], [2]), {}, "a.csv", sha("a"))
    clash_store = PendingSegment(fibres(["B", "X"], [2, 2]), {}, "b.csv", sha("b"))
    with pytest.raises(LotConflictError, match=r"x\.csv"):
        store.import_segments([ok, clash_store])
    clash_batch = PendingSegment(fibres(["C", "A"], [2, 2]), {}, "c.csv", sha("c"))
    with pytest.raises(LotConflictError, match=r"a\.csv.*c\.csv"):
        store.import_segments([ok, clash_batch])
    assert files_under(tmp_path) == before

    hist = PendingSegment(histograms(["H"]), {"H": LotMeta("H", client="k")}, "h.csv", sha("h"))
    same_source_twice = PendingSegment(fibres(["A"], [2]), {}, "a-again.csv", sha("a"))
    already = PendingSegment(fibres(["X"], [2]), {}, "x.csv", sha("x"))
    outs = store.import_segments([ok, hist, same_source_twice, already])
    assert [o.already_imported for o in outs] == [False, False, True, True]
    assert outs[2].segment == outs[0].segment
    assert len({o.segment for o in outs}) == 3
    reopened = Store.open(tmp_path)
    assert [s.source_name for s in reopened.segments()] == ["x.csv", "a.csv", "h.csv"]
    assert reopened.lot("H").meta.client == "k"


def test_bad_import_items(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    t = fibres(["A"], [2])
    with pytest.raises(StoreError, match="SHA-256"):
        store.import_fibres(t, {}, source_name="a.csv", source_digest="abc")
    with pytest.raises(StoreError, match="LotMeta"):
        store.import_fibres(t, {"A": LotMeta("B")}, source_name="a.csv", source_digest=sha("a"))
    empty = FibreLots((), np.zeros(1, np.int64), np.zeros(0, np.float32))
    with pytest.raises(StoreError, match="no lots"):
        store.import_fibres(empty, {}, source_name="e.csv", source_digest=sha("e"))
    with pytest.raises(StoreError, match="FibreLots"):
        store.import_fibres(histograms(["H"]), {}, source_name="h", source_digest=sha("h"))  # type: ignore[arg-type]
    assert store.import_segments([]) == []
    assert store.segments() == []
    assert list((tmp_path / "segments").iterdir()) == []


@pytest.mark.parametrize(
    ("diameters", "fibre", "match"),
    [
        ([15.0, float("nan"), 16.0], 1, "NaN"),
        ([15.0, 16.0, -5.0], 2, "<= 0"),
        ([0.015, 16.0, 15.0], 0, "millimetres"),
        ([15.0, float("inf"), 15.0], 1, "200"),
        ([15.0, 16.0, 250.0], 2, "200"),
    ],
)
def test_impossible_diameters_never_enter_the_store(tmp_path, diameters, fibre, match):
    """Raw data are never rewritten, so the store itself refuses what no fibre can measure
    (the file readers refuse it first, naming the line; this is the API's guard)."""
    store = Store.open(tmp_path)
    ok = PendingSegment(fibres(["OK"], [2]), {}, "ok.csv", sha("ok"))
    bad = FibreLots(("A", "B"), np.array([0, 1, 4]), np.array([15.0, *diameters], np.float32))
    with pytest.raises(MeasurementError, match=match) as e:
        store.import_segments([ok, PendingSegment(bad, {}, "bad.csv", sha("bad"))])
    assert (e.value.lot_id, e.value.index) == ("B", fibre)
    assert store.segments() == [] and list((tmp_path / "segments").iterdir()) == []


def test_impossible_optional_columns_never_enter_the_store(tmp_path):
    store = Store.open(tmp_path)
    d = np.full(3, 15.0, np.float32)
    for col in ("length_mm", "curvature_deg_mm"):
        bad = FibreLots(("A",), np.array([0, 3]), d, **{col: np.array([30.0, np.nan, 31.0])})
        with pytest.raises(DataModelError, match=f"fibre 1: {col} nan"):
            store.import_fibres(bad, {}, source_name="b.csv", source_digest=sha("b"))
    assert store.segments() == []


# ------------------------------------------------------------------ manifest and integrity


def test_manifest_deleted_is_rebuilt(tmp_path: Path) -> None:
    store, _ = _three_segments(tmp_path)
    lots, segs = store.lots(), store.segments()
    (tmp_path / "manifest.json").unlink()
    rebuilt = Store.open(tmp_path)
    assert rebuilt.lots() == lots and rebuilt.segments() == segs
    assert rebuilt.segments_recovered == 4
    assert not (tmp_path / "manifest.json").exists()  # opening only reads
    rebuilt.import_fibres(fibres(["new"], [1]), {}, source_name="n", source_digest=sha("n"))
    assert json.loads((tmp_path / "manifest.json").read_text())["segments"][0]["digest"] == (
        segs[0].digest
    )
    assert Store.open(tmp_path).segments_recovered == 0


def test_manifest_stale_or_garbage_is_rebuilt(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    store.import_fibres(fibres(["A"], [2]), {}, source_name="a", source_digest=sha("a"))
    old = (tmp_path / "manifest.json").read_bytes()
    store.import_fibres(fibres(["B"], [2]), {}, source_name="b", source_digest=sha("b"))
    store.import_histograms(histograms(["C"]), {}, source_name="c", source_digest=sha("c"))
    lots, segs = store.lots(), store.segments()

    (tmp_path / "manifest.json").write_bytes(old)
    stale = Store.open(tmp_path)
    assert stale.lots() == lots and stale.segments() == segs
    assert stale.segments_recovered == 2
    # a writer reconciles first: B is known, so this is a conflict, not a duplicate
    with pytest.raises(LotConflictError):
        stale.import_fibres(fibres(["B"], [1]), {}, source_name="b2", source_digest=sha("b2"))
    assert Store.open(tmp_path).segments_recovered == 0

    (tmp_path / "manifest.json").write_text("{ not json")
    assert Store.open(tmp_path).segments() == segs


def test_manifest_entry_without_file_is_corruption(tmp_path: Path) -> None:
    store, _ = _three_segments(tmp_path)
    gone = store.segments()[1]
    gone.path.unlink()
    with pytest.raises(StoreCorruptError, match=gone.digest):
        Store.open(tmp_path)
    with pytest.raises(StoreCorruptError, match="missing"):
        store.verify_segment(gone.digest)


def test_altered_segment_fails_verification(tmp_path: Path) -> None:
    store, _ = _three_segments(tmp_path)
    for seg in store.segments():
        store.verify_segment(seg.digest)
    victim = store.segments()[2]
    data = bytearray(victim.path.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.path.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptError, match=victim.digest):
        store.verify_segment(victim.digest)
    store.verify_segment(store.segments()[0].digest)
    # a altered segment that has to be indexed from its file is refused on open
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(StoreCorruptError, match="digest"):
        Store.open(tmp_path)


def test_orphans_are_removed_by_the_next_writer(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    store.import_fibres(fibres(["A"], [2]), {}, source_name="a", source_digest=sha("a"))
    store.put_result("grading", {"x": 1})
    seg_orphan = tmp_path / "segments" / ".tmp-deadbeef.h5"
    seg_orphan.write_bytes(b"half a segment")
    man_orphan = tmp_path / "manifest.json.tmp-0123"
    man_orphan.write_bytes(b"{")
    old_result = tmp_path / "results" / "grading" / ".tmp-old.json"
    old_result.write_bytes(b"{")
    os.utime(old_result, (time.time() - 7200, time.time() - 7200))
    fresh_result = tmp_path / "results" / "grading" / ".tmp-fresh.json"
    fresh_result.write_bytes(b"{")

    reader = Store.open(tmp_path)
    assert reader.lots() == store.lots()
    assert seg_orphan.exists() and man_orphan.exists()  # readers never delete

    writer = Store.open(tmp_path)
    assert writer.orphans_removed == 0
    writer.import_fibres(fibres(["B"], [2]), {}, source_name="b", source_digest=sha("b"))
    assert writer.orphans_removed == 3
    assert not seg_orphan.exists() and not man_orphan.exists() and not old_result.exists()
    assert fresh_result.exists()  # may belong to a put_result in flight
    assert [r.lot_id for r in Store.open(tmp_path).lots()] == ["A", "B"]


_HOLD_LOCK = """
import fcntl, sys, time
fd = open(sys.argv[1], "a")
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.readline()
"""


def lock_holder(lock: Path) -> subprocess.Popen:
    """Another process holding ``flock`` on ``lock`` until a line arrives on its stdin."""
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(lock)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "locked"
    return child


def test_concurrent_writer_gets_store_locked(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    store.import_fibres(fibres(["A"], [2]), {}, source_name="a", source_digest=sha("a"))
    before = files_under(tmp_path)
    child = lock_holder(tmp_path / ".lock")
    try:
        store.lock_wait_s = 0.3  # a writer waits this long for the other to finish
        with pytest.raises(StoreLockedError, match=r"another process .* held for over 0\.3 s"):
            store.import_fibres(fibres(["B"], [2]), {}, source_name="b", source_digest=sha("b"))
        assert files_under(tmp_path) == before
        # readers do not need the lock
        assert [r.lot_id for r in Store.open(tmp_path).lots()] == ["A"]
    finally:
        child.communicate("\n", timeout=10)
    store.import_fibres(fibres(["B"], [2]), {}, source_name="b", source_digest=sha("b"))
    assert [r.lot_id for r in store.lots()] == ["A", "B"]


def test_lock_is_per_open_file_even_in_one_process(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    store.lock_wait_s = 0.1
    with open(tmp_path / ".lock", "a") as fd:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(StoreLockedError):
            store.import_histograms(histograms(["H"]), {}, source_name="h", source_digest=sha("h"))
    store.import_histograms(histograms(["H"]), {}, source_name="h", source_digest=sha("h"))


def test_refresh_sees_other_writers(tmp_path: Path) -> None:
    a = Store.open(tmp_path)
    b = Store.open(tmp_path)
    b.import_fibres(fibres(["B"], [2]), {}, source_name="b", source_digest=sha("b"))
    assert a.lots() == []
    a.refresh()
    assert [r.lot_id for r in a.lots()] == ["B"]


# ------------------------------------------------------------------ results


def test_results_put_get_list(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    p1 = {"created_at": "2024-05-02T00:00:00Z", "lot": "L1", "mfd_um": 15.5, "note": "Ölzii"}
    p2 = {"created_at": "2024-05-01T00:00:00Z", "lot": "L2", "mfd_um": 16.0}
    d1 = store.put_result("grading", p1)
    d2 = store.put_result("grading", p2)
    assert store.put_result("grading", dict(reversed(list(p1.items())))) == d1  # idempotent
    path = tmp_path / "results" / "grading" / f"{d1}.json"
    canonical = json.dumps(p1, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert path.read_bytes() == canonical.encode("utf-8")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == d1
    assert len(list(path.parent.iterdir())) == 2
    assert store.get_result("grading", d1) == p1
    assert store.results("grading") == [(d2, p2), (d1, p1)]
    assert Store.open(tmp_path).results("grading") == [(d2, p2), (d1, p1)]
    assert store.results("certificates") == []


_json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
_json_value = st.recursive(
    _json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    head=st.dictionaries(st.text(max_size=8), _json_value, max_size=5),
    lots=st.lists(st.dictionaries(st.text(max_size=6), _json_value, max_size=5), max_size=6),
)
def test_a_result_joined_from_canonical_parts_is_the_whole_serialised_at_once(head, lots):
    from fibergrade.audit import canonical_json
    from fibergrade.store import _canonical_json

    head.pop("lots", None)
    joined = b"[" + b",".join(canonical_json(x) for x in lots) + b"]"
    assert _canonical_json(head, {"lots": joined}) == canonical_json(head | {"lots": lots})


def test_a_result_stored_from_parts_has_the_digest_of_the_whole(tmp_path: Path) -> None:
    from fibergrade.audit import canonical_json

    store = Store.open(tmp_path)
    lots = [{"lot_id": "L2", "mfd_um": 15.25, "criteria": [{"op": "<=", "passed": True}]}]
    head = {"kind": "grade", "created_at": "2026-11-22T00:00:00+00:00"}
    name = store.put_result("grade", head, canonical={"lots": canonical_json(lots)})
    assert name == store.put_result("grade", head | {"lots": lots})  # the same record
    assert store.get_result("grade", name) == head | {"lots": lots}
    with pytest.raises(StoreError, match="given twice"):
        store.put_result("grade", head | {"lots": []}, canonical={"lots": b"[]"})


def test_result_errors(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    with pytest.raises(StoreError, match="not a valid name"):
        store.put_result("../escape", {})
    with pytest.raises(StoreError, match="canonical JSON"):
        store.put_result("grading", {"x": float("nan")})
    with pytest.raises(StoreError, match="canonical JSON"):
        store.put_result("grading", {"x": object()})
    # a grading task serialising its lots' parts on a worker says it in the same words
    from fibergrade.audit import canonical_json
    from fibergrade.store import result_json_errors

    with (
        pytest.raises(StoreError, match=r"^grade result is not representable as canonical"),
        result_json_errors("grade"),
    ):
        canonical_json({"mfd_um": float("inf")})
    with pytest.raises(StoreError, match="no grading result"):
        store.get_result("grading", "0" * 64)
    with pytest.raises(StoreError, match="not a SHA-256"):
        store.get_result("grading", "../../x")
    d = store.put_result("grading", {"x": 1})
    (tmp_path / "results" / "grading" / f"{d}.json").write_text('{"x":2}')
    with pytest.raises(StoreCorruptError):
        store.get_result("grading", d)
    with pytest.raises(StoreCorruptError):
        store.results("grading")


def test_read_lot_reads_only_that_lots_rows_and_matches_a_full_read(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    sizes = [5, 0, 7, 3]
    off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    n = int(off[-1])
    fib = FibreLots(
        ("a", "b", "c", "d"),
        off,
        rng.uniform(10, 40, n).astype(np.float32),
        curvature_deg_mm=rng.uniform(30, 90, n).astype(np.float32),
        medullated=rng.random(n) < 0.2,
    )
    hist = HistogramLots(("h1", "h2"), np.array([0, 2, 3]), [14, 15, 20], [15, 16, 21], [4, 6, 1])
    store = Store.open(tmp_path / "s")
    store.import_fibres(fib, {}, source_name="f.csv", source_digest="1" * 64)
    store.import_histograms(hist, {}, source_name="h.csv", source_digest="2" * 64)
    for lot in ("a", "b", "c", "d"):
        one, full = store.read_lot(lot), store.read_fibres([lot])
        assert one.lot_ids == (lot,)
        for col in ("offsets", "diameter_um", "curvature_deg_mm", "medullated"):
            np.testing.assert_array_equal(getattr(one, col), getattr(full, col))
    one = store.read_lot("h2")
    assert one.lot_ids == ("h2",) and one.counts.tolist() == [1] and one.lower_um.tolist() == [20]
    with pytest.raises(LotNotFoundError):
        store.read_lot("zz")


def _maps_a_file(arr: np.ndarray) -> bool:
    base = arr
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    return isinstance(base, mmap.mmap)


def test_a_mapped_read_is_the_copied_read_and_cannot_be_written(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s")
    table = fibres(["A", "B", "C"], [40, 0, 25], seed=3, optional=True)
    out = store.import_fibres(table, {}, source_name="m.csv", source_digest=sha("m"))
    path = store.segment_path(out.segment)
    copied = read_segment_file(path)
    mapped = read_segment_file(path, mapped=True)
    assert_same_fibres(mapped, copied)
    assert_same_fibres(mapped, table)
    for col in ("diameter_um", "length_mm", "curvature_deg_mm"):
        arr = getattr(mapped, col)
        assert _maps_a_file(arr), col
        assert not arr.flags.writeable, col
        with pytest.raises(ValueError, match="read-only"):
            arr[0] = 1.0
    assert mapped.medullated is not None and mapped.medullated.flags.writeable  # a copy
    # the stored bytes are untouched by reading, mapped or not
    assert sha256_file(path) == out.segment
    # one lot is a hyperslab read, never a map
    one = read_segment_file(path, 2, mapped=True)
    assert one.diameter_um.flags.writeable
    np.testing.assert_array_equal(one.diameter_um, lot_slice(table, "C"))


def _rewrite_datasets(src: Path, dst: Path, **create: object) -> None:
    """Copy a segment file, re-creating every dataset with ``create`` options."""
    with h5py.File(src, "r") as f, h5py.File(dst, "w") as g:
        for k, v in f.attrs.items():
            g.attrs[k] = v

        def copy(name: str, obj: object) -> None:
            if isinstance(obj, h5py.Dataset):
                g.create_dataset(name, data=obj[()], dtype=obj.dtype, **create)

        f.visititems(copy)


@pytest.mark.parametrize(
    "create",
    [
        {"chunks": True, "compression": "gzip"},  # chunked and filtered: not mappable
        {"chunks": True},  # chunked
    ],
    ids=["gzip", "chunked"],
)
def test_a_segment_that_cannot_be_mapped_is_read_by_copy(tmp_path: Path, create: dict) -> None:
    store = Store.open(tmp_path / "s")
    table = fibres(["A", "B"], [30, 20], seed=4, optional=True)
    out = store.import_fibres(table, {}, source_name="g.csv", source_digest=sha("g"))
    other = tmp_path / "rewritten.h5"
    _rewrite_datasets(store.segment_path(out.segment), other, **create)
    mapped = read_segment_file(other, mapped=True)
    assert_same_fibres(mapped, table)
    assert mapped.diameter_um.flags.writeable and not _maps_a_file(mapped.diameter_um)


def test_a_big_endian_diameter_column_is_converted_not_mapped(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s")
    table = fibres(["A"], [50], seed=5, optional=False)
    out = store.import_fibres(table, {}, source_name="b.csv", source_digest=sha("b"))
    src, other = store.segment_path(out.segment), tmp_path / "big-endian.h5"
    with h5py.File(src, "r") as f, h5py.File(other, "w") as g:
        for k, v in f.attrs.items():
            g.attrs[k] = v
        f.copy("lots", g)
        g.create_dataset("fibres/diameter_um", data=f["fibres/diameter_um"][()].astype(">f4"))
    mapped = read_segment_file(other, mapped=True)
    assert mapped.diameter_um.dtype == np.float32 and mapped.diameter_um.dtype.isnative
    np.testing.assert_array_equal(mapped.diameter_um, table.diameter_um)


def test_a_truncated_segment_is_refused_not_mapped_past_its_end(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s")
    table = fibres(["A"], [4000], seed=6, optional=False)
    out = store.import_fibres(table, {}, source_name="t.csv", source_digest=sha("t"))
    cut = tmp_path / "cut.h5"
    data = store.segment_path(out.segment).read_bytes()
    with h5py.File(store.segment_path(out.segment), "r") as f:
        end = f["fibres/diameter_um"].id.get_offset() + 4000 * 4
    cut.write_bytes(data[: end - 8])  # the diameters' last two values are gone
    with pytest.raises(StoreCorruptError, match=r"cut\.h5"):
        read_segment_file(cut, mapped=True)


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_summarise_lots_across_segments_in_any_order_matches_each_table(
    tmp_path: Path, engine: str
) -> None:
    from fibergrade.distribution import summarise, summarise_histograms
    from fibergrade.workflow import summarise_lots

    store, _ = _three_segments(tmp_path)
    by_id = {r.lot_id: r for r in store.lots()}
    order = ["c1", "a2", "h1", "b2", "a1", "b1", "a3"]
    got = summarise_lots(store, [by_id[x] for x in order], 30.0, engine)  # type: ignore[arg-type]
    assert got.lot_ids == tuple(order)
    for i, lot in enumerate(order):
        table = store.read_lot(lot)
        one = (
            summarise(table, 30.0, engine=engine)  # type: ignore[arg-type]
            if isinstance(table, FibreLots)
            else summarise_histograms(table, 30.0)
        )
        np.testing.assert_array_equal(got.histogram[i], one.histogram[0])
        assert got.n[i] == one.n[0]
        for f, col in got.figures.items():
            np.testing.assert_allclose(col[i], one.figures[f][0], rtol=1e-12, err_msg=f)


def test_summarise_lots_raises_the_error_of_an_unreadable_segment(tmp_path: Path) -> None:
    from fibergrade.workflow import summarise_lots

    store, _ = _three_segments(tmp_path)
    lots = store.lots()
    broken = store.segment_path(store.segments()[2].digest)
    broken.chmod(0o600)
    broken.write_bytes(b"not an HDF5 file")
    with pytest.raises(StoreCorruptError, match=re.escape(broken.name)):
        summarise_lots(store, lots, 30.0, "fast")


def test_a_manifest_that_moves_lots_is_refused_not_read(tmp_path: Path) -> None:
    """The manifest says at which index a lot lives, but it is an unsigned cache: swapping
    two lots' entries would grade (and certify) one lot's fibres under the other's id. Every
    read checks the ids the segment itself holds; removing the manifest rebuilds it."""
    from fibergrade.cluster import InProcess
    from fibergrade.workflow import grade_lots

    store = Store.open(tmp_path)
    table = fibres(["A", "B", "C"], [50, 60, 70], seed=3, optional=False)
    store.import_fibres(table, {}, source_name="run.csv", source_digest=sha("run"))
    path = tmp_path / "manifest.json"
    doc = json.loads(path.read_text())
    lots = doc["segments"][0]["lots"]
    lots[0], lots[2] = lots[2], lots[0]
    path.write_text(json.dumps(doc))
    swapped = Store.open(tmp_path, create=False)
    with pytest.raises(StoreCorruptError, match=r"index 0 holds lot 'A'.*says lot 'C'"):
        swapped.read_lot("C")
    with pytest.raises(StoreCorruptError, match=r"manifest\.json was altered"):
        swapped.read_fibres(["C", "B"])
    with pytest.raises(StoreCorruptError, match=r"manifest\.json was altered"):
        grade_lots(swapped, ["C"], record=False, uncalibrated=True, executor=InProcess())
    assert swapped.read_lot("B").n_lots == 1  # a lot left where it was still reads
    path.unlink()
    rebuilt = Store.open(tmp_path, create=False)
    assert_same_fibres(rebuilt.read_fibres(["A", "B", "C"]), table)


def test_a_writer_waits_for_a_short_lock_instead_of_failing(tmp_path: Path) -> None:
    """A segment commit holds the lock for milliseconds: a live acquisition or a second
    import waits for it (a review saw an acquisition abort on another process's import)."""
    store = Store.open(tmp_path)
    child = lock_holder(tmp_path / ".lock")
    try:
        import threading

        def let_go() -> None:
            assert child.stdin is not None
            child.stdin.write("\n")
            child.stdin.flush()

        threading.Timer(0.3, let_go).start()
        store.import_fibres(fibres(["W"], [2]), {}, source_name="w", source_digest=sha("w"))
    finally:
        child.communicate(timeout=10)
    assert [r.lot_id for r in store.lots()] == ["W"]


def test_the_latest_grade_is_the_last_run_even_within_one_second(tmp_path: Path) -> None:
    """Results are ordered by ``created_at``: to the second, two runs in one second were
    ordered by digest, and certify could use the older grade."""
    from fibergrade.workflow import grade_lots, latest_grades

    store = Store.open(tmp_path)
    store.import_fibres(
        fibres(["G"], [300], seed=4, optional=False), {}, source_name="g", source_digest=sha("g")
    )
    for _ in range(3):
        for std in ("us-wpla-cashmere", "gb18267-cashmere"):
            run = grade_lots(store, ["G"], std, uncalibrated=True, screen=False)
            assert latest_grades(store)["G"]["standard"]["id"] == std
            assert latest_grades(store)["G"]["result_id"] == run.result_id
