"""The demo's lamb weighing line (issue 7): carcass after carcass on a simulated CAS scale.

A dozen synthetic carcasses of a Kazakh halal plant (fictitious data, said so in the files)
are weighed live on a simulated CAS CI indicator on a real pty through the real driver
(each stable weight stored as a ``weighing`` record naming the carcass), written as the
carcass and halal CSVs a plant would send, imported, graded, and certified with the lab key.
Deterministic for a seed and re-runnable: weights already stored, files already imported
and carcasses already certified are recognised.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from fibergrade.meat.carcasses import CARCASS_COLUMNS as REQUIRED_CARCASS_COLUMNS
from fibergrade.meat.halal import HALAL_COLUMNS
from fibergrade.store import Store

N_CARCASSES = 12
SCALE_ID = "DEMO-CAS-LINE-1"
PROFILE = "cas-ci"
DATE = "2026-11-20"
#: the required columns (fibergrade.meat) and the optional ones the demo fills in
CARCASS_COLUMNS = (
    *REQUIRED_CARCASS_COLUMNS,
    "scale_id",
    "scale_profile",
    "weight_mode",
    "milk_fed",
    "permanent_molars",
    "days_off_shears",
    "hours_off_feed",
    "hours_in_transit",
    "vendor_declaration",
    "temp_at_ph6_c",
)
HALAL_DEMO_COLUMNS = (*HALAL_COLUMNS, "cut_complete", "label")


def _plan(seed: int, e: float) -> list[dict[str, Any]]:
    rng = np.random.default_rng([seed, 7])
    rows = []
    for i in range(N_CARCASSES):
        sex = str(rng.choice(["ewe", "wether", "ram"], p=[0.45, 0.45, 0.1]))
        incisors = int(rng.choice([0, 0, 0, 1, 2]))
        minute = 4 * i
        slaughter = (
            f"{DATE}T06:{minute:02d}:00+05:00"
            if minute < 60
            else (f"{DATE}T07:{minute - 60:02d}:00+05:00")
        )
        weigh_min = minute + 20
        weighed = f"{DATE}T{6 + weigh_min // 60:02d}:{weigh_min % 60:02d}:00+05:00"
        rows.append(
            {
                "carcass_id": f"DEMO-C-{i + 1:03d}",
                "animal_id": f"98200041200{i + 1:04d}",
                "lot_id": f"DEMO-LOT-{1 + i // 6}",
                "sex": sex,
                "ssc": "yes" if sex == "ram" else "no",
                "incisors_erupted": incisors,
                "incisors_in_wear": incisors,
                "hscw_kg": round(float(rng.uniform(12.0, 26.0)) / e) * e,
                "gr_mm": int(rng.integers(4, 19)),
                "ph_ultimate": round(float(rng.uniform(5.45, 5.95)), 2),
                "temp_c": round(float(rng.uniform(2.0, 6.0)), 1),
                "l_star": round(float(rng.uniform(34.0, 44.0)), 1),
                "a_star": round(float(rng.uniform(11.0, 18.0)), 1),
                "b_star": round(float(rng.uniform(6.0, 10.0)), 1),
                "slaughtered_at": slaughter,
                "weighed_at": weighed,
            }
        )
    return rows


def run_weighing_line(out: Path, store: Store, key_dir: Path, seed: int) -> list[str]:
    """Weigh, import, grade and certify the demo carcasses; returns report lines."""
    from fibergrade.adapters.profiles import load_profile
    from fibergrade.demo_acquisition import weigh_on_simulated_scale
    from fibergrade.keys import load_private_key
    from fibergrade.meat.certificates import certify_carcasses
    from fibergrade.meat.traceability import grade_store, import_carcasses, import_halal

    profile = load_profile(PROFILE)
    assert profile.scale is not None
    rows = _plan(seed, profile.scale.e)
    ids = [r["carcass_id"] for r in rows]
    lines: list[str] = []
    weighed = weigh_on_simulated_scale(store, profile, SCALE_ID, ids, [r["hscw_kg"] for r in rows])
    if weighed is None:
        lines.append(f"weighing line: {len(ids)} carcasses already weighed on {SCALE_ID}")
    else:
        lines.append(
            f"weighing line: {len(weighed.stored)} carcasses weighed live on simulated CAS "
            f"indicator {SCALE_ID} (stable weights, {profile.scale.unit})"
        )
    carcass_csv = out / f"carcasses_{DATE}.csv"
    halal_csv = out / f"halal_{DATE}.csv"
    with open(carcass_csv, "w", encoding="utf-8", newline="") as fh:
        fh.write("# fibergrade demo: fictitious lamb carcasses, weighed on the simulated line\n")
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(CARCASS_COLUMNS)
        for r in rows:
            extra = {
                "scale_id": SCALE_ID,
                "scale_profile": PROFILE,
                "weight_mode": "stable",
                "milk_fed": "no",
                "permanent_molars": "no",
                "days_off_shears": 30,
                "hours_off_feed": 20,
                "hours_in_transit": 6,
                "vendor_declaration": "yes",
                "temp_at_ph6_c": 21,
            }
            full = r | extra | {"hscw_kg": f"{r['hscw_kg']:.1f}"}
            w.writerow([full[c] for c in CARCASS_COLUMNS])
    with open(halal_csv, "w", encoding="utf-8", newline="") as fh:
        fh.write("# fibergrade demo: fictitious halal slaughter records\n")
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(HALAL_DEMO_COLUMNS)
        for i, r in enumerate(rows):
            rec = {
                "animal_id": r["animal_id"],
                "species": "sheep",
                "category": "lamb",
                "vendor_declaration": "yes",
                "ante_mortem": "pass",
                "slaughtered_at": r["slaughtered_at"],
                "slaughterman_id": f"SM-{17 + i % 2:03d}",
                "slaughterman_registration": f"DEMO-HS-{417 + i % 2}",
                "stun_method": "none",
                "alive_at_cut": "yes",
                "checker_id": "CK-003",
                "checker_registration": "DEMO-HC-0103",
                "carcass_id": r["carcass_id"],
                "post_mortem": "pass",
                "establishment_approval": "DEMO-EST-0412",
                "certification_body": "Demo Halal Certification Body",
                "certificate_number": "DEMO-HC-2026-0001",
                "certificate_expiry": "2027-12-31",
                "lot_id": r["lot_id"],
                "cut_complete": "yes",
                "label": "Halal lamb",
            }
            w.writerow([rec[c] for c in HALAL_DEMO_COLUMNS])
    for res in (
        import_carcasses(store, carcass_csv, scale=PROFILE),
        import_halal(store, halal_csv),
    ):
        state = "already in the store" if res.already_imported else "stored"
        lines.append(f"meat import {Path(res.source_name).name}: {res.n} rows, {state}")
    graded, _ = grade_store(store, ids)
    cats: dict[str, int] = {}
    for g in graded:
        cats[g["category"]] = cats.get(g["category"], 0) + 1
    linked = sum(1 for g in graded if (g.get("weighing") or {}).get("record"))
    msa = sum(1 for g in graded if g["msa_eligible"])
    lines.append(
        f"graded {len(graded)} carcasses: "
        + ", ".join(f"{k} {v}" for k, v in sorted(cats.items()))
        + f"; MSA eligible {msa}; {linked} linked to their live weighing record"
    )
    issued = certify_carcasses(
        store,
        None,
        load_private_key(key_dir / "lab.key"),
        out / "certificates",
        lab_name="fibergrade demo lab",
    ).issued
    lines.append(
        f"certified {len(issued)} carcasses (halal record validated); "
        f"try: fibergrade trace {ids[0]} --store {store.root}"
    )
    return lines
