"""The fibergrade live line protocol for fibre analysers, and its reader.

No vendor streaming format is public (``shared/reference/fibre.md``, "Instruments"), so the
project defines its own. An analyser streams one ASCII line per measured fibre snippet and
one line closing each sample::

    M,<sample_id>,<index>,<diameter_um>[,<curvature_deg_mm>]*<CK>CR LF
    E,<sample_id>,<count>*<CK>CR LF

* ``sample_id``: 1-32 characters ``A-Z a-z 0-9 . _ -``, starting with a letter or digit.
* ``index``: 1, 2, 3, ... within the sample, with no gap and no repeat.
* ``diameter_um``: decimal with a point, up to 3 integer and 4 fractional digits, in
  micrometres; must pass :func:`fibergrade.measurements.diameter_problem` (0 < d <= 200 um).
* ``curvature_deg_mm``: optional, decimal, 0 to 9999.999 deg/mm; either every line of a
  sample carries it or none does.
* ``count``: the number of ``M`` lines of the sample.
* ``CK``: two hexadecimal digits (either case), the XOR of every byte from the first
  character of the line up to, not including, ``*`` (as NMEA 0183 does after ``$``).
* Lines end with CR LF; a lone LF is accepted. A line longer than ``max_line_bytes`` is
  garbage. Example: ``M,S-001,1,15.62,48.3*0C``.

What the reader makes of it (:class:`AnalyserReader`):

* A sample is delivered whole, as :class:`Sample` (float32 arrays), once its ``E`` line
  arrives with the right count. It is an error *for that sample* (a typed
  :class:`~fibergrade.adapters.errors.SampleError` naming the sample and the stream line)
  when, while it is open, a line has a bad checksum or is garbled, an index is missing,
  repeated or out of order, a value is impossible, the end line's count disagrees, or the
  end line is missing (no line within ``line_timeout_s``, or the next sample starts: a line
  of another sample id, or index 1 again). A sample whose first line seen is not index 1
  (its start was lost) is an index-gap error too.
* A partial sample is never delivered: the error reports how many lines it had. After an
  error the reader skips the remaining lines of that sample (up to its end line or the start
  of another sample), then carries on with the next sample.
* Garbage between samples concerns no sample; it is recorded in
  :attr:`AnalyserReader.discarded` and skipped. (A garbled first line of a sample still
  surfaces, as an index-gap error of that sample.)
* Timeouts and disconnections propagate as
  :class:`~fibergrade.adapters.errors.InstrumentTimeout` (only while no sample is open) and
  :class:`~fibergrade.adapters.errors.Disconnected`; :attr:`AnalyserReader.partial` then
  tells which sample was cut short (also after Ctrl-C).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import reduce
from operator import xor
from pathlib import Path
from typing import Any

import numpy as np

from fibergrade.adapters.errors import (
    FrameError,
    InstrumentTimeout,
    ProfileError,
    SampleChecksumError,
    SampleCountMismatchError,
    SampleError,
    SampleFrameError,
    SampleIncompleteError,
    SampleIndexGapError,
    SampleValueError,
)
from fibergrade.adapters.profiles import Profile
from fibergrade.adapters.transport import Transport, open_transport
from fibergrade.measurements import FibreLots, diameter_problem

PROTOCOL = "fibergrade-line"
EOL = b"\r\n"
#: largest curvature the protocol can carry, deg/mm (wool is 70-150, fibre.md)
CURVATURE_MAX_DEG_MM = 9999.999

_ID = rb"[A-Za-z0-9][A-Za-z0-9._-]{0,31}"
_FRAME_RE = re.compile(rb"^(?P<body>[ -)+-~]{1,250})\*(?P<ck>[0-9A-Fa-f]{2})$")
_M_RE = re.compile(
    rb"^M,(?P<id>" + _ID + rb"),(?P<idx>[1-9][0-9]{0,8}),(?P<d>[0-9]{1,3}(?:\.[0-9]{1,4})?)"
    rb"(?:,(?P<c>[0-9]{1,4}(?:\.[0-9]{1,3})?))?$"
)
_E_RE = re.compile(rb"^E,(?P<id>" + _ID + rb"),(?P<n>0|[1-9][0-9]{0,8})$")
_ID_ONLY_RE = re.compile(rb"^" + _ID + rb"$")


def checksum(body: bytes) -> int:
    """XOR of the bytes of ``body`` (everything before ``*``)."""
    return reduce(xor, body, 0)


def _frame(body: bytes) -> bytes:
    return body + b"*%02X" % checksum(body) + EOL


def format_measurement(
    sample_id: str,
    index: int,
    diameter_um: float,
    curvature_deg_mm: float | None = None,
    *,
    decimals: int = 2,
) -> bytes:
    """One ``M`` line, CR LF included."""
    if not _ID_ONLY_RE.match(sample_id.encode("ascii", "replace")):
        raise ValueError(f"sample id {sample_id!r} is not allowed by the protocol")
    body = f"M,{sample_id},{index},{diameter_um:.{decimals}f}"
    if curvature_deg_mm is not None:
        body += f",{curvature_deg_mm:.1f}"
    return _frame(body.encode("ascii"))


def format_end(sample_id: str, count: int) -> bytes:
    """The ``E`` line closing a sample, CR LF included."""
    return _frame(f"E,{sample_id},{count}".encode("ascii"))


def format_sample(
    sample_id: str, diameter_um: Iterable[float], curvature_deg_mm: Iterable[float] | None = None
) -> list[bytes]:
    """Every line of one sample: the ``M`` lines and the ``E`` line."""
    d = list(diameter_um)
    c = list(curvature_deg_mm) if curvature_deg_mm is not None else [None] * len(d)
    lines = [
        format_measurement(sample_id, i, x, y) for i, (x, y) in enumerate(zip(d, c, strict=True), 1)
    ]
    lines.append(format_end(sample_id, len(d)))
    return lines


@dataclass(frozen=True)
class MeasurementLine:
    """A parsed ``M`` line."""

    sample_id: str
    index: int
    diameter_um: float
    curvature_deg_mm: float | None


@dataclass(frozen=True)
class EndLine:
    """A parsed ``E`` line."""

    sample_id: str
    count: int


def parse_line(line: bytes, line_no: int | None = None) -> MeasurementLine | EndLine:
    """Parse one line (without CR LF). Checks syntax and checksum only.

    Raises :class:`SampleChecksumError` (naming the sample when the body says which) or
    :class:`SampleFrameError`. Value limits are checked by the reader.
    """
    m = _FRAME_RE.match(line)
    if not m:
        raise SampleFrameError(None, line_no, "not a protocol line", line=line[:80])
    body = m["body"]
    mm = _M_RE.match(body)
    em = None if mm else _E_RE.match(body)
    if int(m["ck"], 16) != checksum(body):
        who = (mm or em)["id"].decode("ascii") if (mm or em) else None
        raise SampleChecksumError(
            who,
            line_no,
            f"checksum {m['ck'].decode()} != computed {checksum(body):02X}",
            line=line[:80],
        )
    if mm:
        c = mm["c"]
        return MeasurementLine(
            mm["id"].decode("ascii"),
            int(mm["idx"]),
            float(mm["d"]),
            float(c) if c is not None else None,
        )
    if em:
        return EndLine(em["id"].decode("ascii"), int(em["n"]))
    raise SampleFrameError(None, line_no, "not an M or E line", line=line[:80])


@dataclass(frozen=True, eq=False)
class Sample:
    """A completed sample: one diameter (and optionally one curvature) per fibre snippet.

    ``lines`` is the (first, last) 1-based line number of the sample in the stream, the end
    line included; ``raw`` the sample's lines as received (CR LF added back).
    """

    sample_id: str
    diameter_um: np.ndarray  # float32[n]
    curvature_deg_mm: np.ndarray | None  # float32[n]
    lines: tuple[int, int]
    raw: bytes = field(default=b"", repr=False)

    @property
    def n(self) -> int:
        """Number of fibre snippets."""
        return int(self.diameter_um.size)

    def to_fibre_lots(self, lot_id: str | None = None) -> FibreLots:
        """A one-lot :class:`FibreLots` (lot id defaults to the sample id)."""
        return FibreLots(
            lot_ids=(lot_id or self.sample_id,),
            offsets=np.array([0, self.n], dtype=np.int64),
            diameter_um=self.diameter_um,
            curvature_deg_mm=self.curvature_deg_mm,
        )


@dataclass(frozen=True)
class PartialSample:
    """The sample in progress: what an interrupted acquisition reports."""

    sample_id: str
    received: int
    first_line: int
    last_line: int
    mean_diameter_um: float


class _Open:
    __slots__ = ("curv", "diam", "first", "has_curv", "last", "raw", "sample_id", "total")

    def __init__(self, sample_id: str, first: int, has_curv: bool) -> None:
        self.sample_id = sample_id
        self.first = first
        self.last = first
        self.has_curv = has_curv
        self.diam: list[float] = []
        self.curv: list[float] = []
        self.raw: list[bytes] = []
        self.total = 0.0


class AnalyserReader:
    """Reads :class:`Sample` objects from a transport (protocol in the module docstring).

    ``line_timeout_s``: longest silence allowed inside a sample before it counts as
    missing its end line. ``keep_raw``: keep each sample's lines in ``Sample.raw``.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        line_timeout_s: float = 5.0,
        keep_raw: bool = True,
    ) -> None:
        transport.check_capture("analyser", PROTOCOL)  # a replayed scale session is refused
        self.transport = transport
        self.line_timeout_s = line_timeout_s
        self.keep_raw = keep_raw
        #: stream lines read so far
        self.lines_read = 0
        #: garbage lines outside any sample: (line number, bytes)
        self.discarded: list[tuple[int, bytes]] = []
        #: called after each stream line is read, before it is parsed (live progress
        #: displays read :attr:`partial` and :attr:`lines_read` from it); may raise, e.g.
        #: ``KeyboardInterrupt``, which propagates out of :meth:`read_sample`
        self.on_line: Callable[[], None] | None = None
        self._open: _Open | None = None
        self._skipping: str | None = None
        self._pending: tuple[int, bytes] | None = None

    @classmethod
    def open(
        cls,
        profile: Profile,
        url: str,
        *,
        record_to: str | Path | None = None,
        meta: dict[str, Any] | None = None,
    ) -> AnalyserReader:
        """Open ``url`` with an analyser profile's serial settings."""
        if profile.kind != "analyser" or profile.analyser is None:
            raise ProfileError(str(profile.path), "instrument.kind", "is not an analyser profile")
        transport = open_transport(
            url,
            profile.serial,
            record_to=record_to,
            meta={
                "kind": profile.kind,
                "profile": profile.name,
                "protocol": profile.protocol,
                **(meta or {}),
            },
            max_line=profile.analyser.max_line_bytes,
        )
        return cls(transport, line_timeout_s=profile.analyser.line_timeout_s)

    @property
    def partial(self) -> PartialSample | None:
        """The sample in progress, if any."""
        o = self._open
        if o is None:
            return None
        n = len(o.diam)
        return PartialSample(o.sample_id, n, o.first, o.last, o.total / n if n else math.nan)

    # ------------------------------------------------------------------ internals
    def _next_line(self, timeout_s: float) -> tuple[int, bytes]:
        """(line number, bytes); a line too long comes back as its first bytes (garbage)."""
        if self._pending is not None:
            p, self._pending = self._pending, None
            return p
        try:
            line = self.transport.read_line(timeout_s)
        except FrameError as exc:
            line = exc.frame or b"?"
        self.lines_read += 1
        if self.on_line is not None:
            self.on_line()
        return self.lines_read, line

    def _fail(
        self, cls: type[SampleError], line_no: int, reason: str, line: bytes = b""
    ) -> SampleError:
        o = self._open
        assert o is not None
        self._open = None
        self._skipping = o.sample_id
        return cls(
            o.sample_id,
            line_no,
            reason,
            received=len(o.diam),
            line=line[:80],
            source=self.transport.name,
        )

    def _finish(self, o: _Open, last: int) -> Sample:
        d = np.array(o.diam, dtype=np.float32)
        c = np.array(o.curv, dtype=np.float32) if o.has_curv else None
        raw = b"".join(x + EOL for x in o.raw) if self.keep_raw else b""
        return Sample(o.sample_id, d, c, (o.first, last), raw)

    # ------------------------------------------------------------------ public
    def read_sample(self, timeout_s: float | None = None) -> Sample:
        """The next complete sample.

        ``timeout_s`` bounds the wait for a sample's first line (default
        ``line_timeout_s``); inside a sample each line must come within ``line_timeout_s``.
        Raises :class:`SampleError` subclasses for a bad sample (the reader stays usable),
        :class:`InstrumentTimeout` when no sample starts in time, and
        :class:`~fibergrade.adapters.errors.Disconnected`.
        """
        first_wait = self.line_timeout_s if timeout_s is None else timeout_s
        while True:
            o = self._open
            wait = first_wait if o is None else self.line_timeout_s
            try:
                line_no, line = self._next_line(wait)
            except InstrumentTimeout:
                if o is None:
                    raise
                raise self._fail(
                    SampleIncompleteError,
                    self.lines_read,
                    f"no line within {self.line_timeout_s:g} s after line {o.last}",
                ) from None
            try:
                parsed = parse_line(line, line_no)
            except SampleError as exc:
                if self._open is not None:
                    raise self._fail(type(exc), line_no, exc.reason, line) from None
                if self._skipping is None:
                    self.discarded.append((line_no, line))
                continue

            if self._skipping is not None:
                same = parsed.sample_id == self._skipping
                restart = isinstance(parsed, MeasurementLine) and parsed.index == 1
                if same and not restart:
                    if isinstance(parsed, EndLine):
                        self._skipping = None
                    continue
                self._skipping = None

            if isinstance(parsed, MeasurementLine):
                if o is None:
                    if parsed.index != 1:
                        self._skipping = parsed.sample_id
                        raise SampleIndexGapError(
                            parsed.sample_id,
                            line_no,
                            f"first line seen has index {parsed.index}, expected 1 "
                            "(the start of the sample was lost)",
                            line=line[:80],
                            source=self.transport.name,
                        )
                    o = self._open = _Open(
                        parsed.sample_id, line_no, parsed.curvature_deg_mm is not None
                    )
                elif parsed.sample_id != o.sample_id or parsed.index == 1:
                    self._pending = (line_no, line)
                    raise self._fail(
                        SampleIncompleteError,
                        line_no,
                        f"sample {parsed.sample_id!r} started before the end line "
                        f"(last line {o.last})",
                    )
                expected = len(o.diam) + 1
                if parsed.index != expected:
                    raise self._fail(
                        SampleIndexGapError,
                        line_no,
                        f"index {parsed.index}, expected {expected}",
                        line,
                    )
                if (parsed.curvature_deg_mm is not None) != o.has_curv:
                    raise self._fail(
                        SampleFrameError,
                        line_no,
                        "curvature present on some lines of the sample only",
                        line,
                    )
                problem = diameter_problem(parsed.diameter_um)
                if problem:
                    raise self._fail(
                        SampleValueError,
                        line_no,
                        f"fibre {parsed.index}: diameter {parsed.diameter_um!r} um {problem}",
                        line,
                    )
                o.diam.append(parsed.diameter_um)
                o.total += parsed.diameter_um
                if o.has_curv:
                    o.curv.append(parsed.curvature_deg_mm)  # type: ignore[arg-type]
                if self.keep_raw:
                    o.raw.append(line)
                o.last = line_no
                continue

            # end line
            if o is None:
                self._skipping = None
                if parsed.count == 0:
                    raise SampleCountMismatchError(
                        parsed.sample_id,
                        line_no,
                        "empty sample (count 0)",
                        line=line[:80],
                        source=self.transport.name,
                    )
                raise SampleIncompleteError(
                    parsed.sample_id,
                    line_no,
                    f"end line (count {parsed.count}) without any measurement line",
                    line=line[:80],
                    source=self.transport.name,
                )
            if parsed.sample_id != o.sample_id:
                raise self._fail(
                    SampleIncompleteError,
                    line_no,
                    f"end line names sample {parsed.sample_id!r}",
                    line,
                )
            if parsed.count != len(o.diam):
                err = self._fail(
                    SampleCountMismatchError,
                    line_no,
                    f"end line says {parsed.count} fibres, {len(o.diam)} received",
                    line,
                )
                self._skipping = None  # the end line closed it
                raise err
            if self.keep_raw:
                o.raw.append(line)
            self._open = None
            return self._finish(o, line_no)

    def samples(
        self,
        *,
        idle_timeout_s: float | None = None,
        on_error: Callable[[SampleError], None] | None = None,
    ) -> Iterator[Sample]:
        """Completed samples as they arrive.

        Stops quietly when no sample starts within ``idle_timeout_s`` (None: wait for ever).
        With ``on_error``, bad samples are passed to it and reading goes on; without, the
        first :class:`SampleError` propagates. Disconnection always propagates.
        """
        while True:
            try:
                yield self.read_sample(
                    timeout_s=idle_timeout_s if idle_timeout_s is not None else 3600.0
                )
            except InstrumentTimeout:
                if idle_timeout_s is not None:
                    return
            except SampleError as exc:
                if on_error is None:
                    raise
                on_error(exc)

    def close(self) -> None:
        """Close the transport."""
        self.transport.close()

    def __enter__(self) -> AnalyserReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
