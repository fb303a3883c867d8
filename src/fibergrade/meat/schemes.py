"""Meat grading schemes kept as data files, each citing its source (mirrors
:mod:`fibergrade.grading` for fibre standards).

Files live in ``fibergrade/standards/meat/`` (package data). Three shapes:

*Class schemes* (``[[classes]]``): an ordered list of classes; a carcass gets the first class
all of whose conditions pass (a class with no conditions always matches). A condition
compares one numeric field with a limit through an explicit operator (``<=``, ``<``,
``>=``, ``>``, ``==``), so whether a boundary is inclusive is written down. A field that is
not recorded for a carcass (NaN) is *not evaluable*: its condition does not pass. Classes
may carry ``basis`` (text) and ``acceptable`` (boolean) that the output reports.

*Condition schemes* (``[[conditions]]``, MSA): every condition must pass; each one has a
``name`` reported when it fails, and either a ``limit`` or a ``limit_by_category`` table
(carcass category -> limit; a category missing from the table makes the condition not
evaluable for that carcass).

*Stun scheme* (``halal-stun.toml``): ``[methods.<name>]`` with ``required`` parameter
columns and optional ``limits`` (``<column>_max`` / ``<column>_min``, inclusive).

Evaluation is vectorised: one numpy comparison per condition over all carcasses.
"""

from __future__ import annotations

import functools
import hashlib
import math
import operator
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

from fibergrade.datafile_checks import refuse_unknown, require
from fibergrade.meat.errors import MeatSchemeError

OPS: dict[str, Callable[[Any, Any], Any]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
    "==": operator.eq,
}

#: the packaged scheme files, by id
SCHEME_IDS = (
    "aus-meat-sheep-category",
    "gr-fat-score",
    "msa-sheepmeat",
    "eu-category",
    "eu-light-lamb-band",
    "khliji-colour",
    "ph-class",
)
_FILE_OF = {"aus-meat-sheep-category": "aus-meat-category"}


@dataclass(frozen=True)
class Condition:
    """``field op limit``; for condition schemes ``limit_by_category`` may replace limit."""

    field: str
    op: str
    limit: float | None
    source: str | None = None
    name: str | None = None
    limit_by_category: Mapping[str, float] | None = None

    def describe(self) -> str:
        if self.limit is None:
            return f"{self.field} {self.op} (limit by category)"
        return f"{self.field} {self.op} {self.limit:g}"


@dataclass(frozen=True)
class MeatClass:
    """One class of a class scheme."""

    value: str | int
    conditions: tuple[Condition, ...]
    basis: str | None = None
    acceptable: bool | None = None


@dataclass(frozen=True)
class Scheme:
    """A loaded scheme: ``classes`` for class schemes, ``conditions`` for MSA-like ones."""

    id: str
    version: str
    title: str
    source: str
    output: str
    notes: str
    classes: tuple[MeatClass, ...]
    conditions: tuple[Condition, ...]
    digest: str
    path: str

    def ref(self) -> dict[str, str]:
        """How a result names the scheme it was graded against."""
        return {"id": self.id, "version": self.version, "digest": self.digest}


@dataclass(frozen=True)
class StunMethod:
    """An accepted stun method: required parameter columns and inclusive limits."""

    name: str
    required: tuple[str, ...]
    maxima: Mapping[str, float]
    minima: Mapping[str, float]


@dataclass(frozen=True)
class StunScheme:
    id: str
    version: str
    source: str
    methods: Mapping[str, StunMethod]
    digest: str
    path: str

    def ref(self) -> dict[str, str]:
        return {"id": self.id, "version": self.version, "digest": self.digest}


_TOP = {"id", "version", "title", "source", "output", "notes", "classes", "conditions"}
_CLASS_KEYS = {"value", "basis", "acceptable", "conditions"}
_COND_KEYS = {"field", "op", "limit", "source", "name", "limit_by_category"}


def _req(d: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    return require(d, key, kind, where, MeatSchemeError)


def _unknown(d: Mapping[str, Any], allowed: set[str], where: str) -> None:
    refuse_unknown(d, allowed, where, MeatSchemeError)


def _number(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise MeatSchemeError(f"{where}: {v!r} is not a finite number")
    return float(v)


def _condition(c: Any, where: str, *, by_category: bool, named: bool) -> Condition:
    if not isinstance(c, dict):
        raise MeatSchemeError(f"{where}: a condition must be a table")
    _unknown(c, _COND_KEYS, where)
    op = _req(c, "op", str, where)
    if op not in OPS:
        raise MeatSchemeError(f"{where}: operator {op!r} is not one of {', '.join(OPS)}")
    table = c.get("limit_by_category")
    if table is not None and not by_category:
        raise MeatSchemeError(f"{where}: limit_by_category is only allowed in [[conditions]]")
    if (table is None) == ("limit" not in c):
        raise MeatSchemeError(f"{where}: give exactly one of 'limit' or 'limit_by_category'")
    limit = _number(c["limit"], f"{where}.limit") if "limit" in c else None
    lbc = None
    if table is not None:
        if not isinstance(table, dict) or not table:
            raise MeatSchemeError(f"{where}: limit_by_category must be a non-empty table")
        lbc = {str(k): _number(v, f"{where}.limit_by_category.{k}") for k, v in table.items()}
    return Condition(
        field=_req(c, "field", str, where),
        op=op,
        limit=limit,
        source=c.get("source"),
        name=_req(c, "name", str, where) if named else c.get("name"),
        limit_by_category=lbc,
    )


def parse_scheme(data: bytes, path: str) -> Scheme:
    """Build a :class:`Scheme` from TOML bytes, refusing anything ambiguous."""
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise MeatSchemeError(f"{path}: not a valid UTF-8 TOML file: {exc}") from exc
    _unknown(doc, _TOP, path)
    if ("classes" in doc) == ("conditions" in doc):
        raise MeatSchemeError(f"{path}: a scheme has either [[classes]] or [[conditions]]")
    classes: list[MeatClass] = []
    for i, k in enumerate(doc.get("classes", [])):
        where = f"{path}: classes[{i}]"
        _unknown(k, _CLASS_KEYS, where)
        value = _req(k, "value", (str, int), where)
        acceptable = k.get("acceptable")
        if acceptable is not None and not isinstance(acceptable, bool):
            raise MeatSchemeError(f"{where}: 'acceptable' must be true or false")
        conds = tuple(
            _condition(c, f"{where}.conditions[{j}]", by_category=False, named=False)
            for j, c in enumerate(k.get("conditions", []))
        )
        classes.append(MeatClass(value, conds, k.get("basis"), acceptable))
    conditions = tuple(
        _condition(c, f"{path}: conditions[{j}]", by_category=True, named=True)
        for j, c in enumerate(doc.get("conditions", []))
    )
    if not classes and not conditions:
        raise MeatSchemeError(f"{path}: the scheme lists no classes or conditions")
    return Scheme(
        id=_req(doc, "id", str, path),
        version=str(_req(doc, "version", (str, int), path)),
        title=_req(doc, "title", str, path),
        source=_req(doc, "source", str, path),
        output=_req(doc, "output", str, path),
        notes=str(doc.get("notes", "")).strip(),
        classes=tuple(classes),
        conditions=conditions,
        digest=hashlib.sha256(data).hexdigest(),
        path=path,
    )


def parse_stun_scheme(data: bytes, path: str) -> StunScheme:
    """Build the halal :class:`StunScheme` from TOML bytes."""
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise MeatSchemeError(f"{path}: not a valid UTF-8 TOML file: {exc}") from exc
    _unknown(doc, {"id", "version", "title", "source", "methods"}, path)
    methods: dict[str, StunMethod] = {}
    for name, m in _req(doc, "methods", dict, path).items():
        where = f"{path}: methods.{name}"
        _unknown(m, {"required", "limits"}, where)
        required = tuple(str(x) for x in _req(m, "required", list, where))
        maxima: dict[str, float] = {}
        minima: dict[str, float] = {}
        for key, v in m.get("limits", {}).items():
            if key.endswith("_max"):
                maxima[key[:-4]] = _number(v, f"{where}.limits.{key}")
            elif key.endswith("_min"):
                minima[key[:-4]] = _number(v, f"{where}.limits.{key}")
            else:
                raise MeatSchemeError(f"{where}.limits: key {key!r} must end in _max or _min")
        methods[name] = StunMethod(name, required, maxima, minima)
    return StunScheme(
        id=_req(doc, "id", str, path),
        version=str(_req(doc, "version", (str, int), path)),
        source=_req(doc, "source", str, path),
        methods=methods,
        digest=hashlib.sha256(data).hexdigest(),
        path=path,
    )


def _packaged_bytes(stem: str) -> tuple[bytes, str]:
    entry = resources.files("fibergrade.standards") / "meat" / f"{stem}.toml"
    try:
        return entry.read_bytes(), f"fibergrade/standards/meat/{stem}.toml"
    except OSError as exc:
        raise MeatSchemeError(f"fibergrade/standards/meat/{stem}.toml: cannot read: {exc}") from exc


@functools.cache
def load_scheme(scheme_id: str) -> Scheme:
    """A packaged meat scheme by id (parsed once per process)."""
    if scheme_id not in SCHEME_IDS:
        raise MeatSchemeError(f"unknown meat scheme {scheme_id!r}; known: {', '.join(SCHEME_IDS)}")
    scheme = parse_scheme(*_packaged_bytes(_FILE_OF.get(scheme_id, scheme_id)))
    if scheme.id != scheme_id:
        raise MeatSchemeError(f"{scheme.path}: id {scheme.id!r} differs from {scheme_id!r}")
    return scheme


@functools.cache
def load_stun_scheme() -> StunScheme:
    """The packaged halal stun scheme."""
    return parse_stun_scheme(*_packaged_bytes("halal-stun"))


def _passes(cond: Condition, cols: Mapping[str, np.ndarray], limit: Any) -> np.ndarray:
    """Boolean mask: the condition is evaluable (field recorded, limit known) and holds."""
    if cond.field not in cols:
        raise MeatSchemeError(f"condition on unknown field {cond.field!r}")
    values = np.asarray(cols[cond.field], dtype=np.float64)
    lim = np.asarray(limit, dtype=np.float64)
    ok = ~np.isnan(values) & ~np.isnan(lim)
    return ok & OPS[cond.op](np.where(ok, values, 0.0), np.where(ok, lim, 0.0))


def classify(scheme: Scheme, cols: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """Index into ``scheme.classes`` of the first class each carcass meets (-1: none).

    One numpy comparison per condition; no loop over carcasses.
    """
    met = np.ones((n, len(scheme.classes)), dtype=np.bool_)
    for k, cls in enumerate(scheme.classes):  # loop over classes and conditions only
        for cond in cls.conditions:
            met[:, k] &= _passes(cond, cols, cond.limit)
    if not scheme.classes:
        return np.full(n, -1, dtype=np.int64)
    return np.where(met.any(axis=1), met.argmax(axis=1), -1).astype(np.int64)


def check_conditions(
    scheme: Scheme, cols: Mapping[str, np.ndarray], category: np.ndarray
) -> np.ndarray:
    """bool[carcasses, conditions]: which conditions of a condition scheme each carcass meets.

    ``category`` holds each carcass's category name (object array) for conditions with a
    ``limit_by_category`` table.
    """
    n = category.shape[0]
    out = np.zeros((n, len(scheme.conditions)), dtype=np.bool_)
    for j, cond in enumerate(scheme.conditions):
        if cond.limit_by_category is not None:
            table = cond.limit_by_category
            names = np.array(sorted(table), dtype=object)
            limits = np.array([table[x] for x in names.tolist()] + [np.nan], dtype=np.float64)
            pos = np.searchsorted(names, category) if names.size else np.zeros(n, np.int64)
            pos = np.minimum(pos, names.size)
            hit = (pos < names.size) & (names[np.minimum(pos, names.size - 1)] == category)
            limit = np.where(hit, limits[pos], np.nan)
        else:
            limit = cond.limit
        out[:, j] = _passes(cond, cols, limit)
    return out
