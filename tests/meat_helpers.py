"""Builders of carcass and halal CSV files for the meat tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CARCASS_DEFAULTS: dict[str, Any] = {
    "carcass_id": "C-1",
    "animal_id": "A-1",
    "lot_id": "LOT-1",
    "sex": "wether",
    "ssc": "no",
    "incisors_erupted": 0,
    "incisors_in_wear": 0,
    "hscw_kg": 20.0,
    "gr_mm": 12,
    "ph_ultimate": 5.6,
    "temp_c": 3.0,
    "l_star": 38.0,
    "a_star": 15.0,
    "b_star": 8.0,
    "slaughtered_at": "2026-03-02T08:00:00+05:00",
    "weighed_at": "2026-03-02T08:30:00+05:00",
}

HALAL_DEFAULTS: dict[str, Any] = {
    "animal_id": "A-1",
    "species": "sheep",
    "category": "lamb",
    "vendor_declaration": "yes",
    "ante_mortem": "pass",
    "slaughtered_at": "2026-03-02T08:00:00+05:00",
    "slaughterman_id": "SM-1",
    "slaughterman_registration": "REG-SM-1",
    "stun_method": "none",
    "stun_pressure_psi": "",
    "stun_shots": "",
    "bolt_diameter_mm": "",
    "alive_at_cut": "yes",
    "checker_id": "CK-1",
    "checker_registration": "REG-CK-1",
    "carcass_id": "C-1",
    "post_mortem": "pass",
    "establishment_approval": "EST-1",
    "certification_body": "Halal Centre",
    "certificate_number": "HC-1",
    "certificate_expiry": "2026-12-31",
    "lot_id": "LOT-1",
}


def carcass_rows(n: int, **overrides: Any) -> list[dict[str, Any]]:
    """``n`` valid carcass rows with distinct ids; ``overrides`` apply to every row."""
    rows = []
    for i in range(n):
        row = dict(CARCASS_DEFAULTS, carcass_id=f"C-{i + 1}", animal_id=f"A-{i + 1}")
        row.update(overrides)
        rows.append(row)
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]], header: list[str] | None = None) -> Path:
    """Write rows (dicts) as a CSV with a comment line first (so data row k is line k + 2)."""
    header = header or list(rows[0])
    lines = ["# test file", ",".join(header)]
    lines += [",".join(str(r.get(c, "")) for c in header) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def halal_row(**overrides: Any) -> dict[str, Any]:
    return dict(HALAL_DEFAULTS, **overrides)
