"""Simulators: fault parsing, pty and loopback TCP endpoints, clean stop, reconnects,
serve_forever, and the recording of the captured sessions shipped in instruments/captures.

Regenerate the shipped captures (after a protocol change) with::

    FIBERGRADE_RECORD_CAPTURES=1 .venv/bin/python -m pytest tests/test_simulators.py -k record
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fibergrade.adapters import analyser
from fibergrade.adapters.analyser import AnalyserReader
from fibergrade.adapters.errors import (
    CaptureMismatch,
    Disconnected,
    FaultSpecError,
    InstrumentTimeout,
    ProfileError,
    SampleError,
    SimulatorSettingError,
)
from fibergrade.adapters.profiles import load_profile
from fibergrade.adapters.scales import aandd, make_scale, open_scale
from fibergrade.adapters.simulators import (
    AnalyserSimulator,
    FaultInjector,
    Faults,
    SimulatedBalance,
    Simulator,
    load_problem,
    parse_faults,
    serve_forever,
    start_simulator,
    synthetic_samples,
)
from fibergrade.adapters.transport import CaptureEvent, ReplayPort, Transport, open_transport
from fibergrade.errors import FibergradeError

pytestmark = pytest.mark.timeout(60)

CAPTURES = Path(__file__).resolve().parents[1] / "instruments" / "captures"
PROFILES = {"mt-sics": "mt-sics-scale", "sbi": "sartorius-sbi", "and": "and-scale", "cas": "cas-ci"}


# --------------------------------------------------------------------------- faults


def test_parse_faults():
    f = parse_faults("noise=0.1, drop, unplug-after=50,drift,slow=0.25,seed=7")
    assert f == Faults(noise=0.1, drop=0.05, unplug_after=50, drift=True, slow_s=0.25, seed=7)
    assert parse_faults(["overload", "bad_checksum=0.5"]) == Faults(overload=True, bad_checksum=0.5)
    assert parse_faults(None) == parse_faults("") == Faults()


@pytest.mark.parametrize(
    "spec",
    [
        "gremlins",
        "noise=2",
        "drop=x",
        "unplug-after=-1",
        "slow=nan",
        "drift=maybe",
        "overload,underload",
    ],
)
def test_bad_fault_specs_are_typed_errors(spec):
    with pytest.raises(FaultSpecError):
        parse_faults(spec)


def test_fault_injector_is_deterministic_and_faithful():
    frame = b"M,S1,1,15.00*00\r\n"
    a = FaultInjector(Faults(noise=0.3, drop=0.2, truncate=0.2, seed=3))
    b = FaultInjector(Faults(noise=0.3, drop=0.2, truncate=0.2, seed=3))
    outs = [a.transform(frame) for _ in range(200)]
    assert outs == [b.transform(frame) for _ in range(200)]
    assert None in outs and frame in outs
    assert all(o is None or o.endswith(b"\r\n") for o in outs)
    assert all(o is None or b"\n" not in o[:-1] for o in outs)  # noise never adds lines
    clean = FaultInjector(Faults())
    assert all(clean.transform(frame) == frame for _ in range(50))
    unplug = FaultInjector(Faults(unplug_after=2))
    unplug.transform(frame)
    assert not unplug.unplug_due
    unplug.transform(frame)
    assert unplug.unplug_due


def test_unknown_kind_or_protocol():
    with pytest.raises(FaultSpecError):
        start_simulator("scale", "mettler")
    with pytest.raises(FaultSpecError):
        start_simulator("oven", None)
    with pytest.raises(ProfileError):
        start_simulator("scale", "sbi", profile="mt-sics-scale")


@pytest.mark.parametrize("load", [float("nan"), float("inf"), -float("inf"), -1.0, -0.01])
def test_a_load_no_pan_can_carry_is_refused_when_the_simulator_is_built(load):
    """--load=nan used to start the simulator, which then died with a ValueError at the
    client's first command; the load is now refused up front, with a typed error."""
    before = threading.active_count()
    with pytest.raises(SimulatorSettingError, match="load") as info:
        start_simulator("scale", "sbi", load=load, tcp_port=0)
    assert info.value.exit_code == 2 and threading.active_count() == before
    balance = SimulatedBalance(load_profile("sartorius-sbi").scale, load=1.0)
    with pytest.raises(SimulatorSettingError):
        balance.set_load(load)
    assert balance.reading(now=1e9) == ("stable", 1.0)  # the refused load changed nothing


@settings(max_examples=200, deadline=None)
@given(load=st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**6), 10**6))
def test_a_simulated_pan_takes_exactly_the_finite_non_negative_loads(load):
    """load_problem is the simulator's one rule: a load it accepts always gives a reading
    (overload above Max), a load it refuses is never taken."""
    settings_ = load_profile("sartorius-sbi").scale
    if load_problem(load) is None:
        assert load == load and abs(load) != float("inf") and load >= 0
        state, _ = SimulatedBalance(settings_, load=load, settle_s=0.0).reading()
        assert state in ("stable", "overload")
    else:
        with pytest.raises(SimulatorSettingError):
            SimulatedBalance(settings_, load=load)


@pytest.mark.integration
@pytest.mark.parametrize("load", ["nan", "inf", "-1"])
def test_cli_simulate_refuses_an_impossible_load_at_the_option(load, tmp_path):
    exe = shutil.which("fibergrade", path=str(Path(sys.executable).parent)) or "fibergrade"
    r = subprocess.run(
        [exe, "simulate", "scale", "--protocol", "sbi", f"--load={load}", "--tcp", "0"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=30,
        check=False,
    )
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "--load" in r.stderr and "Traceback" not in r.stderr and "port:" not in r.stdout


def test_an_and_simulator_needs_a_point_in_its_readings():
    # scales.md: A&D data is "9-character data with sign and point"; a display in whole
    # units (e >= 1) would send '+0000620', which the driver refuses as garbage
    p = load_profile("and-scale")
    whole = replace(p, scale=replace(p.scale, e=1.0, max=3100.0))
    with pytest.raises(ProfileError, match=r"scale\.e.*sign and point"):
        start_simulator("scale", "and", profile=whole)
    with pytest.raises(ValueError, match="point"):
        aandd.format_reading("ST", 620.0, "g", 0)


# --------------------------------------------------------------------------- endpoints


@pytest.mark.integration
def test_pty_simulator_serves_a_real_device_and_stops_cleanly():
    before = threading.active_count()
    sim = start_simulator("scale", "mt-sics", load=100.0, settle_s=0.0)
    assert stat.S_ISCHR(os.stat(sim.url).st_mode)
    assert sim.running
    profile = load_profile("mt-sics-scale")
    for _ in range(2):  # a client may come, go and come back
        with open_scale(profile, sim.url) as scale:
            assert scale.read_immediate().value == 100.0
    sim.stop()
    assert not sim.running and sim.error is None
    assert threading.active_count() <= before
    sim.stop()  # idempotent


@pytest.mark.integration
def test_tcp_simulator_listens_on_loopback_only():
    with start_simulator("scale", "cas", tcp_port=0, load=50.0, settle_s=0.0) as sim:
        host_port = sim.url.removeprefix("socket://")
        assert host_port.startswith("127.0.0.1:")
        with open_scale(load_profile("cas-ci"), sim.url) as scale:
            assert scale.read_immediate().value == 50.0
        with open_scale(load_profile("cas-ci"), sim.url) as scale:  # second client
            assert scale.read_immediate().unit == "kg"


@pytest.mark.integration
def test_serve_forever_reports_the_url_and_ends_on_unplug():
    urls: list[str] = []
    done = threading.Event()
    result = {}

    def run():
        result["sim"] = serve_forever(
            "analyser",
            None,
            on_ready=urls.append,
            n_samples=None,
            fibres_per_sample=20,
            faults="unplug-after=45",
            baudrate=9600,
        )  # paced: the reader keeps up
        done.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    for _ in range(100):
        if urls:
            break
        done.wait(0.02)
    assert urls and Path(urls[0]).exists()
    reader = AnalyserReader(open_transport(urls[0]), line_timeout_s=2.0)
    got = []
    with pytest.raises(Disconnected):
        while True:
            got.append(reader.read_sample(timeout_s=2.0))
    assert [s.sample_id for s in got] == ["S0001", "S0002"]  # 2 x 21 lines, then unplugged
    assert reader.partial is not None and reader.partial.sample_id == "S0003"
    # bytes still in flight when the adapter is pulled are lost, as with real hardware
    assert 1 <= reader.partial.received <= 3
    assert done.wait(5) and result["sim"].unplugged
    reader.close()


@pytest.mark.integration
def test_finite_analyser_run_with_stop_when_finished():
    samples = [("X1", [15.0, 16.0], None), ("X2", [17.5], [40.0])]
    with start_simulator("analyser", samples=samples, stop_when_finished=True) as sim:
        reader = AnalyserReader(open_transport(sim.url), line_timeout_s=2.0)
        a, b = reader.read_sample(2.0), reader.read_sample(2.0)
        assert (a.sample_id, a.n, a.curvature_deg_mm) == ("X1", 2, None)
        assert (b.sample_id, list(b.curvature_deg_mm)) == ("X2", [40.0])
        assert sim.wait(2.0) and sim.device.finished
        reader.close()


@pytest.mark.integration
def test_paced_stream_keeps_to_its_line_rate():
    dev = AnalyserSimulator(n_samples=1, fibres_per_sample=200, bytes_per_s=11520.0)
    with Simulator(dev, connect_settle_s=0.05) as sim:
        reader = AnalyserReader(open_transport(sim.url), line_timeout_s=2.0)
        t0 = reader.transport.clock()
        s = reader.read_sample(2.0)
        elapsed = reader.transport.clock() - t0
        reader.close()
    n_bytes = len(s.raw)
    assert s.n == 200
    assert elapsed > 0.6 * n_bytes / 11520.0  # not faster than the line allows


@pytest.mark.integration
def test_slow_analyser_hits_the_line_timeout():
    with start_simulator("analyser", n_samples=1, fibres_per_sample=5, faults="slow=0.4") as sim:
        reader = AnalyserReader(open_transport(sim.url), line_timeout_s=0.2)
        with pytest.raises((InstrumentTimeout, SampleError)):
            reader.read_sample(timeout_s=1.0)
            reader.read_sample(timeout_s=1.0)
        reader.close()


# --------------------------------------------------------------------------- captures


def run_scale_script(scale, script):
    """Run scale operations; outcomes as captures store them (as in test_scales.py)."""
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


def _rewrite_meta(path: Path, meta: dict) -> None:
    """Put ``meta`` in the capture's header, keeping its other keys (``started_at``,
    ``session``)."""
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    header["meta"] = meta
    lines[0] = json.dumps(header, ensure_ascii=True)
    path.write_text("\n".join(lines) + "\n")


def record_scale_session(protocol: str, path: Path) -> dict:
    """Run the simulator and a scripted session against it, recording the traffic.

    Script: zero on an empty pan, stable weight of a load, immediate weight, tare, an
    overload. The outcomes are stored in the capture's meta for the replay test.
    """
    profile = load_profile(PROFILES[protocol])
    s = profile.scale
    meta = {
        "kind": "scale",
        "protocol": protocol,
        "profile": profile.name,
        "scale_id": f"sim-{protocol}",
        "recorded_with": "fibergrade.adapters.simulators on a pty (tests/test_simulators.py)",
    }
    with start_simulator("scale", protocol, profile=profile, load=0.0, settle_s=0.2) as sim:
        tr = open_transport(sim.url, profile.serial, record_to=path, meta=meta)
        scale = make_scale(profile, tr, scale_id=meta["scale_id"])
        outcomes = run_scale_script(scale, [{"op": "zero"}])
        sim.balance.set_load(round(0.3 * s.max / s.e) * s.e)
        outcomes += run_scale_script(
            scale, [{"op": "stable_weight"}, {"op": "immediate_weight"}, {"op": "tare"}]
        )
        sim.balance.faults = Faults(overload=True)
        outcomes += run_scale_script(scale, [{"op": "immediate_weight"}])
        scale.close()
    meta["script"] = outcomes
    _rewrite_meta(path, meta)
    return meta


def record_analyser_session(path: Path) -> dict:
    """Three samples, the second with a dropped line (seeded), recorded from the simulator."""
    profile = load_profile("analyser-line")
    meta = {
        "kind": "analyser",
        "protocol": profile.protocol,
        "profile": profile.name,
        "recorded_with": "fibergrade.adapters.simulators on a pty (tests/test_simulators.py)",
    }
    lines = []
    for k in range(1, 4):
        d = [14.0 + 0.05 * i + k for i in range(30)]
        lines += analyser.format_sample(f"L-{k}", d, [40.0 + i for i in range(30)])
    del lines[31 + 8]  # lose line 9 of sample L-2 on the way
    dev = AnalyserSimulator(lines=lines)
    results: list[dict] = []
    with Simulator(dev, stop_when_finished=False) as sim:
        reader = AnalyserReader(
            open_transport(sim.url, profile.serial, record_to=path, meta=meta), line_timeout_s=1.0
        )
        results = read_all(reader)
        reader.close()
    meta["results"] = results
    _rewrite_meta(path, meta)
    return meta


def read_all(reader: AnalyserReader) -> list[dict]:
    """Outcomes of reading until the stream goes idle, as captures store them."""
    out: list[dict] = []
    while True:
        try:
            s = reader.read_sample(timeout_s=1.0)
        except InstrumentTimeout:
            return out
        except FibergradeError as exc:
            out.append(
                {
                    "error": type(exc).__name__,
                    "sample_id": getattr(exc, "sample_id", None),
                    "line_no": getattr(exc, "line_no", None),
                }
            )
            continue
        out.append(
            {
                "sample_id": s.sample_id,
                "n": s.n,
                "lines": list(s.lines),
                "mean_um": round(float(s.diameter_um.mean()), 4),
            }
        )


@pytest.mark.integration
@pytest.mark.parametrize("protocol", list(PROFILES))
def test_record_a_scale_session_and_replay_it(protocol, tmp_path):
    record = os.environ.get("FIBERGRADE_RECORD_CAPTURES") == "1"
    path = CAPTURES / f"{protocol}-session.jsonl" if record else tmp_path / "s.jsonl"
    meta = record_scale_session(protocol, path)
    assert [x["op"] for x in meta["script"]] == [
        "zero",
        "stable_weight",
        "immediate_weight",
        "tare",
        "immediate_weight",
    ]
    assert meta["script"][1]["mode"] == "stable"
    assert meta["script"][-1] == {"op": "immediate_weight", "error": "Overload"}
    scale = make_scale(
        load_profile(meta["profile"]), Transport.replay(path), scale_id=meta["scale_id"]
    )
    assert run_scale_script(scale, meta["script"]) == meta["script"]
    scale.transport.check_replayed()
    assert scale.transport.capture_session is not None  # kept by _rewrite_meta


@pytest.mark.integration
def test_record_an_analyser_session_and_replay_it(tmp_path):
    record = os.environ.get("FIBERGRADE_RECORD_CAPTURES") == "1"
    path = CAPTURES / "analyser-line-session.jsonl" if record else tmp_path / "a.jsonl"
    meta = record_analyser_session(path)
    assert [r.get("sample_id") for r in meta["results"]] == ["L-1", "L-2", "L-3"]
    assert meta["results"][1]["error"] == "SampleIndexGapError"
    replayed = read_all(AnalyserReader(Transport.replay(path), line_timeout_s=1.0))
    assert replayed == meta["results"]
    assert Transport.replay(path).capture_started_at is not None  # kept by _rewrite_meta
    assert Transport.replay(path).capture_session is not None  # kept too


@pytest.mark.parametrize("capture", sorted(p.name for p in CAPTURES.glob("*-session.jsonl")))
def test_a_shipped_capture_replays_only_with_its_own_kind_and_protocol(capture):
    """A capture's header records its kind and protocol: replayed by another scale
    protocol or by the analyser reader it is refused up front (CaptureMismatch, exit 2),
    not read as garbage or as an idle stream of no samples."""
    path = CAPTURES / capture
    meta = json.loads(path.read_text().splitlines()[0])["meta"]
    for protocol, name in PROFILES.items():
        if meta["kind"] == "scale" and protocol == meta["protocol"]:
            make_scale(load_profile(name), Transport.replay(path))  # its own: accepted
            continue
        with pytest.raises(CaptureMismatch, match=f"speaking '{meta['protocol']}'") as info:
            make_scale(load_profile(name), Transport.replay(path))
        assert info.value.source == str(path) and info.value.exit_code == 2
    if meta["kind"] == "analyser":
        AnalyserReader(Transport.replay(path))
    else:
        with pytest.raises(CaptureMismatch, match="not from an analyser"):
            AnalyserReader(Transport.replay(path))


def test_a_capture_header_without_kind_or_protocol_is_not_guessed(tmp_path):
    path = tmp_path / "old.jsonl"
    path.write_text('{"fibergrade_capture": 1, "meta": {"url": "/dev/ttyUSB0"}}\n')
    assert Transport.replay(path).capture_meta == {"url": "/dev/ttyUSB0"}
    make_scale(load_profile("cas-ci"), Transport.replay(path))
    AnalyserReader(Transport.replay(path))
    path.write_text('{"fibergrade_capture": 1, "meta": {"protocol": "sbi"}}\n')
    make_scale(load_profile("sartorius-sbi"), Transport.replay(path))
    with pytest.raises(CaptureMismatch, match="an instrument speaking 'sbi'"):
        make_scale(load_profile("cas-ci"), Transport.replay(path))


@pytest.mark.integration
def test_a_recorded_live_session_names_its_kind(tmp_path):
    cap = tmp_path / "s.jsonl"
    with start_simulator("scale", "cas", load=50.0, settle_s=0.0) as sim:
        open_scale(load_profile("cas-ci"), sim.url, record_to=cap).close()
    meta = Transport.replay(cap).capture_meta
    assert meta is not None and (meta["kind"], meta["protocol"]) == ("scale", "cas")


@pytest.mark.integration
@pytest.mark.parametrize(
    ("instrument", "capture"),
    [("analyser-line", "mt-sics-session.jsonl"), ("and-scale", "analyser-line-session.jsonl")],
)
def test_cli_acquire_refuses_a_capture_of_another_instrument(instrument, capture, tmp_path):
    """acquire --instrument analyser-line --replay <an MT-SICS capture> exited 0 with 0
    samples."""
    exe = shutil.which("fibergrade", path=str(Path(sys.executable).parent)) or "fibergrade"
    store = tmp_path / "store"
    r = subprocess.run(
        [exe, "acquire", "--instrument", instrument, "--replay", str(CAPTURES / capture),
         "--store", str(store)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert capture in r.stderr and "this capture was recorded from" in r.stderr
    assert "Traceback" not in r.stderr and not list(store.glob("segments/*.h5"))


def test_a_driver_takes_its_stability_window_from_the_profile_it_was_made_with():
    # the tests shorten timings with dataclasses.replace: make_scale must use the given
    # profile's settings (not the file's), and the loaded profile must stay as it was
    p = load_profile("mt-sics-scale")
    q = replace(p, scale=replace(p.scale, stability_window_s=0.3))
    events = []
    for i in range(4):  # a stable reading every 0.1 s: a 0.3 s window holds at the 4th
        events += [
            CaptureEvent(i * 0.1, "tx", b"SI\r\n"),
            CaptureEvent(i * 0.1 + 0.01, "rx", b"S S     100.00 g\r\n"),
        ]
    transport = Transport(ReplayPort(events))
    w = make_scale(q, transport).stable_weight(poll_s=0.1)
    assert (w.value, w.readings) == (100.0, 4)
    transport.check_replayed()
    assert p.scale.stability_window_s == 1.0


@settings(max_examples=30, deadline=None)
@given(mfd=st.floats(2.5, 150.0), cv=st.floats(0.05, 1.5), seed=st.integers(0, 2**16))
def test_simulated_samples_stay_in_range_without_piling_on_the_bounds(mfd, cv, seed):
    """Out-of-range draws are drawn again, never clipped: no value sits on a bound."""
    for _, d, c in synthetic_samples(n_samples=3, fibres=500, mfd_um=mfd, cv=cv, seed=seed):
        d_arr, c_arr = np.array(d), np.array(c)
        assert np.all((d_arr > 2.0) & (d_arr < 199.0))
        assert np.all((c_arr > 1.0) & (c_arr < 500.0))


@pytest.mark.parametrize(("mfd", "cv"), [(1.0, 0.2), (250.0, 0.2), (16.0, 0.0), (16.0, 5.0)])
def test_simulated_samples_refuse_a_population_they_cannot_draw(mfd, cv):
    with pytest.raises(ValueError, match="simulated samples need"):
        next(synthetic_samples(n_samples=1, mfd_um=mfd, cv=cv))
