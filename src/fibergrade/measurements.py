"""The columnar data model: fibre measurements, histogram-only lots and lot metadata.

Fibre measurements are one array per quantity (``diameter_um: float32[n]`` required, the
others optional) and a lot is a contiguous run described by CSR ``offsets: int64[lots + 1]``
(see ``shared/DESIGN.md``, "Data model"). Every computation takes all lots at once.

Physical limits enforced here (and by every reader): a diameter must satisfy
``0 < d <= 200`` um (DESIGN.md, "Errors and bad input"). A diameter below
``MM_SUSPECT_BELOW_UM`` is refused as "looks like millimetres": the finest animal fibres
graded here are above 10 um (``shared/reference/fibre.md``, typical populations), so a value
such as 0.016 is a millimetre figure in the wrong column, not a fibre. The 1 um threshold is
the project's own choice, not taken from a standard [unsourced]. Histogram readers apply the
same rule to classes (:func:`impossible_classes`): a class lying wholly below the threshold
may not hold fibres, or a Laserscan-style row ``X,0.015,0.016,40`` would grade as an MFD of
0.02 um. Every histogram class, empty or not, must also lie within one whole micrometre
(:func:`off_grid_classes`), the classes the core reports; the readers refuse others at
import, as the core does when grading.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fibergrade.errors import DataModelError

#: exclusive lower bound of a physically possible diameter, um (DESIGN.md)
DIAMETER_MIN_UM = 0.0
#: inclusive upper bound of a physically possible diameter, um (DESIGN.md)
DIAMETER_MAX_UM = 200.0
#: diameters below this are refused as millimetre values (project's own threshold)
MM_SUSPECT_BELOW_UM = 1.0

#: declared fibre types the project grades; a lot manifest may only use these
FIBRE_TYPES = ("cashmere", "baby-camel", "adult-camel", "camel-hair", "yak", "wool")

#: longest lot id accepted at import (characters)
LOT_ID_MAX_CHARS = 200
#: a lot id every import path accepts: ASCII letters, digits, ``.``, ``_`` and ``-``, the first
#: a letter or digit (the analyser protocol's sample-id set, adapters/analyser.py). Lot ids
#: name certificate files (``FG-<lot>-01.json``), so no path separator (``/``, ``\``), no
#: ``..`` escaping the folder, no leading ``.`` or ``-``, no ``:`` (a Windows drive or NTFS
#: stream), no space, quote, control or non-ASCII character [the project's own rule]
LOT_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z", re.ASCII)
#: the rule in words, for error messages and docs
LOT_ID_RULE = (
    f"1 to {LOT_ID_MAX_CHARS} characters, each an ASCII letter, digit, '.', '_' or '-', "
    "the first a letter or digit (such as MN-2024-0117)"
)


def lot_id_problem(lot_id: str) -> str | None:
    """Why a lot id is refused at import (:data:`LOT_ID_RULE`), or None when it is
    acceptable. Stored lots are not checked again: the rule guards what comes in."""
    if not lot_id:
        return "is empty"
    if len(lot_id) > LOT_ID_MAX_CHARS:
        return f"is {len(lot_id)} characters long"
    if LOT_ID_RE.match(lot_id):
        return None
    if lot_id[0] in ".-_":
        return f"starts with {lot_id[0]!r}"
    bad = next((c for c in lot_id if not LOT_ID_RE.match("A" + c)), lot_id[0])
    if bad in "/\\":
        return f"holds a path separator {bad!r}"
    if not bad.isprintable():
        return f"holds a control character {bad!r}"
    return f"holds the character {bad!r}"


def first_bad_lot_id(lot_ids: Iterable[str]) -> tuple[str, str] | None:
    """The first of ``lot_ids`` (in order) that :func:`lot_id_problem` refuses, with the
    problem; None when all are acceptable. Each distinct id is checked once, so a column
    of a million fibres of a few lots costs a few checks."""
    for lot in dict.fromkeys(lot_ids):
        problem = lot_id_problem(lot)
        if problem is not None:
            return lot, problem
    return None


def impossible_diameters(values: np.ndarray) -> np.ndarray:
    """Where an array of diameters (um) holds one :func:`diameter_problem` refuses: the
    same rule for a whole column at once (True for NaN and infinities too)."""
    return ~((values >= MM_SUSPECT_BELOW_UM) & (values <= DIAMETER_MAX_UM))


#: why a diameter below MM_SUSPECT_BELOW_UM is refused (one wording for fibres and classes)
_LOOKS_LIKE_MM = (
    "looks like millimetres; diameters are expected in micrometres "
    f"(a value below {MM_SUSPECT_BELOW_UM:g} um is not an animal fibre)"
)


def diameter_problem(value: float) -> str | None:
    """Why a single diameter (um) is refused, or None when it is acceptable."""
    if value != value:  # NaN
        return "is not a number (NaN)"
    if value <= DIAMETER_MIN_UM:
        return "is <= 0; a fibre diameter must be positive"
    if value > DIAMETER_MAX_UM:
        return f"is above {DIAMETER_MAX_UM:g} um, beyond any animal fibre"
    if value < MM_SUSPECT_BELOW_UM:
        return _LOOKS_LIKE_MM
    return None


def impossible_classes(upper_um: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Where a histogram class holds fibres that :func:`diameter_problem` would refuse
    one by one: a non-empty class lying wholly below ``MM_SUSPECT_BELOW_UM`` (its upper
    bound at or below it, so every fibre in ``[lower, upper)`` is below it). The per-fibre
    and the histogram readers apply the same rule; an empty class there is harmless, so it
    is kept. (A class straddling the threshold crosses a whole micrometre, which
    :func:`off_grid_classes` refuses.)"""
    return (np.asarray(counts) > 0) & (np.asarray(upper_um) <= MM_SUSPECT_BELOW_UM)


def class_problem(lower_um: float, upper_um: float, count: int) -> str | None:
    """Why one histogram class is refused by :func:`impossible_classes`, or None."""
    if count > 0 and upper_um <= MM_SUSPECT_BELOW_UM:
        return (
            f"class [{lower_um:g}, {upper_um:g}) um holds {count} fibre(s) and lies wholly "
            f"below {MM_SUSPECT_BELOW_UM:g} um: it {_LOOKS_LIKE_MM}"
        )
    return None


#: width of the classes the core reports (um): every histogram class must lie within one
#: of them, ``[k, k + 1)`` for a whole k (1-um classes as Laserscan and OFDA report them, or
#: finer), since a wider class would have to be spread over several, which is a guess
REPORT_CLASS_UM = 1.0
#: slack on the upper bound of a class (um), for bounds converted from millimetres
_GRID_SLACK_UM = 1e-9


def off_grid_classes(lower_um: np.ndarray, upper_um: np.ndarray) -> np.ndarray:
    """Where a histogram class ``[lower, upper)`` does not lie within one whole-micrometre
    class ``[k, k + 1)``: ``upper > floor(lower) + 1``. The one rule the histogram readers
    (at import) and the distribution core (when grading) apply, empty classes included:
    the core refuses such a class whatever its count, so a reader that let one in would
    leave a lot that can never be graded (raw data are never removed)."""
    lo = np.asarray(lower_um, dtype=np.float64)
    hi = np.asarray(upper_um, dtype=np.float64)
    return hi > np.floor(lo) + REPORT_CLASS_UM + _GRID_SLACK_UM


def class_grid_problem(lower_um: float, upper_um: float) -> str | None:
    """Why one histogram class is refused by :func:`off_grid_classes`, or None."""
    if not off_grid_classes(np.float64(lower_um), np.float64(upper_um)):
        return None
    k = float(np.floor(lower_um))
    return (
        f"class [{lower_um:g}, {upper_um:g}) um spans more than one 1-um class (it does not "
        f"lie within [{k:g}, {k + REPORT_CLASS_UM:g}) um)"
    )


#: what a histogram class must look like, for error messages
CLASS_GRID_EXPECTED = (
    "classes within one whole micrometre, such as [14, 15) or [14.5, 15) um "
    "(1-um classes as Laserscan and OFDA report them, or finer)"
)


def _as_offsets(offsets: Any, n: int, what: str) -> np.ndarray:
    off = np.ascontiguousarray(offsets, dtype=np.int64)
    if off.ndim != 1 or off.size < 1:
        raise DataModelError(f"{what}: offsets must be a 1-D int64 array of lots + 1 entries")
    if off[0] != 0 or off[-1] != n:
        raise DataModelError(
            f"{what}: offsets must start at 0 and end at {n} (the number of rows), "
            f"got {int(off[0])} .. {int(off[-1])}"
        )
    if off.size > 1 and np.any(np.diff(off) < 0):
        bad = int(np.flatnonzero(np.diff(off) < 0)[0])
        raise DataModelError(f"{what}: offsets decrease at lot index {bad}")
    return off


def _lot_ids(lot_ids: Any, lots: int, what: str) -> tuple[str, ...]:
    ids = tuple(lot_ids)
    if set(map(type, ids)) - {str}:  # a C-level check; conversion only when needed
        ids = tuple(str(x) for x in ids)
    if len(ids) != lots:
        raise DataModelError(f"{what}: {len(ids)} lot ids for {lots} lots")
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(x for x in ids if x in seen or seen.add(x))  # type: ignore[func-returns-value]
        raise DataModelError(f"{what}: lot id {dup!r} appears twice")
    return ids


def gather_runs(offsets: np.ndarray, indices: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of the CSR runs at ``indices`` (in that order), without a Python loop over rows.

    Returns ``(indices, new_offsets, rows)``: the rows of run ``indices[k]`` are
    ``rows[new_offsets[k]:new_offsets[k + 1]]``.
    """
    idx = np.asarray(indices, dtype=np.int64)
    starts, stops = offsets[idx], offsets[idx + 1]
    lens = stops - starts
    new_off = np.zeros(idx.size + 1, dtype=np.int64)
    np.cumsum(lens, out=new_off[1:])
    rows = np.repeat(starts - new_off[:-1], lens) + np.arange(new_off[-1], dtype=np.int64)
    return idx, new_off, rows


def join_offsets(offsets: list[np.ndarray], sizes: list[int]) -> np.ndarray:
    """CSR offsets of tables joined end to end (``sizes``: rows of each table)."""
    shifts = np.concatenate([[0], np.cumsum(np.asarray(sizes, dtype=np.int64))[:-1]])
    return np.concatenate(
        [np.zeros(1, np.int64)] + [o[1:] + s for o, s in zip(offsets, shifts, strict=True)]
    ).astype(np.int64)


@dataclass(frozen=True)
class FibreLots:
    """Per-fibre measurements of many lots, columnar with CSR offsets."""

    lot_ids: tuple[str, ...]
    offsets: np.ndarray  # int64[lots + 1]
    diameter_um: np.ndarray  # float32[n]
    length_mm: np.ndarray | None = None  # float32[n]
    curvature_deg_mm: np.ndarray | None = None  # float32[n]
    medullated: np.ndarray | None = None  # bool[n]

    def __post_init__(self) -> None:
        d = np.ascontiguousarray(self.diameter_um, dtype=np.float32)
        if d.ndim != 1:
            raise DataModelError("diameter_um must be a 1-D array")
        object.__setattr__(self, "diameter_um", d)
        off = _as_offsets(self.offsets, d.size, "FibreLots")
        object.__setattr__(self, "offsets", off)
        object.__setattr__(self, "lot_ids", _lot_ids(self.lot_ids, off.size - 1, "FibreLots"))
        for name, dtype in (
            ("length_mm", np.float32),
            ("curvature_deg_mm", np.float32),
            ("medullated", np.bool_),
        ):
            col = getattr(self, name)
            if col is None:
                continue
            arr = np.ascontiguousarray(col, dtype=dtype)
            if arr.shape != d.shape:
                raise DataModelError(
                    f"{name} has {arr.size} values for {d.size} diameters; "
                    "optional columns must have one value per fibre"
                )
            object.__setattr__(self, name, arr)

    @property
    def n_lots(self) -> int:
        return self.offsets.size - 1

    @property
    def n_fibres(self) -> int:
        return int(self.diameter_um.size)

    def optional_columns(self) -> dict[str, np.ndarray]:
        """The optional per-fibre columns that are present."""
        out = {}
        for name in ("length_mm", "curvature_deg_mm", "medullated"):
            col = getattr(self, name)
            if col is not None:
                out[name] = col
        return out

    def select(self, indices: Any) -> FibreLots:
        """A new table holding the lots at ``indices`` (in that order)."""
        idx, new_off, rows = gather_runs(self.offsets, indices)
        cols = {k: v[rows] for k, v in self.optional_columns().items()}
        return FibreLots(
            lot_ids=tuple(self.lot_ids[i] for i in idx.tolist()),
            offsets=new_off,
            diameter_um=self.diameter_um[rows],
            **cols,
        )

    @staticmethod
    def concat(parts: list[FibreLots]) -> FibreLots:
        """Join tables end to end; an optional column is kept only if every part has it."""
        if not parts:
            return FibreLots((), np.zeros(1, np.int64), np.zeros(0, np.float32))
        off = join_offsets([p.offsets for p in parts], [p.n_fibres for p in parts])
        cols: dict[str, np.ndarray] = {}
        for name in ("length_mm", "curvature_deg_mm", "medullated"):
            if all(getattr(p, name) is not None for p in parts):
                cols[name] = np.concatenate([getattr(p, name) for p in parts])
        return FibreLots(
            lot_ids=tuple(x for p in parts for x in p.lot_ids),
            offsets=off,
            diameter_um=np.concatenate([p.diameter_um for p in parts]),
            **cols,
        )


@dataclass(frozen=True)
class HistogramLots:
    """Lots reported only as counts per diameter class (e.g. Laserscan 1-um classes).

    Classes of a lot are the CSR run ``offsets[i]:offsets[i+1]`` of ``lower_um``,
    ``upper_um`` and ``counts``; within a lot they are sorted by ``lower_um`` and do not
    overlap. A class is ``[lower, upper)``.
    """

    lot_ids: tuple[str, ...]
    offsets: np.ndarray  # int64[lots + 1]
    lower_um: np.ndarray  # float64[k]
    upper_um: np.ndarray  # float64[k]
    counts: np.ndarray  # int64[k]

    def __post_init__(self) -> None:
        lo = np.ascontiguousarray(self.lower_um, dtype=np.float64)
        hi = np.ascontiguousarray(self.upper_um, dtype=np.float64)
        c = np.ascontiguousarray(self.counts, dtype=np.int64)
        if not (lo.shape == hi.shape == c.shape) or lo.ndim != 1:
            raise DataModelError("lower_um, upper_um and counts must be 1-D of equal length")
        off = _as_offsets(self.offsets, lo.size, "HistogramLots")
        if np.any(hi <= lo):
            raise DataModelError("every class needs upper_um > lower_um")
        if np.any(c < 0):
            raise DataModelError("class counts must be >= 0")
        if np.any(lo < 0) or np.any(hi > DIAMETER_MAX_UM):
            raise DataModelError(f"classes must lie within 0 .. {DIAMETER_MAX_UM:g} um")
        # classes sorted and non-overlapping within each lot
        if lo.size > 1:
            same_lot = np.ones(lo.size - 1, dtype=bool)
            same_lot[off[1:-1][(off[1:-1] > 0) & (off[1:-1] < lo.size)] - 1] = False
            if np.any(same_lot & (lo[1:] < hi[:-1])):
                raise DataModelError("classes of a lot must be sorted and must not overlap")
        object.__setattr__(self, "lower_um", lo)
        object.__setattr__(self, "upper_um", hi)
        object.__setattr__(self, "counts", c)
        object.__setattr__(self, "offsets", off)
        object.__setattr__(self, "lot_ids", _lot_ids(self.lot_ids, off.size - 1, "HistogramLots"))

    @property
    def n_lots(self) -> int:
        return self.offsets.size - 1

    def select(self, indices: Any) -> HistogramLots:
        """A new table holding the lots at ``indices`` (in that order)."""
        idx, new_off, rows = gather_runs(self.offsets, indices)
        return HistogramLots(
            lot_ids=tuple(self.lot_ids[i] for i in idx.tolist()),
            offsets=new_off,
            lower_um=self.lower_um[rows],
            upper_um=self.upper_um[rows],
            counts=self.counts[rows],
        )

    @staticmethod
    def concat(parts: list[HistogramLots]) -> HistogramLots:
        """Join tables end to end."""
        if not parts:
            z = np.zeros(0, np.float64)
            return HistogramLots((), np.zeros(1, np.int64), z, z, np.zeros(0, np.int64))
        return HistogramLots(
            lot_ids=tuple(x for p in parts for x in p.lot_ids),
            offsets=join_offsets([p.offsets for p in parts], [p.lower_um.size for p in parts]),
            lower_um=np.concatenate([p.lower_um for p in parts]),
            upper_um=np.concatenate([p.upper_um for p in parts]),
            counts=np.concatenate([p.counts for p in parts]),
        )


@dataclass(frozen=True)
class LotMeta:
    """What a lab knows about a lot besides its measurements (DESIGN.md, "Data model")."""

    lot_id: str
    declared_type: str | None = None
    origin: str | None = None  # country (ISO 3166 code or name, as the lab writes it)
    region: str | None = None
    gi_code: str | None = None  # geographical-indication code claimed for the lot
    client: str | None = None
    instrument_id: str | None = None
    calibration_id: str | None = None
    received_at: str | None = None  # ISO 8601
    measured_at: str | None = None  # ISO 8601
    extra: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lot_id": self.lot_id,
            "declared_type": self.declared_type,
            "origin": self.origin,
            "region": self.region,
            "gi_code": self.gi_code,
            "client": self.client,
            "instrument_id": self.instrument_id,
            "calibration_id": self.calibration_id,
            "received_at": self.received_at,
            "measured_at": self.measured_at,
            "extra": dict(self.extra),
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> LotMeta:
        known = {k: d.get(k) for k in LotMeta.__dataclass_fields__ if k != "extra"}
        return LotMeta(**known, extra=dict(d.get("extra") or {}))
