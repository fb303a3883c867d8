"""The distribution core: per-lot diameter statistics for all lots in one call.

Definitions follow ``shared/reference/fibre.md`` ("Statistics a certificate reports"):

* ``n``: fibre snippets measured; ``mfd_um``: mean fibre diameter; ``sd_um``: sample SD
  (divisor n - 1); ``cv_pct = 100 * SD / MFD``.
* ``cf_pct``: comfort factor, % of fibres (by count) with d <= ``cut_um`` (default 30.0 um,
  a parameter because some labs cut at 30.5); ``pf_pct = 100 - cf_pct``.
* ``coarse_count_pct``: % of fibres with d > cut (equal to PF by definition);
  ``coarse_mass_pct = 100 * sum(d^2 for d > cut) / sum(d^2)``: snippet counts are
  length-biased, so mass per snippet ~ d^2 (Peterson & Gherardi 1996).
* ``sf_um``: spinning fineness ``0.881 * MFD * sqrt(1 + 5 (CV/100)^2)`` (Butler & Dolling;
  the reference marks the primary text as not found). It equals MFD at CV = 24 % to the
  precision of the 0.881 constant (0.881 * sqrt(1.288) = 0.99985).
* curvature mean / SD (deg/mm), medullated %, mean length (mm) where those columns exist.
* ``histogram``: counts in 1-um classes ``[k, k+1)`` for k = 0 .. 199, the last class closed
  at 200 um (Laserscan reports 1-um classes, IWTO-12).

Percentiles (P5, P50, P95) are read from a fine internal histogram of 0.1-um classes: the
value at which the cumulative count reaches q*n, interpolated linearly within its class and
kept within [min, max]. They are therefore *binned* figures, good to well under 0.1 um;
every other per-fibre figure is exact (float64 accumulation).

Outcomes for awkward lots (never a silent NaN):

* an empty lot (no fibres) has ``status = "empty"``; every figure is undefined;
* a lot of one fibre has ``status = "single-fibre"``; SD, CV, SF and curvature SD are
  undefined (the sample SD needs n >= 2); the rest are defined;
* otherwise ``status = "ok"``.

Undefined figures are NaN in the arrays of :class:`LotSummary` and ``None`` in
:meth:`LotSummary.to_records` (and so ``null`` in JSON); ``status`` says why. A NaN, a
diameter <= 0 or > 200 um, or one below 1 um (a millimetre value) in the input is not a
figure but an error: :class:`~fibergrade.errors.MeasurementError` names the lot and fibre.

Histogram-only lots (instruments that report counts per class) are graded from class
mid-points: every figure except ``n`` is then binned, and :attr:`LotSummary.binned` says so.

Two implementations compute the same figures: :func:`summarise_reference` (readable numpy,
the specification) and the fused kernel in :mod:`fibergrade.kernel` (one pass, numba).
:func:`summarise` picks one; tests hold them to agreement.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from fibergrade.errors import DataModelError, MeasurementError
from fibergrade.measurements import (
    DIAMETER_MAX_UM,
    FibreLots,
    HistogramLots,
    class_grid_problem,
    diameter_problem,
    impossible_diameters,
    off_grid_classes,
)

#: default comfort-factor cut, um (fibre.md: "make the cut a parameter, default 30.0")
DEFAULT_CUT_UM = 30.0
#: width of the internal classes used for percentiles, um
FINE_CLASS_UM = 0.1
#: number of internal classes over 0 .. 200 um
N_FINE = 2000
#: internal classes per reported 1-um class
FINE_PER_REPORT = 10
#: number of reported 1-um classes over 0 .. 200 um
N_REPORT = 200
#: the percentiles reported
QUANTILES = (0.05, 0.50, 0.95)
#: spinning-fineness constant (fibre.md)
SF_FACTOR = 0.881

Engine = Literal["fast", "reference"]

#: figures computed for every lot, in the column order the kernel writes
FIGURES = (
    "mfd_um",
    "sd_um",
    "cv_pct",
    "min_um",
    "max_um",
    "p5_um",
    "p50_um",
    "p95_um",
    "cf_pct",
    "pf_pct",
    "coarse_count_pct",
    "coarse_mass_pct",
    "sf_um",
    "curvature_mean_deg_mm",
    "curvature_sd_deg_mm",
    "medullated_pct",
    "length_mean_mm",
)

#: figures that are binned estimates rather than exact, by basis
BINNED = {
    "fibres": ("p5_um", "p50_um", "p95_um"),
    "histogram": tuple(
        f
        for f in FIGURES
        if f
        not in ("curvature_mean_deg_mm", "curvature_sd_deg_mm", "medullated_pct", "length_mean_mm")
    ),
}


@dataclass
class LotSummary:
    """Per-lot figures for many lots, one array per figure (all of length ``n_lots``)."""

    lot_ids: tuple[str, ...]
    n: np.ndarray  # int64
    figures: dict[str, np.ndarray]  # float64, NaN where undefined (see ``status``)
    histogram: np.ndarray  # int64[lots, 200], 1-um classes
    basis: np.ndarray  # "fibres" | "histogram" per lot
    cut_um: float = DEFAULT_CUT_UM
    status: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        n = self.n
        self.status = np.where(n == 0, "empty", np.where(n == 1, "single-fibre", "ok"))

    @property
    def n_lots(self) -> int:
        return len(self.lot_ids)

    def __getitem__(self, figure: str) -> np.ndarray:
        if figure == "n":
            return self.n.astype(np.float64)
        return self.figures[figure]

    def index(self, lot_id: str) -> int:
        return self.lot_ids.index(lot_id)

    def select(self, indices: Any) -> LotSummary:
        idx = np.asarray(indices, dtype=np.int64)
        return LotSummary(
            lot_ids=tuple(self.lot_ids[i] for i in idx.tolist()),
            n=self.n[idx],
            figures={k: v[idx] for k, v in self.figures.items()},
            histogram=self.histogram[idx],
            basis=self.basis[idx],
            cut_um=self.cut_um,
        )

    @staticmethod
    def concat(parts: list[LotSummary], histogram: np.ndarray | None = None) -> LotSummary:
        """Join summaries end to end. ``histogram``: the parts' histograms already joined
        (each part's histogram a view of its rows, see :func:`summarise`), not copied again.
        """
        if not parts:
            return _empty_summary(DEFAULT_CUT_UM)
        cuts = {p.cut_um for p in parts}
        if len(cuts) != 1:
            raise DataModelError(f"cannot join summaries made with different cuts: {cuts}")
        if histogram is None:
            histogram = np.concatenate([p.histogram for p in parts])
        elif histogram.shape != (sum(p.n_lots for p in parts), N_REPORT):
            raise DataModelError(
                f"joined histogram has shape {histogram.shape}; the parts hold "
                f"{sum(p.n_lots for p in parts)} lots of {N_REPORT} classes"
            )
        return LotSummary(
            lot_ids=tuple(itertools.chain.from_iterable(p.lot_ids for p in parts)),
            n=np.concatenate([p.n for p in parts]),
            figures={f: np.concatenate([p.figures[f] for p in parts]) for f in FIGURES},
            histogram=histogram,
            basis=np.concatenate([p.basis for p in parts]),
            cut_um=parts[0].cut_um,
        )

    def to_records(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per lot; undefined figures are None (see module docs)."""
        cols = {f: [None if v != v else v for v in self.figures[f].tolist()] for f in FIGURES}
        n = self.n.tolist()
        status = self.status.tolist()
        basis = self.basis.tolist()
        binned = {b: list(BINNED[b]) for b in BINNED}
        nz = self.histogram != 0
        any_nz = nz.any(axis=1)
        first = np.where(any_nz, nz.argmax(axis=1), 0).tolist()
        last = np.where(any_nz, N_REPORT - nz[:, ::-1].argmax(axis=1), 0).tolist()
        out = []
        for i, lot_id in enumerate(self.lot_ids):
            rec: dict[str, Any] = {"lot_id": lot_id, "n": n[i]}
            for f in FIGURES:
                rec[f] = cols[f][i]
            rec["status"] = status[i]
            rec["basis"] = basis[i]
            rec["binned"] = list(binned[basis[i]])
            rec["cut_um"] = self.cut_um
            lo, hi = first[i], last[i]
            rec["histogram"] = {
                "class_um": 1.0,
                "first_lower_um": float(lo) if hi > lo else None,
                "counts": self.histogram[i, lo:hi].tolist(),
            }
            out.append(rec)
        return out


def _empty_summary(cut_um: float) -> LotSummary:
    return LotSummary(
        lot_ids=(),
        n=np.zeros(0, np.int64),
        figures={f: np.zeros(0, np.float64) for f in FIGURES},
        histogram=np.zeros((0, N_REPORT), np.int64),
        basis=np.zeros(0, dtype="<U9"),
        cut_um=cut_um,
    )


def _check_cut(cut_um: float) -> float:
    cut = float(cut_um)
    if not (0.0 < cut < DIAMETER_MAX_UM):
        raise DataModelError(f"cut_um must lie in (0, {DIAMETER_MAX_UM:g}) um, got {cut_um!r}")
    return cut


def _raise_first_bad(lots: FibreLots, bad_mask: np.ndarray) -> None:
    """Raise MeasurementError for the first flagged fibre (in storage order)."""
    first = int(np.flatnonzero(bad_mask)[0])
    lot = int(np.searchsorted(lots.offsets, first, side="right") - 1)
    value = float(lots.diameter_um[first])
    reason = diameter_problem(value) or "is out of range"
    raise MeasurementError(lots.lot_ids[lot], first - int(lots.offsets[lot]), value, reason)


def check_optional_columns(lots: FibreLots) -> None:
    """Refuse NaN or negative optional measurements (never guessed, never clipped)."""
    for name, col in (("length_mm", lots.length_mm), ("curvature_deg_mm", lots.curvature_deg_mm)):
        if col is None:
            continue
        bad = ~(np.isfinite(col) & (col >= 0))
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            lot = int(np.searchsorted(lots.offsets, first, side="right") - 1)
            raise DataModelError(
                f"lot {lots.lot_ids[lot]!r}, fibre {first - int(lots.offsets[lot])}: "
                f"{name} {float(col[first])!r} is not a finite, non-negative value"
            )


def derive(
    n: np.ndarray,
    mfd: np.ndarray,
    sd: np.ndarray,
    n_le_cut: np.ndarray,
    mass_gt: np.ndarray,
    mass_le: np.ndarray,
) -> dict[str, np.ndarray]:
    """Figures derived from the accumulated ones (shared by every implementation).

    ``mass_gt`` and ``mass_le`` are the sums of d^2 above and at-or-below the cut; dividing
    by their sum keeps the coarse share within 0..100 % under any summation order.
    """
    nf = n.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        cv = 100.0 * sd / mfd
        cf = 100.0 * (n_le_cut / nf)
        mass = 100.0 * (mass_gt / (mass_gt + mass_le))
        sf = SF_FACTOR * mfd * np.sqrt(1.0 + 5.0 * (cv / 100.0) ** 2)
    return {
        "cv_pct": cv,
        "cf_pct": cf,
        "pf_pct": 100.0 - cf,
        "coarse_count_pct": 100.0 - cf,
        "coarse_mass_pct": mass,
        "sf_um": sf,
    }


def quantiles_from_fine(fine: np.ndarray, n: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> list:
    """P5/P50/P95 from 0.1-um class counts ``fine[lots, 2000]`` (see module docs)."""
    cum = np.cumsum(fine, axis=1)
    rows = np.arange(fine.shape[0])
    out = []
    for q in QUANTILES:  # three quantiles, not a loop over lots
        target = q * n.astype(np.float64)
        k = np.minimum((cum < target[:, None]).sum(axis=1), N_FINE - 1)
        h = fine[rows, k].astype(np.float64)
        before = (cum[rows, k] - fine[rows, k]).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            p = (k + (target - before) / h) * FINE_CLASS_UM
        p = np.minimum(np.maximum(p, lo), hi)
        out.append(np.where(n > 0, p, np.nan))
    return out


def check_fibres(lots: FibreLots) -> None:
    """Refuse the first physically impossible measurement of any lot: a diameter that is
    NaN, infinite, below :data:`~fibergrade.measurements.MM_SUSPECT_BELOW_UM` (millimetres
    or <= 0) or above :data:`~fibergrade.measurements.DIAMETER_MAX_UM`
    (:class:`MeasurementError`, naming lot and fibre), or a NaN or negative optional column
    (:class:`DataModelError`). Nothing is clipped or guessed."""
    bad = impossible_diameters(lots.diameter_um)
    if bad.any():
        _raise_first_bad(lots, bad)
    check_optional_columns(lots)


def summarise_reference(lots: FibreLots, cut_um: float = DEFAULT_CUT_UM) -> LotSummary:
    """Readable numpy specification of every per-fibre figure, all lots in one call."""
    cut = _check_cut(cut_um)
    check_fibres(lots)
    n_lots = lots.n_lots
    if n_lots == 0:
        return _empty_summary(cut)
    d = lots.diameter_um.astype(np.float64)
    n = np.diff(lots.offsets)
    lot_of = np.repeat(np.arange(n_lots), n)

    def per_lot(w: np.ndarray) -> np.ndarray:
        return np.bincount(lot_of, weights=w, minlength=n_lots)

    with np.errstate(invalid="ignore", divide="ignore"):
        mfd = per_lot(d) / n
        dev = d - mfd[lot_of]
        sd = np.sqrt(per_lot(dev * dev) / (n - 1))
    sd[n < 2] = np.nan
    mfd[n < 1] = np.nan

    lo = np.full(n_lots, np.nan)
    hi = np.full(n_lots, np.nan)
    has = n > 0
    starts = lots.offsets[:-1][has]
    lo[has] = np.minimum.reduceat(d, starts)
    hi[has] = np.maximum.reduceat(d, starts)

    d2 = d * d
    figures = {"mfd_um": mfd, "sd_um": sd, "min_um": lo, "max_um": hi}
    figures.update(
        derive(
            n,
            mfd,
            sd,
            per_lot((d <= cut).astype(np.float64)),
            per_lot(d2 * (d > cut)),
            per_lot(d2 * (d <= cut)),
        )
    )

    fine_class = np.minimum((d * (1.0 / FINE_CLASS_UM)).astype(np.int64), N_FINE - 1)
    fine = np.bincount(lot_of * N_FINE + fine_class, minlength=n_lots * N_FINE)
    fine = fine.reshape(n_lots, N_FINE)
    figures["p5_um"], figures["p50_um"], figures["p95_um"] = quantiles_from_fine(fine, n, lo, hi)
    histogram = fine.reshape(n_lots, N_REPORT, FINE_PER_REPORT).sum(axis=2)

    nan = np.full(n_lots, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        if lots.curvature_deg_mm is not None:
            c = lots.curvature_deg_mm.astype(np.float64)
            cmean = per_lot(c) / n
            cdev = c - cmean[lot_of]
            csd = np.sqrt(per_lot(cdev * cdev) / (n - 1))
            csd[n < 2] = np.nan
            cmean[n < 1] = np.nan
        else:
            cmean, csd = nan, nan.copy()
        if lots.medullated is not None:
            med = 100.0 * per_lot(lots.medullated.astype(np.float64)) / n
            med[n < 1] = np.nan
        else:
            med = nan.copy()
        if lots.length_mm is not None:
            length = per_lot(lots.length_mm.astype(np.float64)) / n
            length[n < 1] = np.nan
        else:
            length = nan.copy()
    figures.update(
        curvature_mean_deg_mm=cmean,
        curvature_sd_deg_mm=csd,
        medullated_pct=med,
        length_mean_mm=length,
    )
    return LotSummary(
        lot_ids=lots.lot_ids,
        n=n.astype(np.int64),
        figures={f: np.asarray(figures[f], dtype=np.float64) for f in FIGURES},
        histogram=histogram.astype(np.int64),
        basis=np.full(n_lots, "fibres"),
        cut_um=cut,
    )


def summarise(
    lots: FibreLots,
    cut_um: float = DEFAULT_CUT_UM,
    *,
    engine: Engine = "fast",
    histogram_out: np.ndarray | None = None,
    parallel: bool = True,
) -> LotSummary:
    """Per-lot figures of every lot in ``lots``; ``engine`` picks the implementation.

    ``histogram_out`` (int64, lots x 200), when given, receives the 1-um histogram and
    becomes the summary's ``histogram``: the fast kernel counts straight into it, so a caller
    joining many tables (:func:`fibergrade.workflow.summarise_lots`) copies nothing.
    ``parallel`` False runs the fast kernel in the calling thread only (it releases the GIL),
    for a caller that runs several tables at once in threads of its own.
    """
    if engine == "reference":
        return _histogram_into(summarise_reference(lots, cut_um), histogram_out)
    if engine != "fast":
        raise DataModelError(f"unknown engine {engine!r}; expected 'fast' or 'reference'")
    from fibergrade.kernel import summarise_fast  # numba is imported only when needed

    return summarise_fast(lots, cut_um, histogram_out=histogram_out, parallel=parallel)


def check_histogram_out(out: np.ndarray, n_lots: int) -> np.ndarray:
    """``out`` if it can hold the 1-um histograms of ``n_lots`` lots, else a clear error."""
    if out.shape != (n_lots, N_REPORT) or out.dtype != np.int64 or not out.flags.c_contiguous:
        raise DataModelError(
            f"histogram_out must be a C-contiguous int64 array of shape ({n_lots}, "
            f"{N_REPORT}); got {out.dtype} {out.shape}"
        )
    return out


def histogram_buffer(out: np.ndarray | None, n_lots: int) -> np.ndarray:
    """Zeroed 1-um class counts for ``n_lots`` lots to count into: ``out`` when given."""
    if out is None:
        return np.zeros((n_lots, N_REPORT), np.int64)
    check_histogram_out(out, n_lots).fill(0)
    return out


def _histogram_into(summary: LotSummary, out: np.ndarray | None) -> LotSummary:
    if out is not None:
        check_histogram_out(out, summary.n_lots)[...] = summary.histogram
        summary.histogram = out
    return summary


def summarise_histograms(
    hist: HistogramLots, cut_um: float = DEFAULT_CUT_UM, histogram_out: np.ndarray | None = None
) -> LotSummary:
    """Per-lot figures from counts per class, all lots in one call (binned figures).

    A class ``[lower, upper)`` stands for its count of fibres spread evenly over it: MFD and
    SD come from class mid-points (no Sheppard correction); a class straddling the cut is
    split in proportion; min and max are the bounds of the outer non-empty classes. To
    report the 1-um histogram, every class must lie within one 1-um class (1-um classes as
    Laserscan and OFDA report them, or finer); a wider class is refused, not spread.
    """
    cut = _check_cut(cut_um)
    n_lots = hist.n_lots
    if n_lots == 0:
        return _empty_summary(cut)
    lower, upper, c = hist.lower_um, hist.upper_um, hist.counts.astype(np.float64)
    report_class = np.floor(lower).astype(np.int64)
    off_grid = np.flatnonzero(off_grid_classes(lower, upper))  # the readers' rule too
    if off_grid.size:
        k = int(off_grid[0])
        lot = int(np.searchsorted(hist.offsets, k, side="right") - 1)
        raise DataModelError(
            f"lot {hist.lot_ids[lot]!r}: {class_grid_problem(float(lower[k]), float(upper[k]))}; "
            "histogram lots need 1-um classes (or finer) on whole micrometres"
        )
    classes = np.diff(hist.offsets)
    lot_of = np.repeat(np.arange(n_lots), classes)

    def per_lot(w: np.ndarray) -> np.ndarray:
        return np.bincount(lot_of, weights=w, minlength=n_lots)

    n = per_lot(c).round().astype(np.int64)
    mid = 0.5 * (lower + upper)
    with np.errstate(invalid="ignore", divide="ignore"):
        mfd = per_lot(c * mid) / n
        dev = mid - mfd[lot_of]
        sd = np.sqrt(per_lot(c * dev * dev) / (n - 1))
    sd[n < 2] = np.nan
    mfd[n < 1] = np.nan
    # share of each class at or below the cut (uniform within the class)
    fine_share = np.clip((cut - lower) / (upper - lower), 0.0, 1.0)
    # mass ~ d^2 integrated over the part of the class above the cut
    a = np.maximum(lower, cut)
    above = upper > cut
    mass_gt = np.where(above, c * (upper**3 - a**3) / (3.0 * (upper - lower)), 0.0)
    b = np.minimum(upper, cut)
    mass_le = np.where(lower < cut, c * (b**3 - lower**3) / (3.0 * (upper - lower)), 0.0)
    figures = {"mfd_um": mfd, "sd_um": sd}
    figures.update(derive(n, mfd, sd, per_lot(c * fine_share), per_lot(mass_gt), per_lot(mass_le)))

    # outer non-empty classes
    nonempty = c > 0
    lo = np.full(n_lots, np.nan)
    hi = np.full(n_lots, np.nan)
    idx = np.flatnonzero(nonempty)
    if idx.size:
        lots_ne = lot_of[idx]
        first = np.full(n_lots, -1)
        last = np.full(n_lots, -1)
        first[lots_ne[::-1]] = idx[::-1]
        last[lots_ne] = idx
        has = first >= 0
        lo[has] = lower[first[has]]
        hi[has] = upper[last[has]]
    figures["min_um"], figures["max_um"] = lo, hi

    # percentiles: first class whose within-lot cumulative count reaches q*n
    cum = np.cumsum(c)
    before_lot = np.concatenate([[0.0], cum])[hist.offsets[:-1]]
    cum_in = cum - before_lot[lot_of]
    span = float(n.max()) + 1.0
    key = lot_of * span + cum_in
    for name, q in zip(("p5_um", "p50_um", "p95_um"), QUANTILES, strict=True):
        target = q * n
        k = np.searchsorted(key, np.arange(n_lots) * span + target, side="left")
        k = np.minimum(k, max(lower.size - 1, 0))
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = (target - (cum_in[k] - c[k])) / c[k]
            p = lower[k] + frac * (upper[k] - lower[k])
        figures[name] = np.where(n > 0, np.minimum(np.maximum(p, lo), hi), np.nan)

    histogram = histogram_buffer(histogram_out, n_lots)
    np.add.at(histogram, (lot_of, np.minimum(report_class, N_REPORT - 1)), hist.counts)
    nan = np.full(n_lots, np.nan)
    for f in ("curvature_mean_deg_mm", "curvature_sd_deg_mm", "medullated_pct", "length_mean_mm"):
        figures[f] = nan.copy()
    return LotSummary(
        lot_ids=hist.lot_ids,
        n=n,
        figures={f: np.asarray(figures[f], dtype=np.float64) for f in FIGURES},
        histogram=histogram,
        basis=np.full(n_lots, "histogram"),
        cut_um=cut,
    )
