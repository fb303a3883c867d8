"""Writers of the project's interchange CSV formats (the demo and tests write real files).

The formats are documented in :mod:`fibergrade.adapters.interchange`; what is written here
reads back through those readers. Formatting is vectorised with numpy (no Python loop over
fibres).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from fibergrade.measurements import FibreLots, HistogramLots, LotMeta

MANIFEST_COLUMNS = (
    "lot_id",
    "declared_type",
    "origin",
    "client",
    "region",
    "gi_code",
    "instrument_id",
    "received_at",
    "measured_at",
)


def fixed_decimals(values: np.ndarray, decimals: int) -> np.ndarray:
    """Format non-negative numbers with a fixed number of decimals, vectorised.

    Equivalent to ``"%.{decimals}f" % v`` for each value, but through integer ufuncs
    (``np.char.mod`` calls Python's ``%`` once per element).
    """
    scale = 10**decimals
    q = np.rint(np.asarray(values, dtype=np.float64) * scale).astype(np.int64)
    whole, frac = np.divmod(q, scale)
    if decimals == 0:
        return whole.astype(str)
    return np.strings.add(
        np.strings.add(whole.astype(str), "."), np.strings.zfill(frac.astype(str), decimals)
    )


def _lot_column(lot_ids: tuple[str, ...], offsets: np.ndarray) -> np.ndarray:
    return np.repeat(np.array(lot_ids, dtype=object), np.diff(offsets))


def write_fibre_csv(path: str | Path, lots: FibreLots, comment: str | None = None) -> None:
    """Per-fibre CSV: ``lot_id,diameter_um[,length_mm,curvature_deg_mm,medullated]``."""
    cols = ["lot_id", "diameter_um"]
    parts = [_lot_column(lots.lot_ids, lots.offsets), fixed_decimals(lots.diameter_um, 2)]
    if lots.length_mm is not None:
        cols.append("length_mm")
        parts.append(fixed_decimals(lots.length_mm, 1))
    if lots.curvature_deg_mm is not None:
        cols.append("curvature_deg_mm")
        parts.append(fixed_decimals(lots.curvature_deg_mm, 1))
    if lots.medullated is not None:
        cols.append("medullated")
        parts.append(np.where(lots.medullated, "1", "0"))
    rows = parts[0].astype(str)
    for p in parts[1:]:
        rows = np.strings.add(np.strings.add(rows, ","), p.astype(str))
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        if comment:
            for line in comment.splitlines():
                fh.write(f"# {line}\n")
        fh.write(",".join(cols) + "\n")
        if rows.size:
            fh.write("\n".join(rows.tolist()))
            fh.write("\n")


def write_histogram_csv(path: str | Path, hist: HistogramLots, comment: str | None = None) -> None:
    """Histogram CSV: ``lot_id,lower_um,upper_um,count``."""
    lot = _lot_column(hist.lot_ids, hist.offsets).astype(str)
    rows = np.char.add(np.char.add(lot, ","), np.char.mod("%g", hist.lower_um))
    rows = np.char.add(np.char.add(rows, ","), np.char.mod("%g", hist.upper_um))
    rows = np.char.add(np.char.add(rows, ","), hist.counts.astype(str))
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        if comment:
            for line in comment.splitlines():
                fh.write(f"# {line}\n")
        fh.write("lot_id,lower_um,upper_um,count\n")
        if rows.size:
            fh.write("\n".join(rows.tolist()))
            fh.write("\n")


def write_lot_manifest(path: str | Path, metas: Iterable[LotMeta]) -> None:
    """Lot manifest CSV with the required and the known optional columns."""
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(MANIFEST_COLUMNS)
        for m in metas:
            d = m.to_dict()
            w.writerow(["" if d[c] is None else d[c] for c in MANIFEST_COLUMNS])


def to_histograms(lots: FibreLots, class_um: float = 1.0) -> HistogramLots:
    """Bin per-fibre lots into classes of ``class_um`` (as a histogram-only instrument would).

    Only non-empty classes are kept.
    """
    n = np.diff(lots.offsets)
    lot_of = np.repeat(np.arange(lots.n_lots), n)
    k = np.floor(lots.diameter_um.astype(np.float64) / class_um).astype(np.int64)
    k = np.minimum(k, round(200.0 / class_um) - 1)  # 200 um closes the last class
    n_classes = round(200.0 / class_um)
    counts = np.bincount(lot_of * n_classes + k, minlength=lots.n_lots * n_classes)
    keep = counts > 0
    idx = np.flatnonzero(keep)
    lot_idx, cls = np.divmod(idx, n_classes)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(lot_idx, minlength=lots.n_lots))])
    return HistogramLots(
        lot_ids=lots.lot_ids,
        offsets=offsets.astype(np.int64),
        lower_um=cls * class_um,
        upper_um=(cls + 1) * class_um,
        counts=counts[keep],
    )
