"""Sartorius SBI (scales.md, "Sartorius SBI"). Factory setting: 1200 baud, 7 data bits,
odd parity, 1 stop bit, hardware handshake (RTS/CTS): the profile must say so, a port left
at 9600 8N1 reads nothing but garbage.

Commands (no terminator)::

    ESC P   print: the scale sends one reading
    ESC T   tare/zero          ESC U   tare          ESC V   zero

SBI sends no acknowledgement for tare and zero; the driver confirms them by polling
``ESC P`` until the scale shows a stable zero (else :class:`NotExecutable`).

Reply: 16 characters ``sign, space, 8 characters of value (leading zeros as spaces), space,
3 unit characters, CR LF``; the 22-character format adds a 6-character ID header such as
``N     ``. Unstable readings leave the unit blank: a blank unit is the device's "not
stable" flag. Status texts in the value field: ``H`` overload, ``L`` underload, ``Err ##``.
Examples (without CR LF)::

    "+   123.45 g  "        stable 123.45 g
    "+   123.41    "        dynamic
    "N     +   123.45 g  "  22-character format
    "         H    "        overload
"""

from __future__ import annotations

import re

from fibergrade.adapters.errors import DeviceError, FrameError, NotExecutable, Overload, Underload
from fibergrade.adapters.scales.base import Reading, ScaleBackend

PROTOCOL = "sbi"
ESC = b"\x1b"
CMD_PRINT = ESC + b"P"
CMD_TARE_ZERO = ESC + b"T"
CMD_TARE = ESC + b"U"
CMD_ZERO = ESC + b"V"
EOL = b"\r\n"
#: characters of a reply without CR LF: 14, or 20 with the ID header
BODY_LEN = 14
ID_LEN = 6

_VALUE_RE = re.compile(r"^ *\d+(?:\.\d+)?$|^ *\.\d+$")
_ERR_RE = re.compile(r"^Err *(?P<code>\d{1,3})$")
_ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9# ]{5}$")
EXPECTED = (
    "a 16-character SBI reply: sign, space, 8-character value, space, 3-character unit, "
    "CR LF (scales.md)"
)


def parse_reading(
    frame: bytes,
    *,
    scale_id: str | None = None,
    source: str | None = None,
) -> Reading:
    """Parse a print reply (without CR LF). A blank unit means not stable (scales.md:
    "Unstable readings leave the unit blank on many models"); the reading then has unit
    None: the unit is not guessed, and such a reading is never recorded as a weight."""
    if any(b < 0x20 or b > 0x7E for b in frame):
        raise FrameError(
            "non-printable bytes in reply", source=source, frame=frame, expected=EXPECTED
        )
    text = frame.decode("ascii")
    if len(text) == BODY_LEN + ID_LEN and _ID_RE.match(text[:ID_LEN]):
        ident, body = text[:ID_LEN].strip(), text[ID_LEN:]
    elif len(text) == BODY_LEN:
        ident, body = "", text
    else:
        raise FrameError(
            f"reply of {len(text) + 2} characters", source=source, frame=frame, expected=EXPECTED
        )
    sign, value, unit = body[0], body[2:10], body[11:14]
    status = value.strip()
    if body[1] != " " or body[10] != " " or sign not in "+- ":
        # status texts may spill over the separators on some models: judge by content
        status = body.strip()
    if status in ("H", "High"):
        raise Overload(f"overload ({status})", scale_id=scale_id, source=source)
    if status in ("L", "Low"):
        raise Underload(f"underload ({status})", scale_id=scale_id, source=source)
    m = _ERR_RE.match(status)
    if m:
        raise DeviceError(f"device error Err {m['code']}", scale_id=scale_id, source=source)
    if body[1] != " " or body[10] != " " or sign not in "+- " or not _VALUE_RE.match(value):
        raise FrameError("not an SBI reading", source=source, frame=frame, expected=EXPECTED)
    unit_s = unit.strip()
    if unit_s and not unit_s.isprintable():
        raise FrameError("bad unit", source=source, frame=frame, expected=EXPECTED)
    number = float(value)
    if sign == "-":
        number = -number
    stable = bool(unit_s)
    # [unsourced] scales.md shows the 22-character ID header only as ``N     `` and does not
    # say what it means: N as net and G as gross is the project's reading, not the
    # reference's; the 16-character format says neither (None)
    gross = None
    if ident[:1] == "N":
        gross = False
    elif ident[:1] == "G":
        gross = True
    return Reading(number, unit_s or None, stable, raw=frame, gross=gross)


# ----------------------------------------------------------------- device side (simulator)


def format_reading(
    value: float, unit: str, stable: bool, decimals: int, *, ident: str | None = None
) -> bytes:
    """A print reply; the unit is left blank when not ``stable``; ``ident`` (e.g. ``"N"``)
    selects the 22-character format."""
    sign = "-" if value < 0 else "+"
    num = f"{abs(value):.{decimals}f}"
    if len(num) > 8:
        raise ValueError(f"value {value} does not fit the 8-character SBI field")
    body = f"{sign} {num:>8} {(unit if stable else ''):<3}"
    head = f"{ident:<6}" if ident else ""
    return (head + body).encode("ascii") + EOL


def format_status(text: str) -> bytes:
    """A status reply (``H``, ``L``, ``Err 02``) in the value field."""
    return f"  {text:>8}    ".encode("ascii") + EOL


def split_commands(buf: bytearray) -> list[bytes]:
    """Remove and return complete ``ESC x`` commands from ``buf`` (other bytes dropped)."""
    out = []
    while True:
        i = buf.find(ESC)
        if i < 0:
            buf.clear()
            return out
        if i + 1 >= len(buf):
            del buf[:i]
            return out
        out.append(bytes(buf[i : i + 2]))
        del buf[: i + 2]


# ----------------------------------------------------------------- host side (driver)


class SbiScale(ScaleBackend):
    """A Sartorius balance in SBI mode: ``ESC P`` readings, ``ESC V`` zero, ``ESC U`` tare."""

    protocol = PROTOCOL

    def read_immediate(self) -> Reading:
        """``ESC P``: one reading; a blank unit means not stable."""
        line = self._command_line(CMD_PRINT)
        return parse_reading(line, **self._ctx)

    def _confirmed(self, command: bytes, what: str) -> None:
        """Send a command SBI does not acknowledge, then poll until the scale shows a stable
        zero (|value| <= e/2), or raise :class:`NotExecutable` after the stability timeout.

        [unsourced] scales.md lists ESC T/U/V but says nothing of how to confirm them; a
        stable reading within half a verification interval of 0 is the project's rule (a
        display rounded to e shows 0 for it)."""
        s = self.settings
        self.transport.discard_input()
        self.transport.write(command)
        clock = self.transport.clock
        deadline = clock() + s.stability_timeout_s
        while True:
            self.transport.sleep(s.poll_interval_s)
            r = self.read_immediate()
            # [unsourced] the e/2 tolerance is the project's rule (see the docstring)
            if r.device_stable and abs(r.value) <= s.e / 2 * (1 + 1e-6):
                return
            if clock() >= deadline:
                shown = f"{r.value:g} {r.unit}" if r.unit else f"{r.value:g}"
                raise NotExecutable(
                    f"{what} not confirmed: the scale shows {shown}"
                    f"{'' if r.device_stable else ' (not stable)'} "
                    f"{s.stability_timeout_s:g} s after the command",
                    **self._ctx,
                )

    def zero(self) -> None:
        """``ESC V``; SBI sends no acknowledgement, so the driver polls ``ESC P`` until the
        scale shows a stable zero."""
        self._confirmed(CMD_ZERO, "zero")

    def tare(self) -> None:
        """``ESC U``; confirmed like :meth:`zero` (net shows zero). The tare weight is not
        reported."""
        self._confirmed(CMD_TARE, "tare")
