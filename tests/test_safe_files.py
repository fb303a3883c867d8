"""Files created in folders an attacker may also write: a planted symbolic link is refused,
never followed into a file the lab's user may write (its private key, say)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fibergrade.safe_files import open_lock, rewrite_own, temp_beside, write_new


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
    rewrite_own(fresh, b"again")
    assert fresh.read_bytes() == b"again"
    fresh.unlink()
    fresh.symlink_to(victim)  # swapped in after creation: refused too
    with pytest.raises(OSError):
        rewrite_own(fresh, b"overwritten")
    assert victim.read_bytes() == b"secret"


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
