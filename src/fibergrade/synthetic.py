"""Synthetic fibre lots drawn from documented populations.

No public per-fibre data set exists (``shared/reference/fibre.md``), so demo days, tests and
the screening model's training data are generated here. Diameters are log-normal with
``sigma_log = sqrt(ln(1 + CV^2))`` (fibre.md: "Diameter distributions are close to
log-normal"). Each population states the source of its numbers; ``[unsourced]`` marks a
figure the project chose because no source was found, and the data card repeats that.

Generation is vectorised over lots and fibres: per-lot parameters are drawn first, then one
draw per fibre through ``np.repeat`` of the lot parameters. Values are drawn from the
log-normal restricted to the physical range 1 < d <= 200 um by redrawing, never by clipping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fibergrade.measurements import FibreLots, LotMeta


@dataclass(frozen=True)
class Population:
    id: str
    fibre_type: str  # the declared type this population is sold as when genuine
    mfd_um: tuple[float, float]  # range of lot mean diameters
    cv_pct: tuple[float, float]  # range of lot CVs
    medullated_frac: float  # share of medullated snippets
    curvature_deg_mm: tuple[float, float]  # lot mean range
    length_mm: tuple[float, float]  # lot mean range
    source: str


POPULATIONS: dict[str, Population] = {
    p.id: p
    for p in (
        Population(
            "mongolian-cashmere",
            "cashmere",
            (15.0, 16.8),
            (19.0, 24.0),
            0.0,
            (45.0, 60.0),
            (32.0, 40.0),
            "MFD 15.0-16.8 um (fibre.md, Typical populations); CV: cashmere goats CV < 25 % "
            "(fibre.md); curvature and length [unsourced]",
        ),
        Population(
            "chinese-cashmere",
            "cashmere",
            (14.5, 15.5),
            (19.0, 24.0),
            0.0,
            (45.0, 60.0),
            (32.0, 40.0),
            "MFD 14.5-15.5 um (fibre.md); CV as Mongolian cashmere; curvature, length [unsourced]",
        ),
        Population(
            "baby-camel",
            "baby-camel",
            (15.5, 17.5),
            (18.0, 22.0),
            0.0,
            (30.0, 45.0),
            (35.0, 40.0),
            "MFD 15.5-17.5 um, length 35-40 mm (fibre.md); CV 18-22 % and curvature [unsourced]",
        ),
        Population(
            "adult-camel",
            "adult-camel",
            (19.0, 24.0),
            (22.0, 28.0),
            0.01,
            (25.0, 40.0),
            (35.0, 60.0),
            "adult camel down MFD 19-24 um (fibre.md); CV, medullation, curvature [unsourced]",
        ),
        Population(
            "yak-down",
            "yak",
            (16.0, 20.0),
            (22.0, 28.0),
            0.0,
            (35.0, 50.0),
            (30.0, 40.0),
            "yak down MFD 16-20 um (fibre.md); CV, curvature, length [unsourced]",
        ),
        Population(
            "merino-wool",
            "wool",
            (17.0, 24.0),
            (19.0, 26.0),
            0.0,
            (70.0, 150.0),
            (60.0, 90.0),
            "merino MFD 17-24 um, CV 19-26 %, curvature 70-150 deg/mm (fibre.md); length "
            "[unsourced]",
        ),
        Population(
            "coarse-wool",
            "wool",
            (22.0, 30.0),
            (22.0, 28.0),
            0.02,
            (50.0, 90.0),
            (70.0, 110.0),
            "wool MFD >= 22 um as in the screening target (issue 5); range above 24 um, CV, "
            "medullation [unsourced]",
        ),
        Population(
            "coarse-hair",
            "camel-hair",
            (30.0, 40.0),
            (20.0, 28.0),
            0.5,
            (10.0, 25.0),
            (50.0, 90.0),
            "camel coarse hair 30-40 um (fibre.md); medullated share, CV, curvature [unsourced]",
        ),
        Population(
            "guard-hair",
            "camel-hair",
            (40.0, 120.0),
            (20.0, 30.0),
            0.9,
            (5.0, 15.0),
            (60.0, 120.0),
            "camel guard hair 40-120 um, medullated (fibre.md); CV, shares [unsourced]",
        ),
    )
}

#: measurement noise added to every snippet, um (SD) [unsourced: instrument-dependent]
MEASUREMENT_NOISE_UM = 0.3


def lognormal_params(mfd: np.ndarray, cv_pct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of the log of a log-normal with mean ``mfd`` and CV ``cv_pct`` %."""
    cv = np.asarray(cv_pct, dtype=np.float64) / 100.0
    sigma = np.sqrt(np.log1p(cv * cv))
    mu = np.log(np.asarray(mfd, dtype=np.float64)) - 0.5 * sigma * sigma
    return mu, sigma


def _draw_diameters(rng: np.random.Generator, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """One diameter per entry, restricted to (1, 200] um by redrawing (no clipping)."""
    d = np.exp(rng.normal(mu, sigma)) + rng.normal(0.0, MEASUREMENT_NOISE_UM, mu.size)
    bad = ~((d > 1.0) & (d <= 200.0))
    while bad.any():  # redraw the rare out-of-range values; terminates with probability 1
        idx = np.flatnonzero(bad)
        d[idx] = np.exp(rng.normal(mu[idx], sigma[idx])) + rng.normal(
            0.0, MEASUREMENT_NOISE_UM, idx.size
        )
        bad[idx] = ~((d[idx] > 1.0) & (d[idx] <= 200.0))
    return d


@dataclass
class LotPlan:
    """What to generate for each lot: the base population and an optional contaminant."""

    lot_ids: list[str]
    base: list[str]
    contaminant: list[str | None]
    contaminant_frac: np.ndarray  # 0 .. 1 by count of snippets
    n_fibres: np.ndarray
    extras: dict[str, list[Any]] = field(default_factory=dict)


def generate(plan: LotPlan, rng: np.random.Generator) -> FibreLots:
    """Per-fibre measurements (diameter, curvature, length, medullation) for a plan."""
    n_lots = len(plan.lot_ids)
    n = np.asarray(plan.n_fibres, dtype=np.int64)

    def lot_params(names: list[str]) -> dict[str, np.ndarray]:
        pops = [POPULATIONS[x] for x in names]
        u = rng.random((4, len(names)))

        def span(attr: str, k: int) -> np.ndarray:
            lo = np.array([getattr(p, attr)[0] for p in pops])
            hi = np.array([getattr(p, attr)[1] for p in pops])
            return lo + u[k] * (hi - lo)

        return {
            "mfd": span("mfd_um", 0),
            "cv": span("cv_pct", 1),
            "curv": span("curvature_deg_mm", 2),
            "len": span("length_mm", 3),
            "med": np.array([p.medullated_frac for p in pops]),
        }

    base = lot_params(plan.base)
    cont_names = [c if c is not None else plan.base[i] for i, c in enumerate(plan.contaminant)]
    cont = lot_params(cont_names)
    frac = np.where([c is None for c in plan.contaminant], 0.0, plan.contaminant_frac)

    lot_of = np.repeat(np.arange(n_lots), n)
    from_cont = rng.random(lot_of.size) < frac[lot_of]
    pick = {k: np.where(from_cont, cont[k][lot_of], base[k][lot_of]) for k in base}
    mu, sigma = lognormal_params(pick["mfd"], pick["cv"])
    d = _draw_diameters(rng, mu, sigma)
    curv = np.abs(rng.normal(pick["curv"], 0.25 * pick["curv"]))
    length = np.abs(rng.normal(pick["len"], 0.3 * pick["len"])) + 1.0
    medullated = rng.random(lot_of.size) < pick["med"]
    offsets = np.concatenate([[0], np.cumsum(n)]).astype(np.int64)
    return FibreLots(
        lot_ids=tuple(plan.lot_ids),
        offsets=offsets,
        diameter_um=d.astype(np.float32),
        length_mm=length.astype(np.float32),
        curvature_deg_mm=curv.astype(np.float32),
        medullated=medullated,
    )


# --- a lab's day, for the demo -------------------------------------------------------------

_ORIGINS = {
    # (country, region, GI claim) -- GI codes here are demo labels, not registered codes
    "mongolian-cashmere": [
        ("MN", "Bayankhongor", "DEMO-GI-MN-CASHMERE"),
        ("MN", "Govi-Altai", None),
    ],
    "chinese-cashmere": [("CN", "Alxa", None)],
    "baby-camel": [("MN", "Ömnögovi", "DEMO-GI-MN-CAMEL"), ("MN", "Dundgovi", None)],
    "adult-camel": [("MN", "Ömnögovi", None), ("KZ", "Mangystau", None)],
}
_CLIENTS = ["Gobi Herders Cooperative", "Altai Fibre LLC", "Steppe Down Traders", "Khan Textile"]


@dataclass
class DemoDay:
    fibres: FibreLots
    meta: dict[str, LotMeta]
    plan: LotPlan

    def truth(self, lot_id: str) -> dict[str, Any]:
        i = self.plan.lot_ids.index(lot_id)
        return {
            "base": self.plan.base[i],
            "contaminant": self.plan.contaminant[i],
            "contaminant_pct": round(100 * float(self.plan.contaminant_frac[i]), 1),
            "declared_type": self.meta[lot_id].declared_type,
        }


def demo_day(seed: int = 2026, n_lots: int = 300, date: str = "2026-11-20") -> DemoDay:
    """A realistic day of a fibre lab: several types and origins, some lots not what they say.

    About 85 % of lots are genuine; the rest are blended with coarse wool, yak down or
    coarse hair at 3-30 %, or are adult camel declared as baby camel.
    """
    rng = np.random.default_rng(seed)
    genuine = ["mongolian-cashmere", "chinese-cashmere", "baby-camel", "adult-camel"]
    weights = np.array([0.4, 0.15, 0.25, 0.2])
    base = list(rng.choice(genuine, size=n_lots, p=weights))
    declared = [POPULATIONS[b].fibre_type for b in base]
    contaminant: list[str | None] = [None] * n_lots
    frac = np.zeros(n_lots)
    kind = rng.random(n_lots)
    for i in np.flatnonzero(kind > 0.85):  # the few bad lots of the day (not a hot path)
        b = base[i]
        if b == "adult-camel" or (b == "baby-camel" and rng.random() < 0.4):
            base[i] = "adult-camel"
            declared[i] = "baby-camel"  # mislabelled: adult camel sold as baby camel
        else:
            contaminant[i] = str(rng.choice(["coarse-wool", "yak-down", "coarse-hair"]))
            frac[i] = rng.uniform(0.03, 0.30)
    n = rng.integers(1500, 4000, n_lots)
    lot_ids = [f"{date.replace('-', '')}-{i + 1:04d}" for i in range(n_lots)]
    plan = LotPlan(lot_ids, base, contaminant, frac, n)
    fibres = generate(plan, rng)
    meta = {}
    for i, lot in enumerate(lot_ids):
        country, region, gi = _pick_origin(rng, plan.base[i], declared[i])
        meta[lot] = LotMeta(
            lot_id=lot,
            declared_type=declared[i],
            origin=country,
            region=region,
            gi_code=gi,
            client=str(rng.choice(_CLIENTS)),
            instrument_id="OFDA-SIM-1",
            received_at=f"{date}T08:00:00+08:00",
            measured_at=f"{date}T{9 + (i * 8) // n_lots:02d}:{(i * 7) % 60:02d}:00+08:00",
        )
    return DemoDay(fibres=fibres, meta=meta, plan=plan)


def _pick_origin(rng: np.random.Generator, base: str, declared: str) -> tuple[str, str, str | None]:
    # a mislabelled lot carries the origin its declared type would have
    key = base if POPULATIONS[base].fibre_type == declared else "baby-camel"
    choices = _ORIGINS.get(key) or _ORIGINS["mongolian-cashmere"]
    return choices[int(rng.integers(0, len(choices)))]
