"""The audit log against its head, and the store's files against their digests.

A log emptied, deleted or cut short is refused by every writer (a new chain started over it
would pass ``audit verify``), and by every reader (a record the lost lines named would
silently stop counting); a line that is not an entry is never skipped; ``audit verify``
hashes every logged record and every segment; malformed numbers and nesting are typed
errors, never tracebacks. The crash windows stay repairable: a torn last line, a log one
entry ahead of its head, a first entry written before its head ever was.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fibergrade.audit import (
    AuditError,
    AuditLog,
    AuditTamperError,
    canonical_json,
    entry_hash,
    parse_entry,
)
from fibergrade.errors import StoreError
from fibergrade.measurements import FibreLots
from fibergrade.store import PendingSegment, Store

EXE = shutil.which("fibergrade", path=str(Path(sys.executable).parent)) or "fibergrade"
DEEP = b"[" * 100_000 + b"]" * 100_000


def item(name: str, lot: str) -> PendingSegment:
    table = FibreLots((lot,), np.array([0, 3]), np.array([15.0, 16.0, 17.0], np.float32))
    digest = hashlib.sha256(name.encode()).hexdigest()
    return PendingSegment(table, {}, name, digest)


def make_store(root: Path) -> Store:
    """Three entries: an import, a calibration record and another import."""
    store = Store.open(root)
    store.import_segments([item("day1.csv", "L1")])
    store.put_result("calibration", {"kind": "calibration", "operator": "ann"})
    store.import_segments([item("day2.csv", "L2")])
    return store


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file of the store (a writer that refuses must leave all of them as they are)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in (".lock", ".issue.lock")
    }


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, *args], capture_output=True, text=True, cwd=cwd, timeout=300, check=False
    )


# ------------------------------------------------------------------ 1. writers and the head


def _emptied(log: AuditLog) -> None:
    log.path.write_bytes(b"")


def _deleted(log: AuditLog) -> None:
    log.path.unlink()


def _first_line_kept(log: AuditLog) -> None:  # head -n 1
    log.path.write_bytes(log.path.read_bytes().split(b"\n")[0] + b"\n")


def _cut_mid_line(log: AuditLog) -> None:  # head -c: a last line that looks torn
    data = log.path.read_bytes()
    log.path.write_bytes(data[: data.index(b"\n") + 40])


def _last_entry_replaced(log: AuditLog) -> None:
    """The last entry swapped for another whole, well-chained one: not the head's."""
    rows = log.path.read_bytes().splitlines()
    e = json.loads(rows[-1])
    e["subject"] = "forged.csv"
    e["hash"] = entry_hash(e)
    log.path.write_bytes(b"\n".join([*rows[:-1], canonical_json(e)]) + b"\n")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_emptied, r"log\.jsonl holds no whole entry, but .*head\.json names entry 2"),
        (_deleted, r"log\.jsonl is missing, but .*head\.json names entry 2"),
        (_first_line_kept, r"line 1 \(entry 0\): log truncated: the head names entry 2"),
        (_cut_mid_line, r"line 1 \(entry 0\): log truncated: the head names entry 2"),
        (_last_entry_replaced, r"line 3 \(entry 2\): entry differs from the one head\.json"),
    ],
)
def test_a_writer_refuses_a_log_that_disagrees_with_its_head(tmp_path, damage, message):
    """Before: the next write started a new chain at seq 0 (or appended after the cut) and
    moved head.json to it, and ``audit verify`` then said intact."""
    root = tmp_path / "store"
    make_store(root)
    log = AuditLog(root)
    damage(log)
    before = snapshot(root)
    store = Store.open(root)
    with pytest.raises(AuditTamperError, match=message):
        store.import_segments([item("day3.csv", "L3")])
    with pytest.raises(AuditTamperError, match=message):
        store.put_result("calibration", {"kind": "calibration", "operator": "bob"})
    with pytest.raises(AuditTamperError, match=message):
        log.append("grade", "x")
    with pytest.raises(AuditTamperError, match=message):
        log.position()
    assert snapshot(root) == before  # nothing written: no segment, record, entry or head
    with pytest.raises(AuditTamperError):  # (a line cut short: named as no JSON entry)
        log.verify()


def test_import_after_emptying_the_log_exits_3_and_the_log_stays_truncated(tmp_path):
    """The reported sequence, through the CLI: ``: > log.jsonl`` then ``import``."""
    (tmp_path / "a.csv").write_text("lot_id,diameter_um\nA1,15.5\nA1,16.5\n")
    (tmp_path / "b.csv").write_text("lot_id,diameter_um\nB1,17.5\nB1,18.5\n")
    assert cli("import", "a.csv", "--store", "S", cwd=tmp_path).returncode == 0
    (tmp_path / "S" / "audit" / "log.jsonl").write_bytes(b"")
    head = (tmp_path / "S" / "audit" / "head.json").read_bytes()
    r = cli("import", "b.csv", "--store", "S", cwd=tmp_path)
    assert r.returncode == 3, r.stderr
    assert "log.jsonl holds no whole entry, but" in r.stderr
    assert "head.json names entry 0" in r.stderr
    assert (tmp_path / "S" / "audit" / "log.jsonl").read_bytes() == b""
    assert (tmp_path / "S" / "audit" / "head.json").read_bytes() == head
    assert len(list((tmp_path / "S" / "segments").glob("*.h5"))) == 1  # b.csv not committed
    r = cli("audit", "verify", "--store", "S", cwd=tmp_path)
    assert r.returncode == 3 and "names entry 0" in r.stderr


def test_a_crash_between_the_log_append_and_the_head_update_is_recovered(tmp_path):
    """The log is appended and fsynced first, head.json replaced after: a kill in between
    leaves the log one entry ahead of its head. That reads, verifies, and the next write
    chains after the entry and moves the head to its own."""
    root = tmp_path / "store"
    store = make_store(root)
    log = AuditLog(root)
    before = log.head_path.read_bytes()
    store.put_result("calibration", {"kind": "calibration", "operator": "cy"})
    log.head_path.write_bytes(before)  # as if killed right after the append
    assert log.verify().entries == 4
    assert len(Store.open(root).results("calibration")) == 2
    store.import_segments([item("day3.csv", "L3")])
    assert log.verify().entries == 5
    assert json.loads(log.head_path.read_bytes())["seq"] == 4
    # a head that lags with a hash the log does not hold there is not a crash
    lagging = json.loads(before)
    lagging["hash"] = "ab" * 32
    log.head_path.write_text(json.dumps(lagging))
    with pytest.raises(AuditTamperError, match=r"line 3 \(entry 2\): entry differs"):
        log.append("grade", "x")
    with pytest.raises(AuditTamperError, match=r"line 3 \(entry 2\): entry differs"):
        Store.open(root).results("calibration")


def test_a_crash_in_the_first_append_before_any_head_is_recovered(tmp_path):
    """The very first append writes the log, then creates head.json: a log of one entry
    without a head is that crash; a longer one without a head is refused."""
    log = AuditLog(tmp_path / "store")
    log.append("import", "a.csv", {"a": 1})
    log.head_path.unlink()
    assert log.verify().entries == 1
    log.append("import", "b.csv", {"b": 1})
    assert log.verify().entries == 2 and log.head_path.exists()
    log.head_path.unlink()
    with pytest.raises(AuditTamperError, match=r"head\.json is missing, but the log holds mor"):
        log.append("import", "c.csv", {"c": 1})
    with pytest.raises(AuditTamperError, match=r"head\.json is missing, but the log holds 2"):
        log.logged_payloads()
    with pytest.raises(AuditTamperError, match=r"head\.json is missing, but the log holds 2"):
        log.verify()


def test_a_torn_last_line_is_still_repaired_when_the_head_agrees(tmp_path):
    """The repair checks the whole lines against head.json before it cuts anything."""
    root = tmp_path / "store"
    make_store(root)
    log = AuditLog(root)
    intact = log.path.read_bytes()
    with open(log.path, "ab") as fh:
        fh.write(b'{"seq":3,"time":"20')
    assert len(Store.open(root).results("calibration")) == 1  # a line being written: later
    Store.open(root).put_result("calibration", {"kind": "calibration", "operator": "dee"})
    assert log.path.read_bytes().startswith(intact)
    assert [e["action"] for e in log.entries()[3:]] == ["repair", "calibrate"]
    assert log.verify().entries == 5


# ------------------------------------------------------------------ 2. readers


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_bytes(b"garbage\n"), r"line 1: not an entry the log writes"),
        (lambda p: p.write_bytes(p.read_bytes() + b"garbage\n"), r"line 4: not an entry"),
        (lambda p: p.write_bytes(b""), r"holds no whole entry, but .*names entry 2"),
        (lambda p: p.unlink(), r"log\.jsonl is missing, but .*names entry 2"),
        (
            lambda p: p.write_bytes(b"".join(p.read_bytes().splitlines(True)[1:])),
            r"line 1 \(entry 1\): sequence number 1 where 0 was expected",
        ),
    ],
)
def test_a_damaged_log_is_refused_by_readers_not_read_as_no_records(tmp_path, damage, message):
    """Before: unreadable lines counted for nothing, so the calibration (or revocation) they
    named silently stopped counting: 'no calibration recorded', '0 records', exit 0."""
    root = tmp_path / "store"
    make_store(root)
    damage(AuditLog(root).path)
    store = Store.open(root)
    for read in (
        lambda: store.results("calibration"),
        store.unlogged_results,
        store.unlogged_segments,
        lambda: AuditLog(root).logged_results(),
    ):
        with pytest.raises(AuditTamperError, match=message):
            read()


def test_calibrations_on_a_garbage_log_exits_3_naming_the_line(tmp_path):
    (tmp_path / "a.csv").write_text("lot_id,diameter_um\nA1,15.5\nA1,16.5\n")
    assert cli("import", "a.csv", "--store", "S", cwd=tmp_path).returncode == 0
    (tmp_path / "S" / "audit" / "log.jsonl").write_text("garbage\n")
    r = cli("calibrations", "--store", "S", cwd=tmp_path)
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "audit log line 1: not an entry the log writes" in r.stderr


@pytest.fixture(scope="module")
def base_log(tmp_path_factory) -> tuple[bytes, bytes, bytes]:
    """(log, head, a valid next line) of a store holding one logged calibration record."""
    root = tmp_path_factory.mktemp("base") / "store"
    Store.open(root).put_result("calibration", {"kind": "calibration", "operator": "ann"})
    log = AuditLog(root)
    last = log.entries()[-1]
    nxt = dict(last, seq=1, prev=last["hash"], subject="grade " + "ab" * 32)
    nxt["payload_digest"] = "ab" * 32
    nxt["hash"] = entry_hash(nxt)
    return log.path.read_bytes(), log.head_path.read_bytes(), canonical_json(nxt)


def _mutations(valid: bytes) -> st.SearchStrategy[bytes]:
    at = st.integers(0, len(valid) - 1)
    byte = st.binary(min_size=1, max_size=3)
    return st.one_of(
        st.just(valid),
        st.builds(lambda i, b: valid[:i] + b + valid[i + 1 :], at, byte),  # replace
        st.builds(lambda i, b: valid[:i] + b + valid[i:], at, byte),  # insert
        st.builds(lambda i: valid[:i] + valid[i + 1 :], at),  # delete
        st.binary(max_size=300),
        st.text(max_size=200).map(str.encode),
    )


def _is_next_entry(raw: bytes) -> bool:
    """The oracle: a line the log writes, numbered 1 (after entry 0), with a hash-shaped
    hash (the hash itself and the chain are ``verify``'s to check)."""
    try:
        e = parse_entry(raw)
    except ValueError:
        return False
    return (
        type(e.get("seq")) is int
        and e["seq"] == 1
        and isinstance(e.get("hash"), str)
        and re.fullmatch(r"[0-9a-f]{64}", e["hash"]) is not None
    )


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_a_whole_line_is_read_as_an_entry_or_refused_never_skipped(base_log, data):
    """The reader's invariant, for any bytes appended as a line: counted when the line is
    an entry (canonical JSON, the next seq), else AuditTamperError naming line 2, never
    skipped and never another exception; the same bytes without their line break are a
    line still being written, left for the next read."""
    log_bytes, head, valid = base_log
    line = data.draw(_mutations(valid).filter(lambda b: b"\n" not in b), label="line")
    with tempfile.TemporaryDirectory() as d:
        for torn in (False, True):
            log = AuditLog(Path(d) / ("torn" if torn else "whole"))
            log.dir.mkdir(parents=True)
            log.head_path.write_bytes(head)
            log.path.write_bytes(log_bytes + line + (b"" if torn else b"\n"))
            if torn:
                assert set(log.logged_results()) == {"calibration"}
            elif _is_next_entry(line):
                kinds = log.logged_results()
                assert line != valid or kinds["grade"] == {"ab" * 32}
            else:
                with pytest.raises(AuditTamperError) as exc:
                    log.logged_results()
                assert exc.value.line == 2


# ------------------------------------------------------------------ 3 and 4. audit verify


def test_audit_verify_hashes_every_logged_record_and_segment(tmp_path):
    """Before: an edited calibration record ('ann' -> 'bob') and flipped bytes inside a
    committed segment both passed ``audit verify`` (exit 0)."""
    root = tmp_path / "store"
    store = make_store(root)
    rec = next((root / "results" / "calibration").glob("*.json"))
    rec.write_bytes(rec.read_bytes().replace(b'"ann"', b'"bob"'))
    seg = store.segments()[1].path
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0xFF
    seg.write_bytes(bytes(data))
    calls: list[tuple[int, int]] = []
    bad = Store.open(root).check_files(progress=lambda done, total: calls.append((done, total)))
    assert [p for p, _ in bad] == [rec, seg]
    assert "content digest is" in bad[0][1] and "altered after it was written" in bad[0][1]
    assert "altered after it was committed" in bad[1][1]
    assert calls == [(1, 3), (2, 3), (3, 3)]  # one record, two segments: each read once

    r = cli("audit", "verify", "--store", str(root), cwd=tmp_path)
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert str(rec) in r.stderr and str(seg) in r.stderr and "intact" not in r.stdout
    r = cli("audit", "verify", "--store", str(root), "--json", cwd=tmp_path)
    assert r.returncode == 3
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and doc["entries"] == 3
    assert [p["file"] for p in doc["problems"]] == [str(rec), str(seg)]
    rec.unlink()  # a logged record deleted: named by its path too
    ((path, message), _) = Store.open(root).check_files()
    assert path == rec and "calibration record the audit log records is missing" in message


def test_audit_verify_json_reports_a_tampered_log(tmp_path):
    """Before: nothing on stdout with --json (the error went to stderr), so 'ok' was never
    false. Now the report says what is wrong, where, and the exit code is still 3."""
    root = tmp_path / "store"
    make_store(root)
    log = AuditLog(root)
    rows = log.path.read_text().splitlines()
    rows[1] = rows[1].replace('"calibrate"', '"grade"')
    log.path.write_text("\n".join(rows) + "\n")
    r = cli("audit", "verify", "--store", str(root), "--json", cwd=tmp_path)
    assert r.returncode == 3
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and doc["entries"] is None
    assert doc["problems"] == [
        {
            "file": str(log.path),
            "line": 2,
            "entry": 1,
            "message": f"audit log line 2 (entry 1): entry was edited: its hash does not "
            f"match [{log.path}]",
        }
    ]
    log.path.write_bytes(b"")  # emptied: a problem of the whole file
    r = cli("audit", "verify", "--store", str(root), "--json", cwd=tmp_path)
    assert r.returncode == 3
    (p,) = json.loads(r.stdout)["problems"]
    assert p["line"] is None and "holds no whole entry" in p["message"]
    shutil.rmtree(root / "audit")
    r = cli("audit", "verify", "--store", str(root), "--json", cwd=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)["ok"] is True
    assert len(json.loads(r.stdout)["unlogged_files"]) == 3  # nothing logs them now


# ------------------------------------------------------------------ 5. typed errors


@pytest.mark.parametrize(
    "edit",
    [
        lambda t: t.replace('"n_rows":3', '"n_rows":Infinity', 1),
        lambda t: t.replace('"n_rows":3', '"n_rows":1e400', 1),
        lambda t: t.replace('"n_rows":3', '"n_rows":' + DEEP.decode(), 1),
    ],
)
def test_a_manifest_with_infinity_or_deep_nesting_is_rebuilt_from_the_segments(tmp_path, edit):
    """manifest.json is a cache of what the segments say (DESIGN.md, "Store"): one this
    software could not have written is rebuilt from them, as a removed one is. Before:
    OverflowError or RecursionError in every command."""
    root = tmp_path / "store"
    make_store(root)
    manifest = root / "manifest.json"
    text = manifest.read_text()
    assert '"n_rows":3' in text
    manifest.write_text(edit(text))
    store = Store.open(root)
    assert [lot.lot_id for lot in store.lots()] == ["L1", "L2"]
    assert [s.n_rows for s in store.segments()] == [3, 3]
    store.check_manifest()
    assert store.check_files() == []
    store.import_segments([item("day3.csv", "L3")])  # a write persists the rebuilt manifest
    assert json.loads(manifest.read_text())["segments"][0]["n_rows"] == 3


def test_infinity_or_deep_nesting_in_the_log_or_head_is_a_tamper_error(tmp_path):
    root = tmp_path / "store"
    make_store(root)
    log = AuditLog(root)
    whole = log.path.read_bytes()
    log.path.write_bytes(re.sub(rb'"seq":2,', b'"seq":Infinity,', whole))  # OverflowError
    with pytest.raises(AuditTamperError, match=r"line 3: not an entry the log writes.*Infinity"):
        log.append("grade", "x")
    with pytest.raises(AuditTamperError, match=r"line 3: not a JSON entry.*Infinity"):
        log.verify()
    log.path.write_bytes(whole + DEEP + b"\n")  # RecursionError
    with pytest.raises(AuditTamperError, match=r"line 4: not a JSON entry.*nested too deeply"):
        log.verify()
    with pytest.raises(AuditTamperError, match=r"line 4: not an entry.*nested too deeply"):
        log.append("grade", "x")
    log.path.write_bytes(whole)
    head = log.head_path.read_text()
    for bad in ('"seq":Infinity', '"seq":1e400', '"seq":-1', '"seq":true'):
        log.head_path.write_text(re.sub(r'"seq":\d+', bad, head))
        with pytest.raises(AuditTamperError, match=r"head\.json is unreadable"):
            log.verify()
        with pytest.raises(AuditTamperError, match=r"head\.json is unreadable"):
            log.append("grade", "x")
    log.head_path.write_text(DEEP.decode())
    with pytest.raises(AuditTamperError, match=r"head\.json is unreadable.*nested too deeply"):
        log.verify()


def test_an_unreadable_log_is_an_audit_error_not_an_os_error(tmp_path):
    """Before: a raw OSError (exit 2 through main's fallback); now AuditError (exit 3)
    naming the file, a StoreError as well so the store's callers handle it."""
    root = tmp_path / "store"
    store = make_store(root)
    log = AuditLog(root)
    log.path.rename(log.dir / "saved")
    log.path.mkdir()  # unreadable as a file, whoever runs the test (root ignores chmod)
    for call in (log.verify, log.entries, lambda: log.append("grade", "x"), log.position):
        with pytest.raises(AuditError, match=r"log\.jsonl: cannot (read|repair)"):
            call()
    with pytest.raises(StoreError, match=r"log\.jsonl: cannot"):
        store.results("calibration")
    with pytest.raises(StoreError, match=r"log\.jsonl: cannot"):
        store.put_result("calibration", {"kind": "calibration", "operator": "eve"})


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_a_log_without_read_permission_is_an_audit_error(tmp_path):
    root = tmp_path / "store"
    make_store(root)
    log = AuditLog(root)
    log.path.chmod(0)
    try:
        with pytest.raises(AuditError, match=r"log\.jsonl: cannot"):
            log.verify()
        with pytest.raises(AuditError, match=r"log\.jsonl: cannot"):
            log.append("grade", "x")
    finally:
        log.path.chmod(0o644)


# ------------------------------------------------------- 6. segments the log imported


def test_a_logged_segment_that_is_gone_is_named_and_its_lots_stay_taken(tmp_path):
    """A segment deleted with the manifest used to vanish without a word (the manifest is
    rebuilt from the segments left), and its lot ids could then be imported again with
    other raw data and certified. Import entries now name their segment and lots."""
    root = tmp_path / "store"
    make_store(root)
    entry = AuditLog(root).entries()[0]
    assert entry["action"] == "import" and entry["lots"] == ["L1"]
    seg = root / "segments" / f"{entry['segment']}.h5"
    assert seg.exists()
    seg.unlink()
    (root / "manifest.json").unlink()
    store = Store.open(root)
    assert [r.lot_id for r in store.lots()] == ["L2"]
    bad = store.check_files()
    assert [p for p, _ in bad] == [seg] and "imported from 'day1.csv'" in bad[0][1]
    with pytest.raises(StoreError, match=r"lot 'L1' in 'other\.csv' was imported before"):
        store.import_segments([item("other.csv", "L1")])
    assert [r.lot_id for r in Store.open(root).lots()] == ["L2"]  # nothing stored
    store.import_segments([item("other.csv", "L3")])  # other ids still come in


def test_a_torn_last_line_longer_than_64_kib_is_repaired(tmp_path):
    """Import entries name their lots, so one entry can be long; a torn one of any length
    is cut like a short one (it used to be 'torn and over 64 KiB', refusing every write)."""
    root = tmp_path / "store"
    store = make_store(root)
    log = AuditLog(root)
    intact = log.path.read_bytes()
    log.path.write_bytes(intact + b'{"seq":3,"lots":["' + b"x" * 100_000)
    store.put_result("calibration", {"kind": "calibration", "operator": "bea"})
    assert log.path.read_bytes().startswith(intact)
    assert [e["action"] for e in log.entries()[3:]] == ["repair", "calibrate"]
    assert log.verify().entries == 5


def test_checks_beside_a_writer_never_read_a_sound_log_as_damaged(tmp_path):
    """A process appending records while this one checks the log: every check passes
    (head.json was read after the log, and 28 of 200 checks read a sound log as cut short)."""
    root = tmp_path / "store"
    make_store(root)
    script = (
        "import sys\nfrom fibergrade.store import Store\n"
        "s = Store.open(sys.argv[1])\n"
        "for i in range(300):\n"
        "    s.put_result('qc', {'kind': 'qc', 'n': i})\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", script, str(root)])
    log, checks = AuditLog(root), 0
    try:
        while writer.poll() is None:
            log.verify()
            Store.open(root).results("qc")
            checks += 1
    finally:
        writer.wait(120)
    assert writer.returncode == 0 and checks > 0
    assert log.verify().entries == 303
