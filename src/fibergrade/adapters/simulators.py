"""Simulated instruments served on a real pty or a loopback TCP port, with fault injection.

The simulators share the protocol code with the drivers: every reply is formatted by the
same protocol module the parser lives in (:mod:`.scales.mtsics`, :mod:`.scales.sbi`,
:mod:`.scales.aandd`, :mod:`.scales.cas`, :mod:`.analyser`), so the real parsers run in
every test (scales.md, "Well-regarded patterns").

Endpoints (scales.md, "pyserial without hardware"):

* a pty pair: the master side, in raw mode, belongs to the simulator; clients open the slave
  path (:attr:`Simulator.url`) with pyserial like any serial device. The simulator does not
  keep the slave open, so it sees a client come and go (the master polls ``POLLHUP`` while no
  one has the slave open) and never writes into a pty nobody reads.
* a TCP port on 127.0.0.1 only; clients use ``socket://127.0.0.1:PORT``. One client at a
  time.

Faults (:class:`Faults`, :func:`parse_faults` for the CLI's ``--faults`` text):

=================  =============================================================
``noise=P``        with probability P, 1-4 random bytes before a frame
``drop=P``         with probability P, a frame is not sent
``truncate=P``     with probability P, a frame is cut short (its CR LF kept)
``bad-checksum=P`` analyser: with probability P, a line's checksum is wrong
``unplug-after=N`` N frames go out whole, then the adapter is "unplugged" when the next
                   frame is due: the pty master or the TCP connection is closed
                   mid-stream and the simulator stops (closing at once after frame N
                   would race the client's read of it: a pty hangup discards unread input)
``overload``       scale: the load is far above Max
``underload``      scale: the pan is off (load far below zero)
``drift``          scale: the weight wanders and the device never reports it stable
``jitter``         scale: the device reports stable, but readings alternate +-2 e
``slow=S``         every frame is delayed by S seconds
``seed=N``         seed of the fault and data random generators (default 0)
=================  =============================================================

A flag given without a value takes its default: P = 0.05, N = 100, S = 0.5.

Typical use (what ``fibergrade simulate`` does)::

    sim = start_simulator("scale", "mt-sics", faults=parse_faults("drift"))
    print(sim.url)          # the CLI prints; the library never does
    sim.serve_forever()     # until Ctrl-C (then sim.stop()) or an unplug fault
"""

from __future__ import annotations

import abc
import contextlib
import math
import os
import random
import select
import socket
import threading
import time
import tty
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np

from fibergrade.adapters import analyser
from fibergrade.adapters.errors import FaultSpecError, ProfileError, SimulatorSettingError
from fibergrade.adapters.profiles import Profile, ScaleSettings, load_profile
from fibergrade.adapters.scales import aandd, cas, mtsics, sbi
from fibergrade.adapters.scales.base import decimals_for

# --------------------------------------------------------------------------- faults


@dataclass(frozen=True)
class Faults:
    """Faults a simulator injects (table in the module docstring)."""

    noise: float = 0.0
    drop: float = 0.0
    truncate: float = 0.0
    bad_checksum: float = 0.0
    unplug_after: int | None = None
    overload: bool = False
    underload: bool = False
    drift: bool = False
    jitter: bool = False
    slow_s: float = 0.0
    seed: int = 0


#: CLI name -> (field, kind, default when given as a bare flag)
_FAULT_SPEC: dict[str, tuple[str, str, Any]] = {
    "noise": ("noise", "p", 0.05),
    "drop": ("drop", "p", 0.05),
    "truncate": ("truncate", "p", 0.05),
    "bad-checksum": ("bad_checksum", "p", 0.05),
    "unplug-after": ("unplug_after", "n", 100),
    "overload": ("overload", "flag", True),
    "underload": ("underload", "flag", True),
    "drift": ("drift", "flag", True),
    "jitter": ("jitter", "flag", True),
    "slow": ("slow_s", "s", 0.5),
    "seed": ("seed", "n", 0),
}
FAULT_NAMES = tuple(_FAULT_SPEC)


def parse_faults(spec: str | Iterable[str] | None) -> Faults:
    """``"noise=0.1,drift,unplug-after=50"`` (or a list of such items) -> :class:`Faults`.

    Raises :class:`FaultSpecError` for an unknown name or a bad value.
    """
    if spec is None:
        return Faults()
    items = [spec] if isinstance(spec, str) else list(spec)
    values: dict[str, Any] = {}
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            name, _, text = part.partition("=")
            name = name.strip().lower().replace("_", "-")
            if name not in _FAULT_SPEC:
                raise FaultSpecError(
                    f"unknown fault {name!r}; known faults: " + ", ".join(FAULT_NAMES)
                )
            fld, kind, default = _FAULT_SPEC[name]
            text = text.strip()
            if not text:
                values[fld] = default
                continue
            try:
                if kind == "p":
                    v: Any = float(text)
                    if not 0.0 <= v <= 1.0:
                        raise ValueError
                elif kind == "n":
                    v = int(text)
                    if v < 0:
                        raise ValueError
                elif kind == "s":
                    v = float(text)
                    if not (v >= 0 and math.isfinite(v)):
                        raise ValueError
                else:
                    v = {
                        "1": True,
                        "true": True,
                        "yes": True,
                        "0": False,
                        "false": False,
                        "no": False,
                    }[text.lower()]
            except (ValueError, KeyError):
                want = {
                    "p": "a probability 0..1",
                    "n": "a whole number >= 0",
                    "s": "seconds >= 0",
                    "flag": "true or false",
                }[kind]
                raise FaultSpecError(f"fault {name}={text!r}: expected {want}") from None
            values[fld] = v
    faults = Faults(**values)
    if faults.overload and faults.underload:
        raise FaultSpecError("faults overload and underload exclude each other")
    return faults


class FaultInjector:
    """Applies the frame-level faults (noise, drop, truncate, unplug) to outgoing frames."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self.rng = random.Random(faults.seed)
        self.frames = 0

    def transform(self, frame: bytes) -> bytes | None:
        """The bytes to send for ``frame`` (None: dropped)."""
        f, rng = self.faults, self.rng
        self.frames += 1
        if f.drop and rng.random() < f.drop:
            return None
        if f.truncate and len(frame) > 3 and rng.random() < f.truncate:
            body = frame[:-2] if frame.endswith(b"\r\n") else frame
            frame = body[: rng.randrange(1, max(2, len(body)))] + b"\r\n"
        if f.noise and rng.random() < f.noise:
            noise = bytes(
                rng.choice([b for b in range(256) if b != 0x0A]) for _ in range(rng.randint(1, 4))
            )
            frame = noise + frame
        return frame

    @property
    def unplug_due(self) -> bool:
        """True once ``unplug_after`` frames have gone out."""
        n = self.faults.unplug_after
        return n is not None and self.frames >= n


# --------------------------------------------------------------------------- devices


class SimulatedDevice:
    """What a simulated instrument does with bytes; the :class:`Simulator` does the I/O."""

    #: True when the device has nothing more to send, ever (a finite analyser run)
    finished: bool = False

    def on_connect(self, now: float) -> None:
        """A client opened the port."""

    def on_disconnect(self, now: float) -> None:
        """The client went away."""

    def on_bytes(self, data: bytes, now: float) -> list[bytes]:
        """Frames to send in reply to ``data`` from the host."""
        return []

    def poll(self, now: float) -> list[bytes]:
        """Frames the device sends on its own (streaming)."""
        return []

    def next_due(self, now: float) -> float | None:
        """Seconds until :meth:`poll` has something to send (None: nothing planned)."""
        return None


def load_problem(load: float) -> str | None:
    """Why ``load`` (gross, in the scale's unit) cannot be put on a simulated pan, or None.

    A load is a finite number >= 0: NaN or an infinity has no reading (it used to kill the
    simulator at the first command), and a pan lifted off is the ``underload`` fault, not a
    negative load. A load above Max is allowed: the scale then reports overload."""
    try:
        x = float(load)
    except (TypeError, ValueError):
        return f"{load!r} is not a number"
    if not math.isfinite(x):
        return f"{x!r} is not a finite weight"
    if x < 0:
        return f"{x:g} is negative; a gross load on the pan is >= 0 (use the underload fault)"
    return None


def _checked_load(load: float) -> float:
    problem = load_problem(load)
    if problem is not None:
        raise SimulatorSettingError(f"load {problem}")
    return float(load)


class SimulatedBalance:
    """The physics of a simulated scale: load, settling, zero, tare and the weighing faults.

    Thread-safe: tests change the load (:meth:`set_load`) while the simulator answers.
    A new load is dynamic for ``settle_s`` while the reading approaches it. The display
    shows net = gross - zero - tare rounded to ``e``. Overload above Max + 9 e; underload
    below -5 % of Max; zero allowed within +-2 % of Max (the project's simulator choices).
    """

    def __init__(
        self,
        settings: ScaleSettings,
        *,
        load: float | None = None,
        settle_s: float = 0.3,
        faults: Faults | None = None,
        serial_number: str = "SIM0000001",
    ) -> None:
        self.unit = settings.unit
        self.max = settings.max
        self.e = settings.e
        self.decimals = decimals_for(settings.e)
        self.settle_s = settle_s
        self.faults = faults or Faults()
        self.serial_number = serial_number
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        target = round(0.2 * self.max / self.e) * self.e if load is None else _checked_load(load)
        self._target = target
        self._from = target
        self._t_change = -math.inf
        self.zero_offset = 0.0
        self.tare_weight = 0.0
        self._n = 0

    def set_load(self, load: float) -> None:
        """Put ``load`` (gross, in the scale's unit) on the pan; the reading settles.
        A load :func:`load_problem` refuses raises :class:`SimulatorSettingError`."""
        load = _checked_load(load)
        now = time.monotonic()
        with self._lock:
            self._from, _ = self._gross(now)
            self._target = load
            self._t_change = now

    def _gross(self, now: float) -> tuple[float, bool]:
        f = self.faults
        if f.overload:
            return self.max + 100 * self.e, True
        if f.underload:
            return -0.1 * self.max, True
        dt = now - self._t_change
        if dt < self.settle_s:
            g = self._target + (self._from - self._target) * math.exp(-4 * dt / self.settle_s)
            settled = False
        else:
            g, settled = self._target, True
        if f.drift:
            g += 30 * self.e * math.sin(2 * math.pi * (now - self._t0) / 20.0) + 3 * self.e
            settled = False
        return g, settled

    def _round(self, x: float) -> float:
        return round(round(x / self.e) * self.e, self.decimals)

    def reading(self, now: float | None = None) -> tuple[str, float]:
        """(``stable`` | ``dynamic`` | ``overload`` | ``underload``, displayed net value)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            g, settled = self._gross(now)
            self._n += 1
            if g > self.max + 9 * self.e:
                return "overload", 0.0
            if g < -0.05 * self.max:
                return "underload", 0.0
            net = g - self.zero_offset - self.tare_weight
            if self.faults.jitter:
                net += 2 * self.e if self._n % 2 else -2 * self.e
            return ("stable" if settled else "dynamic"), self._round(net)

    def zero(self, now: float | None = None) -> str:
        """``ok``, ``busy`` (not stable), ``range`` (outside +-2 % Max) or ``overload``."""
        now = time.monotonic() if now is None else now
        with self._lock:
            g, settled = self._gross(now)
            if g > self.max + 9 * self.e or g < -0.05 * self.max:
                return "overload"
            if not settled or self.faults.jitter:
                return "busy"
            if abs(g) > 0.02 * self.max:
                return "range"
            self.zero_offset = g
            self.tare_weight = 0.0
            return "ok"

    def tare(self, now: float | None = None) -> tuple[str, float]:
        """(``ok`` | ``busy`` | ``range``, tare weight stored)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            g, settled = self._gross(now)
            if not settled or self.faults.jitter:
                return "busy", 0.0
            net = g - self.zero_offset
            if not 0 < net <= self.max:
                return "range", 0.0
            self.tare_weight = net
            return "ok", self._round(net)

    def clear_tare(self) -> None:
        """Forget the tare."""
        with self._lock:
            self.tare_weight = 0.0


class ScaleSimulator(SimulatedDevice, abc.ABC):
    """A scale answering commands; subclasses speak one protocol with its module's code."""

    protocol: ClassVar[str] = ""

    def __init__(self, balance: SimulatedBalance, *, device_id: int = 1) -> None:
        self.balance = balance
        self.device_id = device_id
        self._buf = bytearray()

    def split(self, buf: bytearray) -> list[bytes]:
        """Complete commands in ``buf`` (removed from it)."""
        return mtsics.split_commands(buf)

    @abc.abstractmethod
    def respond(self, command: bytes, now: float) -> list[bytes]:
        """Frames answering one command (each scale protocol's simulator defines it)."""

    def on_bytes(self, data: bytes, now: float) -> list[bytes]:
        self._buf += data
        if len(self._buf) > 4096:  # a host sending garbage without terminators
            del self._buf[:-64]
        out: list[bytes] = []
        for cmd in self.split(self._buf):
            out.extend(self.respond(cmd, now))
        return out


class MtSicsSimulator(ScaleSimulator):
    """MT-SICS balance: ``S``, ``SI``, ``Z``, ``T``, ``TAC``, ``I4``, ``@``."""

    protocol = mtsics.PROTOCOL

    def respond(self, command: bytes, now: float) -> list[bytes]:
        b = self.balance
        try:
            text = command.decode("ascii").strip()
        except UnicodeDecodeError:
            return [mtsics.format_error("ET")]
        if not text:
            return []
        name = text.split()[0]
        if name in ("S", "SI"):
            state, v = b.reading(now)
            if state == "overload":
                return [mtsics.format_status("S", "+")]
            if state == "underload":
                return [mtsics.format_status("S", "-")]
            if name == "S" and state != "stable":
                return [mtsics.format_status("S", "I")]  # stability timeout
            st = "S" if state == "stable" else "D"
            return [mtsics.format_weight("S", st, v, b.unit, b.decimals)]
        if name == "Z":
            res = b.zero(now)
            code = {"ok": "A", "busy": "I", "range": "+", "overload": "+"}[res]
            return [mtsics.format_status("Z", code)]
        if name == "T":
            res, tare = b.tare(now)
            if res == "ok":
                return [mtsics.format_weight("T", "S", tare, b.unit, b.decimals)]
            return [mtsics.format_status("T", "I" if res == "busy" else "+")]
        if name == "TAC":
            b.clear_tare()
            return [mtsics.format_status("TAC", "A")]
        if name in ("I4", "@"):
            return [mtsics.format_text("I4", b.serial_number)]
        return [mtsics.format_error("ES")]


class SbiSimulator(ScaleSimulator):
    """Sartorius SBI balance: ``ESC P`` prints, ``ESC T/U/V`` tare/zero without reply."""

    protocol = sbi.PROTOCOL

    def __init__(
        self, balance: SimulatedBalance, *, device_id: int = 1, ident: str | None = None
    ) -> None:
        super().__init__(balance, device_id=device_id)
        self.ident = ident

    def split(self, buf: bytearray) -> list[bytes]:
        return sbi.split_commands(buf)

    def respond(self, command: bytes, now: float) -> list[bytes]:
        b = self.balance
        if command == sbi.CMD_PRINT:
            state, v = b.reading(now)
            if state == "overload":
                return [sbi.format_status("H")]
            if state == "underload":
                return [sbi.format_status("L")]
            return [sbi.format_reading(v, b.unit, state == "stable", b.decimals, ident=self.ident)]
        if command == sbi.CMD_ZERO:
            b.zero(now)
        elif command == sbi.CMD_TARE:
            b.tare(now)
        elif command == sbi.CMD_TARE_ZERO:
            state, v = b.reading(now)
            if abs(v) < 0.02 * b.max:
                b.zero(now)
            else:
                b.tare(now)
        return []


class AndSimulator(ScaleSimulator):
    """A&D balance: ``Q``/``SI`` readings, ``S`` stable reading, ``Z``/``T`` with ACK."""

    protocol = aandd.PROTOCOL

    def respond(self, command: bytes, now: float) -> list[bytes]:
        b = self.balance
        text = command.decode("ascii", "replace").strip()
        if not text:
            return []
        if text in ("Q", "SI", "S"):
            state, v = b.reading(now)
            if state in ("overload", "underload"):
                return [aandd.format_out_of_range(state == "underload", b.unit)]
            if text == "S" and state != "stable":
                return [aandd.format_error(2)]
            return [
                aandd.format_reading("ST" if state == "stable" else "US", v, b.unit, b.decimals)
            ]
        if text == "Z":
            res = b.zero(now)
            return [
                aandd.format_ack() if res == "ok" else aandd.format_error(2 if res == "busy" else 7)
            ]
        if text == "T":
            res, _ = b.tare(now)
            return [
                aandd.format_ack() if res == "ok" else aandd.format_error(2 if res == "busy" else 7)
            ]
        return [aandd.format_error(1)]


class CasSimulator(ScaleSimulator):
    """CAS CI indicator at address ``device_id``: ``RW``, ``MZ``, ``MT``."""

    protocol = cas.PROTOCOL

    def _frame(self, now: float) -> bytes:
        b = self.balance
        state, v = b.reading(now)
        gross = b.tare_weight == 0
        if state in ("overload", "underload"):
            return cas.format_frame(
                "OL",
                gross=gross,
                device_id=self.device_id,
                lamp=0,
                value=0.0,
                unit=b.unit,
                decimals=b.decimals,
                negative=state == "underload",
            )
        stable = state == "stable"
        lamp = (
            (cas.LAMP_STABLE if stable else 0)
            | (cas.LAMP_GROSS if gross else 0)
            | (0 if gross else cas.LAMP_TARE)
            | (cas.LAMP_ZERO if abs(v) < b.e / 2 else 0)
        )
        return cas.format_frame(
            "ST" if stable else "US",
            gross=gross,
            device_id=self.device_id,
            lamp=lamp,
            value=v,
            unit=b.unit,
            decimals=b.decimals,
        )

    def respond(self, command: bytes, now: float) -> list[bytes]:
        parsed = cas.parse_command(command.strip())
        if parsed is None:
            return [cas.REPLY_BAD_COMMAND] if command.strip() else []
        dev, op = parsed
        if dev != self.device_id:
            return []  # another indicator on the line
        if op == "MZ" and self.balance.zero(now) != "ok":
            return [cas.REPLY_CANNOT]
        if op == "MT" and self.balance.tare(now)[0] != "ok":
            return [cas.REPLY_CANNOT]
        return [self._frame(now)]


#: protocol name -> simulator class
SCALE_SIMULATORS: dict[str, type[ScaleSimulator]] = {
    "mt-sics": MtSicsSimulator,
    "sbi": SbiSimulator,
    "and": AndSimulator,
    "cas": CasSimulator,
}
#: protocol name -> the profile the simulator takes its unit, Max and e from by default
DEFAULT_PROFILES = {
    "mt-sics": "mt-sics-scale",
    "sbi": "sartorius-sbi",
    "and": "and-scale",
    "cas": "cas-ci",
    "fibergrade-line": "analyser-line",
}


SampleSpec = tuple[str, Sequence[float], Sequence[float] | None]


def synthetic_samples(
    n_samples: int | None,
    *,
    fibres: int = 400,
    mfd_um: float = 16.0,
    cv: float = 0.2,
    curvature: bool = True,
    seed: int = 0,
    prefix: str = "S",
) -> Iterator[SampleSpec]:
    """Log-normal diameters (fibre.md: sigma_log = sqrt(ln(1 + CV^2))) and synthetic
    curvatures (normal 50 +- 12 deg/mm [unsourced], see below); ``n_samples`` None for an
    endless run."""
    if not (2.0 < mfd_um < 199.0 and 0.0 < cv <= 2.0):
        raise ValueError(
            f"simulated samples need 2 < mfd_um < 199 and 0 < cv <= 2, got {mfd_um!r}, {cv!r}"
        )
    rng = np.random.default_rng(seed)
    sigma = math.sqrt(math.log(1 + cv * cv))
    mu = math.log(mfd_um) - sigma * sigma / 2
    k = 0
    while n_samples is None or k < n_samples:
        k += 1
        d = _within(lambda n: rng.lognormal(mu, sigma, n), fibres, 2.0, 199.0)
        # [unsourced] synthetic curvature, normal(50, 12) deg/mm: a test stream, not a fibre
        # population. fibre.md gives wool "typically 70-150 deg/mm" and the IH tops 39-84
        # deg/mm, nothing for cashmere or camel; do not read these values as typical.
        c = _within(lambda n: rng.normal(50.0, 12.0, n), fibres, 1.0, 500.0) if curvature else None
        yield f"{prefix}{k:04d}", d.tolist(), None if c is None else c.tolist()


def _within(draw: Callable[[int], np.ndarray], n: int, lo: float, hi: float) -> np.ndarray:
    """``n`` values of ``draw`` within ``lo .. hi``: the rare ones outside are drawn again,
    not clipped (clipping would pile values up on the bounds), as synthetic lots do."""
    x = draw(n)
    bad = np.flatnonzero((x < lo) | (x > hi))
    for _ in range(_MAX_REDRAWS):
        if not bad.size:
            return x
        x[bad] = draw(bad.size)
        bad = bad[(x[bad] < lo) | (x[bad] > hi)]
    raise ValueError(f"values keep falling outside {lo:g} .. {hi:g}: a distribution too wide")


#: rounds of redrawing before :func:`_within` gives up (a sane distribution needs a few)
_MAX_REDRAWS = 1000


class AnalyserSimulator(SimulatedDevice):
    """Streams samples in the fibergrade line protocol once a client connects.

    ``samples``: (sample id, diameters, curvatures or None) to send, else
    :func:`synthetic_samples` (``n_samples`` None: for ever); or ``lines``: ready-made
    protocol lines (CR LF included) to stream as they are, e.g. a crafted faulty stream or
    ``instruments/analyser-line-example.txt``. ``bytes_per_s`` paces the
    stream as a serial line would (115200 baud 8N1 = 11520 bytes/s); None sends as fast as
    the client reads. Lines carry a wrong checksum with probability ``bad_checksum``.
    """

    def __init__(
        self,
        samples: Iterable[SampleSpec] | None = None,
        *,
        lines: Iterable[bytes] | None = None,
        n_samples: int | None = None,
        fibres_per_sample: int = 400,
        seed: int = 0,
        bytes_per_s: float | None = None,
        bad_checksum: float = 0.0,
    ) -> None:
        if lines is not None:
            self._lines: Iterator[bytes] = iter(lines)
        else:
            src = (
                samples
                if samples is not None
                else synthetic_samples(n_samples, fibres=fibres_per_sample, seed=seed)
            )
            self._lines = self._line_iter(src)
        self._next: bytes | None = None
        self.bytes_per_s = bytes_per_s
        self.bad_checksum = bad_checksum
        self._rng = random.Random(seed + 1)
        self._budget = 0.0
        self._last = 0.0
        self.lines_sent = 0
        self.finished = False

    @staticmethod
    def _line_iter(src: Iterable[SampleSpec]) -> Iterator[bytes]:
        for sid, d, c in src:
            yield from analyser.format_sample(sid, d, c)

    def _peek(self) -> bytes | None:
        if self._next is None and not self.finished:
            self._next = next(self._lines, None)
            if self._next is None:
                self.finished = True
        return self._next

    def on_connect(self, now: float) -> None:
        self._last = now
        self._budget = 0.0

    def next_due(self, now: float) -> float | None:
        line = self._peek()
        if line is None:
            return None
        if self.bytes_per_s is None:
            return 0.0
        budget = self._budget + (now - self._last) * self.bytes_per_s
        return max(0.0, (len(line) - budget) / self.bytes_per_s)

    def poll(self, now: float) -> list[bytes]:
        out: list[bytes] = []
        if self.bytes_per_s is not None:
            self._budget = min(self._budget + (now - self._last) * self.bytes_per_s, 8192.0)
        self._last = now
        while len(out) < 512:
            line = self._peek()
            if line is None:
                break
            if self.bytes_per_s is not None:
                if self._budget < len(line):
                    break
                self._budget -= len(line)
            self._next = None
            if self.bad_checksum and self._rng.random() < self.bad_checksum:
                ck = line[-4:-2]
                wrong = b"%02X" % (int(ck, 16) ^ 0x5A)
                line = line[:-4] + wrong + b"\r\n"
            out.append(line)
            self.lines_sent += 1
        return out


# --------------------------------------------------------------------------- endpoints


class _PtyEndpoint:
    def __init__(self) -> None:
        master, slave = os.openpty()
        tty.setraw(master)
        self.path = os.ttyname(slave)
        os.close(slave)  # so POLLHUP tells whether a client has the slave open
        os.set_blocking(master, False)
        self.fd: int | None = master
        self._poll = select.poll()
        self._poll.register(master, select.POLLIN)
        self.url = self.path

    def poll(self, timeout: float) -> tuple[bool, bytes]:
        if self.fd is None:
            return False, b""
        events = self._poll.poll(max(0, int(timeout * 1000)))
        flags = events[0][1] if events else 0
        if flags & select.POLLIN:
            try:
                return True, os.read(self.fd, 65536)
            except BlockingIOError:
                return True, b""
            except OSError:  # EIO: no client
                pass
        if flags & (select.POLLHUP | select.POLLERR):
            time.sleep(min(timeout, 0.02) if timeout > 0 else 0.005)
            return False, b""
        return True, b""

    def send(self, data: bytes, stop: threading.Event) -> bool:
        view = memoryview(data)
        while view:
            if self.fd is None or stop.is_set():
                return False
            try:
                n = os.write(self.fd, view)
                view = view[n:]
            except BlockingIOError:
                p = select.poll()
                p.register(self.fd, select.POLLOUT)
                if any(f & (select.POLLHUP | select.POLLERR) for _, f in p.poll(50)):
                    return False
            except OSError:
                return False
        return True

    def unplug(self) -> None:
        self.close()

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            with contextlib.suppress(OSError):
                os.close(fd)


class _TcpEndpoint:
    def __init__(self, port: int) -> None:
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", port))  # loopback only
        srv.listen(1)
        srv.setblocking(False)
        self.srv: socket.socket | None = srv
        self.conn: socket.socket | None = None
        self.port = srv.getsockname()[1]
        self.url = f"socket://127.0.0.1:{self.port}"
        self.path = self.url

    def poll(self, timeout: float) -> tuple[bool, bytes]:
        if self.conn is None:
            if self.srv is None:
                return False, b""
            r, _, _ = select.select([self.srv], [], [], timeout)
            if r:
                with contextlib.suppress(BlockingIOError, OSError):
                    conn, _ = self.srv.accept()
                    conn.setblocking(False)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self.conn = conn
            return self.conn is not None, b""
        r, _, _ = select.select([self.conn], [], [], timeout)
        if not r:
            return True, b""
        try:
            data = self.conn.recv(65536)
        except BlockingIOError:
            return True, b""
        except OSError:
            data = b""
        if not data:
            self._drop()
            return False, b""
        return True, data

    def _drop(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(OSError):
                self.conn.close()
            self.conn = None

    def send(self, data: bytes, stop: threading.Event) -> bool:
        view = memoryview(data)
        while view:
            if self.conn is None or stop.is_set():
                return False
            try:
                n = self.conn.send(view)
                view = view[n:]
            except BlockingIOError:
                select.select([], [self.conn], [], 0.05)
            except OSError:
                self._drop()
                return False
        return True

    def unplug(self) -> None:
        self.close()

    def close(self) -> None:
        self._drop()
        if self.srv is not None:
            with contextlib.suppress(OSError):
                self.srv.close()
            self.srv = None


# --------------------------------------------------------------------------- server


class Simulator:
    """Serves a :class:`SimulatedDevice` on a pty (default) or ``tcp_port`` (0: any free
    port) in a background thread.

    ``url`` is what a client opens (pty slave path or ``socket://127.0.0.1:PORT``).
    ``connect_settle_s`` delays streaming after a client connects, so that the client's own
    flush of its input on opening does not eat the first lines.
    """

    def __init__(
        self,
        device: SimulatedDevice,
        *,
        faults: Faults | None = None,
        tcp_port: int | None = None,
        connect_settle_s: float = 0.15,
        stop_when_finished: bool = False,
    ) -> None:
        self.device = device
        self.faults = faults or Faults()
        self.injector = FaultInjector(self.faults)
        self.connect_settle_s = connect_settle_s
        self.stop_when_finished = stop_when_finished
        self._ep: _PtyEndpoint | _TcpEndpoint = (
            _PtyEndpoint() if tcp_port is None else _TcpEndpoint(tcp_port)
        )
        self.url: str = self._ep.url
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        #: True once an ``unplug-after`` fault has closed the port
        self.unplugged = False
        #: the exception that ended the server thread, if any
        self.error: BaseException | None = None
        #: frames sent (after faults)
        self.frames_sent = 0

    @property
    def balance(self) -> SimulatedBalance:
        """The simulated balance of a scale simulator (to change the load in tests)."""
        if not isinstance(self.device, ScaleSimulator):
            raise TypeError("not a scale simulator")
        return self.device.balance

    def start(self) -> Self:
        """Start serving in a daemon thread; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"sim {self.url}", daemon=True)
            self._thread.start()
        return self

    def _emit(self, frame: bytes) -> bool:
        if self.faults.slow_s and self._stop.wait(self.faults.slow_s):
            return False
        if self.injector.unplug_due:
            self._ep.unplug()
            self.unplugged = True
            return False
        out = self.injector.transform(frame)
        if not out:
            return True
        self.frames_sent += 1
        return self._ep.send(out, self._stop)

    def _run(self) -> None:
        try:
            connected = False
            since = 0.0
            while not self._stop.is_set():
                now = time.monotonic()
                due = self.device.next_due(now) if connected else None
                if due is not None and now - since < self.connect_settle_s:
                    due = self.connect_settle_s - (now - since)
                timeout = 0.02 if due is None else min(0.02, due)
                is_conn, data = self._ep.poll(timeout)
                now = time.monotonic()
                if is_conn and not connected:
                    since = now
                    self.device.on_connect(now)
                elif connected and not is_conn:
                    self.device.on_disconnect(now)
                connected = is_conn
                if not connected:
                    continue
                out = self.device.on_bytes(data, now) if data else []
                if now - since >= self.connect_settle_s:
                    out += self.device.poll(now)
                for frame in out:
                    if not self._emit(frame):
                        break
                if self.unplugged:
                    return
                if self.stop_when_finished and self.device.finished:
                    return
        except BaseException as exc:  # reported through .error / serve_forever
            self.error = exc
        finally:
            self._done.set()

    @property
    def running(self) -> bool:
        """True while the server thread runs."""
        return self._thread is not None and not self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the server to end (unplug fault, finished run, stop); True if it did."""
        return self._done.wait(timeout)

    def serve_forever(self) -> None:
        """Serve until :meth:`stop`, an unplug fault or a finished run (with
        ``stop_when_finished``). Ctrl-C stops the simulator and propagates. An exception of
        the server thread is re-raised here."""
        self.start()
        try:
            while not self._done.wait(0.2):
                pass
        except KeyboardInterrupt:
            self.stop()
            raise
        self.stop()
        if self.error is not None:
            raise self.error

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and close the port (idempotent)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._ep.close()
        self._done.set()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_simulator(
    kind: str,
    protocol: str | None = None,
    *,
    faults: Faults | str | None = None,
    tcp_port: int | None = None,
    profile: Profile | str | None = None,
    load: float | None = None,
    samples: Iterable[SampleSpec] | None = None,
    n_samples: int | None = None,
    fibres_per_sample: int = 400,
    baudrate: int | None = None,
    settle_s: float = 0.3,
    stop_when_finished: bool = False,
) -> Simulator:
    """Build and start a simulator; the entry point of ``fibergrade simulate``.

    ``kind`` is ``"scale"`` (``protocol`` one of ``mt-sics``, ``sbi``, ``and``, ``cas``) or
    ``"analyser"`` (protocol ``fibergrade-line``, the default). The scale's unit, Max and e
    come from ``profile`` (default: the protocol's profile in ``instruments/``). ``load``
    is the gross load on the pan (default 20 % of Max). For an analyser: ``samples`` or
    ``n_samples`` synthetic samples of ``fibres_per_sample`` (None: endless);
    ``baudrate`` paces the stream as that serial line would. Returns the running
    :class:`Simulator`; its ``url`` is the device path or ``socket://`` URL to open.
    """
    f = parse_faults(faults) if isinstance(faults, str) or faults is None else faults
    if kind == "scale":
        if protocol not in SCALE_SIMULATORS:
            raise FaultSpecError(
                f"unknown scale protocol {protocol!r}; known: " + ", ".join(SCALE_SIMULATORS)
            )
        prof = (
            profile
            if isinstance(profile, Profile)
            else load_profile(profile or DEFAULT_PROFILES[protocol])
        )
        if prof.scale is None or prof.protocol != protocol:
            raise ProfileError(
                str(prof.path),
                "instrument.protocol",
                f"is {prof.protocol!r}, the simulator speaks {protocol!r}",
            )
        balance = SimulatedBalance(prof.scale, load=load, settle_s=settle_s, faults=f)
        if protocol == aandd.PROTOCOL and balance.decimals < 1:
            raise ProfileError(
                str(prof.path),
                "scale.e",
                f"is {prof.scale.e:g}: an A&D reading carries a point (scales.md: "
                "'9-character data with sign and point'), which a display in whole units "
                "does not show, so the simulator cannot speak for this scale",
            )
        device: SimulatedDevice = SCALE_SIMULATORS[protocol](
            balance, device_id=prof.scale.device_id
        )
    elif kind == "analyser":
        if protocol not in (None, analyser.PROTOCOL):
            raise FaultSpecError(
                f"unknown analyser protocol {protocol!r}; known: {analyser.PROTOCOL}"
            )
        device = AnalyserSimulator(
            samples,
            n_samples=n_samples,
            fibres_per_sample=fibres_per_sample,
            seed=f.seed,
            bytes_per_s=baudrate / 10 if baudrate else None,
            bad_checksum=f.bad_checksum,
        )
    else:
        raise FaultSpecError(f"unknown instrument kind {kind!r}; known: scale, analyser")
    return Simulator(
        device, faults=f, tcp_port=tcp_port, stop_when_finished=stop_when_finished
    ).start()


def serve_forever(
    kind: str,
    protocol: str | None = None,
    *,
    on_ready: Callable[[str], None] | None = None,
    **options: Any,
) -> Simulator:
    """Start a simulator (:func:`start_simulator` options), call ``on_ready(url)`` (the CLI
    prints the path there), and serve until Ctrl-C, an unplug fault or the end of a finite
    run. Returns the stopped simulator (``unplugged`` tells why it ended)."""
    sim = start_simulator(kind, protocol, **options)
    try:
        if on_ready is not None:
            on_ready(sim.url)
        sim.serve_forever()
    finally:
        sim.stop()
    return sim


__all__ = [
    "DEFAULT_PROFILES",
    "FAULT_NAMES",
    "SCALE_SIMULATORS",
    "AnalyserSimulator",
    "AndSimulator",
    "CasSimulator",
    "FaultInjector",
    "Faults",
    "MtSicsSimulator",
    "SbiSimulator",
    "ScaleSimulator",
    "SimulatedBalance",
    "SimulatedDevice",
    "Simulator",
    "load_problem",
    "parse_faults",
    "serve_forever",
    "start_simulator",
    "synthetic_samples",
]
