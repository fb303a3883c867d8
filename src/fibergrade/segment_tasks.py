"""The unit of work of ``grade``, ``screen`` and ``certify``: one store segment.

DESIGN.md makes the segment the unit of work. Each function here takes one
:class:`SegmentTask` (the segment file's path and digest, which of its lots, their declared
types and calibration lines) plus arguments shared by the whole run, opens the file itself,
and returns plain data: each lot's whole record (figures, grade, calibration, screening),
and for a stored grade result each record's canonical JSON. It never writes to the store;
the one process that gathers the results only puts them in order and stores them.

Both execution paths run exactly these functions: the direct path one segment after another
in this process, the cluster path (:mod:`fibergrade.cluster`) on Dask workers that receive
the task by value and open the segment by path (h5py objects cannot be pickled, and h5py's
global lock would serialise threads). The same code on the same bytes gives the same
figures; ``tests/test_cluster.py`` checks it on a real two-process cluster.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from fibergrade.calibration import correct_table
from fibergrade.distribution import Engine, LotSummary, summarise, summarise_histograms
from fibergrade.errors import MeasurementError, StoreCorruptError
from fibergrade.measurements import FibreLots, HistogramLots
from fibergrade.store import (
    check_lot_ids,
    read_segment_file,
    result_json_errors,
    verify_segment_file,
)

if TYPE_CHECKING:
    from fibergrade.calibration import CalibrationFields, LotCalibrations
    from fibergrade.grading import Standard
    from fibergrade.screening import ScreeningModel
    from fibergrade.store import LotRecord, Store

T = TypeVar("T")


@dataclass(frozen=True)
class SegmentTask:
    """Some lots of one committed segment, with what a worker needs to process them."""

    path: str  # the segment file, absolute; a worker must see the store at this same path
    digest: str  # its SHA-256 (the segment's name in the store)
    positions: tuple[int, ...]  # the lots' indices inside the segment
    #: the lots' ids, as the manifest gives them; checked against the segment's own
    lot_ids: tuple[str, ...]
    declared: tuple[str | None, ...]  # declared type of each lot
    #: each lot's calibration line (None: raw diameters); see fibergrade.calibration
    intercept: np.ndarray | None = None
    slope: np.ndarray | None = None
    #: per lot, an index into the run's list of standards (grading only)
    standard: tuple[int, ...] = ()
    #: grading only, per lot: the declared origin, and what its grade record says about
    #: calibration (the worker writes whole records; the client only puts them in order)
    origin: tuple[str | None, ...] = ()
    calibration: CalibrationFields | None = None

    @property
    def weight(self) -> int:
        """The task's share of a run's work, for ordering and grouping tasks on a cluster
        (:func:`fibergrade.cluster.chunk_tasks`): its number of lots."""
        return len(self.positions)


def plan_tasks(
    store: Store,
    lots: list[LotRecord],
    corrections: tuple[np.ndarray, np.ndarray] | None = None,
    standard_index: list[int] | None = None,
    calibrations: LotCalibrations | None = None,
) -> tuple[list[SegmentTask], list[list[int]]]:
    """One task per segment holding any of ``lots``; and, per task, the indices into
    ``lots`` of its lots (to put the results back in the caller's order).

    For grading, ``standard_index`` (per lot, into the run's standards) and
    ``calibrations`` (per lot, :func:`fibergrade.calibration.lot_calibrations`) give each
    task what its grade records need.
    """
    by_segment: dict[str, list[int]] = defaultdict(list)
    positions: dict[str, list[int]] = defaultdict(list)
    ids: dict[str, list[str]] = defaultdict(list)
    declared: dict[str, list[str | None]] = defaultdict(list)
    origin: dict[str, list[str | None]] = defaultdict(list)
    # one object per distinct text, so that a task pickles each once (the manifest gives
    # every lot its own copy of "cashmere")
    same: dict[str | None, str | None] = {}
    for i, r in enumerate(lots):  # one pass over the lot records (a store can hold 10^5)
        by_segment[r.segment].append(i)
        positions[r.segment].append(r.index)
        ids[r.segment].append(r.lot_id)
        t, o = r.meta.declared_type, r.meta.origin
        declared[r.segment].append(same.setdefault(t, t))
        origin[r.segment].append(same.setdefault(o, o))
    std_of = None if standard_index is None else np.asarray(standard_index, np.int64)
    tasks = []
    for digest, idxs in by_segment.items():
        tasks.append(
            SegmentTask(
                path=os.path.abspath(store.segment_path(digest)),
                digest=digest,
                positions=tuple(positions[digest]),
                lot_ids=tuple(ids[digest]),
                declared=tuple(declared[digest]),
                intercept=None if corrections is None else corrections[0][idxs],
                slope=None if corrections is None else corrections[1][idxs],
                standard=() if std_of is None else tuple(std_of[idxs].tolist()),
                origin=() if calibrations is None else tuple(origin[digest]),
                calibration=None if calibrations is None else calibrations.fields.select(idxs),
            )
        )
    return tasks, list(by_segment.values())


def in_lot_order(where: list[list[int]], parts: Sequence[Sequence[T]], n: int) -> list[T]:
    """The tasks' per-lot results (each part in its task's order) put back in the order of
    the ``n`` lots given to :func:`plan_tasks` (``where``: its second return value). A part
    that does not hold one result per lot of its task raises ``ValueError``."""
    out: list[T] = [None] * n  # type: ignore[list-item]  # every lot is in one task
    for idxs, part in zip(where, parts, strict=True):
        for i, x in zip(idxs, part, strict=True):
            out[i] = x
    return out


def read_task_lots(task: SegmentTask) -> FibreLots | HistogramLots:
    """The task's lots, read from its segment file and corrected by their calibration."""
    path = Path(task.path)
    if not path.is_file():
        raise StoreCorruptError(
            f"{path}: segment {task.digest[:16]}... is not readable here; every process that "
            "grades (each cluster worker too) must see the store at this same path"
        )
    table = read_segment_file(path, mapped=True)
    pos = list(task.positions)
    sub = table if pos == list(range(table.n_lots)) else table.select(pos)
    check_lot_ids(path, pos, sub.lot_ids, task.lot_ids)
    if task.intercept is None or task.slope is None:
        return sub
    return correct_table(sub, task.intercept, task.slope)


def summarise_table(
    table: FibreLots | HistogramLots,
    cut_um: float,
    engine: Engine,
    histogram_out: np.ndarray | None = None,
    parallel: bool = True,
) -> LotSummary:
    """Figures of every lot of a table of fibres or of class counts (``histogram_out`` and
    ``parallel``: see :func:`fibergrade.distribution.summarise`)."""
    if isinstance(table, FibreLots):
        return summarise(
            table, cut_um, engine=engine, histogram_out=histogram_out, parallel=parallel
        )
    return summarise_histograms(table, cut_um, histogram_out)


def summarise_segment(
    task: SegmentTask,
    cut_um: float,
    engine: Engine = "fast",
    histogram_out: np.ndarray | None = None,
    parallel: bool = True,
) -> LotSummary:
    """Figures of the task's lots, in the task's order."""
    table = read_task_lots(task)
    with calibration_named(task):
        return summarise_table(table, cut_um, engine, histogram_out, parallel)


@contextmanager
def calibration_named(task: SegmentTask) -> Iterator[None]:
    """A diameter the core refuses that only the lot's calibration line took out of range
    (the raw value was accepted at import) is said to be the calibration's doing, as
    :class:`~fibergrade.calibration.CalibrationRefused`, with the raw value and the line."""
    try:
        yield
    except MeasurementError as exc:
        if task.intercept is None or task.slope is None or exc.lot_id not in task.lot_ids:
            raise
        j = task.lot_ids.index(exc.lot_id)
        a, b = float(task.intercept[j]), float(task.slope[j])
        if a == 0.0 and b == 1.0:
            raise
        from fibergrade.calibration import CalibrationRefused

        raise CalibrationRefused(
            f"lot {exc.lot_id!r}, fibre {exc.index}: the calibrated diameter {exc.value:.3f} "
            f"um {exc.reason}; the raw {(exc.value - a) / b:.3f} um is in range, but the "
            f"instrument's calibration line (d' = {a:+.4f} + {b:.5f} d) takes it out, and a "
            "physical value is never clipped. Nothing was graded: recalibrate the "
            "instrument, or grade the other lots by naming them"
        ) from None


@dataclass(frozen=True)
class GradePlan:
    """What every grading task of one run shares."""

    standards: tuple[Standard | None, ...]  # indexed by SegmentTask.standard
    default_cut: float  # lots without a scheme, and screening, use this cut
    engine: Engine = "fast"
    #: also each record's canonical JSON, from which the stored result is joined
    canonical_json: bool = False


@dataclass
class SegmentGrades:
    """The grade records of one task's lots, in the task's order, and with
    :attr:`GradePlan.canonical_json` each record's canonical JSON
    (:func:`fibergrade.audit.canonical_json`)."""

    records: list[dict[str, Any]]
    canonical: list[bytes] | None = None


def grade_segment(
    task: SegmentTask, plan: GradePlan, model: ScreeningModel | None = None
) -> SegmentGrades:
    """The whole grade record of each of the task's lots (in the task's order): figures,
    grade and criteria, declared type, origin, segment, calibration and, with ``model``,
    screening (the ``grade --json`` schema, :data:`fibergrade.workflow.GRADE_KEYS` and more).

    Records are finished here, on the worker, so that the one client that gathers a run's
    results only puts them in order: its time is not multiplied by the number of workers.
    For the same reason the records' canonical JSON, which the stored result is made of
    (about 40 us per lot), is written here when the plan asks for it; the client only joins
    it. The calibration fields come from ``task.calibration`` (none when it is None).
    """
    from fibergrade.grading import grade
    from fibergrade.screening import screening_entries

    table = read_task_lots(task)
    cut_of = [
        plan.default_cut if (s := plan.standards[k]) is None else s.cut_um for k in task.standard
    ]
    cuts = set(cut_of) | ({plan.default_cut} if model is not None else set())
    with calibration_named(task):
        summaries = {cut: summarise_table(table, cut, plan.engine) for cut in sorted(cuts)}
    records: list[dict[str, Any]] = [{} for _ in task.positions]
    groups: dict[int, list[int]] = defaultdict(list)
    for j, k in enumerate(task.standard):
        groups[k].append(j)
    origin = task.origin or (None,) * len(task.positions)
    for k, idxs in groups.items():
        std = plan.standards[k]
        summ = summaries[cut_of[idxs[0]]].select(idxs)
        grade_recs = (
            grade(summ, std).records()
            if std is not None
            else [{"standard": None, "grade": None, "criteria": []} for _ in idxs]
        )
        for j, fig, gr in zip(idxs, summ.to_records(), grade_recs, strict=True):
            rec = fig | gr
            rec["declared_type"] = task.declared[j]
            rec["origin"] = origin[j]
            rec["segment"] = task.digest
            if std is None:
                declared = task.declared[j]
                rec["note"] = (
                    f"no grading scheme for declared type {declared!r}"
                    if declared is not None
                    else "the lot has no declared type (lot manifest), so no grading scheme"
                ) + "; pass --standard to grade this lot"
            records[j] = rec
    if task.calibration is not None:
        # the MFD does not depend on the cut: any of the summaries has it, in task order
        mfd = next(iter(summaries.values())).figures["mfd_um"]
        for rec, fields in zip(records, task.calibration.record_fields(mfd), strict=True):
            rec.update(fields)
    if model is not None:
        verdicts = screening_entries(model, summaries[plan.default_cut], list(task.declared))
        for rec, verdict in zip(records, verdicts, strict=True):
            rec["screening"] = verdict
    if not plan.canonical_json:
        return SegmentGrades(records)
    from fibergrade.audit import canonical_json

    with result_json_errors("grade"):
        return SegmentGrades(records, [canonical_json(rec) for rec in records])


def screen_segment(task: SegmentTask, model: ScreeningModel, cut_um: float) -> list[dict[str, Any]]:
    """Screening records (:meth:`~fibergrade.screening.Screening.records`) of the task's
    lots, each with its declared type and segment (whole, like :func:`grade_segment`'s)."""
    from fibergrade.screening import screen

    summary = summarise_segment(task, cut_um)
    records = screen(model, summary, list(task.declared)).records()
    for rec, declared in zip(records, task.declared, strict=True):
        rec["declared_type"] = declared
        rec["segment"] = task.digest
    return records


@dataclass(frozen=True)
class CertifyTask:
    """The signed certificates that cite one raw segment, to check it and render them."""

    path: str  # the segment file the certificates name by SHA-256 (absolute)
    digest: str
    envelopes: tuple[dict[str, Any], ...]  # signed certificates
    records: tuple[dict[str, Any], ...]  # the grade record each was made from
    pdf_paths: tuple[str, ...] = ()  # where to write each PDF (empty: no PDFs)
    # the calibration record each was graded with (None: uncalibrated), for its PDF
    calibrations: tuple[dict[str, Any] | None, ...] = ()

    @property
    def weight(self) -> int:
        """The task's share of the work (:func:`fibergrade.cluster.chunk_tasks`): the PDFs
        it renders (about half a second each), or 1 when it only hashes its segment."""
        return len(self.pdf_paths) or 1


def certify_segment(task: CertifyTask) -> int:
    """Hash the raw segment the certificates cite (refusing data altered since import),
    then render their PDFs; returns the number of PDFs written.

    Runs before any certificate is stored, so none is issued on raw data that no longer
    hash to what it names. PDFs are written whole (temporary file, then rename) into the
    output folder, which on a cluster must be a shared path like the store.
    """
    verify_segment_file(Path(task.path), task.digest)
    from fibergrade.certificate_pdf import render_pdf
    from fibergrade.certificates import CertificateError

    # pdf_paths is empty when no PDFs are wanted: then nothing is rendered
    calibrations = task.calibrations or (None,) * len(task.envelopes)
    for env, rec, cal, pdf in zip(
        task.envelopes, task.records, calibrations, task.pdf_paths, strict=False
    ):
        try:
            render_pdf(env, rec, pdf, calibration=cal)
        except OSError as exc:
            raise CertificateError(f"{pdf}: cannot write the certificate PDF: {exc}") from exc
    return len(task.pdf_paths)
