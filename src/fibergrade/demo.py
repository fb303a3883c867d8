"""``fibergrade demo``: a realistic day of a fibre lab, end to end, on real files.

The day (``fibergrade.synthetic.demo_day``) is written as the interchange files a lab would
receive: one per-fibre CSV from an OFDA-style analyser, one 1-um histogram CSV from a
Laserscan-style instrument for a share of the lots, and the lot manifest. The first lots of
the day stream live instead, from a simulated analyser on a pty, and a few specimens are
weighed on a simulated balance (:mod:`fibergrade.demo_acquisition`). The files are imported
into the embedded store, graded by each lot's declared type, and histograms are drawn for
the lots that meet no grade and for one lot of each type. The day is deterministic for a
seed, so running the demo twice re-imports nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fibergrade.adapters.writers import (
    to_histograms,
    write_fibre_csv,
    write_histogram_csv,
    write_lot_manifest,
)
from fibergrade.demo_acquisition import live_lot_count, run_live_acquisition
from fibergrade.measurements import LotMeta
from fibergrade.plots import histogram_png
from fibergrade.store import Store
from fibergrade.synthetic import demo_day
from fibergrade.workflow import grade_lots, import_files

#: share of the day's lots measured on the histogram-only instrument
HISTOGRAM_SHARE = 0.1
MAX_PLOTS = 8


@dataclass
class DemoReport:
    steps: list[str] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    grade_counts: Counter = field(default_factory=Counter)
    plot_dir: Path = Path()
    n_plots: int = 0
    example_lot: str = ""
    records: list[dict[str, Any]] = field(default_factory=list)


def run_demo(
    out_dir: str | Path,
    store_path: str | Path,
    n_lots: int = 300,
    seed: int = 2026,
    progress: Callable[[int, int], None] | None = None,
) -> DemoReport:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = DemoReport(plot_dir=out / "plots")
    total = 6

    def step(k: int, text: str) -> None:
        report.steps.append(text)
        if progress:
            progress(k, total)

    day = demo_day(seed=seed, n_lots=n_lots)
    date = "2026-11-20"
    n_hist = max(1, round(HISTOGRAM_SHARE * n_lots))
    hist_idx = np.arange(n_lots - n_hist, n_lots)
    n_live = live_lot_count(n_lots - n_hist)
    live_lots = day.fibres.select(np.arange(0, n_live))  # streamed live, not exported
    fibre_idx = np.arange(n_live, n_lots - n_hist)
    fibre_lots = day.fibres.select(fibre_idx)
    hist_lots = to_histograms(day.fibres.select(hist_idx), class_um=1.0)
    metas: list[LotMeta] = []
    hist_ids = set(hist_lots.lot_ids)
    for lot, m in day.meta.items():
        if lot in hist_ids:
            d = m.to_dict()
            d["instrument_id"] = "LASERSCAN-SIM-2"
            m = LotMeta.from_dict(d)
        metas.append(m)
    fibre_csv = out / f"ofda-sim-1_{date}.csv"
    hist_csv = out / f"laserscan-sim-2_{date}.csv"
    manifest_csv = out / f"lots_{date}.csv"
    write_fibre_csv(
        fibre_csv, fibre_lots, comment=f"fibergrade demo day, seed {seed}: synthetic data"
    )
    write_histogram_csv(
        hist_csv, hist_lots, comment=f"fibergrade demo day, seed {seed}: synthetic data"
    )
    write_lot_manifest(manifest_csv, metas)
    step(
        1,
        f"wrote a day of {n_lots} lots ({day.fibres.n_fibres:,} fibre snippets) to {out}: "
        f"{fibre_csv.name}, {hist_csv.name}, {manifest_csv.name}",
    )

    store = Store.open(store_path, create=True)
    # --- demo hook: acquisition through simulated instruments (issue 3) goes here ---
    if n_live:
        for text in run_live_acquisition(store, live_lots, {m.lot_id: m for m in metas}, seed):
            step(2, text)
    # --- demo hook: calibration of the simulated instruments (issue 4) goes here ---
    from fibergrade.demo_calibration import calibrate_simulated_instruments

    for c in calibrate_simulated_instruments(store, out, seed, date):
        how = "still valid, not recorded again" if c.already_recorded else "recorded"
        step(
            2,
            f"calibrate {c.instrument_id} on the IH 23rd-series tops ({c.path.name}, "
            f"synthetic bias): MFD' = {c.intercept_um:+.3f} + {c.slope:.4f} x MFD, "
            f"r^2 {c.r2:.5f}, valid {c.range_um[0]:g}-{c.range_um[1]:g} um; "
            f"calibration {c.calibration_id[:12]} {how}",
        )
    outcomes = import_files(store, [fibre_csv, hist_csv], manifest=manifest_csv)
    for o in outcomes:
        state = "already in the store" if o.already_imported else f"segment {o.segment[:12]}"
        step(2, f"import {o.source_name}: {len(o.lot_ids)} lots, {state}")

    run = grade_lots(store, [m.lot_id for m in metas])
    report.records = run.records
    report.failed = [r for r in run.records if r["grade"] is None]
    report.grade_counts = Counter((r["declared_type"], r["grade"]) for r in run.records)
    step(3, f"graded {len(run.records)} lots by declared type; result {str(run.result_id)[:16]}")
    # --- demo hook: screening of the day (issue 5) goes here ---
    from fibergrade.screening import verdict_lines

    for line in verdict_lines(run.records, truth=day.truth):  # verdicts from the grade run
        step(3, line)

    chosen: dict[str, dict[str, Any]] = {}
    for r in run.records:
        chosen.setdefault(f"type:{r['declared_type']}", r)
    for r in report.failed:
        if len(chosen) >= MAX_PLOTS:
            break
        chosen[r["lot_id"]] = r
    for r in chosen.values():
        histogram_png(r, report.plot_dir / f"{r['lot_id']}.png")
    report.n_plots = len(chosen)
    report.example_lot = (report.failed or run.records)[0]["lot_id"]
    step(4, f"drew {report.n_plots} histograms in {report.plot_dir}")
    step(5, f"{len(report.failed)} of {len(run.records)} lots meet no grade of their scheme")
    _certify_and_verify(out, store, run.records, step)
    from fibergrade.demo_meat import run_weighing_line

    for line in run_weighing_line(out, store, out / "keys", seed):
        step(6, line)
    return report


#: certificates of the demo rendered as PDF as well (a page takes a fraction of a second)
DEMO_PDFS = 5


def _certify_and_verify(out: Path, store: Store, records: list[dict[str, Any]], step: Any) -> None:
    """Certify the day's clean graded lots, then verify one as an auditor would (issue 6).

    The lab key lives in OUT/keys, beside the store and never inside it. Lots certified by
    an earlier run are not certified again.
    """
    from fibergrade.certificates import certify_lots as certify
    from fibergrade.certificates import existing_certificates
    from fibergrade.keys import init_keys, load_private_key, load_public_key
    from fibergrade.verification import verify_certificate

    key_dir = out / "keys"
    if not (key_dir / "lab.key").exists():
        init_keys(key_dir)
        step(6, f"created the lab's Ed25519 key pair in {key_dir} (lab.key 0600, lab.pub)")
    private = load_private_key(key_dir / "lab.key")
    done = {e["certificate"]["lot"]["lot_id"] for e in existing_certificates(store)}
    clean = [
        r["lot_id"]
        for r in records
        if r["grade"] is not None and (r.get("screening") or {}).get("verdict") == "clean"
    ]
    todo = [lot for lot in clean if lot not in done]
    cert_dir = out / "certificates"
    if todo:
        certify(store, todo[:DEMO_PDFS], private, cert_dir, lab_name="fibergrade demo lab")
        certify(
            store, todo[DEMO_PDFS:], private, cert_dir, lab_name="fibergrade demo lab", pdf=False
        )
    pdfs = f", and PDF for the first {min(DEMO_PDFS, len(todo))}" if todo else ""
    step(
        6,
        f"certified {len(todo)} clean graded lots ({len(clean) - len(todo)} already certified) "
        f"into {cert_dir}: signed JSON{pdfs}",
    )
    if not clean:
        return
    example = sorted(cert_dir.glob(f"FG-{clean[0]}-*.json"))[-1]
    auditor_store = Store.open(store.root, create=False)
    rep = verify_certificate(example, load_public_key(key_dir / "lab.pub"), store=auditor_store)
    step(
        6,
        f"auditor check of {example.name} with only the store and lab.pub: "
        + "; ".join(f"{c}: ok" for c, _ in rep.checks),
    )
