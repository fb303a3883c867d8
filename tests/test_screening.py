"""Screening (issue 5): features, synthetic sets, model files, verdicts, cards and the CLI.

Models here are trained small (a few hundred lots) so the file runs in well under a minute;
the shipped model in ``models/`` is trained once by ``fibergrade model train``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fibergrade.adapters.writers import write_fibre_csv, write_lot_manifest
from fibergrade.distribution import summarise
from fibergrade.errors import ModelError
from fibergrade.measurements import FibreLots, LotMeta
from fibergrade.screening import (
    CARD_JSON,
    MODEL_FILE,
    NOT_SCREENED,
    VERDICTS,
    ZIP_DATE_TIME,
    feature_names,
    features,
    load_model,
    screen,
    skops_bytes,
)
from fibergrade.screening_training import evaluate_model, train
from fibergrade.synthetic import (
    LotPlan,
    build_set,
    clean_cases,
    demo_day,
    generate,
    generate_with_params,
)

EXE = shutil.which("fibergrade", path=str(Path(sys.executable).parent)) or "fibergrade"
SMALL = {"n_train": 400, "n_validation": 120, "eval_scale": 0.02}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("model")
    train(11, d, **SMALL)
    return d


def _lots(specs: list[tuple[float, int, float, int]], seed: int = 3) -> FibreLots:
    """Lots of log-normal fibres: (MFD, n, coarse share, coarse MFD) each."""
    rng = np.random.default_rng(seed)
    parts = []
    for mfd, n, share, coarse in specs:
        d = rng.lognormal(np.log(mfd) - 0.02, 0.2, n)
        k = int(share * n)
        d[:k] = rng.lognormal(np.log(coarse), 0.15, k)
        parts.append(d)
    sizes = [len(p) for p in parts]
    return FibreLots(
        tuple(f"L{i}" for i in range(len(parts))),
        np.concatenate([[0], np.cumsum(sizes)]),
        np.clip(np.concatenate(parts), 2, 199).astype(np.float32),
        curvature_deg_mm=rng.uniform(45, 60, sum(sizes)).astype(np.float32),
        medullated=np.zeros(sum(sizes), bool),
    )


# --- synthetic ------------------------------------------------------------------------------


def test_demo_day_is_unchanged_by_the_residual_extension():
    day = demo_day(n_lots=40)
    again = generate(day.plan, np.random.default_rng(0))
    assert day.fibres.n_lots == 40 and again.n_lots == 40
    truth = [day.truth(x) for x in day.plan.lot_ids]
    assert any(t["contaminant"] for t in truth) or any(
        t["base"] == "adult-camel" and t["declared_type"] == "baby-camel" for t in truth
    )


def test_residual_hair_shows_in_the_coarse_tail():
    n = 4
    plan = LotPlan(
        [f"R{i}" for i in range(n)],
        ["mongolian-cashmere"] * n,
        [None] * n,
        np.zeros(n),
        np.full(n, 20000),
        residual=["coarse-hair", "coarse-hair", None, "coarse-hair"],
        residual_frac=np.array([0.0, 0.05, 0.05, 0.10]),
    )
    lots, params = generate_with_params(plan, np.random.default_rng(5))
    above30 = summarise(lots)["coarse_count_pct"]
    assert above30[0] < 0.5 and above30[2] < 0.5  # no residual: no coarse tail
    assert 2.0 < above30[1] < 8.0 and above30[3] > above30[1]
    assert np.all((params["mfd"] >= 15.0) & (params["mfd"] <= 16.8))


def test_build_set_keeps_only_summaries_with_both_instrument_kinds():
    rng = np.random.default_rng(2)
    s = build_set(clean_cases(rng, 60), rng, chunk_lots=25, histogram_share=0.5)
    assert s.summary.n_lots == 60
    assert set(s.summary.basis.tolist()) == {"fibres", "histogram"}
    assert np.all((s.summary.n >= 1000) & (s.summary.n <= 20000))
    hist = s.summary.basis == "histogram"
    assert np.all(np.isnan(s.summary["curvature_mean_deg_mm"][hist]))


# --- features -------------------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(
    mfd=st.floats(14.0, 24.0),
    share=st.floats(0.0, 0.3),
    n=st.integers(1000, 5000),
)
def test_features_are_finite_and_tails_are_ordered(mfd, share, n):
    summ = summarise(_lots([(mfd, n, share, 33.0)]))
    x = features(summ, ["cashmere"])
    names = feature_names()
    assert x.shape == (1, len(names))
    tails = [x[0, names.index(f"above_{c}um_pct")] for c in (20, 22, 25, 28, 30, 35, 40, 50)]
    assert all(0.0 <= t <= 100.0 for t in tails)
    assert all(a >= b for a, b in itertools.pairwise(tails))
    assert np.isfinite(x[0, names.index("log_skew")])
    assert x[0, names.index("declared_cashmere")] == 1.0


def test_coarse_tail_raises_the_tail_features():
    summ = summarise(_lots([(15.5, 3000, 0.0, 33.0), (15.5, 3000, 0.15, 33.0)]))
    x = features(summ, ["cashmere", "cashmere"])
    names = feature_names()
    for f in ("above_30um_pct", "excess_above_30um_pct", "log_skew", "coarse_mass_30um_pct"):
        j = names.index(f)
        assert x[1, j] > x[0, j] + 1e-6, f


# --- model files ----------------------------------------------------------------------------


def test_model_loads_and_screens_obvious_lots(model_dir):
    model = load_model(model_dir)
    assert len(model.digest) == 64
    summ = summarise(
        _lots([(15.6, 4000, 0.0, 33.0), (15.6, 4000, 0.25, 34.0), (21.5, 4000, 0.0, 30.0)])
    )
    res = screen(model, summ, ["cashmere", "cashmere", "baby-camel"])
    recs = res.records()
    assert recs[0]["verdict"] == "clean"
    assert recs[1]["verdict"] == "suspect-contamination"
    assert recs[2]["verdict"].startswith("suspect-")
    assert any("above 30 um" in r or "above 25 um" in r for r in recs[1]["reasons"])
    assert any("declared baby camel" in r for r in recs[2]["reasons"])
    for r in recs:
        assert set(r) >= {"lot_id", "verdict", "probability", "reasons", "model_digest"}
        assert r["model_digest"] == model.digest
        assert 0.0 <= r["probability"] <= 1.0
    assert recs[1]["confirm"].startswith("order a confirmatory test")
    assert "confirm" not in recs[0]


def test_lots_the_model_cannot_judge_are_not_screened(model_dir):
    model = load_model(model_dir)
    summ = summarise(_lots([(15.6, 4000, 0.0, 33.0), (15.6, 500, 0.0, 33.0)]))
    res = screen(model, summ, ["camel-hair", "cashmere"])
    assert list(res.verdict) == [NOT_SCREENED, NOT_SCREENED]
    assert "not one the model was trained for" in res.reasons[0][0]
    assert "at least 1,000" in res.reasons[1][0]
    assert res.records()[0]["probability"] is None
    # not flagged: nothing to confirm, the reasons say why the model could not judge
    assert all("confirm" not in r for r in res.records())


def _copy(model_dir: Path, tmp_path: Path) -> Path:
    d = tmp_path / "m"
    shutil.copytree(model_dir, d)
    return d


def test_missing_model_file_is_a_clear_error(model_dir, tmp_path):
    d = _copy(model_dir, tmp_path)
    (d / MODEL_FILE).unlink()
    with pytest.raises(ModelError, match="no screening model file"):
        load_model(d)
    with pytest.raises(ModelError, match="no screening model file") as exc:
        load_model(tmp_path / "nowhere")
    # an installed package has no models/ (not package data): the message says what to do
    assert "FIBERGRADE_MODEL_DIR" in str(exc.value)


def test_altered_model_file_is_refused(model_dir, tmp_path):
    d = _copy(model_dir, tmp_path)
    data = bytearray((d / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (d / MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(ModelError, match="altered"):
        load_model(d)


def _rewrite_card_digest(d: Path) -> None:
    card = json.loads((d / CARD_JSON).read_text())
    card["model_digest"] = hashlib.sha256((d / MODEL_FILE).read_bytes()).hexdigest()
    (d / CARD_JSON).write_text(json.dumps(card))


def test_wrong_type_or_untrusted_model_file_is_refused(model_dir, tmp_path):
    import skops.io as sio
    from sklearn.isotonic import IsotonicRegression

    d = _copy(model_dir, tmp_path)
    (d / MODEL_FILE).write_bytes(b"not a zip file at all")
    _rewrite_card_digest(d)
    with pytest.raises(ModelError, match="not a skops model file"):
        load_model(d)
    # a trusted type, but not the estimator (a type outside the list: the test below)
    sio.dump({"format": 1, "estimator": IsotonicRegression()}, d / MODEL_FILE)
    _rewrite_card_digest(d)
    with pytest.raises(ModelError, match="expected a calibrated classifier"):
        load_model(d)
    sio.dump([1, 2, 3], d / MODEL_FILE)
    _rewrite_card_digest(d)
    with pytest.raises(ModelError, match="not a fibergrade screening bundle"):
        load_model(d)
    (d / CARD_JSON).unlink()
    with pytest.raises(ModelError, match="model card is missing"):
        load_model(d)


_FRESH_LOAD = """
import sys
from pathlib import Path
from fibergrade.errors import ModelError
from fibergrade.screening import load_model
try:
    load_model(Path(sys.argv[1]))
except ModelError as e:
    print("refused:", e)
else:
    print("loaded")
print(sorted(m for m in ("sklearn.gaussian_process", "sklearn.neural_network",
                         "sklearn.semi_supervised") if m in sys.modules))
"""


def test_a_fresh_process_loads_the_model_without_scanning_scikit_learn(model_dir, tmp_path):
    """skops lists every scikit-learn estimator on import (importing every module, 0.5-1.5 s
    of each command that loads the model); loads name their trusted types themselves, so
    the scan is skipped. A model holding a type outside that list is refused all the same,
    whatever skops' own default list would have trusted."""
    run = [sys.executable, "-c", _FRESH_LOAD]
    r = subprocess.run([*run, str(model_dir)], capture_output=True, text=True, check=True)
    assert r.stdout.splitlines() == ["loaded", "[]"], r.stdout + r.stderr

    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    d = _copy(model_dir, tmp_path)
    sio.dump({"format": 1, "estimator": LogisticRegression()}, d / MODEL_FILE)
    _rewrite_card_digest(d)
    r = subprocess.run([*run, str(d)], capture_output=True, text=True, check=True)
    assert "holds types outside the trusted list, refused" in r.stdout, r.stdout + r.stderr
    assert "sklearn.linear_model._logistic.LogisticRegression" in r.stdout


def test_cards_carry_metrics_sources_and_honesty(model_dir):
    card = json.loads((model_dir / CARD_JSON).read_text())
    ev = card["evaluation"]
    assert len(ev["confusion_matrix"]["counts"]) == 3
    assert {c["contaminant"] for c in ev["detection_limits"]} >= {"coarse-wool", "coarse-hair"}
    assert {c["blend_pct"] for c in ev["detection_limits"]} == {1, 2, 3, 5, 10, 20, 30}
    assert len(ev["targets"]) == 3 and 0.0 <= ev["false_alarm_rate"] <= 1.0
    assert card["training"]["data_digest"] and card["library_versions"]["skops"]
    md = (model_dir / "model-card.md").read_text()
    for text in ("IWTO-58", "DNA", "fine wool", "fibre.md", "Detection-limit table"):
        assert text in md
    data = (model_dir / "data-card.md").read_text()
    for text in ("mongolian-cashmere", "guard-hair", "[unsourced]", "fibre.md", "Case mix"):
        assert text in data


def test_model_file_bytes_depend_only_on_the_model(model_dir, monkeypatch):
    # skops.io.dump names arrays by id() and dates members with the clock: a model saved
    # twice gave two SHA-256s, and every certificate names the model's SHA-256
    import copy
    import io
    import time
    import zipfile

    import skops.io as sio

    est = load_model(model_dir).estimator
    first = skops_bytes({"estimator": est, "threshold": 0.25})
    monkeypatch.setattr(time, "time", lambda: 2_000_000_000.0)  # another day, another id()
    second = skops_bytes({"estimator": copy.deepcopy(est), "threshold": 0.25})
    assert first == second
    members = zipfile.ZipFile(io.BytesIO(first)).infolist()
    assert {m.date_time for m in members} == {ZIP_DATE_TIME}
    back = sio.loads(first, trusted=sio.get_untrusted_types(data=first))
    x = np.random.default_rng(0).uniform(0, 30, (5, len(feature_names())))
    assert np.array_equal(back["estimator"].predict_proba(x), est.predict_proba(x))


def test_training_is_deterministic_and_evaluate_recomputes_the_card(model_dir, tmp_path):
    again = train(11, tmp_path / "again", **SMALL)
    card = json.loads((model_dir / CARD_JSON).read_text())
    assert (again.out_dir / MODEL_FILE).read_bytes() == (model_dir / MODEL_FILE).read_bytes()
    assert again.card["model_digest"] == card["model_digest"]
    assert again.card["training"]["data_digest"] == card["training"]["data_digest"]
    assert again.card["threshold"]["p_clean_below"] == card["threshold"]["p_clean_below"]
    assert again.card["evaluation"] == card["evaluation"]
    result = evaluate_model(model_dir)
    assert result["matches_card"] is True


# --- CLI ------------------------------------------------------------------------------------


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [EXE, *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )


@pytest.mark.slow
@pytest.mark.integration
def test_cli_train_is_bit_reproducible_whatever_the_thread_count(tmp_path):
    # README: a lab rebuilds models/ with `fibergrade model train --seed ...` and must get
    # the same file, or every certificate naming the model's SHA-256 fails `verify`. Two
    # processes (different id()s and clocks), one and two threads in numba's pool and in
    # OpenMP/BLAS (scikit-learn's binner records the OpenMP thread count it was fitted with)
    out = {}
    for threads in ("1", "2"):
        env = dict(os.environ)
        env |= {"NUMBA_NUM_THREADS": threads, "OMP_NUM_THREADS": threads}
        env["OPENBLAS_NUM_THREADS"] = threads
        mdir = tmp_path / f"threads-{threads}"
        r = _run(
            "model", "train", "--seed", "7", "--lots", "200", "--validation-lots", "60",
            "--eval-scale", "0.01", "--out", str(mdir), "--json", env=env,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        card = json.loads((mdir / CARD_JSON).read_text())
        out[threads] = ((mdir / MODEL_FILE).read_bytes(), card)
    (one, card1), (two, card2) = out["1"], out["2"]
    assert one == two
    assert card1["model_digest"] == card2["model_digest"] == hashlib.sha256(one).hexdigest()
    assert card1["training"]["data_digest"] == card2["training"]["data_digest"]
    assert card1["evaluation"] == card2["evaluation"]


@pytest.mark.integration
def test_cli_train_screen_grade_and_errors(tmp_path):
    env = dict(os.environ)
    mdir = tmp_path / "models"
    env["FIBERGRADE_MODEL_DIR"] = str(mdir)
    r = _run(
        "model", "train", "--seed", "5", "--lots", "200", "--validation-lots", "60",
        "--eval-scale", "0.01", "--out", str(mdir), "--json", env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    trained = json.loads(r.stdout)
    assert (mdir / MODEL_FILE).is_file() and trained["model_digest"]

    lots = _lots([(15.6, 3000, 0.0, 33.0), (15.6, 3000, 0.2, 34.0), (16.2, 2500, 0.0, 30.0)])
    write_fibre_csv(tmp_path / "ofda.csv", lots)
    declared = ["cashmere", "cashmere", "baby-camel"]
    write_lot_manifest(
        tmp_path / "lots.csv",
        [
            LotMeta(x, declared_type=t, origin="MN", client="Test Client")
            for x, t in zip(lots.lot_ids, declared, strict=True)
        ],
    )
    store = str(tmp_path / "store")
    r = _run("import", str(tmp_path / "ofda.csv"), "--lots", str(tmp_path / "lots.csv"),
             "--store", store, env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr

    r = _run("screen", "--store", store, "--json", env=env)
    assert r.returncode == 0, r.stderr
    recs = json.loads(r.stdout)
    assert [x["lot_id"] for x in recs] == list(lots.lot_ids)
    for x in recs:
        assert set(x) >= {"lot_id", "verdict", "probability", "reasons", "model_digest"}
        assert x["verdict"] in VERDICTS
        assert x["model_digest"] == trained["model_digest"]
    assert recs[1]["verdict"] == "suspect-contamination" and recs[1]["reasons"]
    assert list((tmp_path / "store" / "results" / "screening").glob("*.json"))

    r = _run("screen", "L1", "--store", store, env=env)
    assert r.returncode == 0, r.stderr
    assert "suspect-contamination" in r.stdout and "IWTO-58" in r.stdout

    r = _run("grade", "--store", store, "--json", "--uncalibrated", env=env)
    assert r.returncode == 0, r.stderr
    graded = json.loads(r.stdout)
    assert graded[1]["screening"]["verdict"] == "suspect-contamination"
    assert graded[1]["screening"]["model_digest"] == trained["model_digest"]

    r = _run("model", "evaluate", "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["matches_card"] is True

    (mdir / MODEL_FILE).write_bytes(b"tampered")
    r = _run("screen", "--store", store, env=env)
    assert r.returncode == 4
    assert "altered" in r.stderr and "Traceback" not in r.stderr
    r = _run("screen", "--store", store, "--model-dir", str(tmp_path / "none"), env=env)
    assert r.returncode == 4 and "no screening model file" in r.stderr
