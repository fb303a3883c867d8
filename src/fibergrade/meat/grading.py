"""Grading a day's carcasses at once under the packaged meat schemes.

Every scheme is evaluated over whole columns (:func:`fibergrade.meat.schemes.classify`,
:func:`~fibergrade.meat.schemes.check_conditions`): one numpy comparison per condition and
no Python loop per carcass on the grading path. Only the assembly of the per-carcass output
records walks the carcasses.

Order of evaluation: category (dentition, SSC), fat score (GR), EU category, light-lamb
band (needs the EU category), colour, pH class, then MSA eligibility (needs category and
fat score).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fibergrade.meat.carcasses import EU_WEIGH_WITHIN_S
from fibergrade.meat.schemes import (
    Condition,
    Scheme,
    check_conditions,
    classify,
    load_scheme,
)

__all__ = ["MeatGrades", "grade_carcasses", "schemes_used"]

_NUMERIC = (
    "incisors_erupted",
    "incisors_in_wear",
    "hscw_kg",
    "gr_mm",
    "ph_ultimate",
    "temp_c",
    "l_star",
    "a_star",
    "b_star",
    "age_months",
    "days_off_shears",
    "hours_off_feed",
    "hours_in_transit",
    "temp_at_ph6_c",
    "weigh_delay_s",
)
_BOOLEAN = ("ssc", "milk_fed", "permanent_molars", "vendor_declaration")


def schemes_used() -> dict[str, Scheme]:
    """The packaged schemes grading uses, by role."""
    return {
        "category": load_scheme("aus-meat-sheep-category"),
        "fat": load_scheme("gr-fat-score"),
        "eu": load_scheme("eu-category"),
        "band": load_scheme("eu-light-lamb-band"),
        "colour": load_scheme("khliji-colour"),
        "ph": load_scheme("ph-class"),
        "msa": load_scheme("msa-sheepmeat"),
    }


@dataclass
class MeatGrades:
    """Grades of many carcasses (columnar) and the schemes they were graded under."""

    n: int
    columns: Mapping[str, Sequence[Any]]
    category: np.ndarray  # object[n]: category name or ""
    fat_score: np.ndarray  # int64[n], -1 when no class
    eu_index: np.ndarray  # int64[n] into the EU scheme's classes
    band_index: np.ndarray
    colour_index: np.ndarray
    ph_index: np.ndarray
    msa_passed: np.ndarray  # bool[n, conditions]
    msa_values: np.ndarray  # float64[n, conditions]
    msa_limits: np.ndarray  # float64[n, conditions]; NaN: no limit for that carcass
    schemes: dict[str, Scheme]

    @property
    def msa_eligible(self) -> np.ndarray:
        return self.msa_passed.all(axis=1)

    def scheme_refs(self) -> dict[str, dict[str, str]]:
        return {role: s.ref() for role, s in self.schemes.items()}

    def records(self) -> list[dict[str, Any]]:
        """One JSON-ready object per carcass (keys documented in the README)."""
        s = self.schemes
        cols = self.columns
        conds = s["msa"].conditions
        eu_cls = s["eu"].classes
        band_cls = s["band"].classes
        colour_cls = s["colour"].classes
        ph_cls = s["ph"].classes
        eligible = self.msa_eligible.tolist()
        passed = self.msa_passed.tolist()
        values = self.msa_values.tolist()
        limits = self.msa_limits.tolist()
        category = self.category.tolist()
        out = []
        for i in range(self.n):
            cat = category[i] or None
            reasons = [
                _reason(c, values[i][j], limits[i][j], cat)
                for j, c in enumerate(conds)
                if not passed[i][j]
            ]
            eu = eu_cls[self.eu_index[i]] if self.eu_index[i] >= 0 else None
            band = band_cls[self.band_index[i]] if self.band_index[i] >= 0 else None
            colour = colour_cls[self.colour_index[i]] if self.colour_index[i] >= 0 else None
            ph = ph_cls[self.ph_index[i]] if self.ph_index[i] >= 0 else None
            delay = cols["weigh_delay_s"][i]
            flags = _flags(cols, i, delay, cat)
            out.append(
                {
                    "carcass_id": cols["carcass_id"][i],
                    "animal_id": cols["animal_id"][i],
                    "lot_id": cols["lot_id"][i],
                    "category": cat,
                    "fat_score": int(self.fat_score[i]) if self.fat_score[i] >= 0 else None,
                    "msa_eligible": bool(eligible[i]),
                    "msa_reasons": reasons,
                    "eu_category": eu.value if eu else None,
                    "eu_category_basis": eu.basis if eu else None,
                    "light_lamb_band": band.value if band else None,
                    "colour_class": colour.value if colour else None,
                    "colour_acceptable": bool(colour.acceptable) if colour else None,
                    "ph_class": ph.value if ph else None,
                    "hscw_kg": cols["hscw_kg"][i],
                    "gr_mm": cols["gr_mm"][i],
                    "ph_ultimate": cols["ph_ultimate"][i],
                    "l_star": cols["l_star"][i],
                    "a_star": cols["a_star"][i],
                    "weighing": {
                        "scale_id": cols["scale_id"][i],
                        "scale_profile": cols["scale_profile"][i],
                        "scale_max_kg": cols["scale_max_kg"][i],
                        "mode": cols["weight_mode"][i],
                        "minutes_after_slaughter": round(delay / 60.0, 2),
                        "within_eu_1h": delay <= EU_WEIGH_WITHIN_S,
                    },
                    "flags": flags,
                }
            )
        return out


def _reason(c: Condition, value: float, limit: float, category: str | None) -> str:
    """Why a carcass fails an MSA condition: the condition's name, then the value measured
    under the field it was read from (a condition named after fat score compares GR, so a
    bare number read as the wrong quantity), and what it needs."""
    name = c.name or c.describe()
    if value != value:  # NaN: not recorded
        return f"{name}: not recorded"
    if limit != limit:
        return f"{name}: no threshold for category {category or 'unknown'}"
    return f"{name}: {c.field} = {value:g} (needs {c.op} {limit:g})"


_WORDED = re.compile(r"^(?P<name>.*): (?P<field>\w+) = (?P<value>\S+) \(needs (?P<need>[^)]*)\)$")


def reason_as_first_worded(reason: str) -> str:
    """A reason of :func:`_reason` as carcass certificates issued before the value was
    named worded it (``NAME: VALUE (needs FIELD OP LIMIT)``), so that verification can
    recompute those; other reasons are unchanged."""
    m = _WORDED.match(reason)
    if m is None:
        return reason
    return f"{m['name']}: {m['value']} (needs {m['field']} {m['need']})"


def _flags(cols: Mapping[str, Sequence[Any]], i: int, delay: float, cat: str | None) -> list[str]:
    flags = []
    if delay > EU_WEIGH_WITHIN_S:
        flags.append(
            f"weighed {delay / 60:.0f} min after slaughter; the EU rule is to weigh within "
            "1 h of sticking (meat.md, EU)"
        )
    if cols["weight_mode"][i] == "immediate":
        flags.append("hscw_kg is an immediate (not stable) scale reading")
    if cols["scale_max_kg"][i] is None:
        flags.append("scale not known: hscw_kg was not checked against a scale's Max")
    if cat is None:
        flags.append("no category of the scheme fits the dentition and SSC recorded")
    return flags


def _column(cols: Mapping[str, Sequence[Any]], name: str) -> np.ndarray:
    """A stored column as float64 (None, not recorded, becomes NaN; booleans 1.0/0.0)."""
    return np.array(cols[name], dtype=np.float64)


def grade_carcasses(cols: Mapping[str, Sequence[Any]]) -> MeatGrades:
    """Grade every carcass of the columnar table ``cols`` (as stored by an import)."""
    n = len(cols["carcass_id"])
    s = schemes_used()
    num = {name: _column(cols, name) for name in (*_NUMERIC, *_BOOLEAN)}
    cat_idx = classify(s["category"], num, n)
    names = np.array([str(c.value) for c in s["category"].classes] + [""], dtype=object)
    category = names[cat_idx]  # -1 picks the trailing ""
    fat_idx = classify(s["fat"], num, n)
    fat_values = np.array([int(c.value) for c in s["fat"].classes] + [-1], dtype=np.int64)
    fat_score = fat_values[fat_idx]
    num["fat_score"] = np.where(fat_score >= 0, fat_score, np.nan).astype(np.float64)
    eu_idx = classify(s["eu"], num, n)
    eu_a = np.array([c.value == "A" for c in s["eu"].classes] + [False])[eu_idx]
    num["eu_category_a"] = np.where(eu_idx >= 0, eu_a, np.nan).astype(np.float64)
    band_idx = classify(s["band"], num, n)
    colour_idx = classify(s["colour"], num, n)
    ph_idx = classify(s["ph"], num, n)
    msa = s["msa"]
    passed = check_conditions(msa, num, category)
    msa_values = np.column_stack([num[c.field] for c in msa.conditions]) if n else np.zeros((0, 0))
    msa_limits = np.empty((n, len(msa.conditions)), dtype=np.float64)
    for j, c in enumerate(msa.conditions):  # loop over conditions, not carcasses
        if c.limit_by_category is None:
            msa_limits[:, j] = c.limit
        else:
            table = c.limit_by_category
            lookup = np.array([table.get(str(x), np.nan) for x in names.tolist()])
            msa_limits[:, j] = lookup[cat_idx]
    return MeatGrades(
        n=n,
        columns=cols,
        category=category,
        fat_score=fat_score,
        eu_index=eu_idx,
        band_index=band_idx,
        colour_index=colour_idx,
        ph_index=ph_idx,
        msa_passed=passed,
        msa_values=msa_values,
        msa_limits=msa_limits,
        schemes=s,
    )
