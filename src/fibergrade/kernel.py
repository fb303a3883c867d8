"""Fused kernel for the distribution core (numba, parallel over lots).

Each lot's float32 diameters are read from memory once: one vectorised pass
(:func:`_lot_pass`) gives the validity range (integer min/max of the bit patterns), shifted
sums for the mean and SD, the comfort-factor count and the d^2 sums for coarse % by mass.
A second, scalar pass over the same lot, now in L1 cache, scatters it into a 0.1-um class
histogram held in a per-thread scratch array; percentiles and the 1-um report histogram are
read from that scratch before it is cleared for the next lot. Optional columns (curvature,
medullation, length) take one more pass over the lot.

Each per-lot loop runs over a 0-based slice of the lot: with an index that starts at zero
numba needs no negative-index test, so LLVM emits plain vector loads (indexing the whole
array from the lot's start offset instead gathered element by element and ran at half the
speed).

:func:`fibergrade.distribution.summarise_reference` is the specification: the class index
(``int(d * 10)``), the percentile interpolation and the derived figures use the same
arithmetic, so binned figures agree exactly and summed ones to float64 rounding (the kernel
uses a shifted sum of squares where the reference takes two passes). Compiled code is cached
on disk (``cache=True``), so only the first run after an install pays for compilation.
"""

from __future__ import annotations

import numba
import numpy as np

from fibergrade.distribution import (
    FIGURES,
    FINE_PER_REPORT,
    N_FINE,
    QUANTILES,
    LotSummary,
    _check_cut,
    _empty_summary,
    _raise_first_bad,
    check_optional_columns,
    derive,
    histogram_buffer,
)
from fibergrade.measurements import DIAMETER_MAX_UM, MM_SUSPECT_BELOW_UM, FibreLots

INV_FINE = 10.0  # 1 / FINE_CLASS_UM, exactly as the reference computes it
Q5, Q50, Q95 = QUANTILES
D_LO = MM_SUSPECT_BELOW_UM
D_HI = DIAMETER_MAX_UM
#: int32 bit patterns of the float32 bounds (see _lot_pass)
LO_BITS = int(np.array(D_LO, np.float32).view(np.int32))
HI_BITS = int(np.array(D_HI, np.float32).view(np.int32))

# columns of the accumulator matrix the kernel fills
(
    A_MFD,
    A_SD,
    A_MIN,
    A_MAX,
    A_LE,
    A_MGT,
    A_MLE,
    A_P5,
    A_P50,
    A_P95,
    A_CMEAN,
    A_CSD,
    A_MED,
    A_LEN,
) = range(14)
N_ACC = 14


@numba.njit(cache=True, nogil=True)
def _report_classes(fine, row, r0, r1):  # pragma: no cover - compiled
    # 1-um report classes r0..r1 of one lot: sums of FINE_PER_REPORT fine classes each
    for r in range(r0, r1 + 1):
        block = fine[r * FINE_PER_REPORT : (r + 1) * FINE_PER_REPORT]
        t = 0
        for j in range(FINE_PER_REPORT):
            t += block[j]
        row[r] = t


@numba.njit(cache=True, nogil=True)
def _quantile(fine, row, r0, r1, bmax, n, q, lo, hi):  # pragma: no cover - compiled
    # The reference's rule: the first 0.1-um class k whose cumulative count reaches q*n,
    # interpolated within it. Found in two steps, first the 1-um report class holding k,
    # then k inside it; the cumulative counts are the same integers as in a walk over the
    # fine classes, so k and the interpolation are the reference's exactly.
    target = q * np.float64(n)
    cum = 0
    r = r0
    while r < r1:
        if cum + row[r] >= target:
            break
        cum += row[r]
        r += 1
    k = r * FINE_PER_REPORT
    last = min(k + FINE_PER_REPORT - 1, bmax)  # fine[bmax] holds the largest value
    while k < last:
        if cum + fine[k] >= target:
            break
        cum += fine[k]
        k += 1
    h = np.float64(fine[k])
    p = (k + (target - np.float64(cum)) / h) * 0.1
    return min(max(p, lo), hi)


#: fast-math flags of the sums: reassociation and contraction only, so that LLVM vectorises
#: the reductions; without ``nnan``/``ninf`` a NaN or inf still compares as IEEE 754 says
SUM_FLAGS = {"reassoc", "contract"}


@numba.njit(cache=True, nogil=True, fastmath=SUM_FLAGS)
def _lot_pass(x, xbits, k, cut):  # pragma: no cover - compiled
    # One streaming pass over one lot (``x`` and ``xbits`` are 0-based slices, so every load
    # is a plain vector load). For float32 values the int32 bit patterns of positive numbers
    # sort like the numbers, while negatives, -0.0 and -NaN are negative ints and +NaN and
    # +inf exceed every finite float: one integer min/max tells whether every value lies in
    # [D_LO, D_HI]. The sums are straight-line multiply-adds; the caller uses them only when
    # that range check passes.
    lo = xbits[0]
    hi = xbits[0]
    s1 = 0.0
    s2 = 0.0
    mgt = 0.0
    mle = 0.0
    le = 0.0
    for i in range(x.size):
        v = xbits[i]
        lo = min(lo, v)
        hi = max(hi, v)
        xi = np.float64(x[i])
        y = xi - k
        s1 += y
        s2 += y * y
        x2 = xi * xi
        fine = np.float64(xi <= cut)
        le += fine
        mle += x2 * fine
        mgt += x2 * (1.0 - fine)
    return lo, hi, s1, s2, mgt, mle, le


@numba.njit(cache=True, nogil=True)
def _scatter(x, fine):  # pragma: no cover - compiled
    # 0.1-um classes of values already checked to lie in [D_LO, D_HI]: the unsigned index
    # needs no wrap-around test, and ``fine`` has one spare class for exactly D_HI (folded
    # into the top class by the caller, as the reference's ``min(class, N_FINE - 1)``).
    for i in range(x.size):
        fine[np.uint32(np.float64(x[i]) * INV_FINE)] += np.uint32(1)


@numba.njit(cache=True, nogil=True)
def _mean_sd(x, n):  # pragma: no cover - compiled
    k = np.float64(x[0])
    c1 = 0.0
    c2 = 0.0
    for i in range(x.size):
        y = np.float64(x[i]) - k
        c1 += y
        c2 += y * y
    nf = np.float64(n)
    sd = np.sqrt(max(c2 - c1 * c1 / nf, 0.0) / (nf - 1.0)) if n > 1 else np.nan
    return c1 / nf + k, sd


@numba.njit(cache=True, nogil=True)
def _lot_range(d, bits, off, cut, curv, med, length, acc, hist, first_bad, l0, l1):
    # lots l0..l1-1, in the calling thread, with their own scratch
    has_curv = curv.size > 0
    has_med = med.size > 0
    has_len = length.size > 0
    fine = np.zeros(N_FINE + 1, np.uint32)
    # reinterpret the min/max bit patterns of _lot_pass as float32 values
    as_bits = np.empty(2, np.int32)
    as_float = as_bits.view(np.float32)
    for lot in range(l0, l1):
        s = off[lot]
        e = off[lot + 1]
        n = e - s
        if n == 0:
            for j in range(N_ACC):
                acc[lot, j] = np.nan
            continue
        x = d[s:e]
        k = np.float64(x[0])
        lo_bits, hi_bits, s1, s2, mgt, mle, le = _lot_pass(x, bits[s:e], k, cut)
        if lo_bits < LO_BITS or hi_bits > HI_BITS:
            for i in range(n):
                xi = x[i]
                if not (xi >= D_LO and xi <= D_HI):
                    first_bad[lot] = s + i
                    break
            continue
        _scatter(x, fine)
        fine[N_FINE - 1] += fine[N_FINE]
        fine[N_FINE] = 0
        as_bits[0] = lo_bits
        as_bits[1] = hi_bits
        mn = np.float64(as_float[0])
        mx = np.float64(as_float[1])
        bmin = min(int(mn * INV_FINE), N_FINE - 1)
        bmax = min(int(mx * INV_FINE), N_FINE - 1)
        nf = np.float64(n)
        acc[lot, A_MFD] = s1 / nf + k
        if n > 1:
            acc[lot, A_SD] = np.sqrt(max(s2 - s1 * s1 / nf, 0.0) / (nf - 1.0))
        else:
            acc[lot, A_SD] = np.nan
        acc[lot, A_MIN] = mn
        acc[lot, A_MAX] = mx
        acc[lot, A_LE] = le
        acc[lot, A_MGT] = mgt
        acc[lot, A_MLE] = mle
        row = hist[lot]
        r0 = bmin // FINE_PER_REPORT
        r1 = bmax // FINE_PER_REPORT
        _report_classes(fine, row, r0, r1)
        acc[lot, A_P5] = _quantile(fine, row, r0, r1, bmax, n, Q5, mn, mx)
        acc[lot, A_P50] = _quantile(fine, row, r0, r1, bmax, n, Q50, mn, mx)
        acc[lot, A_P95] = _quantile(fine, row, r0, r1, bmax, n, Q95, mn, mx)
        fine[r0 * FINE_PER_REPORT : (r1 + 1) * FINE_PER_REPORT] = 0
        if has_curv:
            acc[lot, A_CMEAN], acc[lot, A_CSD] = _mean_sd(curv[s:e], n)
        else:
            acc[lot, A_CMEAN] = np.nan
            acc[lot, A_CSD] = np.nan
        if has_med:
            m = 0
            lot_med = med[s:e]
            for i in range(n):
                m += lot_med[i]
            acc[lot, A_MED] = 100.0 * m / nf
        else:
            acc[lot, A_MED] = np.nan
        if has_len:
            t = 0.0
            lot_len = length[s:e]
            for i in range(n):
                t += np.float64(lot_len[i])
            acc[lot, A_LEN] = t / nf
        else:
            acc[lot, A_LEN] = np.nan


@numba.njit(cache=True, nogil=True, parallel=True)
def _fused(d, bits, off, cut, curv, med, length, acc, hist, first_bad, n_chunks):
    # parallel over chunks of lots (numba's thread pool)
    n_lots = off.size - 1
    for c in numba.prange(n_chunks):
        l0 = (c * n_lots) // n_chunks
        l1 = ((c + 1) * n_lots) // n_chunks
        _lot_range(d, bits, off, cut, curv, med, length, acc, hist, first_bad, l0, l1)


@numba.njit(cache=True, nogil=True)
def _fused_serial(d, bits, off, cut, curv, med, length, acc, hist, first_bad):
    # every lot in the calling thread (for callers running several tables in their own
    # threads; the GIL is released)
    _lot_range(d, bits, off, cut, curv, med, length, acc, hist, first_bad, 0, off.size - 1)


_NO_F32 = np.empty(0, np.float32)
_NO_BOOL = np.empty(0, np.bool_)


def summarise_fast(
    lots: FibreLots,
    cut_um: float,
    *,
    histogram_out: np.ndarray | None = None,
    parallel: bool = True,
) -> LotSummary:
    """Same figures as :func:`~fibergrade.distribution.summarise_reference`, in one pass;
    ``histogram_out`` and ``parallel``: see :func:`~fibergrade.distribution.summarise`."""
    cut = _check_cut(cut_um)
    check_optional_columns(lots)
    n_lots = lots.n_lots
    hist = histogram_buffer(histogram_out, n_lots)
    if n_lots == 0:
        return _empty_summary(cut)
    acc = np.empty((n_lots, N_ACC), np.float64)
    first_bad = np.full(n_lots, -1, np.int64)
    args = (
        lots.diameter_um,
        lots.diameter_um.view(np.int32),
        lots.offsets,
        cut,
        lots.curvature_deg_mm if lots.curvature_deg_mm is not None else _NO_F32,
        lots.medullated if lots.medullated is not None else _NO_BOOL,
        lots.length_mm if lots.length_mm is not None else _NO_F32,
        acc,
        hist,
        first_bad,
    )
    if parallel:
        _fused(*args, max(1, min(n_lots, 16 * numba.get_num_threads())))
    else:
        _fused_serial(*args)
    if (first_bad >= 0).any():
        mask = np.zeros(lots.n_fibres, dtype=bool)
        mask[first_bad[first_bad >= 0]] = True
        _raise_first_bad(lots, mask)
    n = np.diff(lots.offsets)
    figures = {
        "mfd_um": acc[:, A_MFD],
        "sd_um": acc[:, A_SD],
        "min_um": acc[:, A_MIN],
        "max_um": acc[:, A_MAX],
        "p5_um": acc[:, A_P5],
        "p50_um": acc[:, A_P50],
        "p95_um": acc[:, A_P95],
        "curvature_mean_deg_mm": acc[:, A_CMEAN],
        "curvature_sd_deg_mm": acc[:, A_CSD],
        "medullated_pct": acc[:, A_MED],
        "length_mean_mm": acc[:, A_LEN],
    }
    figures.update(
        derive(n, acc[:, A_MFD], acc[:, A_SD], acc[:, A_LE], acc[:, A_MGT], acc[:, A_MLE])
    )
    return LotSummary(
        lot_ids=lots.lot_ids,
        n=n.astype(np.int64),
        figures={f: np.ascontiguousarray(figures[f]) for f in FIGURES},
        histogram=hist,
        basis=np.full(n_lots, "fibres"),
        cut_um=cut,
    )
