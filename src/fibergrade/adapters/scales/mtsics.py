"""Mettler Toledo MT-SICS (scales.md, "Mettler Toledo MT-SICS"; 9600 8N1, no handshake).

Commands are uppercase ASCII, parameters separated by spaces, ended by CR LF. Replies used
here (field widths vary by model, so replies are parsed with regular expressions, not fixed
columns, as scales.md requires)::

    S   -> S S     100.00 g    stable weight          S I / S + / S -
    SI  -> S S ... | S D ...   immediate (stable / dynamic)
    Z   -> Z A                 zeroed                 Z I / Z + / Z -
    T   -> T S     12.30 g     tare weight stored     T I / T + / T -
    TAC -> TAC A               tare cleared
    I4  -> I4 A "B123456789"   serial number
    ES / ET / EL               syntax / transmission / logical error

``S I`` means "cannot execute now (taring, stability timeout)"; ``S +``/``S -`` overload and
underload. For ``Z``/``T``, ``+``/``-`` mean the zero or tare range is exceeded (refused as
not executable). The parsing and formatting functions here are used both by
:class:`MtSicsScale` and by the MT-SICS simulator.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fibergrade.adapters.errors import (
    CommandNotUnderstood,
    DeviceTransmissionError,
    FrameError,
    NotExecutable,
    Overload,
    ScaleError,
    Underload,
)
from fibergrade.adapters.scales.base import Reading, ScaleBackend, split_lines

PROTOCOL = "mt-sics"
EOL = b"\r\n"

_WEIGHT_RE = re.compile(
    r"^(?P<hdr>[A-Z][A-Z0-9]{0,3}) +(?P<st>[SD]) +(?P<val>[+-]?\d+(?:\.\d+)?)"
    r" +(?P<unit>[A-Za-z%/][A-Za-z0-9%/]{0,4})$"
)
_STATUS_RE = re.compile(r"^(?P<hdr>[A-Z][A-Z0-9]{0,3}) +(?P<st>[AISD+-])$")
_TEXT_RE = re.compile(r'^(?P<hdr>I[0-9]{1,2}) +(?P<st>A) +"(?P<text>[ -!#-~]*)"$')
_ERRORS = {
    "ES": (CommandNotUnderstood, "syntax error (ES): the scale did not understand the command"),
    "ET": (
        DeviceTransmissionError,
        "transmission error (ET): the scale received a faulty command (parity, framing)",
    ),
    "EL": (NotExecutable, "logical error (EL): the scale cannot execute the command"),
}
#: command -> header of its reply (``SI`` is answered with ``S``, ``@`` with ``I4``)
REPLY_HEADER = {
    "S": "S",
    "SI": "S",
    "Z": "Z",
    "ZI": "ZI",
    "T": "T",
    "TI": "TI",
    "TA": "TA",
    "TAC": "TAC",
    "I4": "I4",
    "@": "I4",
}
EXPECTED = "an MT-SICS reply such as 'S S     100.00 g' (scales.md)"


@dataclass(frozen=True)
class MtReply:
    """A syntactically valid MT-SICS reply line."""

    header: str
    status: str
    value: float | None = None
    unit: str | None = None
    text: str | None = None
    raw: bytes = b""


def command(name: str, *params: str) -> bytes:
    """Encode a command: ``command("SI") == b"SI\\r\\n"``."""
    return " ".join((name, *params)).encode("ascii") + EOL


def _ascii_text(frame: bytes, source: str | None) -> str:
    if any(b < 0x20 or b > 0x7E for b in frame):
        raise FrameError(
            "non-printable bytes in reply", source=source, frame=frame, expected=EXPECTED
        )
    return frame.decode("ascii")


def parse_reply(frame: bytes, *, scale_id: str | None = None, source: str | None = None) -> MtReply:
    """Parse one reply line (without CR LF).

    Raises the device's errors for ``ES``/``ET``/``EL`` and :class:`FrameError` for
    anything that is not an MT-SICS reply.
    """
    text = _ascii_text(frame, source).strip(" ")
    if text in _ERRORS:
        cls, msg = _ERRORS[text]
        raise cls(msg, scale_id=scale_id, source=source)
    m = _WEIGHT_RE.match(text)
    if m:
        return MtReply(m["hdr"], m["st"], float(m["val"]), m["unit"], raw=frame)
    m = _STATUS_RE.match(text)
    if m:
        return MtReply(m["hdr"], m["st"], raw=frame)
    m = _TEXT_RE.match(text)
    if m:
        return MtReply(m["hdr"], m["st"], text=m["text"], raw=frame)
    raise FrameError("not an MT-SICS reply", source=source, frame=frame, expected=EXPECTED)


def weight_from_reply(
    reply: MtReply, *, scale_id: str | None = None, source: str | None = None
) -> Reading:
    """The reading in an ``S``/``SI``/``TI`` reply, or the typed error its status means."""
    st = reply.status
    if st == "+":
        raise Overload("overload (S +)", scale_id=scale_id, source=source)
    if st == "-":
        raise Underload("underload (S -)", scale_id=scale_id, source=source)
    if st == "I":
        raise NotExecutable(
            "weight not available now (S I: taring or stability timeout)",
            scale_id=scale_id,
            source=source,
        )
    if st in "SD" and reply.value is not None and reply.unit is not None:
        return Reading(reply.value, reply.unit, st == "S", raw=reply.raw)
    raise FrameError(
        "weight reply without a value", source=source, frame=reply.raw, expected=EXPECTED
    )


# ----------------------------------------------------------------- device side (simulator)


def format_weight(header: str, status: str, value: float, unit: str, decimals: int) -> bytes:
    """A weight reply as a balance sends it: ``S S     100.00 g\\r\\n``."""
    return f"{header} {status} {value:>10.{decimals}f} {unit}".encode("ascii") + EOL


def format_status(header: str, status: str) -> bytes:
    """A status-only reply: ``Z A\\r\\n``, ``S +\\r\\n``."""
    return f"{header} {status}".encode("ascii") + EOL


def format_text(header: str, text: str) -> bytes:
    """A text reply: ``I4 A "B123456789"\\r\\n``."""
    return f'{header} A "{text}"'.encode("ascii") + EOL


def format_error(code: str) -> bytes:
    """``ES``, ``ET`` or ``EL`` with CR LF."""
    if code not in _ERRORS:
        raise ValueError(f"unknown MT-SICS error code {code!r}")
    return code.encode("ascii") + EOL


#: the host's commands are CR LF terminated lines
split_commands = split_lines


# ----------------------------------------------------------------- host side (driver)


class MtSicsScale(ScaleBackend):
    """A balance speaking MT-SICS level 0/1: ``SI`` for readings, ``Z``, ``T``, ``S``."""

    protocol = PROTOCOL

    def _ask(self, name: str) -> MtReply:
        line = self._command_line(command(name))
        reply = parse_reply(line, **self._ctx)
        if reply.header != REPLY_HEADER[name]:
            raise FrameError(
                f"reply to {name} expected",
                source=self.transport.name,
                frame=line,
                expected=f"a reply starting with {REPLY_HEADER[name]!r}",
            )
        return reply

    def read_immediate(self) -> Reading:
        """``SI``: the current reading, stable (``S S``) or dynamic (``S D``)."""
        return weight_from_reply(self._ask("SI"), **self._ctx)

    def read_device_stable(self) -> Reading:
        """``S``: the device's own stable weight (it waits for stability itself)."""
        r = weight_from_reply(self._ask("S"), **self._ctx)
        if not r.device_stable:
            raise FrameError(
                "dynamic reading in reply to S",
                source=self.transport.name,
                frame=r.raw,
                expected="'S S <value> <unit>'",
            )
        return r

    def _status_command(self, name: str, what: str) -> MtReply:
        reply = self._ask(name)
        st = reply.status
        errors: dict[str, tuple[type[ScaleError], str]] = {
            "I": (NotExecutable, f"{what} not executed ({name} I: busy or not stable)"),
            "+": (NotExecutable, f"{what} refused ({name} +: upper limit of the range exceeded)"),
            "-": (NotExecutable, f"{what} refused ({name} -: lower limit of the range exceeded)"),
        }
        if st in errors:
            cls, msg = errors[st]
            raise cls(msg, **self._ctx)
        return reply

    def zero(self) -> None:
        """``Z``: zero the balance (``Z A``)."""
        reply = self._status_command("Z", "zero")
        if reply.status != "A":
            raise FrameError(
                "unexpected reply to Z",
                source=self.transport.name,
                frame=reply.raw,
                expected="'Z A'",
            )

    def tare(self) -> Reading:
        """``T``: tare; returns the stored tare weight (``T S  12.30 g``)."""
        reply = self._status_command("T", "tare")
        if reply.status != "S" or reply.value is None or reply.unit is None:
            raise FrameError(
                "unexpected reply to T",
                source=self.transport.name,
                frame=reply.raw,
                expected="'T S <value> <unit>'",
            )
        return Reading(reply.value, reply.unit, True, raw=reply.raw)

    def clear_tare(self) -> None:
        """``TAC``: clear the tare memory."""
        reply = self._status_command("TAC", "clear tare")
        if reply.status != "A":
            raise FrameError(
                "unexpected reply to TAC",
                source=self.transport.name,
                frame=reply.raw,
                expected="'TAC A'",
            )

    def serial_number(self) -> str:
        """``I4``: the balance's serial number (a good ``scale_id``)."""
        reply = self._ask("I4")
        if reply.text is None:
            raise FrameError(
                "no serial number in reply to I4",
                source=self.transport.name,
                frame=reply.raw,
                expected="'I4 A \"<serial>\"'",
            )
        return reply.text
