"""Fused one-pass kernel for the distribution core (numba, parallel over lots).

One pass over each lot's float32 diameters accumulates count, shifted sums for the mean and
SD, min, max, the comfort-factor count, d^2 sums for coarse % by mass, and a 0.1-um class
histogram held in a per-thread scratch array; percentiles and the 1-um report histogram are
read from that scratch before it is cleared for the next lot. Optional columns (curvature,
medullation, length) take a second pass over the lot while it is still in cache.

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
    DIAMETER_MAX_UM,
    FIGURES,
    FINE_PER_REPORT,
    MM_SUSPECT_BELOW_UM,
    N_FINE,
    N_REPORT,
    QUANTILES,
    LotSummary,
    _check_cut,
    _empty_summary,
    _raise_first_bad,
    check_optional_columns,
    derive,
)
from fibergrade.measurements import FibreLots

INV_FINE = 10.0  # 1 / FINE_CLASS_UM, exactly as the reference computes it
Q5, Q50, Q95 = QUANTILES
D_LO = MM_SUSPECT_BELOW_UM
D_HI = DIAMETER_MAX_UM
#: int32 bit patterns of the float32 bounds (see _bits_range)
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


@numba.njit(cache=True, nogil=True, inline="always")
def _quantile(fine, bmin, bmax, n, q, lo, hi):  # pragma: no cover - compiled
    target = q * np.float64(n)
    cum = 0
    k = bmin
    while k <= bmax:
        cum += fine[k]
        if cum >= target:
            break
        k += 1
    if k > bmax:
        k = bmax
    h = np.float64(fine[k])
    before = np.float64(cum - fine[k])
    p = (k + (target - before) / h) * 0.1
    return min(max(p, lo), hi)


@numba.njit(cache=True, nogil=True)
def _bits_range(bits, s, e):  # pragma: no cover - compiled
    # For float32 values the int32 bit patterns of positive numbers sort like the numbers,
    # while negatives, -0.0 and -NaN are negative ints and +NaN and +inf exceed every
    # finite float: one integer min/max (which vectorises without fast-math) tells whether
    # every value lies in [D_LO, D_HI].
    lo = bits[s]
    hi = bits[s]
    for i in range(s, e):
        v = bits[i]
        lo = min(lo, v)
        hi = max(hi, v)
    return lo, hi


@numba.njit(cache=True, nogil=True, fastmath=True)
def _sums(d, s, e, k, cut):  # pragma: no cover - compiled
    # Only called on lots whose values _bits_range has checked lie in [D_LO, D_HI], so
    # fast-math (no NaN, no inf, reassociation) cannot change what is compared; sums are
    # straight-line multiply-adds so that LLVM vectorises the whole loop.
    s1 = 0.0
    s2 = 0.0
    mgt = 0.0
    mle = 0.0
    le = 0.0
    for i in range(s, e):
        x = np.float64(d[i])
        y = x - k
        s1 += y
        s2 += y * y
        x2 = x * x
        fine = np.float64(x <= cut)
        le += fine
        mle += x2 * fine
        mgt += x2 * (1.0 - fine)
    return s1, s2, mgt, mle, le


@numba.njit(cache=True, nogil=True, parallel=True)
def _fused(d, bits, off, cut, curv, med, length, acc, hist, first_bad, n_chunks):
    n_lots = off.size - 1
    has_curv = curv.size > 0
    has_med = med.size > 0
    has_len = length.size > 0
    for c in numba.prange(n_chunks):
        fine = np.zeros(N_FINE, np.int32)
        # reinterpret the min/max bit patterns of _bits_range as float32 values
        as_bits = np.empty(2, np.int32)
        as_float = as_bits.view(np.float32)
        l0 = (c * n_lots) // n_chunks
        l1 = ((c + 1) * n_lots) // n_chunks
        for lot in range(l0, l1):
            s = off[lot]
            e = off[lot + 1]
            n = e - s
            if n == 0:
                for j in range(N_ACC):
                    acc[lot, j] = np.nan
                continue
            lo_bits, hi_bits = _bits_range(bits, s, e)
            if lo_bits < LO_BITS or hi_bits > HI_BITS:
                for i in range(s, e):
                    x = d[i]
                    if not (x >= D_LO and x <= D_HI):
                        first_bad[lot] = i
                        break
                continue
            k = np.float64(d[s])
            s1, s2, mgt, mle, le = _sums(d, s, e, k, cut)
            as_bits[0] = lo_bits
            as_bits[1] = hi_bits
            mn = np.float64(as_float[0])
            mx = np.float64(as_float[1])
            for i in range(s, e):
                b = int(np.float64(d[i]) * INV_FINE)
                fine[min(b, N_FINE - 1)] += 1
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
            acc[lot, A_P5] = _quantile(fine, bmin, bmax, n, Q5, mn, mx)
            acc[lot, A_P50] = _quantile(fine, bmin, bmax, n, Q50, mn, mx)
            acc[lot, A_P95] = _quantile(fine, bmin, bmax, n, Q95, mn, mx)
            for b in range(bmin, bmax + 1):
                hist[lot, b // FINE_PER_REPORT] += fine[b]
                fine[b] = 0
            if has_curv:
                kc = np.float64(curv[s])
                c1 = 0.0
                c2 = 0.0
                for i in range(s, e):
                    y = np.float64(curv[i]) - kc
                    c1 += y
                    c2 += y * y
                acc[lot, A_CMEAN] = c1 / nf + kc
                if n > 1:
                    acc[lot, A_CSD] = np.sqrt(max(c2 - c1 * c1 / nf, 0.0) / (nf - 1.0))
                else:
                    acc[lot, A_CSD] = np.nan
            else:
                acc[lot, A_CMEAN] = np.nan
                acc[lot, A_CSD] = np.nan
            if has_med:
                m = 0
                for i in range(s, e):
                    if med[i]:
                        m += 1
                acc[lot, A_MED] = 100.0 * m / nf
            else:
                acc[lot, A_MED] = np.nan
            if has_len:
                t = 0.0
                for i in range(s, e):
                    t += np.float64(length[i])
                acc[lot, A_LEN] = t / nf
            else:
                acc[lot, A_LEN] = np.nan


_NO_F32 = np.empty(0, np.float32)
_NO_BOOL = np.empty(0, np.bool_)


def summarise_fast(lots: FibreLots, cut_um: float) -> LotSummary:
    """Same figures as :func:`~fibergrade.distribution.summarise_reference`, in one pass."""
    cut = _check_cut(cut_um)
    check_optional_columns(lots)
    n_lots = lots.n_lots
    if n_lots == 0:
        return _empty_summary(cut)
    acc = np.empty((n_lots, N_ACC), np.float64)
    hist = np.zeros((n_lots, N_REPORT), np.int64)
    first_bad = np.full(n_lots, -1, np.int64)
    _fused(
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
        max(1, min(n_lots, 16 * numba.get_num_threads())),
    )
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
