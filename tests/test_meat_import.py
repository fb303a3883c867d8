"""Carcass and halal CSV import: validation boundaries, refusals, store behaviour."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fibergrade.errors import InputError, StoredIdConflictError
from fibergrade.meat.carcasses import read_carcass_csv
from fibergrade.meat.halal import read_halal_csv
from fibergrade.meat.traceability import (
    grade_store,
    import_carcasses,
    import_halal,
    scale_limit,
    trace,
)
from fibergrade.store import Store
from meat_helpers import carcass_rows, halal_row, write_csv

DATA = Path(__file__).parent / "data" / "meat"


def read(tmp_path: Path, name: str = "c.csv", **overrides) -> dict:
    p = write_csv(tmp_path / name, carcass_rows(1, **overrides))
    return read_carcass_csv(p, scale_of=scale_limit).columns


def refused(tmp_path: Path, match: str, line: int = 3, **overrides) -> InputError:
    p = write_csv(tmp_path / "bad.csv", carcass_rows(1, **overrides))
    with pytest.raises(InputError, match=match) as exc:
        read_carcass_csv(p, scale_of=scale_limit)
    assert exc.value.line == line and exc.value.path == str(p)
    return exc.value


def test_example_files_read():
    b = read_carcass_csv(DATA / "carcasses.csv", scale_of=scale_limit)
    assert b.n == 5 and b.columns["scale_max_kg"] == [300.0] * 5
    h = read_halal_csv(DATA / "halal.csv")
    assert len(h.records) == 3 and h.records[1]["stun"]["stun_shots"] == 1


@pytest.mark.parametrize("n", [0, 8])
def test_incisors_within_eight_accepted(tmp_path, n):
    assert read(tmp_path, incisors_erupted=n, incisors_in_wear=n)["incisors_in_wear"] == [n]


def test_more_than_eight_incisors_refused(tmp_path):
    refused(tmp_path, "more than the 8 incisors", incisors_erupted=9, incisors_in_wear=0)
    refused(tmp_path, "incisors_in_wear", incisors_erupted=2, incisors_in_wear=3)
    refused(tmp_path, "negative", incisors_erupted=-1)


@pytest.mark.parametrize("ph", [4.5, 8.0])
def test_ph_limits_accepted(tmp_path, ph):
    assert read(tmp_path, ph_ultimate=ph)["ph_ultimate"] == [ph]


@pytest.mark.parametrize("ph", [4.49, 8.01, "nan", ""])
def test_ph_outside_limits_refused(tmp_path, ph):
    refused(tmp_path, "ph_ultimate", ph_ultimate=ph)


def test_weight_and_gr_refused_never_clipped(tmp_path):
    refused(tmp_path, "not above zero", hscw_kg=0)
    refused(tmp_path, "not above zero", hscw_kg=-1.5)
    refused(tmp_path, "gr_mm '-0.1' is negative", gr_mm=-0.1)
    assert read(tmp_path, gr_mm=0)["gr_mm"] == [0.0]


def test_weight_against_scale_max(tmp_path):
    assert read(tmp_path, hscw_kg=300, scale_profile="cas-ci")["scale_max_kg"] == [300.0]
    err = refused(tmp_path, "above the Max", hscw_kg=300.1, scale_profile="cas-ci")
    assert "300" in str(err) and "grams" not in str(err)
    # a weight typed in grams is refused the same, with a hint at the unit
    err = refused(tmp_path, "above the Max", hscw_kg=21400, scale_profile="cas-ci")
    assert "in grams? the column is in kilograms" in str(err)
    refused(tmp_path, "scale_profile 'no-such-scale'", scale_profile="no-such-scale")
    # without a scale the weight cannot be checked against a Max: recorded as unknown
    assert read(tmp_path, hscw_kg=500)["scale_max_kg"] == [None]


def test_default_scale_applies_to_rows_without_profile(tmp_path):
    p = write_csv(tmp_path / "c.csv", carcass_rows(1, hscw_kg=301))
    with pytest.raises(InputError, match="above the Max"):
        read_carcass_csv(p, scale_of=scale_limit, default_scale="cas-ci")


@pytest.mark.parametrize(("weighed", "delay"), [("08:00:00", 0), ("09:00:00", 3600)])
def test_weighing_times(tmp_path, weighed, delay):
    cols = read(tmp_path, weighed_at=f"2026-03-02T{weighed}+05:00")
    assert cols["weigh_delay_s"] == [delay]


def test_weighing_before_slaughter_or_mixed_zones_refused(tmp_path):
    refused(tmp_path, "before slaughtered_at", weighed_at="2026-03-02T07:59:59+05:00")
    refused(tmp_path, "mix a time", weighed_at="2026-03-02T08:30:00")
    refused(tmp_path, "not an ISO 8601", weighed_at="02/03/2026 08:30")


def test_other_refusals(tmp_path):
    refused(tmp_path, "sex 'bull'", sex="bull")
    refused(tmp_path, "ssc is yes on a female", sex="ewe", ssc="yes")
    refused(tmp_path, "l_star", l_star=100.5)
    refused(tmp_path, "weight_mode", weight_mode="fast")


@pytest.mark.parametrize(
    ("carcass_id", "words"),
    [("C/../x", "path separator '/'"), ("..\\x", "starts with '.'"), ("C:1", "':'")],
)
def test_a_carcass_id_that_could_leave_the_certificate_folder_is_refused(
    tmp_path, carcass_id, words
):
    """A carcass id names certificate files (FGM-<carcass_id>-01.json): it follows the
    lot-id rule (measurements.LOT_ID_RULE), as fibre lot ids do."""
    err = refused(tmp_path, "carcass_id", carcass_id=carcass_id)
    assert words in err.message and err.expected is not None and "ASCII letter" in err.expected
    assert read(tmp_path, carcass_id="KZ-C_0001.a")["carcass_id"] == ["KZ-C_0001.a"]


@pytest.mark.parametrize(
    ("column", "value", "ok"),
    [
        ("temp_c", -40, True),
        ("temp_c", 50, True),
        ("temp_c", 900, False),
        ("temp_c", -40.5, False),
        ("temp_at_ph6_c", 21, True),
        ("temp_at_ph6_c", "", True),
        ("temp_at_ph6_c", 120, False),
        ("a_star", -128, True),
        ("a_star", 127, True),
        ("a_star", 300, False),
        ("b_star", -129, False),
    ],
)
def test_impossible_temperatures_and_colours_are_refused(tmp_path, column, value, ok):
    if ok:
        got = read(tmp_path, **{column: value})[column]
        assert got == [None if value == "" else float(value)]
    else:
        refused(tmp_path, f"{column} '{value}' is outside", **{column: value})


def test_duplicate_ids_in_file_name_both_lines(tmp_path):
    rows = carcass_rows(3)
    rows[2]["carcass_id"] = "C-1"
    p = write_csv(tmp_path / "dup.csv", rows)
    with pytest.raises(InputError, match="already on line 3") as exc:
        read_carcass_csv(p)
    assert exc.value.line == 5


def test_missing_column_and_unknown_column(tmp_path):
    rows = carcass_rows(1)
    del rows[0]["gr_mm"]
    with pytest.raises(InputError, match="missing required column"):
        read_carcass_csv(write_csv(tmp_path / "a.csv", rows))
    rows = carcass_rows(1, grmm=3)
    with pytest.raises(InputError, match="unknown column"):
        read_carcass_csv(write_csv(tmp_path / "b.csv", rows))


def test_optional_empty_means_not_recorded(tmp_path):
    cols = read(tmp_path, milk_fed="", days_off_shears="", vendor_declaration="yes")
    assert cols["milk_fed"] == [None] and cols["days_off_shears"] == [None]
    assert cols["vendor_declaration"] == [True]
    refused(tmp_path, "days_off_shears", days_off_shears=-1)


NUMERIC = ["hscw_kg", "gr_mm", "ph_ultimate", "temp_c", "l_star", "a_star", "b_star"]


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(1, 6),
    row=st.integers(0, 5),
    column=st.sampled_from(NUMERIC),
    junk=st.sampled_from(["", "abc", "1,5", "nan", "inf", "1_0", "5..2", "--3"]),
)
def test_garbage_in_any_numeric_cell_names_its_line(tmp_path, n, row, column, junk):
    rows = carcass_rows(n)
    row = row % n
    rows[row][column] = junk if junk != "1,5" else '"1,5"'
    p = write_csv(tmp_path / "g.csv", rows)
    with pytest.raises(InputError) as exc:
        read_carcass_csv(p)
    assert exc.value.line == row + 3
    assert column in str(exc.value)


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    weights=st.lists(st.floats(0.1, 299.9, allow_nan=False), min_size=1, max_size=20),
    grs=st.floats(0, 50),
    ph=st.floats(4.5, 8.0),
)
def test_valid_values_round_trip(tmp_path, weights, grs, ph):
    rows = carcass_rows(len(weights), gr_mm=repr(grs), ph_ultimate=repr(ph))
    for r, w in zip(rows, weights, strict=True):
        r["hscw_kg"] = repr(w)
    cols = read_carcass_csv(write_csv(tmp_path / "r.csv", rows)).columns
    assert cols["hscw_kg"] == weights
    assert cols["gr_mm"] == [grs] * len(weights)


# ------------------------------------------------------------------ halal


def halal_file(tmp_path: Path, **overrides) -> Path:
    return write_csv(tmp_path / "h.csv", [halal_row(**overrides)])


def halal_refused(tmp_path: Path, match: str, **overrides) -> None:
    with pytest.raises(InputError, match=match) as exc:
        read_halal_csv(halal_file(tmp_path, **overrides))
    assert exc.value.line == 3


PNEUMATIC = {"stun_method": "pneumatic", "stun_pressure_psi": 225, "stun_shots": 1}


def test_pneumatic_stun_limits(tmp_path):
    ok = read_halal_csv(halal_file(tmp_path, **PNEUMATIC, bolt_diameter_mm=3))
    assert ok.records[0]["stun"]["stun_pressure_psi"] == 225
    halal_refused(
        tmp_path,
        "above the pneumatic limit 225",
        **PNEUMATIC | {"stun_pressure_psi": 225.1},
        bolt_diameter_mm=3,
    )
    halal_refused(
        tmp_path, "stun_shots 2 is above", **PNEUMATIC | {"stun_shots": 2}, bolt_diameter_mm=3
    )
    halal_refused(tmp_path, "bolt_diameter_mm 3.1", **PNEUMATIC, bolt_diameter_mm=3.1)
    for shots in (0, -3):
        halal_refused(
            tmp_path,
            f"stun_shots '{shots}' is not a count of shots fired",
            **PNEUMATIC | {"stun_shots": shots},
            bolt_diameter_mm=3,
        )
    halal_refused(tmp_path, "needs bolt_diameter_mm", **PNEUMATIC)


def test_stun_parameters_of_another_method_refused(tmp_path):
    halal_refused(tmp_path, "given but stun_method is none", stun_pressure_psi=100)
    halal_refused(tmp_path, "not accepted", stun_method="captive-bolt")


def test_electrical_stun_cannot_be_validated_without_limits(tmp_path):
    rows = [halal_row(stun_method="electrical-head-only")]
    header = [*rows[0], "stun_current_a", "stun_duration_s"]
    rows[0] |= {"stun_current_a": 1.0, "stun_duration_s": 3}
    with pytest.raises(InputError, match="sets no limit"):
        read_halal_csv(write_csv(tmp_path / "e.csv", rows, header))


def test_alive_at_cut_and_registrations(tmp_path):
    halal_refused(tmp_path, "not confirmed alive", alive_at_cut="no")
    halal_refused(tmp_path, "alive_at_cut is missing", alive_at_cut="")
    halal_refused(tmp_path, "slaughterman_registration is missing", slaughterman_registration="")
    halal_refused(tmp_path, "checker_registration is missing", checker_registration="")
    halal_refused(tmp_path, "checker_id is missing", checker_id="")


@pytest.mark.parametrize(
    ("expiry", "ok"), [("2026-03-02", True), ("2026-03-01", False), ("2027-01-01", True)]
)
def test_certificate_valid_on_slaughter_date(tmp_path, expiry, ok):
    p = halal_file(tmp_path, certificate_expiry=expiry)
    if ok:
        assert read_halal_csv(p).records[0]["certificate_expiry"] == expiry
    else:
        with pytest.raises(InputError, match="expired on 2026-03-01"):
            read_halal_csv(p)


# ------------------------------------------------------------------ store


def result_files(root: Path) -> list[str]:
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*.json") if "manifest" not in p.name
    )


def test_store_reimport_duplicates_and_nothing_partial(tmp_path):
    st = Store.open(tmp_path / "s", create=True)
    first = import_carcasses(st, DATA / "carcasses.csv", scale="cas-ci")
    again = import_carcasses(st, DATA / "carcasses.csv", scale="cas-ci")
    assert again.already_imported and again.record == first.record
    before = result_files(st.root)
    # a second file repeating a stored carcass id is refused, naming the source file
    rows = carcass_rows(2)
    rows[1]["carcass_id"] = "KZ-C-0003"
    p = write_csv(tmp_path / "more.csv", rows)
    with pytest.raises(
        StoredIdConflictError, match=r"already in the store from carcasses\.csv"
    ) as exc:
        import_carcasses(st, p)
    assert exc.value.line == 4
    # a bad row late in a file stores nothing
    rows = carcass_rows(3)
    rows[2]["ph_ultimate"] = 9
    with pytest.raises(InputError):
        import_carcasses(st, write_csv(tmp_path / "late.csv", rows))
    assert result_files(st.root) == before
    # a halal record whose carcass is another animal is refused
    h = write_csv(tmp_path / "h.csv", [halal_row(carcass_id="KZ-C-0001", animal_id="X")])
    with pytest.raises(InputError, match="in the carcass records"):
        import_halal(st, h)
    assert result_files(st.root) == before


def test_failed_inspection_or_no_vendor_declaration_is_kept_but_not_halal(tmp_path):
    st = Store.open(tmp_path / "s", create=True)
    import_carcasses(st, write_csv(tmp_path / "c.csv", carcass_rows(4)))
    rows = [
        halal_row(carcass_id=f"C-{k}", animal_id=f"A-{k}", certificate_number="HC-1")
        for k in (1, 2, 3, 4)
    ]
    rows[1]["ante_mortem"] = "fail"
    rows[2] |= {"post_mortem": "FAIL", "vendor_declaration": "no"}
    rows[3]["post_mortem"] = "fail"
    halal = import_halal(st, write_csv(tmp_path / "h.csv", rows))  # on record, all four
    records, _ = grade_store(st)
    by_id = {r["carcass_id"]: r["halal"] for r in records}
    assert by_id["C-1"] == {
        "status": "validated",
        "record": halal.record,
        "certificate_number": "HC-1",
    }
    assert by_id["C-2"]["status"] == "failed" and by_id["C-2"]["record"] == halal.record
    assert by_id["C-2"]["problems"] == ["ante-mortem inspection: fail"]
    assert by_id["C-3"]["problems"] == ["no vendor declaration", "post-mortem inspection: fail"]
    assert by_id["C-4"]["problems"] == ["post-mortem inspection: fail"]
    slaughter = trace(st, "C-4")["chains"][0][1]
    assert slaughter["post_mortem"] == "fail" and slaughter["ante_mortem"] == "pass"
    assert slaughter["halal_problems"] == ["post-mortem inspection: fail"]


def weighing_of_c1() -> dict:
    """A stable weighing record of carcass KZ-C-0001 that gives its hscw_kg (21.4 kg)."""
    return {
        "kind": "weighing",
        "created_at": "2026-03-02T03:40:00Z",
        "scale_id": "CAS-L1",
        "profile": "cas-ci",
        "protocol": "cas",
        "value": 21.4,
        "unit": "kg",
        "mode": "stable",
        "device_stable": True,
        "timestamp": "2026-03-02T03:40:00Z",
        "subject": "KZ-C-0001",
    }


def test_grade_and_trace_link_records(tmp_path):
    st = Store.open(tmp_path / "s", create=True)
    import_carcasses(st, DATA / "carcasses.csv")
    halal = import_halal(st, DATA / "halal.csv")
    weigh = st.put_result("weighing", weighing_of_c1())
    records, rid = grade_store(st)
    assert rid and len(records) == 5
    by_id = {r["carcass_id"]: r for r in records}
    assert by_id["KZ-C-0001"]["weighing"]["record"] == weigh
    assert by_id["KZ-C-0001"]["halal"]["record"] == halal.record
    assert by_id["KZ-C-0004"]["halal"] == {"status": "no slaughter record", "record": None}
    t = trace(st, "982000411000001")
    assert t["matched"] == ["animal"]
    chain = t["chains"][0]
    assert [x["link"] for x in chain] == ["animal", "slaughter", "carcass", "lot", "certificate"]
    assert chain[1]["record"] == halal.record and len(chain[1]["digest"]) == 64
    assert chain[2]["weighing_record"] == weigh and chain[2]["grade_record"] == rid
    assert chain[4] == {"link": "certificate", "status": "no certificate issued", "digest": None}
    assert len(trace(st, "KZ-LOT-2026-031")["chains"]) == 4
    assert len(trace(st, "HC-2025-0881")["chains"]) == 3


def test_a_scale_option_that_is_no_scale_profile_is_refused_even_when_unused(tmp_path):
    from fibergrade.adapters.errors import ProfileError

    st = Store.open(tmp_path / "s", create=True)
    with pytest.raises(ProfileError):  # every row names its own scale_profile
        import_carcasses(st, DATA / "carcasses.csv", scale="nosuch")
    assert list(st.results("carcasses")) == []


@pytest.mark.parametrize(
    ("fields", "flag"),
    [
        ({}, None),
        ({"value": 21.5}, "hscw_kg 21.4 differs from weighing record"),
        ({"value": 21400.0, "unit": "g"}, None),
        ({"unit": "lb"}, "has no weight in kg or g to compare"),
        ({"mode": "immediate", "device_stable": False}, "immediate reading (not stable on"),
        ({"mode": "immediate", "device_stable": True}, "immediate reading (stable on the"),
    ],
)
def test_the_weighing_record_a_carcass_weight_links_to_is_checked(tmp_path, fields, flag):
    """The linked weighing record must give the carcass's hscw_kg, in kg or g, from a
    stable weighing (scales.md: record whether it came from a stable or an immediate
    command); otherwise the graded carcass carries a flag naming the record."""
    st = Store.open(tmp_path / "s", create=True)
    import_carcasses(st, DATA / "carcasses.csv")
    weigh = st.put_result("weighing", weighing_of_c1() | {"gross": True} | fields)
    rec = next(r for r in grade_store(st)[0] if r["carcass_id"] == "KZ-C-0001")
    about = [f for f in rec["flags"] if "weighing record" in f]
    if flag is None:
        assert about == []
    else:
        assert len(about) == 1 and flag in about[0] and weigh[:12] in about[0]
