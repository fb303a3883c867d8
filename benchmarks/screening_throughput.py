#!/usr/bin/env python
"""Screening throughput: lots per second, and screening's share of the whole grading time.

Usage::

    python benchmarks/screening_throughput.py [--lots 100000] [--model-dir models] [--json]

One run, one synthetic day (issue 5, "Screening 100,000 lots is in make bench"):

1. ``--sample`` lots are generated from the documented populations
   (:func:`fibergrade.synthetic.build_set` case mix of clean, blended and mislabelled lots,
   1,000-20,000 snippets each) and kept as fibres;
2. ``summarise``: the distribution core summarises those fibres as many times as it takes
   to cover ``--lots`` lots (the same fibres again; wall time measured, not extrapolated);
3. ``grade``: :func:`fibergrade.grading.grade` of the ``--lots`` summaries (the sample's
   summaries repeated) under the cashmere scheme;
4. ``screen``: :func:`fibergrade.screening.screen` of the same summaries (features, model,
   verdicts and reasons) with the shipped model.

Reported: screening lots/s, the features/model split, and the share
``screen / (summarise + grade + screen)``. The shipped model must exist (``fibergrade
model train``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "screening_throughput.json"
SEED = 20261121


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lots", type=int, default=100_000, help="lots to screen")
    ap.add_argument("--sample", type=int, default=1000, help="distinct lots generated")
    ap.add_argument("--model-dir", type=Path, default=None, help="model directory")
    ap.add_argument("--json", action="store_true", help="print JSON only")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the JSON")
    args = ap.parse_args(argv)

    from fibergrade.distribution import summarise
    from fibergrade.errors import FibergradeError
    from fibergrade.grading import grade, standard_for_type
    from fibergrade.screening import features, load_model, screen
    from fibergrade.synthetic import (
        LOT_SIZE_RANGE,
        LotPlan,
        generate,
        training_cases,
    )

    try:
        model = load_model(args.model_dir)
    except FibergradeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 4
    rng = np.random.default_rng(SEED)
    cases = training_cases(rng, args.sample)
    lo, hi = LOT_SIZE_RANGE
    sizes = np.exp(rng.uniform(np.log(lo), np.log(hi), args.sample)).astype(np.int64)
    plan = LotPlan(
        [f"B{i:06d}" for i in range(args.sample)],
        cases.base,
        cases.contaminant,
        cases.contaminant_frac,
        sizes,
    )
    fibres = generate(plan, rng)
    summarise(fibres.select([0]))  # compile the kernel outside the timing

    reps = -(-args.lots // args.sample)
    t0 = time.perf_counter()
    for _ in range(reps):  # the same fibres again, to cover --lots lots
        sample = summarise(fibres)
    t_summarise = (time.perf_counter() - t0) * args.lots / (reps * args.sample)

    idx = np.arange(args.lots) % args.sample
    summ = sample.select(idx)
    declared = np.asarray(cases.declared)[idx]
    std = standard_for_type("cashmere")
    assert std is not None
    t0 = time.perf_counter()
    grade(summ, std)
    t_grade = time.perf_counter() - t0

    t0 = time.perf_counter()
    x = features(summ, declared)
    t_features = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.estimator.predict_proba(x[: min(len(x), 20000)])
    t_model_20k = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = screen(model, summ, list(declared))
    t_screen = time.perf_counter() - t0

    total = t_summarise + t_grade + t_screen
    report = {
        "lots": args.lots,
        "distinct_lots": args.sample,
        "fibres_per_lot_mean": float(sizes.mean()),
        "seconds": {
            "summarise": round(t_summarise, 3),
            "grade": round(t_grade, 3),
            "screen": round(t_screen, 3),
            "screen_features": round(t_features, 3),
            "model_predict_20k_lots": round(t_model_20k, 3),
        },
        "screen_lots_per_s": round(args.lots / t_screen, 1),
        "screen_share_of_grading": round(t_screen / total, 4),
        "flagged_share": round(float((res.verdict != "clean").mean()), 4),
        "model_digest": model.digest,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    s = report["seconds"]
    print(
        f"screening {args.lots:,} lots ({args.sample} distinct, mean {sizes.mean():.0f} snippets)"
    )
    print(f"  summarise fibres  {s['summarise']:8.2f} s")
    print(f"  grade             {s['grade']:8.2f} s")
    print(
        f"  screen            {s['screen']:8.2f} s  ({report['screen_lots_per_s']:,.0f} lots/s; "
        f"features {s['screen_features']:.2f} s)"
    )
    print(
        f"  screening share of the whole grading time: "
        f"{100 * report['screen_share_of_grading']:.1f}%"
    )
    print(f"  written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
