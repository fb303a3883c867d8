"""Files created in folders an attacker may also write: a planted symbolic link is refused,
never followed into a file the lab's user may write (its private key, say)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fibergrade.safe_files import open_lock, temp_beside, write_new


def test_write_new_refuses_a_planted_link_and_leaves_its_target(tmp_path):
    victim = tmp_path / "lab.key"
    victim.write_bytes(b"secret")
    link = tmp_path / "x.tmp"
    link.symlink_to(victim)
    with pytest.raises(FileExistsError):
        write_new(link, b"overwritten")
    dangling = tmp_path / "y.tmp"
    dangling.symlink_to(tmp_path / "created-by-lab")
    with pytest.raises(FileExistsError):
        write_new(dangling, b"x")
    assert victim.read_bytes() == b"secret" and not (tmp_path / "created-by-lab").exists()
    fresh = temp_beside(tmp_path / "head.json")
    assert fresh.name.startswith(".head.json.") and fresh.name.endswith(".tmp")
    write_new(fresh, b"ok", fsync=True)
    assert fresh.read_bytes() == b"ok"


def test_a_lock_file_that_is_a_link_is_refused(tmp_path):
    link = tmp_path / ".lock"
    link.symlink_to(tmp_path / "created-by-lab")
    with pytest.raises(OSError):
        open_lock(link)
    assert not (tmp_path / "created-by-lab").exists()
    fd = open_lock(tmp_path / "real.lock")
    os.close(fd)


def test_a_store_write_refuses_a_planted_lock_link(tmp_path):
    """audit/.lock planted as a link: the next logged write fails (exit 3 from the CLI)
    instead of creating or opening the file it points to."""
    from fibergrade.audit import AuditError, AuditLog

    log = AuditLog(tmp_path / "store")
    log.append("record", "first")
    target = tmp_path / "elsewhere"
    (log.dir / ".lock").unlink()
    (log.dir / ".lock").symlink_to(target)
    with pytest.raises(AuditError, match="lock"):
        log.append("record", "second")
    assert not target.exists()
    assert [e["subject"] for e in log.entries()] == ["first"]


def test_no_writer_names_a_file_after_its_process_id():
    """The names writers create in shared folders are random (a process id can be guessed:
    one link per possible pid was enough to overwrite a key through head.json's)."""
    src = Path(__file__).resolve().parents[1] / "src" / "fibergrade"
    offenders = [p.name for p in src.rglob("*.py") if "getpid()}" in p.read_text()]
    assert offenders == []


def test_the_torn_line_repair_never_cuts_a_file_the_log_links_to(tmp_path):
    """log.jsonl planted as a link to a file with no line break, head.json removed: the
    repair used to open the name, follow the link and cut that file to nothing."""
    from fibergrade.audit import AuditError, AuditLog

    log = AuditLog(tmp_path / "store")
    log.dir.mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_bytes(b"secret")
    log.path.symlink_to(victim)
    with pytest.raises(AuditError):
        log.append("record", "x", {})
    assert victim.read_bytes() == b"secret"


def test_a_segment_imported_after_the_store_was_opened_is_not_reported_missing(tmp_path):
    """audit verify opens the store, then reads the log: an import in between is logged
    with a segment the opened store does not know, and was reported missing."""
    import hashlib

    import numpy as np

    from fibergrade.measurements import FibreLots
    from fibergrade.store import PendingSegment, Store

    def item(name: str, lot: str) -> PendingSegment:
        table = FibreLots((lot,), np.array([0, 3]), np.array([15.0, 16.0, 17.0], np.float32))
        return PendingSegment(table, {}, name, hashlib.sha256(name.encode()).hexdigest())

    root = tmp_path / "store"
    Store.open(root).import_segments([item("a.csv", "L1")])
    opened = Store.open(root)
    Store.open(root).import_segments([item("b.csv", "L2")])  # another process, say
    assert opened.check_files() == []
