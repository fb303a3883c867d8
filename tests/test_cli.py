"""The CLI end to end, as a user runs it: the installed console script in a subprocess, real
files under tmp_path, exit codes and what is (not) stored."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fibergrade.adapters.writers import (
    to_histograms,
    write_fibre_csv,
    write_histogram_csv,
    write_lot_manifest,
)
from fibergrade.measurements import FibreLots, LotMeta

pytestmark = pytest.mark.integration

EXE = shutil.which("fibergrade", path=str(Path(sys.executable).parent)) or "fibergrade"


def run(*args: str, store: Path | None = None, cwd: Path | None = None, env=None):
    cmd = [EXE, *args]
    if store is not None:
        cmd += ["--store", str(store)]
    return subprocess.run(
        cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A small realistic set: per-fibre lots, histogram lots and their manifest."""
    d = tmp_path_factory.mktemp("files")
    rng = np.random.default_rng(11)
    means = {"C-001": 15.2, "C-002": 18.2, "B-001": 16.4, "A-001": 21.0, "W-001": 15.0}
    sizes = [3000, 2500, 2800, 2600, 2000]
    diam = np.concatenate(
        [rng.lognormal(np.log(m), 0.21, n) for m, n in zip(means.values(), sizes, strict=True)]
    )
    # C-002 carries a coarse tail: 8 % of snippets at 35 um
    tail = slice(3000, 3000 + 200)
    diam[tail] = rng.normal(35.0, 2.0, 200)
    off = np.concatenate([[0], np.cumsum(sizes)])
    lots = FibreLots(
        tuple(means),
        off,
        diam.astype(np.float32),
        curvature_deg_mm=rng.uniform(40, 60, off[-1]).astype(np.float32),
    )
    fibre = lots.select([0, 1, 2, 3])
    hist = to_histograms(lots.select([4]))
    write_fibre_csv(d / "ofda.csv", fibre)
    write_histogram_csv(d / "laserscan.csv", hist)
    types = {
        "C-001": "cashmere",
        "C-002": "cashmere",
        "B-001": "baby-camel",
        "A-001": "baby-camel",
        "W-001": "cashmere",
    }
    write_lot_manifest(
        d / "lots.csv",
        [LotMeta(k, declared_type=v, origin="MN", client="Gobi Coop") for k, v in types.items()],
    )
    return {"fibre": d / "ofda.csv", "hist": d / "laserscan.csv", "manifest": d / "lots.csv"}


def test_import_grade_show_and_reimport(files, tmp_path):
    store = tmp_path / "store"
    r = run(
        "import",
        str(files["fibre"]),
        str(files["hist"]),
        "--lots",
        str(files["manifest"]),
        store=store,
    )
    assert r.returncode == 0, r.stderr
    assert "4 lots, " in r.stdout and "1 lot, " in r.stdout and "1 lots" not in r.stdout

    r = run("lots", "--json", store=store)
    lots = {x["lot_id"]: x for x in json.loads(r.stdout)}
    assert set(lots) == {"C-001", "C-002", "B-001", "A-001", "W-001"}
    assert lots["W-001"]["kind"] == "histogram" and lots["C-001"]["declared_type"] == "cashmere"

    r = run("grade", "--json", store=store)
    assert r.returncode == 0, r.stderr
    recs = {x["lot_id"]: x for x in json.loads(r.stdout)}
    for rec in recs.values():
        for key in (
            "lot_id",
            "n",
            "mfd_um",
            "sd_um",
            "cv_pct",
            "cf_pct",
            "pf_pct",
            "coarse_count_pct",
            "coarse_mass_pct",
            "sf_um",
            "standard",
            "grade",
            "criteria",
        ):
            assert key in rec
    assert recs["C-001"]["grade"] == "cashmere"
    assert recs["C-002"]["grade"] is None  # coarse tail: > 3 % by mass over 30 um
    failed = [c["figure"] for c in recs["C-002"]["criteria"] if not c["passed"]]
    assert "coarse_mass_pct" in failed
    assert recs["B-001"]["grade"] == "baby-camel"
    assert recs["A-001"]["grade"] == "adult-camel"  # declared baby camel, measures adult
    assert recs["W-001"]["basis"] == "histogram" and "mfd_um" in recs["W-001"]["binned"]
    assert recs["C-001"]["standard"]["id"] == "us-wpla-cashmere"

    r = run("grade", "C-001", "C-002", "--standard", "gb18267-cashmere", "--json", store=store)
    assert [x["grade"] for x in json.loads(r.stdout)] == ["fine", "coarse"]

    r = run("grade", store=store)  # the readable table
    assert r.returncode == 0 and "C-002" in r.stdout and "not cashmere" in r.stdout

    png = tmp_path / "c2.png"
    r = run("show", "C-002", "--plot", str(png), store=store)
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "coarse_mass_pct" in r.stdout
    r = run("show", "C-002", "--json", store=store)
    shown = json.loads(r.stdout)
    assert shown["lot_id"] == "C-002" and sum(shown["histogram"]["counts"]) == shown["n"]
    assert shown["recorded_result"]  # the grade run above was recorded

    before = sorted(p.name for p in (store / "segments").iterdir())
    r = run("import", str(files["fibre"]), "--lots", str(files["manifest"]), store=store)
    assert r.returncode == 0 and "already imported" in r.stdout
    assert sorted(p.name for p in (store / "segments").iterdir()) == before


def test_many_lots_print_as_aligned_lines_that_match_the_json(tmp_path):
    """Past a few screens of lots, ``grade`` and ``lots`` print aligned text lines (a boxed
    table took 0.7 ms a row): one line per lot, its cells in fixed columns, the figures
    those of ``--json``."""
    from fibergrade.cli_tables import MAX_BOXED_ROWS

    n_lots, size = MAX_BOXED_ROWS + 20, 60
    rng = np.random.default_rng(5)
    ids = tuple(f"L-{k:04d}" for k in range(n_lots))
    lots = FibreLots(
        ids,
        np.arange(n_lots + 1) * size,
        rng.lognormal(np.log(15.5), 0.2, n_lots * size).astype(np.float32),
    )
    write_fibre_csv(tmp_path / "many.csv", lots)
    write_lot_manifest(
        tmp_path / "many-lots.csv",
        [LotMeta(k, "cashmere", origin="MN", client="Gobi Coop") for k in ids],
    )
    store = tmp_path / "store"
    r = run(
        "import", str(tmp_path / "many.csv"), "--lots", str(tmp_path / "many-lots.csv"), store=store
    )
    assert r.returncode == 0, r.stderr

    r = run("grade", store=store)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    head = lines.index(f"{n_lots} lots graded")
    header, rule, rows = lines[head + 1], lines[head + 2], lines[head + 3 : head + 3 + n_lots]
    assert header.split() == ["lot", "declared", "n", "MFD", "CV%", ">30", "mass%", "grade"]
    assert set(rule) == {"─", " "}
    assert [row.split()[0] for row in rows] == list(ids)
    # every row's cells sit in the header's columns: right-justified figures end where
    # their header ends, the grade starts where its header starts
    for name in ("n", "MFD", "CV%", "mass%"):
        end = header.index(name) + len(name)
        assert all(row[end - 1] != " " and row[end : end + 2] == "  " for row in rows), name
    at = header.index("grade")
    assert all(row[at - 2 : at] == "  " and row[at] != " " for row in rows)
    graded = run("grade", "--json", store=store)
    by_id = {x["lot_id"]: x for x in json.loads(graded.stdout)}
    for row in rows:
        cells = row.split()
        rec = by_id[cells[0]]
        assert cells[1:5] == [
            "cashmere",
            str(rec["n"]),
            f"{rec['mfd_um']:.1f}",
            f"{rec['cv_pct']:.1f}",
        ]
        assert cells[6] == (rec["grade"] or "none")

    r = run("lots", store=store)
    assert r.returncode == 0, r.stderr
    rows = [x for x in r.stdout.splitlines() if x.startswith("L-")]
    assert [x.split()[0] for x in rows] == list(ids)
    assert all(x.split()[1:4] == ["cashmere", "MN", "Gobi"] for x in rows)


def test_store_from_environment(files, tmp_path):
    env = dict(os.environ, FIBERGRADE_STORE=str(tmp_path / "envstore"))
    assert run("import", str(files["fibre"]), env=env).returncode == 0
    r = run("lots", "--json", env=env)
    assert len(json.loads(r.stdout)) == 4


BAD_ROWS = {
    "nan": ("lot_id,diameter_um\nL1,15.2\nL1,nan\n", "3"),
    "zero": ("lot_id,diameter_um\nL1,15.2\nL1,0\n", "3"),
    "too-big": ("lot_id,diameter_um\nL1,15.2\nL1,250.0\n", "3"),
    "millimetres": ("lot_id,diameter_um\nL1,0.0152\nL1,0.016\n", "2"),
    "text": ("lot_id,diameter_um\nL1,15.2\nL1,fifteen\n", "3"),
    "missing-column": ("lot_id,length_mm\nL1,30\n", None),
    "empty": ("", None),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_input_names_file_and_line_and_stores_nothing(files, tmp_path, case):
    text, line = BAD_ROWS[case]
    bad = tmp_path / f"{case}.csv"
    bad.write_text(text)
    store = tmp_path / "store"
    # a good file first: the whole import must still store nothing
    r = run("import", str(files["fibre"]), str(bad), store=store)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert f"{case}.csv" in r.stderr
    if line is not None:
        assert f"{case}.csv:{line}" in r.stderr
    assert "Traceback" not in r.stderr
    segs = list((store / "segments").glob("*.h5")) if (store / "segments").exists() else []
    assert segs == []


@pytest.mark.parametrize("row", ["H2,10.5,11.5,5", "H2,10,12,5", "H2,16.5,17.5,0"])
def test_a_histogram_class_wider_than_a_1_um_class_is_refused_at_import(files, tmp_path, row):
    """It used to be stored, and then every grade without lot ids failed for good (raw data
    are never removed): now the import refuses it, names file and line, stores nothing."""
    bad = tmp_path / "offgrid.csv"
    bad.write_text(f"lot_id,lower_um,upper_um,count\nH2,15,16,3\n{row}\n")
    store = tmp_path / "store"
    r = run("import", str(files["hist"]), str(bad), store=store)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "offgrid.csv:3" in r.stderr and "spans more than one 1-um class" in r.stderr
    assert "Traceback" not in r.stderr
    assert not list((store / "segments").glob("*.h5"))
    assert run("import", str(files["hist"]), store=store).returncode == 0
    r = run("grade", "--standard", "us-wpla-cashmere", "--json", store=store)
    assert r.returncode == 0, r.stderr
    assert [x["lot_id"] for x in json.loads(r.stdout)] == ["W-001"]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("fibres.csv", "lot_id,diameter_um\nA-1,15\nA/../x,15\n"),
        ("hist.csv", "lot_id,lower_um,upper_um,count\nA-1,15,16,3\n../../x,15,16,3\n"),
        ("lots.csv", "lot_id,declared_type,origin,client\nA-1,yak,CN,X\n..\\x,yak,CN,X\n"),
    ],
)
def test_a_lot_id_that_could_leave_the_certificate_folder_is_refused_at_import(
    files, tmp_path, name, text
):
    """Certificate file names are built from the lot id (FG-<lot>-01.json): a lot id such
    as A/../x was stored, and certify then wrote outside --out."""
    bad = tmp_path / name
    bad.write_text(text)
    store = tmp_path / "store"
    args = ["--lots", str(bad)] if name == "lots.csv" else [str(bad)]
    r = run("import", str(files["fibre"]), *args, store=store)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert f"{name}:3" in r.stderr and "lot" in r.stderr and "Traceback" not in r.stderr
    assert not list((store / "segments").glob("*.h5"))


def test_import_says_what_a_path_that_is_not_a_file_is(files, tmp_path):
    """A directory or a symbolic-link loop was reported as 'no such file'."""
    (tmp_path / "D").mkdir()
    (tmp_path / "loop1").symlink_to("loop2")
    (tmp_path / "loop2").symlink_to("loop1")
    (tmp_path / "broken").symlink_to("nowhere.csv")
    os.mkfifo(tmp_path / "fifo")
    store = tmp_path / "store"
    for args, words in (
        (["D"], "D: is a directory"),
        (["loop1"], "loop1: is a symbolic link loop"),
        (["broken"], "broken: is a broken symbolic link (its target 'nowhere.csv'"),
        (["fifo"], "fifo: is a FIFO"),
        (["missing.csv"], "missing.csv: no such file"),
        ([str(files["fibre"]), "--lots", "D"], "D: is a directory"),
    ):
        r = run("import", *args, store=store, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        assert words in " ".join(r.stderr.split()), (args, r.stderr)
        assert "Traceback" not in r.stderr and not store.exists(), args


def test_unknown_lot_and_missing_store_are_clear_errors(files, tmp_path):
    store = tmp_path / "store"
    run("import", str(files["fibre"]), store=store)
    r = run("grade", "NO-SUCH-LOT", store=store)
    assert r.returncode != 0 and "NO-SUCH-LOT" in r.stderr and "Traceback" not in r.stderr
    r = run("lots", store=tmp_path / "nowhere")
    assert r.returncode != 0 and "nowhere" in r.stderr and "Traceback" not in r.stderr
    r = run("grade", "--standard", "no-such-standard", store=store)
    assert r.returncode == 2 and "us-wpla-cashmere" in r.stderr


def test_a_manifest_given_with_a_file_imported_before_is_said_not_to_apply(files, tmp_path):
    store = tmp_path / "store"
    assert run("import", str(files["fibre"]), store=store).returncode == 0  # no manifest
    r = run("import", str(files["fibre"]), "--lots", str(files["manifest"]), "--json",
            store=store)  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["imports"][0]["already_imported"] is True
    assert doc["manifest_not_applied"] == ["C-001", "C-002", "B-001", "A-001"]
    assert "was not applied" in " ".join(r.stderr.split())
    lots = json.loads(run("lots", "--json", store=store).stdout)
    assert all(x["declared_type"] is None for x in lots)  # nothing rewritten


def test_lot_ids_print_whole_in_an_80_column_pipe(tmp_path):
    from fibergrade.store import Store

    ids = [f"MN-GOVI-ALTAI-2026-{k:04d}" for k in range(3)]
    lots = FibreLots(tuple(ids), np.array([0, 2, 4, 6]), np.full(6, 16.0, np.float32))
    Store.open(tmp_path / "s", create=True).import_fibres(
        lots,
        {
            i: LotMeta(i, declared_type="baby-camel", client="Gobi Cashmere Cooperative")
            for i in ids
        },
        source_name="x.csv",
        source_digest="0" * 64,
    )
    r = run("lots", store=tmp_path / "s", env=os.environ | {"COLUMNS": "80"})
    assert r.returncode == 0, r.stderr
    assert all(f" {i} " in r.stdout for i in ids) and r.stdout.count("baby-camel") == 3


def test_paths_that_cannot_be_used_are_one_line_errors(files, tmp_path):
    store = tmp_path / "store"
    run("import", str(files["fibre"]), store=store)
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    for args in (
        ("show", "C-001", "--plot", str(tmp_path / "h.txt")),  # not a PNG name
        ("keys", "init", "--dir", str(a_file)),
        ("demo", "--out", str(a_file), "--lots", "10"),
    ):
        r = run(*args, store=store if args[0] == "show" else None, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr and r.stderr.strip(), args
        assert ".png" in r.stderr if args[0] == "show" else "File exists" in r.stderr, args
    r = run("show", "C-001", "--plot", str(tmp_path / "h.png"), store=store)
    assert r.returncode == 0 and (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_import_does_not_load_heavy_libraries():
    """`fibergrade --help` stays fast: numba, h5py, scipy and matplotlib load only in commands."""
    code = (
        "import sys, fibergrade.cli; "
        "print(sorted(m for m in ('numba', 'h5py', 'matplotlib', 'scipy', 'sklearn', 'numpy') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    r = run("--help")
    assert r.returncode == 0 and "grade" in r.stdout and "demo" in r.stdout


@pytest.mark.slow
def test_demo_runs_end_to_end_and_is_idempotent(tmp_path):
    r = run("demo", "--lots", "40", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "demo-out"
    assert (out / "fibergrade-data" / "manifest.json").exists()
    pngs = list((out / "plots").glob("*.png"))
    assert pngs and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    assert "grades by declared type" in r.stdout
    # the table's legend counts the table's lots (it counted every lot of the day)
    table = r.stdout.split("lots that meet no grade", 1)[1].split("grades by declared type")[0]
    rows, _, legend = table.partition("<cal/>cal:")
    marked = rows.count("<cal") + rows.count(">cal")
    assert int(legend.split(" lot(s)", 1)[0] or 0) == marked
    r2 = run("demo", "--lots", "40", cwd=tmp_path)
    assert r2.returncode == 0 and "already in the store" in r2.stdout
    # part of the day streams live from a simulated analyser on a pty (issue 3)
    assert "acquire 8 lots live from simulated analyser" in r.stdout
    assert "weigh specimens on simulated MT-SICS balance" in r.stdout
    assert "8 lots live" in r2.stdout and "all already in the store" in r2.stdout
    assert "already weighed" in r2.stdout
    # it certifies its clean lots and checks one as an auditor would (issue 6)
    assert "auditor check of FG-" in r.stdout and "recomputation: ok" in r.stdout
    assert list((out / "certificates").glob("FG-*.pdf"))
    # and weighs carcass after carcass on a simulated CAS line, grades and certifies them
    assert "carcasses weighed live on simulated CAS" in r.stdout
    assert "12 linked to their live weighing record" in r.stdout
    assert "certified 12 carcasses" in r.stdout and "certified 0 carcasses" in r2.stdout


def test_grading_a_store_with_no_lots_says_so(tmp_path):
    """A store left with no lots (a refused first import leaves its folders) is graded to
    a sentence, not an empty table and a bare 'grades:'; nothing is recorded."""
    store = tmp_path / "s"
    (store / "segments").mkdir(parents=True)
    r = run("grade", store=store)
    assert r.returncode == 0 and "no lots in the store" in r.stdout and "grades:" not in r.stdout
    assert json.loads(run("grade", "--json", store=store).stdout) == []
    assert not (store / "results" / "grade").exists()


def test_a_lot_finer_than_declared_is_said_to_meet_both_grades(tmp_path):
    """An adult camel lot fine enough for baby camel is graded baby-camel; the note under
    the table read 'not adult-camel: ' with nothing after it, as if it had failed."""
    rng = np.random.default_rng(5)
    fibres = tmp_path / "fibres.csv"
    rows = [f"A-FINE,{d:.2f}" for d in rng.normal(16.0, 2.5, 400).clip(10, 25)]
    fibres.write_text("lot_id,diameter_um\n" + "\n".join(rows) + "\n")
    manifest = tmp_path / "lots.csv"
    manifest.write_text("lot_id,declared_type,origin,client\nA-FINE,adult-camel,MN,Gobi\n")
    store = tmp_path / "store"
    assert run("import", str(fibres), "--lots", str(manifest), store=store).returncode == 0
    r = run("grade", store=store)
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "not adult-camel" not in text
    assert "A-FINE: meets adult-camel as declared, and baby-camel" in text
