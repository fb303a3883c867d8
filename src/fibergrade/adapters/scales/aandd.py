"""A&D balances and indicators (EK, GX, GF, FX-i, HC-i; scales.md, "A&D").

Commands end with CR LF: ``Q`` immediate reading, ``S`` stable reading, ``SI``, ``SIR``,
``Z`` zero, ``T`` tare. Reading replies (without CR LF)::

    ST,+00123.45  g    header ST stable, US unstable, QT count, OL out of range
    OL,+999999.9       out of range (sign + overload, - underload: this module's reading)

A reply is a 2-character header, a comma, 9 characters of data with sign and point, and a
3-character unit. ``Z`` and ``T`` are acknowledged with ACK (0x06), optionally followed by
CR LF; errors are ``EC,Exx``: E0 communication, E1 undefined command, E2 not ready, E4 too
many characters, E6 format, E7 out of range. ``QT`` (counting mode) is not a weight and is
refused.
"""

from __future__ import annotations

import re

from fibergrade.adapters.errors import (
    CommandNotUnderstood,
    DeviceError,
    DeviceTransmissionError,
    FrameError,
    NotExecutable,
    Overload,
    ScaleError,
    Underload,
    UnitMismatch,
)
from fibergrade.adapters.scales.base import Reading, ScaleBackend, split_lines

PROTOCOL = "and"
EOL = b"\r\n"
ACK = b"\x06"
CMD_IMMEDIATE = b"Q" + EOL
CMD_STABLE = b"S" + EOL
CMD_ZERO = b"Z" + EOL
CMD_TARE = b"T" + EOL

_READING_RE = re.compile(r"^(?P<hdr>ST|US|QT|OL),(?P<data>.{9})(?P<unit>.{3})?$")
#: the data field: scales.md, "9-character data with sign and point" (``+00123.45``,
#: ``OL,+999999.9``): a sign, digits zero-padded on the left (the reference's examples pad
#: with zeros, never spaces), one point. The length (9) is fixed by _READING_RE.
_NUMBER_RE = re.compile(r"^[+-]\d+\.\d+$", re.ASCII)
#: the data field in counting mode (QT): a count, which has no point [unsourced: scales.md
#: names QT "count" and gives no example; it is refused as not a weight anyway]
_COUNT_RE = re.compile(r"^[+-]\d{8}$", re.ASCII)
#: scales.md: "3-character unit", right-aligned in its example (``  g``)
_UNIT_RE = re.compile(r"^ {0,2}[^ ]+$")
_EC_RE = re.compile(r"^EC,E(?P<code>\d)$")
#: EC codes -> (error class, meaning) as listed in scales.md
EC_CODES: dict[str, tuple[type[ScaleError], str]] = {
    "0": (DeviceTransmissionError, "communication error (EC,E0)"),
    "1": (CommandNotUnderstood, "undefined command (EC,E1)"),
    "2": (NotExecutable, "not ready (EC,E2)"),
    "4": (CommandNotUnderstood, "too many characters (EC,E4)"),
    "6": (CommandNotUnderstood, "format error (EC,E6)"),
    "7": (NotExecutable, "out of range (EC,E7)"),
}
EXPECTED = "an A&D reply such as 'ST,+00123.45  g', ACK or 'EC,Exx' (scales.md)"


def _check_ascii(frame: bytes, source: str | None) -> str:
    if any(b < 0x20 or b > 0x7E for b in frame):
        raise FrameError(
            "non-printable bytes in reply", source=source, frame=frame, expected=EXPECTED
        )
    return frame.decode("ascii")


def raise_if_error(frame: bytes, *, scale_id: str | None = None, source: str | None = None) -> None:
    """Raise the typed error an ``EC,Exx`` reply stands for (no-op for other frames)."""
    text = frame.decode("ascii", "replace")
    m = _EC_RE.match(text)
    if m:
        cls, msg = EC_CODES.get(m["code"], (DeviceError, f"device error (EC,E{m['code']})"))
        raise cls(msg, scale_id=scale_id, source=source)


def parse_reading(
    frame: bytes, *, scale_id: str | None = None, source: str | None = None
) -> Reading:
    """Parse a reading reply (without CR LF); raises typed errors for ``OL`` and ``EC``."""
    raise_if_error(frame, scale_id=scale_id, source=source)
    text = _check_ascii(frame, source)
    m = _READING_RE.match(text)
    if not m:
        raise FrameError("not an A&D reading", source=source, frame=frame, expected=EXPECTED)
    hdr, data, unit = m["hdr"], m["data"], m["unit"]
    # the whole frame is checked before it is classified: garbage under an OL or QT header
    # is garbage, not an overload or a counting mode
    if not (_COUNT_RE if hdr == "QT" else _NUMBER_RE).match(data):
        raise FrameError(
            f"bad data field {data!r}",
            source=source,
            frame=frame,
            expected="9-character data with sign and point, such as '+00123.45' (scales.md)",
        )
    # scales.md's overload example ``OL,+999999.9`` carries no unit; every other reply does
    if (unit is None and hdr != "OL") or (unit is not None and not _UNIT_RE.match(unit)):
        raise FrameError(
            "bad or missing unit field",
            source=source,
            frame=frame,
            expected="a 3-character unit, right-aligned, such as '  g' (scales.md)",
        )
    if hdr == "OL":
        if data.startswith("-"):
            raise Underload("out of range, negative (OL,-)", scale_id=scale_id, source=source)
        raise Overload("out of range (OL,+)", scale_id=scale_id, source=source)
    if hdr == "QT":
        raise UnitMismatch(
            "the balance is in counting mode (QT), not weighing", scale_id=scale_id, source=source
        )
    return Reading(float(data), (unit or "").strip(), hdr == "ST", raw=frame)


# ----------------------------------------------------------------- device side (simulator)


def format_reading(header: str, value: float, unit: str, decimals: int) -> bytes:
    """``ST,+00123.45  g\\r\\n``: sign and 8 characters zero-padded, unit right-aligned.

    ``decimals`` must be >= 1: the data field carries a point (scales.md)."""
    if decimals < 1:
        raise ValueError("an A&D data field carries a point: decimals must be >= 1")
    sign = "-" if value < 0 else "+"
    num = f"{abs(value):0{8}.{decimals}f}"
    if len(num) > 8:
        raise ValueError(f"value {value} does not fit the A&D data field")
    return f"{header},{sign}{num}{unit:>3}".encode("ascii") + EOL


def format_out_of_range(negative: bool, unit: str) -> bytes:
    """``OL,+999999.9  g\\r\\n`` (``-`` for underload)."""
    return f"OL,{'-' if negative else '+'}999999.9{unit:>3}".encode("ascii") + EOL


def format_error(code: int) -> bytes:
    """``EC,E1\\r\\n``."""
    return f"EC,E{code}".encode("ascii") + EOL


def format_ack() -> bytes:
    """ACK followed by CR LF."""
    return ACK + EOL


#: the host's commands are CR LF terminated lines
split_commands = split_lines


# ----------------------------------------------------------------- host side (driver)


class AndScale(ScaleBackend):
    """An A&D balance: ``Q`` readings, ``S`` stable reading, ``Z`` zero, ``T`` tare."""

    protocol = PROTOCOL

    def _reply(self, command: bytes) -> bytes:
        line = self._command_line(command, immediate=ACK)
        while line == b"":  # the CR LF after an earlier ACK that arrived late
            line = self.transport.read_line(
                self.settings.reply_timeout_s, immediate=ACK, require_cr=self.crlf
            )
        if line == ACK:
            # the ACK's optional CR LF (this module's reading: scales.md gives only "ACK is
            # 0x06" [unsourced]) is part of the reply: consume it when it came with the ACK
            self.transport.take_buffered(EOL)
        return line

    def read_immediate(self) -> Reading:
        """``Q``: the current reading, ``ST`` stable or ``US`` unstable."""
        return parse_reading(self._reply(CMD_IMMEDIATE), **self._ctx)

    def read_device_stable(self) -> Reading:
        """``S``: the device's own stable reading."""
        r = parse_reading(self._reply(CMD_STABLE), **self._ctx)
        if not r.device_stable:
            raise FrameError(
                "unstable reading in reply to S",
                source=self.transport.name,
                frame=r.raw,
                expected="'ST,...'",
            )
        return r

    def _acknowledged(self, command: bytes, what: str) -> None:
        line = self._reply(command)
        if line == ACK:
            return
        raise_if_error(line, **self._ctx)
        raise FrameError(
            f"no acknowledgement for {what}",
            source=self.transport.name,
            frame=line,
            expected="ACK (0x06) or 'EC,Exx'",
        )

    def zero(self) -> None:
        """``Z``: zero; the balance acknowledges with ACK."""
        self._acknowledged(CMD_ZERO, "zero")

    def tare(self) -> None:
        """``T``: tare; the balance acknowledges with ACK (the tare weight is not sent)."""
        self._acknowledged(CMD_TARE, "tare")
