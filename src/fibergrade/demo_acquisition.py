"""The demo's live acquisition: part of the day streams from simulated instruments on ptys.

The first lots of the day are not exported to the OFDA-style CSV: the same analyser
(``OFDA-SIM-1``) streams them live in the fibergrade line protocol from a simulator on a
real pty, and :func:`fibergrade.acquisition.acquire_samples` reads them with the real
:class:`~fibergrade.adapters.analyser.AnalyserReader` and commits each sample as its own
segment, with the lot's manifest metadata. The protocol carries diameter and curvature
only, so these lots have no length or medullation figures. The stream is unpaced (as fast
as the reader takes it) to keep the demo quick; ``make bench`` measures the reader against
a stream paced at 115200 baud.

Then the conditioned test specimens of a few of those lots are weighed on a simulated
MT-SICS balance (stable weights, the profile's one-second rule), each stored as a
``weighing`` result with the lot id as subject.

Running the demo again streams the same bytes, so every sample is recognised as already
imported; specimens already weighed by the demo's balance are not weighed again.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fibergrade.acquisition import WeighingAcquisition, acquire_samples, acquire_weights
from fibergrade.adapters.analyser import AnalyserReader
from fibergrade.adapters.profiles import Profile, load_profile
from fibergrade.adapters.scales import open_scale
from fibergrade.adapters.simulators import SampleSpec, start_simulator
from fibergrade.errors import FibergradeError
from fibergrade.measurements import FibreLots, LotMeta
from fibergrade.store import Store

#: lots of the day that stream live instead of going into the export file
LIVE_LOTS = 8
#: specimens weighed on the simulated balance
WEIGHED_SPECIMENS = 3
#: the analyser is the OFDA-style instrument of the day, streaming instead of exporting
ANALYSER_ID = "OFDA-SIM-1"
BALANCE_ID = "DEMO-BALANCE-1"


def live_lot_count(n_fibre_lots: int) -> int:
    """How many of the day's per-fibre lots stream live (at least one stays in the CSV)."""
    return max(0, min(LIVE_LOTS, n_fibre_lots - 1))


def _samples(lots: FibreLots) -> list[SampleSpec]:
    c = lots.curvature_deg_mm
    out: list[SampleSpec] = []
    for i, lot in enumerate(lots.lot_ids):
        a, b = int(lots.offsets[i]), int(lots.offsets[i + 1])
        out.append((lot, lots.diameter_um[a:b].tolist(), None if c is None else c[a:b].tolist()))
    return out


def run_live_acquisition(
    store: Store, lots: FibreLots, meta: Mapping[str, LotMeta], seed: int
) -> list[str]:
    """Acquire ``lots`` from a simulated analyser and weigh a few specimens; returns the
    demo's report lines. Raises :class:`FibergradeError` if anything is lost."""
    lines: list[str] = []
    profile = load_profile("analyser-line")
    with (
        start_simulator("analyser", samples=_samples(lots)) as sim,
        AnalyserReader.open(profile, sim.url) as reader,
    ):
        run = acquire_samples(
            store,
            reader,
            profile=profile.name,
            instrument_id=ANALYSER_ID,
            lot_meta=meta,
            max_samples=lots.n_lots,
            idle_timeout_s=5.0,
        )
        url = sim.url
    if run.ended == "interrupted":  # Ctrl-C: the acquisition kept what it had; exit 130
        raise KeyboardInterrupt
    if not run.complete or len(run.committed) != lots.n_lots:
        why = run.errors[0].message if run.errors else run.detail
        raise FibergradeError(
            f"demo acquisition did not store every sample ({why}); a store left by an older "
            "demo holds the same lots from other sources: remove it or use another --out"
        )
    new = run.new_samples
    state = f"{new} new segments" if new else "all already in the store"
    lines.append(
        f"acquire {lots.n_lots} lots live from simulated analyser {ANALYSER_ID} on {url} "
        f"({profile.protocol}, unpaced): {run.readings:,} readings in {run.elapsed_s:.2f} s "
        f"({run.readings_per_s:,.0f}/s), {state}"
    )

    subjects = list(lots.lot_ids[:WEIGHED_SPECIMENS])
    rng = np.random.default_rng([seed, 3])
    scale_profile = load_profile("mt-sics-scale")
    assert scale_profile.scale is not None
    e = scale_profile.scale.e
    loads = [round(float(x) / e) * e for x in rng.uniform(20.0, 60.0, len(subjects))]
    weighed = weigh_on_simulated_scale(store, scale_profile, BALANCE_ID, subjects, loads)
    if weighed is None:
        lines.append(f"weigh specimens of {', '.join(subjects)}: already weighed on {BALANCE_ID}")
        return lines
    shown = ", ".join(
        f"{s.record['subject']} {s.record['value']:.2f} {s.record['unit']}" for s in weighed.stored
    )
    lines.append(
        f"weigh specimens on simulated MT-SICS balance {BALANCE_ID} (stable weights): {shown}"
    )
    return lines


def weigh_on_simulated_scale(
    store: Store, profile: Profile, scale_id: str, subjects: list[str], loads: list[float]
) -> WeighingAcquisition | None:
    """Weigh each subject at its load on the profile's simulated scale (real driver, pty).

    Returns None when every subject already has a weighing on ``scale_id`` (the demo is
    re-runnable); raises when a weighing fails.
    """
    done = {
        rec.get("subject")
        for _, rec in store.results("weighing")
        if rec.get("scale_id") == scale_id
    }
    if all(s in done for s in subjects):
        return None
    with (
        start_simulator("scale", profile.protocol, profile=profile, load=0.0, settle_s=0.1) as sim,
        open_scale(profile, sim.url, scale_id=scale_id) as scale,
    ):
        weighed = acquire_weights(
            store,
            scale,
            profile=profile.name,
            subjects=subjects,
            before_weighing=lambda k, _subject: sim.balance.set_load(loads[k]),
        )
    if weighed.ended == "interrupted":  # Ctrl-C: the stored weights stay; exit 130
        raise KeyboardInterrupt
    if not weighed.complete:
        why = weighed.errors[0].message if weighed.errors else weighed.detail
        raise FibergradeError(f"demo weighing on {scale_id} failed: {why}")
    return weighed
