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
            "(fibre.md), the 19 % floor [unsourced]; curvature and length [unsourced]",
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
            "coarse-cashmere",
            "cashmere",
            (17.5, 19.0),
            (19.0, 24.0),
            0.0,
            (45.0, 60.0),
            (32.0, 40.0),
            "cashmere coarser than the fine range: GB 18267 'coarse' > 16.0 um (secondary "
            "sources, fibre.md), at most 19 um by the US definition (15 U.S.C. 68b); the "
            "17.5 um lower bound is [unsourced], chosen above Mongolian 15.0-16.8 (some "
            "sources 16-17); CV as cashmere",
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
            "superfine-merino",
            "wool",
            (15.0, 17.0),
            (19.0, 24.0),
            0.0,
            (70.0, 150.0),
            (55.0, 80.0),
            "wool as fine as cashmere: Super S (IWTO) grades reach 150s <= 16.25 um "
            "and 200s <= 13.75 um (fibre.md); CV and curvature as merino (fibre.md); used only "
            "to measure what the screening model cannot see, never for training",
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
    #: optional third component, e.g. the coarse hair dehairing leaves in a genuine lot
    residual: list[str | None] | None = None
    residual_frac: np.ndarray | None = None  # 0 .. 1 by count of snippets


def generate(plan: LotPlan, rng: np.random.Generator) -> FibreLots:
    """Per-fibre measurements (diameter, curvature, length, medullation) for a plan."""
    return generate_with_params(plan, rng)[0]


def generate_with_params(
    plan: LotPlan, rng: np.random.Generator
) -> tuple[FibreLots, dict[str, np.ndarray]]:
    """As :func:`generate`, also returning each lot's drawn base-population parameters.

    The parameters (``mfd``, ``cv``, ``curv``, ``len``, ``med``, one value per lot) are the
    *true* lot figures of the base population before blending and measurement noise, which
    the screening model card uses to bin mislabelled lots by how far they lie from the
    declared range.
    """
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
    res = None
    if plan.residual is not None and plan.residual_frac is not None:
        res_names = [r if r is not None else plan.base[i] for i, r in enumerate(plan.residual)]
        res = lot_params(res_names)
        rfrac = np.where([r is None for r in plan.residual], 0.0, plan.residual_frac)

    lot_of = np.repeat(np.arange(n_lots), n)
    u = rng.random(lot_of.size)
    from_cont = u < frac[lot_of]
    if res is None:
        pick = {k: np.where(from_cont, cont[k][lot_of], base[k][lot_of]) for k in base}
    else:
        from_res = ~from_cont & (u < (frac + rfrac)[lot_of])
        pick = {
            k: np.where(
                from_cont, cont[k][lot_of], np.where(from_res, res[k][lot_of], base[k][lot_of])
            )
            for k in base
        }
    mu, sigma = lognormal_params(pick["mfd"], pick["cv"])
    d = _draw_diameters(rng, mu, sigma)
    curv = np.abs(rng.normal(pick["curv"], 0.25 * pick["curv"]))
    length = np.abs(rng.normal(pick["len"], 0.3 * pick["len"])) + 1.0
    medullated = rng.random(lot_of.size) < pick["med"]
    offsets = np.concatenate([[0], np.cumsum(n)]).astype(np.int64)
    lots = FibreLots(
        lot_ids=tuple(plan.lot_ids),
        offsets=offsets,
        diameter_um=d.astype(np.float32),
        length_mm=length.astype(np.float32),
        curvature_deg_mm=curv.astype(np.float32),
        medullated=medullated,
    )
    return lots, base


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


# --- screening training and evaluation sets (issue 5) --------------------------------------

#: the screening classes, in label order
CLASSES = ("clean", "suspect-contamination", "suspect-mislabel")

#: genuine populations per declared type and their share among clean lots [unsourced mix]
CLEAN_MIX: dict[str, float] = {
    "mongolian-cashmere": 0.25,
    "chinese-cashmere": 0.12,
    "baby-camel": 0.25,
    "adult-camel": 0.20,
    "yak-down": 0.09,
    "merino-wool": 0.09,
}

#: coarse hair left in a genuine lot after dehairing, upper bound of the share by count
RESIDUAL_HAIR: dict[str, float] = {
    # fibre.md: "hair content 0.1-0.3% after dehairing"; drawn from 0 and by count [unsourced]
    "mongolian-cashmere": 0.003,
    "chinese-cashmere": 0.003,  # as Mongolian cashmere [unsourced for Chinese]
    "coarse-cashmere": 0.003,  # as Mongolian cashmere [unsourced]
    "baby-camel": 0.01,  # fibre.md: "Mongolian combed baby 15.5 um, < 1% coarse hair"
    "adult-camel": 0.01,  # [unsourced]: as baby camel
    "yak-down": 0.005,  # [unsourced]
}

#: what may be blended into which genuine population (contaminant shares 1-30 %, issue 5)
CONTAMINANTS: dict[str, tuple[str, ...]] = {
    "mongolian-cashmere": ("coarse-wool", "merino-wool", "yak-down", "coarse-hair", "guard-hair"),
    "chinese-cashmere": ("coarse-wool", "merino-wool", "yak-down", "coarse-hair", "guard-hair"),
    "baby-camel": ("coarse-wool", "merino-wool", "yak-down", "coarse-hair", "guard-hair"),
    "adult-camel": ("coarse-wool", "coarse-hair", "guard-hair"),
    "yak-down": ("coarse-wool", "merino-wool", "coarse-hair"),
}

#: mislabelling cases of issue 5: (true population, declared type) and their share
MISLABELS: dict[tuple[str, str], float] = {
    ("adult-camel", "baby-camel"): 0.4,
    ("yak-down", "cashmere"): 0.3,
    ("coarse-cashmere", "cashmere"): 0.3,
}

#: case mix of the training set [unsourced: chosen so every case is well represented]
TRAINING_MIX = {"clean": 0.55, "contamination": 0.30, "mislabel": 0.15}

#: lot sizes in snippets (issue 5: "realistic lot sizes (1,000 to 20,000 snippets)")
LOT_SIZE_RANGE = (1000, 20000)
#: share of lots measured on a histogram-only instrument (no curvature, no medullation)
HISTOGRAM_SHARE = 0.25


@dataclass
class CaseTable:
    """What each lot of a screening set is: population, declaration, blend, and label."""

    base: list[str]
    declared: list[str]
    contaminant: list[str | None]
    contaminant_frac: np.ndarray
    label: np.ndarray  # index into CLASSES
    case: list[str]  # "clean", "contamination", "mislabel:<true>-as-<declared>"

    def __len__(self) -> int:
        return len(self.base)

    @staticmethod
    def concat(parts: list[CaseTable]) -> CaseTable:
        return CaseTable(
            base=[x for p in parts for x in p.base],
            declared=[x for p in parts for x in p.declared],
            contaminant=[x for p in parts for x in p.contaminant],
            contaminant_frac=np.concatenate([p.contaminant_frac for p in parts]),
            label=np.concatenate([p.label for p in parts]).astype(np.int64),
            case=[x for p in parts for x in p.case],
        )


def clean_cases(rng: np.random.Generator, n: int, mix: dict[str, float] | None = None) -> CaseTable:
    """``n`` genuine lots drawn from :data:`CLEAN_MIX` (or ``mix``)."""
    mix = mix or CLEAN_MIX
    names = list(mix)
    w = np.array([mix[k] for k in names], dtype=np.float64)
    base = [str(x) for x in rng.choice(names, size=n, p=w / w.sum())]
    return CaseTable(
        base=base,
        declared=[POPULATIONS[b].fibre_type for b in base],
        contaminant=[None] * n,
        contaminant_frac=np.zeros(n),
        label=np.zeros(n, np.int64),
        case=["clean"] * n,
    )


def contamination_cases(
    rng: np.random.Generator,
    n: int,
    bases: list[str] | None = None,
    contaminants: list[str] | None = None,
    pct: float | None = None,
) -> CaseTable:
    """``n`` blended lots; the share is log-uniform over 1-30 % unless ``pct`` fixes it.

    Without ``bases`` the genuine population follows :data:`CLEAN_MIX` (blendable ones);
    without ``contaminants`` each lot draws from :data:`CONTAMINANTS` of its base.
    """
    if bases is None:
        mix = {k: v for k, v in CLEAN_MIX.items() if k in CONTAMINANTS}
        base = clean_cases(rng, n, mix).base
    else:
        base = [str(x) for x in rng.choice(bases, size=n)]
    u = rng.random(n)
    if contaminants is None:
        cont = [
            CONTAMINANTS[b][int(k * len(CONTAMINANTS[b]))] for b, k in zip(base, u, strict=True)
        ]
    else:
        cont = [str(x) for x in rng.choice(contaminants, size=n)]
    if pct is None:
        frac = np.exp(rng.uniform(np.log(0.01), np.log(0.30), n))
    else:
        frac = np.full(n, pct / 100.0)
    return CaseTable(
        base=base,
        declared=[POPULATIONS[b].fibre_type for b in base],
        contaminant=list(cont),
        contaminant_frac=frac,
        label=np.ones(n, np.int64),
        case=["contamination"] * n,
    )


def mislabel_cases(
    rng: np.random.Generator, n: int, kinds: dict[tuple[str, str], float] | None = None
) -> CaseTable:
    """``n`` lots whose declared type is not the true one (:data:`MISLABELS` or ``kinds``)."""
    kinds = kinds or MISLABELS
    keys = list(kinds)
    w = np.array([kinds[k] for k in keys], dtype=np.float64)
    pick = rng.choice(len(keys), size=n, p=w / w.sum())
    return CaseTable(
        base=[keys[i][0] for i in pick],
        declared=[keys[i][1] for i in pick],
        contaminant=[None] * n,
        contaminant_frac=np.zeros(n),
        label=np.full(n, 2, np.int64),
        case=[f"mislabel:{keys[i][0]}-as-{keys[i][1]}" for i in pick],
    )


def training_cases(rng: np.random.Generator, n_lots: int) -> CaseTable:
    """The training case mix (:data:`TRAINING_MIX`): clean, blended and mislabelled lots."""
    n_clean = round(TRAINING_MIX["clean"] * n_lots)
    n_cont = round(TRAINING_MIX["contamination"] * n_lots)
    return CaseTable.concat(
        [
            clean_cases(rng, n_clean),
            contamination_cases(rng, n_cont),
            mislabel_cases(rng, n_lots - n_clean - n_cont),
        ]
    )


@dataclass
class ScreeningSet:
    """Per-lot figures of a generated set with what each lot truly is (no fibres kept)."""

    summary: Any  # fibergrade.distribution.LotSummary
    cases: CaseTable
    true_mfd_um: np.ndarray  # the base population's drawn lot MFD, before blending

    @property
    def declared(self) -> np.ndarray:
        return np.asarray(self.cases.declared)

    @property
    def label(self) -> np.ndarray:
        return self.cases.label


def build_set(
    cases: CaseTable,
    rng: np.random.Generator,
    *,
    chunk_lots: int = 500,
    histogram_share: float = HISTOGRAM_SHARE,
    id_prefix: str = "SYN",
    progress: Any = None,
) -> ScreeningSet:
    """Generate and summarise every lot of ``cases``, a chunk of lots at a time.

    Lot sizes are log-uniform over :data:`LOT_SIZE_RANGE`; genuine lots carry residual hair
    (:data:`RESIDUAL_HAIR`); a share of lots goes through a histogram-only instrument
    (1-um classes, no curvature or medullation), like the demo's Laserscan-style lots. Only
    the per-lot summaries are kept, so memory is one chunk's fibres.
    """
    from fibergrade.adapters.writers import to_histograms
    from fibergrade.distribution import LotSummary, summarise, summarise_histograms

    n_lots = len(cases)
    lo, hi = LOT_SIZE_RANGE
    sizes = np.exp(rng.uniform(np.log(lo), np.log(hi), n_lots)).astype(np.int64)
    res_frac = rng.random(n_lots) * np.array([RESIDUAL_HAIR.get(b, 0.0) for b in cases.base])
    is_hist = rng.random(n_lots) < histogram_share
    parts: list[Any] = []
    true_mfd = np.empty(n_lots)
    starts = list(range(0, n_lots, chunk_lots))
    for k, a in enumerate(starts):  # a loop over chunks of lots, each generated at once
        b = min(a + chunk_lots, n_lots)
        sl = slice(a, b)
        plan = LotPlan(
            lot_ids=[f"{id_prefix}-{i:07d}" for i in range(a, b)],
            base=cases.base[sl],
            contaminant=cases.contaminant[sl],
            contaminant_frac=cases.contaminant_frac[sl],
            n_fibres=sizes[sl],
            residual=["coarse-hair"] * (b - a),
            residual_frac=res_frac[sl],
        )
        fibres, params = generate_with_params(plan, rng)
        true_mfd[sl] = params["mfd"]
        h = np.flatnonzero(is_hist[sl])
        f = np.flatnonzero(~is_hist[sl])
        summ = summarise(fibres.select(f)) if h.size else summarise(fibres)
        if h.size:
            hs = summarise_histograms(to_histograms(fibres.select(h)))
            order = np.concatenate([f, h])
            inverse = np.empty(order.size, np.int64)
            inverse[order] = np.arange(order.size)
            summ = LotSummary.concat([summ, hs]).select(inverse)
        parts.append(summ)
        if progress:
            progress(k + 1, len(starts))
    return ScreeningSet(summary=LotSummary.concat(parts), cases=cases, true_mfd_um=true_mfd)
