"""Grading lots against standards kept as data files.

A standard (``src/fibergrade/standards/*.toml``, or any TOML file a lab writes) has an id,
version, title, source citation, the declared fibre types it applies to, the coarse cut it
assumes, and an ordered list of grades, best first. Each grade is a list of criteria; each
criterion compares one figure of the distribution core with a limit through an explicit
operator (``<=``, ``<``, ``>=``, ``>``), so whether a boundary is inclusive is written down,
not implied. A lot gets the first grade all of whose criteria pass, or no grade.

For every lot the result keeps every criterion of every grade with the measured value, the
limit and pass/fail, so a lab can say exactly why a lot failed. A criterion whose figure is
undefined for the lot (an empty lot, the CV of a one-fibre lot, curvature the instrument
did not measure) is *not evaluable*: it does not pass, and the record says so.

Evaluation is vectorised over lots (one numpy comparison per criterion).
"""

from __future__ import annotations

import functools
import hashlib
import math
import operator
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from fibergrade.datafile_checks import refuse_unknown, require
from fibergrade.distribution import FIGURES, LotSummary
from fibergrade.errors import StandardDefinitionError
from fibergrade.measurements import DIAMETER_MAX_UM, FIBRE_TYPES

OPS: dict[str, Callable[[Any, Any], Any]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
}
GRADABLE_FIGURES = ("n", *FIGURES)

_TOP_KEYS = {"id", "version", "title", "source", "applies_to", "cut_um", "notes", "grades"}
_GRADE_KEYS = {"id", "title", "criteria"}
_CRIT_KEYS = {"name", "figure", "op", "limit", "source"}


@dataclass(frozen=True)
class Criterion:
    name: str
    figure: str
    op: str
    limit: float
    source: str | None = None

    def describe(self) -> str:
        return f"{self.figure} {self.op} {self.limit:g}"


@dataclass(frozen=True)
class Grade:
    id: str
    title: str
    criteria: tuple[Criterion, ...]


@dataclass(frozen=True)
class Standard:
    id: str
    version: str
    title: str
    source: str
    applies_to: tuple[str, ...]
    cut_um: float
    grades: tuple[Grade, ...]
    notes: str
    digest: str  # SHA-256 of the standard file's bytes
    path: str

    def ref(self) -> dict[str, str]:
        """How a result names the standard it was graded against."""
        return {"id": self.id, "version": self.version, "digest": self.digest}


def _require(d: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    return require(d, key, kind, where, StandardDefinitionError)


def _unknown(d: dict[str, Any], allowed: set[str], where: str) -> None:
    refuse_unknown(d, allowed, where, StandardDefinitionError)


def parse_standard(data: bytes, path: str) -> Standard:
    """Build a :class:`Standard` from TOML bytes, refusing anything ambiguous."""
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise StandardDefinitionError(f"{path}: not a valid UTF-8 TOML file: {exc}") from exc
    _unknown(doc, _TOP_KEYS, path)
    applies = _require(doc, "applies_to", list, path)
    for t in applies:
        if t not in FIBRE_TYPES:
            raise StandardDefinitionError(
                f"{path}: applies_to names unknown fibre type {t!r}; "
                f"known: {', '.join(FIBRE_TYPES)}"
            )
    cut = float(_require(doc, "cut_um", (int, float), path))
    if not 0.0 < cut < DIAMETER_MAX_UM:  # the figures' cut, as the core checks it
        raise StandardDefinitionError(
            f"{path}: cut_um must lie in (0, {DIAMETER_MAX_UM:g}) um, got {cut:g}"
        )
    grades = []
    seen: set[str] = set()
    for gi, g in enumerate(_require(doc, "grades", list, path)):
        gwhere = f"{path}: grades[{gi}]"
        _unknown(g, _GRADE_KEYS, gwhere)
        gid = _require(g, "id", str, gwhere)
        if gid in seen:
            raise StandardDefinitionError(f"{gwhere}: grade id {gid!r} appears twice")
        seen.add(gid)
        crits = []
        for ci, c in enumerate(_require(g, "criteria", list, gwhere)):
            cwhere = f"{gwhere}.criteria[{ci}]"
            _unknown(c, _CRIT_KEYS, cwhere)
            figure = _require(c, "figure", str, cwhere)
            if figure not in GRADABLE_FIGURES:
                raise StandardDefinitionError(
                    f"{cwhere}: unknown figure {figure!r}; known: {', '.join(GRADABLE_FIGURES)}"
                )
            op = _require(c, "op", str, cwhere)
            if op not in OPS:
                raise StandardDefinitionError(
                    f"{cwhere}: operator {op!r} is not one of {', '.join(OPS)}"
                )
            limit = float(_require(c, "limit", (int, float), cwhere))
            if not math.isfinite(limit):
                raise StandardDefinitionError(f"{cwhere}: limit must be a finite number")
            crits.append(
                Criterion(
                    name=_require(c, "name", str, cwhere),
                    figure=figure,
                    op=op,
                    limit=limit,
                    source=c.get("source"),
                )
            )
        if not crits:
            raise StandardDefinitionError(f"{gwhere}: a grade needs at least one criterion")
        grades.append(Grade(id=gid, title=_require(g, "title", str, gwhere), criteria=tuple(crits)))
    if not grades:
        raise StandardDefinitionError(f"{path}: a standard needs at least one grade")
    return Standard(
        id=_require(doc, "id", str, path),
        version=str(_require(doc, "version", (str, int), path)),
        title=_require(doc, "title", str, path),
        source=_require(doc, "source", str, path),
        applies_to=tuple(applies),
        cut_um=cut,
        grades=tuple(grades),
        notes=str(doc.get("notes", "")).strip(),
        digest=hashlib.sha256(data).hexdigest(),
        path=path,
    )


@functools.cache
def _packaged() -> dict[str, tuple[bytes, str]]:
    """The packaged standard files (read once per process; they ship with the code)."""
    out = {}
    for entry in resources.files("fibergrade.standards").iterdir():
        if entry.name.endswith(".toml"):
            out[entry.name[:-5]] = (entry.read_bytes(), f"fibergrade/standards/{entry.name}")
    return out


@functools.cache
def _parse_packaged(key: str) -> Standard:
    return parse_standard(*_packaged()[key])


def list_standards() -> list[Standard]:
    """Every packaged standard, sorted by id."""
    return [_parse_packaged(key) for key in sorted(_packaged())]


def load_standard(ref: str | Path) -> Standard:
    """A packaged standard by id, or a standard file by path."""
    packaged = _packaged()
    key = str(ref)
    if key in packaged:
        std = _parse_packaged(key)
        if std.id != key:
            raise StandardDefinitionError(f"{std.path}: file name and id {std.id!r} differ")
        return std
    p = Path(ref)
    if p.suffix == ".toml":
        if not p.is_file():
            raise StandardDefinitionError(f"{p}: no such standard file")
        std = parse_standard(p.read_bytes(), str(p))
        shadowed = shadowed_packaged(std.ref())
        if shadowed is not None:
            raise StandardDefinitionError(
                f"{p}: its id {std.id!r} and version {std.version!r} are those of the packaged "
                f"standard {shadowed.path}, but the file differs from it (SHA-256 "
                f"{std.digest[:12]}..., the packaged file's {shadowed.digest[:12]}...): lots "
                f"graded by it would be reported as {std.id} v{std.version} under limits that "
                "standard does not have. Give your file its own id (e.g. 'lab-"
                f"{std.id}'), or, if it is a new version of that standard, a new version"
            )
        return std
    raise StandardDefinitionError(
        f"unknown standard {key!r}; packaged: {', '.join(sorted(packaged))} "
        "(or give the path of a .toml standard file)"
    )


def shadowed_packaged(ref: dict[str, Any] | None) -> Standard | None:
    """The packaged standard whose id and version ``ref`` (a standard's :meth:`Standard.ref`,
    as a grade record or certificate names it) claims while naming another file digest, or
    None. "Changing a file is a new version": a standard file that keeps a packaged
    standard's id and version but not its bytes would have its lots reported under the
    packaged standard's name."""
    if not isinstance(ref, dict):
        return None
    for key in _packaged():
        std = _parse_packaged(key)
        if (std.id, std.version) == (ref.get("id"), ref.get("version")):
            return None if std.digest == ref.get("digest") else std
    return None


#: the scheme each declared type is graded by when no --standard is given
DEFAULT_STANDARD = {
    "cashmere": "us-wpla-cashmere",
    "baby-camel": "fibergrade-camel",
    "adult-camel": "fibergrade-camel",
    "camel-hair": "fibergrade-camel",
}


def standard_for_type(declared_type: str | None) -> Standard | None:
    """The default scheme for a declared fibre type, or None when the project has none."""
    if declared_type is None or declared_type not in DEFAULT_STANDARD:
        return None
    return load_standard(DEFAULT_STANDARD[declared_type])


@dataclass
class GradeResult:
    """Grades of many lots under one standard (columnar)."""

    standard: Standard
    summary: LotSummary
    criteria: tuple[tuple[int, Criterion], ...]  # (grade index, criterion), flattened
    values: np.ndarray  # float64[lots, criteria]
    evaluable: np.ndarray  # bool[lots, criteria]
    passed: np.ndarray  # bool[lots, criteria]
    grade_index: np.ndarray  # int64[lots], -1 when the lot meets no grade

    def grade_ids(self) -> list[str | None]:
        ids = [g.id for g in self.standard.grades]
        return [ids[i] if i >= 0 else None for i in self.grade_index.tolist()]

    def records(self) -> list[dict[str, Any]]:
        """Per lot: the standard, the grade (or None) and every criterion's verdict."""
        grade_ids = self.grade_ids()
        values = self.values.tolist()
        evaluable = self.evaluable.tolist()
        passed = self.passed.tolist()
        fixed = [
            {
                "grade": self.standard.grades[gi].id,
                "name": c.name,
                "figure": c.figure,
                "op": c.op,
                "limit": c.limit,
            }
            for gi, c in self.criteria
        ]
        ref = self.standard.ref()
        out = []
        for i in range(self.summary.n_lots):
            crits = [
                f | {"value": v if ok else None, "passed": p, "evaluable": ok}
                for f, v, ok, p in zip(fixed, values[i], evaluable[i], passed[i], strict=True)
            ]
            out.append({"standard": dict(ref), "grade": grade_ids[i], "criteria": crits})
        return out


def grade(summary: LotSummary, standard: Standard) -> GradeResult:
    """Grade every lot of ``summary`` under ``standard``; vectorised over lots."""
    if summary.cut_um != standard.cut_um:
        raise StandardDefinitionError(
            f"standard {standard.id} assumes a {standard.cut_um:g} um cut but the figures were "
            f"computed with {summary.cut_um:g} um; recompute with cut_um={standard.cut_um:g}"
        )
    flat = tuple((gi, c) for gi, g in enumerate(standard.grades) for c in g.criteria)
    lots = summary.n_lots
    values = np.empty((lots, len(flat)), np.float64)
    for j, (_, c) in enumerate(flat):  # loop over criteria, not lots
        values[:, j] = summary[c.figure]
    evaluable = ~np.isnan(values)
    passed = np.zeros_like(evaluable)
    for j, (_, c) in enumerate(flat):
        col = values[:, j]
        passed[:, j] = evaluable[:, j] & OPS[c.op](np.where(evaluable[:, j], col, 0.0), c.limit)
    grade_of = np.array([gi for gi, _ in flat], dtype=np.int64)
    n_grades = len(standard.grades)
    # a grade is met when all its criteria pass: count failures per grade
    fails = np.zeros((lots, n_grades), np.int64)
    np.add.at(fails.T, grade_of, (~passed).T.astype(np.int64))
    met = fails == 0
    first = np.where(met.any(axis=1), met.argmax(axis=1), -1)
    return GradeResult(
        standard=standard,
        summary=summary,
        criteria=flat,
        values=values,
        evaluable=evaluable,
        passed=passed,
        grade_index=first.astype(np.int64),
    )
