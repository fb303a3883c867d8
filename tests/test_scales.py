"""Scale drivers: command/response tables per protocol, the stability rule, live simulators
on real ptys and TCP, fault injection, captured-session replay, and fuzzing of every parser.

Protocol facts: shared/reference/scales.md. The tables follow PyMeasure's
``expected_protocol`` idea: the driver must write exactly the command and is handed the
reply, through a :class:`ReplayPort` (real transport code, no mock).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capture_helpers import old_format_copy
from fibergrade.adapters.errors import (
    CommandNotUnderstood,
    DeviceError,
    DeviceTransmissionError,
    Disconnected,
    FrameError,
    InstrumentError,
    InstrumentTimeout,
    NotExecutable,
    Overload,
    ReplayMismatch,
    StabilityTimeout,
    Underload,
    UnitMismatch,
    Unstable,
    WeightOutOfRange,
)
from fibergrade.adapters.profiles import ScaleSettings, load_profile
from fibergrade.adapters.scales import DRIVERS, aandd, cas, make_scale, mtsics, open_scale, sbi
from fibergrade.adapters.scales.base import Reading, ScaleBackend, Weighing, decimals_for
from fibergrade.adapters.simulators import Faults, start_simulator
from fibergrade.adapters.transport import CaptureEvent, ReplayPort, Transport
from fibergrade.errors import FibergradeError

pytestmark = pytest.mark.timeout(60)

CAPTURES = Path(__file__).resolve().parents[1] / "instruments" / "captures"
PROFILES = {"mt-sics": "mt-sics-scale", "sbi": "sartorius-sbi", "and": "and-scale", "cas": "cas-ci"}
#: the wall-clock start (started_at) of crafted captures, long before any replay
START = datetime(2024, 9, 17, 6, 41, 2, 250000, tzinfo=UTC)
GRAMS = ScaleSettings(unit="g", max=620.0, e=0.01, min=0.2, reply_timeout_s=1.0)
KILOS = ScaleSettings(unit="kg", max=300.0, e=0.1, min=2.0, reply_timeout_s=1.0)


#: transports of the strict scripts of the running test (checked when it ends)
_STRICT: list[Transport] = []


@pytest.fixture(autouse=True)
def _scripts_are_consumed():
    """Every script must be played to its end, as PyMeasure's ``expected_protocol``
    requires: a command the driver did not send or a reply it did not read fails the test."""
    _STRICT.clear()
    yield
    for transport in _STRICT:
        transport.check_replayed()
    _STRICT.clear()


def scripted(
    protocol: str,
    exchanges,
    settings: ScaleSettings = GRAMS,
    *,
    dt: float = 0.0,
    strict: bool = True,
):
    """A driver on a replay of ``exchanges``: (command, reply or None) pairs, ``dt`` apart.

    ``strict`` (the default): when the test ends, the whole script must have been played and
    every reply byte consumed (:meth:`Transport.check_replayed`)."""
    events = []
    for i, (cmd, reply) in enumerate(exchanges):
        events.append(CaptureEvent(i * dt, "tx", cmd))
        if reply is not None:
            events.append(CaptureEvent(i * dt + dt / 10, "rx", reply))
    transport = Transport(ReplayPort(events))
    if strict:
        _STRICT.append(transport)
    return DRIVERS[protocol](transport, settings, scale_id="T1")


# --------------------------------------------------------------------------- tables

MT_READ = [
    (b"S S     100.00 g\r\n", Reading(100.0, "g", True)),
    (b"S D      99.87 g\r\n", Reading(99.87, "g", False)),
    (b"S S 100.00 g\r\n", Reading(100.0, "g", True)),  # widths vary by model
    (b"S S    -12.5 kg\r\n", Reading(-12.5, "kg", True)),
    (b"S +\r\n", Overload),
    (b"S -\r\n", Underload),
    (b"S I\r\n", NotExecutable),
    (b"ES\r\n", CommandNotUnderstood),
    (b"ET\r\n", DeviceTransmissionError),
    (b"EL\r\n", NotExecutable),
    (b"Z A\r\n", FrameError),  # a reply to another command
    (b"S S     1O0.00 g\r\n", FrameError),
    (b"S S     100.00\r\n", FrameError),
    (b"\x00\xffS S 1.0 g\r\n", FrameError),
    (b"S S     100.00 g\n", FrameError),  # LF without CR: scales.md says lines end CR LF
]


@pytest.mark.parametrize(("reply", "expected"), MT_READ)
def test_mt_sics_immediate_table(reply, expected):
    scale = scripted("mt-sics", [(b"SI\r\n", reply)])
    if isinstance(expected, Reading):
        r = scale.read_immediate()
        assert (r.value, r.unit, r.device_stable) == (
            expected.value,
            expected.unit,
            expected.device_stable,
        )
        assert r.raw == reply[:-2]
    else:
        with pytest.raises(expected) as ei:
            scale.read_immediate()
        assert isinstance(ei.value, InstrumentError)


@pytest.mark.parametrize(
    ("command", "reply", "call", "expected"),
    [
        (b"Z\r\n", b"Z A\r\n", "zero", None),
        (b"Z\r\n", b"Z I\r\n", "zero", NotExecutable),
        (b"Z\r\n", b"Z +\r\n", "zero", NotExecutable),
        (b"Z\r\n", b"ES\r\n", "zero", CommandNotUnderstood),
        (b"T\r\n", b"T S     12.30 g\r\n", "tare", Reading(12.3, "g", True)),
        (b"T\r\n", b"T I\r\n", "tare", NotExecutable),
        (b"T\r\n", b"T -\r\n", "tare", NotExecutable),
        (b"S\r\n", b"S S     50.00 g\r\n", "read_device_stable", Reading(50.0, "g", True)),
        (b"S\r\n", b"S I\r\n", "read_device_stable", NotExecutable),
        (b"S\r\n", b"S D     50.00 g\r\n", "read_device_stable", FrameError),
        (b"TAC\r\n", b"TAC A\r\n", "clear_tare", None),
        (b"I4\r\n", b'I4 A "B021002593"\r\n', "serial_number", "B021002593"),
        (b"I4\r\n", b"I4 A\r\n", "serial_number", FrameError),
    ],
)
def test_mt_sics_command_table(command, reply, call, expected):
    scale = scripted("mt-sics", [(command, reply)])
    if isinstance(expected, type) and issubclass(expected, Exception):
        with pytest.raises(expected):
            getattr(scale, call)()
        return
    got = getattr(scale, call)()
    if isinstance(expected, Reading):
        assert (got.value, got.unit, got.device_stable) == (expected.value, expected.unit, True)
    else:
        assert got == expected


SBI_READ = [
    (b"+   123.45 g  \r\n", Reading(123.45, "g", True)),
    (b"+   123.41    \r\n", Reading(123.41, None, False)),  # blank unit: not stable, no unit
    (b"-    12.30 g  \r\n", Reading(-12.3, "g", True)),
    (b" +   12.30 g  \r\n", FrameError),  # sign out of place
    (b"+     0.00 g \r\n", FrameError),  # 15 characters
    (b"N     +   123.45 g  \r\n", Reading(123.45, "g", True)),  # 22-character format
    (b"         H    \r\n", Overload),
    (b"         L    \r\n", Underload),
    (b"    Err 02    \r\n", DeviceError),
    (b"+   12x.45 g  \r\n", FrameError),
    (b"+   123.45 kg \r\n", Reading(123.45, "kg", True)),
    (b"    123.45 g  \r\n", Reading(123.45, "g", True)),  # blank sign is positive
    (b"+   123.45 g  \n", FrameError),  # LF without CR (scales.md: "3 unit characters, CR LF")
]


@pytest.mark.parametrize(("reply", "expected"), SBI_READ)
def test_sbi_print_table(reply, expected):
    scale = scripted("sbi", [(b"\x1bP", reply)])
    if isinstance(expected, Reading):
        r = scale.read_immediate()
        assert (r.value, r.unit, r.device_stable) == (
            expected.value,
            expected.unit,
            expected.device_stable,
        )
    else:
        with pytest.raises(expected):
            scale.read_immediate()


def test_sbi_zero_and_tare_are_confirmed_by_polling():
    zero = b"+     0.00 g  \r\n"
    scale = scripted(
        "sbi",
        [
            (b"\x1bV", None),
            (b"\x1bP", b"+     0.03    \r\n"),
            (b"\x1bP", zero),
            (b"\x1bU", None),
            (b"\x1bP", zero),
        ],
        dt=0.1,
    )
    scale.zero()
    assert scale.tare() is None
    with pytest.raises(ReplayMismatch):
        scale.zero()  # nothing further in the script
    # polls every 0.1 s until the 1 s timeout: ten ESC P, no more
    refused = scripted(
        "sbi",
        [(b"\x1bV", None)] + [(b"\x1bP", b"+    50.00 g  \r\n")] * 10,
        replace(GRAMS, stability_timeout_s=1.0),
        dt=0.1,
    )
    with pytest.raises(NotExecutable):
        refused.zero()


AND_READ = [
    (b"ST,+00123.45  g\r\n", Reading(123.45, "g", True)),
    (b"US,+00123.40  g\r\n", Reading(123.4, "g", False)),
    (b"ST,-00001.20  g\r\n", Reading(-1.2, "g", True)),
    (b"OL,+999999.9\r\n", Overload),
    (b"OL,-999999.9  g\r\n", Underload),
    (b"QT,+00000123 PC\r\n", UnitMismatch),
    (b"EC,E1\r\n", CommandNotUnderstood),
    (b"EC,E0\r\n", DeviceTransmissionError),
    (b"EC,E2\r\n", NotExecutable),
    (b"EC,E9\r\n", DeviceError),
    (b"ST,+00123.45\r\n", FrameError),  # no unit
    (b"XX,+00123.45  g\r\n", FrameError),
    (b"\x06\r\n", FrameError),  # an ACK is no reading
    (b"ST,+00123.45  g\n", FrameError),  # LF without CR (scales.md: "... g` CR LF")
    # scales.md: "9-character data with sign and point", zero-padded in its examples
    (b"ST,+001 3.45  g\r\n", FrameError),  # a space inside the number is not 13.45
    (b"ST,+00001234  g\r\n", FrameError),  # no point: not 1234.0
    (b"ST,+  123.45  g\r\n", FrameError),  # space padding, not the reference's zeros
    (b"ST,00123.45+  g\r\n", FrameError),  # sign out of place
    (b"OL,+99 999.9\r\n", FrameError),  # garbage under an OL header is not an overload
    (b"OL,+999999.9  g\r\n", Overload),
]


@pytest.mark.parametrize(("reply", "expected"), AND_READ)
def test_and_reading_table(reply, expected):
    scale = scripted("and", [(b"Q\r\n", reply)])
    if isinstance(expected, Reading):
        r = scale.read_immediate()
        assert (r.value, r.unit, r.device_stable) == (
            expected.value,
            expected.unit,
            expected.device_stable,
        )
    else:
        with pytest.raises(expected):
            scale.read_immediate()


@pytest.mark.parametrize(
    ("command", "reply", "call", "expected"),
    [
        (b"Z\r\n", b"\x06\r\n", "zero", None),
        (b"Z\r\n", b"\x06", "zero", None),  # ACK without CR LF
        (b"Z\r\n", b"EC,E2\r\n", "zero", NotExecutable),
        (b"T\r\n", b"\x06\r\n", "tare", None),
        (b"T\r\n", b"EC,E7\r\n", "tare", NotExecutable),
        (b"T\r\n", b"ST,+00123.45  g\r\n", "tare", FrameError),
        (b"S\r\n", b"US,+00123.40  g\r\n", "read_device_stable", FrameError),
    ],
)
def test_and_command_table(command, reply, call, expected):
    scale = scripted("and", [(command, reply)])
    if expected is None:
        assert getattr(scale, call)() is None
    else:
        with pytest.raises(expected):
            getattr(scale, call)()


def test_and_ack_then_reading_skips_the_trailing_crlf():
    scale = scripted("and", [(b"Z\r\n", b"\x06"), (b"Q\r\n", b"\r\nST,+00010.00  g\r\n")])
    scale.zero()
    assert scale.read_immediate().value == 10.0


def cas_frame(head=b"ST", gn=b"GS", dev=1, lamp=0x44, data=b"   90.00", unit=b"kg"):
    return head + b"," + gn + b"," + bytes([dev, lamp]) + b"," + data + b" " + unit + b"\r\n"


CAS_READ = [
    (cas_frame(), Reading(90.0, "kg", True)),
    (cas_frame(head=b"US", lamp=0x04, data=b"   89.90"), Reading(89.9, "kg", False)),
    (cas_frame(gn=b"NT", lamp=0x42, data=b"   -1.20"), Reading(-1.2, "kg", True)),
    (cas_frame(dev=1, lamp=0x4A), Reading(90.0, "kg", True)),  # lamp 0x4A: stable, printer, tare
    # lamp byte 0x0A is LF (printer and tare lamps, not stable): data, not a line end
    (cas_frame(head=b"US", gn=b"NT", lamp=0x0A, data=b"   89.90"), Reading(89.9, "kg", False)),
    # lamp byte 0x0D is CR (printer, gross, zero lamps, not stable)
    (cas_frame(head=b"US", lamp=0x0D, data=b"    0.00"), Reading(0.0, "kg", False)),
    (cas_frame(head=b"OL", data=b"      OL"), Overload),
    (cas_frame(head=b"OL", data=b"     -OL"), Underload),
    (cas_frame(head=b"ST", lamp=0x04), FrameError),  # ST without the stability lamp
    (cas_frame(dev=2), FrameError),
    (cas_frame(data=b"   9O.00"), FrameError),
    (cas_frame(data=b"  1 0.00"), FrameError),  # a space inside the number is not 10.0
    (cas_frame(data=b"90.00   "), FrameError),  # spaces only lead (right-aligned)
    (cas_frame(data=b"   90.  "), FrameError),
    (cas_frame(head=b"OL", data=b"xxxxxxxx"), FrameError),  # garbage, not an overload
    (cas_frame(head=b"OL", data=b"      OL", unit=b"  "), FrameError),  # no unit
    (b"!\r\n", NotExecutable),
    (b"?\r\n", CommandNotUnderstood),
    (cas_frame()[:15], InstrumentTimeout),  # truncated: the 22 bytes never arrive
]


@pytest.mark.parametrize(("reply", "expected"), CAS_READ)
def test_cas_frame_table(reply, expected):
    scale = scripted("cas", [(b"01RW\r\n", reply)], KILOS)
    if isinstance(expected, Reading):
        r = scale.read_immediate()
        assert (r.value, r.unit, r.device_stable) == (
            expected.value,
            expected.unit,
            expected.device_stable,
        )
        assert r.gross is (reply[3:5] == b"GS")
    else:
        with pytest.raises(expected):
            scale.read_immediate()


def test_cas_frame_from_device_10_carries_an_lf_as_its_id_byte():
    # device id 10 is byte 0x0A (LF) in offset 6: the frame is read as 22 bytes, not a line
    frame = cas_frame(dev=10, lamp=0x4A)
    assert frame[6:7] == b"\n" and frame[7:8] == b"J" and len(frame) == 22
    scale = scripted("cas", [(b"10RW\r\n", frame)], replace(KILOS, device_id=10))
    r = scale.read_immediate()
    assert (r.value, r.unit, r.device_stable, r.gross) == (90.0, "kg", True, True)
    both = cas_frame(dev=10, head=b"US", lamp=0x0A, data=b"   12.30")  # LF twice
    scale = scripted("cas", [(b"10RW\r\n", both)], replace(KILOS, device_id=10))
    assert scale.read_immediate().value == 12.3


def test_cas_zero_and_tare_commands():
    scale = scripted(
        "cas",
        [(b"01MZ\r\n", cas_frame(lamp=0x45, data=b"    0.00")), (b"01MT\r\n", b"!\r\n")],
        KILOS,
    )
    scale.zero()
    with pytest.raises(NotExecutable):
        scale.tare()


@pytest.mark.parametrize(
    ("op", "reply", "ok"),
    [
        # zero: the reply must show the zero lamp (scales.md lamp bit 0) and 0
        ("MZ", cas_frame(lamp=0x45, data=b"    0.00"), True),
        ("MZ", cas_frame(lamp=0x44, data=b"   90.00"), False),  # any frame is no zero
        ("MZ", cas_frame(lamp=0x44, data=b"    0.00"), False),  # zero lamp clear
        ("MZ", cas_frame(lamp=0x45, data=b"    0.30"), False),  # lamp set, value not 0
        # tare: a net frame (NT) with the tare lamp (bit 1)
        ("MT", cas_frame(gn=b"NT", lamp=0x42, data=b"    0.00"), True),
        ("MT", cas_frame(gn=b"GS", lamp=0x44, data=b"   90.00"), False),  # still gross
        ("MT", cas_frame(gn=b"NT", lamp=0x40, data=b"    0.00"), False),  # tare lamp clear
    ],
)
def test_cas_zero_and_tare_are_confirmed_by_the_reply_frame(op, reply, ok):
    scale = scripted("cas", [(f"01{op}\r\n".encode(), reply)], KILOS)
    call = scale.zero if op == "MZ" else scale.tare
    if ok:
        assert call() is None
    else:
        with pytest.raises(NotExecutable, match="not confirmed"):
            call()


def test_protocol_modules_format_what_they_parse():
    assert mtsics.command("SI") == b"SI\r\n"
    assert mtsics.format_weight("S", "S", 100.0, "g", 2) == b"S S     100.00 g\r\n"
    assert sbi.format_reading(123.45, "g", True, 2) == b"+   123.45 g  \r\n"
    assert len(sbi.format_reading(1.0, "g", False, 2, ident="N")) == 22
    assert aandd.format_reading("ST", 123.45, "g", 2) == b"ST,+00123.45  g\r\n"
    frame = cas.format_frame(
        "ST", gross=True, device_id=1, lamp=0x44, value=90.0, unit="kg", decimals=2
    )
    assert frame == cas_frame()
    assert cas.command(1, "RW") == b"01RW\r\n"
    assert [decimals_for(e) for e in (0.01, 0.02, 0.1, 0.5, 1, 5, 2.5)] == [2, 2, 1, 1, 0, 0, 1]


# --------------------------------------------------------------------------- weighing rules


def mt_series(values, *, dt=0.1, flag="S"):
    """MT-SICS SI exchanges for a series of values, ``dt`` seconds apart."""
    return [
        (b"SI\r\n", mtsics.format_weight("S", f, v, "g", 2))
        for v, f in zip(values, flag * len(values) if len(flag) == 1 else flag, strict=True)
    ]


def test_stable_weight_needs_a_second_of_stable_readings_within_e():
    # dynamic, then stable readings: the window must cover 1 s before the weight counts
    series = mt_series(
        [
            90,
            95,
            99.5,
            100.00,
            100.01,
            100.00,
            100.01,
            100.00,
            100.01,
            100.00,
            100.01,
            100.00,
            100.01,
            100.00,
        ],
        flag="DDDSSSSSSSSSSS",
    )
    w = scripted("mt-sics", series, dt=0.1).stable_weight(poll_s=0.1)
    assert w.mode == "stable" and w.stable and w.device_stable
    assert w.value == 100.0 and w.unit == "g" and w.scale_id == "T1"
    assert w.span == pytest.approx(0.01)
    # first stable reading at 0.3 s, the window is covered at 1.3 s: the 14th reading, and
    # the driver asks for no more (the strict script ends there)
    assert w.readings == 14
    json.dumps(w.to_dict())


def test_device_stable_but_spanning_more_than_e_is_not_stable():
    # each reading flagged S S, but 2 e apart; one every 0.1 s from t = 0 to the 3 s deadline
    series = mt_series(([100.00, 100.02] * 16)[:31])
    with pytest.raises(StabilityTimeout) as ei:
        scripted("mt-sics", series, dt=0.1).stable_weight(poll_s=0.1, timeout_s=3.0)
    assert ei.value.device_stable is True
    assert ei.value.span == pytest.approx(0.02)
    assert "T1" in str(ei.value)


def test_never_device_stable_times_out():
    series = mt_series([100.0] * 21, flag="D")  # one reading every 0.1 s up to the 2 s deadline
    with pytest.raises(StabilityTimeout) as ei:
        scripted("mt-sics", series, dt=0.1).stable_weight(poll_s=0.1, timeout_s=2.0)
    assert ei.value.device_stable is False and ei.value.span is None


def test_overload_during_stabilisation_is_raised_at_once():
    series = [*mt_series([100.0, 100.0]), (b"SI\r\n", b"S +\r\n")]
    with pytest.raises(Overload):
        scripted("mt-sics", series, dt=0.1).stable_weight(poll_s=0.1)


@pytest.mark.parametrize(
    ("value", "unit", "error"),
    [
        (620.01, "g", WeightOutOfRange),
        (0.19, "g", WeightOutOfRange),
        (-5.0, "g", WeightOutOfRange),
        (100.0, "kg", UnitMismatch),
    ],
)
def test_weights_outside_min_max_are_refused_not_clipped(value, unit, error):
    reply = mtsics.format_weight("S", "S", value, unit, 2)
    with pytest.raises(error) as ei:
        scripted("mt-sics", [(b"SI\r\n", reply)]).immediate_weight()
    if error is WeightOutOfRange:
        assert ei.value.value == value and ei.value.maximum == 620.0


def test_sbi_reading_without_a_unit_is_not_guessed_nor_recorded():
    # scales.md: "Unstable readings leave the unit blank on many models": the profile's
    # unit is not filled in, so no weight in grams is made of it
    scale = scripted("sbi", [(b"\x1bP", b"+   123.41    \r\n")])
    with pytest.raises(Unstable, match="carries no unit") as ei:
        scale.immediate_weight()
    assert "T1" in str(ei.value)
    # the unit check still works on what the device does send
    scale = scripted("sbi", [(b"\x1bP", b"+     0.12 kg \r\n")])
    with pytest.raises(UnitMismatch):
        scale.immediate_weight()
    # a moving load during the stable procedure is simply not stable yet
    moving = [(b"\x1bP", b"+   123.41    \r\n")] * 6 + [(b"\x1bP", b"+   123.45 g  \r\n")] * 11
    w = scripted("sbi", moving, dt=0.1).stable_weight(poll_s=0.1)
    assert (w.value, w.unit, w.readings) == (123.45, "g", 17)
    with pytest.raises(UnitMismatch, match="without a unit"):
        Weighing(1.0, None, "immediate", False, "T1", "sbi", timestamp=None)


def test_weighings_keep_the_gross_net_flag():
    gross = scripted("cas", [(b"01RW\r\n", cas_frame())] * 11, KILOS, dt=0.1)
    w = gross.stable_weight(poll_s=0.1)
    assert (w.value, w.gross, w.to_dict()["gross"]) == (90.0, True, True)
    net = cas_frame(gn=b"NT", lamp=0x42, data=b"   25.50")
    w = scripted("cas", [(b"01RW\r\n", net)], KILOS).immediate_weight()
    assert (w.value, w.gross) == (25.5, False)
    w = scripted("sbi", [(b"\x1bP", b"N     +   123.45 g  \r\n")]).immediate_weight()
    assert w.gross is False  # 22-character header N: the project's reading (unsourced)
    assert scripted("mt-sics", mt_series([12.5])).immediate_weight().gross is None
    # GS then NT readings (a tare in between) are not one weight, even with equal values:
    # the window starts again at the first NT reading
    flip = [(b"01RW\r\n", cas_frame(data=b"   50.00"))] * 6 + [
        (b"01RW\r\n", cas_frame(gn=b"NT", lamp=0x42, data=b"   50.00"))
    ] * 11
    w = scripted("cas", flip, KILOS, dt=0.1).stable_weight(poll_s=0.1)
    assert w.gross is False and w.readings == 17


def test_immediate_weight_records_mode_and_device_flag():
    w = scripted("mt-sics", mt_series([12.5], flag="D")).immediate_weight()
    assert (w.mode, w.stable, w.device_stable, w.value) == ("immediate", False, False, 12.5)


# --------------------------------------------------------------------------- live simulators


def fast(profile):
    """The profile's scale with a short stability window, for quick tests."""
    s = replace(
        profile.scale,
        stability_window_s=0.3,
        poll_interval_s=0.03,
        stability_timeout_s=3.0,
        reply_timeout_s=1.0,
    )
    return replace(profile, scale=s)


@pytest.mark.integration
@pytest.mark.parametrize("protocol", list(PROFILES))
def test_live_session_on_a_pty(protocol):
    profile = fast(load_profile(PROFILES[protocol]))
    s = profile.scale
    with start_simulator("scale", protocol, profile=profile, load=0.0, settle_s=0.1) as sim:
        assert Path(sim.url).exists()
        with open_scale(profile, sim.url, scale_id="bench-1") as scale:
            scale.zero()
            sim.balance.set_load(round(0.4 * s.max / s.e) * s.e)
            w = scale.stable_weight()
            assert w.value == pytest.approx(0.4 * s.max) and w.unit == s.unit
            assert (w.mode, w.scale_id, w.protocol) == ("stable", "bench-1", protocol)
            assert w.readings >= 2 and w.span <= s.e
            i = scale.immediate_weight()
            assert i.mode == "immediate" and i.value == pytest.approx(w.value)
            # a live port: the weighings are dated now, in UTC
            for x in (w, i):
                assert x.timestamp is not None and x.timestamp.utcoffset() == timedelta(0)
            scale.tare()
            sim.balance.set_load(0.5 * s.max)
            assert scale.stable_weight().value == pytest.approx(0.1 * s.max)


@pytest.mark.integration
def test_live_session_over_tcp_loopback():
    profile = fast(load_profile("mt-sics-scale"))
    with start_simulator(
        "scale", "mt-sics", profile=profile, tcp_port=0, load=250.0, settle_s=0.05
    ) as sim:
        assert sim.url.startswith("socket://127.0.0.1:")
        with open_scale(profile, sim.url) as scale:
            assert scale.serial_number() == "SIM0000001"
            assert scale.stable_weight().value == 250.0


@pytest.mark.integration
@pytest.mark.parametrize("protocol", list(PROFILES))
@pytest.mark.parametrize("fault", ["overload", "underload"])
def test_overload_and_underload_are_distinct(protocol, fault):
    profile = fast(load_profile(PROFILES[protocol]))
    faults = Faults(**{fault: True})
    with (
        start_simulator("scale", protocol, profile=profile, faults=faults) as sim,
        open_scale(profile, sim.url) as scale,
    ):
        with pytest.raises(Overload if fault == "overload" else Underload):
            scale.immediate_weight()
        with pytest.raises(Overload if fault == "overload" else Underload):
            scale.stable_weight()


@pytest.mark.integration
@pytest.mark.parametrize(("fault", "device_stable"), [("drift", False), ("jitter", True)])
def test_drifting_and_jittering_weights_time_out(fault, device_stable):
    profile = fast(load_profile("and-scale"))
    with (
        start_simulator("scale", "and", profile=profile, faults=fault) as sim,
        open_scale(profile, sim.url) as scale,
    ):
        with pytest.raises(StabilityTimeout) as ei:
            scale.stable_weight(timeout_s=1.0)
        assert ei.value.device_stable is device_stable


@pytest.mark.integration
def test_above_max_but_not_overloaded_is_refused():
    profile = fast(load_profile("cas-ci"))
    s = profile.scale
    with (
        start_simulator("scale", "cas", profile=profile, load=s.max + 5 * s.e, settle_s=0.0) as sim,
        open_scale(profile, sim.url) as scale,
    ):
        with pytest.raises(WeightOutOfRange) as ei:
            scale.stable_weight()
        assert ei.value.value == pytest.approx(s.max + 5 * s.e)  # reported, not clipped


@pytest.mark.integration
def test_slow_device_times_out():
    profile = fast(load_profile("mt-sics-scale"))
    profile = replace(profile, scale=replace(profile.scale, reply_timeout_s=0.2))
    with (
        start_simulator("scale", "mt-sics", profile=profile, faults="slow=0.6") as sim,
        open_scale(profile, sim.url) as scale,
        pytest.raises(InstrumentTimeout),
    ):
        scale.read_immediate()


@pytest.mark.integration
def test_unplugged_adapter_is_a_disconnection():
    profile = fast(load_profile("sartorius-sbi"))
    with (
        start_simulator("scale", "sbi", profile=profile, faults="unplug-after=3") as sim,
        open_scale(profile, sim.url) as scale,
    ):
        for _ in range(2):
            scale.read_immediate()
        with pytest.raises(Disconnected):
            for _ in range(3):
                scale.read_immediate()
        assert sim.wait(2.0) and sim.unplugged


@pytest.mark.integration
@pytest.mark.parametrize("protocol", list(PROFILES))
def test_noise_is_garbage_not_a_weight(protocol):
    profile = fast(load_profile(PROFILES[protocol]))
    with (
        start_simulator("scale", protocol, profile=profile, faults="noise=1.0") as sim,
        open_scale(profile, sim.url) as scale,
    ):
        for _ in range(3):
            with pytest.raises((FrameError, InstrumentTimeout)):
                scale.read_immediate()


@pytest.mark.integration
def test_sbi_unstable_reading_has_blank_unit_on_the_wire():
    profile = fast(load_profile("sartorius-sbi"))
    with (
        start_simulator("scale", "sbi", profile=profile, faults="drift") as sim,
        open_scale(profile, sim.url) as scale,
    ):
        r = scale.read_immediate()
        assert not r.device_stable and r.raw[-3:] == b"   " and r.unit is None
        with pytest.raises(Unstable, match="no unit"):
            scale.immediate_weight()  # a weight without its unit is not recorded


# --------------------------------------------------------------------------- captured sessions


def run_scale_script(scale, script):
    """Run the operations recorded in a capture's meta; outcomes as the capture stores them."""
    out = []
    for step in script:
        try:
            res = getattr(scale, step["op"])()
        except FibergradeError as exc:
            out.append({"op": step["op"], "error": type(exc).__name__})
            continue
        rec = {"op": step["op"]}
        if res is not None and hasattr(res, "value"):
            rec.update(value=res.value, unit=res.unit)
            if hasattr(res, "mode"):
                rec["mode"] = res.mode
        out.append(rec)
    return out


@pytest.mark.parametrize("protocol", list(PROFILES))
def test_replay_of_the_shipped_capture(protocol):
    path = CAPTURES / f"{protocol}-session.jsonl"
    meta = json.loads(path.read_text().splitlines()[0])["meta"]
    assert meta["protocol"] == protocol and meta["kind"] == "scale"
    profile = load_profile(meta["profile"])
    scale = make_scale(profile, Transport.replay(path), scale_id=meta["scale_id"])
    assert run_scale_script(scale, meta["script"]) == meta["script"]
    scale.transport.check_replayed()  # the drivers sent and read all the session held
    kinds = {s.get("error") for s in meta["script"]}
    assert {"Overload", None} <= kinds  # the session covers weighing and an overload


#: per protocol: the immediate-reading command, a stable reply of 123.4 and its settings
TIMED = {
    "mt-sics": (b"SI\r\n", mtsics.format_weight("S", "S", 123.4, "g", 2), GRAMS),
    "sbi": (sbi.CMD_PRINT, sbi.format_reading(123.4, "g", True, 2), GRAMS),
    "and": (aandd.CMD_IMMEDIATE, aandd.format_reading("ST", 123.4, "g", 2), GRAMS),
    "cas": (b"01RW\r\n", cas_frame(data=b"  123.40"), KILOS),
}


def split_replies(protocol: str, n: int, *, start=START) -> tuple[ScaleBackend, list[float]]:
    """A driver on a capture of ``n`` immediate readings, each reply in two reads: the
    command at 0.25 k s, the reply's first bytes at + 0.05 s, the rest at + 0.125 s (times
    exact in binary). Returns the driver and the time of each read that completed a reply."""
    cmd, reply, settings = TIMED[protocol]
    events = []
    for k in range(n):
        t = 0.25 * k
        events += [
            CaptureEvent(t, "tx", cmd),
            CaptureEvent(t + 0.05, "rx", reply[:5]),
            CaptureEvent(t + 0.125, "rx", reply[5:]),
        ]
    transport = Transport(ReplayPort(events, started_at=start))
    _STRICT.append(transport)
    done = [0.25 * k + 0.125 for k in range(n)]
    return DRIVERS[protocol](transport, settings, scale_id="T1"), done


@pytest.mark.parametrize("protocol", list(PROFILES))
def test_a_replayed_weighing_is_dated_by_the_read_that_completed_its_reply(protocol):
    """A weighing from a replay happened when the live session read the reply that
    completed it: the capture's started_at + that read's captured time, never the time of
    the replay. Each reply comes in two reads; the second completes it."""
    scale, done = split_replies(protocol, 1)
    w = scale.immediate_weight()
    assert w.value == 123.4 and w.timestamp == START + timedelta(seconds=done[0])
    assert w.to_dict()["timestamp"] == (START + timedelta(seconds=0.125)).isoformat()
    # the stable procedure ends on the reading that covers the 1 s window: the fifth, its
    # reply completed at 1.125 s (poll 0.1 s < 0.25 s: each command at its captured time)
    scale, done = split_replies(protocol, 5)
    w = scale.stable_weight(poll_s=0.1)
    assert (w.mode, w.readings) == ("stable", 5)
    assert w.timestamp == START + timedelta(seconds=done[-1]) == START + timedelta(seconds=1.125)


@pytest.mark.parametrize("protocol", list(PROFILES))
def test_a_replay_that_waits_longer_than_the_session_dates_by_the_capture(protocol):
    """A replay that waits longer between weighings than the live session did (a longer
    interval, a poll interval raised after the recording) runs its clock past the captured
    replies; each weighing is still dated by the captured time of the read that completed
    its reply."""
    scale, done = split_replies(protocol, 3)
    got = []
    for _ in range(3):
        got.append(scale.immediate_weight().timestamp)
        scale.transport.sleep(7.5)  # the live session waited 0.25 s
    assert got == [START + timedelta(seconds=t) for t in done]


def test_a_replay_without_a_start_dates_no_weighing():
    """A capture that records no start (made before the header held one): when the
    weighing happened is unknown, and the replay's time is not it."""
    scale, _ = split_replies("mt-sics", 1, start=None)
    w = scale.immediate_weight()
    assert w.value == 123.4 and w.timestamp is None and w.to_dict()["timestamp"] is None


@pytest.mark.parametrize("protocol", list(PROFILES))
def test_an_old_format_capture_records_no_start_so_its_weighings_carry_no_time(protocol, tmp_path):
    """A capture from before the header held started_at (made here from a shipped one,
    its header stripped of the keys later recorders write: the shipped captures may be
    regenerated with them) still replays, and dates none of its weighings."""
    path = old_format_copy(CAPTURES / f"{protocol}-session.jsonl", tmp_path / "old.jsonl")
    meta = json.loads(path.read_text().splitlines()[0])["meta"]
    transport = Transport.replay(path)
    assert transport.capture_started_at is None and transport.capture_session is None
    scale = make_scale(load_profile(meta["profile"]), transport, scale_id=meta["scale_id"])
    weighings = []
    for step in meta["script"]:
        with contextlib.suppress(FibergradeError):
            res = getattr(scale, step["op"])()
            if isinstance(res, Weighing):
                weighings.append(res)
    assert [w.mode for w in weighings] == ["stable", "immediate"]
    assert [w.timestamp for w in weighings] == [None, None]


# --------------------------------------------------------------------------- fuzzing


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_fuzz_frame_parsers_raise_only_typed_errors(frame):
    parsers = [
        lambda f: mtsics.weight_from_reply(mtsics.parse_reply(f)),
        sbi.parse_reading,
        aandd.parse_reading,
        lambda f: cas.parse_frame(f, device_id=1),
        lambda f: cas.parse_frame(
            f[:20].ljust(20, b" ") + b"\r\n", device_id=f[6] if len(f) > 6 else 1
        ),
    ]
    for parse in parsers:
        try:
            r = parse(frame)
        except InstrumentError:
            continue
        assert isinstance(r, Reading) and isinstance(r.value, float)


@settings(max_examples=200, deadline=None)
@given(
    value=st.decimals(min_value=-9999, max_value=99999, places=2, allow_nan=False),
    at=st.integers(0, 7),
    head=st.sampled_from(["ST", "US", "OL"]),
)
def test_fuzz_a_space_inside_an_and_number_is_garbage(value, at, head):
    """A&D data is a sign, zero-padded digits and a point (scales.md): a valid frame with
    one of its 8 characters after the sign turned into a space never parses."""
    frame = aandd.format_reading(head, float(value), "g", 2)[:-2]
    assert frame[3:4] in (b"+", b"-") and len(frame) == 15
    if head != "OL":
        assert aandd.parse_reading(frame).value == float(value)
    broken = frame[: 4 + at] + b" " + frame[5 + at :]
    with pytest.raises(FrameError):
        aandd.parse_reading(broken)


@settings(max_examples=200, deadline=None)
@given(
    value=st.decimals(min_value=-999, max_value=9999, places=2, allow_nan=False),
    at=st.integers(0, 7),
    head=st.sampled_from(["ST", "US", "OL"]),
)
def test_fuzz_a_space_after_a_cas_digit_is_garbage(value, at, head):
    """CAS data is right-aligned (spaces only lead): a space put in place of a character
    that follows the first non-space one never parses, and no OL frame is read from it."""
    lamp = 0x44 if head == "ST" else 0x04
    frame = cas_frame(head=head.encode(), lamp=lamp, data=f"{float(value):>8.2f}".encode())
    if head == "OL":
        frame = cas_frame(head=b"OL", lamp=0, data=b"      OL")
    data = frame[9:17]
    first = len(data) - len(data.lstrip(b" "))
    if at <= first:
        return  # a space in the padding or in place of the first character is still valid
    broken = frame[: 9 + at] + b" " + frame[10 + at :]
    with pytest.raises(FrameError):
        cas.parse_frame(broken, device_id=1)


@settings(max_examples=150, deadline=None)
@given(
    protocol=st.sampled_from(list(PROFILES)),
    reply=st.binary(max_size=60),
    op=st.sampled_from(["read_immediate", "zero", "tare", "stable_weight"]),
)
def test_fuzz_drivers_on_random_replies(protocol, reply, op):
    settings_ = KILOS if protocol == "cas" else GRAMS
    settings_ = replace(
        settings_, stability_timeout_s=0.5, poll_interval_s=0.1, reply_timeout_s=0.3
    )
    # every command the driver might send gets the same random reply
    cmds = {
        "mt-sics": [b"SI\r\n", b"Z\r\n", b"T\r\n"],
        "sbi": [b"\x1bP", b"\x1bV", b"\x1bU"],
        "and": [b"Q\r\n", b"Z\r\n", b"T\r\n"],
        "cas": [b"01RW\r\n", b"01MZ\r\n", b"01MT\r\n"],
    }
    cmd = cmds[protocol][{"read_immediate": 0, "stable_weight": 0, "zero": 1, "tare": 2}[op]]
    # not strict: a random reply ends the exchange anywhere, the script is not a protocol
    scale = scripted(protocol, [(cmd, reply)] * 8, settings_, dt=0.1, strict=False)
    with contextlib.suppress(InstrumentError):  # anything else fails the test
        getattr(scale, op)()
