#!/usr/bin/env python
"""Certificate throughput: certify and verify N lots (default 10,000), certificates per second.

Usage::

    python benchmarks/certificate_throughput.py [--lots 10000] [--fibres-per-lot 1000] [--json]

Builds a temporary store of genuine synthetic cashmere lots (segments of 1,000 lots), grades
and screens them, then measures in one run:

- ``certify_json``: signed JSON certificates per second (``certify --no-pdf``), every clean lot;
- ``certify_pdf``: one-page PDFs rendered per second (table, histogram, how to verify), on a
  sample of the certificates;
- ``verify_signature``: certificates verified per second with the public key only;
- ``verify_recompute``: certificates verified per second with the store, as one batch
  (``verify_certificates``, what ``fibergrade verify`` runs): signature, standing, audit
  log and position, raw segment digest, manifest, calibration, standard, every figure
  recomputed from the lot's raw fibres, and the lots screened again (together, at the end).

Grading time is printed beside them for scale. Nothing is asserted: these are figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def build(root: Path, n_lots: int, per_lot: int, seed: int = 20261122) -> Any:
    from fibergrade.measurements import LotMeta
    from fibergrade.store import PendingSegment, Store
    from fibergrade.synthetic import LotPlan, generate

    rng = np.random.default_rng(seed)
    store = Store.open(root / "store")
    pending = []
    for start in range(0, n_lots, 1000):
        ids = [f"B-{i:06d}" for i in range(start, min(start + 1000, n_lots))]
        plan = LotPlan(
            ids,
            ["mongolian-cashmere"] * len(ids),
            [None] * len(ids),
            np.zeros(len(ids)),
            np.full(len(ids), per_lot),
        )
        table = generate(plan, rng)
        meta = {x: LotMeta(x, declared_type="cashmere", origin="MN", client="bench") for x in ids}
        digest = f"{start:064x}"
        pending.append(PendingSegment(table, meta, f"bench-{start}.csv", digest))
    store.import_segments(pending)
    return store


def run(args: argparse.Namespace) -> dict[str, Any]:
    from fibergrade.certificate_pdf import render_pdf
    from fibergrade.certificates import certify_lots
    from fibergrade.keys import init_keys, load_private_key, load_public_key
    from fibergrade.store import Store
    from fibergrade.verification import VerifyReport, verify_certificate, verify_certificates
    from fibergrade.workflow import grade_lots

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        store = build(root, args.lots, args.fibres_per_lot)
        t_build = time.perf_counter() - t
        t = time.perf_counter()
        run_ = grade_lots(store)
        t_grade = time.perf_counter() - t
        clean = [
            r["lot_id"]
            for r in run_.records
            if r["grade"] and (r.get("screening") or {}).get("verdict") == "clean"
        ]
        priv, pub, _ = init_keys(root / "keys")
        key, public = load_private_key(priv), load_public_key(pub)
        t = time.perf_counter()
        res = certify_lots(store, clean, key, root / "certs", pdf=False)
        t_cert = time.perf_counter() - t
        clean_set = set(clean)
        sample = [r["lot_id"] for r in run_.records if r["lot_id"] not in clean_set]
        by_lot = {r["lot_id"]: r for r in run_.records}
        pdf_certs = res.issued[: args.pdf_sample]
        (root / "pdf").mkdir()
        t = time.perf_counter()
        for i in pdf_certs:  # the PDF page alone: table, histogram, verification text
            render_pdf(
                i.envelope,
                by_lot[i.envelope["certificate"]["lot"]["lot_id"]],
                root / "pdf" / f"{i.number}.pdf",
            )
        t_pdf = time.perf_counter() - t
        paths = [i.json_path for i in res.issued]
        t = time.perf_counter()
        for p in paths:
            verify_certificate(p, public)
        t_sig = time.perf_counter() - t
        auditor = Store.open(store.root, create=False)
        cache: dict = {}
        t = time.perf_counter()
        # as `fibergrade verify --store` does: one batch, screened again together at its end
        outcomes = verify_certificates(paths, public, store=auditor, cache=cache)
        t_full = time.perf_counter() - t
        failed = [o for o in outcomes if not isinstance(o, VerifyReport)]
        if failed:
            raise SystemExit(f"{len(failed)} certificate(s) failed verification: {failed[0]}")
    n = len(paths)
    return {
        "lots": args.lots,
        "fibres_per_lot": args.fibres_per_lot,
        "certified": n,
        "not_certified": len(sample),
        "certify_json": n / t_cert,
        "certify_pdf": len(pdf_certs) / t_pdf if pdf_certs else None,
        "verify_signature": n / t_sig,
        "verify_recompute": n / t_full,
        "grade_lots_per_s": args.lots / t_grade,
        "seconds": {
            "build_store": t_build,
            "grade_and_screen": t_grade,
            "certify": t_cert,
            "certify_pdf_sample": t_pdf,
            "verify_signature": t_sig,
            "verify_recompute": t_full,
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lots", type=int, default=10_000)
    ap.add_argument("--fibres-per-lot", type=int, default=1_000)
    ap.add_argument("--pdf-sample", type=int, default=20)
    ap.add_argument("--json", action="store_true", help="print only the JSON result")
    args = ap.parse_args(argv)
    doc = run(args)
    if args.json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"certificates: {doc['certified']} of {doc['lots']} lots (clean, graded)")
    t.add_column("step")
    t.add_column("certificates / s", justify="right")
    for key, label in (
        ("certify_json", "certify (signed JSON)"),
        ("certify_pdf", f"PDF page rendering ({args.pdf_sample} certificates)"),
        ("verify_signature", "verify, public key only"),
        ("verify_recompute", "verify with recomputation from the store"),
    ):
        v = doc[key]
        t.add_row(label, "—" if v is None else f"{v:,.0f}")
    Console().print(t)
    print(f"grading + screening: {doc['grade_lots_per_s']:,.0f} lots/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
