"""Transport: deadlines, disconnection, garbage, spy:// capture, recording and replay.

Real ptys (os.openpty) and loopback sockets, no mocks (scales.md, "pyserial without
hardware").
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
import time
import tty
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fibergrade.adapters.errors import (
    Disconnected,
    FrameError,
    InstrumentTimeout,
    PortOpenError,
    ReplayMismatch,
)
from fibergrade.adapters.profiles import SerialSettings
from fibergrade.adapters.transport import (
    CaptureEvent,
    CapturePosition,
    ReplayPort,
    SessionRecorder,
    Transport,
    load_capture,
    open_transport,
    read_capture,
)

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def pty_pair():
    """(master fd, slave path); the master plays the device."""
    master, slave = os.openpty()
    tty.setraw(master)
    path = os.ttyname(slave)
    yield master, path
    for fd in (master, slave):
        with contextlib.suppress(OSError):
            os.close(fd)


def _later(delay: float, fn, *args) -> threading.Thread:
    def run():
        time.sleep(delay)
        fn(*args)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.integration
def test_read_line_over_pty_loops_on_short_reads(pty_pair):
    master, path = pty_pair
    with Transport.open(path) as tr:
        os.write(master, b"hel")
        _later(0.1, os.write, master, b"lo\r\nnext")
        assert tr.read_line(2.0) == b"hello"
        os.write(master, b" line\n")
        assert tr.read_line(2.0) == b"next line"
        tr.write(b"SI\r\n")
        time.sleep(0.05)
        assert os.read(master, 100) == b"SI\r\n"


@pytest.mark.integration
@pytest.mark.timeout(30)  # a read that ignored its deadline would hang: this fails it
def test_timeout_is_typed_and_keeps_its_deadline(pty_pair):
    master, path = pty_pair
    with Transport.open(path) as tr:
        os.write(master, b"no terminator")
        t0 = time.monotonic()
        with pytest.raises(InstrumentTimeout) as ei:
            tr.read_line(0.3)
        # not before its deadline (a busy machine can only make it later, so no upper
        # bound is asserted: timings belong in benchmarks/)
        assert time.monotonic() - t0 >= 0.25
        assert ei.value.partial == b"no terminator"
        assert path in str(ei.value)
        # the partial line stays buffered and completes later
        os.write(master, b"\n")
        assert tr.read_line(1.0) == b"no terminator"


@pytest.mark.integration
def test_unplugged_pty_is_disconnected_not_timeout(pty_pair):
    master, path = pty_pair
    tr = Transport.open(path)
    os.write(master, b"partial")
    os.close(master)  # the USB adapter is pulled
    with pytest.raises(Disconnected) as ei:
        tr.read_line(2.0)
    assert "unplugged" in str(ei.value)
    with pytest.raises(Disconnected):
        tr.write(b"SI\r\n")
    tr.close()


@pytest.mark.integration
def test_socket_url_and_peer_closing():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def serve():
        conn, _ = srv.accept()
        assert conn.recv(10) == b"Q\r\n"
        conn.sendall(b"ST,+00012.34  g\r\n")
        time.sleep(0.1)
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    with Transport.open(f"socket://127.0.0.1:{port}") as tr:
        tr.write(b"Q\r\n")
        assert tr.read_line(2.0) == b"ST,+00012.34  g"
        with pytest.raises(Disconnected):
            tr.read_line(2.0)
    t.join(2)
    srv.close()


def test_port_that_cannot_be_opened():
    with pytest.raises(PortOpenError) as ei:
        Transport.open("/dev/does-not-exist-fibergrade")
    assert "/dev/does-not-exist-fibergrade" in str(ei.value)


@pytest.mark.integration
def test_a_port_another_process_reads_is_refused_not_shared(pty_pair, tmp_path):
    """Two readers of one device split its lines: a second `acquire` on the analyser's
    port took lines out of the first one's sample (an index gap, the sample lost) and then
    ended 'disconnected'. The port is opened exclusively; the second is refused (exit 4)."""
    import subprocess
    import sys

    _, path = pty_pair
    exe = os.path.join(os.path.dirname(sys.executable), "fibergrade")
    store = tmp_path / "store"
    args = ["acquire", "--instrument", "analyser-line", "--port", path, "--samples", "1"]
    with Transport.open(path):  # the first reader
        r = subprocess.run(
            [exe, *args, "--store", str(store)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert r.returncode == 4, r.stderr
        text = " ".join(r.stderr.split())
        assert path in text and "another program" in text and "Traceback" not in text
    assert not list(store.glob("segments/*"))
    with Transport.open(path):  # once the first has closed it, the port opens again
        pass


@pytest.mark.integration
def test_profile_settings_reach_pyserial(pty_pair):
    _, path = pty_pair
    sbi = SerialSettings(baudrate=1200, bytesize=7, parity="O", stopbits=1, rtscts=True)
    with Transport.open(path, sbi) as tr:
        ser = tr.port._ser  # the pyserial object: settings as the profile gave them
        assert (ser.baudrate, ser.bytesize, ser.parity, ser.stopbits) == (1200, 7, "O", 1)
        assert ser.rtscts is True and ser.xonxoff is False


@pytest.mark.integration
def test_spy_url_writes_a_hex_capture(pty_pair, tmp_path):
    master, path = pty_pair
    log = tmp_path / "spy.txt"
    with Transport.open(f"spy://{path}?file={log}") as tr:
        tr.write(b"SI\r\n")
        os.write(master, b"S S 1.00 g\r\n")
        assert tr.read_line(2.0) == b"S S 1.00 g"
    text = log.read_text()
    assert "53 49 0D 0A" in text  # "SI\r\n" in the hex dump


def test_long_line_is_garbage_and_the_stream_recovers():
    tr = Transport(ReplayPort.from_bytes(b"x" * 100 + b"\nok\n", chunk=7), max_line=32)
    with pytest.raises(FrameError):
        tr.read_line(1.0)
    assert tr.read_line(1.0) == b"ok"


def test_read_line_can_require_cr_lf():
    tr = Transport(ReplayPort.from_bytes(b"S S 1.00 g\r\nS S 2.00 g\nS S 3.00 g\r\n", chunk=5))
    assert tr.read_line(1.0, require_cr=True) == b"S S 1.00 g"
    with pytest.raises(FrameError, match="without the CR") as ei:
        tr.read_line(1.0, require_cr=True)
    assert ei.value.frame == b"S S 2.00 g\n" and "CR b'\\n'" in str(ei.value)
    assert tr.read_line(1.0, require_cr=True) == b"S S 3.00 g"  # the bad line was consumed
    lenient = Transport(ReplayPort.from_bytes(b"M,1\nE,2\r\n"))
    assert lenient.read_line(1.0) == b"M,1" and lenient.read_line(1.0) == b"E,2"


def test_immediate_bytes_and_read_exact():
    tr = Transport(ReplayPort.from_bytes(b"\x06\r\nST,+1\r\n" + bytes(range(22))))
    assert tr.read_line(1.0, immediate=b"\x06") == b"\x06"
    assert tr.read_line(1.0, immediate=b"\x06") == b""
    assert tr.read_line(1.0) == b"ST,+1"
    assert tr.read_exact(22, 1.0) == bytes(range(22))
    with pytest.raises(InstrumentTimeout):
        tr.read_exact(1, 0.5)


@pytest.mark.integration
def test_record_then_replay_a_session(pty_pair, tmp_path):
    master, path = pty_pair
    cap = tmp_path / "session.jsonl"
    tr = open_transport(path, record_to=cap, meta={"purpose": "test"})
    tr.write(b"SI\r\n")
    os.write(master, b"S S     1.00 g\r\n")
    assert tr.read_line(2.0) == b"S S     1.00 g"
    tr.write(b"Z\r\n")
    os.write(master, b"Z A\r\n")
    assert tr.read_line(2.0) == b"Z A"
    os.close(master)
    with pytest.raises(Disconnected):
        tr.read_line(2.0)
    tr.close()

    meta, events = read_capture(cap)
    assert meta["purpose"] == "test" and meta["url"] == path
    assert [e.kind for e in events][:2] == ["tx", "rx"]
    assert events[-1].kind == "disconnected"
    header = json.loads(cap.read_text().splitlines()[0])
    assert header["fibergrade_capture"] == 1
    start = datetime.fromisoformat(header["started_at"])  # the wall clock at t = 0
    assert start.utcoffset() == timedelta(0)
    assert load_capture(cap).started_at == start == Transport.replay(cap).capture_started_at

    rp = Transport.replay(cap)
    rp.write(b"SI\r\n")
    assert rp.read_line(2.0) == b"S S     1.00 g"
    with pytest.raises(ReplayMismatch):
        rp.write(b"T\r\n")  # the capture holds Z here
    rp2 = Transport.replay(cap)
    rp2.write(b"SI\r\n")
    rp2.read_line(2.0)
    rp2.write(b"Z\r\n")
    assert rp2.read_line(2.0) == b"Z A"
    with pytest.raises(Disconnected):
        rp2.read_line(2.0)


def test_replay_timing_reproduces_a_live_timeout():
    events = [CaptureEvent(0.0, "rx", b"a\n"), CaptureEvent(5.0, "rx", b"b\n")]
    tr = Transport(ReplayPort(events))
    assert tr.read_line(1.0) == b"a"
    with pytest.raises(InstrumentTimeout):
        tr.read_line(1.0)  # b arrived 5 s later: a 1 s read timed out live
    assert tr.read_line(10.0) == b"b"
    assert tr.clock() == pytest.approx(5.0)


def test_replay_is_strict_about_unread_replies_and_leftover_traffic():
    events = [
        CaptureEvent(0.0, "tx", b"SI\r\n"),
        CaptureEvent(0.01, "rx", b"S S     1.00 g\r\n"),
        CaptureEvent(0.1, "tx", b"Z\r\n"),
        CaptureEvent(0.11, "rx", b"Z A\r\n"),
    ]
    # a reply the live session read before its next command, left unread: a divergence
    tr = Transport(ReplayPort(events))
    tr.write(b"SI\r\n")
    with pytest.raises(ReplayMismatch, match=r"still holds a reply.*S S     1\.00 g"):
        tr.write(b"Z\r\n")
    # stopping early leaves captured traffic over: the end-of-session check refuses it
    tr = Transport(ReplayPort(events))
    tr.write(b"SI\r\n")
    assert tr.read_line(1.0) == b"S S     1.00 g"
    with pytest.raises(ReplayMismatch, match=r"2 captured event\(s\) not replayed.*tx b'Z"):
        tr.check_replayed()
    tr.write(b"Z\r\n")
    assert tr.read_line(1.0) == b"Z A"
    tr.check_replayed()  # the whole session replayed
    # bytes received but consumed by no frame are leftover traffic too
    tr = Transport(ReplayPort.from_bytes(b"Z A\r\nextra"))
    assert tr.read_line(1.0) == b"Z A"
    with pytest.raises(ReplayMismatch, match="no frame consumed: b'extra'"):
        tr.check_replayed()
    assert tr.take_buffered(b"extra") and not tr.take_buffered(b"x")
    tr.check_replayed()


def test_bad_capture_files(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"not": "a capture"}\n')
    with pytest.raises(FrameError):
        read_capture(p)
    p.write_text('{"fibergrade_capture": 1, "meta": {}}\n{"t": "soon"}\n')
    with pytest.raises(FrameError) as ei:
        read_capture(p)
    assert "line 2" in str(ei.value)
    p.write_text("")
    with pytest.raises(FrameError):
        read_capture(p)


def test_recorder_escapes_every_byte(tmp_path):
    p = tmp_path / "all.jsonl"
    rec = SessionRecorder(p, {"k": 1})
    rec.rx(10.0, bytes(range(256)))
    rec.tx(10.5, b"\x1bP")
    rec.close()
    _, events = read_capture(p)
    assert events[0] == CaptureEvent(0.0, "rx", bytes(range(256)))
    assert events[1] == CaptureEvent(0.5, "tx", b"\x1bP")


START = datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
SESSION = "0123456789abcdef0123456789abcdef"


def test_the_header_records_the_wall_clock_time_of_t0(tmp_path):
    """started_at is read from the wall clock when the first event sets t = 0 (not when
    the recorder is made: a port can sit idle for minutes before the first byte), so a
    line's wall-clock time is started_at + its t."""
    reads = []

    def wall_clock():
        reads.append(1)
        return START

    p = tmp_path / "s.jsonl"
    rec = SessionRecorder(p, {"k": 1}, wall_clock=wall_clock, session_id=SESSION)
    assert reads == []
    rec.tx(100.0, b"SI\r\n")
    rec.rx(102.5, b"S S 1 g\r\n")
    rec.close()
    assert reads == [1]
    header = json.loads(p.read_text().splitlines()[0])
    assert header == {
        "fibergrade_capture": 1,
        "started_at": "2025-03-04T05:06:07.890123+00:00",
        "session": SESSION,
        "meta": {"k": 1},
    }
    cap = load_capture(p)
    assert cap.started_at == START and cap.meta == {"k": 1}
    assert [e.t for e in cap.events] == [0.0, 2.5]
    assert read_capture(p) == (cap.meta, cap.events)
    port = ReplayPort.from_file(p)
    assert port.started_at == START and Transport(port).capture_started_at == START


def test_a_replay_gives_the_wall_clock_time_of_the_captured_clock():
    events = [CaptureEvent(0.0, "rx", b"a\n"), CaptureEvent(12.25, "rx", b"b\n")]
    port = ReplayPort(events, started_at=START)
    tr = Transport(port)
    assert tr.read_line(1.0) == b"a" and port.wall_time() == START
    assert tr.read_line(20.0) == b"b"
    assert port.wall_time() == START + timedelta(seconds=12.25)
    assert ReplayPort(events).wall_time() is None  # no start recorded: not guessed


def test_a_replay_that_waits_longer_than_the_session_dates_reads_by_the_capture():
    """The replay's clock runs ahead of the capture when the replay waits longer than the
    live session did (a longer interval between weighings, a poll interval raised since
    the recording): the captured reply is then served at once, and its wall-clock time is
    still started_at + its captured t, not started_at + the replay's clock."""
    events = [
        CaptureEvent(0.0, "tx", b"SI\r\n"),
        CaptureEvent(0.25, "rx", b"S S 1 g\r\n"),
        CaptureEvent(10.0, "tx", b"SI\r\n"),
        CaptureEvent(10.25, "rx", b"S S 2 g\r\n"),
    ]
    port = ReplayPort(events, started_at=START)
    tr = Transport(port)
    assert port.wall_time() is None  # nothing read yet: no read to date
    tr.write(b"SI\r\n")
    assert tr.read_line(1.0) == b"S S 1 g"
    tr.sleep(15.0)  # the live session waited 10 s between the commands
    assert tr.clock() > 15.0  # the replay's clock is past the next reply's t
    tr.write(b"SI\r\n")
    assert tr.read_line(1.0) == b"S S 2 g"
    assert tr.clock() > 15.0
    assert port.wall_time() == START + timedelta(seconds=10.25)
    tr.sleep(100.0)  # waiting after the read does not move its time either
    assert port.wall_time() == START + timedelta(seconds=10.25)


def test_a_wall_clock_in_another_zone_is_recorded_in_utc(tmp_path):
    p = tmp_path / "s.jsonl"
    perth = START.astimezone(timezone(timedelta(hours=8)))
    rec = SessionRecorder(p, wall_clock=lambda: perth)
    rec.rx(0.0, b"x\n")
    rec.close()
    assert json.loads(p.read_text().splitlines()[0])["started_at"] == START.isoformat()
    with pytest.raises(ValueError, match="time zone"):
        SessionRecorder(tmp_path / "n.jsonl", wall_clock=lambda: datetime(2025, 1, 1)).rx(0, b"")


def test_a_session_without_events_has_a_header_and_no_start(tmp_path):
    p = tmp_path / "s.jsonl"
    SessionRecorder(p, {"k": 1}, wall_clock=lambda: START, session_id=SESSION).close()
    assert json.loads(p.read_text()) == {
        "fibergrade_capture": 1,
        "session": SESSION,
        "meta": {"k": 1},
    }
    assert load_capture(p).started_at is None and load_capture(p).session == SESSION


def test_a_capture_without_a_start_still_reads_and_replays(tmp_path):
    """Captures written before the header recorded started_at are the same version and
    read as before; their start is unknown, not guessed."""
    p = tmp_path / "old.jsonl"
    p.write_text('{"fibergrade_capture": 1, "meta": {"k": 1}}\n{"t": 0.5, "rx": "a\\n"}\n')
    cap = load_capture(p)
    assert cap.started_at is None and cap.events == [CaptureEvent(0.5, "rx", b"a\n")]
    tr = Transport.replay(p)
    assert tr.capture_started_at is None and tr.read_line(1.0) == b"a"
    assert Transport(ReplayPort.from_bytes(b"a\n")).capture_started_at is None


@pytest.mark.parametrize("value", ['"yesterday"', '"2025-03-04T05:06:07"', "17", "null", '""'])
def test_a_start_that_is_no_utc_time_is_a_bad_capture(tmp_path, value):
    p = tmp_path / "x.jsonl"
    p.write_text(f'{{"fibergrade_capture": 1, "started_at": {value}, "meta": {{}}}}\n')
    with pytest.raises(FrameError, match="started_at") as ei:
        load_capture(p)
    assert "line 1" in str(ei.value)


def test_a_replay_names_its_capture_by_the_sha256_of_the_file(tmp_path):
    """The capture's identity is the SHA-256 of the file's bytes as read (what sha256sum
    prints), so a second replay of the same capture, under any name, is recognisable."""
    p = tmp_path / "s.jsonl"
    rec = SessionRecorder(p, {"k": 1}, wall_clock=lambda: START)
    rec.tx(0.0, b"SI\r\n")
    rec.rx(0.1, b"S S 1 g\r\n")
    rec.close()
    want = hashlib.sha256(p.read_bytes()).hexdigest()
    assert load_capture(p).sha256 == want
    assert ReplayPort.from_file(p).sha256 == want
    assert Transport.replay(p).capture_sha256 == want
    copy = tmp_path / "renamed.jsonl"
    copy.write_bytes(p.read_bytes())
    assert Transport.replay(copy).capture_sha256 == want
    p.write_bytes(p.read_bytes().replace(b"S S 1 g", b"S S 2 g"))  # another session
    assert Transport.replay(p).capture_sha256 != want
    # no file, no file digest: events made in memory, and a live port
    assert Transport(ReplayPort.from_bytes(b"a\n")).capture_sha256 is None
    assert ReplayPort([]).sha256 is None


def test_a_replay_tells_the_event_of_the_read_that_completed_a_reply():
    """The position of what a replay just read: the number of the captured event (1 = the
    first after the header, as ReplayMismatch counts them) whose bytes the last read
    returned, and its captured time. Two identical replies are told apart by it."""
    events = [
        CaptureEvent(0.0, "tx", b"SI\r\n"),
        CaptureEvent(0.05, "rx", b"S S "),
        CaptureEvent(0.125, "rx", b"1 g\r\n"),
        CaptureEvent(0.25, "tx", b"SI\r\n"),
        CaptureEvent(0.375, "note", detail="an event a replay skips"),
        CaptureEvent(0.375, "rx", b"S S 1 g\r\n"),
    ]
    tr = Transport(ReplayPort(events))
    assert tr.capture_position is None  # nothing read yet
    tr.write(b"SI\r\n")
    assert tr.capture_position is None  # a write is no read
    assert tr.read_line(1.0) == b"S S 1 g"
    first = tr.capture_position
    assert first == CapturePosition(event=3, t=0.125)
    assert first.to_dict() == {"event": 3, "t": 0.125}
    tr.write(b"SI\r\n")
    assert tr.capture_position == first  # still the read that completed the reply
    assert tr.read_line(1.0) == b"S S 1 g"  # the same bytes again, a later reply
    assert tr.capture_position == CapturePosition(event=6, t=0.375)
    with pytest.raises(InstrumentTimeout):
        tr.read_line(0.5)  # the end of the capture: no read returns bytes
    assert tr.capture_position == CapturePosition(event=6, t=0.375)


def test_each_recording_names_its_session_with_a_random_id(tmp_path):
    """The header's session id (uuid4 hex) names the recorded session: whatever happens to
    the file later (notes added to its header, CR LF line ends, a truncated copy), what a
    replay of it stores can still be told to come from that session."""
    ids = []
    for name in ("a.jsonl", "b.jsonl"):
        p = tmp_path / name
        rec = SessionRecorder(p, {"k": 1}, wall_clock=lambda: START)
        rec.rx(0.0, b"x\n")
        rec.close()
        header = json.loads(p.read_text().splitlines()[0])
        assert len(header["session"]) == 32 and int(header["session"], 16) >= 0
        assert rec.session == header["session"]
        assert load_capture(p).session == header["session"]
        assert ReplayPort.from_file(p).session == header["session"]
        assert Transport.replay(p).capture_session == header["session"]
        ids.append(header["session"])
    assert ids[0] != ids[1]
    # a header edited afterwards, CR LF line ends: the same session, another file digest
    p = tmp_path / "a.jsonl"
    lines = p.read_text().splitlines()
    header = json.loads(lines[0])
    header["meta"]["note"] = "bench 2, after the service"
    edited = tmp_path / "edited.jsonl"
    edited.write_text("\r\n".join([json.dumps(header), *lines[1:]]) + "\r\n")
    assert Transport.replay(edited).capture_session == ids[0]
    assert Transport.replay(edited).capture_sha256 != Transport.replay(p).capture_sha256
    # captures recorded before the header held one, events made in memory, a live port
    old = tmp_path / "old.jsonl"
    old.write_text('{"fibergrade_capture": 1, "meta": {}}\n{"t": 0.5, "rx": "a\\n"}\n')
    assert load_capture(old).session is None and Transport.replay(old).capture_session is None
    assert Transport(ReplayPort.from_bytes(b"a\n")).capture_session is None


@pytest.mark.parametrize("value", ["17", "null", '""', '["a"]'])
def test_a_session_id_that_is_no_text_is_a_bad_capture(tmp_path, value):
    p = tmp_path / "x.jsonl"
    p.write_text(f'{{"fibergrade_capture": 1, "session": {value}, "meta": {{}}}}\n')
    with pytest.raises(FrameError, match="session") as ei:
        load_capture(p)
    assert "line 1" in str(ei.value)


@pytest.mark.integration
def test_a_recorded_live_session_positions_each_read_as_its_replay_does(pty_pair, tmp_path):
    """While a live session is recorded, the transport says which captured event its last
    read is (the recorder logs it) and which session: the very position and session a
    replay of the capture gives the same read, so what each stores can be matched."""
    master, path = pty_pair
    cap = tmp_path / "live.jsonl"
    live = []
    with open_transport(path, record_to=cap) as tr:
        assert tr.capture_position is None  # nothing read yet
        session = tr.capture_session
        assert session is not None and tr.capture_sha256 is None  # the file is not done
        for k in range(3):
            tr.write(b"SI\r\n")
            assert tr.capture_position == (live[-1] if live else None)  # a write: no read
            os.write(master, b"S S     %d.00 g\r\n" % k)
            tr.read_line(2.0)
            live.append(tr.capture_position)
    assert all(p is not None for p in live)
    assert len({p.event for p in live}) == 3
    replay = Transport.replay(cap)
    assert replay.capture_session == session
    replayed = []
    for _ in range(3):
        replay.write(b"SI\r\n")
        replay.read_line(2.0)
        replayed.append(replay.capture_position)
    assert replayed == live
    events = load_capture(cap).events
    assert all(events[p.event - 1].kind == "rx" and events[p.event - 1].t == p.t for p in live)


@pytest.mark.integration
def test_a_live_port_has_no_capture_position(pty_pair):
    master, path = pty_pair
    with open_transport(path) as tr:
        os.write(master, b"S S 1 g\r\n")
        assert tr.read_line(2.0) == b"S S 1 g"
        assert tr.capture_position is None and tr.capture_sha256 is None
        assert tr.capture_session is None  # not recorded: no session to name


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=600),
    chunk=st.integers(0, 40),
    max_line=st.integers(8, 128),
    immediate=st.sampled_from([b"", b"\x06"]),
)
def test_fuzz_read_line_never_crashes_or_hangs(data, chunk, max_line, immediate):
    tr = Transport(ReplayPort.from_bytes(data, chunk=chunk), max_line=max_line)
    got = 0
    for _ in range(len(data) + 2):
        try:
            line = tr.read_line(0.5, immediate=immediate)
        except FrameError:
            continue
        except InstrumentTimeout:
            break
        assert len(line) <= max_line
        got += 1
    else:  # pragma: no cover - each iteration consumes at least one byte
        raise AssertionError("read_line did not consume its input")
    assert got <= len(data)
