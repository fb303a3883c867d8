"""The carcass CSV: reading and validating a day's carcasses, column by column.

Format (documented in the README, "Lamb carcasses")
---------------------------------------------------
The text rules of the interchange CSVs apply (:mod:`fibergrade.adapters.interchange`): UTF-8,
comma separated, ``#`` comment lines, header matched case-insensitively, ``x_`` columns
ignored, any other unknown column refused, line numbers counted as in a text editor.

Required columns (one row per carcass)::

    carcass_id,animal_id,lot_id,sex,ssc,incisors_erupted,incisors_in_wear,hscw_kg,gr_mm,
    ph_ultimate,temp_c,l_star,a_star,b_star,slaughtered_at,weighed_at

- ``animal_id``: the RFID ear tag. ``carcass_id`` and ``animal_id`` are unique (in the file
  and in the store). Ids are 1-200 printable characters; ``carcass_id`` names certificate
  files, so it follows the lot-id rule (``measurements.LOT_ID_RULE``: ASCII letters, digits,
  ``.``, ``_``, ``-``, the first a letter or digit).
- ``sex``: ``ewe``/``female``, ``wether``/``castrate`` or ``ram``/``male`` (stored as
  ``female``, ``castrate``, ``male``). ``ssc``: secondary sexual characteristics present,
  yes/no (refused on a female).
- ``incisors_erupted``, ``incisors_in_wear``: permanent incisors, whole numbers 0-8, in wear
  <= erupted (a sheep has 8 incisors, meat.md / issue 7).
- ``hscw_kg``: hot standard carcass weight in kg, > 0 and, when the scale is known, <= the
  scale's Max (instrument profile). ``gr_mm``: GR tissue depth in mm, >= 0.
- ``ph_ultimate``: 4.5 to 8.0 inclusive (issue 7). ``temp_c``: carcass temperature (C) at the
  ultimate pH reading. ``l_star`` 0-100, ``a_star``, ``b_star``: CIELAB colour of the loin.
- ``slaughtered_at`` (sticking), ``weighed_at``: ISO 8601 times, both with a UTC offset or
  both without. Weighing before slaughter is refused; weighing more than 1 h after
  slaughter is kept and flagged (EU rule, meat.md "EU").

Optional columns (an empty value means "not recorded"; it is never filled in):

- scale provenance of ``hscw_kg``: ``scale_id``, ``scale_profile`` (an instrument profile
  name such as ``cas-ci``, giving the scale's Max), ``weight_mode`` (``stable`` or
  ``immediate``: which scale command gave the weight, scales.md);
- ``ph_measured_at``, ``temp_measured_at``: ISO 8601 times of the readings;
- category evidence: ``milk_fed`` (unweaned, under 8 weeks), ``permanent_molars``
  (permanent upper molars erupted), ``age_months``;
- MSA evidence: ``days_off_shears``, ``hours_off_feed``, ``hours_in_transit`` (>= 0),
  ``vendor_declaration`` (yes/no), ``temp_at_ph6_c`` (C).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from fibergrade.adapters.interchange import (
    _BOOLEANS,
    _finite_problem,
    _float_column,
    _int_column,
    _read_table,
    _Table,
)
from fibergrade.errors import FibergradeError
from fibergrade.measurements import LOT_ID_RULE, first_bad_lot_id

__all__ = [
    "CARCASS_COLUMNS",
    "OPTIONAL_COLUMNS",
    "CarcassBatch",
    "read_carcass_csv",
]

PathLike = str | Path

CARCASS_COLUMNS = (
    "carcass_id",
    "animal_id",
    "lot_id",
    "sex",
    "ssc",
    "incisors_erupted",
    "incisors_in_wear",
    "hscw_kg",
    "gr_mm",
    "ph_ultimate",
    "temp_c",
    "l_star",
    "a_star",
    "b_star",
    "slaughtered_at",
    "weighed_at",
)
_OPT_TEXT = ("scale_id", "scale_profile", "weight_mode", "ph_measured_at", "temp_measured_at")
_OPT_BOOL = ("milk_fed", "permanent_molars", "vendor_declaration")
_OPT_NONNEG = ("age_months", "days_off_shears", "hours_off_feed", "hours_in_transit")
_OPT_FLOAT = ("temp_at_ph6_c",)
OPTIONAL_COLUMNS = (*_OPT_TEXT, *_OPT_BOOL, *_OPT_NONNEG, *_OPT_FLOAT)

#: a sheep has eight permanent incisors (issue 7: "more than 8 incisors" is refused);
#: [unsourced here: shared/reference/meat.md counts incisors in wear but gives no total]
MAX_INCISORS = 8
#: accepted ultimate pH range, inclusive (issue 7: "pH outside 4.5 to 8.0" is refused);
#: [unsourced here: meat.md gives the normal 5.4-5.8 and dark cutting >= 6.0, not these
#: bounds of a plausible reading]
PH_MIN, PH_MAX = 4.5, 8.0
#: a carcass temperature reading (temp_c, temp_at_ph6_c) outside this range, in C, is
#: refused as no carcass's [unsourced: plausibility bounds of the project, wide around a
#: sheep's ~39 C body temperature and blast freezing; meat.md's classes lie well inside]
TEMP_MIN_C, TEMP_MAX_C = -40.0, 50.0
#: CIELAB a* and b* outside this range are refused [unsourced: the usual -128..127 range of
#: an a*/b* encoding; meat colours lie far inside, meat.md's thresholds at a* 9.5-14.5]
AB_MIN, AB_MAX = -128.0, 127.0
#: EU: classify, mark and weigh within 1 h of sticking (meat.md, "EU")
EU_WEIGH_WITHIN_S = 3600.0
SEXES = {
    "ewe": "female",
    "female": "female",
    "wether": "castrate",
    "castrate": "castrate",
    "ram": "male",
    "male": "male",
}
WEIGHT_MODES = ("stable", "immediate")
ID_MAX_CHARS = 200
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class ScaleLimit:
    """The Max of a scale in kg, and the profile it came from."""

    profile: str
    max_kg: float


@dataclass
class CarcassBatch:
    """One carcass file, columnar. ``columns`` maps a column name to a list (JSON-ready,
    ``None`` where an optional value was not recorded); ``lines`` are file lines."""

    path: str
    columns: dict[str, list[Any]]
    lines: list[int]

    @property
    def n(self) -> int:
        return len(self.lines)


def _ids(t: _Table, name: str) -> list[str]:
    col = [s.strip() for s in t.columns[name]]
    for i, s in enumerate(col):
        if not s:
            raise t.error(i, f"{name} is empty", expected=f"a {name} on every row")
        if len(s) > ID_MAX_CHARS or _CONTROL_RE.search(s):
            raise t.error(
                i,
                f"{name} {s[:40]!r} is too long or holds a control character",
                expected=f"1-{ID_MAX_CHARS} printable characters",
            )
    return col


def _file_name_safe(t: _Table, name: str, col: Sequence[str]) -> None:
    """A carcass id names certificate files (``FGM-<carcass_id>-01.json``): it follows the
    lot-id rule (:data:`fibergrade.measurements.LOT_ID_RULE`), so it cannot leave the
    certificate folder (``C/../x``)."""
    bad = first_bad_lot_id(col)
    if bad is not None:
        value, problem = bad
        raise t.error(
            list(col).index(value),
            f"{name} {value[:40]!r} {problem}",
            expected=f"a {name} of {LOT_ID_RULE}",
        )


def _unique(t: _Table, name: str, col: Sequence[str]) -> None:
    first: dict[str, int] = {}
    for i, s in enumerate(col):
        j = first.setdefault(s, i)
        if j != i:
            raise t.error(
                i,
                f"duplicate {name} {s!r}: already on line {t.line(j)}",
                expected=f"each {name} once",
            )


def _bools(t: _Table, name: str, *, optional: bool) -> np.ndarray:
    """float64 column: 1.0 yes, 0.0 no, NaN not recorded (optional columns only)."""
    out = np.full(t.n_rows, np.nan)
    for i, s in enumerate(t.columns[name]):
        key = s.strip().lower()
        if not key and optional:
            continue
        b = _BOOLEANS.get(key)
        if b is None:
            what = "is empty" if not key else f"{s.strip()!r} is not a yes/no value"
            raise t.error(i, f"{name} {what}", expected="yes/no, true/false or 1/0")
        out[i] = 1.0 if b else 0.0
    return out


def _numbers(t: _Table, name: str, *, optional: bool) -> np.ndarray:
    """float64 column, finite; empty cells of optional columns become NaN (not recorded)."""
    raw = t.columns[name]
    empty = np.array([not s.strip() for s in raw], dtype=np.bool_) if optional else None
    if empty is not None and empty.any():
        t.columns[name] = [("0" if e else s) for s, e in zip(raw, empty.tolist(), strict=True)]
    v = _float_column(t, name)
    _finite_problem(t, name, v)
    t.columns[name] = raw
    if empty is not None:
        v[empty] = np.nan
    return v


def _refuse_where(t: _Table, name: str, bad: np.ndarray, problem: str, expected: str) -> None:
    idx = np.flatnonzero(bad)
    if idx.size:
        i = int(idx[0])
        raise t.error(
            i,
            f"{name} {t.columns[name][i].strip()!r} {problem}; values are refused, never clipped",
            expected=expected,
        )


def _times(t: _Table, name: str, *, optional: bool) -> tuple[list[str | None], list[datetime]]:
    texts: list[str | None] = []
    parsed: list[datetime] = []
    for i, s in enumerate(t.columns[name]):
        s = s.strip()
        if not s and optional:
            texts.append(None)
            continue
        try:
            dt = datetime.fromisoformat(s)
        except ValueError:
            raise t.error(
                i,
                f"{name} {s!r} is not an ISO 8601 time" if s else f"{name} is empty",
                expected="an ISO 8601 date and time such as 2026-03-02T08:15:00+05:00",
            ) from None
        texts.append(s)
        parsed.append(dt)
    return texts, parsed


def _outside(v: np.ndarray, lo: float, hi: float, what: str) -> tuple[np.ndarray, str, str]:
    """Where ``v`` lies outside ``lo .. hi`` (inclusive), and the words of the refusal."""
    return (v < lo) | (v > hi), f"is outside {lo:g} to {hi:g}", f"{what} from {lo:g} to {hi:g}"


def read_carcass_csv(
    path: PathLike,
    *,
    scale_of: Callable[[str], ScaleLimit] | None = None,
    default_scale: str | None = None,
) -> CarcassBatch:
    """Read and validate a whole carcass CSV (see the module docstring).

    ``scale_of`` turns a scale profile name into that scale's Max (raising a
    :class:`~fibergrade.errors.FibergradeError` for an unknown profile); ``default_scale`` is
    the profile of rows without a ``scale_profile``. Any problem raises
    :class:`~fibergrade.errors.InputError` naming the file, the line and what was expected.
    """
    t = _read_table(
        path,
        CARCASS_COLUMNS,
        OPTIONAL_COLUMNS,
        extra="refuse",
        kind="carcass CSV",
        nothing="no carcasses",
    )
    n = t.n_rows
    cols: dict[str, list[Any]] = {}
    carcass_ids = _ids(t, "carcass_id")
    _file_name_safe(t, "carcass_id", carcass_ids)
    animal_ids = _ids(t, "animal_id")
    _unique(t, "carcass_id", carcass_ids)
    _unique(t, "animal_id", animal_ids)
    cols["carcass_id"] = carcass_ids
    cols["animal_id"] = animal_ids
    cols["lot_id"] = _ids(t, "lot_id")

    sexes = []
    for i, s in enumerate(t.columns["sex"]):
        v = SEXES.get(s.strip().lower())
        if v is None:
            raise t.error(i, f"sex {s.strip()!r} is not known", expected=", ".join(sorted(SEXES)))
        sexes.append(v)
    cols["sex"] = sexes
    ssc = _bools(t, "ssc", optional=False)
    female_ssc = (np.array(sexes, dtype=object) == "female") & (ssc == 1.0)
    if female_ssc.any():
        raise t.error(
            int(np.flatnonzero(female_ssc)[0]),
            "ssc is yes on a female; secondary sexual characteristics are those of males",
            expected="ssc no for an ewe, or the sex corrected",
        )
    cols["ssc"] = (ssc == 1.0).tolist()

    teeth = {}
    for name in ("incisors_erupted", "incisors_in_wear"):
        v = _int_column(t, name)
        _refuse_where(t, name, v < 0, "is negative", f"0 to {MAX_INCISORS} permanent incisors")
        _refuse_where(
            t,
            name,
            v > MAX_INCISORS,
            f"is more than the {MAX_INCISORS} incisors a sheep has",
            f"0 to {MAX_INCISORS} permanent incisors",
        )
        teeth[name] = v
        cols[name] = v.tolist()
    _refuse_where(
        t,
        "incisors_in_wear",
        teeth["incisors_in_wear"] > teeth["incisors_erupted"],
        "is more than incisors_erupted",
        "incisors in wear <= incisors erupted",
    )

    w = _numbers(t, "hscw_kg", optional=False)
    _refuse_where(t, "hscw_kg", w <= 0, "is not above zero", "a carcass weight in kg > 0")
    cols["hscw_kg"] = w.tolist()
    gr = _numbers(t, "gr_mm", optional=False)
    _refuse_where(t, "gr_mm", gr < 0, "is negative", "a GR tissue depth in mm >= 0")
    cols["gr_mm"] = gr.tolist()
    ph = _numbers(t, "ph_ultimate", optional=False)
    _refuse_where(
        t,
        "ph_ultimate",
        (ph < PH_MIN) | (ph > PH_MAX),
        f"is outside {PH_MIN} to {PH_MAX}",
        f"an ultimate pH from {PH_MIN} to {PH_MAX}",
    )
    cols["ph_ultimate"] = ph.tolist()
    temp = _numbers(t, "temp_c", optional=False)
    _refuse_where(t, "temp_c", *_outside(temp, TEMP_MIN_C, TEMP_MAX_C, "a carcass temperature"))
    cols["temp_c"] = temp.tolist()
    lstar = _numbers(t, "l_star", optional=False)
    _refuse_where(
        t, "l_star", (lstar < 0) | (lstar > 100), "is outside 0 to 100", "CIELAB L* from 0 to 100"
    )
    cols["l_star"] = lstar.tolist()
    for name in ("a_star", "b_star"):
        v = _numbers(t, name, optional=False)
        _refuse_where(t, name, *_outside(v, AB_MIN, AB_MAX, f"CIELAB {name[0]}*"))
        cols[name] = v.tolist()

    s_text, s_time = _times(t, "slaughtered_at", optional=False)
    w_text, w_time = _times(t, "weighed_at", optional=False)
    delay = np.empty(n, dtype=np.float64)
    for i, (a, b) in enumerate(zip(s_time, w_time, strict=True)):
        if (a.tzinfo is None) != (b.tzinfo is None):
            raise t.error(
                i,
                "slaughtered_at and weighed_at mix a time with a UTC offset and one without",
                expected="both times with an offset (such as +05:00) or both without",
            )
        delay[i] = (b - a).total_seconds()
    if (delay < 0).any():
        i = int(np.flatnonzero(delay < 0)[0])
        raise t.error(
            i,
            f"weighed_at {w_text[i]} is before slaughtered_at {s_text[i]}",
            expected="weighing after slaughter (sticking)",
        )
    cols["slaughtered_at"] = s_text
    cols["weighed_at"] = w_text
    cols["weigh_delay_s"] = delay.tolist()

    present = set(t.columns)
    for name in _OPT_TEXT:
        if name in present:
            vals = [s.strip() or None for s in t.columns[name]]
            if name.endswith("_at"):
                vals = _times(t, name, optional=True)[0]
            cols[name] = vals
        else:
            cols[name] = [None] * n
    for i, mode in enumerate(cols["weight_mode"]):
        if mode is not None and mode.lower() not in WEIGHT_MODES:
            raise t.error(i, f"weight_mode {mode!r} is not known", expected="stable or immediate")
    cols["weight_mode"] = [m.lower() if m else None for m in cols["weight_mode"]]
    for name in _OPT_BOOL:
        vals = _bools(t, name, optional=True) if name in present else np.full(n, np.nan)
        cols[name] = [None if np.isnan(x) else bool(x) for x in vals.tolist()]
    for name in (*_OPT_NONNEG, *_OPT_FLOAT):
        if name not in present:
            cols[name] = [None] * n
            continue
        v = _numbers(t, name, optional=True)
        if name in _OPT_NONNEG:
            _refuse_where(t, name, v < 0, "is negative", f"{name} >= 0")
        else:  # a temperature; empty cells (NaN) are "not recorded"
            bad, why, expected = _outside(v, TEMP_MIN_C, TEMP_MAX_C, "a carcass temperature")
            _refuse_where(t, name, bad & ~np.isnan(v), why, expected)
        cols[name] = [None if np.isnan(x) else x for x in v.tolist()]

    _check_scale_max(t, cols, w, scale_of, default_scale)
    return CarcassBatch(path=str(path), columns=cols, lines=t.lines.tolist())


def _check_scale_max(
    t: _Table,
    cols: dict[str, list[Any]],
    weights: np.ndarray,
    scale_of: Callable[[str], ScaleLimit] | None,
    default_scale: str | None,
) -> None:
    """Refuse weights above the Max of the scale that gave them; record the Max used."""
    max_kg = np.full(weights.size, np.nan)
    profiles: list[str | None] = []
    cache: dict[str, ScaleLimit] = {}
    for i, given in enumerate(cols["scale_profile"]):
        name = given or default_scale
        limit = None
        if name is not None:
            if scale_of is None:
                raise t.error(i, f"scale_profile {name!r} cannot be looked up here")
            if name not in cache:
                try:
                    cache[name] = scale_of(name)
                except FibergradeError as exc:
                    raise t.error(
                        i,
                        f"scale_profile {name!r}: {exc}",
                        expected="the name of a scale instrument profile (see instruments/)",
                    ) from None
            limit = cache[name]
        if limit is not None:
            max_kg[i] = limit.max_kg
            profiles.append(limit.profile)
        else:
            profiles.append(None)
    over = weights > max_kg  # False where the scale is unknown (NaN)
    if over.any():
        i = int(np.flatnonzero(over)[0])
        w, top = weights[i], max_kg[i]  # far above the Max, yet within it if read as grams:
        grams = " (in grams? the column is in kilograms)" if 10 * top <= w <= 1000 * top else ""
        raise t.error(
            i,
            f"hscw_kg {w:g} is above the Max ({top:g} kg) of scale profile "
            f"{profiles[i]!r}{grams}; values are refused, never clipped",
            expected=f"a weight the scale can weigh, <= {max_kg[i]:g} kg",
        )
    cols["scale_profile"] = profiles
    cols["scale_max_kg"] = [None if np.isnan(x) else x for x in max_kg.tolist()]
