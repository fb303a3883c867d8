"""Live acquisition into the store: fibre analysers sample by sample, scales weight by weight.

The CLI's ``fibergrade acquire`` and the demo call these functions; they never print. Live
displays get a callback (:class:`AcquisitionProgress` for analysers, each stored weight for
scales) and every function returns a summary the CLI prints or dumps as JSON.

Analysers (:func:`acquire_samples`)
-----------------------------------
Samples come from an :class:`~fibergrade.adapters.analyser.AnalyserReader` (protocol and
error rules in :mod:`fibergrade.adapters.analyser`). Each completed sample is committed at
once as **its own store segment** through :meth:`fibergrade.store.Store.import_fibres`:

* lot id: the sample id, or ``lot`` for a single-sample run (``lot`` follows the import
  rule, :data:`fibergrade.measurements.LOT_ID_RULE`, refused before anything is read);
* ``source_name``: ``acquire:<profile>:<sample id>``;
* ``source_digest``: SHA-256 of the sample's raw lines as received (CR LF included), so the
  same sample seen again (a replayed capture, a re-sent stream) is recognised and not stored
  twice (``already_imported``), when the store holds it as the lot this run asks for
  (``lot``, else the sample id); held as another lot, it is a
  :class:`~fibergrade.errors.ReplayConflictError` for that sample (reported as a bad sample
  is, :attr:`AnalyserAcquisition.conflicts`; the CLI exits 3), nothing is stored for it,
  and the lot asked for gets no sample from it, as a replayed weighing stored for another
  subject is (below);
* lot metadata: the caller's :class:`~fibergrade.measurements.LotMeta` for that lot if any
  (a lot manifest), with ``instrument_id`` and ``measured_at`` (UTC, when the end line
  arrived) set by the acquisition. For a replayed capture that is when the *live session*
  received the end line: the capture's ``started_at`` + the captured time of the read that
  completed it (:mod:`fibergrade.adapters.transport`), never the time of the replay. The
  acquisition's time wins over the manifest's when it is known; a capture that records no
  start (made before the header held one) knows none, and then the lot keeps the
  manifest's ``measured_at``, or has none (None, unknown) without a manifest value: an
  unknown time never erases a known one. A sample already imported is reported
  (:class:`CommittedSample`) with the ``measured_at`` the store holds for it, not the one
  this run would have given it.

What happens when things go wrong (the partial-sample policy):

* **A bad sample** (bad checksum, garbled or truncated line, index gap, impossible value,
  count mismatch, missing end line) is an error *for that sample only*: it is reported
  (:class:`SampleFailure`, and ``on_error``), nothing of it is stored, and acquisition goes
  on with the next sample; with ``stop_on_error`` it ends there instead. A sample whose lot
  id the store already holds from another source (a re-measured lot needs a new id) is
  reported the same way.
* **Ctrl-C** (``KeyboardInterrupt``), **an unplugged adapter**
  (:class:`~fibergrade.adapters.errors.Disconnected`) or **the end of the stream** (no sample
  starts within ``idle_timeout_s``) end the acquisition. Every sample completed before is
  already committed and stays; the sample in progress, if any, is reported as
  :class:`~fibergrade.adapters.analyser.PartialSample` (sample id, fibres received, stream
  lines) and is **never stored**: a sample is stored whole or not at all, because its
  figures (MFD, CV, coarse %) would be those of the fibres that happened to arrive, not of
  the sample. Measure it again.
* A Ctrl-C that arrives while a completed sample is being committed is held back until the
  commit has finished (in the main thread), so the summary says exactly what was stored.
  The store's own commit protocol (write, fsync, rename) means that even a kill at any other
  moment never leaves a half-written lot.
* A store failure other than a lot conflict (disk full, another process holding the writer
  lock) ends the acquisition (``ended = "store-error"``); the sample in hand is reported in
  ``store_error`` and not stored.

Scales (:func:`acquire_weights`)
--------------------------------
Weighs ``count`` times, once per subject, or until interrupted, a stable weight (the rule of
:mod:`fibergrade.adapters.scales.base`) or with ``immediate`` a single immediate reading.
Each weight is stored as a result record ``store.put_result("weighing", record)`` with
exactly these keys (:func:`weighing_record`; the meat workflow reads them)::

    {"kind": "weighing", "created_at": ISO-8601 UTC (when stored),
     "scale_id": str, "profile": str, "protocol": str,
     "value": float, "unit": str, "mode": "stable" | "immediate", "device_stable": bool,
     "gross": bool | None,
     "timestamp": ISO-8601 UTC (when the scale gave the weight) | None,
     "subject": str | None,
     "capture": {"session": str | None, "sha256": str | None,
                 "event": int, "t": float} | None}

``timestamp`` is when the weighing happened, ``created_at`` when its record was stored. Live
they are moments apart; for a replayed capture ``timestamp`` is when the *live session*
read the reply that completed the weighing, the capture's ``started_at`` + the captured
time of that read (:mod:`fibergrade.adapters.scales.base`), and ``created_at`` the time of
the replay. A capture that records no start (made before the header held one) stores
``timestamp`` None, unknown: the replay's time is not when the scale gave the weight.

``capture`` says which recorded session a weight came from, and where in it: ``session``,
the capture header's session id (:mod:`fibergrade.adapters.transport`; None for a capture
recorded before headers held one), ``sha256``, the SHA-256 of the capture file replayed
(None for a live weighing: its capture is still being written), and the captured read that
completed the weighing's reply, its event number in the capture (``event``, 1 = the first
event after the header) and captured time (``t``),
:attr:`~fibergrade.adapters.transport.Transport.capture_position` taken when the weighing
returns (the drivers return on the reply without reading further). A replay has it from
the capture; a live session recorded with ``record_to`` (``acquire --record``) has it from
its recorder, which logs the same event numbers and times a replay of the capture gives
the same reads. A live weighing not recorded has ``capture`` None. The event number tells
apart two weighings of one session even when their replies are the same bytes and their
times unknown.

A replay recognises the weighings the store already holds from the same session, by
``session`` and ``event`` among the store's weighing records (by ``sha256`` and ``event``
when the capture, or the stored record, has no session id): those its live run stored
while recording it, and those earlier replays stored, from this file or another copy of
the session (a truncated copy, notes added to the header, CR LF line ends: each another
file, the same session). Such a weighing is not stored again, and nothing is logged for
it; the run reports it as ``already_stored`` with the record the store holds, as an
analyser run reports an ``already_imported`` sample. Otherwise one replay after another
would each add the same weighings anew, each dated later by ``created_at``, and the meat
workflow, which takes a carcass's latest weighing, would take an old weighing for the
newest. Live weighings are real events and are never taken for one another: the same load
weighed twice is stored twice.

Recognising a weighing needs its record to be what this run would have stored: a weighing
the store holds for another subject than the run names (a subject where it names none, or
none where it names one, included), or by another scale id than a scale id the run names
(``scale_id`` or the profile's; a default, the port's or capture's name, names no scale
and differs between a live session and its replay), is a
:class:`~fibergrade.errors.ReplayConflictError` for that weighing: nothing is stored for
it, the failure names the event and the stored and asked subject or scale, and the run
goes on; the CLI exits 3, a conflict with what the store holds. Reporting it as already
stored would leave the subject named now without its weighing, silently.

``gross`` is true for a gross weight, false for a net (tared) weight, and null when the
reply does not say: CAS frames say it (``GS``/``NT``, scales.md); MT-SICS and A&D replies
and SBI's 16-character format do not; SBI's 22-character ID header ``N``/``G`` is read as
net/gross [unsourced: scales.md shows ``N     `` without its meaning]. A tared net weight
and a gross weight are never stored alike. ``unit`` is always the unit the device sent (a
reading without one, such as an unstable SBI reading, is never stored). ``subject`` is the
id of what was weighed (a carcass id, a lot id) or None. Overload, underload, an unstable
weight, a stability timeout, a weight outside [Min, Max], a unit mismatch, garbage and a
reply timeout are typed errors *for that weighing*: reported (:class:`WeighingFailure`),
nothing stored for it, and the next weighing follows (next subject). A disconnection or
Ctrl-C ends the run; stored weights stay.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from fibergrade.adapters.analyser import AnalyserReader, PartialSample, Sample
from fibergrade.adapters.errors import (
    Disconnected,
    FrameError,
    InstrumentTimeout,
    SampleError,
    ScaleError,
)
from fibergrade.adapters.scales.base import ScaleBackend, Weighing
from fibergrade.adapters.transport import ReplayPort, Transport
from fibergrade.errors import InputError, LotConflictError, ReplayConflictError, StoreError
from fibergrade.measurements import LOT_ID_RULE, LotMeta, lot_id_problem
from fibergrade.store import Store

#: why an acquisition ended
Ended = Literal[
    "limit",  # the requested number of samples / weighings was reached
    "idle",  # no sample started within the idle timeout (end of stream)
    "disconnected",  # the adapter was unplugged or the peer closed the port
    "interrupted",  # Ctrl-C
    "stopped-on-error",  # a bad sample or weighing with stop_on_error
    "store-error",  # the store refused a write (not a lot conflict)
]

#: result kind of stored weights
WEIGHING_KIND = "weighing"
#: the keys of a weighing record, in the documented order
WEIGHING_KEYS = (
    "kind",
    "created_at",
    "scale_id",
    "profile",
    "protocol",
    "value",
    "unit",
    "mode",
    "device_stable",
    "gross",
    "timestamp",
    "subject",
    "capture",
)


def _utc_now() -> str:
    return datetime.now(UTC).isoformat()


def _end_line_time(transport: Transport) -> str | None:
    """``measured_at`` of the sample whose end line was just read: now (UTC) on a live
    port; for a replay, the capture's ``started_at`` + the captured time of the last read,
    the one that completed the end line (read_sample returns on that line without reading
    further; :meth:`ReplayPort.wall_time`), not the replay's clock, or None when the
    capture records no start."""
    port = transport.port
    if not isinstance(port, ReplayPort):
        return _utc_now()
    t = port.wall_time()
    return None if t is None else t.isoformat()


# --------------------------------------------------------------------------- Ctrl-C


class _InterruptGuard:
    """Holds back Ctrl-C while a commit is in progress (main thread only).

    Outside :meth:`committing` a SIGINT raises ``KeyboardInterrupt`` at once, as usual;
    inside, it is remembered and raised when the commit has finished. In another thread, or
    when someone else owns the SIGINT handler, the guard does nothing.
    """

    def __init__(self) -> None:
        self._old: Any = None
        self._active = False
        self._critical = False
        self._pending = False

    def __enter__(self) -> _InterruptGuard:
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._old = signal.signal(signal.SIGINT, self._handler)
            self._active = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._active:
            signal.signal(signal.SIGINT, self._old)
            self._active = False

    def _handler(self, signum: int, frame: Any) -> None:
        if self._critical:
            self._pending = True
            return
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def committing(self) -> Iterator[None]:
        """A block that Ctrl-C does not cut short; a Ctrl-C during it is raised after it."""
        self._critical = True
        try:
            yield
        finally:
            self._critical = False
            pending, self._pending = self._pending, False
        if pending:  # (an exception leaving the block takes precedence)
            raise KeyboardInterrupt


# --------------------------------------------------------------------------- analysers


@dataclass(frozen=True)
class CommittedSample:
    """A completed sample and the segment that holds it."""

    sample_id: str
    lot_id: str
    n: int
    mfd_um: float
    segment: str
    already_imported: bool
    lines: tuple[int, int]
    #: what the store holds for the lot (ISO 8601; a manifest's may be a date); None when
    #: unknown (a replayed capture that records no start, and no manifest value)
    measured_at: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "sample_id": self.sample_id,
            "lot_id": self.lot_id,
            "n": self.n,
            "mfd_um": self.mfd_um,
            "segment": self.segment,
            "already_imported": self.already_imported,
            "lines": list(self.lines),
            "measured_at": self.measured_at,
        }


@dataclass(frozen=True)
class SampleFailure:
    """A sample that was not stored: ``error`` is the exception class name, ``kind`` its
    short description (``bad checksum``, ``lot conflict`` ...)."""

    sample_id: str | None
    error: str
    kind: str
    line_no: int | None
    received: int
    message: str

    @classmethod
    def from_error(cls, exc: SampleError) -> SampleFailure:
        return cls(exc.sample_id, type(exc).__name__, exc.kind, exc.line_no, exc.received, str(exc))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class AcquisitionProgress:
    """What a live display shows while an analyser streams.

    ``readings`` counts measurement lines accepted so far (completed samples, failed ones
    up to their error, and the sample being received); ``readings_per_s`` is the rate over
    the last few seconds; ``running_mfd_um`` the mean diameter of the sample being received
    (of the last completed one between samples; None before any).
    """

    readings: int
    readings_per_s: float
    lines_read: int
    samples_committed: int
    samples_failed: int
    sample_id: str | None
    sample_readings: int
    running_mfd_um: float | None
    elapsed_s: float


@dataclass
class AnalyserAcquisition:
    """Summary of :func:`acquire_samples` (see the module docstring for the policy)."""

    profile: str
    source: str
    instrument_id: str
    committed: list[CommittedSample] = field(default_factory=list)
    errors: list[SampleFailure] = field(default_factory=list)
    partial: PartialSample | None = None
    ended: Ended = "limit"
    detail: str = ""
    store_error: str | None = None
    lines_read: int = 0
    readings: int = 0
    discarded_lines: int = 0
    #: first to last line on the transport's clock: for a replay, the captured session's
    #: time (the replay's clock follows the capture), not the replay's
    elapsed_s: float = 0.0
    #: the number of samples asked for (``max_samples``), None for an open-ended run
    planned: int | None = None
    #: the lines came from a replayed capture, not a live port
    replay: bool = False
    #: wall-clock seconds this run took, start to end (a replay's own time)
    run_s: float = 0.0
    #: a replay: the capture's recorded start (``started_at``, ISO 8601 UTC), from which its
    #: lots' ``measured_at`` is dated; None for a live run or a capture without one
    capture_started_at: str | None = None

    @property
    def new_samples(self) -> int:
        """Samples stored by this run (not recognised as already imported)."""
        return sum(not c.already_imported for c in self.committed)

    @property
    def conflicts(self) -> list[SampleFailure]:
        """The failures that are conflicts with the store: samples it already holds (the
        same raw lines) as another lot than this run asks for
        (:class:`ReplayConflictError`), and samples whose lot id it holds from another
        source (:class:`~fibergrade.errors.LotConflictError`); nothing was stored for them."""
        kinds = (ReplayConflictError.__name__, LotConflictError.__name__)
        return [e for e in self.errors if e.error in kinds]

    @property
    def complete(self) -> bool:
        """True when nothing was lost: no bad sample, no partial one, no Ctrl-C, no store
        error, and a planned number of samples all read. (An unplug between two samples of
        an open-ended run loses nothing.)"""
        return (
            not self.errors
            and self.partial is None
            and self.ended not in ("interrupted", "stopped-on-error", "store-error")
            and (self.planned is None or len(self.committed) >= self.planned)
        )

    @property
    def readings_per_s(self) -> float:
        """Measurement lines accepted per second over :attr:`elapsed_s` (for a replay, the
        captured session's rate)."""
        return self.readings / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The documented ``acquire --json`` object of an analyser run."""
        p = self.partial
        return {
            "kind": "analyser",
            "profile": self.profile,
            "source": self.source,
            "instrument_id": self.instrument_id,
            "ended": self.ended,
            "detail": self.detail,
            "complete": self.complete,
            "planned": self.planned,
            "committed": [c.to_dict() for c in self.committed],
            "errors": [e.to_dict() for e in self.errors],
            "partial": None
            if p is None
            else {
                "sample_id": p.sample_id,
                "received": p.received,
                "first_line": p.first_line,
                "last_line": p.last_line,
                "mean_diameter_um": None if math.isnan(p.mean_diameter_um) else p.mean_diameter_um,
                "stored": False,
            },
            "store_error": self.store_error,
            "lines_read": self.lines_read,
            "readings": self.readings,
            "discarded_lines": self.discarded_lines,
            "elapsed_s": round(self.elapsed_s, 3),
            "readings_per_s": round(self.readings_per_s, 1),
            "replay": self.replay,
            "run_s": round(self.run_s, 3),
            "capture_started_at": self.capture_started_at,
        }


class _Tracker:
    """Counts readings and calls the progress callback at most every ``interval_s``."""

    WINDOW_S = 2.0

    def __init__(
        self,
        reader: AnalyserReader,
        summary: AnalyserAcquisition,
        progress: Callable[[AcquisitionProgress], None] | None,
        interval_s: float,
    ) -> None:
        self.reader = reader
        self.summary = summary
        self.progress = progress
        self.interval_s = interval_s
        self.clock = reader.transport.clock
        self.t0: float | None = None  # when the first line arrived
        self.t_last = 0.0  # when the last line arrived
        self.done = 0  # readings of samples no longer open
        self.last_mfd: float | None = None
        self._emitted = -math.inf
        self._window: deque[tuple[float, int]] = deque()

    def on_line(self) -> None:
        now = self.clock()
        if self.t0 is None:
            self.t0 = now
        self.t_last = now
        if self.progress is not None and now - self._emitted >= self.interval_s:
            self.emit(now)

    def close_sample(self, readings: int, mfd: float | None = None) -> None:
        self.done += readings
        if mfd is not None:
            self.last_mfd = mfd

    def elapsed(self) -> float:
        return 0.0 if self.t0 is None else self.t_last - self.t0

    def emit(self, now: float | None = None) -> None:
        if self.progress is None:
            return
        now = self.clock() if now is None else now
        self._emitted = now
        p = self.reader.partial
        readings = self.done + (p.received if p else 0)
        win = self._window
        win.append((now, readings))
        while len(win) > 2 and now - win[1][0] >= self.WINDOW_S:
            win.popleft()
        dt = now - win[0][0]
        rate = (readings - win[0][1]) / dt if dt > 0 else 0.0
        mfd = p.mean_diameter_um if p and p.received else self.last_mfd
        s = self.summary
        self.progress(
            AcquisitionProgress(
                readings=readings,
                readings_per_s=rate,
                lines_read=self.reader.lines_read,
                samples_committed=len(s.committed),
                samples_failed=len(s.errors),
                sample_id=p.sample_id if p else None,
                sample_readings=p.received if p else 0,
                running_mfd_um=mfd,
                elapsed_s=self.elapsed(),
            )
        )


def sample_digest(sample: Sample) -> str:
    """SHA-256 of a sample's raw lines: its ``source_digest`` in the store."""
    if not sample.raw:
        raise ValueError(
            f"sample {sample.sample_id!r} carries no raw lines; read it with keep_raw=True"
        )
    return hashlib.sha256(sample.raw).hexdigest()


def commit_sample(
    store: Store,
    sample: Sample,
    *,
    profile: str,
    instrument_id: str,
    measured_at: str | None,
    lot_id: str | None = None,
    meta: LotMeta | None = None,
) -> CommittedSample:
    """Commit one completed sample as its own segment (rules in the module docstring).

    ``measured_at`` (ISO 8601 UTC, when the sample's end line arrived) is stored as given
    when known; None (unknown: a replay of a capture without a start) keeps ``meta``'s
    (a lot manifest's), else stores the lot with no measurement time, never the time of
    the commit. The result's ``measured_at`` is what the store holds for the lot: for a
    sample already imported, its stored time, not ``measured_at``.

    Raises :class:`~fibergrade.errors.LotConflictError` when the store holds the lot id from
    another source, :class:`~fibergrade.errors.StoreError` for other store failures.
    """
    lot = lot_id or sample.sample_id
    base = meta if meta is not None else LotMeta(lot)
    if base.lot_id != lot:
        base = dataclasses.replace(base, lot_id=lot)
    # the acquisition's time when it knows one; an unknown one keeps the manifest's
    when = measured_at if measured_at is not None else base.measured_at
    lot_meta = dataclasses.replace(base, instrument_id=instrument_id, measured_at=when)
    outcome = store.import_fibres(
        sample.to_fibre_lots(lot),
        {lot: lot_meta},
        source_name=f"acquire:{profile}:{sample.sample_id}",
        source_digest=sample_digest(sample),
    )
    # what the store holds: this lot's, or for a sample already imported, its stored lot's
    stored_at = store.lot(outcome.lot_ids[0]).meta.measured_at
    return CommittedSample(
        sample_id=sample.sample_id,
        lot_id=outcome.lot_ids[0],
        n=sample.n,
        mfd_um=float(sample.diameter_um.mean(dtype="float64")),
        segment=outcome.segment,
        already_imported=outcome.already_imported,
        lines=sample.lines,
        measured_at=stored_at,
    )


def _sample_conflict(done: CommittedSample, lot_id: str) -> ReplayConflictError | None:
    """A sample the store already held (same raw lines), but as another lot than the run
    asked for (``lot``, else the sample id): the conflict, else None."""
    if not done.already_imported or done.lot_id == lot_id:
        return None
    first, last = done.lines
    return ReplayConflictError(
        f"sample {done.sample_id!r} (stream lines {first}-{last}) is already in the store as "
        f"lot {done.lot_id!r} (segment {done.segment[:12]}, the same raw lines), not as lot "
        f"{lot_id!r} as this run asks; raw data is never rewritten, so nothing is stored as "
        f"{lot_id!r}: replay with the lot id it was stored as, or measure the lot again"
    )


def acquire_samples(
    store: Store,
    reader: AnalyserReader,
    *,
    profile: str,
    instrument_id: str | None = None,
    lot: str | None = None,
    lot_meta: Mapping[str, LotMeta] | None = None,
    max_samples: int | None = None,
    idle_timeout_s: float | None = None,
    stop_on_error: bool = False,
    progress: Callable[[AcquisitionProgress], None] | None = None,
    progress_interval_s: float = 0.1,
    on_sample: Callable[[CommittedSample], None] | None = None,
    on_error: Callable[[SampleFailure], None] | None = None,
) -> AnalyserAcquisition:
    """Read samples from ``reader`` and commit each completed one as its own segment.

    ``profile`` is the profile name recorded in each segment's source name;
    ``instrument_id`` defaults to it. ``lot`` names the lot of a single-sample run (then
    ``max_samples`` is 1). ``max_samples`` counts samples committed or recognised as already
    imported; bad samples do not count. ``idle_timeout_s`` None waits for ever for the next
    sample. Returns the summary; never raises for a bad sample, a disconnection or Ctrl-C
    (module docstring). ``reader.on_line`` is borrowed for the duration.
    """
    if lot is not None:
        if max_samples not in (None, 1):
            raise ValueError("a lot id names one sample: use lot only with max_samples=1")
        max_samples = 1
        problem = lot_id_problem(lot)  # the import rule: lot ids name certificate files
        if problem is not None:
            raise InputError("--lot", None, f"lot id {lot[:60]!r} {problem}", expected=LOT_ID_RULE)
    if max_samples is not None and max_samples < 1:
        raise ValueError("max_samples must be at least 1")
    if not reader.keep_raw:
        raise ValueError("acquisition needs the raw lines of each sample (keep_raw=True)")
    started = time.monotonic()
    summary = AnalyserAcquisition(
        profile=profile,
        source=reader.transport.name,
        instrument_id=instrument_id or profile,
        planned=max_samples,
        replay=isinstance(reader.transport.port, ReplayPort),
    )
    started_at = reader.transport.capture_started_at
    summary.capture_started_at = None if started_at is None else started_at.isoformat()
    tracker = _Tracker(reader, summary, progress, progress_interval_s)
    previous_hook = reader.on_line
    reader.on_line = tracker.on_line
    wait = 3600.0 if idle_timeout_s is None else idle_timeout_s
    metas = lot_meta or {}

    def fail(failure: SampleFailure) -> None:
        summary.errors.append(failure)
        tracker.close_sample(failure.received)
        if on_error is not None:
            on_error(failure)
        tracker.emit()

    with _InterruptGuard() as guard:
        try:
            while max_samples is None or len(summary.committed) < max_samples:
                try:
                    sample = reader.read_sample(timeout_s=wait)
                except InstrumentTimeout:
                    if idle_timeout_s is None:
                        continue
                    summary.ended = "idle"
                    summary.detail = f"no sample started within {idle_timeout_s:g} s"
                    break
                except SampleError as exc:
                    fail(SampleFailure.from_error(exc))
                    if stop_on_error:
                        summary.ended = "stopped-on-error"
                        summary.detail = str(exc)
                        break
                    continue
                measured_at = _end_line_time(reader.transport)
                lot_id = lot or sample.sample_id
                # the store refused the lot id (held from another source), or holds this
                # sample already as another lot than asked for: reported, nothing stored
                refused: tuple[str, StoreError] | None = None
                with guard.committing():
                    try:
                        done = commit_sample(
                            store,
                            sample,
                            profile=profile,
                            instrument_id=summary.instrument_id,
                            measured_at=measured_at,
                            lot_id=lot_id,
                            meta=metas.get(lot_id),
                        )
                    except LotConflictError as exc:
                        refused = ("lot conflict", exc)
                    except StoreError as exc:
                        summary.ended = "store-error"
                        summary.store_error = f"sample {sample.sample_id!r} not stored: {exc}"
                        summary.detail = str(exc)
                        break
                    else:
                        stored_as = _sample_conflict(done, lot_id)
                        if stored_as is not None:
                            refused = ("stored as another lot", stored_as)
                        else:
                            summary.committed.append(done)
                            tracker.close_sample(done.n, done.mfd_um)
                if refused is not None:
                    kind, exc = refused
                    fail(
                        SampleFailure(
                            sample.sample_id,
                            type(exc).__name__,
                            kind,
                            None,
                            sample.n,
                            str(exc),
                        )
                    )
                    if stop_on_error:
                        summary.ended = "stopped-on-error"
                        summary.detail = str(exc)
                        break
                    continue
                if on_sample is not None:
                    on_sample(done)
                tracker.emit()
            else:
                summary.ended = "limit"
        except Disconnected as exc:
            summary.ended = "disconnected"
            summary.detail = str(exc)
            summary.partial = reader.partial
        except KeyboardInterrupt:
            summary.ended = "interrupted"
            summary.detail = "interrupted (Ctrl-C)"
            summary.partial = reader.partial
        finally:
            reader.on_line = previous_hook
    p = summary.partial
    summary.readings = tracker.done + (p.received if p else 0)
    summary.lines_read = reader.lines_read
    summary.discarded_lines = len(reader.discarded)
    summary.elapsed_s = tracker.elapsed()
    summary.run_s = time.monotonic() - started
    return summary


# --------------------------------------------------------------------------- scales


@dataclass(frozen=True)
class StoredWeighing:
    """A weight stored as a ``weighing`` result: its digest and the record.
    ``already_stored``: a replayed weighing the store already held from the same recorded
    session (stored by its live run or an earlier replay); the digest and record are those
    the store holds, and this run stored nothing."""

    result_id: str
    record: dict[str, Any]
    already_stored: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"result_id": self.result_id, "already_stored": self.already_stored, **self.record}


@dataclass(frozen=True)
class WeighingFailure:
    """A weighing that stored nothing: the error class name and its message."""

    index: int
    subject: str | None
    error: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class WeighingAcquisition:
    """Summary of :func:`acquire_weights`."""

    profile: str
    protocol: str
    scale_id: str
    source: str
    mode: Literal["stable", "immediate"]
    stored: list[StoredWeighing] = field(default_factory=list)
    errors: list[WeighingFailure] = field(default_factory=list)
    ended: Ended = "limit"
    detail: str = ""
    #: subjects planned but not weighed because the run ended first
    not_weighed: list[str] = field(default_factory=list)
    #: the weights came from a replayed capture, not a live port
    replay: bool = False
    #: a replay: the capture's recorded start (``started_at``, ISO 8601 UTC), from which its
    #: weighings' ``timestamp`` is dated; None for a live run or a capture without one
    capture_started_at: str | None = None

    @property
    def new_weighings(self) -> int:
        """Weights stored by this run (not recognised as already stored)."""
        return sum(not s.already_stored for s in self.stored)

    @property
    def already_stored(self) -> int:
        """Replayed weighings the store already held from the same recorded session."""
        return len(self.stored) - self.new_weighings

    @property
    def conflicts(self) -> list[WeighingFailure]:
        """The failures that are conflicts with the store (:class:`ReplayConflictError`):
        replayed weighings the store holds for another subject or scale than this run
        names, for which nothing was stored."""
        return [e for e in self.errors if e.error == ReplayConflictError.__name__]

    @property
    def complete(self) -> bool:
        """True when every planned weighing has its weight in the store (stored by this run
        or, for a replay, already stored from the same capture)."""
        return not self.errors and not self.not_weighed and self.ended == "limit"

    def to_dict(self) -> dict[str, Any]:
        """The documented ``acquire --json`` object of a scale run."""
        return {
            "kind": "scale",
            "profile": self.profile,
            "protocol": self.protocol,
            "scale_id": self.scale_id,
            "source": self.source,
            "mode": self.mode,
            "ended": self.ended,
            "detail": self.detail,
            "complete": self.complete,
            "stored": [s.to_dict() for s in self.stored],
            "errors": [e.to_dict() for e in self.errors],
            "not_weighed": list(self.not_weighed),
            "replay": self.replay,
            "capture_started_at": self.capture_started_at,
        }


def weighing_record(
    weighing: Weighing,
    *,
    profile: str,
    subject: str | None,
    created_at: str | None = None,
    capture: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The stored form of a weight (schema in the module docstring; keys
    :data:`WEIGHING_KEYS`): ``timestamp`` is the weighing's own (None stays None),
    ``created_at`` when it is stored (default: now), ``capture`` the recorded session and
    read it came from (``session``, ``sha256``, ``event``, ``t``), None for a live weighing
    not recorded."""
    return {
        "kind": WEIGHING_KIND,
        "created_at": created_at or _utc_now(),
        "scale_id": weighing.scale_id,
        "profile": profile,
        "protocol": weighing.protocol,
        "value": float(weighing.value),
        "unit": weighing.unit,
        "mode": weighing.mode,
        "device_stable": bool(weighing.device_stable),
        "gross": None if weighing.gross is None else bool(weighing.gross),
        "timestamp": None if weighing.timestamp is None else weighing.timestamp.isoformat(),
        "subject": subject,
        "capture": None if capture is None else dict(capture),
    }


def _capture_origin(transport: Transport) -> dict[str, Any] | None:
    """Where the weighing whose reply was just read came from, for its record: the
    capture's session id and file SHA-256 and the captured read that completed the reply
    (module docstring); None on a live port not recorded, or a replay that names neither a
    session nor a file (which no later replay can name)."""
    session = transport.capture_session
    sha = transport.capture_sha256
    position = transport.capture_position
    if position is None or (session is None and sha is None):
        return None
    return {"session": session, "sha256": sha, **position.to_dict()}


def _same_capture(origin: Mapping[str, Any], session: str | None, sha256: str | None) -> bool:
    """Whether a stored weighing's ``capture`` comes from the capture replayed now: by its
    session id; for a record without one, or a capture without one (recorded before the
    header held it), by the file's SHA-256."""
    stored_session = origin.get("session")
    if session is not None and stored_session is not None:
        return bool(stored_session == session)
    return sha256 is not None and origin.get("sha256") == sha256


def _stored_from_capture(
    store: Store, session: str | None, sha256: str | None
) -> dict[int, StoredWeighing]:
    """The weighings the store holds from the capture replayed now (``session``, else
    ``sha256``), by event number."""
    out: dict[int, StoredWeighing] = {}
    for rid, rec in store.results(WEIGHING_KIND):
        origin = rec.get("capture")
        if isinstance(origin, dict) and _same_capture(origin, session, sha256):
            event = origin.get("event")
            if isinstance(event, int) and event not in out:
                out[event] = StoredWeighing(rid, rec, already_stored=True)
    return out


def _who(subject: Any) -> str:
    return "no subject" if subject is None else f"subject {subject!r}"


def _weighing_conflict(
    already: StoredWeighing, origin: Mapping[str, Any], *, subject: str | None, scale: ScaleBackend
) -> ReplayConflictError | None:
    """A replayed weighing the store holds (``already``) but for another subject than this
    run names, or by another scale id when this run names one (a default scale id, the
    port's or capture's name, names no scale): the conflict, else None."""
    rec = already.record
    stored_as = []
    asked = []
    if rec.get("subject") != subject:
        stored_as.append(f"for {_who(rec.get('subject'))}")
        asked.append(f"for {_who(subject)}")
    if scale.scale_id_named and rec.get("scale_id") != scale.scale_id:
        stored_as.append(f"by scale {rec.get('scale_id')!r}")
        asked.append(f"by scale {scale.scale_id!r}")
    if not stored_as:
        return None
    named = "" if subject is None else f" for {subject!r}"
    return ReplayConflictError(
        f"event {origin['event']} of the capture (t = {origin['t']:g} s) is a weighing the "
        f"store already holds {' and '.join(stored_as)} (result {already.result_id[:12]}), "
        f"not {' and '.join(asked)} as this run asks; stored weighings are never rewritten, "
        f"so nothing is stored{named}: replay with the subjects and scale id it was stored "
        "with, or weigh again"
    )


def read_subjects(path: str | Path) -> list[str]:
    """Subject ids from a text file: one per line; blank lines and lines starting with ``#``
    are skipped; surrounding spaces are stripped. Raises :class:`InputError`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(p, None, f"cannot read subjects: {exc}") from None
    subjects = [s for s in (line.strip() for line in text.splitlines()) if s and s[0] != "#"]
    if not subjects:
        raise InputError(p, None, "no subject ids", expected="one subject id per line")
    return subjects


def acquire_weights(
    store: Store,
    scale: ScaleBackend,
    *,
    profile: str,
    count: int | None = None,
    subjects: Sequence[str] | None = None,
    immediate: bool = False,
    interval_s: float = 0.0,
    error_pause_s: float = 1.0,
    stop_on_error: bool = False,
    before_weighing: Callable[[int, str | None], None] | None = None,
    on_weight: Callable[[StoredWeighing], None] | None = None,
    on_error: Callable[[WeighingFailure], None] | None = None,
) -> WeighingAcquisition:
    """Weigh and store each weight as a ``weighing`` result (module docstring).

    With ``subjects`` each is weighed once in order (``count``, if given, must match);
    otherwise ``count`` weighings, or until Ctrl-C / disconnection with ``count`` None.
    ``before_weighing(index, subject)`` runs before each weighing (a prompt, or a test
    changing the simulated load); ``interval_s`` is waited between weighings, and
    ``error_pause_s`` after a failed one so a refused load does not flood the log.

    A replay does not store again a weighing the store holds from the same recorded
    session, stored by its live run or an earlier replay (module docstring): it is reported
    as already stored (``on_weight`` too) and counts as weighed, when it was stored for the
    subject (and named scale id) this run gives it; else it is a
    :class:`~fibergrade.errors.ReplayConflictError` for that weighing (``on_error``,
    :attr:`WeighingAcquisition.conflicts`), nothing is stored for it, and the next weighing
    follows. Raises :class:`~fibergrade.errors.StoreError` before anything
    is read when the store's weighing records cannot be listed for that check.
    """
    if subjects is not None:
        subjects = list(subjects)
        if not subjects:
            raise ValueError("subjects is empty")
        if count is not None and count != len(subjects):
            raise ValueError(f"count {count} differs from the {len(subjects)} subjects given")
    if count is not None and count < 1:
        raise ValueError("count must be at least 1")
    mode: Literal["stable", "immediate"] = "immediate" if immediate else "stable"
    summary = WeighingAcquisition(
        profile=profile,
        protocol=scale.protocol,
        scale_id=scale.scale_id,
        source=scale.transport.name,
        mode=mode,
        replay=isinstance(scale.transport.port, ReplayPort),
    )
    started_at = scale.transport.capture_started_at
    summary.capture_started_at = None if started_at is None else started_at.isoformat()
    session = scale.transport.capture_session
    sha = scale.transport.capture_sha256
    total = len(subjects) if subjects is not None else count

    def failed(failure: WeighingFailure) -> bool:
        """Record a weighing that was not stored; True when the run stops at it."""
        summary.errors.append(failure)
        if on_error is not None:
            on_error(failure)
        if stop_on_error:
            summary.ended = "stopped-on-error"
            summary.detail = failure.message
        return stop_on_error

    k = 0
    with _InterruptGuard() as guard:
        try:
            # a replay: the weighings the store holds from this capture's session (its live
            # run, earlier replays) by event; a live session is new, and never looked up
            earlier = (
                _stored_from_capture(store, session, sha)
                if summary.replay and (session is not None or sha is not None)
                else {}
            )
            while total is None or k < total:
                subject = subjects[k] if subjects is not None else None
                if k and interval_s > 0:
                    scale.transport.sleep(interval_s)
                if before_weighing is not None:
                    before_weighing(k, subject)
                try:
                    w = scale.immediate_weight() if immediate else scale.stable_weight()
                except (ScaleError, InstrumentTimeout, FrameError) as exc:
                    k += 1
                    if failed(WeighingFailure(k, subject, type(exc).__name__, str(exc))):
                        break
                    if error_pause_s > 0 and (total is None or k < total):
                        scale.transport.sleep(error_pause_s)
                    continue
                origin = _capture_origin(scale.transport)
                already = None if origin is None else earlier.get(origin["event"])
                conflict = (
                    None
                    if already is None or origin is None
                    else _weighing_conflict(already, origin, subject=subject, scale=scale)
                )
                if conflict is not None:  # stored for another subject: nothing to store
                    k += 1
                    if failed(WeighingFailure(k, subject, type(conflict).__name__, str(conflict))):
                        break
                    continue
                if already is not None:  # already held from this session: nothing to store
                    summary.stored.append(already)
                    k += 1
                    if on_weight is not None:
                        on_weight(already)
                    continue
                record = weighing_record(w, profile=profile, subject=subject, capture=origin)
                with guard.committing():
                    try:
                        digest = store.put_result(WEIGHING_KIND, record)
                    except StoreError as exc:
                        summary.ended = "store-error"
                        summary.detail = f"weighing {k + 1} not stored: {exc}"
                        break
                    stored = StoredWeighing(digest, record)
                    summary.stored.append(stored)
                    k += 1
                if on_weight is not None:
                    on_weight(stored)
            else:
                summary.ended = "limit"
        except Disconnected as exc:
            summary.ended = "disconnected"
            summary.detail = str(exc)
        except KeyboardInterrupt:
            summary.ended = "interrupted"
            summary.detail = "interrupted (Ctrl-C)"
    if subjects is not None:
        summary.not_weighed = list(subjects[k:])
    return summary
