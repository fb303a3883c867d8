"""Scale results and the abstract scale backend shared by every protocol driver.

Design after PyLabRobot's ``pylabrobot/scales`` (scales.md, "Well-regarded patterns"): an
abstract backend with concrete drivers per protocol; the simulators in
:mod:`fibergrade.adapters.simulators` format their replies with the same protocol modules,
so the real parsers run in every test.

Stability rule (scales.md, "When a weight counts as stable"): a weight is stable when the
device flags it stable (MT ``S S`` vs ``S D``, A&D ``ST`` vs ``US``, CAS ``ST`` with lamp
bit 6, SBI non-blank unit) *and* the readings over about the last second
(``stability_window_s``) all carry that flag and span no more than one verification interval
``e``. Overload and underload are raised at once, never waited out. A weighing outside
[Min, Max] of the profile is refused, never clipped. Every :class:`Weighing` records whether
it came from the stable procedure or a single immediate reading, the scale id and the unit.

When a weighing happened (:attr:`Weighing.timestamp`) is when the reply that completed it
was read: on a live port, now (UTC); on a replayed capture, when the *live session* read
it, the capture's ``started_at`` + the captured time of that read (the last read, as the
drivers return on the reply without reading further), never the time of the replay nor the
replay's own clock, which runs ahead of the capture when the replay waits longer than the
session did (a longer interval, a raised poll interval); a capture that records no start
gives None, unknown.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from fibergrade.adapters.errors import (
    StabilityTimeout,
    UnitMismatch,
    Unstable,
    WeightOutOfRange,
)
from fibergrade.adapters.profiles import ScaleSettings
from fibergrade.adapters.transport import ReplayPort, Transport

#: relative slack when comparing a span with e (decimal values are not exact in binary)
_SPAN_SLACK = 1e-6


@dataclass(frozen=True)
class Reading:
    """One weight reply as the device sent it (no range check applied).

    ``unit`` is the unit the device sent, or None when it sent none: SBI leaves the unit
    blank on unstable readings (scales.md: "Unstable readings leave the unit blank on many
    models"), and the unit is not guessed from the profile. Such a reading can show that the
    load is moving but is never recorded as a weight (:meth:`ScaleBackend._check` raises
    :class:`Unstable`). ``gross`` is True / False when the device says gross / net (CAS
    ``GS``/``NT``), else None.
    """

    value: float
    unit: str | None
    device_stable: bool
    raw: bytes = b""
    gross: bool | None = None


@dataclass(frozen=True)
class Weighing:
    """A weight fit to store: checked against the profile's unit and [Min, Max].

    ``mode`` is ``"stable"`` for :meth:`ScaleBackend.stable_weight` (device flag and the
    one-second span rule both held) and ``"immediate"`` for
    :meth:`ScaleBackend.immediate_weight` (one reading; ``device_stable`` tells what the
    device said about it). ``span`` is the spread of the readings in the stability window
    and ``readings`` how many were taken. ``gross`` is the reading's gross/net flag: True
    for a gross weight, False for a net (tared) weight, None when the protocol does not say
    (MT-SICS and A&D replies carry no such flag). ``timestamp`` is when the scale gave the
    weight, in UTC (module docstring), None when unknown (a replay of a capture that records
    no start); it has no default, so no weighing is dated by when it was constructed.
    """

    value: float
    unit: str
    mode: Literal["stable", "immediate"]
    device_stable: bool
    scale_id: str
    protocol: str
    timestamp: datetime | None = field(kw_only=True)
    readings: int = 1
    span: float | None = None
    raw: bytes = b""
    gross: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.unit, str) or not self.unit.strip():
            raise UnitMismatch(
                f"a weighing needs the unit the device reported, got {self.unit!r}; "
                "a weight without a unit is not recorded",
                scale_id=self.scale_id,
            )

    @property
    def stable(self) -> bool:
        """True when the weight came from the stable procedure."""
        return self.mode == "stable"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (timestamp in ISO 8601 UTC or None, raw as latin-1 text)."""
        return {
            "value": self.value,
            "unit": self.unit,
            "mode": self.mode,
            "stable": self.stable,
            "device_stable": self.device_stable,
            "gross": self.gross,
            "scale_id": self.scale_id,
            "protocol": self.protocol,
            "timestamp": None if self.timestamp is None else self.timestamp.isoformat(),
            "readings": self.readings,
            "span": self.span,
            "raw": self.raw.decode("latin-1"),
        }


def split_lines(buf: bytearray) -> list[bytes]:
    """Remove and return the complete LF-terminated lines in ``buf`` (CR LF stripped).

    Used by simulators to split the host's commands (MT-SICS, A&D, CAS end them in CR LF).
    """
    out = []
    while (i := buf.find(b"\n")) >= 0:
        out.append(bytes(buf[:i]).rstrip(b"\r"))
        del buf[: i + 1]
    return out


def decimals_for(e: float) -> int:
    """Digits after the point needed to show multiples of ``e`` (0.01 -> 2, 5 -> 0)."""
    if e >= 1 and float(e).is_integer():
        return 0
    return max(0, math.ceil(-math.log10(e) - 1e-9)) if e < 1 else 1


def _recorded_scale(transport: Transport) -> str | None:
    """Under replay, the scale id the live session stored its weighings with (the capture
    header's ``scale_id``, else the port ``url`` it was recorded from), so that a replay
    stores the same id as the live session did rather than the capture file's path; None
    for a live port or a capture that records neither."""
    meta = transport.capture_meta or {}
    for key in ("scale_id", "url"):
        value = meta.get(key)
        if isinstance(value, str) and value:
            return value
    return None


class ScaleBackend(ABC):
    """A scale driver: protocol primitives in subclasses, the weighing rules here.

    ``transport`` carries the bytes; ``settings`` (from the profile) give unit, Max, Min, e
    and the timing; ``scale_id`` is recorded in every :class:`Weighing` (default: the
    profile's ``scale.id``, else the port name).
    """

    #: protocol name as in profiles (``mt-sics``, ``sbi``, ``and``, ``cas``)
    protocol: ClassVar[str] = ""
    #: reply lines end in CR LF: scales.md gives "CR LF" for MT-SICS, SBI ("3 unit
    #: characters, CR LF") and A&D ("`ST,+00123.45  g` CR LF") and says to "check the
    #: terminator yourself"; a line ended by a lone LF is then a FrameError
    #: (:meth:`Transport.read_line`). CAS frames are read as fixed 22-byte frames instead.
    crlf: ClassVar[bool] = True

    def __init__(
        self, transport: Transport, settings: ScaleSettings, *, scale_id: str | None = None
    ) -> None:
        self.transport = transport
        self.settings = settings
        self.scale_id = scale_id or settings.id or _recorded_scale(transport) or transport.name
        #: the scale id was named (``scale_id`` or the profile's ``scale.id``), not the
        #: port's name, a default that names no scale and differs between a live session,
        #: its replay and a copy of its capture
        self.scale_id_named = bool(scale_id or settings.id)

    # ------------------------------------------------------------------ primitives
    @abstractmethod
    def read_immediate(self) -> Reading:
        """One reading now, with the device's stability flag (no range check)."""

    @abstractmethod
    def zero(self) -> None:
        """Set zero. Raises a typed error when the device refuses."""

    @abstractmethod
    def tare(self) -> Reading | None:
        """Tare; the tare weight when the protocol reports it, else None."""

    # ------------------------------------------------------------------ helpers
    @property
    def _ctx(self) -> dict[str, str | None]:
        return {"scale_id": self.scale_id, "source": self.transport.name}

    def _command_line(self, command: bytes, *, immediate: bytes = b"") -> bytes:
        """Discard stale input, send ``command``, return the reply line."""
        self.transport.discard_input()
        self.transport.write(command)
        return self.transport.read_line(
            self.settings.reply_timeout_s, immediate=immediate, require_cr=self.crlf
        )

    def _reply_time(self) -> datetime | None:
        """When the reply just read was completed (module docstring): now (UTC) on a live
        port; for a replay, the capture's ``started_at`` + the captured time of the last
        read, the one that completed the reply (:meth:`ReplayPort.wall_time`); None when
        the capture records no start."""
        port = self.transport.port
        if isinstance(port, ReplayPort):
            return port.wall_time()
        return datetime.now(UTC)

    def _check(self, reading: Reading) -> None:
        s = self.settings
        if reading.unit is None:
            raise Unstable(
                f"the reading ({reading.value:g}) carries no unit: the device leaves it blank "
                "while the weight is not stable (SBI, scales.md), and a weight without its "
                "unit is not recorded; wait for a stable weight",
                **self._ctx,
            )
        if reading.unit != s.unit:
            raise UnitMismatch(
                f"device reports unit {reading.unit!r}, the profile declares {s.unit!r}; "
                "set the scale's unit or use the matching profile",
                **self._ctx,
            )
        if not (s.min <= reading.value <= s.max):
            raise WeightOutOfRange(reading.value, reading.unit, s.min, s.max, **self._ctx)

    # ------------------------------------------------------------------ weighing
    def immediate_weight(self) -> Weighing:
        """One immediate reading, checked (unit, [Min, Max]), recorded as ``immediate``."""
        r = self.read_immediate()
        at = self._reply_time()
        self._check(r)
        return Weighing(
            value=r.value,
            unit=r.unit,
            mode="immediate",
            device_stable=r.device_stable,
            scale_id=self.scale_id,
            protocol=self.protocol,
            timestamp=at,
            raw=r.raw,
            gross=r.gross,
        )

    def stable_weight(
        self,
        *,
        timeout_s: float | None = None,
        window_s: float | None = None,
        poll_s: float | None = None,
    ) -> Weighing:
        """Poll immediate readings until the stability rule holds (module docstring).

        Defaults come from the profile (``stability_timeout_s``, ``stability_window_s``,
        ``poll_interval_s``). Raises :class:`StabilityTimeout` when the rule does not hold
        within the timeout; :class:`~fibergrade.adapters.errors.Overload` and the other
        device errors at once; :class:`WeightOutOfRange` / :class:`UnitMismatch` for a
        stable weight the profile refuses.
        """
        s = self.settings
        timeout = s.stability_timeout_s if timeout_s is None else timeout_s
        window = s.stability_window_s if window_s is None else window_s
        poll = s.poll_interval_s if poll_s is None else poll_s
        clock = self.transport.clock
        deadline = clock() + timeout
        win: deque[tuple[float, Reading]] = deque()
        total = 0
        while True:
            r = self.read_immediate()
            t = clock()
            at = self._reply_time()
            total += 1
            if not r.device_stable:
                win.clear()
            else:
                win.append((t, r))
                # keep the shortest run of readings that still covers the window
                while len(win) >= 2 and t - win[1][0] >= window:
                    win.popleft()
                if len(win) >= 2 and t - win[0][0] >= window:
                    values = [x.value for _, x in win]
                    span = max(values) - min(values)
                    # one unit and one gross/net state over the window: a tare or a unit
                    # switch inside it means the readings are not of one weight
                    same = len({(x.unit, x.gross) for _, x in win}) == 1
                    if span <= s.e * (1 + _SPAN_SLACK) and same:
                        self._check(r)
                        return Weighing(
                            value=r.value,
                            unit=r.unit,
                            mode="stable",
                            device_stable=True,
                            scale_id=self.scale_id,
                            protocol=self.protocol,
                            timestamp=at,
                            readings=total,
                            span=span,
                            raw=r.raw,
                            gross=r.gross,
                        )
            if clock() >= deadline:
                spread: float | None = None
                if win:
                    values = [x.value for _, x in win]
                    spread = max(values) - min(values)
                    if spread > s.e * (1 + _SPAN_SLACK):
                        why = (
                            f"the device reports stable but readings span {spread:g} "
                            f"{win[-1][1].unit}, more than e = {s.e:g}"
                        )
                    else:
                        why = f"stable readings did not yet cover the {window:g} s window"
                else:
                    why = "the device never reported a stable reading (drifting load?)"
                raise StabilityTimeout(
                    f"no stable weight within {timeout:g} s: {why}",
                    span=spread,
                    device_stable=bool(win),
                    **self._ctx,
                )
            self.transport.sleep(poll)

    def close(self) -> None:
        """Close the transport."""
        self.transport.close()

    def __enter__(self) -> ScaleBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
