"""Signed certificates end to end through the CLI: issue, refuse, override, reissue, revoke,
and verification that finds every kind of tampering the issue names."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STORE = ("--store", "demo-out/fibergrade-data")
CERTS = "demo-out/certificates"
KEY = "demo-out/keys/lab.key"
PUB = "demo-out/keys/lab.pub"
EXE = shutil.which("fibergrade", path=str(Path(sys.executable).parent)) or "fibergrade"


def run(*args: str, cwd: Path):
    return subprocess.run(
        [EXE, *args], capture_output=True, text=True, cwd=cwd, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Path:
    """A demo day: graded, screened, its clean lots certified with the demo's key pair."""
    d = tmp_path_factory.mktemp("lab")
    r = run("demo", "--lots", "30", "--seed", "7", cwd=d)
    assert r.returncode == 0, r.stderr
    assert len(list((d / CERTS).glob("FG-*.json"))) >= 5
    # nothing left to certify: every clean graded lot has its certificate
    r = run("certify", *STORE, "--key", KEY, "--out", CERTS, "--json", cwd=d)
    assert r.returncode == 0 and json.loads(r.stdout) == []
    return d


def certs(lab: Path) -> list[Path]:
    return sorted((lab / CERTS).glob("FG-*-01.json"))


def fresh_copy(lab: Path, tmp_path: Path) -> Path:
    """A private copy of the lab (store, keys, certificates) to tamper with."""
    dst = tmp_path / "lab"
    shutil.copytree(lab, dst)
    return dst


def verify(d: Path, cert: Path, *extra: str):
    return run("verify", str(cert), "--public-key", PUB, *extra, cwd=d)


def test_a_certificate_verifies_offline_with_recomputation(lab):
    cert = certs(lab)[0]
    r = verify(lab, cert, *STORE, "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["ok"] and not rep["problems"]
    checks = {c["check"] for c in rep["checks"]}
    assert {"signature", "raw segment", "recomputation", "audit log"} <= checks
    doc = json.loads(cert.read_text())["certificate"]
    std = doc["standard"]
    assert {"check": "standard", "result": f"{std['id']} version {std['version']}, packaged "
            f"with this software, SHA-256 {std['digest'][:16]}..."} in rep["checks"]  # fmt: skip
    assert doc["schema"] == "fibergrade-certificate/1"
    assert doc["screening"]["verdict"] == "clean" and doc["screening"]["model_digest"]
    assert len(doc["raw_segment"]["sha256"]) == 64
    assert doc["standard"]["id"] and doc["grade"]["id"]
    assert doc["figures"]["mfd_um"] == round(doc["figures"]["mfd_um"], 1)
    pdf = cert.with_suffix(".pdf").read_bytes()
    assert pdf[:5] == b"%PDF-"


def test_signature_only_needs_the_public_key(lab):
    r = verify(lab, certs(lab)[0])
    assert r.returncode == 0 and "not recomputed" in r.stdout
    # a revoked certificate would verify so too: said, in text and in JSON
    assert "note: revocation and supersession were NOT checked" in r.stdout
    r = verify(lab, certs(lab)[0], "--json")
    assert r.returncode == 0
    assert json.loads(r.stdout)["notes"] == [
        "revocation and supersession were NOT checked: give the lab's signed revocation "
        "list (--revocations FILE) or the store (--store)"
    ]


@pytest.mark.parametrize("offset", [0.1, 0.35, 0.5, 0.8, 0.97])
def test_a_flipped_byte_anywhere_is_detected(lab, tmp_path, offset):
    src = certs(lab)[1].read_bytes()
    i = int(len(src) * offset)
    bad = tmp_path / "bad.json"
    bad.write_bytes(src[:i] + bytes([src[i] ^ 0x01]) + src[i + 1 :])
    r = verify(lab, bad)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert any(w in r.stderr for w in ("signature", "not a JSON", "not a signed", "altered"))


def test_results_swapped_between_two_lots_are_found_by_recomputation(lab, tmp_path):
    """Even signed with the lab's own key, a certificate carrying another lot's figures fails."""
    from fibergrade.certificates import sign
    from fibergrade.keys import load_private_key

    a, b = (json.loads(p.read_text())["certificate"] for p in certs(lab)[:2])
    forged = dict(a, figures=b["figures"])
    env = sign(forged, load_private_key(lab / KEY))
    p = tmp_path / "swapped.json"
    p.write_text(json.dumps(env))
    assert verify(lab, p).returncode == 0  # the signature alone is fine ...
    r = verify(lab, p, *STORE)
    assert r.returncode == 5  # ... but the raw data disagree
    assert "mfd_um: certificate says" in r.stderr


def test_edited_raw_data_is_detected(lab, tmp_path):
    d = fresh_copy(lab, tmp_path)
    cert = certs(d)[0]
    seg = json.loads(cert.read_text())["certificate"]["raw_segment"]["sha256"]
    path = d / "demo-out" / "fibergrade-data" / "segments" / f"{seg}.h5"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    r = verify(d, cert, *STORE)
    assert r.returncode == 5 and "raw data" in r.stderr


def test_edited_calibration_record_is_detected(lab, tmp_path):
    d = fresh_copy(lab, tmp_path)
    cert = certs(d)[0]
    cal = json.loads(cert.read_text())["certificate"]["calibration"]["record"]
    assert cal, "demo lots are graded with a calibration"
    path = d / "demo-out" / "fibergrade-data" / "results" / "calibration" / f"{cal}.json"
    path.chmod(0o644)
    path.write_text(path.read_text().replace('"slope":', '"slope": 1.01, "x":', 1))
    r = verify(d, cert, *STORE)
    assert r.returncode == 5 and "calibration record" in r.stderr


def test_wrong_key_is_refused(lab, tmp_path):
    other = tmp_path / "other"
    assert run("keys", "init", "--dir", str(other), cwd=tmp_path).returncode == 0
    r = run("verify", str(certs(lab)[0]), "--public-key", str(other / "lab.pub"), cwd=lab)
    assert r.returncode == 5 and "not with the given public key" in r.stderr


def test_revoked_certificate_fails_against_the_signed_list(lab, tmp_path):
    d = fresh_copy(lab, tmp_path)
    cert = certs(d)[2]
    number = cert.stem
    r = run("revoke", number, "--reason", "sample mix-up at reception", "--key", KEY, *STORE, cwd=d)
    assert r.returncode == 0, r.stderr
    revs = d / "demo-out" / "fibergrade-data" / "revocations.json"
    r = verify(d, cert, "--revocations", str(revs))
    assert r.returncode == 5 and "revoked" in r.stderr and "mix-up" in r.stderr
    # another certificate is not affected (the list carries supersessions too, so nothing
    # is said to be unchecked), and a forged list is refused
    r = verify(d, certs(d)[0], "--revocations", str(revs))
    assert r.returncode == 0 and "NOT checked" not in r.stdout, r.stdout
    doc = json.loads(revs.read_text())
    doc["revocations"]["entries"] = []
    revs.write_text(json.dumps(doc))
    r = verify(d, cert, "--revocations", str(revs))
    assert r.returncode == 5 and "signature" in r.stderr


def test_with_the_store_a_revoked_or_superseded_certificate_no_longer_stands(lab, tmp_path):
    d = fresh_copy(lab, tmp_path)
    revoked, reissued, other = certs(d)[:3]
    r = run("revoke", revoked.stem, "--reason", "sample mix-up", "--key", KEY, *STORE, cwd=d)
    assert r.returncode == 0, r.stderr
    # no --revocations file: the store's own records say it
    r = verify(d, revoked, *STORE)
    assert r.returncode == 5 and "revoked in the store" in r.stderr and "mix-up" in r.stderr
    lot = json.loads(reissued.read_text())["certificate"]["lot"]["lot_id"]
    r = run("certify", lot, *STORE, "--key", KEY, "--out", CERTS, "--reissue", "--reason",
            "client name corrected", "--json", cwd=d)  # fmt: skip
    assert r.returncode == 0, r.stderr
    newer = json.loads(r.stdout)[0]["certificate_number"]
    r = verify(d, reissued, *STORE)
    assert r.returncode == 5 and f"superseded by {newer}" in r.stderr
    assert "client name corrected" in r.stderr
    assert verify(d, d / CERTS / f"{newer}.json", *STORE).returncode == 0
    r = verify(d, other, *STORE, "--json")
    assert r.returncode == 0, r.stderr
    checks = {c["check"]: c["result"] for c in json.loads(r.stdout)["checks"]}
    assert checks["standing in the store"] == "neither revoked nor superseded"
    # offline, without the store, the signature alone still verifies
    assert verify(d, revoked).returncode == 0
    # the signed list the reissue wrote again lists the supersession: offline, with the
    # list, the superseded certificate fails as it does with --store (it used to verify)
    revs = d / "demo-out" / "fibergrade-data" / "revocations.json"
    listed = json.loads(revs.read_text())["revocations"]["supersessions"]
    assert [(e["certificate_number"], e["superseded_by"], e["reason"]) for e in listed] == [
        (reissued.stem, newer, "client name corrected")
    ]
    r = verify(d, reissued, "--revocations", str(revs))
    assert r.returncode == 5 and f"superseded by {newer}" in r.stderr, r.stderr
    assert "client name corrected" in r.stderr
    r = verify(d, d / CERTS / f"{newer}.json", "--revocations", str(revs), "--json")
    assert r.returncode == 0, r.stderr
    checks = {c["check"]: c["result"] for c in json.loads(r.stdout)["checks"]}
    assert checks["revocation list"].startswith("neither revoked nor superseded")
    # a list written before supersessions were listed is still read, and says it cannot tell
    from fibergrade.certificates import sign
    from fibergrade.keys import load_private_key

    doc = json.loads(revs.read_text())["revocations"]
    del doc["supersessions"]
    old = d / "old-revocations.json"
    old.write_text(json.dumps(sign(doc, load_private_key(d / KEY))))
    r = verify(d, reissued, "--revocations", str(old), "--json")
    assert r.returncode == 0, r.stderr
    assert any("predates supersessions" in n for n in json.loads(r.stdout)["notes"])
    r = verify(d, revoked, "--revocations", str(old))
    assert r.returncode == 5 and "mix-up" in r.stderr


def test_reissues_supersede_for_good_and_revoking_one_puts_nothing_back(lab, tmp_path):
    """A superseded certificate was replaced: revoking its replacement does not make it
    stand again (it used to, silently); revoke says the lot has no certificate that stands,
    and the lot is then certified anew without --reissue."""
    d = fresh_copy(lab, tmp_path)
    first = certs(d)[0]
    lot = json.loads(first.read_text())["certificate"]["lot"]["lot_id"]

    def reissue(reason: str) -> dict:
        r = run("certify", lot, *STORE, "--key", KEY, "--out", CERTS, "--reissue", "--reason",
                reason, "--json", "--no-pdf", cwd=d)  # fmt: skip
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)[0]

    second = reissue("client name corrected")
    third = reissue("origin corrected")  # most likely within the same second
    assert second["supersedes"] == first.stem
    assert third["supersedes"] == second["certificate_number"]
    second_file = d / CERTS / f"{second['certificate_number']}.json"
    r = verify(d, first, *STORE)
    assert r.returncode == 5 and f"superseded by {second['certificate_number']}" in r.stderr
    r = verify(d, second_file, *STORE)
    assert r.returncode == 5 and f"superseded by {third['certificate_number']}" in r.stderr
    r = run("revoke", third["certificate_number"], "--reason", "wrong lot", "--key", KEY,
            *STORE, cwd=d)  # fmt: skip
    assert r.returncode == 0, r.stderr
    said = " ".join(r.stdout.split())
    assert f"lot {lot} now has no certificate that stands" in said
    assert f"{second['certificate_number']}, which {third['certificate_number']} superseded, " \
        "stays superseded" in said  # fmt: skip
    # the second (and the first) stay superseded, for verifying and for issuing alike
    r = verify(d, second_file, *STORE)
    assert r.returncode == 5 and f"superseded by {third['certificate_number']}" in r.stderr
    assert "was itself revoked" in r.stderr and "does not put" in r.stderr
    assert verify(d, first, *STORE).returncode == 5
    r = run("certify", lot, *STORE, "--key", KEY, "--out", CERTS, "--json", "--no-pdf", cwd=d)
    assert r.returncode == 0, r.stderr
    fourth = json.loads(r.stdout)[0]
    assert fourth["supersedes"] is None and fourth["certificate_number"].endswith("-04")
    fourth_file = d / CERTS / f"{fourth['certificate_number']}.json"
    assert verify(d, fourth_file, *STORE).returncode == 0
    assert verify(d, second_file, *STORE).returncode == 5
    # certified again without --lab, it keeps the lab of the lot's newest certificate (it
    # fell back to the default name, renaming the lab, as reissues once did)
    assert json.loads(fourth_file.read_text())["certificate"]["lab"]["name"] == (
        "fibergrade demo lab"
    )


def test_a_batch_stopped_part_way_leaves_only_what_was_issued(lab, tmp_path):
    d = fresh_copy(lab, tmp_path)
    lots = [json.loads(c.read_text())["certificate"]["lot"]["lot_id"] for c in certs(d)[:3]]

    def unanchored() -> int:
        r = run("audit", "verify", "--public-key", PUB, *STORE, "--json", cwd=d)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)["entries_after_last_checkpoint"]

    def reissue(*which: str):
        return run("certify", *which, *STORE, "--key", KEY, "--out", CERTS, "--reissue",
                   "--reason", "client name corrected", cwd=d)  # fmt: skip

    # the second certificate's JSON cannot be put in place: the first is whole, the second
    # is issued (stored, logged, its PDF in place) and says so, the third is not issued
    (d / CERTS / f"FG-{lots[1]}-02.json").mkdir()
    r = reissue(*lots)
    assert r.returncode == 5, r.stderr
    said = " ".join(r.stderr.split())
    assert f"FG-{lots[1]}-02 is issued (stored and logged), but a file" in said
    assert (d / CERTS / f"FG-{lots[0]}-02.json").is_file()
    assert (d / CERTS / f"FG-{lots[0]}-02.pdf").read_bytes()[:5] == b"%PDF-"
    assert (d / CERTS / f"FG-{lots[1]}-02.pdf").read_bytes()[:5] == b"%PDF-"
    assert not list((d / CERTS).glob(f"FG-{lots[2]}-02.*"))
    assert [p.name for p in (d / CERTS).iterdir() if p.name.startswith(".")] == []
    assert unanchored() == 0  # the certificates stored are under a checkpoint
    # the very first certificate of a batch failing after it was stored: checkpointed too
    (d / CERTS / f"FG-{lots[2]}-02.pdf").mkdir()
    r = reissue(lots[2])
    assert r.returncode == 5 and "is issued" in r.stderr
    assert (d / CERTS / f"FG-{lots[2]}-02.json").is_file()
    assert unanchored() == 0


def test_a_subjects_certificates_are_ordered_by_their_own_count(tmp_path):
    """Past -99, and when the clock stepped back between a certificate and its reissue."""
    from fibergrade.certificates import stored_certificates
    from fibergrade.store import Store

    store = Store.open(tmp_path / "s")
    for number, at in [
        ("FG-L-100", "2026-05-01T10:00:00+00:00"),
        ("FG-L-99", "2026-05-01T10:00:00+00:00"),  # the same second
        ("FG-M-02", "2026-04-30T23:59:00+00:00"),  # the clock stepped back
        ("FG-M-01", "2026-05-01T00:00:00+00:00"),
    ]:
        lot = number.split("-")[1]
        store.put_result("certificate", {"certificate": {"certificate_number": number,
                         "issued_at": at, "lot": {"lot_id": lot}}})  # fmt: skip
    order = [e["certificate"]["certificate_number"] for _, e in stored_certificates(store)]
    assert order.index("FG-L-99") < order.index("FG-L-100")
    assert order.index("FG-M-01") < order.index("FG-M-02")


def test_a_certificate_the_store_never_issued_does_not_stand_there(lab, tmp_path):
    d = fresh_copy(lab, tmp_path)
    lot = json.loads(certs(d)[0].read_text())["certificate"]["lot"]["lot_id"]
    r = run("certify", lot, *STORE, "--key", KEY, "--out", CERTS, "--reissue", "--reason",
            "x", "--json", "--no-pdf", cwd=d)  # fmt: skip
    assert r.returncode == 0, r.stderr
    newer = d / CERTS / f"{json.loads(r.stdout)[0]['certificate_number']}.json"
    r = verify(lab, newer, *STORE)  # the original lab's store: an older copy
    assert r.returncode == 5 and "was not issued from this store" in r.stderr


def test_only_the_key_that_issued_a_certificate_can_revoke_it(lab, tmp_path):
    d = fresh_copy(lab, tmp_path)
    r = run("keys", "init", "--dir", "other-lab", cwd=d)
    assert r.returncode == 0, r.stderr
    store_dir = d / "demo-out" / "fibergrade-data"

    def contents() -> dict[str, bytes]:
        return {str(p): p.read_bytes() for p in sorted(store_dir.rglob("*")) if p.is_file()}

    before = contents()
    cert = certs(d)[0]
    r = run("revoke", cert.stem, "--reason", "x", "--key", "other-lab/lab.key", *STORE, cwd=d)
    assert r.returncode != 0 and "not the lab key that issued it" in r.stderr
    assert contents() == before  # no entry, no list, no audit checkpoint
    r = run("audit", "verify", "--public-key", PUB, *STORE, cwd=d)
    assert r.returncode == 0, r.stderr


def test_a_certificate_graded_by_a_labs_own_standard_verifies_with_that_file(lab, tmp_path):
    d = fresh_copy(lab, tmp_path)
    packaged = Path(__file__).parents[1] / "src/fibergrade/standards/us-wpla-cashmere.toml"
    own = d / "lab-own.toml"
    own.write_text(packaged.read_text().replace('id = "us-wpla-cashmere"', 'id = "lab-own"', 1))
    doc = json.loads(certs(d)[0].read_text())["certificate"]
    lot = doc["lot"]["lot_id"]
    r = run("grade", lot, "--standard", str(own), *STORE, cwd=d)
    assert r.returncode == 0, r.stderr
    r = run("certify", lot, *STORE, "--key", KEY, "--out", CERTS, "--reissue", "--reason",
            "graded by the lab's own standard", "--json", "--no-pdf", cwd=d)  # fmt: skip
    assert r.returncode == 0, r.stderr
    cert = d / CERTS / f"{json.loads(r.stdout)[0]['certificate_number']}.json"
    assert json.loads(cert.read_text())["certificate"]["standard"]["id"] == "lab-own"
    r = verify(d, cert, *STORE)
    assert r.returncode == 5 and "--standard FILE" in r.stderr
    r = verify(d, cert, *STORE, "--standard", str(own), "--json")
    assert r.returncode == 0, r.stderr
    checks = {c["check"]: c["result"] for c in json.loads(r.stdout)["checks"]}
    assert "recomputation" in checks
    std = json.loads(cert.read_text())["certificate"]["standard"]
    assert checks["standard"] == (
        f"lab-own version 1, the lab's own file {own} given with --standard, "
        f"SHA-256 {std['digest'][:16]}..."
    )
    # an edited copy of the file is not the standard the lot was graded by
    own.write_text(own.read_text().replace("limit = 19.0", "limit = 21.0", 1))
    r = verify(d, cert, *STORE, "--standard", str(own))
    assert r.returncode == 5 and "digest" in r.stderr


def test_a_standard_file_shadowing_a_packaged_one_is_refused_by_grade_certify_verify(lab, tmp_path):
    """The auditor's forgery: a copy of us-wpla-cashmere.toml with the CV limit 30 kept the
    packaged id and version, so a lot graded by it was certified as "us-wpla-cashmere v1,
    cashmere" with a CV over 24 %."""
    from fibergrade.store import Store
    from fibergrade.workflow import latest_grades

    d = fresh_copy(lab, tmp_path)
    packaged = Path(__file__).parents[1] / "src/fibergrade/standards/us-wpla-cashmere.toml"
    own = d / "own.toml"
    own.write_text(packaged.read_text().replace("limit = 24.0", "limit = 30.0", 1))
    cert = next(
        c
        for c in certs(d)
        if json.loads(c.read_text())["certificate"]["standard"]["id"] == "us-wpla-cashmere"
    )
    lot = json.loads(cert.read_text())["certificate"]["lot"]["lot_id"]
    store_dir = d / "demo-out" / "fibergrade-data"
    results = sorted((store_dir / "results" / "grade").iterdir())
    r = run("grade", lot, "--standard", str(own), *STORE, cwd=d)
    assert r.returncode == 2, r.stderr
    assert "own.toml" in r.stderr and "us-wpla-cashmere" in r.stderr
    assert "its own id" in r.stderr and "Traceback" not in r.stderr
    assert sorted((store_dir / "results" / "grade").iterdir()) == results  # nothing stored
    # a grade record made so before (by an older version, or written by hand) is not signed
    st = Store.open(store_dir)
    rec = dict(latest_grades(st)[lot])
    assert rec["standard"]["id"] == "us-wpla-cashmere"
    rec.pop("result_id", None)
    rec["standard"] = dict(rec["standard"], digest="0" * 64)
    prev = st.results("grade")[-1][1]
    later = {"created_at": "9999-01-01T00:00:00+00:00", "lots": [rec]}  # the latest grading
    st.put_result("grade", {k: v for k, v in prev.items() if k != "lots"} | later)
    r = run("certify", lot, *STORE, "--key", KEY, "--out", CERTS, "--reissue", "--reason",
            "regraded", "--no-pdf", cwd=d)  # fmt: skip
    assert r.returncode == 5, r.stderr
    assert "reuses the id and version" in r.stderr and "us-wpla-cashmere v1" in r.stderr
    # nor does verify take such a file as the standard a certificate names
    r = verify(d, cert, *STORE, "--standard", str(own))
    assert r.returncode == 2 and "own.toml" in r.stderr and "its own id" in r.stderr


def test_a_new_version_of_a_packaged_standard_given_to_a_batch_leaves_the_packaged_one(
    lab, tmp_path
):
    """A lab's file that is a new version of a packaged standard (what refusing a shadowing
    file tells the lab to make) replaced the packaged one for every certificate of the
    batch: an honest certificate graded by the packaged version failed with "this software
    has version 2", which the lab's file has."""
    d = fresh_copy(lab, tmp_path)
    packaged = Path(__file__).parents[1] / "src/fibergrade/standards/us-wpla-cashmere.toml"
    own = d / "own-v2.toml"
    own.write_text(
        packaged.read_text()
        .replace('version = "1"', 'version = "2"', 1)
        .replace("limit = 24.0", "limit = 30.0", 1)
    )
    first, second = [
        c
        for c in certs(d)
        if json.loads(c.read_text())["certificate"]["standard"]["id"] == "us-wpla-cashmere"
    ][:2]
    lot = json.loads(first.read_text())["certificate"]["lot"]["lot_id"]
    r = run("grade", lot, "--standard", str(own), *STORE, cwd=d)
    assert r.returncode == 0, r.stderr
    r = run("certify", lot, *STORE, "--key", KEY, "--out", CERTS, "--reissue", "--reason",
            "graded by the lab's version 2", "--json", "--no-pdf", cwd=d)  # fmt: skip
    assert r.returncode == 0, r.stderr
    cert = d / CERTS / f"{json.loads(r.stdout)[0]['certificate_number']}.json"
    r = run("verify", str(cert), str(second), "--public-key", PUB, *STORE, "--standard",
            str(own), "--json", cwd=d)  # fmt: skip
    assert r.returncode == 0, r.stderr
    said = [
        {c["check"]: c["result"] for c in rep["checks"]}["standard"] for rep in json.loads(r.stdout)
    ]
    assert said[0].startswith(f"us-wpla-cashmere version 2, the lab's own file {own}")
    assert said[1].startswith("us-wpla-cashmere version 1, packaged with this software")
    # the certificate graded by version 2, verified with another file of that version
    own.write_text(own.read_text().replace("limit = 30.0", "limit = 29.0", 1))
    r = verify(d, cert, *STORE, "--standard", str(own))
    assert r.returncode == 5 and f"the file {own} given with --standard has version 2" in r.stderr


def test_audit_verify_without_the_public_key_says_the_signatures_were_not_checked(lab):
    """It said "audit log intact" and ok: true with no checkpoint signature checked."""
    r = run("audit", "verify", *STORE, "--json", cwd=lab)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["ok"] and rep["checkpoints"] >= 1 and rep["signatures_checked"] is False
    assert len(rep["notes"]) == 1 and "not checked" in rep["notes"][0]
    assert "--public-key" in rep["notes"][0]
    r = run("audit", "verify", *STORE, cwd=lab)
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "audit log intact" not in text and "signatures NOT checked" in text
    assert "note: checkpoint signatures were not checked" in text and "--public-key" in text
    r = run("audit", "verify", *STORE, "--public-key", PUB, "--json", cwd=lab)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["signatures_checked"] is True and rep["notes"] == []
    r = run("audit", "verify", *STORE, "--public-key", PUB, cwd=lab)
    assert "audit log intact" in r.stdout and "note:" not in r.stdout


def test_a_reissue_without_lab_keeps_the_lab_of_the_certificate_it_supersedes(lab, tmp_path):
    """A reissue without --lab named "fibergrade laboratory", the default, instead of the lab
    that issued the certificate it corrects (the demo's "fibergrade demo lab")."""
    d = fresh_copy(lab, tmp_path)
    first = json.loads(certs(d)[0].read_text())["certificate"]
    assert first["lab"]["name"] == "fibergrade demo lab"
    lot = first["lot"]["lot_id"]

    def reissue(*extra: str) -> dict:
        r = run("certify", lot, *STORE, "--key", KEY, "--out", CERTS, "--reissue", "--reason",
                "calibration record corrected", "--no-pdf", "--json", *extra, cwd=d)  # fmt: skip
        assert r.returncode == 0, r.stderr
        number = json.loads(r.stdout)[0]["certificate_number"]
        return json.loads((d / CERTS / f"{number}.json").read_text())["certificate"]

    assert reissue()["lab"]["name"] == "fibergrade demo lab"
    assert reissue("--lab", "Ulaanbaatar Fibre Lab")["lab"]["name"] == "Ulaanbaatar Fibre Lab"
    assert reissue()["lab"]["name"] == "Ulaanbaatar Fibre Lab"  # the newest it supersedes


def test_refusals_override_and_reissue(lab, tmp_path):
    d = fresh_copy(lab, tmp_path)
    graded = json.loads(run("grade", "--json", *STORE, cwd=d).stdout)
    flagged = next(x for x in graded if x["screening"]["verdict"] != "clean")
    r = run("certify", flagged["lot_id"], *STORE, "--key", KEY, "--out", "certs", cwd=d)
    assert r.returncode == 5 and "flagged by screening" in r.stderr and "override" in r.stderr
    r = run("override", flagged["lot_id"], "--reason", "SEM confirmed cashmere", *STORE, cwd=d)
    assert r.returncode == 0
    r = run("certify", flagged["lot_id"], *STORE, "--key", KEY, "--out", "certs", "--json", cwd=d)
    assert r.returncode == 0, r.stderr
    number = json.loads(r.stdout)[0]["certificate_number"]
    doc = json.loads((d / "certs" / f"{number}.json").read_text())["certificate"]
    assert doc["screening"]["override"]["reason"] == "SEM confirmed cashmere"
    # a second certificate for the same lot needs --reissue and supersedes the first
    r = run("certify", flagged["lot_id"], *STORE, "--key", KEY, "--out", "certs", cwd=d)
    assert r.returncode == 5 and "already certified" in r.stderr
    r = run(
        "certify",
        flagged["lot_id"],
        *STORE,
        "--key",
        KEY,
        "--out",
        "certs",
        "--reissue",
        "--reason",
        "typo in client name",
        "--json",
        cwd=d,
    )
    assert r.returncode == 0, r.stderr
    again = json.loads(r.stdout)[0]
    assert again["supersedes"] == number and again["certificate_number"].endswith("-02")
    assert (d / "certs" / f"{number}.json").exists()  # both kept
    # verify says it was certified over the screening, by whom and why, and finds the
    # logged override record of this lot
    r = verify(d, d / again["json"], *STORE, "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert "override" in {c["check"] for c in rep["checks"]}
    assert any(
        n.startswith(f"certified over a screening verdict of {flagged['screening']['verdict']}")
        and "'SEM confirmed cashmere'" in n
        for n in rep["notes"]
    ), rep["notes"]
    # a lot that is in the store but not graded is refused; one not in it is said so
    import numpy as np

    from fibergrade.adapters.writers import write_fibre_csv
    from fibergrade.measurements import FibreLots

    lots = FibreLots(("NEW-1",), [0, 500], np.full(500, 15.5, dtype=np.float32))
    write_fibre_csv(d / "new.csv", lots)
    assert run("import", "new.csv", *STORE, cwd=d).returncode == 0
    r = run("certify", "NEW-1", *STORE, "--key", KEY, cwd=d)
    assert r.returncode == 5 and "not graded yet: NEW-1" in r.stderr, r.stderr
    r = run("certify", "NO-SUCH", *STORE, "--key", KEY, cwd=d)
    assert r.returncode == 3 and "not in the store" in r.stderr


def test_audit_log_records_certification_and_detects_tampering(lab, tmp_path):
    d = fresh_copy(lab, tmp_path)
    r = run("audit", "verify", "--public-key", PUB, *STORE, "--json", cwd=d)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["checkpoints"] >= 1 and rep["signatures_checked"]
    actions = {e["action"] for e in json.loads(run("audit", "log", *STORE, "--json", cwd=d).stdout)}
    assert {"import", "grade", "calibrate", "certify", "checkpoint"} <= actions
    log = d / "demo-out" / "fibergrade-data" / "audit" / "log.jsonl"
    lines = log.read_text().splitlines()
    del lines[3]
    log.write_text("\n".join(lines) + "\n")
    r = run("audit", "verify", *STORE, cwd=d)
    assert r.returncode != 0 and "entry" in r.stderr and "line 4" in r.stderr


def test_private_key_is_not_accepted_inside_the_store(lab, tmp_path):
    d = fresh_copy(lab, tmp_path)
    r = run("keys", "init", "--dir", "demo-out/fibergrade-data/keys", cwd=d)
    assert r.returncode != 0 and "inside the store" in r.stderr
    key = (d / KEY).stat().st_mode & 0o777
    assert key == 0o600


def test_a_certificate_file_appears_only_once_the_store_holds_it(tmp_path):
    from fibergrade.certificates import publish
    from fibergrade.errors import StoreError
    from fibergrade.store import Store

    store = Store.open(tmp_path / "s")
    out = tmp_path / "out"
    out.mkdir()
    env = {"certificate": {"certificate_number": "FG-X-01"}, "signature": "not checked here"}
    # the store cannot write certificates (a file where their folder belongs): no file
    blocker = tmp_path / "s" / "results" / "certificate"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("in the way")
    with pytest.raises(StoreError, match="cannot write result"):
        publish(store, out, "FG-X-01", env)
    assert list(out.iterdir()) == []
    blocker.unlink()
    path = publish(store, out, "FG-X-01", env)
    assert path == out / "FG-X-01.json" and json.loads(path.read_text()) == env
    assert [p for _, p in store.results("certificate")] == [env]
    assert [p.name for p in out.iterdir()] == ["FG-X-01.json"]


def test_the_recording_commands_answer_in_json(lab, tmp_path):
    d = fresh_copy(lab, tmp_path)
    r = run("keys", "init", "--dir", "k2", "--json", cwd=d)
    assert r.returncode == 0, r.stderr
    keys = json.loads(r.stdout)
    assert len(keys["fingerprint"]) == 64 and keys["encrypted"] is False
    graded = json.loads(run("grade", "--json", *STORE, cwd=d).stdout)
    lot = graded[0]["lot_id"]
    r = run("override", lot, "--reason", "checked", "--actor", "qa", *STORE, "--json", cwd=d)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) | {"record": ""} == {
        "lot_id": lot,
        "record": "",
        "reason": "checked",
        "actor": "qa",
    }
    cert = certs(d)[0]
    r = run("revoke", cert.stem, "--reason", "x", "--key", KEY, *STORE, "--json", cwd=d)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["entries"] == 1
    r = run("audit", "checkpoint", "--key", KEY, *STORE, "--json", cwd=d)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["action"] == "checkpoint"


def test_store_files_nobody_signed_or_logged_cannot_change_a_verdict(lab, tmp_path):
    """Attacks with write access to the store and no key (an adversarial review found each
    one passing): a deleted revocation, a certificate re-signed under the same number with
    another key, an edited log entry far from the certificate's own, and a planted grade
    record that certify would have used."""
    d = fresh_copy(lab, tmp_path)
    store = d / "demo-out" / "fibergrade-data"
    first, second = certs(d)[:2]
    r = run("revoke", first.stem, "--reason", "sold twice", *STORE, "--key", KEY, cwd=d)
    assert r.returncode == 0, r.stderr
    for f in (store / "results" / "revocation").glob("*.json"):
        f.chmod(0o644)
        f.unlink()
    r = verify(d, first, *STORE)
    assert r.returncode == 5 and "revocation record(s) that the audit log records" in r.stderr
    r = run("audit", "verify", *STORE, cwd=d)
    assert r.returncode != 0 and "deleted after they were logged" in r.stderr

    d = fresh_copy(lab, tmp_path / "b")
    r = run("keys", "init", "--dir", "other", cwd=d)
    assert r.returncode == 0, r.stderr
    from fibergrade.certificates import sign
    from fibergrade.keys import load_private_key

    doc = json.loads(second.read_text())["certificate"]
    fake = d / "impostor.json"
    fake.write_text(
        json.dumps(sign(dict(doc, client="someone"), load_private_key(d / "other" / "lab.key")))
    )
    r = run("verify", str(fake), "--public-key", "other/lab.pub", *STORE, cwd=d)
    assert r.returncode == 5 and "is another document" in r.stderr

    log = d / "demo-out" / "fibergrade-data" / "audit" / "log.jsonl"
    rows = log.read_text().splitlines()
    rows[1] = rows[1].replace('"import"', '"grade"', 1)
    log.write_text("\n".join(rows) + "\n")
    r = verify(d, second, *STORE)
    assert r.returncode == 5 and "audit log line 2 (entry 1): entry was edited" in r.stderr


def test_a_carcass_certificate_checks_the_audit_log_too(lab, tmp_path):
    d = fresh_copy(lab, tmp_path)
    fgm = sorted((d / CERTS).glob("FGM-*.json"))[0]
    log = d / "demo-out" / "fibergrade-data" / "audit" / "log.jsonl"
    rows = log.read_text().splitlines()
    log.write_text("\n".join(rows[:5]) + "\n")
    r = verify(d, fgm, *STORE)
    assert r.returncode == 5 and "audit log" in r.stderr


def test_certify_and_checkpoint_refuse_another_key(lab, tmp_path):
    """Another key would sign a checkpoint and certificates that every later check against
    the lab's public key fails, for good (the log is append-only)."""
    d = fresh_copy(lab, tmp_path)
    assert run("keys", "init", "--dir", "other", cwd=d).returncode == 0
    store_dir = d / "demo-out" / "fibergrade-data"
    before = {str(p): p.read_bytes() for p in sorted(store_dir.rglob("*")) if p.is_file()}
    lot = json.loads(certs(d)[0].read_text())["certificate"]["lot"]["lot_id"]
    for args in (
        ("certify", lot, "--reissue", "--reason", "x", "--no-pdf", "--out", "o"),
        ("meat", "certify", "--out", "o"),
        ("audit", "checkpoint"),
    ):
        r = run(*args, *STORE, "--key", "other/lab.key", cwd=d)
        assert r.returncode == 3 and "it is not the lab key" in r.stderr, (args, r.stderr)
    after = {str(p): p.read_bytes() for p in sorted(store_dir.rglob("*")) if p.is_file()}
    assert after == before
    r = run("audit", "verify", "--public-key", PUB, *STORE, cwd=d)
    assert r.returncode == 0, r.stderr


def test_two_certify_runs_at_once_never_issue_one_number_twice(lab, tmp_path):
    """Each run reads the lot's certificates, numbers the next and stores it; two at once
    issued the same number twice before they took the store's issuing lock."""
    d = fresh_copy(lab, tmp_path)
    lot = json.loads(certs(d)[0].read_text())["certificate"]["lot"]["lot_id"]
    cmd = [EXE, "certify", lot, *STORE, "--key", KEY, "--reissue", "--reason", "x",
           "--no-pdf", "--json"]  # fmt: skip
    procs = [
        subprocess.Popen([*cmd, "--out", f"out{k}"], cwd=d, stdout=subprocess.PIPE, text=True)
        for k in range(3)
    ]
    numbers = []
    for p in procs:
        stdout, _ = p.communicate(timeout=300)
        assert p.returncode == 0
        numbers += [c["certificate_number"] for c in json.loads(stdout)]
    assert sorted(numbers) == [f"FG-{lot}-0{k}" for k in (2, 3, 4)]


@pytest.mark.parametrize(
    ("edit", "expected", "code"),
    [
        (lambda t: t.replace('"certificate": {', '"certificate": {"x": 1}, "certificate": {', 1),
         "key 'certificate' appears twice", 2),
        (lambda t: t.replace('"algorithm": "Ed25519"', '"algorithm": "RSA"'), "algorithm 'RSA'",
         5),
        (lambda t: t.replace('"value": "', '"value": " ', 1), "signature does not verify", 5),
        (lambda t: __import__("re").sub(r'"value": "[^"]*"', '"value": 12', t),
         "a base64 text value", 5),
        (lambda t: t.replace('"mfd_um": ', '"mfd_um": NaN, "x": ', 1), "NaN is not a JSON", 2),
    ],
)  # fmt: skip
def test_loose_certificate_files_are_refused_with_a_reason(lab, tmp_path, edit, expected, code):
    """A file that is not (strict) JSON is bad input, exit 2; a signed certificate whose
    signature fails verifies nothing, exit 5."""
    text = certs(lab)[0].read_text()
    bad = tmp_path / "bad.json"
    bad.write_text(edit(text))
    assert bad.read_text() != text
    r = verify(lab, bad)
    assert r.returncode == code and expected in r.stderr and "Traceback" not in r.stderr, (
        r.returncode,
        r.stderr,
    )


def test_a_revocation_list_in_the_wrong_place_is_named(lab, tmp_path):
    d = fresh_copy(lab, tmp_path)
    cert = certs(d)[0]
    r = run("revoke", cert.stem, "--reason", "x", *STORE, "--key", KEY, cwd=d)
    assert r.returncode == 0, r.stderr
    rev = d / "demo-out" / "fibergrade-data" / "revocations.json"
    r = verify(d, rev)
    assert r.returncode == 2 and "a revocation list, not a certificate" in r.stderr
    assert run("keys", "init", "--dir", "other", cwd=d).returncode == 0
    from fibergrade.certificates import sign
    from fibergrade.keys import load_private_key

    doc = json.loads(rev.read_text())["revocations"]
    forged = d / "forged-list.json"
    forged.write_text(json.dumps(sign(doc, load_private_key(d / "other" / "lab.key"))))
    r = verify(d, certs(d)[1], "--revocations", str(forged))
    assert r.returncode == 5 and "forged-list.json: the revocation list fails its own check: " \
        "signed with key" in r.stderr, r.stderr  # fmt: skip


def test_a_calibration_record_of_another_instrument_is_refused(lab, tmp_path):
    """A certificate (re-signed with the lab key, as an insider could) naming another
    instrument's calibration record: the record is intact, but not this lot's."""
    from fibergrade.certificates import sign
    from fibergrade.keys import load_private_key
    from fibergrade.store import Store

    d = fresh_copy(lab, tmp_path)
    store = Store.open(d / "demo-out" / "fibergrade-data", create=False)
    cals = {p["instrument_id"]: dg for dg, p in store.results("calibration")}
    assert len(cals) >= 2, "the demo calibrates two analysers"
    for cert in certs(d):
        doc = json.loads(cert.read_text())["certificate"]
        mine = doc["calibration"]["record"]
        other = next((dg for dg in cals.values() if dg != mine), None)
        if mine and other:
            break
    forged = dict(doc, calibration=dict(doc["calibration"], record=other))
    fake = d / "other-cal.json"
    fake.write_text(json.dumps(sign(forged, load_private_key(d / KEY))))
    r = verify(d, fake, *STORE)
    assert r.returncode == 5 and "is of instrument" in r.stderr, r.stderr


def test_export_writes_an_issued_certificate_again_and_stale_files_go(lab, tmp_path):
    """A run killed after storing a certificate and before renaming its file into place
    leaves the lot certified with no file for it (and temporary files): --export writes
    the stored, signed certificate again, and the next certify clears the leftovers."""
    d = fresh_copy(lab, tmp_path)
    cert = certs(d)[0]
    lot = json.loads(cert.read_text())["certificate"]["lot"]["lot_id"]
    original = cert.read_bytes()
    cert.unlink()
    old = [d / CERTS / f".{cert.name}.0123.tmp", d / CERTS / ".fibergrade-pending-0123"]
    old[0].write_text("{")
    old[1].mkdir()
    young = d / CERTS / f".{cert.name}.4567.tmp"  # another store's run may be writing it
    young.write_text("{")
    for p in old:
        os.utime(p, (time.time() - 7200, time.time() - 7200))
    r = run("certify", lot, *STORE, "--key", KEY, "--out", CERTS, cwd=d)
    assert r.returncode == 5 and "pass --export" in r.stderr
    r = run("certify", lot, "--export", *STORE, "--key", KEY, "--out", CERTS, "--json", cwd=d)
    assert r.returncode == 0, r.stderr
    written = json.loads(r.stdout)
    assert [w["certificate_number"] for w in written] == [cert.stem]
    assert json.loads(cert.read_bytes()) == json.loads(original)
    assert Path(d / written[0]["pdf"]).read_bytes().startswith(b"%PDF")
    assert list((d / CERTS).glob(".*")) == [young]  # the killed run's old leftovers are gone
    assert verify(d, cert, *STORE).returncode == 0


def test_a_missing_file_fails_alone_and_the_batch_goes_on(lab, tmp_path):
    """verify --json over a batch in which one file is missing: every file is reported,
    the missing one as failed, and the exit code says a file could not be read (2)."""
    good = certs(lab)[:2]
    missing = tmp_path / "FG-NONE-01.json"
    r = verify(lab, good[0], str(missing), good[1], *STORE, "--json")
    assert r.returncode == 2, r.stderr
    reports = json.loads(r.stdout)
    assert [x["ok"] for x in reports] == [True, False, True]
    keys = {"file", "certificate_number", "ok", "checks", "problems", "notes"}
    assert all(set(x) == keys for x in reports)  # one shape, passing or failing
    assert reports[1]["file"] == str(missing) and "no such file" in reports[1]["problems"][0]
    r = verify(lab, good[0], str(missing), *STORE)
    assert r.returncode == 2 and "verifies" in r.stdout and "no such file" in r.stderr


def test_a_segment_file_placed_by_hand_is_never_certified(lab, tmp_path):
    """The store indexes any valid segment file it finds in segments/ (that is how it
    recovers from a crash), so one placed by hand can be graded; but no certificate is
    issued on raw data whose import the audit log does not record."""
    import numpy as np

    from fibergrade.measurements import FibreLots, LotMeta
    from fibergrade.store import Store

    d = fresh_copy(lab, tmp_path)
    rng = np.random.default_rng(11)
    fibres = rng.lognormal(np.log(15.3), 0.19, 3000).astype(np.float32)
    other = Store.open(tmp_path / "elsewhere")
    meta = {"PLANTED-1": LotMeta("PLANTED-1", declared_type="cashmere")}
    out = other.import_fibres(
        FibreLots(("PLANTED-1",), np.array([0, 3000]), fibres), meta,
        source_name="planted.csv", source_digest="cd" * 32,
    )  # fmt: skip
    shutil.copy(other.segment_path(out.segment), d / "demo-out" / "fibergrade-data" / "segments")
    r = run("grade", "PLANTED-1", *STORE, "--uncalibrated", "--json", cwd=d)
    assert r.returncode == 0, r.stderr
    assert "1 lot (PLANTED-1) comes from segments whose import" in r.stderr
    r = run("override", "PLANTED-1", "--reason", "test", *STORE, cwd=d)  # in case it is flagged
    assert r.returncode == 0, r.stderr
    r = run("certify", "PLANTED-1", *STORE, "--key", KEY, "--out", "o", cwd=d)
    assert r.returncode == 5 and "is not recorded as imported in the audit log" in r.stderr
    assert not (d / "o").exists() or not list((d / "o").iterdir())  # nor a staging folder
    r = run("audit", "verify", *STORE, cwd=d)
    assert r.returncode == 0 and "planted.csv" in r.stdout


def test_verify_store_checks_the_checkpoint_signatures_with_the_lab_key(lab, tmp_path):
    """Deleting entries and redoing the chain after them leaves a consistent chain whose
    checkpoints no longer verify: verify --store, which holds the lab's public key, checks
    them (it checked the chain only)."""
    from fibergrade.audit import canonical_json, entry_hash

    d = fresh_copy(lab, tmp_path)
    log = d / "demo-out" / "fibergrade-data" / "audit" / "log.jsonl"
    entries = [json.loads(x) for x in log.read_text().splitlines()]
    cut = next(i for i, e in enumerate(entries) if e["action"] == "grade")
    del entries[cut]  # an entry before the certificates' positions
    prev = entries[cut - 1]["hash"]
    for seq, e in enumerate(entries[cut:], start=cut):
        e.update(seq=seq, prev=prev)
        if e["action"] == "checkpoint" and e["signed_seq"] >= cut:
            e["signed_seq"] -= 1
            e["signed_hash"] = entries[e["signed_seq"]]["hash"]
        e["hash"] = prev = entry_hash(e)
    log.write_text("".join(canonical_json(e).decode() + "\n" for e in entries))
    head = log.with_name("head.json")
    head.write_text(json.dumps({"seq": len(entries) - 1, "hash": prev}))
    r = run("audit", "verify", *STORE, cwd=d)  # without the key the chain looks whole
    assert r.returncode == 0, r.stderr
    r = verify(d, certs(d)[0], *STORE)
    assert r.returncode == 5 and "checkpoint signature does not verify" in r.stderr, r.stderr


def test_lot_metadata_edited_in_the_manifest_is_found(lab, tmp_path):
    """manifest.json is an unsigned index: an instrument or declared type edited there
    changed which calibration and standard graded a lot, and what its certificate said.
    The segments' own metadata (under their SHA-256) is what counts."""
    d = fresh_copy(lab, tmp_path)
    cert = certs(d)[0]
    lot = json.loads(cert.read_text())["certificate"]["lot"]["lot_id"]
    path = d / "demo-out" / "fibergrade-data" / "manifest.json"
    doc = json.loads(path.read_text())
    meta = next(x["meta"] for s in doc["segments"] for x in s["lots"] if x["meta"]["lot_id"] == lot)
    was = meta["declared_type"]
    meta["declared_type"] = now = "cashmere" if was != "cashmere" else "baby-camel"
    path.write_text(json.dumps(doc))
    r = verify(d, cert, *STORE)
    assert r.returncode == 5 and f"declared_type {now!r} (segment: {was!r})" in r.stderr
    r = run("certify", lot, *STORE, "--key", KEY, "--reissue", "--reason", "x", "--out", "o",
            cwd=d)  # fmt: skip
    assert r.returncode == 3 and "the manifest was altered" in r.stderr, r.stderr
    r = run("audit", "verify", *STORE, cwd=d)
    assert r.returncode == 3 and f"lot {lot} differs from its segment" in r.stderr
    path.unlink()  # rebuilt from the segments
    assert verify(d, cert, *STORE).returncode == 0


def test_store_records_not_signed_by_the_lab_cannot_decide_standing(lab, tmp_path):
    """Revocations are signed in the store as well, and a newer certificate must verify
    with the lab key before it counts as superseding: records placed by hand (even with
    forged log entries for them) are named as tampering, never taken as the lab's word."""
    from fibergrade.audit import AuditLog
    from fibergrade.store import Store

    d = fresh_copy(lab, tmp_path)
    first, second = certs(d)[:2]
    st = Store.open(d / "demo-out" / "fibergrade-data", create=False)
    forged_rev = {
        "kind": "revocation", "certificate_number": first.stem, "certificate_sha256": "x",
        "reason": "forged", "revoked_at": "2026-01-01T00:00:00+00:00",
    }  # fmt: skip
    st.put_result("revocation", forged_rev)  # through the store: logged like a real one
    r = verify(d, first, *STORE)
    assert r.returncode == 5 and "is not signed by the lab key" in r.stderr, r.stderr
    d = fresh_copy(lab, tmp_path / "b")
    second = certs(d)[1]
    st = Store.open(d / "demo-out" / "fibergrade-data", create=False)
    env = json.loads(second.read_text())
    doc = dict(env["certificate"], certificate_number=second.stem[:-2] + "02", client="M")
    st.put_result("certificate", {"certificate": doc, "signature": env["signature"]})
    assert AuditLog(st.root).verify().entries > 0
    r = verify(d, second, *STORE)
    assert "newer certificate" in r.stderr and "not signed by the lab key" in r.stderr
    lot = env["certificate"]["lot"]["lot_id"]
    r = run("certify", lot, "--export", *STORE, "--key", KEY, "--out", "o", cwd=d)
    assert r.returncode == 5 and "does not verify with the lab key" in r.stderr, r.stderr
    assert not (d / "o").exists() or not list((d / "o").glob("FG-*"))


def test_verify_recomputes_the_screening_verdict(lab, tmp_path):
    """A grade record is an unsigned file: one calling a flagged lot clean (written through
    the store, so logged like a real one) lets certify sign without an override; verify
    --store screens the lot again and names the difference."""
    from fibergrade.store import Store
    from fibergrade.workflow import latest_grades

    d = fresh_copy(lab, tmp_path)
    st = Store.open(d / "demo-out" / "fibergrade-data", create=False)
    flagged = next(
        rec
        for rec in latest_grades(st).values()
        if rec["grade"] and (rec.get("screening") or {}).get("verdict") not in ("clean", None)
    )
    was = flagged["screening"]["verdict"]
    forged = {k: v for k, v in flagged.items() if k != "result_id"}
    forged["screening"] = dict(forged["screening"], verdict="clean", reasons=[])
    st.put_result(
        "grade", {"kind": "grade", "created_at": "2099-01-01T00:00:00+00:00", "lots": [forged]}
    )
    lot = forged["lot_id"]
    r = run("certify", lot, *STORE, "--key", KEY, "--out", "o", "--no-pdf", "--json", cwd=d)
    assert r.returncode == 0, r.stderr
    cert = d / json.loads(r.stdout)[0]["json"]
    r = verify(d, cert, *STORE)
    assert r.returncode == 5 and f"screening: certificate says clean, the raw data give {was}" \
        in r.stderr, r.stderr  # fmt: skip
    r = verify(d, certs(d)[0], *STORE, "--json")
    assert r.returncode == 0 and "screening" in {c["check"] for c in json.loads(r.stdout)["checks"]}
    # one certificate through the library (screened at once, not batched), and a batch
    from fibergrade.certificates import VerificationFailed
    from fibergrade.keys import load_public_key
    from fibergrade.verification import verify_certificate, verify_certificates

    pub = load_public_key(d / PUB)
    expected = f"certificate says clean, the raw data give {was}"
    with pytest.raises(VerificationFailed, match=expected):
        verify_certificate(cert, pub, store=st)
    good = certs(d)[0]
    out = verify_certificates([good, cert, good], pub, store=st)
    assert [type(o).__name__ for o in out] == ["VerifyReport", "VerificationFailed", "VerifyReport"]


def test_a_signed_certificate_is_not_a_signed_revocation_record(lab, tmp_path):
    """Revocation records carry their own schema: a certificate document with its own
    (valid) signature, stored as a revocation record, revokes nothing and is named."""
    from fibergrade.store import Store

    d = fresh_copy(lab, tmp_path)
    st = Store.open(d / "demo-out" / "fibergrade-data", create=False)
    env = json.loads(certs(d)[2].read_text())
    st.put_result("revocation", {**env["certificate"], "certificate_sha256": "x", "reason": "r",
                                 "revoked_at": "2026", "signature": env["signature"]})  # fmt: skip
    r = verify(d, certs(d)[2], *STORE)
    assert r.returncode == 5 and "is not signed by the lab key" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    before = sorted(p.name for p in (st.root / "results" / "revocation").iterdir())
    r = run("revoke", certs(d)[3].stem, "--reason", "x", *STORE, "--key", KEY, cwd=d)
    assert r.returncode == 3 and "not signed by the lab key" in r.stderr, r.stderr
    assert sorted(p.name for p in (st.root / "results" / "revocation").iterdir()) == before


def test_a_revocation_list_that_cannot_be_written_revokes_nothing_and_can_be_written_again(
    lab, tmp_path
):
    """revoke reserves the list's file before storing anything: a folder or an unwritable
    place as --out refuses the revocation (nothing logged). --list-only writes the signed
    list again, revoking nothing; usage mistakes are usage errors (exit 2)."""
    d = fresh_copy(lab, tmp_path)
    cert = certs(d)[0]
    log = d / "demo-out" / "fibergrade-data" / "audit" / "log.jsonl"
    before = log.read_bytes()
    (d / "adir.json").mkdir()
    for target in ("adir.json", "/proc/no-such/rev.json"):
        r = run("revoke", cert.stem, "--reason", "x", *STORE, "--key", KEY, "--out", target, cwd=d)
        assert r.returncode == 2 and "revocation list" in r.stderr, r.stderr
        assert log.read_bytes() == before  # nothing recorded, no checkpoint
    assert verify(d, cert, *STORE).returncode == 0  # it still stands
    assert list(d.glob(".*.tmp")) == []
    (d / "a-file").write_text("x")  # certify's --out that cannot be a folder: bad input too
    r = run("certify", cert.stem.rsplit("-", 1)[0][3:], *STORE, "--key", KEY, "--out",
            "a-file", "--reissue", "--reason", "x", cwd=d)  # fmt: skip
    assert r.returncode == 2 and "cannot be the certificates' folder" in r.stderr, r.stderr
    assert log.read_bytes() == before
    r = run("revoke", cert.stem, "--reason", "x", *STORE, "--key", KEY, "--out", "l1.json", cwd=d)
    assert r.returncode == 0, r.stderr
    r = run("revoke", "--list-only", *STORE, "--key", KEY, "--out", "l2.json", "--json", cwd=d)
    assert r.returncode == 0, r.stderr
    assert (
        json.loads(r.stdout)["entries"] == 1 and json.loads(r.stdout)["certificate_number"] is None
    )
    first, again = (json.loads((d / f).read_text()) for f in ("l1.json", "l2.json"))
    assert first["revocations"]["entries"] == again["revocations"]["entries"]
    r = verify(d, cert, "--revocations", "l2.json")
    assert r.returncode == 5 and "revoked" in r.stderr
    for args in (("--list-only", "--reason", "x"), (cert.stem,), ("--reason", "x")):
        r = run("revoke", *args, *STORE, "--key", KEY, cwd=d)
        assert r.returncode == 2 and "--list-only" in r.stderr, (args, r.stderr)


def test_certify_names_a_lot_the_store_does_not_hold(lab, tmp_path):
    """An unknown lot id is said to be not in the store, as grade and show say it (it was
    'not graded yet; run fibergrade grade first', which cannot help)."""
    d = fresh_copy(lab, tmp_path)
    r = run("certify", "NOPE-1", *STORE, "--key", KEY, "--out", "o", "--no-pdf", cwd=d)
    assert r.returncode == 3 and "not in the store: 'NOPE-1'" in r.stderr, r.stderr
    assert "not graded" not in r.stderr


@pytest.mark.parametrize(
    ("cal", "text"),
    [
        ({"uncalibrated": True}, "NONE: graded uncalibrated"),
        ({"record": "ab" * 32, "range_flag": None}, "ab" * 16),
        ({"record": "ab" * 32, "range_flag": "below"}, "MFD below the calibrated range"),
        ({"record": "ab" * 32, "range_flag": "above"}, "MFD above the calibrated range"),
    ],
)
def test_the_pdf_states_an_mfd_outside_the_calibrated_range(cal, text):
    from fibergrade.certificate_pdf import _calibration_text

    assert text in _calibration_text({"uncalibrated": False} | cal)


def test_the_pdf_states_what_an_auditor_needs_and_never_contradicts_the_criteria(lab):
    """The page lacked the received and measured dates, the standard's digest and
    citation, the cut, the screening model and probability, the override's actor, the
    calibration's date, range and reference set, min/max and curvature, and cut the
    calibration id to 32 hex; and it printed "CV (%) 24.0" beside "24.02 <= 24 FAIL"."""
    from fibergrade.certificate_pdf import figure_rows, lot_rows, screening_text
    from fibergrade.store import Store

    doc = json.loads(certs(lab)[0].read_text())["certificate"]
    store = Store.open(lab / "demo-out" / "fibergrade-data", create=False)
    cal = store.get_result("calibration", doc["calibration"]["record"])
    rows = dict(lot_rows(doc, cal))
    assert rows["Received / measured"] == f"{doc['lot']['received_at']} / " + str(
        doc["lot"]["measured_at"]
    )
    assert doc["calibration"]["record"] in rows["Calibration"]  # all 64 hex
    lo, hi = cal["range_um"]
    assert f"range {lo:g}-{hi:g} um" in rows["Calibration record"]
    assert cal["reference"]["id"] in rows["Calibration record"]
    assert cal["created_at"][:10] in rows["Calibration record"]
    figures = dict(figure_rows(doc))
    assert "> 30 um by mass (%)" in figures and "Curvature (deg/mm)" in figures
    assert figures["Min / max (um)"] == f"{doc['figures']['min_um']} / {doc['figures']['max_um']}"
    text = screening_text(doc)
    assert f"probability {doc['screening']['probability']}" in text
    assert doc["screening"]["model_digest"] in text and "model screening-" in text
    overridden = dict(doc["screening"], override={"reason": "SEM", "actor": "j.doe", "record": ""})
    assert "recorded by j.doe: SEM" in screening_text(dict(doc, screening=overridden))
    # a figure a criterion judged shows the value it was judged on, as the criteria line does
    crit = {"grade": "g", "name": "cv", "figure": "cv_pct", "op": "<=", "limit": 24.0,
            "value": 24.0237924431317, "passed": False}  # fmt: skip
    near = dict(doc, figures=dict(doc["figures"], cv_pct=24.0), grade={"id": None,
                "criteria": [crit]})  # fmt: skip
    assert dict(figure_rows(near))["CV (%)"] == "24.0  (graded on 24.02)"
    # and only then: a figure that reads as the value judged needs no note ("15.3" is 15.30)
    same = dict(crit, value=15.3012, passed=True)
    plain = dict(doc, figures=dict(doc["figures"], cv_pct=15.3), grade={"id": None,
                 "criteria": [same]})  # fmt: skip
    assert dict(figure_rows(plain))["CV (%)"] == "15.3"
    pdf = certs(lab)[0].with_suffix(".pdf")
    if shutil.which("pdftotext") and shutil.which("pdfinfo"):  # poppler, where installed
        info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True).stdout
        assert [ln.split()[-1] for ln in info.splitlines() if ln.startswith("Pages:")] == ["1"]
        page = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True)
        assert "Received / measured" in page.stdout and doc["standard"]["digest"] in page.stdout


def test_verify_takes_the_store_from_the_environment_as_every_command_does(lab):
    cert = certs(lab)[0]
    env = os.environ | {"FIBERGRADE_STORE": str(lab / "demo-out" / "fibergrade-data")}
    r = subprocess.run(
        [EXE, "verify", str(cert), "--public-key", PUB], capture_output=True, text=True,
        cwd=lab, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert r.returncode == 0 and "recomputation" in r.stdout and "no --store" not in r.stdout


@pytest.mark.parametrize("lot", ["A/../x", "a\\b", "x y", "Ö-1", "a:b", "a\nb"])
def test_a_certificate_number_that_cannot_name_a_file_is_refused(lot):
    """Imports refuse such lot ids now; a lot stored before that rule, or through the
    store's API, is refused a certificate rather than written outside --out."""
    from fibergrade.certificates import CertificateRefused, next_certificate

    with pytest.raises(CertificateRefused, match="cannot name a file"):
        next_certificate([], set(), f"FG-{lot}", f"lot {lot}", None)
    assert next_certificate([], set(), "FG-MN-2024.0117_a", "lot x", None) == (
        "FG-MN-2024.0117_a-01",
        None,
    )


def test_a_run_naming_no_lots_leaves_out_one_whose_id_cannot_name_a_file(lab, tmp_path):
    """A clean graded lot stored before the id rule (here through the store's API) whose id
    cannot name a file used to refuse the whole default certify run, for good (raw data
    stay): it is now left out with a note, and the other lots are certified."""
    import numpy as np

    from fibergrade.measurements import FibreLots, LotMeta
    from fibergrade.store import Store

    d = fresh_copy(lab, tmp_path)
    rng = np.random.default_rng(11)
    table = FibreLots(
        ("lot 7", "GOOD-7"),
        np.array([0, 3000, 6000]),
        rng.lognormal(np.log(15.3), 0.19, 6000).astype(np.float32),
    )
    meta = {x: LotMeta(x, declared_type="cashmere") for x in table.lot_ids}
    store = Store.open(d / "demo-out" / "fibergrade-data")
    store.import_fibres(table, meta, source_name="old.csv", source_digest="cd" * 32)
    r = run("grade", "lot 7", "GOOD-7", *STORE, "--uncalibrated", "--json", cwd=d)
    assert r.returncode == 0, r.stderr
    recs = {x["lot_id"]: x for x in json.loads(r.stdout)}
    assert all(x["screening"]["verdict"] == "clean" and x["grade"] for x in recs.values())
    r = run("certify", *STORE, "--key", KEY, "--out", "o", "--no-pdf", "--json", cwd=d)
    assert r.returncode == 0, r.stderr
    assert [x["certificate_number"] for x in json.loads(r.stdout)] == ["FG-GOOD-7-01"]
    assert "lot lot 7 left out: its id cannot name a certificate file" in r.stderr
    r = run("certify", "lot 7", *STORE, "--key", KEY, "--out", "o", "--no-pdf", cwd=d)
    assert r.returncode == 5 and "cannot name a file" in r.stderr  # named: refused


def test_a_certificate_screened_with_a_retired_model_still_verifies(lab, tmp_path):
    """models/ was rebuilt (another digest): a certificate screened with the model before
    is screened again with that one, kept in models/archive, instead of failing."""
    from fibergrade.screening import ModelError, default_model_dir, load_model_by_digest

    archived = sorted((default_model_dir() / "archive").glob("screening-*"))
    assert archived, "the model shipped before the rebuild is kept"
    old = json.loads((archived[0] / "model-card.json").read_text())["model_digest"]
    assert load_model_by_digest(old).digest == old
    with pytest.raises(ModelError, match="keeps no retired one"):
        load_model_by_digest("0" * 64)
    d = fresh_copy(lab, tmp_path)
    lot = json.loads(certs(d)[0].read_text())["certificate"]["lot"]["lot_id"]
    env = os.environ | {"FIBERGRADE_MODEL_DIR": str(archived[0])}

    def run_old(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([EXE, *args], capture_output=True, text=True, cwd=d, env=env,
                              timeout=300, check=False)  # fmt: skip

    assert run_old("grade", lot, *STORE).returncode == 0
    r = run_old("certify", lot, *STORE, "--key", KEY, "--out", "o", "--no-pdf", "--reissue",
                "--reason", "regraded", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    issued = d / json.loads(r.stdout)[0]["json"]
    assert json.loads(issued.read_text())["certificate"]["screening"]["model_digest"] == old
    r = verify(d, issued, *STORE)  # with the current software and models/
    assert r.returncode == 0, r.stderr
    assert f"screened again with the retired model {old[:12]}" in r.stdout


@pytest.fixture(scope="module")
def forged(lab, tmp_path_factory) -> dict[str, Path]:
    """A copy of the lab whose dishonest staff issued, through the store (stored, logged,
    checkpointed, signed with the lab key), certificates the store does not support; the
    certificate files by what was forged."""
    import copy

    from fibergrade.audit import AuditLog
    from fibergrade.certificates import (
        build_certificate,
        certify_lots,
        publish,
        record_override,
        sign,
    )
    from fibergrade.distribution import DEFAULT_CUT_UM
    from fibergrade.grading import grade, load_standard
    from fibergrade.keys import load_private_key
    from fibergrade.screening import load_model, screening_entries
    from fibergrade.segment_tasks import summarise_table
    from fibergrade.store import Store
    from fibergrade.workflow import latest_grades

    d = tmp_path_factory.mktemp("forged") / "lab"
    shutil.copytree(lab, d)
    st = Store.open(d / "demo-out" / "fibergrade-data", create=False)
    key = load_private_key(d / KEY)
    out = d / "forged"
    out.mkdir()
    made: dict[str, Path] = {}
    # another lot's metadata: origin and GI, client, declared type, instrument
    doc = json.loads((d / CERTS / "FG-20261120-0005-01.json").read_text())["certificate"]
    doc |= {
        "certificate_number": "FG-20261120-0005-02",
        "supersedes": "FG-20261120-0005-01",
        "reissue_reason": "client name corrected",
        "origin_claim": {"country": "IT", "region": "Biella", "geographical_indication": "PDO-X"},
        "lot": doc["lot"] | {"client": "Someone Else", "declared_type": "baby-camel"},
        "instrument": {"id": "OFDA-REAL-9"},
        "audit_position": AuditLog(st.root).position().to_dict(),
    }
    made["metadata"] = publish(st, out, doc["certificate_number"], sign(doc, key))
    AuditLog(st.root).checkpoint(key)
    # grade records written through the store (so logged), then certified by certify
    graded = latest_grades(st)
    lots = []
    rec = dict(graded["20261120-0003"], calibration_range_flag="above")  # in range
    lots.append(rec)
    rec = copy.deepcopy(graded["20261120-0004"])  # criteria (value, limit, op, passed)
    for c in rec["criteria"]:
        if c["figure"] == "coarse_mass_pct":
            c |= {"value": 0.01, "limit": 5.0}
        if c["figure"] == "cv_pct":
            c |= {"op": "<", "limit": 30.0, "passed": False}
    lots.append(rec)
    # lot 0006 graded raw, as without a valid calibration, but recorded as calibrated:
    # every figure, criterion and the screening are those of its raw diameters
    rec = dict(graded["20261120-0006"])
    raw = st.read_lot(rec["lot_id"])
    summary = summarise_table(raw, DEFAULT_CUT_UM, "fast")
    std = load_standard(rec["standard"]["id"])
    rec |= summary.to_records()[0] | grade(summary, std).records()[0]
    rec |= {"calibration": None, "uncalibrated": False, "calibration_range_flag": None}
    rec["screening"] = screening_entries(load_model(), summary, [rec["declared_type"]])[0]
    lots.append(rec)
    for rec in lots:
        rec.pop("result_id")
    st.put_result("grade", {"kind": "grade", "created_at": "2099-01-01T00:00:00+00:00",
                            "lots": lots})  # fmt: skip
    issued = certify_lots(
        st, [r["lot_id"] for r in lots], key, out, reissue_reason="regraded", pdf=False
    ).issued
    for what, cert in zip(("range flag", "criteria", "calibrated"), issued, strict=True):
        made[what] = cert.json_path
    # lot 0020, flagged, certified over another lot's override
    flagged = graded["20261120-0020"]
    assert flagged["screening"]["verdict"] != "clean"
    other = record_override(st, "20261120-0001", "SEM confirmed cashmere", "lab manager")
    doc = build_certificate(
        st,
        flagged,
        lab_name="x",
        number="FG-20261120-0020-01",
        supersedes=None,
        audit_pos=AuditLog(st.root).position(),
        override=st.get_result("override", other) | {"record": other},
        source_names={s.digest: s.source_name for s in st.segments()},
    )
    made["override"] = publish(st, out, doc["certificate_number"], sign(doc, key))
    AuditLog(st.root).checkpoint(key)
    return made


def test_a_certificate_must_state_the_lot_metadata_of_its_raw_segment(forged):
    """Lot, client, declared type, dates, origin claim and instrument come from the lot's
    metadata in its raw segment (covered by its SHA-256): a certificate, even one the lab
    signed and stored, that states others fails, naming each field and both values."""
    d = forged["metadata"].parent.parent
    was = json.loads((d / CERTS / "FG-20261120-0005-01.json").read_text())["certificate"]
    r = verify(d, forged["metadata"], *STORE, "--json")
    assert r.returncode == 5, r.stderr
    problems = json.loads(r.stdout)["problems"]
    said = {
        "lot.declared_type": ("baby-camel", was["lot"]["declared_type"]),
        "lot.client": ("Someone Else", was["lot"]["client"]),
        "origin_claim.country": ("IT", was["origin_claim"]["country"]),
        "origin_claim.region": ("Biella", was["origin_claim"]["region"]),
        "origin_claim.geographical_indication": (
            "PDO-X",
            was["origin_claim"]["geographical_indication"],
        ),
        "instrument.id": ("OFDA-REAL-9", was["instrument"]["id"]),
    }
    assert problems == [
        f"{k}: certificate says {a!r}, the store gives {b!r}" for k, (a, b) in said.items()
    ], problems  # nothing else: it stands in the store, and its figures are the lot's
    # the checks it passed are reported too (a failing report kept none)
    checks = {c["check"] for c in json.loads(r.stdout)["checks"]}
    assert {"signature", "standing in the store", "audit log", "raw segment"} <= checks
    assert {"recomputation", "screening"} <= checks


def test_what_grading_recorded_is_recomputed_not_taken_from_the_grade_record(forged):
    """Grade records are files written through the store: ones that hide a calibration
    range flag, alter the criteria, or call a lot graded on raw diameters calibrated, were
    certified by certify. Verification recomputes the criteria (value, limit, op, passed)
    and the range flag, and a certificate that says calibrated must name a calibration
    record; an override must be this lot's logged override record."""
    d = forged["metadata"].parent.parent
    which = ("range flag", "criteria", "calibrated", "override")
    r = verify(d, *(forged[w] for w in which), *STORE, "--json")
    assert r.returncode == 5, r.stderr
    found = dict(zip(which, (x["problems"] for x in json.loads(r.stdout)), strict=True))
    assert found["range flag"] == [
        "calibration.range_flag: certificate says 'above', raw data give None"
    ]
    was = json.loads((d / CERTS / "FG-20261120-0004-01.json").read_text())["certificate"]
    mass, cv = (
        next(c for c in was["grade"]["criteria"] if c["figure"] == f)
        for f in ("coarse_mass_pct", "cv_pct")
    )
    i, j = was["grade"]["criteria"].index(mass), was["grade"]["criteria"].index(cv)
    assert mass["value"] != 0.01 and cv["passed"] is True
    assert found["criteria"] == [
        f"grade.criteria[{i}] (cashmere: fibres over 30 um, by mass).limit: certificate says "
        f"5.0, the standard gives {mass['limit']!r}",
        f"grade.criteria[{i}] (cashmere: fibres over 30 um, by mass).value: certificate says "
        f"0.01, raw data give {mass['value']!r}",
        f"grade.criteria[{j}] (cashmere: coefficient of variation).op: certificate says '<', "
        f"the standard gives {cv['op']!r}",
        f"grade.criteria[{j}] (cashmere: coefficient of variation).limit: certificate says "
        f"30.0, the standard gives {cv['limit']!r}",
        f"grade.criteria[{j}] (cashmere: coefficient of variation).passed: certificate says "
        "False, raw data give True",
    ], found["criteria"]
    assert len(found["calibrated"]) == 1, found["calibrated"]  # its figures are the raw ones
    assert found["calibrated"][0].startswith(
        "calibration: the certificate says uncalibrated False but names no calibration record"
    )
    doc = json.loads(forged["override"].read_text())["certificate"]
    assert found["override"] == [
        f"screening.override: record {doc['screening']['override']['record'][:12]} is the "
        "override of lot '20261120-0001', not of lot '20261120-0020'"
    ], found["override"]


def test_verify_exit_codes_follow_the_table_and_a_batch_goes_on(lab, tmp_path):
    """README's exit codes: a path that cannot be read or is not a certificate (missing, a
    folder, not JSON, a missing --revocations file) is bad input, 2; a screening model that
    cannot be loaded, 4; a certificate failing verification, 5. A batch checks every file
    and exits with the most serious code of its files."""
    good = certs(lab)[0]
    not_json = tmp_path / "not.json"
    not_json.write_text("{")
    forged = tmp_path / "forged.json"
    forged.write_text(good.read_text().replace('"value": "', '"value": " ', 1))
    r = verify(lab, good, str(tmp_path), str(not_json), "--json")
    assert r.returncode == 2, r.stderr
    reports = json.loads(r.stdout)
    assert [x["ok"] for x in reports] == [True, False, False]
    assert "a folder, not a certificate file" in reports[1]["problems"][0]
    assert "not a JSON certificate" in reports[2]["problems"][0]
    r = verify(lab, good, str(tmp_path / "none.json"), str(forged))
    assert r.returncode == 5 and "verifies" in r.stdout  # the most serious of 0, 2 and 5
    assert "no such file" in r.stderr and "signature does not verify" in r.stderr
    # a --revocations file that is not there: every certificate is still checked (JSON)
    r = verify(lab, good, good, "--revocations", str(tmp_path / "revocations.json"), "--json")
    assert r.returncode == 2, r.stderr
    for rep in json.loads(r.stdout):
        assert not rep["ok"] and rep["problems"] == [
            f"revocation list {tmp_path / 'revocations.json'}: no such file"
        ]
        # what was checked, and what was not, is kept in a failing report
        assert [c["check"] for c in rep["checks"]] == ["signature"]
        assert rep["notes"][0].startswith("revocation and supersession were NOT checked")
    empty = tmp_path / "models"
    empty.mkdir()
    r = subprocess.run(
        [EXE, "verify", str(good), "--public-key", PUB, *STORE], capture_output=True,
        text=True, cwd=lab, env=os.environ | {"FIBERGRADE_MODEL_DIR": str(empty)},
        timeout=300, check=False,
    )  # fmt: skip
    assert r.returncode == 4 and "no screening model file" in r.stderr, (r.returncode, r.stderr)


def test_a_signed_certificate_not_of_its_schema_fails_without_a_traceback(lab, tmp_path):
    """Signed with the lab key, but not what certify writes: a field added (verification
    would not check it), one left out (without ``screening`` no verdict was recomputed),
    a part of the wrong type: each fails, named, and none ends in a traceback."""
    from fibergrade.certificates import sign
    from fibergrade.keys import load_private_key

    key = load_private_key(lab / KEY)
    doc = json.loads(certs(lab)[0].read_text())["certificate"]
    variants = {
        "added": doc | {"organic": True},
        "left out": {k: v for k, v in doc.items() if k != "screening"},
        "no verdict": doc | {"screening": doc["screening"] | {"verdict": None}},
        "wrong type": doc | {"lot": "20261120-0001"},
        "inner type": doc | {"lot": doc["lot"] | {"lot_id": ["20261120-0001"]}},
    }
    paths = []
    for name, forged in variants.items():
        paths.append(tmp_path / f"{name.replace(' ', '-')}.json")
        paths[-1].write_text(json.dumps(sign(forged, key)))
    r = verify(lab, *paths, *STORE, "--json")
    assert r.returncode == 5 and "Traceback" not in r.stderr, r.stderr
    found = dict(zip(variants, (x["problems"] for x in json.loads(r.stdout)), strict=True))
    # the other checks still run: this number's stored certificate is another document
    assert found["added"] == [
        "field 'organic' is not part of schema fibergrade-certificate/1",
        f"the store's certificate {doc['certificate_number']} is another document: this one "
        "differs from what the store issued under that number",
    ]
    assert found["left out"][0] == "field 'screening' is missing (schema fibergrade-certificate/1)"
    assert "screening: the certificate states no verdict; none is recomputed" in found["left out"]
    assert found["wrong type"] == ["field 'lot' is str, not an object"]
    assert "screening: the certificate states no verdict; none is recomputed" in found["no verdict"]
    assert any(
        p.startswith("the certificate's fields are not those of fibergrade-certificate/1: ")
        for p in found["inner type"]
    ), found["inner type"]
