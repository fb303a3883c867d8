"""The library side of the CLI's jobs: import files into the store, grade stored lots.

Each function takes a :class:`~fibergrade.store.Store` and returns plain data; the CLI only
parses options, calls these and prints. Long jobs accept a ``progress(done, total)``
callback.

Grading works segment by segment (DESIGN.md, "Store": segments are the unit of work), so the
memory held at once is one segment's raw diameters plus small per-lot arrays.
"""

from __future__ import annotations

import datetime as _dt
import errno
import os
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fibergrade import __version__
from fibergrade.calibration import lot_calibrations
from fibergrade.cluster import Executor, InProcess
from fibergrade.distribution import DEFAULT_CUT_UM, N_REPORT, Engine, LotSummary
from fibergrade.errors import InputError, LotNotFoundError
from fibergrade.grading import Standard, load_standard, standard_for_type
from fibergrade.measurements import LotMeta
from fibergrade.segment_tasks import (
    GradePlan,
    grade_segment,
    in_lot_order,
    plan_tasks,
    summarise_segment,
)
from fibergrade.store import ImportOutcome, LotRecord, PendingSegment, Store, sha256_file

if TYPE_CHECKING:
    from fibergrade.adapters.profiles import Profile

Progress = Callable[[int, int], None]

#: the keys every grade record carries (the documented ``grade --json`` schema)
GRADE_KEYS = (
    "lot_id",
    "n",
    "mfd_um",
    "sd_um",
    "cv_pct",
    "cf_pct",
    "pf_pct",
    "coarse_count_pct",
    "coarse_mass_pct",
    "sf_um",
    "standard",
    "grade",
    "criteria",
)


def _now() -> str:
    """A result's ``created_at``: to the microsecond, since the newest result of a kind is
    the one that counts (two grade runs in one second were otherwise told apart by digest)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds")


# --- import ---------------------------------------------------------------------------------


def import_files(
    store: Store,
    paths: Sequence[str | Path],
    manifest: str | Path | None = None,
    progress: Progress | None = None,
    instrument: Profile | None = None,
) -> list[ImportOutcome]:
    """Parse every file first, then commit each as its own segment.

    Files are the project's interchange CSVs, or with ``instrument`` (an export profile,
    :mod:`fibergrade.adapters.profiles`) vendor exports read through that profile. A bad
    file (or a manifest problem) raises before anything is stored, so an import either
    stores every new file or none. (:func:`read_import_files`, then
    :meth:`Store.import_segments`.)
    """
    return store.import_segments(read_import_files(paths, manifest, progress, instrument))


def read_import_files(
    paths: Sequence[str | Path],
    manifest: str | Path | None = None,
    progress: Progress | None = None,
    instrument: Profile | None = None,
) -> list[PendingSegment]:
    """Parse every file and give each lot its metadata; stores nothing.

    A lot's metadata is the manifest's row for it. A vendor export whose preamble names its
    instrument (the profile's ``file.instrument_label``,
    :func:`fibergrade.adapters.exports.preamble_instrument`) gives that id to its lots that
    the manifest gives none; a manifest that names another instrument for one of them is an
    :class:`InputError` naming the file, its preamble line, the lot and both ids (which one
    is right is not guessed). The source digest is the file's bytes alone, so a file
    imported again is recognised whatever metadata it is given.
    """
    from fibergrade.adapters.exports import preamble_instrument, read_export
    from fibergrade.adapters.interchange import read_lot_manifest, read_measurements

    metas: dict[str, LotMeta] = {}
    if manifest is not None:
        metas = read_lot_manifest(manifest)
    pending: list[PendingSegment] = []
    for i, p in enumerate(paths):
        if instrument is None:
            table, named = read_measurements(p), None
        else:
            table, named = read_export(instrument, p), preamble_instrument(instrument, p)
        meta = {lot: metas.get(lot, LotMeta(lot)) for lot in table.lot_ids}
        if named is not None:
            for lot, m in meta.items():
                if m.instrument_id is None:
                    meta[lot] = replace(m, instrument_id=named.instrument_id)
                elif m.instrument_id != named.instrument_id:
                    raise InputError(
                        p,
                        named.line,
                        f"the preamble names instrument {named.instrument_id!r}, but the "
                        f"manifest {Path(str(manifest)).name} gives lot {lot!r} instrument "
                        f"{m.instrument_id!r}",
                        expected="the instrument that measured the lot: correct the manifest "
                        "or the file (fibergrade does not choose between them)",
                    )
        pending.append(
            PendingSegment(
                table=table,
                meta=meta,
                source_name=Path(p).name,
                source_digest=sha256_file(p),
            )
        )
        if progress:
            progress(i + 1, len(paths))
    return pending


def manifest_not_applied(
    store: Store, metas: Mapping[str, LotMeta], lot_ids: Sequence[str]
) -> list[str]:
    """Lots among ``lot_ids`` (of files imported before) whose stored metadata differs from
    the manifest's (``metas``, as read by
    :func:`fibergrade.adapters.interchange.read_lot_manifest`): a re-import changes
    nothing, so the manifest was not applied to them (stored lots are never rewritten)."""
    return [
        lot
        for lot in lot_ids
        if lot in metas and store.lot(lot).meta.to_dict() != metas[lot].to_dict()
    ]


def unmatched_manifest_lots(store: Store, metas: Mapping[str, LotMeta]) -> list[str]:
    """Lots the manifest (``metas``, as read) lists that have no measurements in the store."""
    known = {r.lot_id for r in store.lots()}
    return [lot for lot in metas if lot not in known]


# --- grading --------------------------------------------------------------------------------


@dataclass
class GradingRun:
    """What one ``grade`` call produced; ``records`` follow :data:`GRADE_KEYS` and more."""

    records: list[dict[str, Any]]
    result_id: str | None  # digest of the stored result record, None when not stored
    created_at: str


def _select_lots(store: Store, lot_ids: Sequence[str] | None) -> list[LotRecord]:
    all_lots = store.lots()
    if not lot_ids:
        return all_lots
    by_id = {r.lot_id: r for r in all_lots}
    missing = [x for x in lot_ids if x not in by_id]
    if missing:
        raise LotNotFoundError(missing)
    seen: set[str] = set()
    return [by_id[x] for x in lot_ids if not (x in seen or seen.add(x))]  # type: ignore[func-returns-value]


def summarise_lots(
    store: Store,
    lots: Sequence[LotRecord],
    cut_um: float = DEFAULT_CUT_UM,
    engine: Engine = "fast",
    progress: Progress | None = None,
    corrections: tuple[np.ndarray, np.ndarray] | None = None,
) -> LotSummary:
    """Figures of the given lots, segment by segment; order as given.

    ``corrections`` (per-lot calibration intercepts and slopes aligned with ``lots``, see
    :mod:`fibergrade.calibration`) are applied to the diameters on read; raw stays raw.

    With the fast engine and more than one segment, segments are summarised in as many
    threads as the kernel has (``NUMBA_NUM_THREADS``), each running the kernel on its own
    segment in that thread: one thread's file handling (HDF5 metadata, lot ids; it holds the
    GIL) then overlaps another's kernel (which releases it), where a parallel kernel per
    segment leaves the cores idle during the file handling. Figures are the same either way.
    """
    tasks, where = plan_tasks(store, list(lots), corrections)
    # the tasks' 1-um histograms are counted straight into their rows of the joined array
    bounds = np.cumsum([0] + [len(t.positions) for t in tasks]).tolist()
    histogram = np.empty((bounds[-1], N_REPORT), np.int64)
    threads = 1
    if engine == "fast" and len(tasks) > 1:
        import numba

        threads = min(numba.get_num_threads(), len(tasks))

    def one(k: int) -> LotSummary:
        rows = histogram[bounds[k] : bounds[k + 1]]
        return summarise_segment(tasks[k], cut_um, engine, rows, parallel=threads == 1)

    def in_task_order() -> Iterator[LotSummary]:
        if threads == 1:
            yield from map(one, range(len(tasks)))
            return
        with ThreadPoolExecutor(threads, thread_name_prefix="fibergrade-summarise") as pool:
            futures = [pool.submit(one, k) for k in range(len(tasks))]
            try:
                for fut in futures:  # the first error wins
                    yield fut.result()
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise

    parts: list[LotSummary] = []
    for k, part in enumerate(in_task_order()):
        parts.append(part)
        if progress:
            progress(k + 1, len(tasks))
    return _in_given_order(LotSummary.concat(parts, histogram), where)


def _in_given_order(joined: LotSummary, where: list[list[int]]) -> LotSummary:
    order = [i for idxs in where for i in idxs]
    if order == list(range(len(order))):
        return joined
    inverse = np.empty(len(order), np.int64)
    inverse[np.asarray(order, dtype=np.int64)] = np.arange(len(order))
    return joined.select(inverse)


def grade_lots(
    store: Store,
    lot_ids: Sequence[str] | None = None,
    standard: str | Path | None = None,
    *,
    engine: Engine = "fast",
    record: bool = True,
    progress: Progress | None = None,
    uncalibrated: bool = False,
    screen: bool = True,
    executor: Executor | None = None,
) -> GradingRun:
    """Grade stored lots; with ``standard`` None each lot by the scheme of its declared type.

    With ``screen`` each record carries ``screening`` (verdict, probability, reasons, model
    digest; :mod:`fibergrade.screening`); a missing or altered model raises ``ModelError``.

    Each lot's diameters are corrected on read by its instrument's valid calibration; a lot
    whose instrument has none is refused unless ``uncalibrated`` (rules and record fields:
    :mod:`fibergrade.calibration`).

    Lots whose declared type has no scheme get ``standard = None`` and ``grade = None`` with
    a ``note`` saying to pass a standard. With ``record`` the run is stored as a result
    record (``results/grade``) that names each lot's segment by SHA-256.

    The work runs one task per segment (:func:`fibergrade.segment_tasks.grade_segment`) on
    ``executor`` (default: this process; :mod:`fibergrade.cluster` for a Dask cluster).
    The tasks return whole records; this process alone puts them in order and stores the
    result.
    """
    lots = _select_lots(store, lot_ids)
    fixed: Standard | None = load_standard(standard) if standard is not None else None
    scheme_of: dict[str | None, Standard | None] = {}  # by declared type: few, lots many
    for r in lots:
        t = r.meta.declared_type
        if t not in scheme_of:
            scheme_of[t] = fixed if fixed is not None else standard_for_type(t)
    chosen = [scheme_of[r.meta.declared_type] for r in lots]
    distinct = list({(s.digest if s is not None else None): s for s in chosen}.values())
    slot = {(s.digest if s is not None else None): k for k, s in enumerate(distinct)}
    cuts = sorted({s.cut_um for s in chosen if s is not None} or {DEFAULT_CUT_UM})
    cal = lot_calibrations(store, [r.meta for r in lots], allow_uncalibrated=uncalibrated)
    corr = None if cal.identity else (cal.intercept, cal.slope)
    model = None
    if screen and lots:  # issue 5: the screening verdict is part of the grade record
        from fibergrade.screening import load_model

        model = load_model()  # loaded and verified before any lot is read
    standard_index = [slot[s.digest if s is not None else None] for s in chosen]
    tasks, where = plan_tasks(store, lots, corr, standard_index, calibrations=cal)
    stored = record and bool(lots)
    plan = GradePlan(
        standards=tuple(distinct), default_cut=cuts[0], engine=engine, canonical_json=stored
    )
    parts = (executor or InProcess()).map(
        grade_segment, tasks, label="grade", progress=progress, plan=plan, model=model
    )
    # the tasks wrote whole records (and their JSON): only their order is left to restore
    records = in_lot_order(where, [p.records for p in parts], len(lots))
    # the plan asked every task for its records' JSON (a missing part fails the strict zip)
    canonical = in_lot_order(where, [p.canonical or () for p in parts], len(lots)) if stored else []
    created = _now()
    result_id = None
    if stored:
        # the lots' canonical JSON comes joined from the tasks' texts: the same bytes as
        # serialising the whole payload here, without doing it on this one process
        result_id = store.put_result(
            "grade",
            {
                "kind": "grade",
                "created_at": created,
                "software_version": __version__,
                "engine": engine,
            },
            canonical={"lots": b"[" + b",".join(canonical) + b"]"},
        )
    return GradingRun(records=records, result_id=result_id, created_at=created)


def latest_grades(store: Store) -> dict[str, dict[str, Any]]:
    """The most recent stored grade record of every graded lot."""
    latest: dict[str, dict[str, Any]] = {}
    for digest, payload in store.results("grade"):
        for rec in payload.get("lots", []):
            latest[rec["lot_id"]] = rec | {"result_id": digest}
    return latest


def check_grade_inputs(paths: Sequence[str | Path]) -> None:
    """Refuse paths that are not readable files before any work starts, saying what each
    one is instead: missing, a directory, a broken link, a symbolic-link loop, a device or
    FIFO (:class:`~fibergrade.errors.InputError`, exit code 2)."""
    for p in paths:
        problem = input_path_problem(p)
        if problem is not None:
            raise InputError(p, None, problem)


def input_path_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as an input file, or None when it is a regular file
    (symbolic links followed)."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symbolic link loop (following it leads back to a link already seen)"
        if exc.errno == errno.ENOENT and p.is_symlink():
            return f"is a broken symbolic link (its target {os.readlink(p)!r} does not exist)"
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return "no such file"
        return f"cannot be read: {exc.strerror or exc}"
    if stat.S_ISDIR(mode):
        return "is a directory, not a file (name the files in it, such as DIR/*.csv)"
    if not stat.S_ISREG(mode):
        kind = (
            "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        )
        return f"is {kind}, not a regular file"
    return None
