"""The fibergrade live line protocol: checksums, the sample reader's error rules, live
simulators on ptys with faults, the shipped capture, and fuzzing of parser and reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fibergrade.adapters.analyser import (
    AnalyserReader,
    EndLine,
    MeasurementLine,
    checksum,
    format_end,
    format_measurement,
    format_sample,
    parse_line,
)
from fibergrade.adapters.errors import (
    Disconnected,
    InstrumentTimeout,
    SampleChecksumError,
    SampleCountMismatchError,
    SampleError,
    SampleFrameError,
    SampleIncompleteError,
    SampleIndexGapError,
    SampleValueError,
)
from fibergrade.adapters.profiles import load_profile
from fibergrade.adapters.simulators import start_simulator
from fibergrade.adapters.transport import CaptureEvent, ReplayPort, Transport

pytestmark = pytest.mark.timeout(60)

INSTRUMENTS = Path(__file__).resolve().parents[1] / "instruments"


def xor(text: bytes) -> int:
    out = 0
    for b in text:
        out ^= b
    return out


def reader_on(data: bytes, *, chunk: int = 0, line_timeout_s: float = 1.0) -> AnalyserReader:
    return AnalyserReader(
        Transport(ReplayPort.from_bytes(data, chunk=chunk)), line_timeout_s=line_timeout_s
    )


def stream(*samples: tuple[str, list[float]]) -> list[bytes]:
    lines: list[bytes] = []
    for sid, d in samples:
        lines += format_sample(sid, d)
    return lines


# --------------------------------------------------------------------------- lines


def test_line_format_and_checksum():
    line = format_measurement("S-001", 1, 15.62, 48.3)
    body = b"M,S-001,1,15.62,48.3"
    assert line == body + b"*%02X\r\n" % xor(body)
    assert checksum(body) == xor(body)
    assert line == b"M,S-001,1,15.62,48.3*0C\r\n"  # the example in the module docstring
    assert format_end("S-001", 3) == b"E,S-001,3*%02X\r\n" % xor(b"E,S-001,3")
    assert parse_line(line[:-2]) == MeasurementLine("S-001", 1, 15.62, 48.3)
    assert parse_line(format_end("S-001", 3)[:-2]) == EndLine("S-001", 3)
    assert parse_line(line[:-4] + line[-4:-2].lower()[:2] + b"")  # lower-case CK is fine
    with pytest.raises(ValueError):
        format_measurement("bad id", 1, 15.0)


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"M,S1,1,15.00*00", SampleChecksumError),
        (b"M,S1,1,15.00", SampleFrameError),
        (b"M,S1,0,15.00*", SampleFrameError),
        (b"X,S1,1,15.00*%02X" % xor(b"X,S1,1,15.00"), SampleFrameError),
        (b"M,S1,1,1e5*%02X" % xor(b"M,S1,1,1e5"), SampleFrameError),
        (b"M,,1,15.00*%02X" % xor(b"M,,1,15.00"), SampleFrameError),
        (b"\xff\x00", SampleFrameError),
    ],
)
def test_bad_lines(line, error):
    with pytest.raises(error):
        parse_line(line, 7)


def test_checksum_error_names_the_sample():
    with pytest.raises(SampleChecksumError) as ei:
        parse_line(b"M,LOT-9,4,15.00*00", 12)
    assert ei.value.sample_id == "LOT-9" and ei.value.line_no == 12
    assert "LOT-9" in str(ei.value) and "line 12" in str(ei.value)


@settings(max_examples=200, deadline=None)
@given(
    sid=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}", fullmatch=True),
    index=st.integers(1, 10**9 - 1),
    d=st.floats(1.0, 200.0),
    c=st.none() | st.floats(0.0, 9999.0),
)
def test_format_parse_roundtrip(sid, index, d, c):
    parsed = parse_line(format_measurement(sid, index, d, c)[:-2])
    assert parsed.sample_id == sid and parsed.index == index
    assert parsed.diameter_um == pytest.approx(d, abs=0.005)
    assert (parsed.curvature_deg_mm is None) == (c is None)


# --------------------------------------------------------------------------- reader rules


def test_reader_delivers_whole_samples_as_float32():
    data = b"".join(
        format_sample("A", [15.0, 16.5, 17.25], [40.0, 50.0, 60.0]) + format_sample("B", [20.0])
    )
    r = reader_on(data, chunk=5)
    a, b = r.read_sample(), r.read_sample()
    assert a.sample_id == "A" and a.diameter_um.dtype == np.float32
    assert a.diameter_um.tolist() == [15.0, 16.5, 17.25] and a.lines == (1, 4)
    assert a.curvature_deg_mm.tolist() == [40.0, 50.0, 60.0]
    assert b.curvature_deg_mm is None and b.lines == (5, 6) and b.n == 1
    assert a.raw == b"".join(format_sample("A", [15.0, 16.5, 17.25], [40.0, 50.0, 60.0]))
    lots = a.to_fibre_lots()
    assert lots.lot_ids == ("A",) and lots.n_fibres == 3
    with pytest.raises(InstrumentTimeout):
        r.read_sample(timeout_s=0.5)


def _bad(lines: list[bytes], i: int, new: bytes) -> bytes:
    lines = list(lines)
    lines[i] = new
    return b"".join(lines)


GOOD = stream(("S1", [15.0, 16.0, 17.0]), ("S2", [18.0, 19.0]))


@pytest.mark.parametrize(
    ("data", "error", "sample", "line"),
    [
        (_bad(GOOD, 1, b"M,S1,2,16.00*00\r\n"), SampleChecksumError, "S1", 2),
        (_bad(GOOD, 1, b"M,S1,2,16.0\x07\r\n"), SampleFrameError, "S1", 2),
        (_bad(GOOD, 1, format_measurement("S1", 3, 16.0)), SampleIndexGapError, "S1", 2),
        (_bad(GOOD, 3, format_end("S1", 2)), SampleCountMismatchError, "S1", 4),
        (_bad(GOOD, 3, format_end("S9", 3)), SampleIncompleteError, "S1", 4),
        (_bad(GOOD, 3, b""), SampleIncompleteError, "S1", 4),  # next sample starts
        (_bad(GOOD, 1, format_measurement("S1", 2, 250.0)), SampleValueError, "S1", 2),
        (_bad(GOOD, 1, format_measurement("S1", 2, 0.5)), SampleValueError, "S1", 2),
        (_bad(GOOD, 1, format_measurement("S1", 2, 16.0, 40.0)), SampleFrameError, "S1", 2),
        (_bad(GOOD, 0, b""), SampleIndexGapError, "S1", 1),  # start of the sample lost
    ],
)
def test_a_bad_line_fails_its_sample_and_the_next_sample_survives(data, error, sample, line):
    r = reader_on(data)
    with pytest.raises(error) as ei:
        r.read_sample()
    exc = ei.value
    assert (exc.sample_id, exc.line_no) == (sample, line)
    assert sample in str(exc) and f"line {line}" in str(exc)
    nxt = r.read_sample()
    assert nxt.sample_id == "S2" and nxt.diameter_um.tolist() == [18.0, 19.0]


def test_index_one_again_restarts_the_sample():
    r = reader_on(_bad(GOOD, 1, format_measurement("S1", 1, 16.0)))
    with pytest.raises(SampleIncompleteError) as ei:
        r.read_sample()
    assert (ei.value.sample_id, ei.value.line_no, ei.value.received) == ("S1", 2, 1)
    with pytest.raises(SampleIndexGapError):  # the restarted S1 then misses index 2
        r.read_sample()
    assert r.read_sample().sample_id == "S2"


def test_missing_end_line_by_timeout():
    events = [
        CaptureEvent(0.0, "rx", b"".join(GOOD[:3])),
        CaptureEvent(10.0, "rx", b"".join(GOOD[4:])),
    ]
    r = AnalyserReader(Transport(ReplayPort(events)), line_timeout_s=2.0)
    with pytest.raises(SampleIncompleteError) as ei:
        r.read_sample()
    assert ei.value.sample_id == "S1" and ei.value.received == 3
    assert "no line within 2 s" in str(ei.value)
    assert r.read_sample(timeout_s=20.0).sample_id == "S2"


def test_garbage_between_samples_is_recorded_not_fatal():
    data = b"\x00\x13noise\r\n" + b"".join(GOOD[:4]) + b"#junk\r\n" + b"".join(GOOD[4:])
    r = reader_on(data)
    assert [r.read_sample().sample_id, r.read_sample().sample_id] == ["S1", "S2"]
    assert [n for n, _ in r.discarded] == [1, 6]


def test_empty_and_orphan_end_lines():
    r = reader_on(format_end("Z", 0) + format_end("Y", 4) + b"".join(GOOD))
    with pytest.raises(SampleCountMismatchError):
        r.read_sample()
    with pytest.raises(SampleIncompleteError) as ei:
        r.read_sample()
    assert ei.value.sample_id == "Y"
    assert r.read_sample().sample_id == "S1"


def test_samples_iterator_with_error_callback():
    data = _bad(GOOD, 1, b"M,S1,2,16.00*00\r\n") + b"".join(stream(("S3", [21.0])))
    errors: list[SampleError] = []
    got = [s.sample_id for s in reader_on(data).samples(idle_timeout_s=0.5, on_error=errors.append)]
    assert got == ["S2", "S3"] and [type(e) for e in errors] == [SampleChecksumError]
    with pytest.raises(SampleChecksumError):
        list(reader_on(data).samples(idle_timeout_s=0.5))


def test_partial_sample_is_reported_on_disconnection():
    events = [
        CaptureEvent(0.0, "rx", b"".join(GOOD[:2])),
        CaptureEvent(0.1, "disconnected", detail="unplugged"),
    ]
    r = AnalyserReader(Transport(ReplayPort(events)))
    with pytest.raises(Disconnected):
        r.read_sample()
    p = r.partial
    assert (p.sample_id, p.received, p.first_line, p.last_line) == ("S1", 2, 1, 2)
    assert p.mean_diameter_um == pytest.approx(15.5)


def test_example_file_streams_through_the_reader():
    data = (INSTRUMENTS / "analyser-line-example.txt").read_bytes()
    got = list(reader_on(data, chunk=64).samples(idle_timeout_s=0.5))
    assert [(s.sample_id, s.n) for s in got] == [("A-0001", 12), ("A-0002", 10)]
    assert all(s.curvature_deg_mm is not None for s in got)


def test_replay_of_the_shipped_capture():
    path = INSTRUMENTS / "captures" / "analyser-line-session.jsonl"
    meta = json.loads(path.read_text().splitlines()[0])["meta"]
    r = AnalyserReader(Transport.replay(path), line_timeout_s=1.0)
    got = []
    while True:
        try:
            s = r.read_sample(timeout_s=1.0)
        except InstrumentTimeout:
            break
        except SampleError as exc:
            got.append(
                {"error": type(exc).__name__, "sample_id": exc.sample_id, "line_no": exc.line_no}
            )
            continue
        got.append(
            {
                "sample_id": s.sample_id,
                "n": s.n,
                "lines": list(s.lines),
                "mean_um": round(float(s.diameter_um.mean()), 4),
            }
        )
    assert got == meta["results"]
    assert any("error" in x for x in got) and any("n" in x for x in got)


# --------------------------------------------------------------------------- live


@pytest.mark.integration
def test_live_samples_over_a_pty_match_what_was_sent():
    rng = np.random.default_rng(1)
    sent = [
        (
            f"P{k}",
            rng.uniform(10, 40, 300).round(2).tolist(),
            rng.uniform(20, 90, 300).round(1).tolist(),
        )
        for k in range(4)
    ]
    profile = load_profile("analyser-line")
    with (
        start_simulator("analyser", samples=sent) as sim,
        AnalyserReader.open(profile, sim.url) as reader,
    ):
        got = list(reader.samples(idle_timeout_s=0.5))
    assert [s.sample_id for s in got] == [s[0] for s in sent]
    for s, (_, d, c) in zip(got, sent, strict=True):
        np.testing.assert_allclose(s.diameter_um, np.float32(d), rtol=0, atol=1e-5)
        np.testing.assert_allclose(s.curvature_deg_mm, np.float32(c), rtol=0, atol=1e-4)


@pytest.mark.integration
def test_live_samples_over_tcp():
    with (
        start_simulator("analyser", n_samples=3, fibres_per_sample=100, tcp_port=0) as sim,
        AnalyserReader.open(load_profile("analyser-line"), sim.url) as reader,
    ):
        got = list(reader.samples(idle_timeout_s=0.5))
    assert [s.n for s in got] == [100, 100, 100]


@pytest.mark.integration
@pytest.mark.parametrize("fault", ["bad-checksum=0.02", "drop=0.02", "truncate=0.02", "noise=0.02"])
def test_faulty_streams_lose_only_the_samples_they_hit(fault):
    errors: list[SampleError] = []
    with (
        start_simulator(
            "analyser", n_samples=12, fibres_per_sample=40, faults=fault + ",seed=5"
        ) as sim,
        AnalyserReader.open(load_profile("analyser-line"), sim.url) as reader,
    ):
        got = list(reader.samples(idle_timeout_s=0.5, on_error=errors.append))
    assert errors, "the fault should hit at least one sample"
    good = {s.sample_id for s in got}
    bad = {e.sample_id for e in errors}
    assert len(good) + len(bad - good) <= 12 and len(good) >= 3
    assert all(s.n == 40 for s in got)  # every delivered sample is whole


# --------------------------------------------------------------------------- fuzzing


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=400), chunk=st.integers(0, 30))
def test_fuzz_reader_on_random_bytes(data, chunk):
    r = reader_on(data, chunk=chunk, line_timeout_s=0.5)
    for _ in range(200):
        try:
            s = r.read_sample(timeout_s=0.5)
        except SampleError:
            continue
        except InstrumentTimeout:
            return
        assert s.n >= 1
    raise AssertionError("reader did not finish")


@settings(max_examples=200, deadline=None)
@given(
    data=st.lists(st.sampled_from(GOOD + stream(("S3", [12.0, 13.0]))), max_size=25),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=3),
)
def test_fuzz_reader_on_shuffled_and_corrupted_streams(data, flips):
    raw = bytearray(b"".join(data))
    for pos, val in flips:
        if raw:
            raw[pos % len(raw)] = val
    r = reader_on(bytes(raw), line_timeout_s=0.5)
    for _ in range(100):
        try:
            s = r.read_sample(timeout_s=0.5)
        except SampleError:
            continue
        except InstrumentTimeout:
            return
        # a delivered sample is always internally consistent
        assert s.n >= 1 and np.all(s.diameter_um > 0)
    raise AssertionError("reader did not finish")
