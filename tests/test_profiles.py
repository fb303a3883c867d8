"""Instrument profiles (instruments/*.toml) and the export-file readers they drive."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fibergrade.adapters.errors import ProfileError
from fibergrade.adapters.exports import (
    preamble_instrument,
    read_export,
    read_histogram,
    read_per_fibre,
)
from fibergrade.adapters.profiles import (
    find_profile,
    list_profiles,
    load_profile,
    profile_from_dict,
)
from fibergrade.distribution import summarise_histograms
from fibergrade.errors import InputError
from fibergrade.measurements import FibreLots, HistogramLots

pytestmark = pytest.mark.timeout(60)

INSTRUMENTS = Path(__file__).resolve().parents[1] / "instruments"
SHIPPED = {
    "mt-sics-scale": "captures/mt-sics-session.jsonl",
    "sartorius-sbi": "captures/sbi-session.jsonl",
    "and-scale": "captures/and-session.jsonl",
    "cas-ci": "captures/cas-session.jsonl",
    "analyser-line": "analyser-line-example.txt",
    "ofda-export": "ofda-export-example.csv",
    "laserscan-histogram": "laserscan-histogram-example.csv",
}


@pytest.mark.parametrize("name", list(SHIPPED))
def test_every_shipped_profile_loads_and_has_its_example(name):
    p = load_profile(name)
    assert p.name == name and p.path == INSTRUMENTS / f"{name}.toml"
    assert p.description and p.source
    assert (INSTRUMENTS / SHIPPED[name]).is_file()
    assert set(SHIPPED) <= set(list_profiles())


def test_sbi_profile_keeps_the_factory_setting():
    s = load_profile("sartorius-sbi").serial
    assert (s.baudrate, s.bytesize, s.parity, s.stopbits, s.rtscts) == (1200, 7, "O", 1, True)


def test_scale_min_defaults_to_20_e():
    p = load_profile("mt-sics-scale").scale
    assert p.min == pytest.approx(20 * p.e) and p.max == 620.0


def base(kind="scale"):
    path = (
        INSTRUMENTS
        / {
            "scale": "mt-sics-scale.toml",
            "export": "ofda-export.toml",
            "histogram": "laserscan-histogram.toml",
            "analyser": "analyser-line.toml",
        }[kind]
    )
    return tomllib.loads(path.read_text(encoding="utf-8"))


def edit(doc, dotted, value):
    sec, _, key = dotted.partition(".")
    if value is _DELETE:
        if key:
            del doc[sec][key]
        else:
            del doc[sec]
    else:
        doc.setdefault(sec, {})[key] = value
    return doc


_DELETE = object()


@pytest.mark.parametrize(
    ("kind", "key", "value", "named", "words"),
    [
        ("scale", "serial.baud", 9600, "serial.baud", "unknown key"),
        ("scale", "scale.e", _DELETE, "scale.e", "missing"),
        ("scale", "serial", _DELETE, "serial", "missing required section"),
        ("scale", "serial.parity", "X", "serial.parity", "one of"),
        ("scale", "serial.bytesize", True, "serial.bytesize", "one of"),
        ("scale", "serial.baudrate", "9600", "serial.baudrate", "integer"),
        ("scale", "scale.max", -1, "scale.max", "> 0"),
        ("scale", "scale.e", 1000.0, "scale.e", "smaller than max"),
        ("scale", "instrument.protocol", "mettler", "instrument.protocol", "not a scale"),
        ("scale", "instrument.kind", "oven", "instrument.kind", "one of"),
        ("scale", "extras.x", 1, "extras", "unknown section"),
        ("export", "file.decimal", ";", "file.decimal", "one of"),
        ("export", "file.delimiter", ",", "file.decimal", "equals the delimiter"),
        ("export", "columns.diameter", _DELETE, "columns.diameter", "missing"),
        ("export", "columns.opacity", "Opacity (%)", "columns.opacity", "unknown key"),
        ("export", "columns.curvature", "Sample", "columns", "mapped to two fields"),
        ("export", "units.diameter", "µm", "units.diameter", "one of"),
        ("export", "file.encoding", "klingon", "file.encoding", "encoding"),
        ("histogram", "histogram", _DELETE, "histogram.class_width_um", "class_width_um"),
        ("histogram", "file.header_line", 1, "file.instrument_label", "header_line above 1"),
        ("analyser", "analyser.line_timeout_s", 0, "analyser.line_timeout_s", "> 0"),
    ],
)
def test_bad_profiles_name_the_file_and_key(kind, key, value, named, words):
    doc = edit(base(kind), key, value)
    with pytest.raises(ProfileError) as ei:
        profile_from_dict(doc, "instruments/x.toml")
    assert ei.value.path == "instruments/x.toml" and ei.value.key == named
    assert f"[{named}]" in str(ei.value) and words in str(ei.value)


def test_profile_files_by_path_and_name(tmp_path, monkeypatch):
    bad = tmp_path / "broken.toml"
    bad.write_text("[instrument\nkind = 'scale'")
    with pytest.raises(ProfileError) as ei:
        load_profile(bad)
    assert str(bad) in str(ei.value) and "TOML" in str(ei.value)
    with pytest.raises(ProfileError) as ei:
        load_profile("no-such-instrument")
    assert "mt-sics-scale" in str(ei.value)  # lists the known profiles
    with pytest.raises(ProfileError):
        load_profile(tmp_path / "missing.toml")
    own = tmp_path / "my-balance.toml"
    own.write_text((INSTRUMENTS / "mt-sics-scale.toml").read_text().replace("620.0", "220.0"))
    monkeypatch.setenv("FIBERGRADE_INSTRUMENTS", str(tmp_path))
    assert find_profile("my-balance") == own.resolve()
    assert load_profile("my-balance").scale.max == 220.0
    assert load_profile(str(own)).name == "my-balance"


@pytest.mark.parametrize(
    ("data", "line"), [(b"\xff\xfe\x00garbage", 1), (b"[instrument]\nkind = 'sc\xe4le'\n", 2)]
)
def test_a_profile_that_is_not_utf8_is_a_profile_error_naming_file_and_line(tmp_path, data, line):
    """It used to escape as a bare UnicodeDecodeError (a traceback from every command that
    takes a profile: import/acquire --instrument, simulate --profile, meat import --scale)."""
    bad = tmp_path / "garbage.toml"
    bad.write_bytes(data)
    with pytest.raises(ProfileError) as ei:
        load_profile(bad)
    assert ei.value.path == str(bad) and f"line {line}" in ei.value.message
    assert "not UTF-8" in ei.value.message and ei.value.exit_code == 2


def test_a_directory_given_as_a_profile_is_said_to_be_one(tmp_path):
    (tmp_path / "dir.toml").mkdir()
    with pytest.raises(ProfileError, match="is a directory"):
        load_profile(tmp_path / "dir.toml")


@pytest.mark.integration
def test_every_command_taking_a_profile_reports_a_non_utf8_one_without_a_traceback(tmp_path):
    exe = shutil.which("fibergrade", path=str(Path(sys.executable).parent)) or "fibergrade"
    (tmp_path / "garbage.toml").write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / "m.csv").write_text("lot_id,diameter_um\nA,15\n")
    (tmp_path / "c.csv").write_text("carcass_id\n")
    store = str(tmp_path / "store")
    for args in (
        ["import", "m.csv", "--instrument", "./garbage.toml", "--store", store],
        ["acquire", "--instrument", "./garbage.toml", "--replay", "x.jsonl", "--store", store],
        ["simulate", "scale", "--protocol", "sbi", "--profile", "./garbage.toml", "--tcp", "0"],
        ["meat", "import", "c.csv", "--scale", "./garbage.toml", "--store", store],
    ):
        r = subprocess.run(
            [exe, *args], capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False
        )
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr and "garbage.toml" in r.stderr, args
        assert "not UTF-8" in r.stderr, args


# --------------------------------------------------------------------------- exports


def test_ofda_example_reads_to_fibre_lots():
    lots = read_export(load_profile("ofda-export"), INSTRUMENTS / "ofda-export-example.csv")
    assert isinstance(lots, FibreLots)
    assert lots.lot_ids == ("CH-2024-0117", "CH-2024-0118", "BC-2024-0031")
    assert lots.offsets.tolist() == [0, 24, 44, 62]
    assert lots.diameter_um[0] == np.float32(16.41)  # "16,41" with a decimal comma
    assert lots.curvature_deg_mm[0] == np.float32(41.2)
    assert lots.medullated.sum() == 6 and lots.length_mm is None


def test_laserscan_example_reads_to_histogram_lots():
    h = read_export(
        load_profile("laserscan-histogram"), INSTRUMENTS / "laserscan-histogram-example.csv"
    )
    assert isinstance(h, HistogramLots)
    assert h.lot_ids == ("LS-24-001", "LS-24-002") and h.offsets.tolist() == [0, 35, 70]
    assert np.all(h.upper_um - h.lower_um == 1.0) and h.counts.sum() == 4000


def test_the_preamble_names_the_instrument_where_the_profile_says():
    laserscan = load_profile("laserscan-histogram")
    assert laserscan.export.instrument_label == "Instrument"
    found = preamble_instrument(laserscan, INSTRUMENTS / "laserscan-histogram-example.csv")
    assert (found.instrument_id, found.line) == ("LS-DEMO-01", 2)
    # a profile without file.instrument_label does not read the preamble
    ofda = load_profile("ofda-export")
    assert preamble_instrument(ofda, INSTRUMENTS / "ofda-export-example.csv") is None


@pytest.mark.parametrize(
    ("preamble", "expected"),
    [
        ("# Instrument,LS-9\nDate,2024-05-14\n", None),  # a comment names nothing
        ("Instrument , LS-7 ,Date,2024\n\n", ("LS-7", 1)),
        ("x\nInstrument,LS-7\n", ("LS-7", 2)),
        ("Instrument,LS-7\nInstrument,LS-7\n", ("LS-7", 1)),
        # free text the vendor's software writes (an unbalanced quote) on a line that does
        # not carry the label is skipped, as every preamble line was before the label
        ('Operator,"J. Smith\nInstrument,LS-7\n', ("LS-7", 2)),
    ],
)
def test_preamble_instrument_reads_the_field_after_the_label(tmp_path, preamble, expected):
    prof = histogram_profile(tmp_path, file__header_line=preamble.count("\n") + 1)
    path = write(tmp_path, preamble + "Specimen,Class (um),Count\nX,10,5\n")
    found = preamble_instrument(prof, path)
    assert ((found.instrument_id, found.line) if found else None) == expected
    assert read_histogram(prof, path).lot_ids == ("X",)


@pytest.mark.parametrize(
    ("preamble", "line", "words"),
    [
        ("Instrument,,Date\n", 1, "no instrument id after it"),
        ("Date,1\nInstrument\n", 2, "no instrument id after it"),
        ("Instrument,LS-7\nInstrument,LS-8\n", 2, "'LS-8' here and 'LS-7' on line 1"),
    ],
)
def test_preamble_instrument_is_read_as_written_or_refused(tmp_path, preamble, line, words):
    prof = histogram_profile(tmp_path, file__header_line=preamble.count("\n") + 1)
    path = write(tmp_path, preamble + "Specimen,Class (um),Count\nX,10,5\n")
    with pytest.raises(InputError) as ei:
        preamble_instrument(prof, path)
    assert ei.value.path == str(path) and ei.value.line == line and words in str(ei.value)


def export_profile(tmp_path, **over):
    doc = base("export")
    for k, v in over.items():
        edit(doc, k.replace("__", "."), v)
    return profile_from_dict(doc, tmp_path / "p.toml")


def write(tmp_path, text, name="f.csv", encoding="utf-8"):
    p = tmp_path / name
    p.write_bytes(text.encode(encoding))
    return p


HEAD = "pre\npre\npre\npre\nSample;Diameter (µm);Curvature (°/mm);Medullated\n"


@pytest.mark.parametrize(
    ("rows", "line", "words"),
    [
        ("A;16.5;40,0;N\n", 6, "uses '.' as decimal separator"),
        ("A;250,0;40,0;N\n", 6, "above 200"),
        ("A;0,016;40,0;N\n", 6, "millimetres"),
        ("A;-3;40,0;N\n", 6, "<= 0"),
        ("A;;40,0;N\n", 6, "not a number"),
        ("A;1,2e1;40,0;N\n", 6, "not a number"),
        ("A;16,;40,0;N\n", 6, "'16,' is not a number"),  # a dangling separator: truncated
        ("A;16,5;40,;N\n", 6, "'40,' is not a number"),
        ("A;16,5;40,0\n", 6, "3 fields"),
        ("A;16,5;-4;N\n", 6, "curvature"),
        ("A;16,5;40,0;maybe\n", 6, "medullation flag"),
        ("A;16,5;40,0;N\nB;16,5;40,0;N\nA;16,5;40,0;N\n", 8, "reappears"),
        (";16,5;40,0;N\n", 6, "empty lot id"),
        ("", None, "no data rows"),
        ('A;"16,5;40,0;N\n', 6, "cannot split"),
    ],
)
def test_per_fibre_errors_name_file_line_and_expectation(tmp_path, rows, line, words):
    path = write(tmp_path, HEAD + rows)
    with pytest.raises(InputError) as ei:
        read_per_fibre(export_profile(tmp_path), path)
    assert ei.value.path == str(path) and ei.value.line == line
    assert words in str(ei.value)


def test_a_dangling_decimal_separator_is_a_truncated_cell_not_a_whole_number(tmp_path):
    ofda = load_profile("ofda-export")
    head = INSTRUMENTS.joinpath("ofda-export-example.csv").read_text(encoding="utf-8")
    head = "".join(head.splitlines(keepends=True)[:5])  # preamble and header row
    path = write(tmp_path, head + "A;1;16,41;41,2;1;N\nA;2;16,;41,2;1;N\n")
    with pytest.raises(InputError, match="'16,' is not a number") as ei:
        read_export(ofda, path)
    assert (ei.value.path, ei.value.line) == (str(path), 7)
    point = export_profile(tmp_path, file__decimal=".")
    with pytest.raises(InputError, match=r"'16\.' is not a number") as ei:
        read_per_fibre(point, write(tmp_path, HEAD + "A;16.5;40;N\nA;16.;40;N\n"))
    assert ei.value.line == 7
    hist = write(tmp_path, "#\nx\nSpecimen,Class (um),Count\nX,10.,5\n", name="h.csv")
    with pytest.raises(InputError, match=r"'10\.' is not a number") as ei:
        read_histogram(histogram_profile(tmp_path), hist)
    assert ei.value.line == 4


@pytest.mark.parametrize(
    ("lot", "words"),
    [
        ("A/../x", "path separator '/'"),
        ("..\\x", "starts with '.'"),
        ("C:x", "':'"),
        ("lot 7", "' '"),
        ("\u00d6-1", "'\u00d6'"),
        ("x" * 201, "201 characters"),
    ],
)
def test_vendor_exports_refuse_unsafe_lot_ids(tmp_path, lot, words):
    """Lot ids name certificate files (FG-<lot>-01.json): both export readers refuse one
    outside measurements.LOT_ID_RULE, naming file and line."""
    fibre = write(tmp_path, HEAD + f"A;16,5;40,0;N\n{lot};16,5;40,0;N\n")
    hist = write(tmp_path, f"#\nx\nSpecimen,Class (um),Count\nX,10,5\n{lot},11,5\n", "h.csv")
    for reader, prof, path, line in (
        (read_per_fibre, export_profile(tmp_path), fibre, 7),
        (read_histogram, histogram_profile(tmp_path), hist, 5),
    ):
        with pytest.raises(InputError) as ei:
            reader(prof, path)
        assert (ei.value.path, ei.value.line) == (str(path), line)
        assert words in ei.value.message and "ASCII letter" in str(ei.value)


def test_missing_column_and_short_file(tmp_path):
    path = write(tmp_path, "pre\npre\npre\npre\nSample;Dia;Curvature (°/mm);Medullated\nA;1;2;N\n")
    with pytest.raises(InputError) as ei:
        read_per_fibre(export_profile(tmp_path), path)
    assert ei.value.line == 5 and "columns.diameter" in str(ei.value)
    assert "'Dia'" in ei.value.expected
    with pytest.raises(InputError) as ei:
        read_per_fibre(export_profile(tmp_path), write(tmp_path, "pre\n"))
    assert "header" in str(ei.value)


def test_encoding_errors_name_the_line(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes(
        (HEAD + "A;16,5;40,0;N\nB;17,0;41,0;N\n").encode("utf-8").replace(b"B;", b"\xb5;")
    )
    with pytest.raises(InputError) as ei:
        read_per_fibre(export_profile(tmp_path), path)
    assert ei.value.line == 7 and "utf-8" in str(ei.value)
    ok = read_per_fibre(
        export_profile(tmp_path, file__encoding="latin-1"),
        write(tmp_path, HEAD + "A;16,5;40,0;N\n", encoding="latin-1"),
    )
    assert ok.n_fibres == 1


def test_millimetre_units_comments_and_crlf(tmp_path):
    prof = export_profile(
        tmp_path,
        units__diameter="mm",
        file__decimal=".",
        file__delimiter="\t",
        columns__length="Length",
    )
    text = (
        "a\r\nb\r\nc\r\nd\r\nSample\tDiameter (µm)\tCurvature (°/mm)\tMedullated\tLength\r\n"
        "# a comment\r\nL1\t0.0165\t40\tJ\t35.5\r\n\r\nL1\t0.0170\t41\t0\t36\r\n"
    )
    lots = read_per_fibre(prof, write(tmp_path, text))
    assert lots.diameter_um.tolist() == pytest.approx([16.5, 17.0])
    assert lots.medullated.tolist() == [True, False]
    assert lots.length_mm.tolist() == pytest.approx([35.5, 36.0])


def histogram_profile(tmp_path, **over):
    doc = base("histogram")
    for k, v in over.items():
        edit(doc, k.replace("__", "."), v)
    return profile_from_dict(doc, tmp_path / "h.toml")


@pytest.mark.parametrize(
    ("rows", "line", "words"),
    [
        ("X,10,5\nX,10,6\n", 5, "overlaps"),
        ("X,11,5\nX,10,6\n", 5, "overlaps or precedes"),
        ("X,10,5.5\n", 4, "not a count"),
        ("X,10,-1\n", 4, "not a count"),
        ("X,-1,5\n", 4, "impossible"),
        ("X,199.5,5\n", 4, "impossible"),
        ("X,10,5\nY,10,5\nX,11,5\n", 6, "reappears"),
    ],
)
def test_histogram_errors(tmp_path, rows, line, words):
    path = write(tmp_path, "#\nx\nSpecimen,Class (um),Count\n" + rows)
    with pytest.raises(InputError) as ei:
        read_histogram(histogram_profile(tmp_path), path)
    assert ei.value.line == line and words in str(ei.value)


def test_histogram_classes_below_1_um_with_fibres_are_refused_as_millimetres(tmp_path):
    # the per-fibre rule (diameter_problem: below 1 um "looks like millimetres") for classes
    laserscan = load_profile("laserscan-histogram")  # 1-um classes from the lower bound
    head = (
        "# Laserscan histogram export\nInstrument,LS-1,Date,2024-05-14\nSpecimen,Class (um),Count\n"
    )
    path = write(tmp_path, head + "X,0,7\nX,1,5\n")
    with pytest.raises(InputError, match="millimetres") as ei:
        read_export(laserscan, path)
    assert (ei.value.path, ei.value.line) == (str(path), 4)
    assert "class [0, 1) um holds 7 fibre(s)" in str(ei.value)
    ok = read_export(laserscan, write(tmp_path, head + "X,0,0\nX,1,5\n", name="ok.csv"))
    assert ok.counts.tolist() == [0, 5]  # an empty class below 1 um is harmless
    prof = histogram_profile(tmp_path, columns__upper="To", histogram=_DELETE)
    rows = "#\nx\nSpecimen,Class (um),To,Count\nX,0.015,0.016,40\nX,14,15,3\n"
    with pytest.raises(InputError, match="lies wholly below 1 um") as ei:
        read_histogram(prof, write(tmp_path, rows, name="mm.csv"))
    assert ei.value.line == 4
    straddling = "#\nx\nSpecimen,Class (um),To,Count\nX,0.5,1,0\nX,1,1.5,3\n"
    assert read_histogram(prof, write(tmp_path, straddling, name="s.csv")).counts.tolist() == [
        0,
        3,
    ]
    # the same figures declared as millimetres are 15-16 um classes
    in_mm = histogram_profile(
        tmp_path, columns__upper="To", histogram=_DELETE, units__diameter="mm"
    )
    h = read_histogram(
        in_mm, write(tmp_path, "#\nx\nSpecimen,Class (um),To,Count\nX,0.015,0.016,40\n")
    )
    assert h.lower_um.tolist() == pytest.approx([15.0]) and h.counts.tolist() == [40]


@pytest.mark.parametrize(
    ("rows", "over", "shown"),
    [
        ("X,14,15,3\nX,15.5,16.5,0\n", {}, "[15.5, 16.5)"),
        ("X,10,12,5\n", {}, "[10, 12)"),
        ("X,0.0105,0.0115,5\n", {"units__diameter": "mm"}, "[10.5, 11.5)"),
    ],
)
def test_histogram_classes_spanning_two_1_um_classes_are_refused(tmp_path, rows, over, shown):
    """The core reports 1-um classes and refuses a wider class whatever its count: the
    reader refuses it at import, naming file and line (it used to be stored, and then every
    grade of the store failed)."""
    prof = histogram_profile(tmp_path, columns__upper="To", histogram=_DELETE, **over)
    path = write(tmp_path, "#\nx\nSpecimen,Class (um),To,Count\n" + rows)
    with pytest.raises(InputError, match="spans more than one 1-um class") as ei:
        read_histogram(prof, path)
    assert ei.value.path == str(path) and ei.value.line == 3 + rows.count("\n")
    assert shown in ei.value.message and "whole micrometre" in str(ei.value)


def test_histogram_class_width_wider_than_1_um_is_refused(tmp_path):
    prof = histogram_profile(tmp_path, histogram__class_width_um=2.0)
    path = write(tmp_path, "#\nx\nSpecimen,Class (um),Count\nX,10,5\n")
    with pytest.raises(InputError, match=r"class \[10, 12\) um spans more than one") as ei:
        read_histogram(prof, path)
    assert ei.value.line == 4


def test_histogram_with_upper_column(tmp_path):
    prof = histogram_profile(tmp_path, columns__upper="To", histogram=_DELETE)
    h = read_histogram(
        prof, write(tmp_path, "#\nx\nSpecimen,Class (um),To,Count\nX,10,10.5,3\nX,10.5,11,4\n")
    )
    assert h.upper_um.tolist() == [10.5, 11.0] and h.counts.tolist() == [3, 4]


def test_reader_refuses_the_wrong_kind_of_profile(tmp_path):
    with pytest.raises(ProfileError):
        read_export(load_profile("mt-sics-scale"), INSTRUMENTS / "ofda-export-example.csv")
    with pytest.raises(ProfileError):
        read_histogram(load_profile("ofda-export"), INSTRUMENTS / "ofda-export-example.csv")


@pytest.mark.parametrize("length", ["0", "1" + "0" * 39, "1" + "0" * 400])
def test_a_length_that_is_not_positive_and_finite_is_refused(tmp_path, length):
    prof = export_profile(tmp_path, columns__length="Length (mm)")
    head = "pre\npre\npre\npre\nSample;Diameter (µm);Curvature (°/mm);Medullated;Length (mm)\n"
    path = write(tmp_path, head + f"A;16,5;40,0;N;30\nA;16,5;40,0;N;{length}\n")
    with pytest.raises(InputError, match="not a positive finite length") as ei:
        read_per_fibre(prof, path)
    assert ei.value.line == 7


_BAD_CELLS = ["1_6,5", "\u0661\u0666,\u0665", "16.5", "", "x", "1,6e1", "0,5", "250", "16,"]


@settings(max_examples=120, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["A", "B", "C"]),
            st.integers(100, 19999),  # diameter in hundredths of a um: 1.00-199.99
            st.integers(0, 99999),  # curvature in tenths of a deg/mm
            st.booleans(),
        ),
        min_size=1,
        max_size=40,
    ),
    quoted=st.booleans(),
    blank_every=st.integers(0, 5),
    bad=st.none() | st.tuples(st.integers(0, 39), st.sampled_from(_BAD_CELLS)),
)
def test_per_fibre_columns_read_as_row_by_row(tmp_path_factory, rows, quoted, blank_every, bad):
    """The columns checked and converted whole give, for any rows, what reading them one
    by one gives: the same values, or the first bad cell refused at its line."""
    rows = sorted(rows, key=lambda r: r[0])  # a lot's rows together
    lines, line_of = [], []
    for k, (lot, d, c, m) in enumerate(rows):
        if blank_every and k % blank_every == 0:
            lines.append("# a comment" if k % 2 else "")
        cell = f"{d // 100},{d % 100:02d}"
        if bad is not None and bad[0] == k:
            cell = bad[1]
        if quoted and k % 2:
            cell = f'"{cell}"'
        lines.append(f"{lot};{cell};{c // 10},{c % 10};{'J' if m else 'N'}")
        line_of.append(5 + len(lines))
    path = tmp_path_factory.mktemp("rows") / "f.csv"
    path.write_text(HEAD + "\n".join(lines) + "\n", encoding="utf-8")
    prof = export_profile(path.parent)
    if bad is not None and bad[0] < len(rows):
        with pytest.raises(InputError) as ei:
            read_per_fibre(prof, path)
        assert ei.value.line == line_of[bad[0]] and ei.value.path == str(path)
        return
    got = read_per_fibre(prof, path)
    lots = [r[0] for r in rows]
    assert got.lot_ids == tuple(dict.fromkeys(lots))
    assert got.offsets.tolist() == [lots.index(x) for x in got.lot_ids] + [len(lots)]
    want_d = [float(np.float32(float(f"{d // 100}.{d % 100:02d}"))) for _, d, _, _ in rows]
    assert got.diameter_um.tolist() == want_d
    want_c = [float(np.float32(float(f"{c // 10}.{c % 10}"))) for _, _, c, _ in rows]
    assert got.curvature_deg_mm is not None and got.curvature_deg_mm.tolist() == want_c
    assert got.medullated is not None and got.medullated.tolist() == [r[3] for r in rows]


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('AB;,.\n\r\t 0123456789-"#µ')), max_size=300))
def test_fuzz_export_readers_raise_only_input_errors(tmp_path_factory, text):
    d = tmp_path_factory.mktemp("fz")
    path = d / "f.csv"
    path.write_text(HEAD + text, encoding="utf-8")
    for reader, prof in (
        (read_per_fibre, export_profile(d)),
        (read_histogram, histogram_profile(d)),
    ):
        try:
            out = reader(prof, path)
        except InputError:
            continue
        assert out.n_lots >= 1
        if isinstance(out, HistogramLots):
            summarise_histograms(out)  # what the reader accepts, the core grades
