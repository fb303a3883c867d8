"""The ``fibergrade`` command line (typer). Thin: parses options, calls the library, prints.

This is the only module that prints or chooses exit codes. Heavy libraries (numpy, h5py,
numba, matplotlib) are imported inside commands so ``fibergrade --help`` starts fast.
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fibergrade import __version__
from fibergrade.errors import FibergradeError

app = typer.Typer(
    name="fibergrade",
    help="Grade cashmere and camel fibre (and lamb carcasses) from instrument data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)

StoreOpt = Annotated[
    Path,
    typer.Option(
        "--store",
        envvar="FIBERGRADE_STORE",
        help="Store directory (env FIBERGRADE_STORE).",
        show_default=True,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
DEFAULT_STORE = Path("fibergrade-data")


def _progress(label: str, enabled: bool = True):  # type: ignore[no-untyped-def]
    """A rich progress bar on stderr; returns (context manager, callback)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    prog = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not enabled,
    )
    task = prog.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        prog.update(task, completed=done, total=total)

    return prog, update


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _open_store(path: Path, create: bool = False):  # type: ignore[no-untyped-def]
    from fibergrade.store import Store

    return Store.open(path, create=create)


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Show the version and exit.")] = False,
) -> None:
    if version:
        out.print(f"fibergrade {__version__}")
        raise typer.Exit(0)


@app.command("import")
def import_(
    files: Annotated[list[Path], typer.Argument(help="Per-fibre or histogram CSV files.")],
    lots: Annotated[
        Path | None, typer.Option("--lots", help="Lot manifest CSV (declared type, origin...).")
    ] = None,
    store: StoreOpt = DEFAULT_STORE,
    json_: JsonOpt = False,
) -> None:
    """Import measurement files into the store (all or nothing; re-imports do nothing)."""
    from fibergrade.workflow import import_files, unmatched_manifest_lots

    st = _open_store(store, create=True)
    prog, update = _progress("reading files", enabled=not json_)
    with prog:
        outcomes = import_files(st, files, manifest=lots, progress=update)
    unmatched = unmatched_manifest_lots(st, lots) if lots else []
    if json_:
        _print_json(
            {
                "imports": [
                    {
                        "source": o.source_name,
                        "segment": o.segment,
                        "lots": list(o.lot_ids),
                        "rows": o.n_rows,
                        "already_imported": o.already_imported,
                    }
                    for o in outcomes
                ],
                "manifest_lots_without_measurements": unmatched,
            }
        )
        return
    for o in outcomes:
        if o.already_imported:
            out.print(
                f"{escape(o.source_name)}: already imported as segment {o.segment[:12]}; "
                "nothing to do"
            )
        else:
            out.print(
                f"{escape(o.source_name)}: {len(o.lot_ids)} lots, {o.n_rows} rows -> "
                f"segment {o.segment[:12]}"
            )
    if unmatched:
        out.print(f"note: {len(unmatched)} manifest lot(s) have no measurements yet")


@app.command("lots")
def lots_(store: StoreOpt = DEFAULT_STORE, json_: JsonOpt = False) -> None:
    """List the lots in the store."""
    st = _open_store(store)
    recs = st.lots()
    if json_:
        _print_json(
            [r.meta.to_dict() | {"segment": r.segment, "kind": r.kind, "n": r.n} for r in recs]
        )
        return
    t = Table(title=f"{len(recs)} lots in {escape(str(store))}")
    for col in ("lot", "type", "origin", "client", "kind", "n", "segment"):
        t.add_column(col)
    for r in recs:
        m = r.meta
        origin = "/".join(x for x in (m.origin, m.region) if x) or "—"
        t.add_row(
            escape(r.lot_id),
            m.declared_type or "—",
            escape(origin),
            escape(m.client or "—"),
            r.kind,
            str(r.n),
            r.segment[:12],
        )
    out.print(t)


@app.command("standards")
def standards_(json_: JsonOpt = False) -> None:
    """List the packaged grading standards and their sources."""
    from fibergrade.grading import list_standards

    stds = list_standards()
    if json_:
        _print_json(
            [
                {
                    "id": s.id,
                    "version": s.version,
                    "title": s.title,
                    "source": s.source,
                    "applies_to": list(s.applies_to),
                    "grades": [
                        {
                            "id": g.id,
                            "criteria": [
                                {"name": c.name, "figure": c.figure, "op": c.op, "limit": c.limit}
                                for c in g.criteria
                            ],
                        }
                        for g in s.grades
                    ],
                    "digest": s.digest,
                }
                for s in stds
            ]
        )
        return
    for s in stds:
        out.print(f"[bold]{s.id}[/] v{s.version}: {escape(s.title)}")
        out.print(f"  source: {escape(s.source)}")
        for g in s.grades:
            crit = "; ".join(c.describe() for c in g.criteria)
            out.print(f"  {g.id}: {escape(crit)}")


SHORT = {
    "mfd_um": "MFD",
    "sd_um": "SD",
    "cv_pct": "CV",
    "coarse_mass_pct": ">cut mass%",
    "coarse_count_pct": ">cut count%",
    "cf_pct": "CF",
    "sf_um": "SF",
}


def _why_failed(rec: dict[str, Any]) -> str:
    """The failed criteria of the grade a lot is explained against, in a few words."""
    if rec.get("note"):
        return str(rec["note"])
    target = _first_grade_id(rec)
    parts = [
        f"{SHORT.get(c['figure'], c['figure'])} {_fmt(c['value'], 2)} "
        f"(limit {c['op']}{c['limit']:g})"
        for c in rec["criteria"]
        if c["grade"] == target and not c["passed"]
    ]
    return (f"not {target}: " if target else "") + "; ".join(parts)


def _grade_table(records: list[dict[str, Any]], title: str) -> Table:
    t = Table(title=title)
    t.add_column("lot", no_wrap=True)
    t.add_column("declared", no_wrap=True)
    for col in ("n", "MFD", "CV%", ">30 mass%"):
        t.add_column(col, justify="right", no_wrap=True)
    t.add_column("grade", no_wrap=True)
    for r in records:
        t.add_row(
            escape(r["lot_id"]),
            r.get("declared_type") or "—",
            str(r["n"]),
            _fmt(r["mfd_um"]),
            _fmt(r["cv_pct"]),
            _fmt(r["coarse_mass_pct"], 2),
            r["grade"] or "[red]none[/]",
        )
    return t


def _print_reasons(records: list[dict[str, Any]]) -> None:
    """One line per lot that misses the grade it was declared as (or every grade)."""
    for r in records:
        if r["grade"] is None or r["grade"] != _first_grade_id(r):
            out.print(f"  {escape(r['lot_id'])}: {escape(_why_failed(r))}")


def _first_grade_id(rec: dict[str, Any]) -> str | None:
    """The grade a failing lot is explained against: its declared type's grade if the
    standard has one, otherwise the standard's first (best) grade."""
    grades = [c["grade"] for c in rec["criteria"]]
    if rec.get("declared_type") in grades:
        return rec["declared_type"]
    return grades[0] if grades else None


@app.command("grade")
def grade_(
    lots: Annotated[list[str] | None, typer.Argument(help="Lot ids (default: every lot).")] = None,
    standard: Annotated[
        str | None,
        typer.Option("--standard", help="Standard id or .toml path (default: by declared type)."),
    ] = None,
    store: StoreOpt = DEFAULT_STORE,
    json_: JsonOpt = False,
) -> None:
    """Grade lots and record the result; every criterion's value, limit and verdict."""
    from fibergrade.workflow import grade_lots

    st = _open_store(store)
    prog, update = _progress("grading segments", enabled=not json_)
    with prog:
        run = grade_lots(st, lots, standard, progress=update)
    if json_:
        _print_json(run.records)
        return
    out.print(_grade_table(run.records, f"{len(run.records)} lots graded"))
    _print_reasons(run.records)
    graded = Counter(r["grade"] for r in run.records)
    out.print(
        "grades: " + ", ".join(f"{k or 'none'} {v}" for k, v in sorted(graded.items(), key=str))
    )
    if run.result_id:
        out.print(f"result recorded as {run.result_id[:16]} ({len(run.records)} lots)")


@app.command("show")
def show_(
    lot: Annotated[str, typer.Argument(help="Lot id.")],
    plot: Annotated[Path | None, typer.Option("--plot", help="Write the histogram as PNG.")] = None,
    store: StoreOpt = DEFAULT_STORE,
    json_: JsonOpt = False,
) -> None:
    """Figures, grade and histogram of one lot."""
    from fibergrade.plots import histogram_png
    from fibergrade.workflow import grade_lots, latest_grades

    st = _open_store(store)
    rec = grade_lots(st, [lot], record=False).records[0]
    stored = latest_grades(st).get(lot)
    rec["recorded_result"] = stored["result_id"] if stored else None
    if plot is not None:
        histogram_png(rec, plot)
    if json_:
        _print_json(rec)
        return
    out.print(
        f"[bold]lot {escape(lot)}[/]  declared {rec.get('declared_type') or '—'}, "
        f"origin {escape(rec.get('origin') or '—')}, basis {rec['basis']}, status {rec['status']}"
    )
    from fibergrade.distribution import FIGURES

    t = Table(show_header=False)
    for key in ("n", *FIGURES):
        binned = " (binned)" if key in rec["binned"] else ""
        t.add_row(key + binned, _fmt(rec[key], 2))
    out.print(t)
    std = rec["standard"]
    out.print(
        f"standard: {std['id'] + ' v' + std['version'] if std else '—'}   "
        f"grade: [bold]{rec['grade'] or 'none'}[/]"
    )
    for c in rec["criteria"]:
        mark = "[green]pass[/]" if c["passed"] else ("[red]FAIL[/]" if c["evaluable"] else "n/a")
        out.print(
            f"  {c['grade']:>12}  {escape(c['name'])}: {_fmt(c['value'], 2)} "
            f"{c['op']} {c['limit']:g}  {mark}"
        )
    h = rec["histogram"]
    if h["counts"]:
        peak = max(h["counts"])
        for k, cnt in enumerate(h["counts"]):
            lo = h["first_lower_um"] + k
            bar = "█" * round(40 * cnt / peak)
            out.print(f"  {lo:5.0f}-{lo + 1:<4.0f} {cnt:6d} {bar}")
    if plot is not None:
        out.print(f"histogram written to {escape(str(plot))}")


@app.command("demo")
def demo_(
    out_dir: Annotated[Path, typer.Option("--out", help="Where the demo writes its files.")] = Path(
        "demo-out"
    ),
    n_lots: Annotated[int, typer.Option("--lots", min=10, help="Lots in the day.")] = 300,
    seed: Annotated[int, typer.Option("--seed", help="Random seed of the day.")] = 2026,
    store: Annotated[
        Path | None, typer.Option("--store", help="Store (default: OUT/fibergrade-data).")
    ] = None,
) -> None:
    """A lab's day: generate lots, import, grade, summarise, plot."""
    from fibergrade.demo import run_demo

    st_path = store or out_dir / "fibergrade-data"
    prog, update = _progress("demo")
    with prog:
        report = run_demo(out_dir, st_path, n_lots=n_lots, seed=seed, progress=update)
    for line in report.steps:
        out.print(line)
    out.print(_grade_table(report.failed, f"{len(report.failed)} lots that meet no grade"))
    _print_reasons(report.failed)
    t = Table(title="grades by declared type")
    t.add_column("declared type")
    t.add_column("grade")
    t.add_column("lots", justify="right")
    for (typ, grade), cnt in sorted(report.grade_counts.items(), key=str):
        t.add_row(typ or "—", grade or "[red]none[/]", str(cnt))
    out.print(t)
    out.print(f"histogram PNGs: {escape(str(report.plot_dir))} ({report.n_plots} files)")
    out.print(
        f"store: {escape(str(st_path))}   try: fibergrade show {report.example_lot} "
        f"--store {escape(str(st_path))}"
    )


# === instruments: simulate, acquire (issue 3) ===============================================
# (insert instrument commands above this line)

# === calibration: calibrate, qc, calibrations (issue 4) =====================================
# (insert calibration commands above this line)

# === screening: screen, model (issue 5) ========================================================
# (insert screening commands above this line)

# === meat: meat import/grade, trace (issue 7) =================================================
# (insert meat commands above this line)


def main() -> None:
    """Console entry point: typed errors become a message and a non-zero exit code.

    typer handles usage errors itself (exit code 2); library errors propagate to here.
    """
    try:
        app()
    except FibergradeError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise SystemExit(exc.exit_code) from None


if __name__ == "__main__":
    main()
