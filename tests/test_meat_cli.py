"""The meat commands end to end through the installed ``fibergrade`` console script."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meat_helpers import carcass_rows, halal_row, write_csv
from test_cli import run

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent / "data" / "meat"
GRADE_KEYS = {
    "carcass_id",
    "category",
    "fat_score",
    "msa_eligible",
    "msa_reasons",
    "eu_category",
    "light_lamb_band",
    "colour_acceptable",
    "ph_class",
}


def flat(text: str) -> str:
    """stderr with rich's line wrapping undone."""
    return " ".join(text.split())


def test_import_grade_trace(tmp_path):
    store = tmp_path / "store"
    r = run("meat", "import", str(DATA / "carcasses.csv"), "--scale", "cas-ci", store=store)
    assert r.returncode == 0, r.stderr
    assert "5 carcasses -> record" in r.stdout
    r = run("meat", "import", str(DATA / "carcasses.csv"), "--json", store=store)
    assert json.loads(r.stdout)["already_imported"] is True
    r = run("meat", "import", "--halal", str(DATA / "halal.csv"), "--json", store=store)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["n"] == 3

    r = run("meat", "grade", "--json", store=store)
    assert r.returncode == 0, r.stderr
    recs = json.loads(r.stdout)
    assert len(recs) == 5 and all(set(x) >= GRADE_KEYS for x in recs)
    by = {x["carcass_id"]: x for x in recs}
    assert by["KZ-C-0004"]["category"] == "ram" and by["KZ-C-0004"]["ph_class"] == "dark-cutting"
    assert by["KZ-C-0005"]["light_lamb_band"] == "10.1-13.0"
    assert by["KZ-C-0001"]["msa_eligible"] is True and by["KZ-C-0001"]["msa_reasons"] == []
    r = run("meat", "grade", store=store)
    assert r.returncode == 0 and "not MSA" in r.stdout and "within 1 h" in r.stdout

    r = run("trace", "KZ-C-0002", "--json", store=store)
    assert r.returncode == 0, r.stderr
    chain = json.loads(r.stdout)["chains"][0]
    assert [x["link"] for x in chain] == ["animal", "slaughter", "carcass", "lot", "certificate"]
    assert all(len(x["digest"]) == 64 for x in chain[:4])
    r = run("trace", "KZ-LOT-2026-031", store=store)
    assert r.returncode == 0 and "no certificate issued" in r.stdout
    r = run("trace", "unknown-id", store=store)
    assert r.returncode == 3 and "is no animal, carcass, carcass lot" in flat(r.stderr)


def test_bad_files_refused_with_line_and_nothing_stored(tmp_path):
    store = tmp_path / "store"
    rows = carcass_rows(3)
    rows[1]["incisors_erupted"] = 9
    bad = write_csv(tmp_path / "bad.csv", rows)
    r = run("meat", "import", str(bad), store=store)
    assert r.returncode == 2
    assert "bad.csv:4" in flat(r.stderr) and "8 incisors" in flat(r.stderr)
    h = write_csv(tmp_path / "h.csv", [halal_row(alive_at_cut="no")])
    r = run("meat", "import", "--halal", str(h), store=store)
    assert r.returncode == 2 and "h.csv:3" in flat(r.stderr) and "alive" in flat(r.stderr)
    assert not list(store.rglob("*.json"))
    r = run("meat", "grade", store=store)
    assert r.returncode == 3 and "no carcasses" in flat(r.stderr)


def test_an_id_already_stored_exits_3_like_a_fibre_lot_naming_file_and_line(tmp_path):
    """A carcass, animal or slaughter record imported before is the store's refusal (3).

    It exited 2 (bad input) while a fibre lot id already stored exits 3 (LotConflictError).
    """
    store = tmp_path / "store"
    assert run("meat", "import", str(DATA / "carcasses.csv"), store=store).returncode == 0
    assert run("meat", "import", "--halal", str(DATA / "halal.csv"), store=store).returncode == 0
    before = {p: p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}
    rows = carcass_rows(2)
    rows[1]["carcass_id"] = "KZ-C-0003"  # line 4: a comment, the header, row 1
    r = run("meat", "import", str(write_csv(tmp_path / "more.csv", rows)), store=store)
    assert r.returncode == 3, r.stderr
    assert "more.csv:4" in flat(r.stderr) and "'KZ-C-0003'" in flat(r.stderr)
    assert "Traceback" not in r.stderr
    rows = carcass_rows(1, animal_id="982000411000002")
    r = run("meat", "import", str(write_csv(tmp_path / "animal.csv", rows)), store=store)
    assert r.returncode == 3 and "animal.csv:3" in flat(r.stderr), r.stderr
    h = write_csv(tmp_path / "h.csv", [halal_row(carcass_id="C-9", animal_id="982000411000001")])
    r = run("meat", "import", "--halal", str(h), store=store)
    assert r.returncode == 3 and "h.csv:3" in flat(r.stderr), r.stderr
    assert {p: p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()} == before
    # a row that repeats an id within its own file is still bad input
    rows = carcass_rows(2, carcass_id="C-7")
    r = run("meat", "import", str(write_csv(tmp_path / "twice.csv", rows)), store=store)
    assert r.returncode == 2, r.stderr


def test_missing_file_or_unusable_folder_is_a_one_line_error_and_stores_nothing(tmp_path):
    r = run("meat", "import", "carcasses.csv", "--scale", "cas-ci", "--store", "s", cwd=tmp_path)
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "s").exists()  # no empty store left behind
    for args in (
        ("meat", "import", str(DATA / "carcasses.csv"), "--scale", "cas-ci", "--store", "s"),
        ("meat", "import", "--halal", str(DATA / "halal.csv"), "--store", "s"),
        ("keys", "init"),
    ):
        assert run(*args, cwd=tmp_path).returncode == 0
    before = {p: p.read_bytes() for p in sorted((tmp_path / "s").rglob("*")) if p.is_file()}
    (tmp_path / "a-file").write_text("not a folder")
    r = run("meat", "certify", "--store", "s", "--out", "a-file", cwd=tmp_path)
    assert r.returncode == 2 and "a-file" in r.stderr and "Traceback" not in r.stderr
    after = {p: p.read_bytes() for p in sorted((tmp_path / "s").rglob("*")) if p.is_file()}
    assert after == before  # no grading record, no audit entry
