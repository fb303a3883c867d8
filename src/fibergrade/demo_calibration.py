"""The demo's calibration step: simulated instruments "measure" the reference tops.

Synthetic: each simulated instrument reads a top as ``offset + scale * assigned`` plus a
little seeded noise. The biases below are made up for the demo (only the OFDA offset echoes
fibre.md's OFDA4000 vs Laserscan MFD difference of +0.16 um); the demo's lots were generated
without them, so the calibrated figures differ from the generator's truth by about that
much. The measurements are written as the documented tops CSV, then recorded through
:func:`fibergrade.calibration.calibrate` exactly as ``fibergrade calibrate`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fibergrade.calibration import (
    calibrate,
    instrument_state,
    load_reference_set,
    read_top_measurements,
)
from fibergrade.store import Store, sha256_file

#: the demo's reference set (calibration/references/ih-23.toml)
DEMO_REFERENCE = "ih-23"
#: simulated instrument -> (offset um, scale) of its reading of a top [synthetic, made up]
SIMULATED_BIAS: dict[str, tuple[float, float]] = {
    "OFDA-SIM-1": (0.16, 1.004),
    "LASERSCAN-SIM-2": (-0.05, 0.997),
}
#: SD of the noise on each simulated top reading, um [synthetic]
TOP_NOISE_UM = 0.02


@dataclass(frozen=True)
class DemoCalibration:
    instrument_id: str
    calibration_id: str
    slope: float
    intercept_um: float
    r2: float
    range_um: tuple[float, float]
    already_recorded: bool
    path: Path


def write_simulated_tops(path: Path, instrument_id: str, seed: int) -> None:
    """Write what ``instrument_id`` would read on each top of the demo's reference set."""
    ref = load_reference_set(DEMO_REFERENCE)
    offset, scale = SIMULATED_BIAS[instrument_id]
    rng = np.random.default_rng([seed, sum(instrument_id.encode())])
    assigned = np.array([t.mfd_um for t in ref.tops])
    cv = np.array([t.cv_pct for t in ref.tops])
    measured = offset + scale * assigned + rng.normal(0.0, TOP_NOISE_UM, assigned.size)
    lines = [
        f"# {instrument_id} reading the {ref.id} tops: synthetic (fibergrade demo, seed {seed})",
        "top,measured_mfd_um,measured_cv_pct",
    ]
    lines += [f"{t.top},{m:.2f},{c:.2f}" for t, m, c in zip(ref.tops, measured, cv, strict=True)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def calibrate_simulated_instruments(
    store: Store, out_dir: Path, seed: int, date: str
) -> list[DemoCalibration]:
    """Calibrate every simulated instrument; a still-valid calibration from the same tops
    file is recognised and not recorded twice."""
    ref = load_reference_set(DEMO_REFERENCE)
    done = []
    for inst in SIMULATED_BIAS:
        path = out_dir / f"tops_{inst.lower()}_{date}.csv"
        write_simulated_tops(path, inst, seed)
        digest = sha256_file(path)
        st = instrument_state(store, inst)
        prev = st.record if st.state == "valid" else None
        again = (
            prev is not None
            and st.calibration_id is not None
            and prev.get("measurements", {}).get("source_digest") == digest
        )
        if again and prev is not None and st.calibration_id is not None:
            cid, rec = st.calibration_id, prev
        else:
            cid, rec = calibrate(
                store,
                inst,
                ref,
                read_top_measurements(path),
                operator="fibergrade demo",
                source_name=path.name,
                source_digest=digest,
            )
        done.append(
            DemoCalibration(
                inst,
                cid,
                rec["line"]["slope"],
                rec["line"]["intercept_um"],
                rec["r2"],
                (rec["range_um"][0], rec["range_um"][1]),
                again,
                path,
            )
        )
    return done
