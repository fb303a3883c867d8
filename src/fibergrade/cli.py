"""The ``fibergrade`` command line (typer). Thin: parses options, calls the library, prints.

This is the only module that prints or chooses exit codes. Heavy libraries (numpy, h5py,
numba, matplotlib) are imported inside commands so ``fibergrade --help`` starts fast.
"""

from __future__ import annotations

import contextlib
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
from rich.text import Text

from fibergrade import __version__
from fibergrade.errors import FibergradeError

app = typer.Typer(
    name="fibergrade",
    help="Grade cashmere and camel fibre (and lamb carcasses) from instrument data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)

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

    def update(done: int, total: int, stage: str | None = None) -> None:
        if stage is not None:
            prog.update(task, description=stage)
        prog.update(task, completed=done, total=total)

    return prog, update


WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        help="Run the per-segment work on a local Dask cluster of N worker processes.",
    ),
]
SchedulerOpt = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        envvar="FIBERGRADE_SCHEDULER",
        help="Run the per-segment work on an existing Dask cluster, e.g. tcp://HOST:8786 "
        "(env FIBERGRADE_SCHEDULER); workers must see the store at the same path.",
    ),
]


@contextlib.contextmanager
def _executor(  # type: ignore[no-untyped-def]
    workers: int | None, scheduler: str | None, quiet: bool, warm: bool = True
):
    """The executor for --workers / --scheduler (this process when neither is given);
    ``warm``: see :func:`fibergrade.cluster.executor`."""
    from fibergrade.cluster import executor

    with contextlib.ExitStack() as stack:
        if quiet or (workers is None and scheduler is None):
            yield stack.enter_context(executor(workers, scheduler, warm))
            return
        what = f"a local Dask cluster of {workers} worker(s)" if workers else scheduler
        with err.status(f"connecting to {what} ..."):
            ex = stack.enter_context(executor(workers, scheduler, warm))
        err.print(f"working on {ex.where}")
        yield ex


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _open_store(path: Path, create: bool = False):  # type: ignore[no-untyped-def]
    from fibergrade.store import Store

    return Store.open(path, create=create)


def _noun(n: int, one: str, many: str | None = None) -> str:
    """The noun for ``n`` of it, singular for one: "lot", "lots" (for numbers printed in
    their own format, such as "1,200 readings")."""
    return one if n == 1 else (many or one + "s")


def _count(n: int, one: str, many: str | None = None) -> str:
    """``n`` and the noun, singular for one: "1 lot", "2 lots"."""
    return f"{n} {_noun(n, one, many)}"


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
    instrument: Annotated[
        str | None,
        typer.Option(
            "--instrument",
            help="Read FILES as this instrument's exports: an export profile name from "
            "instruments/ (ofda-export, laserscan-histogram) or a .toml path.",
        ),
    ] = None,
    store: StoreOpt = DEFAULT_STORE,
    json_: JsonOpt = False,
) -> None:
    """Import measurement files into the store (a bad file stores nothing; re-imports skip)."""
    from fibergrade.adapters.interchange import read_lot_manifest
    from fibergrade.workflow import (
        check_grade_inputs,
        manifest_not_applied,
        read_import_files,
        unmatched_manifest_lots,
    )

    profile = _load_profile(instrument) if instrument is not None else None
    check_grade_inputs([*files, *([lots] if lots else [])])  # before a store is created
    st = _open_store(store, create=True)
    prog, update = _progress("reading files", enabled=not json_)
    with prog:
        pending = read_import_files(files, manifest=lots, progress=update, instrument=profile)
        outcomes = st.import_segments(pending)
    metas = read_lot_manifest(lots) if lots else {}  # read and checked by read_import_files
    unmatched = unmatched_manifest_lots(st, metas)
    again = [lot for o in outcomes if o.already_imported for lot in o.lot_ids]
    # the manifest's rows as this import gave them (with an export's preamble instrument)
    applied = {lot: m for item in pending for lot, m in item.meta.items() if lot in metas}
    not_applied = manifest_not_applied(st, applied, again)
    if not_applied:  # on stderr, with --json too: the user expected the manifest to apply
        err.print(
            f"[yellow]note:[/] {len(not_applied)} lot(s) of files imported before keep the "
            f"metadata recorded then (first: {escape(not_applied[0])}); the manifest's differs "
            "and was not applied, since stored lots are never rewritten"
        )
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
                "manifest_not_applied": not_applied,
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
                f"{escape(o.source_name)}: {_count(len(o.lot_ids), 'lot')}, "
                f"{_count(o.n_rows, 'row')} -> segment {o.segment[:12]}"
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
    from fibergrade.cli_tables import Column, table

    columns = [Column("lot", whole=True), Column("type", whole=True)]
    columns += [Column(c) for c in ("origin", "client", "kind", "n", "segment")]
    rows = [
        (
            r.lot_id,
            r.meta.declared_type or "—",
            "/".join(x for x in (r.meta.origin, r.meta.region) if x) or "—",
            r.meta.client or "—",
            r.kind,
            str(r.n),
            r.segment[:12],
        )
        for r in recs
    ]
    out.print(table(f"{_count(len(recs), 'lot')} in {store}", columns, rows))


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
    if not parts and target and rec["grade"]:  # finer than declared: meets both
        return f"meets {target} as declared, and {rec['grade']}, which is tried before it"
    return (f"not {target}: " if target else "") + "; ".join(parts)


def _grade_table(records: list[dict[str, Any]], title: str) -> Table | Text:
    from fibergrade.cli_tables import Column, table

    columns = [Column("lot", whole=True), Column("declared", no_wrap=True)]
    columns += [Column(c, "right", no_wrap=True) for c in ("n", "MFD", "CV%", ">30 mass%")]
    columns.append(Column("grade", no_wrap=True))
    rows = [
        (
            r["lot_id"],
            r.get("declared_type") or "—",
            str(r["n"]),
            _fmt(r["mfd_um"]),
            _fmt(r["cv_pct"]),
            _fmt(r["coarse_mass_pct"], 2),
            _grade_cell(r),
        )
        for r in records
    ]
    return table(title, columns, rows)


def _grade_cell(rec: dict[str, Any]) -> Text:
    """A grade (red ``none`` for no grade) and its calibration mark: `` UNCAL`` (graded
    uncalibrated) or `` <cal``/`` >cal`` (MFD below/above the calibrated range); no mark
    for a lot graded within its calibration."""
    cell = Text(rec["grade"]) if rec["grade"] else Text().append("none", style="red")
    if rec.get("uncalibrated"):
        return cell.append(" ").append("UNCAL", style="red")
    flag = rec.get("calibration_range_flag")
    if flag in ("below", "above"):
        cell.append(" ").append(f"{'<' if flag == 'below' else '>'}cal", style="yellow")
    return cell


def _calibration_cell(rec: dict[str, Any]) -> str:
    """The calibration a grade used (id), or UNCALIBRATED, and any range flag."""
    if rec.get("uncalibrated"):
        return "[red]UNCALIBRATED[/]"
    flag = rec.get("calibration_range_flag")
    rng = rec.get("calibration_range_um") or [0, 0]
    where = f" [yellow]MFD {flag} the calibrated range {rng[0]:g}-{rng[1]:g} um[/]"
    return str(rec.get("calibration")) + (where if flag else "")


def _print_calibration_legend(records: list[dict[str, Any]]) -> None:
    """Which calibrations a table's grades used, and what UNCAL, <cal and >cal mean."""
    used = sorted({r["calibration"][:12] for r in records if r.get("calibration")})
    n_uncal = sum(1 for r in records if r.get("uncalibrated"))
    n_out = sum(1 for r in records if r.get("calibration_range_flag"))
    if used:
        out.print("calibrations applied: " + ", ".join(used))
    if n_out:
        out.print(f"<cal/>cal: {n_out} lot(s) with MFD outside the calibrated range")
    if n_uncal:
        out.print(f"[red]UNCAL[/]: {n_uncal} lot(s) graded on uncalibrated (raw) diameters")


def _print_reasons(records: list[dict[str, Any]]) -> None:
    """One line per lot that misses the grade it was declared as (or every grade), or
    that is graded better than declared (it meets both)."""
    lines = [
        f"  {escape(r['lot_id'])}: {escape(_why_failed(r))}"
        for r in records
        if r["grade"] is None or r["grade"] != _first_grade_id(r)
    ]
    if lines:  # one print: rich takes ~0.3 ms a call, and a run can have thousands
        out.print("\n".join(lines))


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
    uncalibrated: Annotated[
        bool,
        typer.Option(
            "--uncalibrated",
            help="Grade lots whose instrument has no valid calibration on raw diameters "
            "(recorded on the result as uncalibrated).",
        ),
    ] = False,
    store: StoreOpt = DEFAULT_STORE,
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Grade lots and record the result; every criterion's value, limit and verdict."""
    from fibergrade.workflow import grade_lots

    st = _open_store(store)
    with _executor(workers, scheduler, quiet=json_) as ex:
        prog, update = _progress("grading segments", enabled=not json_)
        with prog:
            run = grade_lots(
                st, lots, standard, progress=update, uncalibrated=uncalibrated, executor=ex
            )
    unlogged = {s.digest for s in st.unlogged_segments()}
    suspect = [r["lot_id"] for r in run.records if r.get("segment") in unlogged]
    if suspect:  # on stderr, with --json too: such lots are never certified
        err.print(
            f"[yellow]note:[/] {_count(len(suspect), 'lot')} ({escape(', '.join(suspect[:3]))}"
            f"{' ...' if len(suspect) > 3 else ''}) {'comes' if len(suspect) == 1 else 'come'} "
            "from segments whose import the audit log does not record: no certificate is "
            "issued on them; import their files again to log them, or see `fibergrade audit "
            "verify`"
        )
    if json_:
        _print_json(run.records)
        return
    if not run.records:
        out.print(f"no lots in the store {escape(str(st.root))}: nothing graded (import first)")
        return
    out.print(_grade_table(run.records, f"{_count(len(run.records), 'lot')} graded"))
    _print_calibration_legend(run.records)
    _print_reasons(run.records)
    graded = Counter(r["grade"] for r in run.records)
    out.print(
        "grades: " + ", ".join(f"{k or 'none'} {v}" for k, v in sorted(graded.items(), key=str))
    )
    if run.result_id:
        out.print(f"result recorded as {run.result_id[:16]} ({_count(len(run.records), 'lot')})")


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

    if plot is not None and plot.suffix.lower() != ".png":
        raise typer.BadParameter(f"{plot}: --plot writes a PNG; give a file name ending in .png")
    st = _open_store(store)
    rec = grade_lots(st, [lot], record=False, uncalibrated=True).records[0]
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
    out.print(
        f"calibration: {_calibration_cell(rec)}"
        + (f"  ({escape(rec['calibration_note'])})" if rec.get("calibration_note") else "")
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
    n_failed = len(report.failed)
    meet = "meets" if n_failed == 1 else "meet"
    out.print(_grade_table(report.failed, f"{_count(n_failed, 'lot')} that {meet} no grade"))
    _print_calibration_legend(report.failed)  # the legend of that table, not of every lot
    _print_reasons(report.failed)
    t = Table(title="grades by declared type")
    t.add_column("declared type")
    t.add_column("grade")
    t.add_column("lots", justify="right")
    for (typ, grade), cnt in sorted(report.grade_counts.items(), key=str):
        t.add_row(typ or "—", grade or "[red]none[/]", str(cnt))
    out.print(t)
    out.print(f"histogram PNGs: {escape(str(report.plot_dir))} ({_count(report.n_plots, 'file')})")
    out.print(
        f"store: {escape(str(st_path))}   try: fibergrade show {report.example_lot} "
        f"--store {escape(str(st_path))}"
    )


# === instruments: simulate, acquire (issue 3) ===============================================
def _load_profile(name_or_path: str):  # type: ignore[no-untyped-def]
    """An instrument profile by name (searched as ``profiles.instrument_dirs`` says) or path."""
    from fibergrade.adapters.profiles import load_profile

    return load_profile(name_or_path)


def _raise_on_sigterm() -> None:
    """Let SIGTERM end a long-running command the way Ctrl-C does (cleanly)."""
    import signal

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _only_for(kind: str, options: dict[str, Any]) -> None:
    """Refuse the options given (truthy) that only make sense for the other kind of
    instrument."""
    wrong = [flag for flag, value in options.items() if value]
    if wrong:
        raise typer.BadParameter(f"{', '.join(wrong)}: only for {kind}")


def _say(text: str) -> None:
    """A plain line on stdout, flushed at once (scripts read the simulator's port from it)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


@app.command("simulate")
def simulate_(
    kind: Annotated[str, typer.Argument(help="What to simulate: analyser or scale.")],
    protocol: Annotated[
        str | None,
        typer.Option(
            "--protocol",
            help="Scale: mt-sics, sbi, and or cas (required). Analyser: fibergrade-line.",
        ),
    ] = None,
    faults: Annotated[
        str | None,
        typer.Option(
            "--faults",
            help="Faults to inject, comma-separated: noise=P, drop=P, truncate=P, "
            "bad-checksum=P, unplug-after=N, overload, underload, drift, jitter, slow=S, seed=N.",
        ),
    ] = None,
    tcp: Annotated[
        int | None,
        typer.Option("--tcp", min=0, help="Serve on 127.0.0.1:PORT instead of a pty (0: any)."),
    ] = None,
    samples: Annotated[
        int | None,
        typer.Option(
            "--samples", min=1, help="Analyser: stream N samples, then idle (default: endless)."
        ),
    ] = None,
    fibres: Annotated[
        int | None,
        typer.Option("--fibres", min=1, help="Analyser: fibre snippets per sample (400)."),
    ] = None,
    baud: Annotated[
        int | None,
        typer.Option(
            "--baud",
            min=0,
            help="Analyser: pace the stream as this serial line would (default: the profile's "
            "baud rate; 0: as fast as the client reads).",
        ),
    ] = None,
    load: Annotated[
        float | None,
        typer.Option(
            "--load", help="Scale: gross load on the pan in the scale's unit (default 20 % of Max)."
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            help="Profile the simulator follows (scale: unit, Max, e; analyser: baud rate). "
            "Default: the protocol's profile in instruments/.",
        ),
    ] = None,
) -> None:
    """Serve a simulated analyser or scale on a pty (or TCP port) until Ctrl-C.

    Prints the device path to open (``port: /dev/pts/N``) and what it serves.
    """
    from fibergrade.adapters import analyser
    from fibergrade.adapters.simulators import (
        DEFAULT_PROFILES,
        SCALE_SIMULATORS,
        load_problem,
        parse_faults,
        serve_forever,
    )

    if kind not in ("analyser", "scale"):
        raise typer.BadParameter("must be analyser or scale", param_hint="KIND")
    if kind == "scale":
        _only_for("an analyser", {"--samples": samples, "--fibres": fibres, "--baud": baud})
        problem = load_problem(load) if load is not None else None  # the simulator's own rule
        if problem is not None:
            raise typer.BadParameter(problem, param_hint="--load")
    else:
        _only_for("a scale", {"--load": load is not None})
    f = parse_faults(faults)
    shown_faults = ", ".join(
        f"{k}={v}" if v is not True else k
        for k, v in vars(f).items()
        if v not in (0, 0.0, None, False) and k != "seed"
    )
    if kind == "scale":
        if protocol is None:
            raise typer.BadParameter("a scale needs --protocol mt-sics|sbi|and|cas")
        if protocol not in SCALE_SIMULATORS:
            raise typer.BadParameter(
                f"unknown scale protocol {protocol!r}; known: " + ", ".join(SCALE_SIMULATORS),
                param_hint="--protocol",
            )
        prof = _load_profile(profile or DEFAULT_PROFILES[protocol])
        sc = prof.scale
        if sc is None:
            raise typer.BadParameter(f"{prof.path} is not a scale profile", param_hint="--profile")
        shown_load = load if load is not None else round(0.2 * sc.max / sc.e) * sc.e
        what = (
            f"simulated {protocol} scale (profile {prof.name}: Max {sc.max:g} {sc.unit}, "
            f"e {sc.e:g} {sc.unit}), load {shown_load:g} {sc.unit}"
        )
        options: dict[str, Any] = {"profile": prof, "load": load}
    else:
        prof = _load_profile(profile or DEFAULT_PROFILES[analyser.PROTOCOL])
        rate = baud if baud is not None else (prof.serial.baudrate if prof.serial else 0)
        paced = f"paced at {rate} baud" if rate else "unpaced"
        fibres = fibres or 400
        what = (
            f"simulated analyser ({analyser.PROTOCOL}), "
            f"{_count(samples, 'sample') if samples is not None else 'endless samples'} of "
            f"{_count(fibres, 'fibre')}, "
            f"{paced}"
        )
        options = {"n_samples": samples, "fibres_per_sample": fibres, "baudrate": rate or None}

    def ready(url: str) -> None:
        _say(what + f"; faults: {shown_faults or 'none'}")
        _say(f"port: {url}")
        _say(f"open it with: fibergrade acquire --instrument {prof.name} --port {url}")
        _say("Ctrl-C stops the simulator.")

    _raise_on_sigterm()
    try:
        sim = serve_forever(kind, protocol, on_ready=ready, faults=f, tcp_port=tcp, **options)
    except KeyboardInterrupt:
        _say("simulator stopped")
        return
    if sim.unplugged:
        _say(
            f"adapter unplugged after {_count(sim.frames_sent, 'frame')} (fault unplug-after); "
            "stopped"
        )


def _acquire_bar(enabled: bool, total: int | None):  # type: ignore[no-untyped-def]
    """A rich progress display on stderr for acquisitions; returns (progress, task)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    prog = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not enabled,
    )
    task = prog.add_task("acquiring", total=total, stats="waiting for the instrument")
    return prog, task


def _acquire_exit(summary: Any, kept: str) -> None:
    """Say why an acquisition ended when it was not the plan, and exit: 130 after Ctrl-C,
    3 for a store failure or a conflict with what the store holds (a replayed reading it
    holds for another subject or lot), 4 when anything was lost or refused, else 0."""
    if summary.ended == "interrupted":
        err.print(f"[bold red]interrupted:[/] {escape(kept)}")
        raise typer.Exit(130)
    if summary.ended in ("disconnected", "store-error", "stopped-on-error"):
        err.print(f"[bold red]{summary.ended}:[/] {escape(summary.detail)}")
    if summary.ended == "store-error":
        raise typer.Exit(3)
    planned = getattr(summary, "planned", None)
    if planned is not None and len(summary.committed) < planned:
        err.print(
            f"[bold red]incomplete:[/] {len(summary.committed)} of the {planned} sample(s) "
            f"asked for (ended: {summary.ended})"
        )
    conflicts = len(summary.conflicts)
    if conflicts:
        scale = hasattr(summary, "stored")
        what = "weighing" if scale else "sample"
        held = (
            "already in the store for another subject or scale than this run names"
            if scale
            else "already in the store as another lot than this run names, or named by a "
            "lot id the store holds from another source"
        )
        err.print(
            f"[bold red]conflict with the store:[/] {_count(conflicts, what)} "
            f"{_noun(conflicts, 'is', 'are')} {held}; nothing was stored for "
            f"{_noun(conflicts, 'it', 'them')} (see above)"
        )
        raise typer.Exit(3)
    if not summary.complete:
        raise typer.Exit(4)


def _acquire_analyser(
    prof: Any,
    reader: Any,
    *,
    store: Path,
    lot: str | None,
    samples: int | None,
    lots_manifest: Path | None,
    instrument_id: str | None,
    idle_timeout: float | None,
    stop_on_error: bool,
    json_: bool,
) -> None:
    from fibergrade.acquisition import acquire_samples

    metas = {}
    if lots_manifest is not None:
        from fibergrade.adapters.interchange import read_lot_manifest

        metas = read_lot_manifest(lots_manifest)
    st = _open_store(store, create=True)
    total = 1 if lot is not None else samples
    prog, task = _acquire_bar(not json_, total)

    def show(p: Any) -> None:
        mfd = f"{p.running_mfd_um:.2f} um" if p.running_mfd_um is not None else "—"
        now = f"sample {p.sample_id} ({p.sample_readings})" if p.sample_id else "between samples"
        prog.update(
            task,
            completed=p.samples_committed,
            description=f"{prof.name}: {now}",
            stats=f"{p.readings:,} {_noun(p.readings, 'reading')}, {p.readings_per_s:,.0f}/s, "
            f"running MFD {mfd}, "
            f"{p.samples_committed} committed, {p.samples_failed} failed",
        )

    def committed(c: Any) -> None:
        if json_:
            return
        state = "already in the store" if c.already_imported else f"segment {c.segment[:12]}"
        out.print(
            f"sample {escape(c.sample_id)} -> lot {escape(c.lot_id)}: {_count(c.n, 'fibre')}, "
            f"MFD {c.mfd_um:.2f} um, {state}"
        )

    def failed(e: Any) -> None:
        if not json_:
            err.print(f"[red]not stored:[/] {escape(e.message)}")

    with prog:
        summary = acquire_samples(
            st,
            reader,
            profile=prof.name,
            instrument_id=instrument_id,
            lot=lot,
            lot_meta=metas,
            max_samples=samples,
            idle_timeout_s=idle_timeout,
            stop_on_error=stop_on_error,
            progress=show if not json_ else None,
            on_sample=committed,
            on_error=failed,
        )
    if json_:
        _print_json(summary.to_dict())
    else:
        if summary.replay:  # the session's clock is the capture's: say which time is which
            timing = (
                f"replayed in {summary.run_s:.2f} s (the captured session took "
                f"{summary.elapsed_s:.1f} s)"
            )
        else:
            timing = f"in {summary.elapsed_s:.1f} s ({summary.readings_per_s:,.0f}/s)"
        c = len(summary.conflicts)
        clash = f"{c} in conflict with the store, " if c else ""
        out.print(
            f"{_count(len(summary.committed), 'sample')} committed ({summary.new_samples} new), "
            f"{clash}{len(summary.errors) - c} refused, {summary.readings:,} "
            f"{_noun(summary.readings, 'reading')} {timing}; "
            f"ended: {summary.ended}"
        )
    # new lots left without a measurement time (a manifest's, when given, is kept)
    new = sum(not c.already_imported and c.measured_at is None for c in summary.committed)
    if summary.replay and summary.capture_started_at is None and new:
        # a capture from before the header held its start: the replay's time is not a
        # measurement time, so its lots were stored without one (acquisition docstring)
        err.print(
            f"[yellow]note:[/] {escape(summary.source)} records no start time, so the "
            f"{_count(new, 'new lot')} stored from it {_noun(new, 'carries', 'carry')} no "
            "measurement time (measured_at)"
        )
    p = summary.partial
    if p is not None:
        err.print(
            f"[yellow]partial sample {escape(p.sample_id)}:[/] {_count(p.received, 'fibre')} "
            f"received (stream lines {p.first_line}-{p.last_line}), not stored: a sample is "
            "stored whole or not at all; measure it again"
        )
    _acquire_exit(summary, f"{_count(len(summary.committed), 'completed sample')} kept in {store}")


def _acquire_scale(
    prof: Any,
    scale: Any,
    *,
    store: Path,
    samples: int | None,
    subjects: list[str] | None,
    immediate: bool,
    interval: float,
    stop_on_error: bool,
    json_: bool,
) -> None:
    from fibergrade.acquisition import acquire_weights
    from fibergrade.adapters.scales import decimals_for

    st = _open_store(store, create=True)
    decimals = decimals_for(prof.scale.e)
    total = len(subjects) if subjects else samples
    prog, task = _acquire_bar(not json_, total)
    done = [0]

    def before(k: int, subject: str | None) -> None:
        who = f" {subject}" if subject else ""
        prog.update(task, completed=k, stats=f"weighing {k + 1}{who}")

    def stored(s: Any) -> None:
        done[0] += 1
        if json_:
            return
        r = s.record
        who = f"  subject {escape(r['subject'])}" if r["subject"] else ""
        state = " (already stored)" if s.already_stored else ""
        out.print(
            f"{r['value']:.{decimals}f} {r['unit']}  {r['mode']}  scale {escape(r['scale_id'])}"
            f"{who}  -> result {s.result_id[:12]}{state}"
        )

    def failed(e: Any) -> None:
        if not json_:
            who = f" ({escape(e.subject)})" if e.subject else ""
            err.print(f"[red]weighing {e.index}{who} not stored:[/] {escape(e.message)}")

    with prog:
        summary = acquire_weights(
            st,
            scale,
            profile=prof.name,
            count=None if subjects else samples,
            subjects=subjects,
            immediate=immediate,
            interval_s=interval,
            stop_on_error=stop_on_error,
            before_weighing=before,
            on_weight=stored,
            on_error=failed,
        )
    n = summary.new_weighings
    if json_:
        _print_json(summary.to_dict())
    else:
        # a replay says how many of its weighings the store held from the same session,
        # and how many the store holds for another subject or scale (conflicts)
        seen = f"{summary.already_stored} already stored from this capture, "
        c = len(summary.conflicts)
        clash = f"{c} in conflict with the store, " if c else ""
        out.print(
            f"{_count(n, 'weight')} stored ({summary.mode}), "
            f"{seen if summary.replay else ''}{clash}{len(summary.errors) - c} refused; "
            f"ended: {summary.ended}"
        )
    if summary.replay and summary.capture_started_at is None and n:
        # a capture from before the header held its start: the replay's time is not when
        # the scale gave the weights, so they were stored without one (acquisition docstring)
        err.print(
            f"[yellow]note:[/] {escape(summary.source)} records no start time, so the "
            f"{_count(n, 'weight')} stored from it {_noun(n, 'carries', 'carry')} no "
            "weighing time (timestamp)"
        )
    if summary.not_weighed:
        err.print(f"not weighed: {escape(', '.join(summary.not_weighed))}")
    _acquire_exit(summary, f"{_count(len(summary.stored), 'stored weight')} kept in {store}")


@app.command("acquire")
def acquire_(
    instrument: Annotated[
        str,
        typer.Option(
            "--instrument",
            help="Instrument profile: a name from instruments/ (analyser-line, mt-sics-scale, "
            "sartorius-sbi, and-scale, cas-ci) or a .toml path.",
        ),
    ],
    port: Annotated[
        str | None,
        typer.Option(
            "--port",
            help="Port URL: a device path (/dev/ttyUSB0, a simulator's pty), "
            "socket://HOST:PORT, spy://PORT?file=LOG, rfc2217://HOST:PORT.",
        ),
    ] = None,
    replay: Annotated[
        Path | None,
        typer.Option("--replay", help="Replay a capture (see --record) instead of a port."),
    ] = None,
    lot: Annotated[
        str | None,
        typer.Option("--lot", help="Analyser: acquire one sample and store it as this lot id."),
    ] = None,
    samples: Annotated[
        int | None,
        typer.Option(
            "--samples",
            min=1,
            help="Analyser: stop after N samples; scale: weigh N times (default: until Ctrl-C).",
        ),
    ] = None,
    subject: Annotated[
        list[str] | None,
        typer.Option("--subject", help="Scale: id of what is weighed; repeat for several."),
    ] = None,
    subjects_file: Annotated[
        Path | None,
        typer.Option("--subjects", help="Scale: file of subject ids, one per line, in order."),
    ] = None,
    immediate: Annotated[
        bool,
        typer.Option("--immediate", help="Scale: store immediate weights, not stable ones."),
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.0, help="Scale: seconds between weighings.")
    ] = 0.0,
    scale_id: Annotated[
        str | None,
        typer.Option(
            "--scale-id", help="Scale: id stored with each weight (default: profile id, else port)."
        ),
    ] = None,
    lots_manifest: Annotated[
        Path | None,
        typer.Option("--lots", help="Analyser: lot manifest CSV (the lots' metadata)."),
    ] = None,
    instrument_id: Annotated[
        str | None,
        typer.Option(
            "--instrument-id", help="Analyser: instrument id of the lots (default: profile)."
        ),
    ] = None,
    idle_timeout: Annotated[
        float | None,
        typer.Option(
            "--idle-timeout",
            min=0.0,
            help="Analyser: end when no sample starts within this many seconds "
            "(default: wait until Ctrl-C; 2 s with --replay).",
        ),
    ] = None,
    stop_on_error: Annotated[
        bool, typer.Option("--stop-on-error", help="End at the first bad sample or weighing.")
    ] = False,
    record: Annotated[
        Path | None,
        typer.Option("--record", help="Write a capture of the session (replay with --replay)."),
    ] = None,
    store: StoreOpt = DEFAULT_STORE,
    json_: JsonOpt = False,
) -> None:
    """Acquire samples from a fibre analyser, or weights from a scale, into the store.

    Each completed sample is committed as its own segment; a bad sample is reported and
    skipped, and one the store already holds as another lot is a conflict with the store
    (nothing stored for it, exit code 3). Ctrl-C or an unplugged adapter keeps every
    completed sample and reports the partial one, which is never stored (exit code 130
    after Ctrl-C, 4 when anything was lost). Each weight is stored as a "weighing" result
    and printed with its unit, mode (stable or immediate) and scale id; a replay does not
    store again the weights the store holds from the same recorded session, stored by its
    live --record run or an earlier replay (they are reported as already stored), and one
    stored for another subject or scale than the replay names is a conflict with the store
    (nothing stored for it, exit code 3).
    """
    from fibergrade.acquisition import read_subjects

    if (port is None) == (replay is None):
        raise typer.BadParameter("give either --port URL or --replay CAPTURE")
    if record is not None and replay is not None:
        raise typer.BadParameter("--record records a live port, not a replay")
    prof = _load_profile(instrument)
    meta = {"profile": prof.name, "protocol": prof.protocol}

    if prof.kind == "export":
        raise typer.BadParameter(
            f"{prof.name} is an export-file profile: use fibergrade import --instrument "
            f"{prof.name} FILE...",
            param_hint="--instrument",
        )
    if prof.kind == "analyser":
        from fibergrade.adapters.analyser import AnalyserReader
        from fibergrade.adapters.transport import Transport

        _only_for(
            "scale profiles",
            {
                "--subject": subject,
                "--subjects": subjects_file,
                "--immediate": immediate,
                "--interval": interval,
                "--scale-id": scale_id is not None,
            },
        )
        if lot is not None and samples not in (None, 1):
            raise typer.BadParameter("--lot names one sample; drop --samples or use 1")
        if replay is not None:
            assert prof.analyser is not None
            reader = AnalyserReader(
                Transport.replay(replay, max_line=prof.analyser.max_line_bytes),
                line_timeout_s=prof.analyser.line_timeout_s,
            )
            idle_timeout = 2.0 if idle_timeout is None else idle_timeout
        else:
            assert port is not None
            reader = AnalyserReader.open(prof, port, record_to=record, meta=meta)
        _raise_on_sigterm()
        with reader:
            _acquire_analyser(
                prof,
                reader,
                store=store,
                lot=lot,
                samples=samples,
                lots_manifest=lots_manifest,
                instrument_id=instrument_id,
                idle_timeout=idle_timeout,
                stop_on_error=stop_on_error,
                json_=json_,
            )
        return

    from fibergrade.adapters.scales import make_scale, open_scale
    from fibergrade.adapters.transport import Transport

    _only_for(
        "analyser profiles",
        {
            "--lot": lot,
            "--lots": lots_manifest,
            "--instrument-id": instrument_id,
            "--idle-timeout": idle_timeout is not None,
        },
    )
    subjects = list(subject or [])
    if subjects_file is not None:
        subjects += read_subjects(subjects_file)
    if subjects and samples is not None and samples != len(subjects):
        raise typer.BadParameter(
            f"--samples {samples} but {len(subjects)} subjects; each subject is weighed once"
        )
    if replay is not None:
        scale = make_scale(prof, Transport.replay(replay), scale_id=scale_id)
    else:
        assert port is not None
        scale = open_scale(prof, port, scale_id=scale_id, record_to=record, meta=meta)
    _raise_on_sigterm()
    with scale:
        _acquire_scale(
            prof,
            scale,
            store=store,
            samples=samples,
            subjects=subjects or None,
            immediate=immediate,
            interval=interval,
            stop_on_error=stop_on_error,
            json_=json_,
        )


# (insert instrument commands above this line)

# === calibration: calibrate, qc, calibrations (issue 4) =====================================


@app.command("calibrate")
def calibrate_(
    instrument: Annotated[
        str, typer.Option("--instrument", help="Instrument id, as in the lot manifest.")
    ],
    measurements: Annotated[
        Path | None,
        typer.Argument(help="Tops CSV: top,measured_mfd_um[,measured_cv_pct] ('#' comments)."),
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option("--reference", help="Reference set name (e.g. ih-23) or .toml path."),
    ] = None,
    against: Annotated[
        str | None,
        typer.Option("--against", help="Bias correction: the instrument this one is compared to."),
    ] = None,
    bias: Annotated[
        float | None,
        typer.Option("--bias", help="Bias correction: um this instrument reads above --against."),
    ] = None,
    bias_source: Annotated[
        str,
        typer.Option("--bias-source", help="Where the bias figure comes from (recorded)."),
    ] = "not given",
    operator: Annotated[str | None, typer.Option("--operator", help="Who calibrated.")] = None,
    valid_days: Annotated[
        int, typer.Option("--valid-days", min=1, help="Days the calibration stays valid.")
    ] = 90,
    store: StoreOpt = DEFAULT_STORE,
    json_: JsonOpt = False,
) -> None:
    """Fit measured -> assigned MFD on reference tops (or record a bias correction)."""
    from fibergrade.calibration import (
        calibrate,
        calibrate_bias,
        load_reference_set,
        read_top_measurements,
    )
    from fibergrade.store import sha256_file

    if against is not None:
        if bias is None or measurements is not None or reference is not None:
            raise typer.BadParameter(
                "a bias correction takes --against and --bias, without MEASUREMENTS or --reference"
            )
        st = _open_store(store, create=True)
        cid, rec = calibrate_bias(
            st,
            instrument,
            against,
            bias,
            source=bias_source,
            operator=operator,
            valid_days=valid_days,
        )
    else:
        if measurements is None or reference is None or bias is not None:
            raise typer.BadParameter(
                "calibrating against reference tops takes --reference SET and a MEASUREMENTS "
                "file (or --against and --bias for a bias correction)"
            )
        ref = load_reference_set(reference)
        tops = read_top_measurements(measurements)
        st = _open_store(store, create=True)
        cid, rec = calibrate(
            st,
            instrument,
            ref,
            tops,
            operator=operator,
            source_name=measurements.name,
            source_digest=sha256_file(measurements),
            valid_days=valid_days,
        )
    if json_:
        _print_json({"id": cid} | rec)
        return
    line = rec["line"]
    out.print(
        f"[bold]{escape(instrument)}[/] calibrated ({rec['method']}, reference "
        f"{escape(rec['reference']['id'])}): MFD' = {line['intercept_um']:+.4f} um + "
        f"{line['slope']:.5f} x MFD"
        + (f", r^2 {rec['r2']:.6f}" if rec.get("r2") is not None else "")
    )
    if rec["method"] == "bias":
        out.print(
            f"  bias {rec['bias_um']:+.3f} um against {escape(rec['against']['instrument_id'])} "
            f"calibration {rec['against']['calibration_id'][:12]} "
            f"(source: {escape(rec['bias_source'])})"
        )
    else:
        t = Table()
        cols = ("top", "measured", "assigned", "fitted", "residual um", "CV corr", "CV assigned")
        for col in cols:
            t.add_column(col, justify="right")
        for top in rec["tops"]:
            t.add_row(
                escape(top["top"]),
                _fmt(top["measured_mfd_um"], 2),
                _fmt(top["assigned_mfd_um"], 2),
                _fmt(top["fitted_mfd_um"], 3),
                f"{top['residual_um']:+.3f}",
                _fmt(top["corrected_cv_pct"], 2),
                _fmt(top["assigned_cv_pct"], 2),
            )
        out.print(t)
        out.print(
            f"  max |residual| {rec['max_abs_residual_um']:.3f} um (tolerance "
            f"{rec['residual_tolerance_um']} um, {len(rec['tops'])} tops, "
            f"minimum {rec['min_tops']})"
        )
    lo, hi = rec["range_um"]
    out.print(f"  valid for MFD {lo:g}-{hi:g} um; lots outside are flagged")
    out.print(f"  expires {rec['expires_at']}   recorded as calibration {cid}")


@app.command("qc")
def qc_(
    instrument: Annotated[str, typer.Option("--instrument", help="Instrument id.")],
    measured: Annotated[float, typer.Argument(help="MFD (um) the instrument read on the sample.")],
    assigned: Annotated[
        float | None, typer.Option("--assigned", help="Assigned MFD (um) of the check sample.")
    ] = None,
    reference: Annotated[
        str | None, typer.Option("--reference", help="Take the assigned MFD from this set...")
    ] = None,
    top: Annotated[str | None, typer.Option("--top", help="...and this top of it.")] = None,
    tolerance: Annotated[
        float, typer.Option("--tolerance", help="Largest deviation (um) that passes.")
    ] = 0.5,
    sample: Annotated[str | None, typer.Option("--sample", help="Name of the sample.")] = None,
    operator: Annotated[str | None, typer.Option("--operator", help="Who ran the check.")] = None,
    store: StoreOpt = DEFAULT_STORE,
    json_: JsonOpt = False,
) -> None:
    """Daily QC check: within tolerance keeps the instrument valid, outside suspends it.

    Exits 1 (after recording the check) when the check fails.
    """
    from fibergrade.calibration import load_reference_set, record_qc

    if (assigned is None) == (reference is None or top is None):
        raise typer.BadParameter("give either --assigned X or --reference SET --top T")
    if assigned is None:
        ref = load_reference_set(str(reference))
        found = ref.known_top(str(top))
        assigned, sample = found.mfd_um, sample or f"{ref.id} top {found.top}"
    st = _open_store(store)
    qid, rec = record_qc(
        st,
        instrument,
        measured,
        assigned,
        sample=sample,
        tolerance_um=tolerance,
        operator=operator,
    )
    if json_:
        _print_json({"id": qid} | rec)
    else:
        verdict = "[green]pass[/]" if rec["passed"] else "[red]FAIL: instrument suspended[/]"
        out.print(
            f"QC {escape(instrument)}: measured {measured:g} -> corrected "
            f"{rec['corrected_mfd_um']:.3f} um, assigned {assigned:g} um, deviation "
            f"{rec['deviation_um']:+.3f} um (tolerance {tolerance:g}): {verdict}"
        )
        out.print(f"  recorded as qc {qid}")
    if not rec["passed"]:
        raise typer.Exit(1)


@app.command("calibrations")
def calibrations_(
    instrument: Annotated[
        str | None, typer.Option("--instrument", help="Only this instrument.")
    ] = None,
    store: StoreOpt = DEFAULT_STORE,
    json_: JsonOpt = False,
) -> None:
    """List calibration records and their state (valid, expired, suspended, superseded...)."""
    from fibergrade.calibration import calibration_listing

    rows = [
        r
        for r in calibration_listing(_open_store(store))
        if instrument is None or r["instrument_id"] == instrument
    ]
    if json_:
        _print_json(rows)
        return
    out.print(f"{len(rows)} calibration records")
    colour = {"valid": "green", "superseded": "dim"}
    for r in rows:
        c = colour.get(r["state"], "red")
        against = (r.get("against") or {}).get("instrument_id")
        basis = f"bias vs {against}" if against else r["reference"]
        out.print(
            f"{r['id'][:12]}  [bold]{escape(r['instrument_id'])}[/]  [{c}]{r['state']}[/]  "
            f"({escape(basis)}, {r['created_at'][:10]} .. {r['expires_at'][:10]}, "
            f"QC {_count(r['qc_checks'], 'check')}, {r['qc_failed']} failed)"
        )
        out.print(
            f"    MFD' = {r['intercept_um']:+.3f} + {r['slope']:.4f} x MFD, valid for "
            f"{r['range_um'][0]:g}-{r['range_um'][1]:g} um"
        )
        if r["state"] not in colour:
            out.print(f"    {escape(r['reason'])}")


# (insert calibration commands above this line)

# === screening: screen, model (issue 5) ========================================================
model_app = typer.Typer(
    help="Train and evaluate the screening model (models/: skops file + model card).",
    no_args_is_help=True,
)
app.add_typer(model_app, name="model")
ModelDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--model-dir",
        envvar="FIBERGRADE_MODEL_DIR",
        help="Directory of screening.skops and its card (default: models/ of the checkout).",
    ),
]
VERDICT_STYLE = {
    "clean": "green",
    "suspect-contamination": "red",
    "suspect-mislabel": "red",
    "not-screened": "yellow",
}


def _pct_or_dash(v: Any) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def _print_evaluation(ev: dict[str, Any]) -> None:
    t = Table(title=f"targets on {ev['lots']} held-out lots")
    for col in ("target", "lots", "measured", "met"):
        t.add_column(col)
    for row in ev["targets"]:
        met = "[green]yes[/]" if row["met"] else "[red]NO[/]"
        t.add_row(escape(row["target"]), str(row["lots"]), _pct_or_dash(row["measured"]), met)
    out.print(t)
    from fibergrade.screening import VERDICTS

    cm = Table(title="confusion matrix (rows truth, columns verdict)")
    cm.add_column("truth")
    for v in VERDICTS:
        cm.add_column(v, justify="right")
    for v, row in zip(VERDICTS, ev["confusion_matrix"]["counts"], strict=True):
        cm.add_row(v, *(str(x) for x in row))
    out.print(cm)
    out.print(f"false-alarm rate on clean lots: {_pct_or_dash(ev['false_alarm_rate'])}")
    cells = ev["detection_limits"]
    pcts = sorted({c["blend_pct"] for c in cells})
    dt = Table(title="detection rate by contaminant and blend % (by count)")
    dt.add_column("declared")
    dt.add_column("contaminant")
    for p in pcts:
        dt.add_column(f"{p}%", justify="right")
    keys = list(dict.fromkeys((c["declared"], c["contaminant"]) for c in cells))
    for dec, cont in keys:
        row = [c for c in cells if c["declared"] == dec and c["contaminant"] == cont]
        dt.add_row(dec, cont, *(_pct_or_dash(c["detected"]) for c in row))
    out.print(dt)
    for m in ev["mislabel_detection"]:
        out.print(
            f"{m['true']} declared {m['declared']}: flagged {_pct_or_dash(m['detected'])} "
            f"of {_count(m['lots'], 'lot')}"
        )
    for r in ev["limits"]:
        pct = f" at {r['blend_pct']}%" if r["blend_pct"] is not None else ""
        out.print(
            f"limit: {r['case']}{pct}: flagged {_pct_or_dash(r['detected'])} of "
            f"{_count(r['lots'], 'lot')}"
        )


@model_app.command("train")
def model_train_(
    seed: Annotated[
        int, typer.Option("--seed", help="Random seed (training is deterministic).")
    ] = 20261120,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Output directory (default: models/).")
    ] = None,
    lots: Annotated[int, typer.Option("--lots", min=100, help="Training lots.")] = 12000,
    validation: Annotated[
        int, typer.Option("--validation-lots", min=50, help="Clean lots for the threshold.")
    ] = 3000,
    eval_scale: Annotated[
        float,
        typer.Option("--eval-scale", min=0.01, help="Size of the held-out set (1 = full)."),
    ] = 1.0,
    json_: JsonOpt = False,
) -> None:
    """Generate lots, train the screening model and write it with its model and data cards."""
    from fibergrade.screening import default_model_dir
    from fibergrade.screening_training import train

    target = out_dir or default_model_dir()
    prog, update = _progress("training (generate, fit, evaluate)", enabled=not json_)
    with prog:
        report = train(
            seed,
            target,
            n_train=lots,
            n_validation=validation,
            eval_scale=eval_scale,
            progress=update,
        )
    card = report.card
    if json_:
        _print_json(
            {
                "model_id": card["model_id"],
                "model_digest": card["model_digest"],
                "out": str(target),
                "threshold": card["threshold"],
                "evaluation": card["evaluation"],
            }
        )
        return
    out.print(
        f"model {card['model_id']} written to {escape(str(target))} "
        f"(trained on {_count(card['training']['lots'], 'lot')}; flag when P(clean) < "
        f"{card['threshold']['p_clean_below']:.4f})"
    )
    _print_evaluation(card["evaluation"])
    out.print(f"cards: {escape(str(target))}/model-card.md, data-card.md, model-card.json")


@model_app.command("evaluate")
def model_evaluate_(model_dir: ModelDirOpt = None, json_: JsonOpt = False) -> None:
    """Regenerate the held-out lots and recompute the model card's metrics."""
    from fibergrade.screening_training import evaluate_model

    prog, update = _progress("evaluating on held-out lots", enabled=not json_)
    with prog:
        result = evaluate_model(model_dir, progress=update)
    if json_:
        _print_json(result)
        return
    _print_evaluation(result["evaluation"])
    same = "[green]match[/]" if result["matches_card"] else "[red]differ from[/]"
    out.print(f"recomputed metrics {same} the model card (model {result['model_digest'][:12]})")


@app.command("screen")
def screen_(
    lots: Annotated[list[str] | None, typer.Argument(help="Lot ids (default: every lot).")] = None,
    store: StoreOpt = DEFAULT_STORE,
    model_dir: ModelDirOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="List clean lots too.")] = False,
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Screen lots for contamination and mislabelling; records the verdicts."""
    from fibergrade.screening import screen_stored_lots

    st = _open_store(store)
    with _executor(workers, scheduler, quiet=json_) as ex:
        prog, update = _progress("screening segments", enabled=not json_)
        with prog:
            run = screen_stored_lots(st, lots, model_dir, progress=update, executor=ex)
    if json_:
        _print_json(run.records)
        return
    _print_screening(run.records, show_clean=all_ or bool(lots))
    counts = Counter(r["verdict"] for r in run.records)
    out.print(
        f"{_count(len(run.records), 'lot')} screened by {run.model_id}: "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    )
    if run.result_id:
        out.print(f"result recorded as {run.result_id[:16]}")


def _print_screening(records: list[dict[str, Any]], show_clean: bool = False) -> None:
    """One block per lot (flagged lots only unless ``show_clean``) with its reasons."""
    lines = []
    for r in records:
        if r["verdict"] == "clean" and not show_clean:
            continue
        style = VERDICT_STYLE.get(r["verdict"], "white")
        prob = "" if r["probability"] is None else f" (p={r['probability']:.2f})"
        lines.append(
            f"[bold]{escape(r['lot_id'])}[/] declared {escape(r.get('declared_type') or '—')}: "
            f"[{style}]{r['verdict']}[/]{prob}"
        )
        lines += [f"    {escape(reason)}" for reason in r["reasons"]]
    if lines:  # one print, as _print_reasons
        out.print("\n".join(lines))
    if any("confirm" in r for r in records):  # a flagged lot (not one left unscreened)
        from fibergrade.screening import CONFIRMATORY_TESTS

        out.print(f"flagged lots: {escape(CONFIRMATORY_TESTS)}")


# (insert screening commands above this line)

# === meat: meat import/grade, trace (issue 7) =================================================
meat_app = typer.Typer(
    help="Lamb carcasses: import carcass and halal slaughter records, grade.",
    no_args_is_help=True,
)
app.add_typer(meat_app, name="meat")


@meat_app.command("import")
def meat_import_(
    file: Annotated[Path, typer.Argument(help="Carcass CSV (or, with --halal, slaughter CSV).")],
    halal: Annotated[
        bool, typer.Option("--halal", help="FILE holds halal slaughter records.")
    ] = False,
    scale: Annotated[
        str | None,
        typer.Option("--scale", help="Scale profile of rows without a scale_profile (its Max)."),
    ] = None,
    store: StoreOpt = DEFAULT_STORE,
    json_: JsonOpt = False,
) -> None:
    """Validate a whole file and store it (all or nothing; re-imports do nothing)."""
    from fibergrade.meat.traceability import import_carcasses, import_halal
    from fibergrade.workflow import check_grade_inputs

    if halal and scale is not None:
        raise typer.BadParameter("--scale applies to carcass files, not --halal")
    check_grade_inputs([file])  # before a store is created for it
    if scale is not None:
        from fibergrade.meat.traceability import scale_limit

        scale_limit(scale)  # likewise: a --scale that is no scale profile
    st = _open_store(store, create=True)
    res = import_halal(st, file) if halal else import_carcasses(st, file, scale=scale)
    what = "slaughter records" if halal else "carcasses"
    if json_:
        _print_json(
            {
                "source": res.source_name,
                "kind": "halal" if halal else "carcasses",
                "record": res.record,
                "n": res.n,
                "already_imported": res.already_imported,
            }
        )
        return
    if res.already_imported:
        out.print(
            f"{escape(res.source_name)}: already imported as record {res.record[:12]}; "
            "nothing to do"
        )
    else:
        out.print(f"{escape(res.source_name)}: {res.n} {what} -> record {res.record[:12]}")


#: the halal column of ``meat grade`` by status (fibergrade.meat.traceability.halal_link)
_HALAL_CELL = {
    "validated": "yes",
    "failed": "[red]failed[/]",
    "no slaughter record": "[red]none[/]",
}


@meat_app.command("grade")
def meat_grade_(
    carcasses: Annotated[
        list[str] | None, typer.Argument(help="Carcass ids (default: every carcass).")
    ] = None,
    store: StoreOpt = DEFAULT_STORE,
    json_: JsonOpt = False,
) -> None:
    """Grade carcasses (category, fat score, MSA, EU, colour, pH) and record the result."""
    from fibergrade.meat.traceability import grade_store

    st = _open_store(store, create=False)
    records, result_id = grade_store(st, carcasses)
    if json_:
        _print_json(records)
        return
    from rich import box

    t = Table(
        title=f"{_count(len(records), 'carcass', 'carcasses')} graded",
        box=box.SIMPLE_HEAD,
        padding=(0, 0),
    )
    for col in ("carcass", "category", "kg", "fat", "MSA", "EU", "band", "colour", "pH", "halal"):
        t.add_column(col, no_wrap=True)
    for r in records:
        t.add_row(
            escape(r["carcass_id"]),
            r["category"] or "[red]none[/]",
            _fmt(r["hscw_kg"]),
            _fmt(r["fat_score"]),
            "[green]yes[/]" if r["msa_eligible"] else "[red]no[/]",
            r["eu_category"] or "—",
            r["light_lamb_band"] or "—",
            "ok" if r["colour_acceptable"] else "[red]no[/]",
            r["ph_class"] or "—",
            _HALAL_CELL.get(r["halal"]["status"], "[red]?[/]"),
        )
    out.print(t)
    for r in records:
        notes = [f"not MSA: {x}" for x in r["msa_reasons"]] + r["flags"]
        notes += [f"not halal: {x}" for x in r["halal"].get("problems", [])]
        for note in notes:
            out.print(f"  {escape(r['carcass_id'])}: {escape(note)}")
    if result_id:
        out.print(
            f"result recorded as {result_id[:16]} ({_count(len(records), 'carcass', 'carcasses')})"
        )


@app.command("trace")
def trace_(
    ident: Annotated[str, typer.Argument(help="Animal, carcass, lot or certificate id.")],
    public_key: Annotated[
        Path | None,
        typer.Option(
            "--public-key",
            help="The lab's lab.pub: check that the store's carcass certificates and the "
            "revocations deciding which one stands are signed by it.",
        ),
    ] = None,
    store: StoreOpt = DEFAULT_STORE,
    json_: JsonOpt = False,
) -> None:
    """The chain animal -> slaughter -> carcass -> lot -> certificate, with digests."""
    from fibergrade.keys import load_public_key
    from fibergrade.meat.traceability import trace

    st = _open_store(store, create=False)
    result = trace(st, ident, load_public_key(public_key) if public_key else None)
    if json_:
        _print_json(result)
        return
    out.print(f"[bold]{escape(ident)}[/]: {', '.join(result['matched'])}")
    for chain in result["chains"]:
        out.print("")
        for link in chain:
            name = link["link"]
            label = link.get("id") or link.get("status") or "—"
            digest = (link.get("digest") or "—")[:16]
            extra = ""
            if name == "slaughter" and link.get("digest"):
                extra = (
                    f"  {link['slaughtered_at']}, stun {link['stun']['method']}, "
                    f"{link['certification_body']} certificate {link['halal_certificate']} "
                    f"(expires {link['halal_certificate_expiry']})"
                )
                if link["halal_problems"]:
                    extra += f"; not halal: {'; '.join(link['halal_problems'])}"
            elif name == "carcass" and link.get("digest"):
                w = link["weighing_record"]
                extra = f"  {link['hscw_kg']:g} kg, weighing record {w[:12] if w else '—'}"
            elif name == "lot" and link.get("digest"):
                extra = f"  {link['carcasses']} carcass(es)"
            elif name == "certificate" and link.get("digest"):
                extra = f"  issued {link['issued_at']}"
                if link.get("supersedes"):
                    extra += f", supersedes {link['supersedes']} ({link.get('reissue_reason')})"
                rev = link.get("revocation")
                if link.get("revoked"):
                    when = f" on {rev['revoked_at']}: {rev['reason']}" if rev else ""
                    extra += f"; REVOKED{when}; no certificate of this carcass stands"
            out.print(f"  {name:<11} {escape(str(label)):<28} {digest}{escape(extra)}")
    for note in result.get("notes", []):
        out.print(f"[yellow]note:[/] {escape(note)}")
    if not result["signatures_checked"] and any(c[-1].get("digest") for c in result["chains"]):
        out.print(
            "\ncertificates and revocations read as stored; pass --public-key to check "
            "that the lab signed them"
        )


# (insert meat commands above this line)


# === certificates, keys, audit (issue 6) =====================================================

keys_app = typer.Typer(help="The lab's Ed25519 signing keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
audit_app = typer.Typer(help="The store's hash-chained audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
KeyOpt = Annotated[
    Path, typer.Option("--key", help="The lab's private key (from fibergrade keys init).")
]
PassOpt = Annotated[
    str | None,
    typer.Option(
        "--passphrase",
        # read from the environment by keys.load_private_key, which tells a passphrase
        # given here from one in the environment meant for other keys
        help="Passphrase of the private key (env FIBERGRADE_KEY_PASSPHRASE).",
    ),
]
#: options shared by `certify` and `meat certify`
CertOutOpt = Annotated[Path, typer.Option("--out", help="Where certificates are written.")]
LabOpt = Annotated[
    str | None,
    typer.Option(
        "--lab",
        help="Laboratory name printed on certificates (default: for a reissue, the lab named "
        "on the certificate it supersedes; else 'fibergrade laboratory').",
        show_default=False,
    ),
]
ReissueOpt = Annotated[bool, typer.Option("--reissue", help="Supersede an existing certificate.")]
ReissueReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why (with --reissue).")]


@keys_app.command("init")
def keys_init(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where to write lab.key and lab.pub.")
    ] = Path("keys"),
    passphrase: PassOpt = None,
    store: StoreOpt = DEFAULT_STORE,
    json_: JsonOpt = False,
) -> None:
    """Create the lab's key pair (lab.key 0600, never inside a store; lab.pub to share)."""
    from fibergrade.audit import AuditLog
    from fibergrade.keys import init_keys

    priv, pub, fp = init_keys(directory, passphrase)
    if store.exists():
        AuditLog(store).append("key", fp, {"public_key": pub.read_text()})
    if json_:
        _print_json(
            {
                "private_key": str(priv),
                "public_key": str(pub),
                "fingerprint": fp,
                "encrypted": bool(passphrase),
            }
        )
        return
    out.print(f"private key: {escape(str(priv))} (mode 0600{', encrypted' if passphrase else ''})")
    out.print(f"public key:  {escape(str(pub))}  (give this to auditors)")
    out.print(f"fingerprint: {fp}")


@app.command("override")
def override_(
    lot: Annotated[str, typer.Argument(help="Lot id flagged by screening.")],
    reason: Annotated[str, typer.Option("--reason", help="Why the lot may be certified.")],
    actor: Annotated[
        str | None, typer.Option("--actor", help="Who decides (default: login).")
    ] = None,
    store: StoreOpt = DEFAULT_STORE,
    json_: JsonOpt = False,
) -> None:
    """Record an override that lets a flagged lot be certified (logged)."""
    from fibergrade.audit import default_actor
    from fibergrade.certificates import record_override

    who = actor or default_actor()
    rid = record_override(_open_store(store), lot, reason, who)
    if json_:
        _print_json({"lot_id": lot, "record": rid, "reason": reason, "actor": who})
        return
    out.print(f"override for {escape(lot)} recorded as {rid[:16]}")


ExportOpt = Annotated[
    bool,
    typer.Option(
        "--export",
        help="Issue nothing: write the named subjects' issued certificates (the ones that "
        "stand) to --out again, e.g. after a run stopped before writing their files.",
    ),
]


def _export(
    st: Any,
    subjects: list[str] | None,
    kind: str,
    out_dir: Path,
    key: Path,
    passphrase: str | None,
    reissue: bool,
    json_: bool,
    *,
    pdf: bool = False,
) -> None:
    """``certify --export`` and ``meat certify --export``: write standing certificates'
    files again from the store's signed copies."""
    from fibergrade.certificates import export_certificates
    from fibergrade.keys import load_private_key

    if not subjects or reissue:
        raise typer.BadParameter(f"--export needs {kind} ids, and issues nothing (no --reissue)")
    # the key is checked as the lab's, and the stored copies with its public half
    lab_key = load_private_key(key, passphrase).public_key()
    written = export_certificates(st, subjects, out_dir, lab_key, pdf=pdf, kind=kind)
    if json_:
        _print_json(
            [
                {
                    "certificate_number": i.number,
                    "json": str(i.json_path),
                    "pdf": str(i.pdf_path) if i.pdf_path else None,
                }
                for i in written
            ]
        )
        return
    for i in written:
        out.print(f"{i.number}: {escape(str(i.json_path))} (written again)")


@app.command("certify")
def certify_(
    lots: Annotated[
        list[str] | None,
        typer.Argument(help="Lot ids (default: every clean graded lot not yet certified)."),
    ] = None,
    out_dir: CertOutOpt = Path("certificates"),
    key: KeyOpt = Path("keys/lab.key"),
    passphrase: PassOpt = None,
    lab: LabOpt = None,
    reissue: ReissueOpt = False,
    reason: ReissueReasonOpt = None,
    pdf: Annotated[bool, typer.Option("--pdf/--no-pdf", help="Also render PDFs.")] = True,
    export: ExportOpt = False,
    store: StoreOpt = DEFAULT_STORE,
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Issue signed certificates (JSON + PDF) for graded lots."""
    from fibergrade.certificates import certify_lots
    from fibergrade.keys import load_private_key

    if reissue and not reason:
        raise typer.BadParameter("--reissue needs --reason")
    st = _open_store(store)
    if export:
        _export(st, lots, "lot", out_dir, key, passphrase, reissue, json_, pdf=pdf)
        return
    private = load_private_key(key, passphrase)
    # certify's tasks hash segments and render PDFs: no model or kernel to warm up
    with _executor(workers, scheduler, quiet=json_, warm=False) as ex:
        prog, update = _progress("certifying", enabled=not json_)
        with prog:
            res = certify_lots(
                st,
                lots or None,  # None: every clean graded lot not yet certified
                private,
                out_dir,
                lab_name=lab,
                reissue_reason=reason if reissue else None,
                pdf=pdf,
                progress=update,
                executor=ex,
            )
    for lot, why in res.skipped:  # on stderr, with --json too
        err.print(f"[yellow]note:[/] lot {escape(lot)} left out: {escape(why)}")
    if json_:
        _print_json(
            [
                {
                    "certificate_number": i.number,
                    "json": str(i.json_path),
                    "pdf": str(i.pdf_path) if i.pdf_path else None,
                    "supersedes": i.supersedes,
                }
                for i in res.issued
            ]
        )
        return
    for i in res.issued:
        sup = f" (supersedes {i.supersedes})" if i.supersedes else ""
        out.print(f"{i.number}: {escape(str(i.json_path))}{sup}")
    out.print(_issued_line(len(res.issued), "certificate"))


@app.command("revoke")
def revoke_(
    cert: Annotated[
        str | None, typer.Argument(help="Certificate number, e.g. FG-LOT-01.", show_default=False)
    ] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Why it is revoked.")] = None,
    key: KeyOpt = Path("keys/lab.key"),
    passphrase: PassOpt = None,
    out_file: Annotated[
        Path | None,
        typer.Option("--out", help="Revocation list file (default STORE/revocations.json)."),
    ] = None,
    list_only: Annotated[
        bool,
        typer.Option(
            "--list-only",
            help="Revoke nothing: write the store's signed revocation list again (to --out).",
        ),
    ] = False,
    store: StoreOpt = DEFAULT_STORE,
    json_: JsonOpt = False,
) -> None:
    """Revoke a certificate; writes the whole signed revocation list."""
    from fibergrade.keys import load_private_key
    from fibergrade.revocation import revoke, write_revocation_list

    if list_only and (cert or reason):
        raise typer.BadParameter("--list-only revokes nothing: give no certificate or --reason")
    if not list_only and not (cert and reason):
        raise typer.BadParameter("give the certificate number and --reason (or --list-only)")
    st = _open_store(store)
    private = load_private_key(key, passphrase)
    notes: list[str] = []
    if list_only:
        env, target = write_revocation_list(st, private, out_file)
    else:
        env, target, notes = revoke(st, str(cert), str(reason), private, out_file)
    entries = len(env["revocations"]["entries"])
    superseded = len(env["revocations"]["supersessions"])
    if json_:
        _print_json(
            {
                "certificate_number": cert,
                "revocation_list": str(target),
                "entries": entries,
                "supersessions": superseded,
                "notes": notes,
            }
        )
        return
    done = f"{escape(cert)} revoked; " if cert else ""
    out.print(
        f"{done}signed revocation list ({entries} revoked, {superseded} superseded) written "
        f"to {escape(str(target))}"
    )
    for note in notes:
        out.print(f"[yellow]note:[/] {escape(note)}")


@app.command("verify")
def verify_(
    certs: Annotated[list[Path], typer.Argument(help="Certificate JSON file(s).")],
    public_key: Annotated[Path, typer.Option("--public-key", help="The lab's lab.pub.")],
    store: Annotated[
        Path | None,
        typer.Option(
            "--store",
            envvar="FIBERGRADE_STORE",
            help="Store to recompute every figure from (env FIBERGRADE_STORE; without "
            "either, only the signature and the revocation list are checked).",
        ),
    ] = None,
    revocations: Annotated[
        Path | None, typer.Option("--revocations", help="Signed revocation list.")
    ] = None,
    standard: Annotated[
        list[Path] | None,
        typer.Option(
            "--standard",
            help="A lab's own standard file a certificate was graded by (repeatable); "
            "its digest must match the certificate's.",
        ),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Verify certificates offline: signature, revocation, recomputation from raw data."""
    from fibergrade.certificates import CertificateFileError, VerificationFailed
    from fibergrade.keys import load_public_key
    from fibergrade.verification import VerifyReport, given_standards, verify_certificates

    st = _open_store(store) if store is not None else None
    key = load_public_key(public_key)
    cache: dict = given_standards(standard or [])
    reports: list[dict] = []
    failures: list[CertificateFileError | VerificationFailed] = []
    outcomes = verify_certificates(certs, key, store=st, revocations=revocations, cache=cache)
    for cert, outcome in zip(certs, outcomes, strict=True):  # a file that fails fails alone
        if isinstance(outcome, VerificationFailed | CertificateFileError):
            failures.append(outcome)
        report = getattr(outcome, "report", outcome)  # a failure keeps its checks and notes
        if isinstance(report, VerifyReport):
            reports.append({"file": str(cert)} | report.to_dict())
        else:  # not a certificate, or one whose signature failed: nothing else was checked
            reports.append(
                {
                    "file": str(cert),
                    "certificate_number": getattr(outcome, "number", None),
                    "ok": False,
                    "checks": [],  # the same keys as a passing report's
                    "problems": getattr(outcome, "problems", [str(outcome)]),
                    "notes": [],
                }
            )
    if json_:
        _print_json(reports[0] if len(certs) == 1 else reports)
    else:
        for r in reports:
            if r["ok"]:
                out.print(f"[bold green]certificate {escape(r['certificate_number'])} verifies[/]")
            elif r["checks"] or r["notes"]:  # the problems follow on stderr
                out.print(
                    f"[bold red]certificate {escape(str(r['certificate_number']))} FAILS "
                    "verification[/] (its problems are on stderr; the checks it passed:)"
                )
            else:
                continue
            for c in r["checks"]:
                out.print(f"  {c['check']}: {escape(c['result'])}")
            for note in r["notes"]:
                out.print(f"  [yellow]note:[/] {escape(note)}")
        if st is None and reports and not failures:
            out.print("  (no --store given: figures were not recomputed from the raw data)")
    if failures:
        # every file was checked; the run's code is the most serious of its files' (5: a
        # certificate fails verification; 4: the screening model; 2: a file that is not
        # a certificate, or a revocation list that cannot be read)
        if not json_:
            for exc in failures:
                err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(max(exc.exit_code for exc in failures))


@audit_app.command("verify")
def audit_verify(
    public_key: Annotated[
        Path | None,
        typer.Option(
            "--public-key",
            help="The lab's public key: check the checkpoints' signatures too (without it "
            "they are not checked, and the output says so).",
        ),
    ] = None,
    store: StoreOpt = DEFAULT_STORE,
    json_: JsonOpt = False,
) -> None:
    """Check the audit log (edits, deletions, insertions, reordering, truncation), the
    SHA-256 of every record it names and of every segment, and the manifest."""
    from fibergrade.audit import AuditError, AuditLog, VerifyReport
    from fibergrade.errors import StoreCorruptError, StoreError
    from fibergrade.keys import load_public_key

    key = load_public_key(public_key) if public_key else None
    problems: list[dict[str, Any]] = []

    def problem(exc: Exception | str, file: Path | str | None = None) -> None:
        line, file = getattr(exc, "line", None), file or getattr(exc, "path", None)
        item = {
            "file": None if file is None else str(file),
            "line": line,
            "entry": getattr(exc, "seq", None),
            "message": str(exc),
        }
        # the log's first bad line, found by the chain check and by the reader alike
        if not any(
            p["message"] == item["message"]
            or (line is not None and (p["file"], p["line"]) == (item["file"], line))
            for p in problems
        ):
            problems.append(item)

    try:
        st = _open_store(store)
    except StoreCorruptError as exc:  # a segment missing or altered outside the manifest
        st = None
        problem(exc)
    rep = None
    try:  # a logged record that is gone is named below with every other bad file
        rep = AuditLog(st.root if st else store).verify(key, results=False)
    except AuditError as exc:
        problem(exc)
    unlogged: list[str] = []
    if st is not None:
        prog, update = _progress("checking records and segments (SHA-256)", enabled=not json_)
        bad: list[tuple[Path, str]] = []
        try:
            with prog:
                bad = st.check_files(progress=update)
        except AuditError as exc:  # the log cannot say which records it names
            problem(exc)
        for path, message in bad:
            problem(message, path)
        altered = {path for path, _ in bad}
        try:  # lot metadata as the segments hold it, for the segments that are intact
            st.check_manifest([s.digest for s in st.segments() if s.path not in altered])
        except StoreError as exc:
            problem(exc)
        try:
            unlogged = [str(p) for p in st.unlogged_results()]
            unlogged += [f"{s.path} ({s.source_name})" for s in st.unlogged_segments()]
        except AuditError as exc:
            problem(exc)
    notes = []
    if key is None:  # the chain alone: whoever can write the store can rewrite it whole
        notes.append(
            "checkpoint signatures were not checked (no --public-key): the chain and the "
            "digests agree, but anyone who can write the store could have rewritten the log, "
            "its head and its checkpoints together; pass --public-key lab.pub to check the "
            "checkpoints against the lab's key"
        )
    if json_:
        doc = rep.to_dict() if rep is not None else VerifyReport.unread()
        _print_json(
            doc
            | {"ok": not problems, "problems": problems, "unlogged_files": unlogged}
            | {"notes": notes}
        )
        if problems:
            raise typer.Exit(3)
        return
    if problems:
        for p in problems:
            err.print(f"[bold red]error:[/] {escape(p['message'])}")
        raise typer.Exit(3)
    assert rep is not None
    out.print(
        f"[bold green]audit log {'intact' if rep.signatures_checked else 'chain intact'}[/]: "
        f"{_count(rep.entries, 'entry', 'entries')}, {_count(rep.checkpoints, 'checkpoint')}"
        f"{' signed by the lab key' if rep.signatures_checked else ' (signatures NOT checked)'}, "
        f"{_count(rep.unanchored, 'entry', 'entries')} after the last checkpoint; every logged "
        "record and segment matches its SHA-256"
    )
    for note in notes:
        out.print(f"[yellow]note:[/] {escape(note)}")
    if rep.unfinished_bytes:
        out.print(
            f"[yellow]note:[/] the log ends in an unfinished line ({rep.unfinished_bytes} "
            "bytes): an append in progress, or one cut short, which the next write cuts and "
            "logs"
        )
    if unlogged:
        # not part of the record: every command ignores them; a person should look
        out.print(
            f"[yellow]{len(unlogged)} file(s) the log does not record[/] (a run that stopped "
            "before logging them, or placed by hand; no command reads such results, and "
            "importing such a segment's file again logs it):"
        )
        for p in unlogged[:20]:
            out.print(f"  {escape(p)}")
        if len(unlogged) > 20:
            out.print(f"  ... and {len(unlogged) - 20} more (--json lists all)")


@audit_app.command("checkpoint")
def audit_checkpoint(
    key: KeyOpt = Path("keys/lab.key"),
    passphrase: PassOpt = None,
    store: StoreOpt = DEFAULT_STORE,
    json_: JsonOpt = False,
) -> None:
    """Sign the head of the audit log with the lab key."""
    from fibergrade.audit import AuditLog
    from fibergrade.keys import load_private_key

    e = AuditLog(_open_store(store).root).checkpoint(load_private_key(key, passphrase))
    if json_:
        _print_json(e)
        return
    out.print(f"checkpoint signed at entry {e['signed_seq']}")


@audit_app.command("log")
def audit_log(store: StoreOpt = DEFAULT_STORE, json_: JsonOpt = False) -> None:
    """Show the audit log."""
    from fibergrade.audit import AuditLog

    entries = AuditLog(_open_store(store).root).entries()
    if json_:
        _print_json(entries)
        return
    t = Table(title=f"audit log: {_count(len(entries), 'entry', 'entries')}")
    for col in ("seq", "time", "actor", "action", "subject"):
        t.add_column(col, no_wrap=col != "subject", overflow="fold")
    for e in entries:
        t.add_row(
            str(e["seq"]),
            e["time"][:19],
            escape(e["actor"]),
            e["action"],
            escape(str(e["subject"])),
        )
    out.print(t)


@meat_app.command("certify")
def meat_certify_(
    carcasses: Annotated[
        list[str] | None,
        typer.Argument(
            help="Carcass ids (default: every halal-validated carcass not yet certified)."
        ),
    ] = None,
    out_dir: CertOutOpt = Path("certificates"),
    key: KeyOpt = Path("keys/lab.key"),
    passphrase: PassOpt = None,
    lab: LabOpt = None,
    reissue: ReissueOpt = False,
    reason: ReissueReasonOpt = None,
    export: ExportOpt = False,
    store: StoreOpt = DEFAULT_STORE,
    json_: JsonOpt = False,
) -> None:
    """Issue signed carcass certificates (grading + halal record), verified like fibre ones."""
    from fibergrade.keys import load_private_key
    from fibergrade.meat.certificates import certify_carcasses

    if reissue and not reason:
        raise typer.BadParameter("--reissue needs --reason")
    st = _open_store(store, create=False)
    if export:
        _export(st, carcasses, "carcass", out_dir, key, passphrase, reissue, json_)
        return
    res = certify_carcasses(
        st,
        carcasses,
        load_private_key(key, passphrase),
        out_dir,
        lab_name=lab,
        reissue_reason=reason if reissue else None,
    )
    issued = res.issued
    for cid, why in res.skipped:  # on stderr, with --json too
        err.print(f"[yellow]note:[/] carcass {escape(cid)} left out: {escape(why)}")
    if json_:
        _print_json(
            [
                {
                    "certificate_number": i.number,
                    "json": str(i.json_path),
                    "supersedes": i.supersedes,
                }
                for i in issued
            ]
        )
        return
    for i in issued:
        sup = f" (supersedes {i.supersedes})" if i.supersedes else ""
        out.print(f"{i.number}: {escape(str(i.json_path))}{sup}")
    out.print(_issued_line(len(issued), "carcass certificate"))


def _issued_line(n: int, noun: str) -> str:
    """The closing line of certify: a checkpoint is signed only when something was issued."""
    if n == 0:
        return f"no {noun}s issued: none is eligible that is not issued yet"
    return f"{n} {noun}(s) issued; audit log checkpoint signed"


# (insert certificate commands above this line)


def main() -> None:
    """Console entry point: typed errors become a message and a non-zero exit code.

    typer handles usage errors itself (exit code 2); library errors propagate to here.
    """
    try:
        app()
    except FibergradeError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise SystemExit(exc.exit_code) from None
    except OSError as exc:  # a path the user named cannot be read, written or created
        where = f"{exc.filename}: " if exc.filename else ""
        err.print(f"[bold red]error:[/] {escape(where + (exc.strerror or str(exc)))}")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
