"""The instrument commands as a user runs them: ``fibergrade simulate`` and ``fibergrade
acquire`` as subprocesses on real ptys and TCP, Ctrl-C (SIGINT) to a running acquisition,
and ``fibergrade import --instrument`` on the shipped vendor export examples. Every command
runs from a scratch directory, so profiles are found without being in the repository."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fibergrade.acquisition import acquire_weights
from fibergrade.adapters.profiles import load_profile
from fibergrade.adapters.scales import make_scale, mtsics
from fibergrade.adapters.simulators import start_simulator
from fibergrade.adapters.transport import SessionRecorder, Transport, load_capture
from fibergrade.store import Store

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[1]
INSTRUMENTS = ROOT / "instruments"
EXE = shutil.which("fibergrade", path=str(Path(sys.executable).parent)) or "fibergrade"
ENV = {k: v for k, v in os.environ.items() if k not in ("FIBERGRADE_INSTRUMENTS",)}


def run(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, *args], capture_output=True, text=True, cwd=cwd, env=ENV, timeout=timeout
    )


def popen(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [EXE, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=ENV,
    )


def read_port(proc: subprocess.Popen[str]) -> tuple[str, list[str]]:
    """The ``port:`` line a simulator prints, and the lines before it."""
    seen = []
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line.rstrip("\n"))
        if line.startswith("port: "):
            return line.split(" ", 1)[1].strip(), seen
    raise AssertionError(f"no port line: {seen} {proc.stderr.read() if proc.stderr else ''}")


def stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


# --------------------------------------------------------------------------- import


def test_import_vendor_exports_through_their_profiles(tmp_path):
    store = tmp_path / "store"
    ofda = INSTRUMENTS / "ofda-export-example.csv"
    laser = INSTRUMENTS / "laserscan-histogram-example.csv"
    r = run(
        "import",
        "--instrument",
        "ofda-export",
        str(ofda),
        "--store",
        str(store),
        "--json",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)["imports"]
    assert doc[0]["lots"] == ["CH-2024-0117", "CH-2024-0118", "BC-2024-0031"]
    assert doc[0]["rows"] == 62 and not doc[0]["already_imported"]

    profile_path = INSTRUMENTS / "laserscan-histogram.toml"  # by path works too
    r = run(
        "import", "--instrument", str(profile_path), str(laser), "--store", str(store), cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert "2 lots" in r.stdout

    lots = {
        x["lot_id"]: x
        for x in json.loads(run("lots", "--json", "--store", str(store), cwd=tmp_path).stdout)
    }
    assert lots["CH-2024-0117"]["kind"] == "fibres" and lots["CH-2024-0117"]["n"] == 24
    assert lots["LS-24-001"]["kind"] == "histogram" and lots["LS-24-002"]["n"] == 2000
    s = Store.open(store, create=False)
    table = s.read_fibres(["CH-2024-0117"])
    assert float(table.diameter_um[0]) == pytest.approx(16.41)  # decimal comma read
    assert table.medullated is not None and table.curvature_deg_mm is not None

    r = run("import", "--instrument", "ofda-export", str(ofda), "--store", str(store), cwd=tmp_path)
    assert r.returncode == 0 and "already imported" in r.stdout


def test_import_instrument_is_all_or_nothing_and_checks_the_profile(tmp_path):
    store = tmp_path / "store"
    bad = tmp_path / "bad-ofda.csv"
    text = (INSTRUMENTS / "ofda-export-example.csv").read_text(encoding="utf-8")
    lines = text.splitlines()
    lines[-1] = lines[-1].replace(",", ".", 1)  # a decimal point in a decimal-comma file
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    good = INSTRUMENTS / "ofda-export-example.csv"
    r = run(
        "import",
        "--instrument",
        "ofda-export",
        str(good),
        str(bad),
        "--store",
        str(store),
        cwd=tmp_path,
    )
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert f"bad-ofda.csv:{len(lines)}" in r.stderr and "Traceback" not in r.stderr
    assert not list((store / "segments").glob("*.h5"))

    r = run(
        "import", "--instrument", "mt-sics-scale", str(good), "--store", str(store), cwd=tmp_path
    )
    assert r.returncode == 2 and "export profile" in r.stderr

    r = run(
        "import", "--instrument", "no-such-export", str(good), "--store", str(store), cwd=tmp_path
    )
    assert r.returncode == 2 and "ofda-export" in r.stderr  # lists the known profiles


def test_import_takes_the_instrument_an_export_preamble_names(tmp_path):
    """The Laserscan example's preamble says 'Instrument,LS-DEMO-01': lots the manifest
    gives no instrument take it (so they can be calibrated); a manifest naming another one
    is refused, naming the file and both ids; a re-import is still recognised."""
    store = tmp_path / "store"
    laser = INSTRUMENTS / "laserscan-histogram-example.csv"
    other = tmp_path / "other.csv"
    other.write_text(
        "lot_id,declared_type,origin,client,instrument_id\n"
        "LS-24-001,cashmere,MN,Coop,\nLS-24-002,cashmere,MN,Coop,LS-OTHER-7\n"
    )
    r = run("import", "--instrument", "laserscan-histogram", str(laser), "--lots", str(other),
            "--store", str(store), cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert f"{laser}:2:" in r.stderr and "Traceback" not in r.stderr
    assert "'LS-DEMO-01'" in r.stderr and "'LS-OTHER-7'" in r.stderr
    assert "other.csv" in r.stderr and "'LS-24-002'" in r.stderr
    assert not list((store / "segments").glob("*.h5"))

    manifest = tmp_path / "lots.csv"
    manifest.write_text(other.read_text().replace("LS-OTHER-7", ""))
    r = run("import", "--instrument", "laserscan-histogram", str(laser), "--lots", str(manifest),
            "--store", str(store), cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    lots = json.loads(run("lots", "--json", "--store", str(store), cwd=tmp_path).stdout)
    assert [(x["lot_id"], x["instrument_id"]) for x in lots] == [
        ("LS-24-001", "LS-DEMO-01"),
        ("LS-24-002", "LS-DEMO-01"),
    ]
    assert lots[0]["declared_type"] == "cashmere"  # the manifest's other metadata applies
    # the same file again, with the same manifest or none: recognised, and no note that
    # the manifest was not applied (the preamble's instrument is what it would apply)
    for extra in (["--lots", str(manifest)], []):
        r = run("import", "--instrument", "laserscan-histogram", str(laser), *extra,
                "--store", str(store), cwd=tmp_path)  # fmt: skip
        assert r.returncode == 0 and "already imported" in r.stdout, r.stderr
        assert "note" not in r.stderr, r.stderr
    r = run("grade", "--store", str(store), cwd=tmp_path)  # the instrument gates grading now
    assert r.returncode == 4 and "LS-DEMO-01" in r.stderr, r.stderr


# --------------------------------------------------------------------------- simulate


def test_simulate_prints_a_device_path_and_serves_acquire(tmp_path):
    sim = popen(
        "simulate", "analyser", "--samples", "3", "--fibres", "30", "--baud", "0", cwd=tmp_path
    )
    try:
        port, seen = read_port(sim)
        assert stat.S_ISCHR(os.stat(port).st_mode)  # a real pty
        assert "3 samples of 30 fibres" in seen[0]
        store = tmp_path / "store"
        r = run(
            "acquire",
            "--instrument",
            "analyser-line",
            "--port",
            port,
            "--samples",
            "3",
            "--json",
            "--store",
            str(store),
            cwd=tmp_path,
        )
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["ended"] == "limit" and doc["complete"] and doc["partial"] is None
        assert [c["sample_id"] for c in doc["committed"]] == ["S0001", "S0002", "S0003"]
        assert all(c["n"] == 30 and not c["already_imported"] for c in doc["committed"])
        assert doc["readings"] == 90
        s = Store.open(store, create=False)
        assert len(s.segments()) == 3
        for seg in s.segments():
            s.verify_segment(seg.digest)
    finally:
        out, _ = stop(sim)
    assert sim.returncode == 0 and "simulator stopped" in out


def test_simulate_a_scale_on_tcp_and_weigh_from_it(tmp_path):
    sim = popen(
        "simulate", "scale", "--protocol", "cas", "--tcp", "0", "--load", "41.3", cwd=tmp_path
    )
    try:
        port, seen = read_port(sim)
        assert port.startswith("socket://127.0.0.1:") and "cas scale" in seen[0]
        r = run(
            "acquire",
            "--instrument",
            "cas-ci",
            "--port",
            port,
            "--subject",
            "K-9",
            "--immediate",
            "--scale-id",
            "line-2",
            "--store",
            str(tmp_path / "store"),
            cwd=tmp_path,
        )
        assert r.returncode == 0, r.stderr
        assert "41.3 kg  immediate  scale line-2  subject K-9" in r.stdout
    finally:
        stop(sim)


def test_simulate_refuses_bad_arguments(tmp_path):
    r = run("simulate", "scale", cwd=tmp_path)
    assert r.returncode == 2 and "--protocol" in r.stderr
    r = run("simulate", "oven", cwd=tmp_path)
    assert r.returncode == 2
    r = run("simulate", "scale", "--protocol", "mt-sics", "--faults", "gremlins", cwd=tmp_path)
    assert r.returncode == 2 and "unknown fault" in r.stderr
    r = run("simulate", "scale", "--protocol", "mt-sics", "--samples", "3", cwd=tmp_path)
    assert r.returncode == 2 and "only for an analyser" in r.stderr


# --------------------------------------------------------------------------- acquire


def test_sigint_to_a_running_acquire_keeps_completed_samples(tmp_path):
    store = tmp_path / "store"
    with start_simulator("analyser", n_samples=None, fibres_per_sample=60, baudrate=19200) as sim:
        acq = popen(
            "acquire",
            "--instrument",
            "analyser-line",
            "--port",
            sim.url,
            "--store",
            str(store),
            cwd=tmp_path,
        )
        assert acq.stdout is not None
        first = acq.stdout.readline()  # printed once the first sample is committed
        assert first.startswith("sample S0001 -> lot S0001: 60 fibres"), first
        acq.send_signal(signal.SIGINT)
        out, errs = acq.communicate(timeout=20)
    assert acq.returncode == 130, (out, errs)
    assert "interrupted" in errs and "Traceback" not in errs
    s = Store.open(store, create=False)
    kept = [r.lot_id for r in s.lots()]
    assert kept and kept[0] == "S0001"
    assert all(r.n == 60 for r in s.lots())  # only whole samples
    for seg in s.segments():
        s.verify_segment(seg.digest)
    assert f"{len(kept)} completed sample{'' if len(kept) == 1 else 's'} kept" in errs
    if "partial sample" in errs:  # the one in progress is named and not stored
        partial = errs.split("partial sample ", 1)[1].split(":", 1)[0]
        assert partial not in kept


def test_acquire_weights_prints_each_with_unit_mode_and_scale_id(tmp_path):
    subjects = tmp_path / "carcasses.txt"
    subjects.write_text("# today's carcasses\nCARC-101\nCARC-102\n")
    store = tmp_path / "store"
    with start_simulator("scale", "mt-sics", load=210.0, settle_s=0.05) as sim:
        r = run(
            "acquire",
            "--instrument",
            "mt-sics-scale",
            "--port",
            sim.url,
            "--subjects",
            str(subjects),
            "--scale-id",
            "bal-7",
            "--store",
            str(store),
            cwd=tmp_path,
        )
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stdout.splitlines() if "result" in x]
    assert len(lines) == 2
    assert lines[0].startswith("210.00 g  stable  scale bal-7  subject CARC-101")
    recs = [p for _, p in Store.open(store, create=False).results("weighing")]
    assert [(x["subject"], x["value"], x["unit"], x["mode"], x["scale_id"]) for x in recs] == [
        ("CARC-101", 210.0, "g", "stable", "bal-7"),
        ("CARC-102", 210.0, "g", "stable", "bal-7"),
    ]


def test_acquire_refuses_an_overloaded_scale(tmp_path):
    store = tmp_path / "store"
    with start_simulator("scale", "mt-sics", faults="overload") as sim:
        r = run(
            "acquire",
            "--instrument",
            "mt-sics-scale",
            "--port",
            sim.url,
            "--samples",
            "1",
            "--json",
            "--store",
            str(store),
            cwd=tmp_path,
        )
    assert r.returncode == 4, (r.stdout, r.stderr)
    doc = json.loads(r.stdout)
    assert doc["stored"] == [] and [e["error"] for e in doc["errors"]] == ["Overload"]
    assert Store.open(store, create=False).results("weighing") == []


def test_record_then_replay_recognises_the_samples(tmp_path):
    store, cap = tmp_path / "store", tmp_path / "session.jsonl"
    with start_simulator("analyser", n_samples=2, fibres_per_sample=25) as sim:
        r = run(
            "acquire",
            "--instrument",
            "analyser-line",
            "--port",
            sim.url,
            "--samples",
            "2",
            "--record",
            str(cap),
            "--store",
            str(store),
            cwd=tmp_path,
        )
    assert r.returncode == 0, r.stderr
    r = run(
        "acquire",
        "--instrument",
        "analyser-line",
        "--replay",
        str(cap),
        "--json",
        "--store",
        str(store),
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [c["already_imported"] for c in doc["committed"]] == [True, True]
    assert doc["ended"] == "idle"

    # replayed into a fresh store, the lots are dated by the session, not by the replay:
    # the capture's start + the captured time of a read (the one ending the end line)
    fresh = tmp_path / "fresh"
    r = run(*replay_args(cap, fresh), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "records no start time" not in r.stderr
    doc = json.loads(r.stdout)
    header = json.loads(cap.read_text().splitlines()[0])
    start = datetime.fromisoformat(header["started_at"])
    assert doc["capture_started_at"] == start.isoformat()
    reads = {
        start + timedelta(seconds=e["t"])
        for e in map(json.loads, cap.read_text().splitlines()[1:])
        if "rx" in e
    }
    lots = {x.lot_id: x.meta for x in Store.open(fresh, create=False).lots()}
    assert [c["already_imported"] for c in doc["committed"]] == [False, False]
    for c in doc["committed"]:
        assert datetime.fromisoformat(c["measured_at"]) in reads
        assert lots[c["lot_id"]].measured_at == c["measured_at"]


def replay_args(cap: Path, store: Path) -> tuple[str, ...]:
    return ("acquire", "--instrument", "analyser-line", "--replay", str(cap), "--store", str(store))


def test_a_capture_without_a_start_stores_no_measurement_time_and_says_so_once(tmp_path):
    """A capture recorded before the header held started_at: the time of the replay is not
    when the samples were measured, so the new lots carry none, and the CLI says so once."""
    from fibergrade.adapters.analyser import format_sample

    cap = tmp_path / "old.jsonl"
    meta = {"kind": "analyser", "protocol": "fibergrade-line", "profile": "analyser-line"}
    lines = [
        line
        for sid in ("O-1", "O-2")
        for line in format_sample(sid, [15.0 + 0.1 * k for k in range(20)])
    ]
    events = [{"t": 0.5 * i, "rx": line.decode("ascii")} for i, line in enumerate(lines)]
    cap.write_text(
        "\n".join(json.dumps(x) for x in [{"fibergrade_capture": 1, "meta": meta}, *events]) + "\n"
    )
    store = tmp_path / "store"
    r = run(*replay_args(cap, store), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("records no start time") == 1, r.stderr
    assert "the 2 new lots stored from it carry no measurement time" in r.stderr, r.stderr
    assert r.stdout.splitlines()[-1].startswith("2 samples committed (2 new)")
    st = Store.open(store, create=False)
    assert [(x.lot_id, x.meta.measured_at) for x in st.lots()] == [("O-1", None), ("O-2", None)]
    r = run("lots", "--json", "--store", str(store), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert [x["measured_at"] for x in json.loads(r.stdout)] == [None, None]
    # replayed again: nothing new is stored, so there is nothing to say
    r = run(*replay_args(cap, store), "--json", cwd=tmp_path)
    assert r.returncode == 0 and "records no start time" not in r.stderr, r.stderr
    doc = json.loads(r.stdout)
    assert doc["capture_started_at"] is None and doc["replay"] is True

    # a --lots manifest that knows when O-1 was measured: O-1 keeps that time (the
    # capture knows none), and the note counts only the lot left without one
    manifest = tmp_path / "lots.csv"
    manifest.write_text(
        "lot_id,declared_type,origin,client,measured_at\n"
        "O-1,cashmere,MN,Coop,2024-05-14T09:30:00+08:00\n"
        "O-2,cashmere,MN,Coop,\n"
    )
    other = tmp_path / "other"
    r = run(*replay_args(cap, other), "--lots", str(manifest), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "the 1 new lot stored from it carries no measurement time" in r.stderr, r.stderr
    doc = json.loads(r.stdout)
    st = Store.open(other, create=False)
    times = [(x.lot_id, x.meta.measured_at) for x in st.lots()]
    assert times == [("O-1", "2024-05-14T09:30:00+08:00"), ("O-2", None)], times
    assert [(c["lot_id"], c["measured_at"]) for c in doc["committed"]] == times


#: the wall-clock start (injected) of a recorded scale session, long before any replay
SCALE_START = datetime(2024, 9, 17, 6, 41, 2, 250000, tzinfo=UTC)


def reply_times(cap: Path) -> list[float]:
    """The captured time of each reply line: that of the read that returned its last byte."""
    stream, reads = b"", []  # (stream length after the read, t)
    for ev in load_capture(cap).events:
        if ev.kind == "rx":
            stream += ev.data
            reads.append((len(stream), ev.t))
    out, pos = [], 0
    for line in stream.splitlines(keepends=True):
        pos += len(line)
        out.append(next(t for n, t in reads if n >= pos))
    return out


def scale_replay_args(cap: Path, store: Path, *subjects: str) -> tuple[str, ...]:
    who = [x for s in subjects for x in ("--subject", s)]
    args = ("acquire", "--instrument", "mt-sics-scale", "--replay", str(cap), "--immediate")
    return (*args, *who, "--store", str(store))


def test_a_replayed_scale_session_stores_the_time_the_scale_gave_each_weight(tmp_path):
    """Weights stored from a replay are dated by the session, not by the replay: each
    record's timestamp is the capture's started_at + the captured time of the read that
    completed its reply; created_at says when the replay stored it."""
    profile = load_profile("mt-sics-scale")
    cap = tmp_path / "session.jsonl"
    meta = {"kind": "scale", "protocol": "mt-sics", "profile": profile.name}
    loads = {"CARC-101": 210.0, "CARC-102": 187.5}
    live = Store.open(tmp_path / "live", create=True)
    with start_simulator("scale", "mt-sics", load=0.0, settle_s=0.0) as sim:
        rec = SessionRecorder(cap, meta, wall_clock=lambda: SCALE_START)
        tr = Transport.open(sim.url, profile.serial, recorder=rec)
        with make_scale(profile, tr, scale_id="bal-7") as scale:
            acquire_weights(
                live,
                scale,
                profile=profile.name,
                subjects=list(loads),
                immediate=True,
                before_weighing=lambda k, s: sim.balance.set_load(loads[s]),
            )
    replies = reply_times(cap)
    assert len(replies) == 2

    store = tmp_path / "fresh"
    r = run(*scale_replay_args(cap, store, *loads), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "records no start time" not in r.stderr
    doc = json.loads(r.stdout)
    assert doc["replay"] is True and doc["capture_started_at"] == SCALE_START.isoformat()
    want = [(SCALE_START + timedelta(seconds=t)).isoformat() for t in replies]
    assert [(s["subject"], s["value"], s["timestamp"]) for s in doc["stored"]] == [
        (subject, load, t) for (subject, load), t in zip(loads.items(), want, strict=True)
    ]
    stored = dict(Store.open(store, create=False).results("weighing"))
    for s in doc["stored"]:
        record = stored[s["result_id"]]
        assert record["timestamp"] == s["timestamp"]
        # stored by the replay, well after the session it replays
        assert datetime.fromisoformat(record["created_at"]) > SCALE_START + timedelta(days=1)


def test_a_scale_capture_without_a_start_stores_no_weighing_time_and_says_so_once(tmp_path):
    """A capture recorded before the header held started_at: the time of the replay is not
    when the scale gave the weights, so their records carry none (null), and acquire says
    so once."""
    cap = tmp_path / "old.jsonl"
    meta = {"kind": "scale", "protocol": "mt-sics", "profile": "mt-sics-scale"}
    events = []
    for k, value in enumerate((210.0, 187.5)):
        events.append({"t": 0.5 * k, "tx": "SI\r\n"})
        reply = mtsics.format_weight("S", "S", value, "g", 2).decode("ascii")
        events.append({"t": 0.5 * k + 0.1, "rx": reply})
    cap.write_text(
        "\n".join(json.dumps(x) for x in [{"fibergrade_capture": 1, "meta": meta}, *events]) + "\n"
    )
    store = tmp_path / "store"
    r = run(*scale_replay_args(cap, store, "A", "B"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("records no start time") == 1, r.stderr
    assert "the 2 weights stored from it carry no weighing time" in r.stderr, r.stderr
    recs = [x for _, x in Store.open(store, create=False).results("weighing")]
    assert [(x["subject"], x["value"], x["timestamp"]) for x in recs] == [
        ("A", 210.0, None),
        ("B", 187.5, None),
    ]
    assert all(x["created_at"] for x in recs)  # when it was stored is known
    r = run(*scale_replay_args(cap, tmp_path / "other", "A", "B"), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("records no start time") == 1, r.stderr
    doc = json.loads(r.stdout)
    assert doc["capture_started_at"] is None and doc["replay"] is True
    assert [s["timestamp"] for s in doc["stored"]] == [None, None]


def test_a_replay_with_a_longer_interval_dates_weights_by_the_capture(tmp_path):
    """--interval 15 on a capture whose weighings were 10 s apart: the replay's clock runs
    ahead of the capture, but each weight is dated started_at + the captured t of the read
    that completed its reply (05:00:00.01, :10.01, :20.01), not :15.01 and :30.01."""
    cap = tmp_path / "cap.jsonl"
    meta = {"kind": "scale", "protocol": "mt-sics", "profile": "mt-sics-scale"}
    lines: list[dict] = [
        {"fibergrade_capture": 1, "started_at": "2025-03-04T05:00:00+00:00", "meta": meta}
    ]
    for t in (0, 10, 20):
        lines += [{"t": t, "tx": "SI\r\n"}, {"t": t + 0.01, "rx": "S S     100.00 g\r\n"}]
    cap.write_text("".join(json.dumps(x) + "\n" for x in lines))
    store = tmp_path / "s1"
    args = ("acquire", "--instrument", "mt-sics-scale", "--replay", str(cap), "--immediate")
    r = run(
        *args, "--samples", "3", "--interval", "15", "--store", str(store), "--json", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    want = [f"2025-03-04T05:00:{s}.010000+00:00" for s in ("00", "10", "20")]
    assert [s["timestamp"] for s in json.loads(r.stdout)["stored"]] == want
    assert [x["timestamp"] for _, x in Store.open(store, create=False).results("weighing")] == want


def test_replaying_a_scale_capture_twice_stores_its_weighings_once(tmp_path):
    """A session recorded live, replayed twice into a fresh store: the first replay stores
    each weighing with its origin (the capture's SHA-256, the event of its reply), the
    second recognises them, stores and logs nothing, says how many were already stored,
    and exits 0; the store holds the same weighing records after it."""
    from fibergrade.audit import AuditLog

    cap = tmp_path / "session.jsonl"
    who = ("--subject", "CARC-101", "--subject", "CARC-102")
    with start_simulator("scale", "mt-sics", load=210.0, settle_s=0.0) as sim:
        live = ("acquire", "--instrument", "mt-sics-scale", "--port", sim.url, "--immediate")
        r = run(*live, *who, "--record", str(cap), "--store", str(tmp_path / "live"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    sha = hashlib.sha256(cap.read_bytes()).hexdigest()

    store = tmp_path / "fresh"
    r = run(*scale_replay_args(cap, store, "CARC-101", "CARC-102"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "2 weights stored (immediate), 0 already stored from this capture" in r.stdout
    records = dict(Store.open(store, create=False).results("weighing"))
    assert len(records) == 2
    assert {x["capture"]["sha256"] for x in records.values()} == {sha}
    assert len({x["capture"]["event"] for x in records.values()}) == 2
    logged = AuditLog(store).entries()

    r = run(*scale_replay_args(cap, store, "CARC-101", "CARC-102"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "0 weights stored (immediate), 2 already stored from this capture" in r.stdout
    lines = [x for x in r.stdout.splitlines() if "-> result" in x]
    assert len(lines) == 2 and all(x.endswith("(already stored)") for x in lines), lines
    assert dict(Store.open(store, create=False).results("weighing")) == records
    assert AuditLog(store).entries() == logged

    r = run(*scale_replay_args(cap, store, "CARC-101", "CARC-102"), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["complete"] is True and doc["replay"] is True
    assert [(s["already_stored"], s["subject"]) for s in doc["stored"]] == [
        (True, "CARC-101"),
        (True, "CARC-102"),
    ]
    assert {s["result_id"] for s in doc["stored"]} == set(records)
    assert dict(Store.open(store, create=False).results("weighing")) == records


def test_a_capture_replayed_into_the_store_its_live_run_wrote_stores_nothing_again(tmp_path):
    """acquire --record stores each live weighing with the capture's session id and event;
    --replay of that capture into the same store recognises them all: nothing stored,
    '2 already stored from this capture', exit 0, the live records left as they were."""
    cap, store = tmp_path / "session.jsonl", tmp_path / "store"
    who = ("--subject", "CARC-101", "--subject", "CARC-102")
    with start_simulator("scale", "mt-sics", load=210.0, settle_s=0.0) as sim:
        live = ("acquire", "--instrument", "mt-sics-scale", "--port", sim.url, "--immediate")
        r = run(*live, *who, "--record", str(cap), "--store", str(store), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    records = dict(Store.open(store, create=False).results("weighing"))
    session = json.loads(cap.read_text().splitlines()[0])["session"]
    assert [x["capture"]["session"] for x in records.values()] == [session, session]

    r = run(*scale_replay_args(cap, store, "CARC-101", "CARC-102"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "0 weights stored (immediate), 2 already stored from this capture" in r.stdout
    assert dict(Store.open(store, create=False).results("weighing")) == records


def test_a_replay_naming_other_subjects_than_the_stored_weighings_exits_3(tmp_path):
    """A capture whose weighings are stored for CARC-101 and CARC-102, replayed again for
    CARC-201 and CARC-202: not '(already stored)' under the old subjects and exit 0, but a
    conflict with the store for each (the event, the stored and the asked subject), nothing
    stored, and exit 3, the code for a conflict with what the store holds."""
    cap = tmp_path / "session.jsonl"
    meta = {"kind": "scale", "protocol": "mt-sics", "profile": "mt-sics-scale"}
    lines: list[dict] = [
        {"fibergrade_capture": 1, "started_at": SCALE_START.isoformat(), "meta": meta}
    ]
    reply = mtsics.format_weight("S", "S", 210.0, "g", 2).decode("ascii")
    for t in (0.0, 1.0):
        lines += [{"t": t, "tx": "SI\r\n"}, {"t": t + 0.25, "rx": reply}]
    cap.write_text("".join(json.dumps(x) + "\n" for x in lines))
    store = tmp_path / "store"
    r = run(*scale_replay_args(cap, store, "CARC-101", "CARC-102"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    records = dict(Store.open(store, create=False).results("weighing"))

    r = run(*scale_replay_args(cap, store, "CARC-201", "CARC-202"), cwd=tmp_path)
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "(already stored)" not in r.stdout
    for event, old, new in ((2, "CARC-101", "CARC-201"), (4, "CARC-102", "CARC-202")):
        line = next(x for x in r.stderr.splitlines() if f"event {event} " in x)
        assert f"'{old}'" in line and f"'{new}'" in line, r.stderr
    assert "conflict" in r.stderr
    assert "2 in conflict with the store" in r.stdout, r.stdout
    assert dict(Store.open(store, create=False).results("weighing")) == records

    r = run(*scale_replay_args(cap, store, "CARC-101", "CARC-202"), "--json", cwd=tmp_path)
    assert r.returncode == 3, r.stderr
    doc = json.loads(r.stdout)
    assert [(s["subject"], s["already_stored"]) for s in doc["stored"]] == [("CARC-101", True)]
    assert [(e["subject"], e["error"]) for e in doc["errors"]] == [
        ("CARC-202", "ReplayConflictError")
    ]
    assert doc["complete"] is False
    assert dict(Store.open(store, create=False).results("weighing")) == records


def one_sample_capture(cap: Path) -> Path:
    """A capture of one analyser sample, R-1 (20 readings 0.1 s apart), with a start."""
    from fibergrade.adapters.analyser import format_sample

    meta = {"kind": "analyser", "protocol": "fibergrade-line", "profile": "analyser-line"}
    lines = format_sample("R-1", [15.0 + 0.1 * k for k in range(20)])
    events = [{"t": 0.1 * i, "rx": line.decode("ascii")} for i, line in enumerate(lines)]
    header = {"fibergrade_capture": 1, "started_at": SCALE_START.isoformat(), "meta": meta}
    cap.write_text("".join(json.dumps(x) + "\n" for x in [header, *events]))
    return cap


def test_a_sample_replayed_as_another_lot_than_it_was_stored_exits_3(tmp_path):
    """--lot L-B on a capture whose sample the store holds as lot L-A: a conflict with the
    store (the sample and both lot ids named), nothing stored, exit 3, as for a weighing
    replayed for another subject."""
    cap = one_sample_capture(tmp_path / "one.jsonl")
    store = tmp_path / "store"
    r = run(*replay_args(cap, store), "--lot", "L-A", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = run(*replay_args(cap, store), "--lot", "L-A", cwd=tmp_path)
    assert r.returncode == 0 and "already in the store" in r.stdout, r.stderr

    r = run(*replay_args(cap, store), "--lot", "L-B", cwd=tmp_path)
    assert r.returncode == 3, (r.stdout, r.stderr)
    line = next(x for x in r.stderr.splitlines() if "'R-1'" in x)
    assert "'L-A'" in line and "'L-B'" in line, r.stderr
    assert "conflict with the store" in r.stderr and "already in the store" not in r.stdout
    assert "1 in conflict with the store" in r.stdout, r.stdout
    assert [x.lot_id for x in Store.open(store, create=False).lots()] == ["L-A"]
    r = run(*replay_args(cap, store), "--lot", "L-B", "--json", cwd=tmp_path)
    assert r.returncode == 3, r.stderr
    doc = json.loads(r.stdout)
    assert doc["committed"] == [] and doc["complete"] is False
    assert [(e["sample_id"], e["error"]) for e in doc["errors"]] == [("R-1", "ReplayConflictError")]


def test_a_sample_named_by_a_lot_id_imported_from_a_file_exits_3(tmp_path):
    """--lot L-A when the store holds L-A from an imported file: a conflict with what the
    store holds (exit 3, as the README's table says for a lot id stored from another
    source), not a bad sample (4); nothing is stored for the sample."""
    cap = one_sample_capture(tmp_path / "one.jsonl")
    (tmp_path / "lots.csv").write_text("lot_id,diameter_um\nL-A,15.5\nL-A,16.0\n")
    store = tmp_path / "store"
    r = run("import", "lots.csv", "--store", str(store), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = run(*replay_args(cap, store), "--lot", "L-A", cwd=tmp_path)
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "conflict with the store" in r.stderr and "'L-A'" in r.stderr, r.stderr
    assert [x.n for x in Store.open(store, create=False).lots()] == [2]


def test_a_replay_prints_its_own_time_and_says_it_is_a_replay(tmp_path):
    """A capture whose 30 lines arrived 4 s apart (120 s on the capture's clock): the
    replay does not print '30 readings in 120.0 s' as if it had taken that long."""
    from fibergrade.adapters.analyser import format_sample

    cap = tmp_path / "slow.jsonl"
    meta = {"kind": "analyser", "protocol": "fibergrade-line", "profile": "analyser-line"}
    events = [
        {"t": 4.0 * i, "rx": line.decode("ascii")}
        for i, line in enumerate(format_sample("R-1", [15.0 + 0.1 * k for k in range(30)]))
    ]
    cap.write_text(
        "\n".join(json.dumps(x) for x in [{"fibergrade_capture": 1, "meta": meta}, *events]) + "\n"
    )
    store = tmp_path / "store"
    args = ("acquire", "--instrument", "analyser-line", "--replay", str(cap), "--store", str(store))
    r = run(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    summary = r.stdout.splitlines()[-1]
    assert summary.startswith("1 sample committed (1 new), 0 refused, "), summary
    assert "30 readings replayed in " in summary, summary
    assert "(the captured session took 120.0 s)" in summary and "in 120.0 s" not in summary
    doc = json.loads(run(*args, "--json", cwd=tmp_path).stdout)
    assert doc["replay"] is True and doc["elapsed_s"] == 120.0  # the capture's clock
    assert isinstance(doc["run_s"], float) and doc["run_s"] >= 0


def test_acquire_checks_its_options_and_finds_profiles_anywhere(tmp_path):
    r = run(
        "acquire",
        "--instrument",
        "analyser-line",
        "--port",
        "/dev/null",
        "--subject",
        "X",
        cwd=tmp_path,
    )
    assert r.returncode == 2 and "only for scale profiles" in r.stderr
    r = run("acquire", "--instrument", "ofda-export", "--port", "/dev/null", cwd=tmp_path)
    assert r.returncode == 2 and "import --instrument" in r.stderr
    r = run("acquire", "--instrument", "no-such", "--port", "/dev/null", cwd=tmp_path)
    assert r.returncode == 2 and "analyser-line" in r.stderr and "Traceback" not in r.stderr
    r = run(
        "acquire", "--instrument", "analyser-line", "--port", str(tmp_path / "nope"), cwd=tmp_path
    )
    assert r.returncode == 4 and "cannot open port" in r.stderr
    code = "from fibergrade.adapters.profiles import find_profile; print(find_profile('cas-ci'))"
    for where in (tmp_path, ROOT):  # a scratch directory and the repository root
        p = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            cwd=where,
            env=ENV,
            check=True,
        )
        assert Path(p.stdout.strip()).resolve() == (INSTRUMENTS / "cas-ci.toml").resolve()
