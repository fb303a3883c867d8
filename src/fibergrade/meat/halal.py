"""Halal slaughter records: reading, and the validation that refuses an invalid record.

Format (documented in the README, "Halal slaughter records")
------------------------------------------------------------
The text rules of the interchange CSVs apply. One row per animal slaughtered; the fields
are those of a halal traceability record in meat.md ("Halal slaughter record", GSO
993:2015, OIC/SMIIC 1:2019, MS 1500:2019). Required columns::

    animal_id,species,category,vendor_declaration,ante_mortem,slaughtered_at,
    slaughterman_id,slaughterman_registration,stun_method,alive_at_cut,checker_id,
    checker_registration,carcass_id,post_mortem,establishment_approval,
    certification_body,certificate_number,certificate_expiry,lot_id

Optional columns: ``stun_current_a``, ``stun_duration_s`` (electrical head-only),
``stun_pressure_psi``, ``stun_shots``, ``bolt_diameter_mm`` (pneumatic), ``cut_complete``
(trachea, oesophagus, both carotids and both jugulars severed: yes/no), ``label``.

- ``vendor_declaration``, ``alive_at_cut``, ``cut_complete``: yes/no.
- ``ante_mortem``, ``post_mortem``: ``pass`` or ``fail``.
- ``stun_method``: a method of ``standards/meat/halal-stun.toml`` (``none``, ``pneumatic``,
  ``electrical-head-only``). The parameters of the method are required and within its
  limits; parameters of another method must be empty.
- ``slaughtered_at``: ISO 8601 time; ``certificate_expiry``: ISO 8601 date.

Validation (every rule is a refusal of the whole file, naming the line; nothing is
stored): every required field present; stun parameters within the limits of the stun
scheme (a method without limits in the scheme cannot be validated and is refused);
alive at cut confirmed (``yes``); the cut complete when recorded; slaughterman and checker
ids and registration numbers present; the certification body's certificate valid on the
slaughter date (the date of ``slaughtered_at`` as written is on or before the expiry date).

Where this differs from meat.md's list, it is the project's choice [unsourced]: the
checker's registration number is required as well as the checker id (the reference asks a
registration of the slaughterman only); ``label`` is optional although the reference lists
"label and lot" (``lot_id`` is required); and electrical head-only stunning is refused
until limits are written into the stun scheme, since the reference gives none.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from fibergrade.adapters.interchange import _BOOLEANS, _FLOAT_RE, _INT_RE, _read_table, _Table
from fibergrade.meat.carcasses import ID_MAX_CHARS
from fibergrade.meat.schemes import StunScheme, load_stun_scheme

__all__ = ["HALAL_COLUMNS", "HalalBatch", "read_halal_csv"]

HALAL_COLUMNS = (
    "animal_id",
    "species",
    "category",
    "vendor_declaration",
    "ante_mortem",
    "slaughtered_at",
    "slaughterman_id",
    "slaughterman_registration",
    "stun_method",
    "alive_at_cut",
    "checker_id",
    "checker_registration",
    "carcass_id",
    "post_mortem",
    "establishment_approval",
    "certification_body",
    "certificate_number",
    "certificate_expiry",
    "lot_id",
)
STUN_PARAMETERS = (
    "stun_current_a",
    "stun_duration_s",
    "stun_pressure_psi",
    "stun_shots",
    "bolt_diameter_mm",
)
HALAL_OPTIONAL = (*STUN_PARAMETERS, "cut_complete", "label")
_INSPECTION = ("pass", "fail")


@dataclass
class HalalBatch:
    """Validated slaughter records of one file (one dict per record, JSON-ready)."""

    path: str
    records: list[dict[str, Any]]
    lines: list[int]
    stun_scheme: dict[str, str]


def _text(t: _Table, i: int, name: str) -> str:
    s = t.columns[name][i].strip()
    if not s:
        raise t.error(i, f"{name} is missing; a halal record is refused, never completed")
    if len(s) > ID_MAX_CHARS:
        raise t.error(i, f"{name} is longer than {ID_MAX_CHARS} characters")
    return s


def _yes_no(t: _Table, i: int, name: str) -> bool:
    s = _text(t, i, name)
    b = _BOOLEANS.get(s.lower())
    if b is None:
        raise t.error(i, f"{name} {s!r} is not a yes/no value", expected="yes or no")
    return b


def _param(t: _Table, i: int, name: str) -> float | None:
    if name not in t.columns:
        return None
    s = t.columns[name][i].strip()
    if not s:
        return None
    if name == "stun_shots":
        if not _INT_RE.match(s):
            raise t.error(i, f"stun_shots {s!r} is not a whole number", expected="1")
        if int(s) < 1:
            # a stun method with shots fired at least one; the limit is the scheme's
            raise t.error(i, f"stun_shots {s!r} is not a count of shots fired", expected=">= 1")
        return int(s)
    if not _FLOAT_RE.match(s):
        raise t.error(i, f"{name} {s!r} is not a number", expected="a decimal number")
    v = float(s)
    if v <= 0:
        raise t.error(i, f"{name} {s!r} is not above zero", expected=f"{name} > 0")
    return v


def _check_stun(t: _Table, i: int, scheme: StunScheme) -> dict[str, Any]:
    method_name = _text(t, i, "stun_method").lower()
    method = scheme.methods.get(method_name)
    if method is None:
        raise t.error(
            i,
            f"stun_method {method_name!r} is not accepted by {scheme.path}",
            expected=", ".join(scheme.methods),
        )
    params = {name: _param(t, i, name) for name in STUN_PARAMETERS}
    for name, value in params.items():
        if name in method.required:
            if value is None:
                raise t.error(
                    i,
                    f"stun_method {method_name} needs {name}, which is missing",
                    expected=f"{', '.join(method.required)} for {method_name}",
                )
            if name not in method.maxima and name not in method.minima:
                raise t.error(
                    i,
                    f"{name} of a {method_name} stun cannot be validated: {scheme.path} sets "
                    "no limit for it (shared/reference/meat.md gives none)",
                    expected="the certification body's limits in the stun scheme",
                )
            hi = method.maxima.get(name)
            lo = method.minima.get(name)
            if hi is not None and value > hi:
                raise t.error(
                    i,
                    f"{name} {value:g} is above the {method_name} limit {hi:g} ({scheme.source})",
                    expected=f"{name} <= {hi:g}",
                )
            if lo is not None and value < lo:
                raise t.error(
                    i,
                    f"{name} {value:g} is below the {method_name} limit {lo:g}",
                    expected=f"{name} >= {lo:g}",
                )
        elif value is not None:
            raise t.error(
                i,
                f"{name} is given but stun_method is {method_name}",
                expected=f"{name} empty for a {method_name} stun",
            )
    return {"method": method_name} | {k: v for k, v in params.items() if v is not None}


def _record(t: _Table, i: int, scheme: StunScheme) -> dict[str, Any]:
    rec: dict[str, Any] = {}
    for name in (
        "animal_id",
        "species",
        "category",
        "slaughterman_id",
        "slaughterman_registration",
        "checker_id",
        "checker_registration",
        "carcass_id",
        "establishment_approval",
        "certification_body",
        "certificate_number",
        "lot_id",
    ):
        rec[name] = _text(t, i, name)
    rec["vendor_declaration"] = _yes_no(t, i, "vendor_declaration")
    for name in ("ante_mortem", "post_mortem"):
        v = _text(t, i, name).lower()
        if v not in _INSPECTION:
            raise t.error(i, f"{name} {v!r} is not known", expected="pass or fail")
        rec[name] = v
    slaughtered = _text(t, i, "slaughtered_at")
    try:
        at = datetime.fromisoformat(slaughtered)
    except ValueError:
        raise t.error(
            i,
            f"slaughtered_at {slaughtered!r} is not an ISO 8601 time",
            expected="such as 2026-03-02T08:15:00+05:00",
        ) from None
    rec["slaughtered_at"] = slaughtered
    expiry_text = _text(t, i, "certificate_expiry")
    try:
        expiry = date.fromisoformat(expiry_text)
    except ValueError:
        raise t.error(
            i,
            f"certificate_expiry {expiry_text!r} is not an ISO 8601 date",
            expected="a date such as 2026-12-31",
        ) from None
    if at.date() > expiry:
        raise t.error(
            i,
            f"certificate {rec['certificate_number']} of {rec['certification_body']} expired "
            f"on {expiry.isoformat()}, before the slaughter date {at.date().isoformat()}",
            expected="a certificate valid on the slaughter date",
        )
    rec["certificate_expiry"] = expiry.isoformat()
    rec["stun"] = _check_stun(t, i, scheme)
    if not _yes_no(t, i, "alive_at_cut"):
        raise t.error(
            i,
            "alive_at_cut is no: the animal was not confirmed alive at the cut",
            expected="alive_at_cut yes (confirmed by the checker)",
        )
    rec["alive_at_cut"] = True
    if "cut_complete" in t.columns and t.columns["cut_complete"][i].strip():
        if not _yes_no(t, i, "cut_complete"):
            raise t.error(
                i,
                "cut_complete is no: trachea, oesophagus, both carotids and both jugulars "
                "must be severed (meat.md)",
                expected="cut_complete yes",
            )
        rec["cut_complete"] = True
    else:
        rec["cut_complete"] = None
    label = t.columns["label"][i].strip() if "label" in t.columns else ""
    rec["label"] = label or None
    return rec


def read_halal_csv(path: str | Path, scheme: StunScheme | None = None) -> HalalBatch:
    """Read and validate every slaughter record of a file; the first problem refuses it."""
    scheme = scheme or load_stun_scheme()
    t = _read_table(
        path,
        HALAL_COLUMNS,
        HALAL_OPTIONAL,
        extra="refuse",
        kind="halal slaughter CSV",
        nothing="no slaughter records",
    )
    records = [_record(t, i, scheme) for i in range(t.n_rows)]
    for key in ("animal_id", "carcass_id"):
        first: dict[str, int] = {}
        for i, rec in enumerate(records):
            j = first.setdefault(rec[key], i)
            if j != i:
                raise t.error(
                    i,
                    f"duplicate {key} {rec[key]!r}: already on line {t.line(j)}",
                    expected=f"one slaughter record per {key}",
                )
    return HalalBatch(str(path), records, t.lines.tolist(), scheme.ref())
