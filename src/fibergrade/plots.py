"""Histogram pictures (PNG, matplotlib's Agg backend: no screen needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def histogram_png(record: dict[str, Any], path: str | Path) -> Path:
    """Draw the 1-um histogram of one lot's record (as ``grade --json`` gives) to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = record["histogram"]
    counts = hist["counts"]
    first = hist["first_lower_um"] or 0.0
    lowers = [first + k for k in range(len(counts))]
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    ax.bar(lowers, counts, width=1.0, align="edge", color="#4a7ab5", edgecolor="white", lw=0.4)
    cut = record.get("cut_um", 30.0)
    ax.axvline(cut, color="#b5443a", lw=1.2, ls="--", label=f"{cut:g} um cut")
    if record.get("mfd_um") is not None:
        ax.axvline(record["mfd_um"], color="black", lw=1.2, label=f"MFD {record['mfd_um']:.1f} um")
    ax.set_xlabel("diameter (um), 1-um classes")
    ax.set_ylabel("fibre snippets")
    grade = record.get("grade")
    declared = record.get("declared_type") or "undeclared"
    ax.set_title(
        f"lot {record['lot_id']}  ({declared}, n = {record['n']}, grade: {grade or 'none'})",
        fontsize=10,
    )
    ax.legend(frameon=False, fontsize=8)
    ax.set_xlim(left=max(0.0, first - 2), right=max(first + len(counts) + 2, cut + 3))
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.15, top=0.9)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
