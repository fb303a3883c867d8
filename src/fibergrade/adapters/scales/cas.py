"""CAS CI-series weighing indicators, as used in meat plants (scales.md, "CAS CI-series").

Host commands are ``dd RW`` (read), ``dd MZ`` (zero), ``dd MT`` (tare) where ``dd`` is the
two-digit device address (profile ``scale.device_id``); this module sends them as
``01RW`` + CR LF, with no space between address and command: scales.md writes ``dd RW``
and does not say whether the space is sent [unsourced: the project's reading]. Replies:
``!`` cannot execute, ``?`` bad command (each followed by CR LF, 3 bytes), or a 22-byte data
frame::

    offset  0-1  ST | US | OL      stable / unstable / overload
            2    ,
            3-4  GS | NT           gross / net
            5    ,
            6    device id byte    (the address as a byte value)
            7    lamp byte         bits: 6 stable, 4 hold, 3 printer, 2 gross, 1 tare, 0 zero
            8    ,
            9-16 8 data bytes      value right-aligned with sign and point: "  12.345"
            17   space
            18-19 unit             "kg"
            20-21 CR LF

The frame carries binary bytes (id and lamp may be any value, even LF), so it is read as a
fixed 22-byte frame, not as a line. The device's stability flag is ``ST`` together with
lamp bit 6; a frame where they disagree is refused as garbage. This module's reading of
scales.md: the indicator answers ``MZ``/``MT`` with a data frame after executing them
[unsourced]; the driver accepts a zero only when that frame shows the zero lamp (and 0), a
tare only when it is a net frame with the tare lamp (scales.md gives the lamp bits).
"""

from __future__ import annotations

import re

from fibergrade.adapters.errors import (
    CommandNotUnderstood,
    FrameError,
    NotExecutable,
    Overload,
    Underload,
)
from fibergrade.adapters.scales.base import Reading, ScaleBackend, split_lines

PROTOCOL = "cas"
EOL = b"\r\n"
FRAME_LEN = 22
REPLY_CANNOT = b"!" + EOL
REPLY_BAD_COMMAND = b"?" + EOL
LAMP_STABLE = 1 << 6
LAMP_HOLD = 1 << 4
LAMP_PRINTER = 1 << 3
LAMP_GROSS = 1 << 2
LAMP_TARE = 1 << 1
LAMP_ZERO = 1 << 0

#: the 8 data bytes of a reading. scales.md gives only "8 data bytes"; right-aligned with
#: leading spaces, an optional sign before the digits and an optional point is this module's
#: reading [unsourced]. Spaces only lead: ``  1 0.00`` is garbage, not 10.0.
_NUMBER_RE = re.compile(r"^ *[+-]?\d+(?:\.\d+)?$", re.ASCII)
#: the 8 data bytes of an ``OL`` frame as this module writes them (``      OL``, ``-OL`` for
#: under range) [unsourced: scales.md names the OL header, not its data field]
_OL_DATA_RE = re.compile(r"^ *(?P<sign>-?)OL$", re.ASCII)
EXPECTED = "a 22-byte CAS frame 'ST,GS,<id><lamp>,<8 data> kg' CR LF (scales.md)"


def command(device_id: int, op: str) -> bytes:
    """``command(1, "RW") == b"01RW\\r\\n"``."""
    if not 0 <= device_id <= 99 or op not in ("RW", "MZ", "MT"):
        raise ValueError(f"bad CAS command {device_id!r} {op!r}")
    return f"{device_id:02d}{op}".encode("ascii") + EOL


def parse_frame(
    frame: bytes,
    *,
    device_id: int,
    scale_id: str | None = None,
    source: str | None = None,
) -> Reading:
    """Parse a 22-byte data frame (CR LF included)."""
    if len(frame) != FRAME_LEN or not frame.endswith(EOL):
        raise FrameError(
            f"frame of {len(frame)} bytes", source=source, frame=frame, expected=EXPECTED
        )
    head, gn = frame[0:2], frame[3:5]
    if (frame[2:3], frame[5:6], frame[8:9], frame[17:18]) != (b",", b",", b",", b" "):
        raise FrameError("separators out of place", source=source, frame=frame, expected=EXPECTED)
    if head not in (b"ST", b"US", b"OL") or gn not in (b"GS", b"NT"):
        raise FrameError("unknown header", source=source, frame=frame, expected=EXPECTED)
    if frame[6] != device_id:
        raise FrameError(
            f"frame from device {frame[6]}, expected device {device_id}",
            source=source,
            frame=frame,
            expected=EXPECTED,
        )
    data_b, unit_b = frame[9:17], frame[18:20]
    if any(b < 0x20 or b > 0x7E for b in data_b + unit_b):
        raise FrameError(
            "non-printable data or unit", source=source, frame=frame, expected=EXPECTED
        )
    data = data_b.decode("ascii")
    unit = unit_b.decode("ascii").strip()
    # the whole frame is checked before it is classified: garbage under an OL header is
    # garbage, not an overload
    if not unit:
        raise FrameError("blank unit field", source=source, frame=frame, expected=EXPECTED)
    if head == b"OL":
        m = _OL_DATA_RE.match(data)
        if not m:
            raise FrameError(
                f"bad data field {data!r} in an OL frame",
                source=source,
                frame=frame,
                expected="OL data '      OL' or '     -OL'",
            )
        if m["sign"]:
            raise Underload("out of range, negative (OL)", scale_id=scale_id, source=source)
        raise Overload("overload (OL)", scale_id=scale_id, source=source)
    lamp = frame[7]
    stable = head == b"ST"
    if stable != bool(lamp & LAMP_STABLE):
        raise FrameError(
            "header and stability lamp disagree",
            source=source,
            frame=frame,
            expected="ST with lamp bit 6 set, US with it clear",
        )
    if not _NUMBER_RE.match(data):
        raise FrameError(f"bad data field {data!r}", source=source, frame=frame, expected=EXPECTED)
    return Reading(float(data), unit, stable, raw=frame, gross=gn == b"GS")


# ----------------------------------------------------------------- device side (simulator)


def format_frame(
    header: str,
    *,
    gross: bool,
    device_id: int,
    lamp: int,
    value: float,
    unit: str,
    decimals: int,
    negative: bool = False,
) -> bytes:
    """A 22-byte data frame. For ``OL`` the data field reads ``OL`` (``-OL`` when
    ``negative``: this module's reading of an under-range frame)."""
    data = f"{value:>8.{decimals}f}"
    if header == "OL":
        data = "     -OL" if negative else "      OL"
    if len(data) != 8 or len(unit) > 2:
        raise ValueError("value or unit does not fit the CAS frame")
    return (
        header.encode("ascii")
        + b","
        + (b"GS" if gross else b"NT")
        + b","
        + bytes([device_id, lamp & 0x7F])
        + b","
        + data.encode("ascii")
        + b" "
        + f"{unit:>2}".encode("ascii")
        + EOL
    )


#: the host's commands are CR LF terminated lines
split_commands = split_lines


def parse_command(line: bytes) -> tuple[int, str] | None:
    """``b"01RW"`` -> ``(1, "RW")``; None when it is not a CAS command."""
    m = re.fullmatch(rb"(\d\d) ?(RW|MZ|MT)", line)
    if not m:
        return None
    return int(m[1]), m[2].decode("ascii")


# ----------------------------------------------------------------- host side (driver)


class CasScale(ScaleBackend):
    """A CAS CI indicator at address ``settings.device_id``."""

    protocol = PROTOCOL

    def _exchange(self, op: str) -> bytes:
        self.transport.discard_input()
        self.transport.write(command(self.settings.device_id, op))
        timeout = self.settings.reply_timeout_s
        head = self.transport.read_exact(3, timeout)
        if head == REPLY_CANNOT:
            raise NotExecutable(f"{op} cannot be executed now (!)", **self._ctx)
        if head == REPLY_BAD_COMMAND:
            raise CommandNotUnderstood(f"{op} not understood (?)", **self._ctx)
        return head + self.transport.read_exact(FRAME_LEN - 3, timeout)

    def _frame(self, op: str) -> Reading:
        return parse_frame(self._exchange(op), device_id=self.settings.device_id, **self._ctx)

    def read_immediate(self) -> Reading:
        """``dd RW``: the current reading (``ST`` + lamp bit 6 means stable)."""
        return self._frame("RW")

    def _lamp(self, r: Reading) -> int:
        return r.raw[7]  # parse_frame checked the 22-byte layout

    def zero(self) -> None:
        """``dd MZ``: zero, confirmed by the reply frame, else :class:`NotExecutable`.

        The reply must show the zero lamp (scales.md: "Lamp bits: ... 0 zero") and the value
        0 (a zeroed display reads 0: [unsourced], the reference gives the lamp only). That
        the indicator answers MZ with a data frame at all is this module's reading of
        scales.md [unsourced]; ``!`` (cannot execute) and ``?`` raise as for any command.
        """
        r = self._frame("MZ")
        if not self._lamp(r) & LAMP_ZERO or r.value != 0:
            raise NotExecutable(
                f"zero not confirmed: the reply to MZ shows {r.value:g} {r.unit} with the "
                f"zero lamp (bit 0) {'set' if self._lamp(r) & LAMP_ZERO else 'clear'}; "
                "expected 0 with the zero lamp set",
                **self._ctx,
            )

    def tare(self) -> None:
        """``dd MT``: tare, confirmed by the reply frame, else :class:`NotExecutable`.

        The reply must be a net frame (``NT``) with the tare lamp set (scales.md: "`GS|NT`",
        "Lamp bits: ... 2 gross, 1 tare"); it shows the net weight, not the tare weight, so
        nothing is returned. As for :meth:`zero`, the reply being a data frame is this
        module's reading [unsourced].
        """
        r = self._frame("MT")
        if r.gross or not self._lamp(r) & LAMP_TARE:
            raise NotExecutable(
                f"tare not confirmed: the reply to MT is a {'gross (GS)' if r.gross else 'net'}"
                f" frame with the tare lamp (bit 1) "
                f"{'set' if self._lamp(r) & LAMP_TARE else 'clear'}; expected a net (NT) frame "
                "with the tare lamp set",
                **self._ctx,
            )
