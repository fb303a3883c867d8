"""The hash-chained audit log: every kind of tampering is found and named."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from fibergrade.audit import AuditError, AuditLog, AuditTamperError, Position, canonical_json
from fibergrade.keys import init_keys, load_private_key, load_public_key


@pytest.fixture()
def keys(tmp_path: Path):
    priv, pub, _ = init_keys(tmp_path / "keys")
    return load_private_key(priv), load_public_key(pub)


def filled(tmp_path: Path, keys, n: int = 6) -> AuditLog:
    log = AuditLog(tmp_path / "store")
    for i in range(n):
        log.append("import", f"file-{i}.csv", {"i": i}, actor="tech")
    log.checkpoint(keys[0], actor="tech")
    log.append("grade", "lot-1", {"grade": "cashmere"}, actor="tech")
    return log


def lines(log: AuditLog) -> list[str]:
    return log.path.read_text().splitlines()


def write(log: AuditLog, rows: list[str]) -> None:
    log.path.write_text("\n".join(rows) + "\n")


def test_an_intact_log_verifies_with_its_checkpoint(tmp_path, keys):
    log = filled(tmp_path, keys)
    rep = log.verify(keys[1])
    assert rep.entries == 8 and rep.checkpoints == 1 and rep.unanchored == 1
    assert rep.head == log.position()
    e = log.entries()
    assert e[0]["prev"] == "0" * 64 and all(e[i]["prev"] == e[i - 1]["hash"] for i in range(1, 8))
    assert e[3]["payload_digest"] and "i" not in e[3]  # payloads are digested, not stored


def test_edited_entry_is_named(tmp_path, keys):
    log = filled(tmp_path, keys)
    rows = lines(log)
    rows[2] = rows[2].replace('"tech"', '"someone-else"')
    write(log, rows)
    with pytest.raises(AuditTamperError, match=r"line 3 \(entry 2\): entry was edited"):
        log.verify(keys[1])


def test_edited_entry_with_recomputed_hash_breaks_the_chain(tmp_path, keys):
    from fibergrade.audit import entry_hash

    log = filled(tmp_path, keys)
    rows = lines(log)
    e = json.loads(rows[2])
    e["subject"] = "forged.csv"
    e["hash"] = entry_hash(e)
    rows[2] = canonical_json(e).decode()
    write(log, rows)
    with pytest.raises(AuditTamperError, match=r"entry 3\).*chain broken"):
        log.verify(keys[1])


def test_deleted_entry_is_named(tmp_path, keys):
    log = filled(tmp_path, keys)
    rows = lines(log)
    del rows[4]
    write(log, rows)
    with pytest.raises(AuditTamperError, match=r"line 5.*sequence number 5 where 4"):
        log.verify(keys[1])


def test_inserted_entry_is_named(tmp_path, keys):
    log = filled(tmp_path, keys)
    rows = lines(log)
    rows.insert(3, rows[2])
    write(log, rows)
    with pytest.raises(AuditTamperError, match=r"line 4.*sequence number 2 where 3"):
        log.verify(keys[1])


def test_reordered_entries_are_named(tmp_path, keys):
    log = filled(tmp_path, keys)
    rows = lines(log)
    rows[1], rows[2] = rows[2], rows[1]
    write(log, rows)
    with pytest.raises(AuditTamperError, match=r"line 2.*sequence number 2 where 1"):
        log.verify(keys[1])


def test_truncated_log_is_found_against_the_head(tmp_path, keys):
    log = filled(tmp_path, keys)
    write(log, lines(log)[:-2])
    with pytest.raises(AuditTamperError, match="truncated"):
        log.verify(keys[1])


def test_truncation_behind_a_rolled_back_head_is_found_against_a_recorded_position(tmp_path, keys):
    log = filled(tmp_path, keys)
    recorded = log.position()  # e.g. what a certificate carries
    rows = lines(log)
    write(log, rows[:-1])
    last = json.loads(rows[-2])
    log.head_path.write_text(json.dumps({"seq": last["seq"], "hash": last["hash"]}))
    log.verify(keys[1])  # consistent on its own ...
    with pytest.raises(AuditTamperError, match="truncated"):
        log.check_position(recorded)  # ... but not with what was recorded


def test_checkpoint_signed_with_another_key_or_forged(tmp_path, keys):
    log = filled(tmp_path, keys)
    _, other_pub, _ = init_keys(tmp_path / "other")
    with pytest.raises(AuditTamperError, match="another key"):
        log.verify(load_public_key(other_pub))
    # without the key, the chain alone still verifies
    assert log.verify().signatures_checked is False


def test_unknown_action_and_empty_checkpoint_are_refused(tmp_path, keys):
    log = AuditLog(tmp_path / "s")
    with pytest.raises(AuditError, match="unknown audit action"):
        log.append("delete", "x")
    with pytest.raises(AuditError, match="empty"):
        log.checkpoint(keys[0])
    assert log.verify().entries == 0
    assert log.position() == Position(-1, "0" * 64)


def test_private_key_is_0600_refuses_overwrite_and_stores(tmp_path):
    from fibergrade.keys import KeyFileError

    priv, _pub, fp = init_keys(tmp_path / "k", passphrase="s3cret")
    assert priv.stat().st_mode & 0o777 == 0o600 and len(fp) == 64
    with pytest.raises(KeyFileError, match="exists"):
        init_keys(tmp_path / "k")
    with pytest.raises(KeyFileError, match="passphrase"):
        load_private_key(priv)
    assert load_private_key(priv, "s3cret")
    (tmp_path / "store" / "segments").mkdir(parents=True)
    with pytest.raises(KeyFileError, match="inside the store"):
        init_keys(tmp_path / "store" / "keys")


def test_a_passphrase_for_a_key_without_one(tmp_path, monkeypatch):
    """A passphrase given for a key that has none is named as such (it was reported as
    the key needing one); one in the environment, meant for other keys, is not needed."""
    from fibergrade.keys import PASSPHRASE_ENV, KeyFileError

    plain, _pub, _fp = init_keys(tmp_path / "plain")
    locked, _pub, _fp = init_keys(tmp_path / "locked", passphrase="s3cret")
    with pytest.raises(KeyFileError, match="not passphrase-protected; give no --passphrase"):
        load_private_key(plain, "x")
    monkeypatch.setenv(PASSPHRASE_ENV, "s3cret")
    assert load_private_key(plain) and load_private_key(locked)
    with pytest.raises(KeyFileError, match="cannot load the private key"):
        load_private_key(locked, "wrong")


def test_a_log_longer_than_its_head_is_a_crash_not_tampering(tmp_path, keys):
    log = filled(tmp_path, keys)
    before = log.head_path.read_bytes()
    log.append("grade", "lot-2", {"grade": None}, actor="tech")
    log.head_path.write_bytes(before)  # as if killed between the append and the head update
    assert log.verify(keys[1]).entries == 9
    log.head_path.write_text('{"seq": 2, "hash": "' + "ab" * 32 + '"}')
    with pytest.raises(AuditTamperError, match=r"head\.json names"):
        log.verify(keys[1])


def test_a_stored_result_is_logged_with_the_digest_that_names_it(tmp_path):
    from fibergrade.audit import digest
    from fibergrade.store import Store

    store = Store.open(tmp_path / "store")
    payload = {"kind": "grade", "lots": [{"lot_id": "L-1", "mfd_um": 15.25, "note": "ü"}]}
    name = store.put_result("grade", payload)
    entries = AuditLog(store.root).entries()
    assert entries[-1]["subject"] == f"grade {name}"
    # the digest passed along by the store is the one the log would compute itself
    assert entries[-1]["payload_digest"] == name == digest(payload)
    assert AuditLog(store.root).append("record", "x", payload)["payload_digest"] == name


def test_only_logged_results_count_and_a_deleted_one_is_tampering(tmp_path):
    """The store's result files are unsigned: the log says which ones a fibergrade step
    wrote. A file it does not record (a run stopped before logging it, or placed by hand)
    is read by no command and listed by ``audit verify``; writing the same record again
    logs it; a logged record that is gone (a deleted revocation) is tampering."""
    from fibergrade.errors import StoreCorruptError
    from fibergrade.store import Store

    store = Store.open(tmp_path / "store")
    kept = store.put_result("revocation", {"kind": "revocation", "certificate_number": "A-01"})
    stray = {"kind": "revocation", "certificate_number": "B-01"}
    data = json.dumps(stray, sort_keys=True, separators=(",", ":")).encode()
    name = hashlib.sha256(data).hexdigest()
    (store.root / "results" / "revocation" / f"{name}.json").write_bytes(data)
    assert [d for d, _ in store.results("revocation")] == [kept]
    assert store.unlogged_results() == [store.root / "results" / "revocation" / f"{name}.json"]
    with pytest.raises(StoreCorruptError, match="does not record"):
        store.get_result("revocation", name)
    log = AuditLog(store.root)
    assert log.verify().entries == 1
    # the same record written again by the software is logged, then counts
    assert store.put_result("revocation", stray) == name
    assert {d for d, _ in store.results("revocation")} == {kept, name}
    assert store.unlogged_results() == [] and log.verify().entries == 2
    (store.root / "results" / "revocation" / f"{kept}.json").unlink()
    with pytest.raises(StoreCorruptError, match=r"1 revocation record.*missing"):
        store.results("revocation")
    with pytest.raises(AuditTamperError, match=r"missing from.*deleted after they were logged"):
        log.verify()


def test_a_replayed_checkpoint_covers_nothing_new(tmp_path, keys):
    """A copy of an old checkpoint appended after a forged entry (and the chain redone)
    still signs only the old position: the forged entry counts as not anchored."""
    from fibergrade.audit import entry_hash

    log = filled(tmp_path, keys)  # 6 imports, checkpoint (entry 6), a grade (entry 7)
    assert log.verify(keys[1]).unanchored == 1
    log.checkpoint(keys[0])
    assert log.verify(keys[1]).unanchored == 0
    entries = log.entries()
    forged = {k: v for k, v in entries[7].items() if k != "hash"}
    forged |= {"seq": 9, "prev": entries[8]["hash"], "subject": "lot-666"}
    forged["hash"] = entry_hash(forged)
    replay = {k: v for k, v in entries[8].items() if k != "hash"}
    replay |= {"seq": 10, "prev": forged["hash"]}
    replay["hash"] = entry_hash(replay)
    rows = [*lines(log), canonical_json(forged).decode(), canonical_json(replay).decode()]
    write(log, rows)
    rep = log.verify(keys[1])
    assert rep.checkpoints == 3 and rep.unanchored == 1


def test_a_nan_entry_or_a_numeric_signature_is_named_not_a_crash(tmp_path, keys):
    from fibergrade.audit import entry_hash

    log = filled(tmp_path, keys)
    rows = lines(log)
    rows[2] = rows[2].replace('"actor":"tech"', '"actor":NaN')
    write(log, rows)
    with pytest.raises(AuditTamperError, match=r"line 3: not a JSON entry.*NaN"):
        log.verify(keys[1])
    log = filled(tmp_path / "b", keys)
    rows = lines(log)
    cp = json.loads(rows[6])
    cp["signature"] = 12
    cp["hash"] = entry_hash(cp)
    rows[6] = canonical_json(cp).decode()
    nxt = json.loads(rows[7])
    nxt["prev"] = cp["hash"]
    nxt["hash"] = entry_hash(nxt)
    rows[7] = canonical_json(nxt).decode()
    write(log, rows)
    log.head_path.write_text(json.dumps({"seq": 7, "hash": nxt["hash"]}))
    with pytest.raises(AuditTamperError, match="checkpoint signature does not verify"):
        log.verify(keys[1])


def test_a_torn_last_line_is_cut_off_and_the_cut_logged(tmp_path, keys):
    """An append cut short (power loss) leaves a last line without its line break, after
    which no entry could be appended; the next write removes it and logs that it did."""
    log = filled(tmp_path, keys)
    intact = log.path.read_bytes()
    with open(log.path, "ab") as fh:
        fh.write(b'{"seq":8,"time":"2026')
    # not an entry yet (a writer may be appending it): reported, not counted, not refused
    rep = log.verify(keys[1])
    assert (rep.entries, rep.unfinished_bytes) == (8, 21)
    log.append("grade", "lot-3", {"grade": None}, actor="tech")
    assert log.path.read_bytes().startswith(intact)
    e = log.entries()
    assert [x["action"] for x in e[-2:]] == ["repair", "grade"]
    assert e[-2]["subject"] == "torn last line removed (21 bytes)"
    assert e[-2]["payload_digest"] == hashlib.sha256(b'{"seq":8,"time":"2026').hexdigest()
    assert log.verify(keys[1]).entries == 10


def test_a_segment_committed_but_not_logged_is_listed_and_logged_on_reimport(tmp_path):
    """A kill between a segment's commit and its audit entry left it unlogged for good
    ("already imported" logged nothing); a segment placed by hand is indexed the same way."""
    import numpy as np

    from fibergrade.measurements import FibreLots
    from fibergrade.store import PendingSegment, Store

    root = tmp_path / "store"
    table = FibreLots(("L1",), np.array([0, 3]), np.array([15.0, 16.0, 17.0], np.float32))
    item = PendingSegment(table, {}, "day1.csv", "ab" * 32)
    Store.open(root).import_segments([item])
    shutil.rmtree(root / "audit")  # as if the import had never been logged
    store = Store.open(root)
    assert [s.source_name for s in store.unlogged_segments()] == ["day1.csv"]
    assert store.import_segments([item])[0].already_imported
    assert store.unlogged_segments() == []
    assert [e["action"] for e in AuditLog(root).entries()] == ["import"]


def test_a_line_with_repeated_keys_or_another_form_is_not_an_entry(tmp_path, keys):
    """Keys repeated in an old line (the parser keeps the last, so hash, chain and
    signatures still held) made a planted record count as logged; a line must be the
    canonical JSON the log writes, byte for byte."""
    from fibergrade.store import Store

    store = Store.open(tmp_path / "store")
    log = AuditLog(store.root)
    store.put_result("grade", {"kind": "grade", "lots": []})
    log.checkpoint(keys[0])
    planted = {"kind": "revocation", "certificate_number": "FG-X-01"}
    data = canonical_json(planted)
    name = hashlib.sha256(data).hexdigest()
    (store.root / "results" / "revocation").mkdir(parents=True)
    (store.root / "results" / "revocation" / f"{name}.json").write_bytes(data)
    rows = lines(log)
    inject = f'"payload_digest":"{name}","prev":"{"0" * 64}","seq":0,"subject":"revocation {name}",'
    rows[1] = "{" + inject + rows[1][1:]
    write(log, rows)
    assert json.loads(rows[1])["action"] == "checkpoint"  # what a lenient reader sees
    # the store reads no record off such a line, and does not skip it either: skipping
    # drops whatever the line really logged (a calibration, a revocation) without a word
    not_written = r"line 2: not an entry the log writes \(key 'payload"
    with pytest.raises(AuditTamperError, match=not_written):
        store.results("revocation")
    with pytest.raises(AuditTamperError, match=r"line 2: not a JSON entry \(key 'payload_digest'"):
        log.verify(keys[1])
    rows[1] = json.dumps(json.loads(rows[1][:1] + rows[1][1 + len(inject) :]))  # spaced
    write(log, rows)
    with pytest.raises(AuditTamperError, match=r"line 2: not a JSON entry.*canonical form"):
        log.verify(keys[1])


def test_a_whole_last_entry_without_its_line_break_is_kept(tmp_path, keys):
    """Only a torn entry is cut: a complete one that lost its line break gets it back."""
    log = filled(tmp_path, keys)
    whole = log.path.read_bytes()
    log.path.write_bytes(whole.rstrip(b"\n"))
    log.append("grade", "lot-4", {"grade": None}, actor="tech")
    assert log.path.read_bytes().startswith(whole)
    assert [e["action"] for e in log.entries()[-2:]] == ["grade", "grade"]


def test_a_fake_checkpoint_does_not_lock_the_lab_key_out(tmp_path, keys):
    """check_lab_key goes by signatures: a checkpoint naming another fingerprint, with a
    signature that does not verify, neither blocks the lab key nor admits another key."""
    from fibergrade.audit import entry_hash
    from fibergrade.keys import init_keys

    other_priv, _, other_fp = init_keys(tmp_path / "other")
    other = load_private_key(other_priv)
    log = filled(tmp_path, keys)
    last = log.entries()[-1]
    fake = {
        "action": "checkpoint", "actor": "x", "key_fingerprint": other_fp,
        "payload_digest": None, "prev": last["hash"], "seq": last["seq"] + 1,
        "signature": "AAAA", "signed_hash": last["hash"], "signed_seq": last["seq"],
        "subject": "x", "time": "2026-01-01T00:00:00+00:00",
    }  # fmt: skip
    fake["hash"] = entry_hash(fake)
    write(log, [*lines(log), canonical_json(fake).decode()])
    log.check_lab_key(keys[1])  # the lab key signed a real checkpoint
    with pytest.raises(AuditError, match="no checkpoint in it is signed by the key given"):
        log.check_lab_key(other.public_key())


def test_the_cli_takes_an_unencrypted_key_with_a_passphrase_in_the_environment(tmp_path):
    """The option used to read FIBERGRADE_KEY_PASSPHRASE itself, so the environment's
    passphrase came in as if given with --passphrase, and an unencrypted key was refused."""
    import os
    import subprocess
    import sys

    exe = shutil.which("fibergrade", path=str(Path(sys.executable).parent)) or "fibergrade"
    init_keys(tmp_path / "keys")
    (tmp_path / "a.csv").write_text("lot_id,diameter_um\nA1,15.5\nA1,16.5\n")
    env = os.environ | {"FIBERGRADE_KEY_PASSPHRASE": "meant-for-another-key"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([exe, *args, "--store", str(tmp_path / "s")], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip

    assert run("import", "a.csv").returncode == 0
    r = run("audit", "checkpoint", "--key", "keys/lab.key")
    assert r.returncode == 0, r.stderr
    r = run("audit", "checkpoint", "--key", "keys/lab.key", "--passphrase", "x")
    assert r.returncode == 2 and "give no --passphrase" in r.stderr
