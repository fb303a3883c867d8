"""Standards as data files, boundaries, per-criterion verdicts and undefined figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fibergrade.distribution import summarise
from fibergrade.errors import StandardDefinitionError
from fibergrade.grading import grade, list_standards, load_standard, standard_for_type
from fibergrade.measurements import FibreLots


def lots_of(*diameter_lists: list[float]) -> FibreLots:
    sizes = [len(x) for x in diameter_lists]
    off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    d = np.concatenate([np.asarray(x, np.float32) for x in diameter_lists] or [np.zeros(0)])
    return FibreLots(tuple(f"L{i}" for i in range(len(sizes))), off, d)


def test_packaged_standards_have_ids_versions_and_sources():
    stds = {s.id: s for s in list_standards()}
    assert set(stds) >= {"us-wpla-cashmere", "gb18267-cashmere", "fibergrade-camel"}
    for s in stds.values():
        assert s.version and s.title and s.source and len(s.digest) == 64
        for g in s.grades:
            for c in g.criteria:
                assert c.source, f"{s.id}/{g.id}/{c.name} cites no source"
    assert "15 U.S.C. 68b" in stds["us-wpla-cashmere"].source
    assert "own" in stds["fibergrade-camel"].title  # says plainly it is the house scheme
    wpla = {c.figure: (c.op, c.limit) for c in stds["us-wpla-cashmere"].grades[0].criteria}
    assert wpla == {"mfd_um": ("<=", 19.0), "coarse_mass_pct": ("<=", 3.0), "cv_pct": ("<=", 24.0)}


def test_gb18267_boundaries_belong_to_the_finer_type():
    std = load_standard("gb18267-cashmere")
    # lots with exactly these means (two equal fibres each: SD 0)
    means = [14.5, 14.6, 16.0, 16.1]
    s = summarise(lots_of(*[[m, m] for m in means]))
    assert grade(s, std).grade_ids() == ["superfine", "fine", "fine", "coarse"]


def test_us_cashmere_limits_are_inclusive_and_every_criterion_is_reported():
    std = load_standard("us-wpla-cashmere")
    s = summarise(lots_of([19.0, 19.0], [19.2, 19.2]))
    res = grade(s, std)
    assert res.grade_ids() == ["cashmere", None]
    rec = res.records()[1]
    mfd = next(c for c in rec["criteria"] if c["figure"] == "mfd_um")
    assert mfd == {
        "grade": "cashmere",
        "name": "mean fibre diameter",
        "figure": "mfd_um",
        "op": "<=",
        "value": pytest.approx(19.2, abs=1e-5),
        "limit": 19.0,
        "passed": False,
        "evaluable": True,
    }
    assert rec["standard"]["id"] == "us-wpla-cashmere" and rec["standard"]["version"] == "1"


def test_coarse_mass_criterion_uses_d_squared_weighting():
    std = load_standard("us-wpla-cashmere")
    # 97 fibres of 15 um and 3 of 31 um: 3 % by count, 11.7 % by mass -> not cashmere
    s = summarise(lots_of([15.0] * 97 + [31.0] * 3))
    rec = grade(s, std).records()[0]
    by = {c["figure"]: c for c in rec["criteria"]}
    assert by["coarse_mass_pct"]["value"] == pytest.approx(100 * 3 * 961 / (97 * 225 + 3 * 961))
    assert not by["coarse_mass_pct"]["passed"] and rec["grade"] is None


def test_camel_scheme_gives_the_best_grade_met():
    std = load_standard("fibergrade-camel")
    s = summarise(lots_of([16.5] * 10, [21.0] * 10, [35.0] * 10, [60.0] * 10, [16.5] * 9 + [40]))
    assert grade(s, std).grade_ids() == [
        "baby-camel",
        "adult-camel",
        "camel-hair",
        None,
        "adult-camel",
    ]


def test_baby_camel_coarse_hair_limit_is_by_count():
    """fibre.md: "< 1% coarse hair" with no basis; the house scheme reads it by count (the
    synthetic populations' reading): 0.8 % of fibres at 35 um is 2.7 % by mass."""
    std = load_standard("fibergrade-camel")
    s = summarise(lots_of([16.0] * 992 + [35.0] * 8, [16.0] * 990 + [35.0] * 10))
    assert s["coarse_mass_pct"][0] > 1.0 and s["coarse_count_pct"][0] < 1.0
    assert grade(s, std).grade_ids() == ["baby-camel", "adult-camel"]


def test_undefined_figures_are_not_evaluable_and_never_pass():
    std = load_standard("us-wpla-cashmere")
    s = summarise(lots_of([], [15.0]))
    res = grade(s, std)
    assert res.grade_ids() == [None, None]
    empty, single = res.records()
    assert all(not c["evaluable"] and c["value"] is None for c in empty["criteria"])
    cv = next(c for c in single["criteria"] if c["figure"] == "cv_pct")
    assert cv["evaluable"] is False and cv["passed"] is False


def test_grading_is_vectorised_and_agrees_with_a_per_lot_loop():
    rng = np.random.default_rng(5)
    diam = [list(rng.lognormal(np.log(m), 0.22, 500)) for m in rng.uniform(13, 22, 300)]
    s = summarise(lots_of(*diam))
    std = load_standard("gb18267-cashmere")
    together = grade(s, std).grade_ids()
    one_by_one = [grade(s.select([i]), std).grade_ids()[0] for i in range(s.n_lots)]
    assert together == one_by_one


def test_standard_for_type():
    assert standard_for_type("cashmere").id == "us-wpla-cashmere"
    assert standard_for_type("baby-camel").id == "fibergrade-camel"
    assert standard_for_type("yak") is None and standard_for_type(None) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id = 'x'\n", "missing required key"),
        (
            "id='x'\nversion='1'\ntitle='t'\nsource='s'\napplies_to=['cashmere']\ncut_um=30\n"
            "colour='red'\ngrades=[]\n",
            "unknown key",
        ),
        (
            "id='x'\nversion='1'\ntitle='t'\nsource='s'\napplies_to=['cashmere']\ncut_um=30\n"
            "[[grades]]\nid='a'\ntitle='A'\n[[grades.criteria]]\nname='m'\nfigure='mfd_um'\n"
            "op='=<'\nlimit=19\n",
            "operator",
        ),
        (
            "id='x'\nversion='1'\ntitle='t'\nsource='s'\napplies_to=['cashmere']\ncut_um=30\n"
            "[[grades]]\nid='a'\ntitle='A'\n[[grades.criteria]]\nname='m'\nfigure='mfd'\n"
            "op='<='\nlimit=19\n",
            "unknown figure",
        ),
        (
            "id='x'\nversion='1'\ntitle='t'\nsource='s'\napplies_to=['alpaca']\ncut_um=30\n"
            "grades=[]\n",
            "unknown fibre type",
        ),
        ("this is = = not toml", "not a valid"),
        *(
            (
                f"id='x'\nversion='1'\ntitle='t'\nsource='s'\napplies_to=['cashmere']\n"
                f"cut_um={cut}\n[[grades]]\nid='a'\ntitle='A'\n[[grades.criteria]]\n"
                "name='m'\nfigure='mfd_um'\nop='<='\nlimit=19\n",
                r"mine\.toml: cut_um must lie in \(0, 200\) um",
            )
            for cut in ("nan", "-1", "0", "200", "inf")
        ),
    ],
)
def test_malformed_standard_files_are_refused(tmp_path, text, message):
    p = tmp_path / "mine.toml"
    p.write_text(text)
    with pytest.raises(StandardDefinitionError, match=message):
        load_standard(p)


def test_a_lab_can_add_its_own_standard_file(tmp_path):
    p = tmp_path / "super-s.toml"
    p.write_text(
        "id='super-150s'\nversion='2024'\ntitle='Super 150s'\nsource='cashmere.org (fibre.md)'\n"
        "applies_to=['cashmere']\ncut_um=30.0\n[[grades]]\nid='150s'\ntitle='Super 150s'\n"
        "[[grades.criteria]]\nname='mean fibre diameter'\nfigure='mfd_um'\nop='<='\n"
        "limit=16.25\nsource='Super 150s <= 16.25 um'\n"
    )
    std = load_standard(p)
    assert grade(summarise(lots_of([16.0, 16.0], [16.5, 16.5])), std).grade_ids() == ["150s", None]


def test_unknown_standard_id_lists_the_packaged_ones():
    with pytest.raises(StandardDefinitionError, match="us-wpla-cashmere"):
        load_standard("no-such-standard")


def test_a_standard_file_that_is_not_there_is_named_as_a_missing_file(tmp_path):
    with pytest.raises(StandardDefinitionError, match=r"missing\.toml: no such standard file"):
        load_standard(tmp_path / "missing.toml")


PACKAGED_WPLA = Path(__file__).parents[1] / "src/fibergrade/standards/us-wpla-cashmere.toml"


def test_a_file_reusing_a_packaged_standards_id_and_version_with_other_limits_is_refused(
    tmp_path,
):
    """The auditor's forgery: a copy of us-wpla-cashmere.toml with the CV limit 30 graded a
    CV 24 % lot "cashmere" under "us-wpla-cashmere v1". Changing a file is a new version."""
    text = PACKAGED_WPLA.read_text()
    assert "limit = 24.0" in text
    own = tmp_path / "own.toml"
    own.write_text(text.replace("limit = 24.0", "limit = 30.0", 1))
    with pytest.raises(StandardDefinitionError) as exc:
        load_standard(own)
    msg = str(exc.value)
    assert str(own) in msg and "us-wpla-cashmere.toml" in msg
    assert "its own id" in msg and "new version" in msg
    # the packaged file itself, or a byte-identical copy, is that standard
    same = tmp_path / "same.toml"
    same.write_bytes(PACKAGED_WPLA.read_bytes())
    assert load_standard(same).digest == load_standard("us-wpla-cashmere").digest
    # its own id, or a new version, is a lab's own standard
    relabelled = text.replace('id = "us-wpla-cashmere"', 'id = "lab-cashmere"', 1)
    (tmp_path / "lab.toml").write_text(relabelled.replace("limit = 24.0", "limit = 30.0", 1))
    assert load_standard(tmp_path / "lab.toml").id == "lab-cashmere"
    version = load_standard("us-wpla-cashmere").version
    bumped = text.replace(f'version = "{version}"', f'version = "{version}-lab2"', 1)
    assert bumped != text
    (tmp_path / "v2.toml").write_text(bumped.replace("limit = 24.0", "limit = 30.0", 1))
    assert load_standard(tmp_path / "v2.toml").version == f"{version}-lab2"
