"""Carcass certificates through the fibre certificate machinery: issue, refuse, trace, and
verification that recomputes the grading and checks the stored records."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

EXE = shutil.which("fibergrade", path=str(Path(sys.executable).parent)) or "fibergrade"
DATA = Path(__file__).parent / "data" / "meat"


def run(*args: str, cwd: Path):
    return subprocess.run(
        [EXE, *args], capture_output=True, text=True, cwd=cwd, timeout=300, check=False
    )


@pytest.fixture()
def plant(tmp_path: Path) -> Path:
    """A store with the example carcasses and halal records, and a lab key."""
    for args in (
        ("meat", "import", str(DATA / "carcasses.csv"), "--scale", "cas-ci", "--store", "s"),
        ("meat", "import", "--halal", str(DATA / "halal.csv"), "--store", "s"),
        ("keys", "init"),
    ):
        r = run(*args, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    return tmp_path


def test_certify_verify_and_trace(plant):
    r = run("meat", "certify", "--store", "s", "--json", cwd=plant)
    assert r.returncode == 0, r.stderr
    issued = json.loads(r.stdout)
    assert issued and all(i["certificate_number"].startswith("FGM-") for i in issued)
    first = Path(plant / issued[0]["json"])
    doc = json.loads(first.read_text())["certificate"]
    assert doc["schema"] == "fibergrade-meat-certificate/1"
    assert doc["halal"]["status"] == "validated" and len(doc["carcass_record"]) == 64
    assert set(doc["grading"]) >= {"category", "fat_score", "msa_eligible", "eu_category"}
    # meat.md (EU): report the weight and whether warm or cold; the schemes used by version
    assert doc["weight"]["basis"] == "hot" and doc["weight"]["hscw_kg"] > 0
    # what trace shows of the slaughter record, the certificate states too (it did not)
    assert doc["carcass"]["carcass_id"] == "KZ-C-0001"
    assert doc["slaughter"] == {
        "slaughtered_at": "2026-03-02T08:15:00+05:00",
        "establishment_approval": "KZ-EST-0412",
        "certification_body": "Kazakhstan Muslim Board Halal Centre",
        "halal_certificate": "HC-2025-0881",
        "halal_certificate_expiry": "2026-12-31",
    }
    from fibergrade.meat.grading import schemes_used

    assert doc["schemes"] == {role: s.ref() for role, s in schemes_used().items()}
    # the grading result it cites holds the very record it was made from
    from fibergrade.store import Store

    cited = Store.open(plant / "s", create=False).get_result("meat-grades", doc["grade_result"])
    rec = next(c for c in cited["carcasses"] if c["carcass_id"] == doc["carcass"]["carcass_id"])
    assert {k: rec[k] for k in doc["grading"]} == doc["grading"] and rec["halal"] == doc["halal"]
    r = run(
        "verify", str(first), "--public-key", "keys/lab.pub", "--store", "s", "--json", cwd=plant
    )
    assert r.returncode == 0, r.stderr
    checks = {c["check"] for c in json.loads(r.stdout)["checks"]}
    assert {"signature", "carcass record", "halal record", "schemes", "recomputation"} <= checks
    r = run("trace", doc["carcass"]["carcass_id"], "--store", "s", "--json", cwd=plant)
    last = json.loads(r.stdout)["chains"][0][-1]
    assert last["link"] == "certificate" and last["id"] == doc["certificate_number"]
    # the number that link shows traces back to the same chain
    r = run("trace", doc["certificate_number"], "--store", "s", "--json", cwd=plant)
    assert r.returncode == 0, r.stderr
    back = json.loads(r.stdout)
    assert back["matched"] == ["carcass certificate"]
    assert back["chains"][0][2]["id"] == doc["carcass"]["carcass_id"]
    # nothing left to certify; naming a certified carcass again needs --reissue
    assert json.loads(run("meat", "certify", "--store", "s", "--json", cwd=plant).stdout) == []
    r = run("meat", "certify", doc["carcass"]["carcass_id"], "--store", "s", cwd=plant)
    assert r.returncode == 5 and "already certified" in r.stderr


def test_a_carcass_without_halal_record_is_refused(plant):
    graded = json.loads(run("meat", "grade", "--store", "s", "--json", cwd=plant).stdout)
    without = [g["carcass_id"] for g in graded if g["halal"]["status"] != "validated"]
    assert without, "the example data has a carcass without a slaughter record"
    r = run("meat", "certify", without[0], "--store", "s", cwd=plant)
    assert r.returncode == 5 and "halal" in r.stderr
    assert not (plant / "certificates").exists() or not list(
        (plant / "certificates").glob(f"FGM-{without[0]}-*")
    )


def test_altered_grading_and_edited_carcass_record_are_detected(plant):
    from fibergrade.certificates import sign
    from fibergrade.keys import load_private_key

    r = run("meat", "certify", "--store", "s", "--json", cwd=plant)
    path = plant / json.loads(r.stdout)[0]["json"]
    doc = json.loads(path.read_text())["certificate"]
    forged = dict(doc, grading=dict(doc["grading"], fat_score=5, category="lamb"))
    fake = plant / "forged.json"
    fake.write_text(json.dumps(sign(forged, load_private_key(plant / "keys" / "lab.key"))))
    r = run("verify", str(fake), "--public-key", "keys/lab.pub", "--store", "s", cwd=plant)
    assert r.returncode == 5 and "fat_score" in r.stderr
    rec = plant / "s" / "results" / "carcasses" / f"{doc['carcass_record']}.json"
    rec.chmod(0o644)
    rec.write_text(rec.read_text().replace("KZ-LOT", "XX-LOT", 1))
    r = run("verify", str(path), "--public-key", "keys/lab.pub", "--store", "s", cwd=plant)
    assert r.returncode == 5 and "stored record" in r.stderr


def test_a_carcass_that_failed_inspection_is_never_certified(tmp_path):
    from fibergrade.certificates import sign
    from fibergrade.keys import load_private_key
    from meat_helpers import carcass_rows, halal_row, write_csv

    write_csv(tmp_path / "c.csv", carcass_rows(3))
    rows = [halal_row(carcass_id=f"C-{k}", animal_id=f"A-{k}") for k in (1, 2, 3)]
    rows[1]["post_mortem"] = "fail"
    rows[2]["vendor_declaration"] = "no"
    write_csv(tmp_path / "h.csv", rows)
    for args in (
        ("meat", "import", "c.csv", "--store", "s"),
        ("meat", "import", "--halal", "h.csv", "--store", "s"),
        ("keys", "init"),
    ):
        r = run(*args, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    r = run("meat", "grade", "--store", "s", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "C-2: not halal: post-mortem inspection: fail" in r.stdout
    assert "C-3: not halal: no vendor declaration" in r.stdout
    # named, it is refused, and nothing is issued for the batch
    r = run("meat", "certify", "C-1", "C-2", "--store", "s", cwd=tmp_path)
    assert r.returncode == 5 and "does not support a halal claim" in r.stderr
    assert "post-mortem inspection: fail" in r.stderr
    assert not list(tmp_path.glob("certificates/FGM-*"))
    # by default only the carcass whose record supports the claim is certified
    r = run("meat", "certify", "--store", "s", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    issued = json.loads(r.stdout)
    assert [i["certificate_number"].split("-")[1:3] for i in issued] == [["C", "1"]]
    # a certificate signed for it anyway (by the lab's own key) fails verification
    doc = json.loads((tmp_path / issued[0]["json"]).read_text())["certificate"]
    graded = json.loads(run("meat", "grade", "C-2", "--store", "s", "--json", cwd=tmp_path).stdout)
    forged = dict(
        doc,
        carcass=dict(doc["carcass"], carcass_id="C-2", animal_id="A-2"),
        carcass_record=doc["carcass_record"],
        halal=dict(doc["halal"]),  # "validated", as if the record supported it
        grading={k: graded[0].get(k) for k in doc["grading"]},
    )
    fake = tmp_path / "forged.json"
    fake.write_text(json.dumps(sign(forged, load_private_key(tmp_path / "keys" / "lab.key"))))
    r = run("verify", str(fake), "--public-key", "keys/lab.pub", "--store", "s", cwd=tmp_path)
    assert r.returncode == 5 and "halal" in r.stderr and "post-mortem" in r.stderr


def test_a_carcass_certificate_can_be_revoked_and_then_does_not_verify(plant):
    r = run("meat", "certify", "--store", "s", "--json", cwd=plant)
    issued = json.loads(r.stdout)[0]
    number, path = issued["certificate_number"], plant / issued["json"]
    r = run("revoke", number, "--reason", "carcass mislabelled", "--key", "keys/lab.key",
            "--store", "s", cwd=plant)  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = run("verify", str(path), "--public-key", "keys/lab.pub", "--store", "s", cwd=plant)
    assert r.returncode == 5 and "revoked in the store" in r.stderr
    r = run("verify", str(path), "--public-key", "keys/lab.pub", "--revocations",
            "s/revocations.json", cwd=plant)  # fmt: skip
    assert r.returncode == 5 and "carcass mislabelled" in r.stderr


def test_a_certificate_of_another_scheme_version_or_weight_is_reported(plant):
    """A certificate names each scheme's version and digest: one graded under another
    version (here an MSA file of version 1) is reported as such, not recomputed under
    today's rules; an altered weight is caught by recomputation."""
    from fibergrade.certificates import sign
    from fibergrade.keys import load_private_key

    r = run("meat", "certify", "--store", "s", "--json", cwd=plant)
    doc = json.loads((plant / json.loads(r.stdout)[0]["json"]).read_text())["certificate"]
    key = load_private_key(plant / "keys" / "lab.key")
    old_msa = dict(doc["schemes"]["msa"], version="1", digest="4af0d9038fff" + "0" * 52)
    assert doc["weighing"], "the example carcasses were weighed on a scale"
    weighing = dict(doc["weighing"], record="0" * 64)
    for name, forged, expected in (
        ("old-scheme", dict(doc, schemes=dict(doc["schemes"], msa=old_msa)), "msa scheme"),
        ("weight", dict(doc, weight={"hscw_kg": 99.0, "basis": "hot"}), "weight: certificate"),
        (
            "slaughter",
            dict(doc, slaughter=dict(doc["slaughter"], slaughtered_at="2026-03-01T08:15:00Z")),
            "slaughter: certificate says",
        ),
        # the weighing link and the carcass's ids are the store's too
        ("weighing", dict(doc, weighing=weighing), "weighing: certificate says"),
        (
            "animal",
            dict(doc, carcass=dict(doc["carcass"], animal_id="A-OTHER")),
            "carcass.animal_id: certificate says 'A-OTHER', the carcass record gives",
        ),
    ):
        fake = plant / f"{name}.json"
        fake.write_text(json.dumps(sign(forged, key)))
        r = run("verify", str(fake), "--public-key", "keys/lab.pub", "--store", "s", cwd=plant)
        assert r.returncode == 5 and expected in r.stderr, r.stderr
    assert (
        "version 1 (digest 4af0d9038fff)"
        in run(
            "verify", "old-scheme.json", "--public-key", "keys/lab.pub", "--store", "s", cwd=plant
        ).stderr
    )
    # MSA reasons name the field of their value ("fat score >= 2 (GR >= 6 mm): 4" read as a
    # fat score of 4): a certificate issued with the first wording still verifies, with a note
    (light_file,) = plant.rglob("FGM-KZ-C-0002-01.json")
    light = json.loads(light_file.read_text())["certificate"]
    reasons = light["grading"]["msa_reasons"]
    assert reasons == ["hot standard carcass weight: hscw_kg = 17.2 (needs >= 18)"]
    from fibergrade.store import Store

    for stated, ok in (
        (["hot standard carcass weight: 17.2 (needs hscw_kg >= 18)"], True),
        (["hot standard carcass weight: 17.9 (needs hscw_kg >= 18)"], False),
    ):
        fake = plant / "worded.json"
        grading = dict(light["grading"], msa_reasons=stated)
        number = "FGM-KZ-C-0002-02"  # as if issued so, superseding the first
        env = sign(dict(light, grading=grading, certificate_number=number, supersedes=light[
            "certificate_number"], reissue_reason="x"), key)  # fmt: skip
        fake.write_text(json.dumps(env))
        if ok:
            Store.open(plant / "s", create=False).put_result("certificate", env)
        r2 = run("verify", str(fake), "--public-key", "keys/lab.pub", "--store", "s", "--json",
                 cwd=plant)  # fmt: skip
        assert (r2.returncode == 0) is ok, r2.stdout
        said = json.loads(r2.stdout)
        if ok:
            assert any("worded as before" in n for n in said["notes"])
        else:
            assert any("msa_reasons: certificate says" in p for p in said["problems"])


def test_two_imports_of_one_file_at_once_store_it_once(tmp_path):
    """The import checks whether the file (and its ids) are stored, then stores it: two at
    once stored it twice, doubling every carcass, before they took the issuing lock."""
    cmd = [EXE, "meat", "import", str(DATA / "carcasses.csv"), "--store", "s", "--json"]
    assert run("meat", "import", "--halal", str(DATA / "halal.csv"), "--store", "s",
               cwd=tmp_path).returncode == 0  # fmt: skip
    procs = [subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, text=True) for _ in "ab"]
    outs = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(o["already_imported"] for o in outs) == [False, True]
    assert len(list((tmp_path / "s" / "results" / "carcasses").glob("*.json"))) == 1


def test_trace_shows_the_certificate_that_stands(plant):
    """A revoked reissue does not put the one it superseded back (as verify --store judges
    it): trace then shows the reissue, marked REVOKED, and so it does with every
    certificate revoked; export finds none that stands."""
    r = run("meat", "certify", "--store", "s", "--json", cwd=plant)
    cid = json.loads((plant / json.loads(r.stdout)[0]["json"]).read_text())["certificate"][
        "carcass"
    ]["carcass_id"]
    r = run("meat", "certify", cid, "--reissue", "--reason", "typo", "--store", "s", cwd=plant)
    assert r.returncode == 0, r.stderr

    def last() -> dict:
        return json.loads(run("trace", cid, "--store", "s", "--json", cwd=plant).stdout)["chains"][
            0
        ][-1]

    assert last()["id"] == f"FGM-{cid}-02" and last()["revoked"] is False
    assert last()["supersedes"] == f"FGM-{cid}-01" and last()["reissue_reason"] == "typo"
    # traced by the superseded number, the chain says it shows another (it did silently)
    r = run("trace", f"FGM-{cid}-01", "--store", "s", "--json", cwd=plant)
    assert r.returncode == 0, r.stderr
    (note,) = json.loads(r.stdout)["notes"]
    assert f"FGM-{cid}-01 does not stand: superseded by FGM-{cid}-02" in note and "typo" in note
    text = " ".join(run("trace", f"FGM-{cid}-01", "--store", "s", cwd=plant).stdout.split())
    assert f"superseded by FGM-{cid}-02" in text and f"supersedes FGM-{cid}-01 (typo)" in text
    r = run("revoke", f"FGM-{cid}-02", "--reason", "wrong", "--store", "s", cwd=plant)
    assert r.returncode == 0, r.stderr
    assert f"carcass {cid} now has no certificate that stands" in " ".join(r.stdout.split())
    assert last()["id"] == f"FGM-{cid}-02" and last()["revoked"] is True
    # a revoked link says when and why (trace --json had only revoked: true)
    assert last()["revocation"]["reason"] == "wrong" and last()["revocation"]["revoked_at"]
    text = " ".join(run("trace", cid, "--store", "s", cwd=plant).stdout.split())
    assert "REVOKED on " in text and ": wrong;" in text
    r = run("meat", "certify", cid, "--export", "--store", "s", cwd=plant)
    assert r.returncode != 0 and "has no certificate that stands" in r.stderr, r.stderr
    r = run("revoke", f"FGM-{cid}-01", "--reason", "wrong", "--store", "s", cwd=plant)
    assert r.returncode == 0, r.stderr
    assert last()["id"] == f"FGM-{cid}-02" and last()["revoked"] is True
    text = run("trace", cid, "--store", "s", cwd=plant).stdout
    assert "REVOKED" in text


def test_export_writes_an_issued_carcass_certificate_again(plant):
    """A carcass certificate whose file was lost (a run stopped after storing it) is
    written again from the store's signed copy by meat certify --export; certifying it
    again is refused with that advice, and a revoked one is not exported."""
    issued = json.loads(run("meat", "certify", "--store", "s", "--json", cwd=plant).stdout)
    first, second = issued[0], issued[1]
    path = plant / first["json"]
    original = path.read_bytes()
    cid = json.loads(original)["certificate"]["carcass"]["carcass_id"]
    path.unlink()
    r = run("meat", "certify", cid, "--store", "s", cwd=plant)
    assert r.returncode == 5 and "pass --export" in r.stderr
    r = run("meat", "certify", cid, "--export", "--store", "s", "--json", cwd=plant)
    assert r.returncode == 0, r.stderr
    written = json.loads(r.stdout)
    assert [(w["certificate_number"], w["pdf"]) for w in written] == [(path.stem, None)]
    assert json.loads(path.read_bytes()) == json.loads(original)
    r = run("verify", str(path), "--public-key", "keys/lab.pub", "--store", "s", cwd=plant)
    assert r.returncode == 0, r.stderr
    # an unknown carcass and a revoked certificate's carcass are refused, as is no id
    other = json.loads((plant / second["json"]).read_text())["certificate"]["carcass"]
    r = run("revoke", second["certificate_number"], "--reason", "mislabelled",
            "--key", "keys/lab.key", "--store", "s", cwd=plant)  # fmt: skip
    assert r.returncode == 0, r.stderr
    for ident in (other["carcass_id"], "NO-SUCH-CARCASS"):
        r = run("meat", "certify", ident, "--export", "--store", "s", cwd=plant)
        assert r.returncode != 0 and "has no certificate that stands" in r.stderr, r.stderr
    r = run("meat", "certify", "--export", "--store", "s", cwd=plant)
    assert r.returncode == 2 and "--export needs carcass ids" in r.stderr
    r = run("meat", "certify", "--reissue", "--store", "s", cwd=plant)
    assert r.returncode == 2 and "--reissue needs --reason" in r.stderr


def test_trace_with_the_lab_key_refuses_a_revocation_the_lab_did_not_sign(plant):
    """Someone who can write the store (and append to its unkeyed log) records an unsigned
    revocation: trace without a key reads it as stored and says so; with --public-key the
    record is refused, naming it, and a forged certificate too."""
    from fibergrade.audit import digest
    from fibergrade.store import Store

    r = run("meat", "certify", "--store", "s", "--json", cwd=plant)
    env = json.loads((plant / json.loads(r.stdout)[0]["json"]).read_text())
    number, cid = (
        env["certificate"]["certificate_number"],
        env["certificate"]["carcass"]["carcass_id"],
    )
    trace = ("trace", cid, "--store", "s")
    r = run(*trace, "--public-key", "keys/lab.pub", "--json", cwd=plant)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["signatures_checked"] and result["chains"][0][-1]["revoked"] is False
    assert "pass --public-key" in run(*trace, cwd=plant).stdout
    assert run("keys", "init", "--dir", "other", cwd=plant).returncode == 0
    r = run(*trace, "--public-key", "other/lab.pub", cwd=plant)  # another lab's key
    assert r.returncode == 3 and "not the lab" in r.stderr and "corrupt" not in r.stderr, r.stderr
    st = Store.open(plant / "s", create=False)
    st.put_result("revocation", {
        "certificate_number": number, "certificate_sha256": digest(env["certificate"]),
        "reason": "planted", "revoked_at": "2026-11-23T00:00:00+00:00",
    })  # fmt: skip
    assert json.loads(run(*trace, "--json", cwd=plant).stdout)["chains"][0][-1]["revoked"]
    r = run(*trace, "--public-key", "keys/lab.pub", cwd=plant)
    assert r.returncode == 3 and f"revocation record of {number}" in r.stderr, r.stderr
    forged = {**env, "certificate": {**env["certificate"], "certificate_number": f"FGM-{cid}-02"}}
    st.put_result("certificate", forged)
    r = run(*trace, "--public-key", "keys/lab.pub", cwd=plant)
    assert r.returncode == 3 and f"certificate FGM-{cid}-02 does not verify" in r.stderr


def test_a_run_naming_no_carcass_leaves_out_one_whose_id_cannot_name_a_file(tmp_path):
    """A carcass stored before the id rule (here written as the importer stores a batch)
    whose id cannot name a certificate file used to refuse the whole default run for good:
    it is left out with a note, and the others are certified."""
    from fibergrade.meat.carcasses import read_carcass_csv
    from fibergrade.meat.traceability import CARCASS_KIND, scale_limit
    from fibergrade.store import Store

    batch = read_carcass_csv(DATA / "carcasses.csv", scale_of=scale_limit, default_scale="cas-ci")
    batch.columns["carcass_id"][0] = "KZ C 0001"
    st = Store.open(tmp_path / "s", create=True)
    st.put_result(CARCASS_KIND, {
        "kind": "carcass-batch", "format_version": 1, "created_at": "2026-03-02T09:00:00Z",
        "source_name": "old.csv", "source_digest": "ab" * 32, "n": batch.n,
        "columns": batch.columns, "lines": batch.lines,
    })  # fmt: skip
    halal = (DATA / "halal.csv").read_text().replace("KZ-C-0001", "KZ C 0001")
    (tmp_path / "halal.csv").write_text(halal)
    for args in (("meat", "import", "--halal", "halal.csv", "--store", "s"), ("keys", "init")):
        r = run(*args, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    r = run("meat", "certify", "--store", "s", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    numbers = [i["certificate_number"] for i in json.loads(r.stdout)]
    assert numbers and not any("KZ C" in n for n in numbers)
    assert "carcass KZ C 0001 left out: its id cannot name a certificate file" in r.stderr


def test_a_blank_reason_is_a_bad_option_and_nothing_is_stored(plant):
    """A reason of blanks: `certify --reissue --reason ' '` issued and signed a certificate
    with a blank reason, `override` and `revoke` refused it with exit 5 (a certificate
    refused); it is a bad option (exit 2), refused before anything is stored."""
    r = run("meat", "certify", "KZ-C-0001", "--store", "s", "--json", cwd=plant)
    assert r.returncode == 0, r.stderr
    number = json.loads(r.stdout)[0]["certificate_number"]
    store = plant / "s"
    before = {p: p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}
    certs = sorted((plant / "certificates").iterdir())
    for args in (
        ("meat", "certify", "KZ-C-0001", "--reissue", "--reason", " "),
        ("certify", "KZ-LOT-2026-031", "--reissue", "--reason", " "),
        ("revoke", number, "--reason", " \t"),
        ("override", "KZ-LOT-2026-031", "--reason", "  "),
    ):
        r = run(*args, "--store", "s", cwd=plant)
        assert r.returncode == 2, (args, r.stderr)
        assert "needs a reason" in r.stderr and "Traceback" not in r.stderr
    assert {p: p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()} == before
    assert sorted((plant / "certificates").iterdir()) == certs


def test_a_carcass_reissue_without_lab_keeps_the_lab_it_supersedes(plant):
    """A reissue without --lab named the default lab instead of the one that issued it."""
    r = run("meat", "certify", "--store", "s", "--lab", "Dubbo Halal Lab", "--json", cwd=plant)
    assert r.returncode == 0, r.stderr
    doc = json.loads((plant / json.loads(r.stdout)[0]["json"]).read_text())["certificate"]
    assert doc["lab"]["name"] == "Dubbo Halal Lab"
    cid = doc["carcass"]["carcass_id"]
    r = run("meat", "certify", cid, "--reissue", "--reason", "weighing record corrected",
            "--store", "s", "--json", cwd=plant)  # fmt: skip
    assert r.returncode == 0, r.stderr
    again = json.loads((plant / json.loads(r.stdout)[0]["json"]).read_text())["certificate"]
    assert again["supersedes"] == doc["certificate_number"]
    assert again["lab"]["name"] == "Dubbo Halal Lab"


def _weighing(when: str) -> dict:
    """A stable weighing record of KZ-C-0001 giving its 21.4 kg, made at ``when``."""
    return {
        "kind": "weighing",
        "created_at": when,
        "scale_id": "CAS-L1",
        "profile": "cas-ci",
        "protocol": "cas",
        "value": 21.4,
        "unit": "kg",
        "mode": "stable",
        "device_stable": True,
        "timestamp": when,
        "subject": "KZ-C-0001",
    }


def test_a_weighing_logged_before_certification_is_the_link_whatever_its_time(plant):
    """The weighing a certificate links is told by the audit log's order: the demo's last
    carcass was weighed and certified within one second, its weighing's created_at
    (microseconds) read as after the certificate's issued_at (seconds), and verify --store
    failed the honest certificate. A clock ahead of the certifying one does the same."""
    from fibergrade.store import Store

    # logged first, dated after the certificate
    ahead = _weighing("2099-01-01T00:00:00.500000+00:00")
    rid = Store.open(plant / "s", create=False).put_result("weighing", ahead)
    r = run("meat", "certify", "KZ-C-0001", "--store", "s", "--json", cwd=plant)
    assert r.returncode == 0, r.stderr
    path = plant / json.loads(r.stdout)[0]["json"]
    assert json.loads(path.read_text())["certificate"]["weighing"]["record"] == rid
    r = run("verify", str(path), "--public-key", "keys/lab.pub", "--store", "s", cwd=plant)
    assert r.returncode == 0, r.stderr


def test_a_carcass_weighed_again_after_certification_still_verifies(plant):
    """The certificate names the weighing record that was the carcass's latest when it was
    issued; a weighing logged afterwards (a check weighing) does not make it wrong. verify
    --store compared it with the store's latest weighing and failed the honest certificate."""
    from fibergrade.store import Store

    r = run("meat", "certify", "KZ-C-0001", "--store", "s", "--json", cwd=plant)
    assert r.returncode == 0, r.stderr
    path = plant / json.loads(r.stdout)[0]["json"]
    assert json.loads(path.read_text())["certificate"]["weighing"]["record"] is None
    later = _weighing("2099-01-01T00:00:00Z")  # logged after issue
    Store.open(plant / "s", create=False).put_result("weighing", later)
    r = run("verify", str(path), "--public-key", "keys/lab.pub", "--store", "s", cwd=plant)
    assert r.returncode == 0, r.stderr
