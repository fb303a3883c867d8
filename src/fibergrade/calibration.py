"""Instrument calibration: reference sets, fitted lines, QC checks, and their use in grading.

Facts this module rests on: ``shared/reference/fibre.md`` ("Calibration: Interwoollabs IH
standard tops" and "Instruments"). Design: ``shared/DESIGN.md`` (calibration is per
instrument, dated, applied on read; raw stays raw).

Reference sets
    One TOML file per series in ``calibration/references/`` (see ``ih-23.toml``), found by
    name (the file's ``reference.id``/stem) in the directories of ``FIBERGRADE_REFERENCES``
    (``os.pathsep``-separated), ``./calibration/references`` and the source checkout's
    ``calibration/references``; or given as a path. The loader refuses unknown keys, missing
    fields and values of the wrong type, naming the file and key.

Fit
    Least squares of the assigned MFD on the measured MFD of each top:
    ``assigned = intercept + slope * measured``. Every fibre diameter ``d`` of a lot from the
    instrument is corrected to ``d' = intercept + slope * d``. A linear map of every fibre
    makes the corrected MFD ``intercept + slope * MFD`` and scales the SD by ``slope``
    (``SD' = slope * SD``; CV follows from both); that is the SD/CV correction, and it is
    why the correction is applied per fibre before the distribution core rather than to
    figures afterwards. When the measurements file carries CVs, the corrected CV of each top
    is reported against its assigned CV for information; CV does not gate the fit.

    A fit is refused (:class:`CalibrationRefused`) with fewer than :data:`MIN_TOPS` tops,
    with any residual above :data:`RESIDUAL_TOLERANCE_UM`, with a slope that is not
    positive, or when the reference set is not valid on the day. Both limits are the
    project's own choice: no source for them was found (they are marked [unsourced]).

Records (``results/calibration`` and ``results/qc`` in the store)
    Written through :meth:`fibergrade.store.Store.put_result`, so each is named by the
    SHA-256 of its canonical JSON, travels with the store, and an edit after the fact fails
    the digest check when it is read (``StoreCorruptError``). The state of an instrument is
    derived from the records, never stored: its latest calibration, and any QC check of
    that calibration recorded after it. States: ``valid``, ``expired`` (past
    ``expires_at``), ``suspended`` (a later QC check failed), ``base-invalid`` (a bias
    calibration whose base calibration is no longer the other instrument's valid one) and
    ``uncalibrated`` (no record). A new calibration supersedes everything before it, so
    recalibrating a suspended instrument is always possible.

Bias corrections
    A bias between instruments (fibre.md: OFDA4000 reads MFD +0.16 um against Laserscan on
    601 tops) is a calibration too: ``d' = base_intercept + base_slope * (d - bias)``, where
    the base line is the other instrument's valid calibration, whose range and expiry it
    inherits. Only the MFD offset is corrected; the published SD difference (-0.11 um) is not
    a linear-in-diameter effect and is left uncorrected (recorded in the note).

Grading
    :func:`lot_calibrations` finds each lot's calibration by ``LotMeta.instrument_id``.
    Rule for lots without an instrument id: they are graded on raw diameters, marked
    ``uncalibrated`` with a ``calibration_note``, and not refused (the instrument cannot be
    known, so there is nothing to gate on). Lots whose instrument has no valid calibration
    are refused (:class:`NoValidCalibrationError`) unless ``allow_uncalibrated`` is given,
    and then graded raw with ``uncalibrated: true``.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from fibergrade import __version__
from fibergrade.adapters.interchange import _FLOAT_RE
from fibergrade.errors import FibergradeError, InputError
from fibergrade.measurements import (
    DIAMETER_MAX_UM,
    MM_SUSPECT_BELOW_UM,
    FibreLots,
    HistogramLots,
    LotMeta,
    diameter_problem,
)

#: fewest tops a fit may use [unsourced: the project's choice; fibre.md says eight tops
#: calibrate Airflow, Laserscan and OFDA, and a line through fewer than five leaves most of
#: the range unsupported]
MIN_TOPS = 5
#: largest |assigned - fitted| MFD of any top, um [unsourced: the project's choice]
RESIDUAL_TOLERANCE_UM = 0.5
#: default |assigned - corrected| MFD a daily QC check may show, um [unsourced: project's]
QC_TOLERANCE_UM = 0.5
#: default days a calibration stays valid (capped by the reference set's validity)
#: [unsourced: the project's choice]
CALIBRATION_VALID_DAYS = 90

STATES = ("valid", "expired", "suspended", "base-invalid", "uncalibrated")


# --------------------------------------------------------------------------- errors


class CalibrationError(FibergradeError):
    """Base of calibration errors."""

    exit_code = 4


class ReferenceSetError(CalibrationError):
    """A reference-set file is missing, unknown or malformed."""

    exit_code = 2


class CalibrationRefused(CalibrationError):
    """A fit, bias correction or QC check that fibergrade will not record, with the reason."""


class QCValueError(CalibrationError):
    """A value typed for a QC check (measured or assigned MFD, tolerance) that cannot be
    one: bad input, exit code 2, never converted (a millimetre figure is named as such)."""

    exit_code = 2


class UnknownTopError(CalibrationError):
    """A top that the reference set does not hold, named by the user (a row of a tops file,
    ``qc --top``): bad input, like an unknown reference set, so exit code 2. The message
    names the set and the tops it holds."""

    exit_code = 2

    def __init__(self, top: str, reference: ReferenceSet, where: str = "") -> None:
        self.top = top
        self.reference_id = reference.id
        super().__init__(
            f"top {top!r}{where} is not in reference set {reference.id} "
            f"(its tops: {', '.join(t.top for t in reference.tops)})"
        )


class NoValidCalibrationError(CalibrationError):
    """Grading (or QC) needs a valid calibration that the instrument does not have."""

    def __init__(self, problems: Sequence[tuple[str, str]], grading: bool = True) -> None:
        self.problems = tuple(problems)
        text = "; ".join(f"instrument {i!r}: {why}" for i, why in self.problems)
        # --uncalibrated is a way out for grading only: a bias correction or a QC check
        # is made against a valid calibration or not at all
        hint = ", or grade with --uncalibrated (recorded on the result)" if grading else ""
        super().__init__(
            f"no valid calibration: {text}. Calibrate with `fibergrade calibrate`{hint}"
        )


# --------------------------------------------------------------------------- time


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="microseconds")


def _parse_time(text: str) -> datetime:
    t = datetime.fromisoformat(text)
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- reference sets


@dataclass(frozen=True)
class ReferenceTop:
    """One reference top: assigned MFD (the value a calibration maps onto) and its CV."""

    top: str
    mfd_um: float
    cv_pct: float
    curvature_deg_mm: float | None = None
    airflow_mfd_um: float | None = None


@dataclass(frozen=True)
class ReferenceSet:
    """A series of reference tops with its source and validity dates."""

    id: str
    title: str
    source: str
    assigned_mfd_column: str
    valid_from: date
    valid_until: date
    validity_source: str
    tops: tuple[ReferenceTop, ...]
    path: str
    digest: str  # SHA-256 of the file's bytes
    note: str | None = None

    def top(self, top: str) -> ReferenceTop | None:
        return next((t for t in self.tops if t.top == top), None)

    def known_top(self, top: str) -> ReferenceTop:
        """The top named ``top``; :class:`UnknownTopError` (naming the set's tops) when the
        set does not hold it."""
        found = self.top(top)
        if found is None:
            raise UnknownTopError(top, self)
        return found

    def ref(self) -> dict[str, Any]:
        """What a calibration record says about its reference set."""
        return {
            "id": self.id,
            "title": self.title,
            "source": self.source,
            "assigned_mfd_column": self.assigned_mfd_column,
            "valid_from": self.valid_from.isoformat(),
            "valid_until": self.valid_until.isoformat(),
            "digest": self.digest,
        }


_REF_KEYS = {
    "id": str,
    "title": str,
    "source": str,
    "assigned_mfd_column": str,
    "valid_from": (str, date),
    "valid_until": (str, date),
    "validity_source": str,
}
_REF_OPTIONAL = {"note": str}
_TOP_KEYS = {"top": str, "mfd_um": (int, float), "cv_pct": (int, float)}
_TOP_OPTIONAL = {"curvature_deg_mm": (int, float), "airflow_mfd_um": (int, float)}


def _check_table(
    d: Any, required: dict[str, Any], optional: dict[str, Any], path: str, where: str
) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise ReferenceSetError(f"{path}: [{where}] must be a table")
    unknown = sorted(set(d) - set(required) - set(optional))
    if unknown:
        raise ReferenceSetError(
            f"{path}: unknown key {where}.{unknown[0]} (expected one of "
            f"{', '.join(sorted({*required, *optional}))})"
        )
    for key, kind in {**required, **optional}.items():
        if key not in d:
            if key in required:
                raise ReferenceSetError(f"{path}: missing {where}.{key}")
            continue
        v = d[key]
        if isinstance(v, bool) or not isinstance(v, kind):
            raise ReferenceSetError(f"{path}: {where}.{key} = {v!r} has the wrong type")
    return d


def _as_date(v: str | date, path: str, key: str) -> date:
    if isinstance(v, datetime):
        return v.date()
    if isinstance(v, date):
        return v
    try:
        return date.fromisoformat(v)
    except ValueError:
        raise ReferenceSetError(
            f"{path}: reference.{key} = {v!r} is not an ISO date (expected YYYY-MM-DD)"
        ) from None


def parse_reference_set(data: bytes, path: str) -> ReferenceSet:
    """Parse a reference-set TOML file strictly (see ``calibration/references/ih-23.toml``)."""
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ReferenceSetError(f"{path}: not a valid UTF-8 TOML file: {e}") from None
    unknown = sorted(set(doc) - {"reference", "tops"})
    if unknown:
        raise ReferenceSetError(
            f"{path}: unknown section [{unknown[0]}] (expected reference, tops)"
        )
    if "reference" not in doc:
        raise ReferenceSetError(f"{path}: missing [reference] section")
    ref = _check_table(doc["reference"], _REF_KEYS, _REF_OPTIONAL, path, "reference")
    raw_tops = doc.get("tops")
    if not isinstance(raw_tops, list) or not raw_tops:
        raise ReferenceSetError(f"{path}: needs at least one [[tops]] entry")
    tops: list[ReferenceTop] = []
    for k, t in enumerate(raw_tops):
        where = f"tops[{k}]"
        _check_table(t, _TOP_KEYS, _TOP_OPTIONAL, path, where)
        problem = diameter_problem(float(t["mfd_um"]))
        if problem:
            raise ReferenceSetError(f"{path}: {where}.mfd_um {problem}")
        if not 0 < float(t["cv_pct"]) < 100:
            raise ReferenceSetError(f"{path}: {where}.cv_pct must lie between 0 and 100 %")
        if any(x.top == t["top"] for x in tops):
            raise ReferenceSetError(f"{path}: top {t['top']!r} is listed twice")
        tops.append(
            ReferenceTop(
                top=t["top"],
                mfd_um=float(t["mfd_um"]),
                cv_pct=float(t["cv_pct"]),
                curvature_deg_mm=(
                    float(t["curvature_deg_mm"]) if "curvature_deg_mm" in t else None
                ),
                airflow_mfd_um=float(t["airflow_mfd_um"]) if "airflow_mfd_um" in t else None,
            )
        )
    valid_from = _as_date(ref["valid_from"], path, "valid_from")
    valid_until = _as_date(ref["valid_until"], path, "valid_until")
    if valid_until < valid_from:
        raise ReferenceSetError(f"{path}: reference.valid_until is before valid_from")
    return ReferenceSet(
        id=ref["id"],
        title=ref["title"],
        source=ref["source"],
        assigned_mfd_column=ref["assigned_mfd_column"],
        valid_from=valid_from,
        valid_until=valid_until,
        validity_source=ref["validity_source"],
        tops=tuple(tops),
        path=path,
        digest=hashlib.sha256(data).hexdigest(),
        note=ref.get("note"),
    )


def reference_dirs() -> list[Path]:
    """Directories searched for reference sets by name, in order (module docstring)."""
    dirs: list[Path] = []
    env = os.environ.get("FIBERGRADE_REFERENCES")
    if env:
        dirs.extend(Path(p) for p in env.split(os.pathsep) if p)
    dirs.append(Path.cwd() / "calibration" / "references")
    # src/fibergrade/calibration.py -> checkout root
    dirs.append(Path(__file__).resolve().parents[2] / "calibration" / "references")
    out: list[Path] = []
    for d in dirs:
        r = d.resolve()
        if r not in out:
            out.append(r)
    return out


def list_reference_sets() -> dict[str, Path]:
    """Every reference-set name (file stem) on the search path, mapped to its file."""
    found: dict[str, Path] = {}
    for d in reference_dirs():
        if d.is_dir():
            for p in sorted(d.glob("*.toml")):
                found.setdefault(p.stem, p)
    return found


def load_reference_set(name_or_path: str | Path) -> ReferenceSet:
    """A reference set by name (``ih-23``) or by path to a ``.toml`` file."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith(".toml") or os.sep in text):
        known = list_reference_sets()
        if text not in known:
            raise ReferenceSetError(
                f"unknown reference set {text!r}; known: {', '.join(sorted(known)) or 'none'} "
                f"(searched {', '.join(str(d) for d in reference_dirs())})"
            )
        path = known[text]
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ReferenceSetError(f"{path}: cannot read reference set: {e}") from None
    return parse_reference_set(data, str(path))


# --------------------------------------------------------------------------- measurements


@dataclass(frozen=True)
class TopMeasurement:
    """What the instrument measured on one reference top."""

    top: str
    measured_mfd_um: float
    measured_cv_pct: float | None = None
    line: int | None = None  # line of the measurements file
    path: str | None = None  # the measurements file, for messages


_MEAS_COLUMNS = ("top", "measured_mfd_um", "measured_cv_pct")


def read_top_measurements(path: str | Path) -> list[TopMeasurement]:
    """Read a measurements CSV: header ``top,measured_mfd_um[,measured_cv_pct]``.

    ``#`` starts a comment line; blank lines are skipped; UTF-8 (a byte-order mark is
    accepted, as by the interchange readers). Each top once. A value that is not a number
    or not a possible diameter is refused with file and line.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        line = bytes(e.object).count(b"\n", 0, e.start) + 1
        raise InputError(p, line, "not UTF-8 text", expected="a UTF-8 CSV file") from None
    except OSError as e:
        raise InputError(p, None, f"cannot read: {e.strerror or e}") from None
    rows = [
        (i + 1, r)
        for i, r in enumerate(csv.reader(text.splitlines()))
        if r and any(c.strip() for c in r) and not r[0].lstrip().startswith("#")
    ]
    expected = "header top,measured_mfd_um[,measured_cv_pct]"
    if not rows:
        raise InputError(p, None, "holds no header and no measurements", expected=expected)
    header_line, header = rows[0]
    cols = [c.strip().lower() for c in header]
    if cols[:2] != ["top", "measured_mfd_um"] or any(c not in _MEAS_COLUMNS for c in cols):
        raise InputError(p, header_line, f"header {','.join(cols)!r}", expected=expected)
    has_cv = "measured_cv_pct" in cols
    out: list[TopMeasurement] = []
    for line, r in rows[1:]:
        if len(r) != len(cols):
            raise InputError(p, line, f"{len(r)} fields", expected=f"{len(cols)} fields")
        top = r[0].strip()
        if not top:
            raise InputError(p, line, "empty top", expected="the top's id in the reference set")
        if any(m.top == top for m in out):
            raise InputError(p, line, f"top {top!r} is listed twice", expected="each top once")
        # the interchange files' decimal numbers: float() alone would also take "1_8.5",
        # other scripts' digits, "nan" and "inf"
        cells = [r[1]] + ([r[2]] if has_cv and r[2].strip() else [])
        for name, cell in zip(cols[1:], cells, strict=False):
            if not _FLOAT_RE.match(cell):
                raise InputError(
                    p, line, f"{name} {cell!r} is not a number", expected="a decimal such as 14.8"
                )
        mfd = float(r[1])
        cv = float(r[2]) if len(cells) == 2 else None
        problem = diameter_problem(mfd)
        if problem:
            raise InputError(p, line, f"measured_mfd_um {mfd!r} {problem}")
        if cv is not None and not (0 < cv < 100):
            raise InputError(p, line, f"measured_cv_pct {cv!r}", expected="0 < CV < 100 %")
        out.append(TopMeasurement(top, mfd, cv, line, str(p)))
    return out


# --------------------------------------------------------------------------- fit


@dataclass(frozen=True)
class LineFit:
    """``assigned = intercept + slope * measured``, fitted by ordinary least squares."""

    intercept: float
    slope: float
    r2: float
    fitted: np.ndarray  # float64[tops]
    residuals: np.ndarray  # assigned - fitted, um


def fit_line(measured: np.ndarray, assigned: np.ndarray) -> LineFit:
    """Ordinary least squares of ``assigned`` on ``measured`` (closed form, numpy)."""
    x = np.asarray(measured, dtype=np.float64)
    y = np.asarray(assigned, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise CalibrationRefused("a line needs at least two (measured, assigned) pairs")
    dx = x - x.mean()
    sxx = float(dx @ dx)
    if sxx == 0.0:
        raise CalibrationRefused("every top was measured at the same MFD; no line fits")
    slope = float(dx @ (y - y.mean())) / sxx
    intercept = float(y.mean() - slope * x.mean())
    fitted = intercept + slope * x
    resid = y - fitted
    dy = y - y.mean()
    syy = float(dy @ dy)
    r2 = 1.0 - float(resid @ resid) / syy if syy > 0 else 1.0
    return LineFit(intercept, slope, r2, fitted, resid)


# --------------------------------------------------------------------------- records


def calibrate(
    store: Any,
    instrument_id: str,
    reference: ReferenceSet,
    measurements: Sequence[TopMeasurement],
    *,
    operator: str | None = None,
    source_name: str | None = None,
    source_digest: str | None = None,
    valid_days: int = CALIBRATION_VALID_DAYS,
    now: datetime | None = None,
) -> tuple[str, dict[str, Any]]:
    """Fit, check and store a calibration record; returns ``(record id, record)``.

    Refuses without storing anything: a top unknown to the reference set
    (:class:`UnknownTopError`, bad input, naming its file and line); and
    (:class:`CalibrationRefused`) fewer than :data:`MIN_TOPS` tops, a non-positive slope,
    any residual above :data:`RESIDUAL_TOLERANCE_UM`, a reference set not valid today.
    """
    t = now or _now()
    _check_instrument_id(instrument_id)
    if valid_days < 1:
        raise CalibrationRefused(f"valid_days must be >= 1, got {valid_days}")
    day = t.date()
    if not reference.valid_from <= day <= reference.valid_until:
        raise CalibrationRefused(
            f"reference set {reference.id} is valid {reference.valid_from} .. "
            f"{reference.valid_until}, not on {day}"
        )
    for m in measurements:
        if reference.top(m.top) is None:
            where = ", ".join(
                x for x in (m.path, f"line {m.line}" if m.line else None) if x is not None
            )
            raise UnknownTopError(m.top, reference, f" ({where})" if where else "")
    if len(measurements) < MIN_TOPS:
        raise CalibrationRefused(
            f"{len(measurements)} top(s) measured; a calibration needs at least {MIN_TOPS} "
            f"tops of {reference.id} (fibergrade's minimum, calibration.MIN_TOPS)"
        )
    tops = [reference.top(m.top) for m in measurements]
    x = np.array([m.measured_mfd_um for m in measurements])
    y = np.array([r.mfd_um for r in tops if r is not None])
    fit = fit_line(x, y)
    if fit.slope <= 0:
        raise CalibrationRefused(f"fitted slope {fit.slope:.4f} is not positive")
    worst = int(np.argmax(np.abs(fit.residuals)))
    if abs(fit.residuals[worst]) > RESIDUAL_TOLERANCE_UM:
        raise CalibrationRefused(
            f"top {measurements[worst].top}: residual {fit.residuals[worst]:+.3f} um exceeds "
            f"the tolerance of {RESIDUAL_TOLERANCE_UM} um (calibration.RESIDUAL_TOLERANCE_UM); "
            "re-measure that top or check the instrument"
        )
    top_recs = []
    for m, r, f, res in zip(measurements, tops, fit.fitted, fit.residuals, strict=True):
        assert r is not None
        rec: dict[str, Any] = {
            "top": m.top,
            "measured_mfd_um": m.measured_mfd_um,
            "assigned_mfd_um": r.mfd_um,
            "fitted_mfd_um": float(f),
            "residual_um": float(res),
            "assigned_cv_pct": r.cv_pct,
            "measured_cv_pct": m.measured_cv_pct,
            "corrected_cv_pct": None,
            "cv_residual_pct": None,
        }
        if m.measured_cv_pct is not None:
            sd = m.measured_cv_pct * m.measured_mfd_um / 100.0
            cv = 100.0 * fit.slope * sd / float(f)
            rec["corrected_cv_pct"] = cv
            rec["cv_residual_pct"] = r.cv_pct - cv
        top_recs.append(rec)
    expires = _expiry(
        t, valid_days, datetime.combine(reference.valid_until, datetime.max.time(), tzinfo=UTC)
    )
    payload = {
        "kind": "calibration",
        "method": "reference-tops",
        "instrument_id": instrument_id,
        "reference": reference.ref(),
        "tops": top_recs,
        "line": {"intercept_um": fit.intercept, "slope": fit.slope},
        "r2": fit.r2,
        "max_abs_residual_um": float(abs(fit.residuals[worst])),
        "residual_tolerance_um": RESIDUAL_TOLERANCE_UM,
        "min_tops": MIN_TOPS,
        "range_um": [float(y.min()), float(y.max())],
        "sd_correction": "linear per fibre: SD' = slope * SD",
        "measurements": {"source_name": source_name, "source_digest": source_digest},
        "operator": operator,
        "created_at": _iso(t),
        "expires_at": _iso(expires),
        "software_version": __version__,
    }
    return store.put_result("calibration", payload), payload


def calibrate_bias(
    store: Any,
    instrument_id: str,
    against: str,
    bias_um: float,
    *,
    source: str,
    operator: str | None = None,
    valid_days: int = CALIBRATION_VALID_DAYS,
    now: datetime | None = None,
) -> tuple[str, dict[str, Any]]:
    """Record a bias correction of ``instrument_id`` against ``against``'s valid calibration.

    ``bias_um`` is how much higher ``instrument_id`` reads than ``against`` (fibre.md:
    OFDA4000 vs Laserscan +0.16 um). Line: ``d' = a_b + b_b * (d - bias)``.
    """
    t = now or _now()
    _check_instrument_id(instrument_id)
    if instrument_id == against:
        raise CalibrationRefused("a bias correction needs two different instruments")
    if not math.isfinite(bias_um) or abs(bias_um) > RESIDUAL_TOLERANCE_UM * 10:
        raise CalibrationRefused(
            f"bias {bias_um!r} um is not a plausible inter-instrument bias "
            f"(|bias| <= {RESIDUAL_TOLERANCE_UM * 10:g} um)"
        )
    base = instrument_state(store, against, now=t)
    if base.state != "valid" or base.record is None:
        raise NoValidCalibrationError([(against, base.reason)], grading=False)
    bl = base.record["line"]
    a, b = bl["intercept_um"] - bl["slope"] * bias_um, bl["slope"]
    expires = _expiry(t, valid_days, _parse_time(base.record["expires_at"]))
    payload = {
        "kind": "calibration",
        "method": "bias",
        "instrument_id": instrument_id,
        "against": {"instrument_id": against, "calibration_id": base.calibration_id},
        "bias_um": bias_um,
        "bias_source": source,
        "reference": base.record["reference"],
        "line": {"intercept_um": a, "slope": b},
        "range_um": list(base.record["range_um"]),
        "sd_correction": (
            "linear per fibre: SD' = slope * SD (the base line's slope); an inter-instrument "
            "SD bias is not corrected"
        ),
        "operator": operator,
        "created_at": _iso(t),
        "expires_at": _iso(expires),
        "software_version": __version__,
    }
    return store.put_result("calibration", payload), payload


def _check_instrument_id(instrument_id: str) -> None:
    if not isinstance(instrument_id, str) or not instrument_id.strip():
        raise CalibrationRefused("an instrument id is required")


# --------------------------------------------------------------------------- state


@dataclass(frozen=True)
class InstrumentState:
    """Derived state of one instrument's calibration at a moment."""

    instrument_id: str
    state: str  # one of STATES
    calibration_id: str | None
    record: dict[str, Any] | None
    reason: str
    qc: tuple[tuple[str, dict[str, Any]], ...] = ()  # QC checks of this calibration


def _derive(
    instrument_id: str,
    cals: list[tuple[str, dict[str, Any]]],
    qcs: list[tuple[str, dict[str, Any]]],
    t: datetime,
    done: dict[str, InstrumentState],
    all_cals: dict[str, list[tuple[str, dict[str, Any]]]],
    all_qcs: dict[str, list[tuple[str, dict[str, Any]]]],
) -> InstrumentState:
    if instrument_id in done:
        return done[instrument_id]
    # records of the future (created after t) do not count yet
    cals = [c for c in cals if _parse_time(c[1]["created_at"]) <= t]
    if not cals:
        st = InstrumentState(instrument_id, "uncalibrated", None, None, "no calibration recorded")
        done[instrument_id] = st
        return st
    cid, rec = cals[-1]
    mine = tuple(
        q for q in qcs if q[1].get("calibration_id") == cid and _parse_time(q[1]["created_at"]) <= t
    )
    failed = [q for q in mine if not q[1].get("passed")]
    if failed:
        q = failed[0][1]
        st = InstrumentState(
            instrument_id,
            "suspended",
            cid,
            rec,
            f"suspended by QC check {failed[0][0][:12]} at {q['created_at']}: "
            f"deviation {q['deviation_um']:+.3f} um beyond {q['tolerance_um']} um; "
            "record a new calibration",
            mine,
        )
    elif _parse_time(rec["expires_at"]) < t:
        st = InstrumentState(
            instrument_id,
            "expired",
            cid,
            rec,
            f"calibration {cid[:12]} expired {rec['expires_at']}",
            mine,
        )
    else:
        st = InstrumentState(instrument_id, "valid", cid, rec, "valid", mine)
        against = rec.get("against")
        if against:
            done[instrument_id] = st  # guards against a cycle of bias corrections
            base_id = against["instrument_id"]
            base = _derive(
                base_id,
                all_cals.get(base_id, []),
                all_qcs.get(base_id, []),
                t,
                done,
                all_cals,
                all_qcs,
            )
            if base.state != "valid" or base.calibration_id != against["calibration_id"]:
                st = InstrumentState(
                    instrument_id,
                    "base-invalid",
                    cid,
                    rec,
                    f"bias correction against {base_id!r} calibration "
                    f"{against['calibration_id'][:12]}, which is no longer that instrument's "
                    f"valid calibration ({base.state}); record a new bias correction",
                    mine,
                )
    done[instrument_id] = st
    return st


#: what the state of an instrument is derived from, per record kind: key -> type
_RECORD_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "calibration": {
        "instrument_id": str,
        "created_at": str,
        "expires_at": str,
        "method": str,
        "line": dict,
        "reference": dict,
        "range_um": list,
    },
    "qc": {
        "instrument_id": str,
        "created_at": str,
        "passed": bool,
        "deviation_um": (int, float),
        "tolerance_um": (int, float),
    },
}


def _checked_records(store: Any, kind: str) -> list[tuple[str, dict[str, Any]]]:
    """The store's ``kind`` records, each holding what an instrument's state is derived
    from; one that does not (it can only have been written by hand, since the store logs
    what this module writes) is :class:`~fibergrade.errors.StoreCorruptError` naming it,
    not a ``KeyError`` from deep inside."""
    from fibergrade.errors import StoreCorruptError

    out = store.results(kind)
    for rid, rec in out:
        problem = next(
            (
                f"{key} is missing or not {getattr(typ, '__name__', 'a number')}"
                for key, typ in _RECORD_FIELDS[kind].items()
                if not isinstance(rec.get(key), typ)
            ),
            None,
        )
        if problem is None:
            try:
                for key in ("created_at", "expires_at"):
                    if key in _RECORD_FIELDS[kind]:
                        _parse_time(rec[key])
                if kind == "calibration":
                    numbers = [rec["line"]["intercept_um"], rec["line"]["slope"]]
                    numbers += list(rec["range_um"])
                    if len(rec["range_um"]) != 2 or not all(
                        isinstance(x, int | float) and math.isfinite(x) for x in numbers
                    ):
                        raise ValueError("the line and range_um must be finite numbers")
                    if not isinstance(rec["reference"].get("id"), str):
                        raise ValueError("reference.id is missing")
                    against = rec.get("against")
                    if against is not None and not (
                        isinstance(against, dict)
                        and isinstance(against.get("instrument_id"), str)
                        and isinstance(against.get("calibration_id"), str)
                    ):
                        raise ValueError("against must name an instrument and its calibration")
            except (ValueError, TypeError, KeyError) as exc:
                problem = f"a time, the line or the reference is unreadable ({exc})"
        if problem is not None:
            raise StoreCorruptError(
                f"{store.root}: the {kind} record {rid[:16]}... is not one this software "
                f"writes: {problem}"
            )
    return out


def instrument_states(store: Any, now: datetime | None = None) -> dict[str, InstrumentState]:
    """The derived state of every instrument with a calibration record."""
    t = now or _now()
    all_cals: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for cid, rec in _checked_records(store, "calibration"):
        all_cals.setdefault(rec["instrument_id"], []).append((cid, rec))
    all_qcs: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for qid, rec in _checked_records(store, "qc"):
        all_qcs.setdefault(rec["instrument_id"], []).append((qid, rec))
    done: dict[str, InstrumentState] = {}
    for inst in sorted(all_cals):
        _derive(inst, all_cals[inst], all_qcs.get(inst, []), t, done, all_cals, all_qcs)
    return {k: done[k] for k in sorted(done)}


def instrument_state(
    store: Any, instrument_id: str, now: datetime | None = None
) -> InstrumentState:
    """The derived state of one instrument (``uncalibrated`` if it has no record)."""
    return instrument_states(store, now).get(
        instrument_id,
        InstrumentState(instrument_id, "uncalibrated", None, None, "no calibration recorded"),
    )


def record_qc(
    store: Any,
    instrument_id: str,
    measured_mfd_um: float,
    assigned_mfd_um: float,
    *,
    sample: str | None = None,
    tolerance_um: float = QC_TOLERANCE_UM,
    operator: str | None = None,
    now: datetime | None = None,
) -> tuple[str, dict[str, Any]]:
    """Check a QC sample through the instrument's valid calibration and record the check.

    The measured MFD is corrected through the calibration in force and compared with the
    assigned value; outside ``tolerance_um`` the check fails and suspends the instrument
    until a new calibration is recorded. Needs a valid calibration (else
    :class:`NoValidCalibrationError`). A value that cannot be an MFD (NaN, <= 0, above
    200 um, below 1 um as a millimetre figure would be) or a tolerance that is not positive
    is :class:`QCValueError` (bad input), checked before anything else.
    """
    t = now or _now()
    for name, v in (("measured", measured_mfd_um), ("assigned", assigned_mfd_um)):
        problem = diameter_problem(float(v))
        if problem:  # below 1 um: "looks like millimetres", the import's unit hint
            raise QCValueError(f"QC {name} MFD {v!r} um {problem}")
    if not (math.isfinite(tolerance_um) and tolerance_um > 0):
        raise QCValueError(f"QC tolerance must be a positive number, got {tolerance_um!r}")
    st = instrument_state(store, instrument_id, now=t)
    if st.state != "valid" or st.record is None or st.calibration_id is None:
        raise NoValidCalibrationError([(instrument_id, st.reason)], grading=False)
    line = st.record["line"]
    corrected = line["intercept_um"] + line["slope"] * float(measured_mfd_um)
    deviation = corrected - float(assigned_mfd_um)
    payload = {
        "kind": "qc",
        "instrument_id": instrument_id,
        "calibration_id": st.calibration_id,
        "sample": sample,
        "measured_mfd_um": float(measured_mfd_um),
        "assigned_mfd_um": float(assigned_mfd_um),
        "corrected_mfd_um": corrected,
        "deviation_um": deviation,
        "tolerance_um": tolerance_um,
        "passed": bool(abs(deviation) <= tolerance_um),
        "operator": operator,
        "created_at": _iso(t),
        "software_version": __version__,
    }
    return store.put_result("qc", payload), payload


def calibration_listing(store: Any, now: datetime | None = None) -> list[dict[str, Any]]:
    """Every calibration record with its state (``superseded`` for all but the latest)."""
    states = instrument_states(store, now)
    qcs = store.results("qc")
    rows = []
    for cid, rec in store.results("calibration"):
        st = states[rec["instrument_id"]]
        current = st.calibration_id == cid
        mine = [q for q in qcs if q[1].get("calibration_id") == cid]
        rows.append(
            {
                "id": cid,
                "instrument_id": rec["instrument_id"],
                "method": rec["method"],
                "reference": rec["reference"]["id"],
                "against": rec.get("against"),
                "intercept_um": rec["line"]["intercept_um"],
                "slope": rec["line"]["slope"],
                "r2": rec.get("r2"),
                "range_um": rec["range_um"],
                "operator": rec.get("operator"),
                "created_at": rec["created_at"],
                "expires_at": rec["expires_at"],
                "state": st.state if current else "superseded",
                "reason": st.reason if current else "a later calibration replaces it",
                "qc_checks": len(mine),
                "qc_failed": sum(1 for q in mine if not q[1].get("passed")),
            }
        )
    return rows


# --------------------------------------------------------------------------- grading


#: the calibration note of a lot whose metadata names no instrument
NO_INSTRUMENT_NOTE = "lot has no instrument id; graded on raw diameters"


@dataclass(frozen=True)
class CalibrationFields:
    """What grade records say about calibration, for some lots, compactly.

    ``table`` holds the run's distinct rows ``(calibration id, range low, range high,
    note)`` (the range NaN and the id None where a lot is graded raw); ``row`` says which
    row each lot has. A run's lots share a few calibrations, one per instrument, so a
    grading task carries its lots' share as a small array, not as per-lot tuples (a task
    description went from 28 KB to 6 KB, and Dask copies it three times).
    """

    table: tuple[tuple[str | None, float, float, str | None], ...]
    row: np.ndarray  # int32[lots], into table

    def select(self, idxs: Sequence[int] | np.ndarray) -> CalibrationFields:
        """The rows of the given lots, in that order (a grading task's share of a run)."""
        return CalibrationFields(self.table, self.row[np.asarray(idxs, dtype=np.int64)])

    def record_fields(self, mfd_um: np.ndarray) -> list[dict[str, Any]]:
        """What each grade record says about calibration, given the lots' corrected MFD."""
        mfd = np.asarray(mfd_um, dtype=np.float64)
        lo = np.array([t[1] for t in self.table], dtype=np.float64)[self.row]
        hi = np.array([t[2] for t in self.table], dtype=np.float64)[self.row]
        with np.errstate(invalid="ignore"):
            below = mfd < lo
            above = mfd > hi
        flag = np.where(below, "below", np.where(above, "above", "")).tolist()
        out = []
        for f, r, low, high in zip(flag, self.row.tolist(), lo.tolist(), hi.tolist(), strict=True):
            cid, _, _, note = self.table[r]
            out.append(
                {
                    "calibration": cid,
                    "uncalibrated": cid is None,
                    "calibration_range_um": None if cid is None else [low, high],
                    "calibration_range_flag": (f or None) if cid is not None else None,
                    "calibration_note": note,
                }
            )
        return out


@dataclass(frozen=True)
class LotCalibrations:
    """Per-lot correction lines (aligned with the lots being graded) and record fields."""

    intercept: np.ndarray  # float64[lots]; 0 where graded raw
    slope: np.ndarray  # float64[lots]; 1 where graded raw
    fields: CalibrationFields  # what each lot's grade record says about calibration

    @property
    def identity(self) -> bool:
        """True when no lot is corrected (grading is then exactly raw)."""
        return bool(np.all(self.intercept == 0.0) and np.all(self.slope == 1.0))


def lot_calibrations(
    store: Any,
    metas: Sequence[LotMeta],
    *,
    allow_uncalibrated: bool = False,
    now: datetime | None = None,
) -> LotCalibrations:
    """The calibration each lot is graded with (see the module docstring for the rules)."""
    n = len(metas)
    a = np.zeros(n)
    b = np.ones(n)
    instruments = sorted({m.instrument_id for m in metas if m.instrument_id})
    states = instrument_states(store, now) if instruments else {}
    problems = []
    for inst in instruments:
        st = states.get(inst) or InstrumentState(
            inst, "uncalibrated", None, None, "no calibration recorded"
        )
        if st.state != "valid":
            problems.append((inst, st.reason))
    if problems and not allow_uncalibrated:
        raise NoValidCalibrationError(problems)
    inst_of = np.array([m.instrument_id or "" for m in metas], dtype=object)
    nan = float("nan")
    table: list[tuple[str | None, float, float, str | None]] = [
        (None, nan, nan, NO_INSTRUMENT_NOTE)
    ]
    row = np.zeros(n, dtype=np.int32)  # row 0: no instrument
    for inst in instruments:  # one pass per instrument, not per lot
        mask = inst_of == inst
        row[mask] = len(table)
        st = states.get(inst)
        if st is None or st.state != "valid" or st.record is None:
            reason = st.reason if st is not None else "no calibration recorded"
            table.append((None, nan, nan, f"graded uncalibrated (--uncalibrated): {reason}"))
            continue
        rec = st.record
        a[mask], b[mask] = rec["line"]["intercept_um"], rec["line"]["slope"]
        lo, hi = rec["range_um"]
        table.append((st.calibration_id, float(lo), float(hi), None))
    return LotCalibrations(a, b, CalibrationFields(tuple(table), row))


def _expiry(t: datetime, valid_days: int, cap: datetime) -> datetime:
    """``valid_days`` after ``t``, capped at ``cap`` (a count of days past the calendar's
    end is capped as well, instead of overflowing)."""
    try:
        return min(t + timedelta(days=valid_days), cap)
    except OverflowError:
        return cap


def correct_fibres(table: FibreLots, intercept: np.ndarray, slope: np.ndarray) -> FibreLots:
    """Per-fibre ``d' = intercept + slope * d`` with each lot's line; a new table (raw kept).

    A corrected diameter outside the physical limits is refused later by the core, never
    clipped.
    """
    a = np.asarray(intercept, dtype=np.float64)
    b = np.asarray(slope, dtype=np.float64)
    d = table.diameter_um
    if a.size and np.all(a == a[0]) and np.all(b == b[0]):
        if a[0] == 0.0 and b[0] == 1.0:
            return table
        new = np.float32(b[0]) * d + np.float32(a[0])
    else:
        counts = np.diff(table.offsets)
        new = np.repeat(b.astype(np.float32), counts) * d + np.repeat(a.astype(np.float32), counts)
    return replace(table, diameter_um=new.astype(np.float32, copy=False))


def correct_table(
    table: FibreLots | HistogramLots, intercept: np.ndarray, slope: np.ndarray
) -> FibreLots | HistogramLots:
    """:func:`correct_fibres` or :func:`correct_histograms`, whichever the table needs."""
    if isinstance(table, FibreLots):
        return correct_fibres(table, intercept, slope)
    return correct_histograms(table, intercept, slope)


def _refuse_mapped_classes(
    hist: HistogramLots,
    lo: np.ndarray,
    hi: np.ndarray,
    per_lot: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
) -> None:
    """A class holding fibres that a lot's calibration line maps, in part, above
    :data:`DIAMETER_MAX_UM` or below 1 um (fibres the per-fibre path refuses one by one)
    is :class:`CalibrationRefused`, naming the lot, the class and the line: a physical
    value is never clipped. (An empty class mapped out of range holds nothing to clip;
    :func:`correct_histograms` drops it.)"""
    with np.errstate(invalid="ignore"):
        bad = (hist.counts > 0) & ((lo < MM_SUSPECT_BELOW_UM) | (hi > DIAMETER_MAX_UM))
    if not bad.any():
        return
    k = int(np.flatnonzero(bad)[0])
    lot = int(np.searchsorted(np.cumsum(per_lot), k, side="right"))
    raise CalibrationRefused(
        f"lot {hist.lot_ids[lot]!r}: the class [{hist.lower_um[k]:g}, {hist.upper_um[k]:g}) "
        f"um ({int(hist.counts[k])} fibre(s)) is in range as measured, but the instrument's "
        f"calibration line (d' = {a[lot]:+.4f} + {b[lot]:.5f} d) maps it to "
        f"[{lo[k]:.3f}, {hi[k]:.3f}) um, outside 1 .. {DIAMETER_MAX_UM:g} um, and a physical "
        "value is never clipped. Nothing was graded: recalibrate the instrument, or grade "
        "the other lots by naming them"
    )


def correct_histograms(
    hist: HistogramLots, intercept: np.ndarray, slope: np.ndarray
) -> HistogramLots:
    """Map class bounds through each lot's line and re-cut them on whole micrometres.

    A mapped class ``[a + b*lower, a + b*upper)`` generally straddles a whole micrometre,
    which the core's 1-um histogram does not accept; it is cut at every whole micrometre it
    crosses, and its count is shared between the pieces in proportion to their width (the
    core's own even-spread assumption), rounded cumulatively so every class keeps its count
    exactly. Lots with the identity line are left as they are.
    """
    a = np.asarray(intercept, dtype=np.float64)
    b = np.asarray(slope, dtype=np.float64)
    if np.all(a == 0.0) and np.all(b == 1.0):
        return hist
    per_lot = np.diff(hist.offsets)
    ac = np.repeat(a, per_lot)
    bc = np.repeat(b, per_lot)
    lo = ac + bc * hist.lower_um
    hi = ac + bc * hist.upper_um
    _refuse_mapped_classes(hist, lo, hi, per_lot, a, b)
    class_counts = hist.counts
    outside = (lo < 0.0) | (hi > DIAMETER_MAX_UM)  # all empty, or refused above
    if outside.any():  # an export's empty classes up to 200 um: nothing in them to move
        lot_of = np.repeat(np.arange(hist.n_lots), per_lot)[~outside]
        lo, hi, class_counts = lo[~outside], hi[~outside], class_counts[~outside]
        per_lot = np.bincount(lot_of, minlength=hist.n_lots)
    k0 = np.floor(lo)
    k1 = np.ceil(hi) - 1.0
    pieces = (k1 - k0 + 1).astype(np.int64)
    cls = np.repeat(np.arange(lo.size), pieces)
    first = np.concatenate([[0], np.cumsum(pieces)[:-1]])
    j = np.arange(int(pieces.sum())) - np.repeat(first, pieces)
    k = k0[cls] + j
    plo = np.maximum(lo[cls], k)
    phi = np.minimum(hi[cls], k + 1.0)
    cum = np.rint(class_counts[cls] * ((phi - lo[cls]) / (hi[cls] - lo[cls]))).astype(np.int64)
    prev = np.concatenate([[0], cum[:-1]])
    prev[first] = 0
    counts = cum - prev
    lot_pieces = np.bincount(
        np.repeat(np.arange(hist.n_lots), per_lot), weights=pieces, minlength=hist.n_lots
    ).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lot_pieces)]).astype(np.int64)
    return HistogramLots(hist.lot_ids, offsets, plo, phi, counts)
