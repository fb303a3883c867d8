"""Byte transports with their own deadlines, session recording and replay.

:class:`Transport` sits on a raw byte :class:`Port` and turns its reads into lines or
fixed-size frames under a deadline the caller chooses. Raw ports:

* :class:`SerialPort`: ``serial.serial_for_url`` (scales.md, "pyserial without hardware"):
  device paths (``/dev/ttyUSB0``, a pty slave), ``socket://host:port`` (a simulator over
  TCP or an Ethernet-serial converter), ``spy://PORT?file=log`` (hex log of the traffic),
  ``rfc2217://``, ``loop://``. Line settings (baud, bits, parity, stop bits, handshake)
  come from the instrument profile.
* :class:`ReplayPort`: feeds a captured session (see below) to the real parsers in tests:
  record once on hardware, regression-test forever (the PyLabRobot ``io/`` pattern cited
  in scales.md).

pyserial returns short data on timeout without raising (scales.md: "check the terminator
yourself and keep your own deadline"), so :meth:`Transport.read_line` loops on short reads
until a terminator arrives or *its* deadline passes, and then raises
:class:`~fibergrade.adapters.errors.InstrumentTimeout`. The failure kinds are distinct:

* :class:`~fibergrade.adapters.errors.InstrumentTimeout`: the deadline passed;
* :class:`~fibergrade.adapters.errors.Disconnected`: pyserial's ``SerialException``/
  ``OSError`` on read or write, EOF on a socket, EIO on a pty whose master went away
  (an unplugged USB adapter looks the same);
* :class:`~fibergrade.adapters.errors.FrameError`: a line longer than ``max_line`` bytes
  (garbage with no terminator); parsers raise it for every other kind of garbage.

Capture files (``*.jsonl``): one JSON object per line. The first is a header
``{"fibergrade_capture": 1, "started_at": "2025-03-04T05:06:07.890123+00:00",
"session": "9f1c...", "meta": {...}}``; then events in time order, ``t`` in seconds since
the start of the session (the first event, at ``t`` = 0)::

    {"t": 0.0012, "tx": "SI\\r\\n"}          bytes written by the host
    {"t": 0.0051, "rx": "S S    100.00 g\\r\\n"}  bytes as one read returned them
    {"t": 2.1, "event": "disconnected", "detail": "..."}

Bytes are stored as the latin-1 decoding of the data (JSON escapes control characters), so
a capture is readable and exact.

``started_at`` is the UTC wall-clock time at ``t`` = 0 (ISO 8601, as the store's other
timestamps), so an event's wall-clock time is ``started_at`` + its ``t``: a replay dates
what it stores by the session, not by the replay, from the captured ``t`` of the read that
returned it (:meth:`ReplayPort.wall_time`), never from the replay's own clock, which runs
ahead of the capture whenever the replay waits longer than the live session did. Captures
recorded before the header held it have no ``started_at`` and are read as before (their
start is unknown, never guessed); the key is optional, so the format stays version 1 and
older readers still read new captures. A session that ended before any event has no
``started_at`` either.

``session`` is a random id (uuid4 hex) the recorder gives the session: it names the
recorded session, not the file, so it survives what people do to capture files (notes added
to the header's ``meta``, CR LF line ends, a truncated copy), all of which change the
file's bytes. Captures recorded before the header held it have none; it is optional too.

A replay also says what it is replaying and where it is in it, so that what it stores can
name its origin: :attr:`Transport.capture_session` is the header's session id,
:attr:`Transport.capture_sha256` the SHA-256 of the capture file's bytes (what ``sha256sum``
prints: a copy under another name is the same file, an edited one another), and
:attr:`Transport.capture_position` the :class:`CapturePosition` of the last read, the number
of the captured event whose bytes it returned (1 = the first event after the header, as
:class:`~fibergrade.adapters.errors.ReplayMismatch` messages count them) and that event's
``t``. Each event is one read of the live session, so two replies with the same bytes still
have different positions. A live session that is being recorded says the same of itself:
its recorder's session id and, for its last read, the number and ``t`` of the event the
recorder logged for it, which are those a replay of the capture gives the same read; it
has no file digest yet (the file is not finished). A live port not recorded has none of
them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import termios
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Protocol, Self

import serial

from fibergrade.adapters.errors import (
    CaptureMismatch,
    Disconnected,
    FrameError,
    InstrumentTimeout,
    PortOpenError,
    ReplayMismatch,
)
from fibergrade.adapters.profiles import SerialSettings

#: how long one low-level read may block before the deadline is checked again (seconds)
_POLL_S = 0.05
#: most bytes taken from the OS in one read
_CHUNK = 65536
CAPTURE_VERSION = 1


class Port(Protocol):
    """A raw byte port. Implementations raise ``Disconnected`` when the peer is gone."""

    name: str

    def read_chunk(self, timeout_s: float) -> bytes:
        """Whatever bytes arrive within ``timeout_s`` (possibly none: ``b""``)."""
        ...

    def write(self, data: bytes) -> None:
        """Send all of ``data``."""
        ...

    def discard_input(self) -> None:
        """Drop bytes received but not yet read."""
        ...

    def clock(self) -> float:
        """Monotonic seconds (a replay returns the capture's time)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait (a replay only advances its clock)."""
        ...

    def close(self) -> None:
        """Release the port."""
        ...


class SerialPort:
    """A pyserial port opened with ``serial.serial_for_url``.

    The pyserial object is kept non-blocking (``timeout=0``); waiting is done with
    ``select`` on its file descriptor where it has one (device paths, ``spy://``,
    ``socket://``), else by short blocking reads.
    """

    def __init__(
        self,
        url: str,
        settings: SerialSettings | None = None,
        *,
        write_timeout_s: float = 2.0,
    ) -> None:
        self.name = url
        settings = settings or SerialSettings()
        try:
            ser = serial.serial_for_url(url, do_not_open=True)
            for key, value in settings.pyserial_kwargs().items():
                setattr(ser, key, value)
            ser.timeout = 0
            ser.write_timeout = write_timeout_s
            # one reader per port: a second process reading the same device takes lines
            # from the first one's sample (pyserial: an advisory flock on a device path;
            # no effect on socket:// and rfc2217://)
            ser.exclusive = True
            ser.open()
        except (serial.SerialException, OSError, ValueError) as exc:
            hint = ""
            if "exclusively lock" in str(exc):
                hint = (
                    "; another program (a second `fibergrade acquire`?) is reading this port: "
                    "one reader per instrument, so stop the other one first"
                )
            raise PortOpenError(f"cannot open port: {exc}{hint}", source=url) from None
        self._ser = ser
        try:
            self._fd: int | None = ser.fileno()
        except (AttributeError, NotImplementedError, serial.SerialException, OSError):
            self._fd = None

    def read_chunk(self, timeout_s: float) -> bytes:
        try:
            if self._fd is not None:
                ready, _, _ = select.select([self._fd], [], [], max(0.0, timeout_s))
                if not ready:
                    return b""
                data = self._ser.read(_CHUNK)
                if not data:
                    # select said readable but nothing came: EOF / hang-up
                    raise Disconnected(
                        "device reports readiness but returned no data", source=self.name
                    )
                return bytes(data)
            self._ser.timeout = max(0.0, min(timeout_s, _POLL_S))
            n = max(1, self._ser.in_waiting)
            return bytes(self._ser.read(n))
        except (serial.SerialException, OSError, termios.error, ValueError, TypeError) as exc:
            # pyserial: "device reports readiness to read but returned no data",
            # "read failed: [Errno 5] Input/output error", "socket disconnected"
            raise Disconnected(
                f"read failed, adapter unplugged or peer gone: {exc}", source=self.name
            ) from None

    def write(self, data: bytes) -> None:
        try:
            self._ser.write(data)
            self._ser.flush()
        except serial.SerialTimeoutException:
            raise InstrumentTimeout(
                "write blocked (hardware or software handshake holding the line?)",
                source=self.name,
                waited_s=float(self._ser.write_timeout or 0),
            ) from None
        except (serial.SerialException, OSError, termios.error, ValueError, TypeError) as exc:
            raise Disconnected(
                f"write failed, adapter unplugged or peer gone: {exc}", source=self.name
            ) from None

    def discard_input(self) -> None:
        try:
            self._ser.reset_input_buffer()
        except (serial.SerialException, OSError, termios.error, ValueError, TypeError) as exc:
            raise Disconnected(f"cannot reset input: {exc}", source=self.name) from None

    def clock(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def close(self) -> None:
        with contextlib.suppress(serial.SerialException, OSError):  # a dead port is fine
            self._ser.close()


# --------------------------------------------------------------------------- recording


def _enc(data: bytes) -> str:
    return data.decode("latin-1")


def _dec(text: str) -> bytes:
    return text.encode("latin-1")


def _wall_clock_utc() -> datetime:
    return datetime.now(UTC)


class SessionRecorder:
    """Writes a capture file (format in the module docstring) of one session.

    ``meta`` is stored in the header: protocol, profile, what the session did. Timestamps
    come from the transport's clock, relative to the first event. ``wall_clock`` (an aware
    datetime; default: now, UTC) is read once, when the first event sets ``t`` = 0, and
    stored as the header's ``started_at``; the header is therefore written with the first
    event (or on :meth:`close` of a session without any, then without ``started_at``).
    ``session_id`` (default: a new uuid4 hex) is the header's ``session``.

    :attr:`last_read` is the position of the last ``rx`` event logged: its event number,
    counted as a replay counts events, and its ``t`` as written.
    """

    def __init__(
        self,
        path: str | Path,
        meta: Mapping[str, Any] | None = None,
        *,
        wall_clock: Callable[[], datetime] = _wall_clock_utc,
        session_id: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.meta: dict[str, Any] = dict(meta or {})
        #: the random id naming this session, written as the header's ``session``
        self.session: str = session_id or uuid.uuid4().hex
        self._wall_clock = wall_clock
        self._fh: IO[str] | None = self.path.open("w", encoding="ascii", newline="\n")
        self._t0: float | None = None
        self._header_written = False
        self._last_flush = time.monotonic()
        self._events = 0
        self._last_read: CapturePosition | None = None

    @property
    def last_read(self) -> CapturePosition | None:
        """The last ``rx`` event logged (number, 1 = the first event after the header, and
        ``t``); None before any."""
        return self._last_read

    def _header(self, started_at: datetime | None) -> None:
        header: dict[str, Any] = {"fibergrade_capture": CAPTURE_VERSION}
        if started_at is not None:
            header["started_at"] = started_at.isoformat()
        header["session"] = self.session
        header["meta"] = self.meta
        self._header_written = True
        self._write(header)

    def _write(self, obj: dict[str, Any]) -> None:
        if self._fh is None:
            return
        self._fh.write(json.dumps(obj, ensure_ascii=True) + "\n")
        now = time.monotonic()
        if now - self._last_flush > 1.0:
            self._fh.flush()
            self._last_flush = now

    def _t(self, now: float) -> float:
        if self._t0 is None:
            wall = self._wall_clock()
            if wall.tzinfo is None or wall.utcoffset() is None:
                raise ValueError(f"wall_clock gave {wall!r}, a time without a time zone")
            self._t0 = now
            self._header(wall.astimezone(UTC))
        return round(now - self._t0, 6)

    def _event(self, obj: dict[str, Any]) -> int:
        """Write one event; its number (1 = the first after the header)."""
        if self._fh is not None:
            self._events += 1
        self._write(obj)
        return self._events

    def tx(self, now: float, data: bytes) -> None:
        """Record bytes the host wrote."""
        self._event({"t": self._t(now), "tx": _enc(data)})

    def rx(self, now: float, data: bytes) -> None:
        """Record bytes one read returned (and its position, :attr:`last_read`)."""
        t = self._t(now)
        self._last_read = CapturePosition(self._event({"t": t, "rx": _enc(data)}), t)

    def event(self, now: float, name: str, detail: str = "") -> None:
        """Record a transport event (``disconnected``)."""
        self._event({"t": self._t(now), "event": name, "detail": detail})

    def close(self) -> None:
        """Flush and close the capture file."""
        if self._fh is not None:
            if not self._header_written:
                self._header(None)
            self._fh.close()
            self._fh = None


@dataclass(frozen=True)
class CaptureEvent:
    """One event of a capture: ``kind`` is ``tx``, ``rx`` or an event name."""

    t: float
    kind: str
    data: bytes = b""
    detail: str = ""


@dataclass(frozen=True)
class CapturePosition:
    """Where in a capture a replay's last read was: ``event``, the number of the captured
    event whose bytes it returned (1 = the first event after the header, counting every
    event), and ``t``, that event's captured time in seconds."""

    event: int
    t: float

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.event, "t": self.t}


@dataclass(frozen=True)
class Capture:
    """A parsed capture file: the header's ``meta`` and ``started_at`` (UTC; None when the
    header does not record it), the events, ``sha256``, the SHA-256 hex of the file's
    bytes as read (None for a capture not read from a file), and ``session``, the header's
    session id (None when it records none)."""

    meta: dict[str, Any]
    events: list[CaptureEvent]
    started_at: datetime | None = None
    sha256: str | None = None
    session: str | None = None


def _started_at(value: Any, path: Path) -> datetime:
    """The header's ``started_at``: an ISO 8601 time with a UTC offset, returned in UTC."""
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        t = datetime.fromisoformat(value)
        if t.tzinfo is None or t.utcoffset() is None:
            raise ValueError(value)
    except ValueError:
        raise FrameError(
            f"line 1: the header's started_at {value!r} is not a time with a UTC offset",
            source=str(path),
            expected="an ISO 8601 time such as 2025-03-04T05:06:07.890123+00:00",
        ) from None
    return t.astimezone(UTC)


def _session(value: Any, path: Path) -> str:
    """The header's ``session``: a non-empty string."""
    if not isinstance(value, str) or not value:
        raise FrameError(
            f"line 1: the header's session {value!r} is not a session id",
            source=str(path),
            expected="a non-empty string (fibergrade writes a uuid4 hex)",
        )
    return value


def read_capture(path: str | Path) -> tuple[dict[str, Any], list[CaptureEvent]]:
    """Parse a capture file into its ``meta`` header and events (:func:`load_capture`
    gives the header's ``started_at`` too).

    Raises :class:`FrameError` (source = the file) when the file is not a capture.
    """
    cap = load_capture(path)
    return cap.meta, cap.events


def load_capture(path: str | Path) -> Capture:
    """Parse a capture file (format in the module docstring).

    Raises :class:`FrameError` (source = the file) when the file is not a capture, or its
    header's ``started_at`` is not a time with a UTC offset, or its ``session`` no string.
    """
    path = Path(path)
    meta: dict[str, Any] | None = None
    started_at: datetime | None = None
    session: str | None = None
    events: list[CaptureEvent] = []
    try:
        # one read: the digest is of the very bytes parsed
        data = path.read_bytes()
        lines = data.decode("ascii").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise FrameError(f"cannot read capture: {exc}", source=str(path)) from None
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if meta is None:
                if obj.get("fibergrade_capture") != CAPTURE_VERSION:
                    raise ValueError("header")
                meta = dict(obj.get("meta") or {})
                if "started_at" in obj:
                    started_at = _started_at(obj["started_at"], path)
                if "session" in obj:
                    session = _session(obj["session"], path)
                continue
            t = float(obj["t"])
            if "tx" in obj:
                events.append(CaptureEvent(t, "tx", _dec(obj["tx"])))
            elif "rx" in obj:
                events.append(CaptureEvent(t, "rx", _dec(obj["rx"])))
            else:
                events.append(CaptureEvent(t, str(obj["event"]), detail=str(obj.get("detail"))))
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeEncodeError):
            raise FrameError(
                f"line {no} is not a capture record",
                source=str(path),
                expected=f"a fibergrade capture version {CAPTURE_VERSION} (JSON lines)",
            ) from None
    if meta is None:
        raise FrameError("empty capture file", source=str(path))
    return Capture(meta, events, started_at, hashlib.sha256(data).hexdigest(), session)


class ReplayPort:
    """Plays a captured session back: received bytes are served as they were read, and
    every write must match the next captured ``tx`` (else :class:`ReplayMismatch`).

    The clock follows the capture's timestamps, so deadlines and stability windows behave
    as they did live while the replay runs at full speed. A read whose next captured bytes
    arrived later than its deadline times out, as it did live. At the end of the capture,
    reads time out; a captured ``disconnected`` event raises :class:`Disconnected`.

    The replay is strict, as PyMeasure's ``expected_protocol`` is (scales.md, "Well-regarded
    patterns"): a write while the capture still holds bytes the live session read before
    that write is a :class:`ReplayMismatch` (the recorder logs only bytes a read returned,
    so a driver that leaves them unread diverges from the session), and
    :meth:`check_exhausted` refuses a replay that ends with captured traffic left over.

    :attr:`last_read` is the position of the event the last read returned (module
    docstring); ``sha256`` names the capture file (None when the events came from
    elsewhere), ``session`` the recorded session (None when the header records none).
    """

    def __init__(
        self,
        events: list[CaptureEvent],
        *,
        name: str = "replay",
        meta: Mapping[str, Any] | None = None,
        started_at: datetime | None = None,
        sha256: str | None = None,
        session: str | None = None,
    ) -> None:
        self.name = name
        #: the capture header's ``meta`` (kind, protocol, profile ...); empty when unknown
        self.meta: dict[str, Any] = dict(meta or {})
        #: the capture header's ``started_at``: the UTC wall-clock time at t = 0; None when
        #: the capture does not record it
        self.started_at = started_at
        #: the SHA-256 hex of the capture file's bytes; None when not replayed from a file
        self.sha256 = sha256
        #: the header's session id; None when the capture records none
        self.session = session
        self._events = events
        self._i = 0
        self._now = 0.0
        self._last_read: CapturePosition | None = None

    @classmethod
    def from_file(cls, path: str | Path) -> ReplayPort:
        """A replay of a capture file written by :class:`SessionRecorder`."""
        cap = load_capture(path)
        return cls(
            cap.events,
            name=str(path),
            meta=cap.meta,
            started_at=cap.started_at,
            sha256=cap.sha256,
            session=cap.session,
        )

    @classmethod
    def from_bytes(cls, data: bytes, *, chunk: int = 0, name: str = "bytes") -> ReplayPort:
        """A port that delivers ``data`` (in chunks of ``chunk`` bytes if > 0) at t = 0."""
        if chunk <= 0:
            pieces = [data] if data else []
        else:
            pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)]
        return cls([CaptureEvent(0.0, "rx", p) for p in pieces], name=name)

    @property
    def exhausted(self) -> bool:
        """True once every captured event has been consumed."""
        return self._i >= len(self._events)

    @property
    def last_read(self) -> CapturePosition | None:
        """The captured event whose bytes the last read returned (its number, 1-based, and
        ``t``); None before any read returned bytes. Writes, skipped events and reads that
        return nothing leave it as it was."""
        return self._last_read

    def read_chunk(self, timeout_s: float) -> bytes:
        if self._i < len(self._events):
            ev = self._events[self._i]
            if ev.kind == "disconnected":
                self._now = max(self._now, ev.t)
                self._i += 1
                raise Disconnected(f"captured disconnection: {ev.detail}", source=self.name)
            if ev.kind == "rx" and ev.t <= self._now + timeout_s + 1e-9:
                self._i += 1
                self._now = max(self._now, ev.t)
                self._last_read = CapturePosition(self._i, ev.t)
                return ev.data
            if ev.kind not in ("rx", "tx"):
                self._i += 1  # unknown event: skip
                return b""
        self._now += max(0.0, timeout_s)
        return b""

    def _describe(self, i: int) -> str:
        ev = self._events[i]
        what = repr(ev.data) if ev.kind in ("rx", "tx") else repr(ev.detail)
        return f"{ev.kind} {what} (event {i + 1}, t = {ev.t:g} s)"

    def check_exhausted(self) -> None:
        """Raise :class:`ReplayMismatch` unless every captured event has been replayed:
        traffic left over means the driver sent or read less than the live session did."""
        if self._i < len(self._events):
            left = len(self._events) - self._i
            raise ReplayMismatch(
                f"{left} captured event(s) not replayed, the first: {self._describe(self._i)}",
                source=self.name,
            )

    def write(self, data: bytes) -> None:
        if self._i < len(self._events) and self._events[self._i].kind == "rx":
            # the live session read these bytes before it wrote again: a driver that
            # writes without reading them has diverged from the capture
            raise ReplayMismatch(
                f"wrote {data!r} while the capture still holds a reply the live session "
                f"read first: {self._describe(self._i)}",
                source=self.name,
            )
        if self._i >= len(self._events) or self._events[self._i].kind != "tx":
            raise ReplayMismatch(
                f"wrote {data!r} but the capture holds no further command", source=self.name
            )
        ev = self._events[self._i]
        if ev.data != data:
            raise ReplayMismatch(
                f"wrote {data!r} where the capture holds {ev.data!r} (event {self._i + 1})",
                source=self.name,
            )
        self._i += 1
        self._now = max(self._now, ev.t)

    def discard_input(self) -> None:
        return None

    def wall_time(self) -> datetime | None:
        """The wall-clock time (UTC) at which the live session made the read whose bytes
        the replay's last read returned: ``started_at`` + that event's captured ``t``
        (:attr:`last_read`). None when the capture records no start, or before any read
        returned bytes.

        Not the replay's clock: :meth:`sleep` and reads that time out advance that, so a
        replay that waits longer between commands than the live session did (a longer
        ``--interval``, a poll interval raised since the recording) is served each captured
        reply at once but with its clock past the reply's captured time."""
        if self.started_at is None or self._last_read is None:
            return None
        return self.started_at + timedelta(seconds=self._last_read.t)

    def clock(self) -> float:
        return self._now

    def sleep(self, seconds: float) -> None:
        self._now += max(0.0, seconds)

    def close(self) -> None:
        return None


def _a(noun: object) -> str:
    text = str(noun)
    return ("an " if text[:1].lower() in "aeiou" else "a ") + text


# --------------------------------------------------------------------------- transport


class Transport:
    """Lines and frames over a :class:`Port`, under deadlines the caller chooses.

    Not thread-safe: one reader/writer at a time (one driver per port).
    """

    def __init__(
        self,
        port: Port,
        *,
        recorder: SessionRecorder | None = None,
        max_line: int = 4096,
    ) -> None:
        self.port = port
        self.recorder = recorder
        self.max_line = max_line
        self._buf = bytearray()
        self._skip_to_eol = False
        self._closed = False

    @classmethod
    def open(
        cls,
        url: str,
        settings: SerialSettings | None = None,
        *,
        recorder: SessionRecorder | None = None,
        max_line: int = 4096,
    ) -> Transport:
        """Open ``url`` with ``serial_for_url`` and the profile's line ``settings``.

        Raises :class:`PortOpenError` when the port cannot be opened.
        """
        return cls(SerialPort(url, settings), recorder=recorder, max_line=max_line)

    @classmethod
    def replay(cls, capture: str | Path, *, max_line: int = 4096) -> Transport:
        """A transport that replays a capture file (see :class:`ReplayPort`)."""
        return cls(ReplayPort.from_file(capture), max_line=max_line)

    @property
    def name(self) -> str:
        """The port's URL or the capture's path, for error messages."""
        return self.port.name

    @property
    def capture_meta(self) -> dict[str, Any] | None:
        """The ``meta`` header of the capture this transport replays; None for a live port
        (or a replay whose origin is not recorded)."""
        meta = self.port.meta if isinstance(self.port, ReplayPort) else None
        return meta or None

    @property
    def capture_started_at(self) -> datetime | None:
        """The UTC wall-clock start (``t`` = 0) of the capture this transport replays; None
        for a live port or a capture that does not record it."""
        return self.port.started_at if isinstance(self.port, ReplayPort) else None

    @property
    def capture_sha256(self) -> str | None:
        """The SHA-256 hex of the capture file this transport replays; None for a live port
        or a replay not read from a file."""
        return self.port.sha256 if isinstance(self.port, ReplayPort) else None

    @property
    def capture_session(self) -> str | None:
        """The session id of the capture: under replay, its header's (None when it records
        none); on a live port being recorded, the recorder's; None on a live port not
        recorded."""
        if isinstance(self.port, ReplayPort):
            return self.port.session
        return None if self.recorder is None else self.recorder.session

    @property
    def capture_position(self) -> CapturePosition | None:
        """The captured event of the last read that returned bytes: for a reply a driver
        has just read, without reading further, the read that completed it. Under replay,
        the event it returned (:attr:`ReplayPort.last_read`); on a live port being
        recorded, the event the recorder logged for it (:attr:`SessionRecorder.last_read`),
        the same number and ``t`` a replay of the capture gives that read. None on a live
        port not recorded, or before any read."""
        if isinstance(self.port, ReplayPort):
            return self.port.last_read
        return None if self.recorder is None else self.recorder.last_read

    def check_capture(self, kind: str, protocol: str) -> None:
        """Refuse to replay a capture recorded from another kind of instrument or another
        protocol (:class:`CaptureMismatch`), as its header's ``meta`` records them. Keys
        the header lacks are not guessed: a capture recorded by ``acquire --record`` holds
        the protocol and profile, the simulator's captures the kind too. A live port
        passes."""
        meta = self.capture_meta
        if meta is None:
            return
        got_kind, got_protocol = meta.get("kind"), meta.get("protocol")
        if (got_kind is None or got_kind == kind) and (
            got_protocol is None or got_protocol == protocol
        ):
            return
        recorded = " ".join(
            x
            for x in (
                _a(got_kind) if got_kind is not None else "an instrument",
                f"speaking {got_protocol!r}" if got_protocol is not None else None,
                f"(profile {meta['profile']!r})" if meta.get("profile") else None,
            )
            if x
        )
        raise CaptureMismatch(
            f"this capture was recorded from {recorded}, not from {_a(kind)} speaking "
            f"{protocol!r}; replay it with a profile of its own kind and protocol",
            source=self.name,
        )

    # -- time
    def clock(self) -> float:
        """Monotonic seconds of the port (capture time under replay)."""
        return self.port.clock()

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (under replay, only the clock advances)."""
        self.port.sleep(seconds)

    # -- output
    def write(self, data: bytes) -> None:
        """Send ``data``; :class:`Disconnected` if the adapter is gone."""
        if self.recorder is not None:
            self.recorder.tx(self.port.clock(), data)
        try:
            self.port.write(data)
        except Disconnected as exc:
            self._note_disconnect(exc)
            raise

    def discard_input(self) -> None:
        """Drop everything received but not yet consumed (before a new command)."""
        self._buf.clear()
        self._skip_to_eol = False
        try:
            self.port.discard_input()
        except Disconnected as exc:
            self._note_disconnect(exc)
            raise

    # -- input
    def _note_disconnect(self, exc: Disconnected) -> None:
        if self.recorder is not None:
            self.recorder.event(self.port.clock(), "disconnected", exc.message)

    def _fill(self, deadline: float) -> bool:
        """Read one chunk into the buffer; False when the deadline has passed."""
        remaining = deadline - self.port.clock()
        if remaining <= 0:
            return False
        try:
            data = self.port.read_chunk(min(remaining, _POLL_S * 4))
        except Disconnected as exc:
            self._note_disconnect(exc)
            raise
        if data:
            if self.recorder is not None:
                self.recorder.rx(self.port.clock(), data)
            self._buf += data
        return True

    def read_line(
        self,
        timeout_s: float,
        *,
        eol: bytes = b"\n",
        immediate: bytes = b"",
        require_cr: bool = False,
    ) -> bytes:
        """The next line, without ``eol`` and without one CR before it.

        ``immediate`` lists single bytes that form a frame on their own when they start a
        line (A&D's ACK 0x06): such a byte is returned at once, without waiting for ``eol``.

        ``require_cr``: the protocol's lines end in CR LF (scales.md gives CR LF for MT-SICS,
        SBI and A&D, and says "check the terminator yourself"), so a line ended by ``eol``
        without the CR before it is a :class:`FrameError` (the line is consumed). Without
        it a lone ``eol`` ends a line too (the analyser line protocol accepts a lone LF).

        Raises :class:`InstrumentTimeout` when no complete line arrives within ``timeout_s``
        (the incomplete bytes stay buffered and are reported in ``partial``),
        :class:`FrameError` for a line longer than ``max_line`` (the rest of that line is
        then skipped) or without its CR, :class:`Disconnected` when the adapter goes away.
        """
        deadline = self.port.clock() + timeout_s
        while True:
            if self._skip_to_eol:
                i = self._buf.find(eol)
                if i < 0:
                    self._buf.clear()
                else:
                    del self._buf[: i + len(eol)]
                    self._skip_to_eol = False
            if not self._skip_to_eol:
                if immediate and self._buf and self._buf[0] in immediate:
                    b = bytes(self._buf[:1])
                    del self._buf[:1]
                    return b
                i = self._buf.find(eol)
                if 0 <= i <= self.max_line:
                    line = bytes(self._buf[:i])
                    del self._buf[: i + len(eol)]
                    if line.endswith(b"\r"):
                        line = line[:-1]
                    elif require_cr:
                        raise FrameError(
                            f"line ends in {eol!r} without the CR before it",
                            source=self.name,
                            frame=line[:64] + eol,
                            expected=f"a line ending in CR {eol!r} (scales.md)",
                        )
                    return line
                if i > self.max_line or len(self._buf) > self.max_line:
                    junk = bytes(self._buf[: self.max_line])
                    if i >= 0:
                        del self._buf[: i + len(eol)]
                    else:
                        self._buf.clear()
                        self._skip_to_eol = True
                    raise FrameError(
                        f"line longer than {self.max_line} bytes without a terminator",
                        source=self.name,
                        frame=junk[:64],
                        expected=f"a line ending in {eol!r}",
                    )
            if not self._fill(deadline):
                raise InstrumentTimeout(
                    f"no complete line within {timeout_s:g} s",
                    source=self.name,
                    waited_s=timeout_s,
                    partial=bytes(self._buf),
                )

    def read_exact(self, n: int, timeout_s: float) -> bytes:
        """Exactly ``n`` bytes; :class:`InstrumentTimeout` if they do not all arrive in time
        (the bytes received so far are dropped and reported in ``partial``)."""
        deadline = self.port.clock() + timeout_s
        while len(self._buf) < n:
            if not self._fill(deadline):
                partial = bytes(self._buf)
                self._buf.clear()
                raise InstrumentTimeout(
                    f"{len(partial)} of {n} bytes within {timeout_s:g} s",
                    source=self.name,
                    waited_s=timeout_s,
                    partial=partial,
                )
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def take_buffered(self, prefix: bytes) -> bool:
        """Remove ``prefix`` if the bytes already received start with it, without waiting
        for more (an optional trailer such as the CR LF some devices send after an ACK)."""
        if prefix and self._buf.startswith(prefix):
            del self._buf[: len(prefix)]
            return True
        return False

    def check_replayed(self) -> None:
        """End of a replayed session: raise :class:`ReplayMismatch` when captured traffic
        was left over, i.e. events the driver never replayed
        (:meth:`ReplayPort.check_exhausted`) or received bytes no frame consumed."""
        check = getattr(self.port, "check_exhausted", None)
        if check is None:
            raise TypeError(f"{self.name} is not a replay")
        check()
        if self._buf:
            raise ReplayMismatch(
                f"{len(self._buf)} received byte(s) that no frame consumed: "
                f"{bytes(self._buf[:64])!r}",
                source=self.name,
            )

    def lines(self, timeout_s: float) -> Iterator[bytes]:
        """Lines until one does not arrive within ``timeout_s`` (which raises)."""
        while True:
            yield self.read_line(timeout_s)

    # -- lifetime
    def close(self) -> None:
        """Close the port and the recorder (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.port.close()
        if self.recorder is not None:
            self.recorder.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_transport(
    url: str,
    settings: SerialSettings | None = None,
    *,
    record_to: str | Path | None = None,
    meta: Mapping[str, Any] | None = None,
    max_line: int = 4096,
) -> Transport:
    """Open ``url`` (see :class:`SerialPort`), optionally recording the session to a capture.

    ``meta`` goes into the capture header.
    """
    recorder = None
    if record_to is not None:
        recorder = SessionRecorder(record_to, {"url": url, **dict(meta or {})})
    try:
        return Transport.open(url, settings, recorder=recorder, max_line=max_line)
    except BaseException:
        if recorder is not None:
            recorder.close()
            os.unlink(recorder.path)
        raise
