"""Tests of the interchange CSV readers (per-fibre, histogram, lot manifest)."""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fibergrade.adapters.interchange import (
    read_fibre_csv,
    read_histogram_csv,
    read_lot_manifest,
    read_measurements,
    sniff_format,
)
from fibergrade.distribution import summarise_histograms
from fibergrade.errors import InputError
from fibergrade.measurements import (
    FIBRE_TYPES,
    LOT_ID_MAX_CHARS,
    LOT_ID_RE,
    FibreLots,
    HistogramLots,
    diameter_problem,
    lot_id_problem,
)

DATA = Path(__file__).parent / "data" / "interchange"


def write(tmp_path: Path, text: str | bytes, name: str = "in.csv") -> Path:
    """Write ``text`` (exact bytes, no newline translation) to a file under tmp_path."""
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return p


def fibre_error(tmp_path: Path, text: str | bytes) -> InputError:
    with pytest.raises(InputError) as info:
        read_fibre_csv(write(tmp_path, text))
    return info.value


# --------------------------------------------------------------------------------------
# the example files and the shape of what is read
# --------------------------------------------------------------------------------------


def test_example_fibre_file() -> None:
    lots = read_fibre_csv(DATA / "fibres.csv")
    assert lots.lot_ids == ("MN-2024-0117", "MN-2024-0118")
    assert lots.offsets.tolist() == [0, 3, 5]
    assert lots.diameter_um.dtype == np.float32
    np.testing.assert_array_equal(lots.diameter_um, np.float32([15.62, 16.01, 14.88, 17.40, 18.05]))
    assert lots.length_mm is not None and lots.length_mm.dtype == np.float32
    assert lots.medullated is not None
    assert lots.medullated.tolist() == [False, False, False, True, False]


def test_example_histogram_file() -> None:
    h = read_histogram_csv(DATA / "histogram.csv")
    assert h.lot_ids == ("MN-2024-0120", "MN-2024-0121")
    assert h.offsets.tolist() == [0, 3, 5]
    assert h.lower_um.tolist() == [14, 15, 16, 17, 18]  # sorted within the lot
    assert h.upper_um.tolist() == [15, 16, 17, 18, 19]
    assert h.counts.tolist() == [212, 388, 301, 95, 0]


def test_example_manifest_file() -> None:
    m = read_lot_manifest(DATA / "lots.csv")
    assert list(m) == ["MN-2024-0117", "MN-2024-0118"]  # the identical repeat is kept once
    a = m["MN-2024-0117"]
    assert a.declared_type == "cashmere" and a.origin == "MN" and a.client == "Gobi Fibre LLC"
    assert a.region == "Govi-Altai" and a.gi_code is None
    assert a.measured_at == "2024-05-14T09:30:00+08:00"
    assert a.extra == {"farm": "Khishig"}
    assert m["MN-2024-0118"].declared_type == "cashmere"  # "Cashmere" normalised


def test_sniff_and_dispatch() -> None:
    assert sniff_format(DATA / "fibres.csv") == "fibres"
    assert sniff_format(DATA / "histogram.csv") == "histogram"
    assert sniff_format(DATA / "lots.csv") == "manifest"
    assert isinstance(read_measurements(DATA / "fibres.csv"), FibreLots)
    assert isinstance(read_measurements(DATA / "histogram.csv"), HistogramLots)


def test_manifest_passed_as_measurements_says_use_lots() -> None:
    with pytest.raises(InputError, match="--lots"):
        read_measurements(DATA / "lots.csv")


def test_sniff_unknown_header(tmp_path: Path) -> None:
    p = write(tmp_path, "# c\nsample,weight_kg\nA,3\n")
    with pytest.raises(InputError) as info:
        sniff_format(p)
    assert info.value.line == 2
    assert "sample,weight_kg" in info.value.message
    with pytest.raises(InputError):
        read_measurements(p)


def test_lots_grouped_by_first_appearance_keeping_fibre_order(tmp_path: Path) -> None:
    p = write(tmp_path, "lot_id,diameter_um\nB,10\nA,11\nB,12\nC,13\nA,14\nB,15\n")
    lots = read_fibre_csv(p)
    assert lots.lot_ids == ("B", "A", "C")
    assert lots.offsets.tolist() == [0, 3, 5, 6]
    assert lots.diameter_um.tolist() == [10, 12, 15, 11, 14, 13]
    assert lots.length_mm is None and lots.medullated is None


def test_comments_blank_lines_spaces_and_header_case(tmp_path: Path) -> None:
    text = (
        "\n# before the header\n   # indented comment\n"
        " Lot_ID , Diameter_um \n"
        "\n A1 , 17.5 \n# between rows\n\t\nA1,+1.8e1\n# trailing\n"
    )
    lots = read_fibre_csv(write(tmp_path, text))
    assert lots.lot_ids == ("A1",)
    assert lots.diameter_um.tolist() == [17.5, 18.0]


def test_x_columns_ignored(tmp_path: Path) -> None:
    lots = read_fibre_csv(write(tmp_path, "lot_id,x_note,diameter_um\nA,hello,17\n"))
    assert lots.diameter_um.tolist() == [17.0]


def test_quoted_fields(tmp_path: Path) -> None:
    text = 'lot_id,diameter_um,x_note\n"N-7","17.5","#7, north"\n"B",18,"say ""hi"""\n'
    lots = read_fibre_csv(write(tmp_path, text))
    assert lots.lot_ids == ("N-7", "B")
    np.testing.assert_array_equal(lots.diameter_um, np.float32([17.5, 18]))


def test_unclosed_quote_names_line(tmp_path: Path) -> None:
    err = fibre_error(tmp_path, 'lot_id,diameter_um\nA,17\n"B,18\nC,19\n')
    assert err.line == 3


# --------------------------------------------------------------------------------------
# encodings and line ends
# --------------------------------------------------------------------------------------


def test_utf8_bom_accepted(tmp_path: Path) -> None:
    p = write(tmp_path, codecs.BOM_UTF8 + "lot_id,diameter_um,x_farm\nO-1,17,Öndör\n".encode())
    lots = read_fibre_csv(p)
    assert lots.lot_ids == ("O-1",)
    assert sniff_format(p) == "fibres"


def test_crlf_accepted(tmp_path: Path) -> None:
    p = write(tmp_path, "# c\r\nlot_id,diameter_um,medullated\r\nA,17,yes\r\n\r\nA,18,no\r\n")
    lots = read_fibre_csv(p)
    assert lots.diameter_um.tolist() == [17, 18]
    assert lots.medullated is not None and lots.medullated.tolist() == [True, False]


def test_lone_carriage_return_refused(tmp_path: Path) -> None:
    err = fibre_error(tmp_path, "lot_id,diameter_um\nA,17\nA,18\rA,19\n")
    assert err.line == 3


def test_non_utf8_bytes_name_the_line(tmp_path: Path) -> None:
    err = fibre_error(tmp_path, b"lot_id,diameter_um\nA,17\n# ok\nM\xfcller,18\n")
    assert err.line == 4
    assert "UTF-8" in str(err)
    with pytest.raises(InputError) as info:
        sniff_format(write(tmp_path, b"# caf\xe9\nlot_id,diameter_um\n", "b.csv"))
    assert info.value.line == 1


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        read_fibre_csv(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="cannot read"):
        sniff_format(tmp_path / "nope.csv")


# --------------------------------------------------------------------------------------
# errors: layout
# --------------------------------------------------------------------------------------


def test_missing_required_column_names_it_and_shows_header(tmp_path: Path) -> None:
    err = fibre_error(tmp_path, "# c\nlot_id,length_mm\nA,30\n")
    assert err.line == 2
    assert "diameter_um" in err.message
    assert "header found: lot_id,length_mm" in err.message


def test_unknown_column_caught(tmp_path: Path) -> None:
    err = fibre_error(tmp_path, "lot_id,diameter_um,diamter_um\nA,17,18\n")
    assert err.line == 1 and "diamter_um" in err.message


def test_duplicate_column(tmp_path: Path) -> None:
    err = fibre_error(tmp_path, "lot_id,diameter_um,Diameter_um\nA,17,18\n")
    assert "twice" in err.message


def test_unnamed_column(tmp_path: Path) -> None:
    err = fibre_error(tmp_path, "lot_id,diameter_um,\nA,17,\n")
    assert err.line == 1 and "no name" in err.message
    with pytest.raises(InputError, match="no name"):
        read_lot_manifest(write(tmp_path, "lot_id,declared_type,origin,client,\nL,yak,CN,A,\n"))


@pytest.mark.parametrize("text", ["", "\n\n  \n", "# only\n# comments\n", "\r\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    err = fibre_error(tmp_path, text)
    assert err.line is None and "no header" in err.message
    with pytest.raises(InputError):
        sniff_format(write(tmp_path, text, "s.csv"))


def test_header_only_is_no_measurements(tmp_path: Path) -> None:
    err = fibre_error(tmp_path, "# c\nlot_id,diameter_um\n# nothing measured\n\n")
    assert err.line == 2 and "no measurements" in err.message
    with pytest.raises(InputError, match="no measurements"):
        read_histogram_csv(write(tmp_path, "lot_id,lower_um,upper_um,count\n", "h.csv"))
    with pytest.raises(InputError, match="no lots"):
        read_lot_manifest(write(tmp_path, "lot_id,declared_type,origin,client\n", "m.csv"))


@pytest.mark.parametrize("row", ["A,17,3", "A,17,"])
def test_too_many_fields(tmp_path: Path, row: str) -> None:
    err = fibre_error(tmp_path, f"lot_id,diameter_um\nA,17\n\n{row}\n")
    assert err.line == 4 and "too many" in err.message


def test_too_few_fields(tmp_path: Path) -> None:
    err = fibre_error(tmp_path, "lot_id,diameter_um,length_mm\nA,17,30\nA,18\n")
    assert err.line == 3 and "too few" in err.message


def test_too_many_fields_in_quoted_file(tmp_path: Path) -> None:
    err = fibre_error(tmp_path, 'lot_id,diameter_um\n"A",17\n"A",17,1\n')
    assert err.line == 3 and "too many" in err.message


@pytest.mark.parametrize("lot", ["", "   ", '""'])
def test_empty_lot_id(tmp_path: Path, lot: str) -> None:
    err = fibre_error(tmp_path, f"lot_id,diameter_um\nA,17\n{lot},18\n")
    assert err.line == 3 and "lot_id is empty" in err.message


def test_control_character_in_lot_id(tmp_path: Path) -> None:
    err = fibre_error(tmp_path, "lot_id,diameter_um\nA,17\nA\x00B,18\n")
    assert err.line == 3


#: lot ids refused at import: they name certificate files (FG-<lot>-01.json)
UNSAFE_LOT_IDS = [
    ("A/../x", "path separator '/'"),
    ("..\\..\\x", "starts with '.'"),
    ("A\\x", "path separator '\\\\'"),
    (".hidden", "starts with '.'"),
    ("-rf", "starts with '-'"),
    ("C:x", "':'"),
    ("lot 7", "' '"),
    ("#7", "'#'"),
    ("lot\u00e9", "'\u00e9'"),
    ("x" * 201, "201 characters"),
]


@pytest.mark.parametrize(("lot", "words"), UNSAFE_LOT_IDS)
def test_unsafe_lot_ids_are_refused_in_every_interchange_file(
    tmp_path: Path, lot: str, words: str
) -> None:
    quoted = '"' + lot.replace('"', '""') + '"'
    cases = [
        (read_fibre_csv, f"lot_id,diameter_um\n# c\nA,17\n{quoted},18\n"),
        (read_histogram_csv, f"lot_id,lower_um,upper_um,count\n# c\nA,14,15,3\n{quoted},15,16,1\n"),
        (
            read_lot_manifest,
            f"lot_id,declared_type,origin,client\n# c\nA,yak,CN,X\n{quoted},yak,CN,X\n",
        ),
    ]
    for reader, text in cases:
        with pytest.raises(InputError) as info:
            reader(write(tmp_path, text))
        assert info.value.path == str(tmp_path / "in.csv") and info.value.line == 4, reader
        assert words in info.value.message, (reader, info.value.message)
        assert info.value.expected is not None and "ASCII letter" in info.value.expected


def test_lot_ids_of_the_safe_set_are_read(tmp_path: Path) -> None:
    ids = ["MN-2024-0117", "lot_7.a", "9", "A..B", "x" * 200]
    body = "".join(f"{lot},17\n" for lot in ids)
    assert read_fibre_csv(write(tmp_path, "lot_id,diameter_um\n" + body)).lot_ids == tuple(ids)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lot=st.text(st.sampled_from(list("aZ09._-/\\: #\"',\t\u00e9\x00\x7f")), max_size=12))
def test_a_lot_id_is_accepted_exactly_when_it_follows_the_rule(tmp_path: Path, lot: str) -> None:
    """Whatever the text, the reader stores the lot id exactly when the (stripped) field
    follows LOT_ID_RULE, and refuses the file with an InputError otherwise."""
    quoted = '"' + lot.replace('"', '""') + '"'
    path = write(tmp_path, f"lot_id,diameter_um\n{quoted},17\n")
    want = lot.strip()
    if LOT_ID_RE.match(want) and len(want) <= LOT_ID_MAX_CHARS:
        assert read_fibre_csv(path).lot_ids == (want,)
        assert lot_id_problem(want) is None
    else:
        with pytest.raises(InputError):
            read_fibre_csv(path)
        assert lot_id_problem(want) is not None


# --------------------------------------------------------------------------------------
# errors: values
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["abc", "17,5x", "1_7", "\u0661\u0667", "0x11", "17 um"])
def test_non_numeric_field(tmp_path: Path, text: str) -> None:
    err = fibre_error(tmp_path, f'lot_id,diameter_um\nA,17\n# c\nA,"{text}"\n')
    assert err.line == 4
    assert "diameter_um" in err.message and repr(text) in err.message


def test_empty_numeric_field(tmp_path: Path) -> None:
    err = fibre_error(tmp_path, "lot_id,diameter_um\nA,17\nA,\n")
    assert err.line == 3 and "empty" in err.message


@pytest.mark.parametrize("text", ["NaN", "nan", "inf", "-inf", "Infinity"])
def test_nan_and_infinity_refused(tmp_path: Path, text: str) -> None:
    err = fibre_error(tmp_path, f"lot_id,diameter_um\nA,17\nA,{text}\n")
    assert err.line == 3 and text in err.message


@pytest.mark.parametrize("text", ["0", "-0", "-3.5"])
def test_diameter_not_positive(tmp_path: Path, text: str) -> None:
    err = fibre_error(tmp_path, f"lot_id,diameter_um\nA,17\nA,{text}\n")
    assert err.line == 3 and "<= 0" in err.message


def test_diameter_above_200(tmp_path: Path) -> None:
    err = fibre_error(tmp_path, "lot_id,diameter_um\nA,200\nA,200.5\n")
    assert err.line == 3 and "above 200" in err.message


def test_diameter_that_looks_like_millimetres(tmp_path: Path) -> None:
    err = fibre_error(tmp_path, "lot_id,diameter_um\nA,17\nA,0.016\n")
    assert err.line == 3
    problem = diameter_problem(0.016)
    assert problem is not None and problem in err.message


@pytest.mark.parametrize(
    ("column", "text", "words"),
    [
        ("length_mm", "-1", "negative"),
        ("length_mm", "0", "zero"),
        ("length_mm", "NaN", "NaN"),
        ("length_mm", "", "empty"),
        ("length_mm", "1e39", "too large"),
        ("curvature_deg_mm", "-0.5", "negative"),
        ("curvature_deg_mm", "nan", "NaN"),
        ("curvature_deg_mm", "inf", "infinite"),
    ],
)
def test_length_and_curvature_refused(tmp_path: Path, column: str, text: str, words: str) -> None:
    err = fibre_error(tmp_path, f"lot_id,diameter_um,{column}\nA,17,30\nA,17,{text}\n")
    assert err.line == 3 and column in err.message and words in err.message


def test_zero_curvature_accepted(tmp_path: Path) -> None:
    lots = read_fibre_csv(write(tmp_path, "lot_id,diameter_um,curvature_deg_mm\nA,17,0\n"))
    assert lots.curvature_deg_mm is not None and lots.curvature_deg_mm.tolist() == [0.0]


@pytest.mark.parametrize("text", ["maybe", "", "2", "y"])
def test_medullated_not_boolean(tmp_path: Path, text: str) -> None:
    err = fibre_error(tmp_path, f"lot_id,diameter_um,medullated\nA,17,TRUE\nA,18,{text}\n")
    assert err.line == 3 and "medullated" in err.message


def test_medullated_spellings(tmp_path: Path) -> None:
    rows = "".join(f"A,17,{v}\n" for v in ["true", "False", "YES", "no", "1", "0", " Yes "])
    lots = read_fibre_csv(write(tmp_path, "lot_id,diameter_um,medullated\n" + rows))
    assert lots.medullated is not None
    assert lots.medullated.tolist() == [True, False, True, False, True, False, True]


# --------------------------------------------------------------------------------------
# histograms
# --------------------------------------------------------------------------------------


def hist_error(tmp_path: Path, rows: str) -> InputError:
    with pytest.raises(InputError) as info:
        read_histogram_csv(write(tmp_path, "lot_id,lower_um,upper_um,count\n" + rows))
    return info.value


@pytest.mark.parametrize("text", ["-1", "-12"])
def test_histogram_negative_count(tmp_path: Path, text: str) -> None:
    err = hist_error(tmp_path, f"A,14,15,3\nA,15,16,{text}\n")
    assert err.line == 3 and "negative" in err.message


@pytest.mark.parametrize("text", ["2.5", "3.0", "1e3"])
def test_histogram_fractional_count(tmp_path: Path, text: str) -> None:
    err = hist_error(tmp_path, f"A,14,15,3\nA,15,16,{text}\n")
    assert err.line == 3 and "whole number" in err.message


@pytest.mark.parametrize("text", ["many", "", "nan", "99999999999999999999999"])
def test_histogram_count_not_an_integer(tmp_path: Path, text: str) -> None:
    err = hist_error(tmp_path, f"A,14,15,3\nA,15,16,{text}\n")
    assert err.line == 3 and "count" in err.message


def test_histogram_overlap_names_both_lines(tmp_path: Path) -> None:
    err = hist_error(tmp_path, "A,14,15,3\nB,14,15,1\n# c\nA,16,17,2\nA,14.5,15,1\n")
    assert err.line == 6
    assert "line 2" in err.message and "line 6" in err.message and "'A'" in err.message


def test_histogram_duplicate_class_overlaps(tmp_path: Path) -> None:
    err = hist_error(tmp_path, "A,14,15,3\nA,14,15,3\n")
    assert "line 2" in err.message and "line 3" in err.message


def test_histogram_touching_classes_and_gaps_accepted(tmp_path: Path) -> None:
    h = read_histogram_csv(
        write(tmp_path, "lot_id,lower_um,upper_um,count\nA,16,17,1\nA,10,11,2\nA,15,16,0\n")
    )
    assert h.lower_um.tolist() == [10, 15, 16] and h.counts.tolist() == [2, 0, 1]


def test_histogram_class_below_1_um_with_fibres_looks_like_millimetres(tmp_path: Path) -> None:
    err = hist_error(tmp_path, "A,14,15,3\nA,0.015,0.016,40\n")
    assert err.line == 3 and err.path == str(tmp_path / "in.csv")
    problem = diameter_problem(0.016)
    assert problem is not None and problem in err.message and "holds 40" in err.message
    assert hist_error(tmp_path, "A,0,1,7\nA,1,2,5\n").line == 2
    h = read_histogram_csv(
        write(tmp_path, "lot_id,lower_um,upper_um,count\nA,0,1,0\nA,1,2,4\nB,0.5,1,0\n")
    )
    assert h.counts.tolist() == [0, 4, 0]  # empty: kept


@settings(max_examples=200, deadline=None)
@given(
    classes=st.lists(
        st.tuples(st.integers(0, 4), st.integers(1, 8), st.integers(0, 3)),
        min_size=1,
        max_size=12,
    )
)
def test_histogram_reader_never_grades_fibres_below_1_um(
    tmp_path_factory: pytest.TempPathFactory, classes: list[tuple[int, int, int]]
) -> None:
    """Any histogram (bounds in quarters of a um) is refused exactly when one of its
    non-empty classes lies wholly below 1 um, at that class's line, or else when one of its
    classes (empty or not) does not lie within one whole micrometre, at that class's line;
    otherwise it is read as written. What the reader accepts the core can always grade."""
    rows, bounds, upper = [], [], 0
    for gap, width, count in classes:
        lo, hi = upper + gap, upper + gap + width
        upper = hi
        rows.append(f"A,{lo / 4:g},{hi / 4:g},{count}")
        bounds.append((lo, hi, count))
    path = tmp_path_factory.mktemp("h") / "h.csv"
    path.write_text("lot_id,lower_um,upper_um,count\n" + "\n".join(rows) + "\n")
    below = [k for k, (_, hi, count) in enumerate(bounds) if count > 0 and hi <= 4]
    off_grid = [k for k, (lo, hi, _) in enumerate(bounds) if hi > (lo // 4) * 4 + 4]
    if below:
        with pytest.raises(InputError, match="millimetres") as info:
            read_histogram_csv(path)
        assert info.value.line == below[0] + 2
    elif off_grid:
        with pytest.raises(InputError, match="spans more than one 1-um class") as info:
            read_histogram_csv(path)
        assert info.value.line == off_grid[0] + 2
    else:
        h = read_histogram_csv(path)
        assert h.counts.tolist() == [c for _, _, c in bounds]
        summarise_histograms(h)  # the core takes every histogram the reader accepts


@pytest.mark.parametrize(
    ("row", "within"),
    [("10.5,11.5", "[10, 11)"), ("10,12", "[10, 11)"), ("14.75,15.25", "[14, 15)")],
)
def test_histogram_class_spanning_two_1_um_classes_is_refused_at_import(
    tmp_path: Path, row: str, within: str
) -> None:
    """Such a class used to be stored, and then every grade of the store failed for good."""
    err = hist_error(tmp_path, f"A,14,15,3\n# c\nH2,{row},0\nH2,20,21,5\n")
    assert err.path == str(tmp_path / "in.csv") and err.line == 4
    assert "spans more than one 1-um class" in err.message and within in err.message
    assert err.expected is not None and "whole micrometre" in err.expected


def test_histogram_finer_classes_within_whole_micrometres_are_read(tmp_path: Path) -> None:
    rows = "A,10,10.5,1\nA,10.5,11,2\nA,11.25,11.75,3\nA,11.75,12,4\n"
    h = read_histogram_csv(write(tmp_path, "lot_id,lower_um,upper_um,count\n" + rows))
    assert h.counts.tolist() == [1, 2, 3, 4]
    assert summarise_histograms(h).histogram[0, 10:12].tolist() == [3, 7]


@pytest.mark.parametrize(
    "row", ["A,15,15,1", "A,16,15,1", "A,-1,15,1", "A,199,201,1", "A,nan,15,1", "A,14,x,1"]
)
def test_histogram_bad_class_bounds(tmp_path: Path, row: str) -> None:
    err = hist_error(tmp_path, f"A,10,11,3\n{row}\n")
    assert err.line == 3


# --------------------------------------------------------------------------------------
# lot manifests
# --------------------------------------------------------------------------------------

MANIFEST_HEAD = "lot_id,declared_type,origin,client,received_at,note\n"


def manifest_error(tmp_path: Path, rows: str) -> InputError:
    with pytest.raises(InputError) as info:
        read_lot_manifest(write(tmp_path, MANIFEST_HEAD + rows))
    return info.value


def test_manifest_conflicting_duplicate(tmp_path: Path) -> None:
    err = manifest_error(
        tmp_path,
        "L1,cashmere,MN,Acme,2024-05-10,a\nL2,yak,CN,Acme,,b\n\nL1,cashmere,CN,Acme,2024-05-10,z\n",
    )
    assert err.line == 5
    assert "line 2" in err.message and "line 5" in err.message
    assert "origin" in err.message and "extra note" in err.message
    assert "client" not in err.message.split(":")[-1]


def test_manifest_identical_duplicate_kept_once(tmp_path: Path) -> None:
    m = read_lot_manifest(
        write(tmp_path, MANIFEST_HEAD + "L1,yak,CN,Acme,,x\nL1, Yak ,CN,Acme,,x\n")
    )
    assert list(m) == ["L1"] and m["L1"].received_at is None and m["L1"].extra == {"note": "x"}


@pytest.mark.parametrize(
    ("header", "row"),
    [("lot_id;diameter_um", "A;15,2"), ("lot_id;declared_type;origin;client", "A;cashmere;MN;x")],
)
def test_a_semicolon_separated_file_is_named_as_such(tmp_path: Path, header, row) -> None:
    """A CSV saved by a spreadsheet where the decimal mark is a comma splits its fields by
    semicolons; the error said only that the header matched no format."""
    f = tmp_path / "excel.csv"
    f.write_text(f"{header}\n{row}\n")
    with pytest.raises(InputError, match="separated by semicolons") as exc:
        read_measurements(f)
    assert str(exc.value).startswith(f"{f}:1: ")


def test_a_semicolon_separated_carcass_file_is_named_as_such(tmp_path: Path) -> None:
    from fibergrade.meat.carcasses import read_carcass_csv

    f = tmp_path / "carcasses.csv"
    f.write_text("carcass_id;animal_id;lot_id\nC1;A1;L1\n")
    with pytest.raises(InputError, match="separated by semicolons"):
        read_carcass_csv(f)


def test_manifest_unknown_type_lists_types(tmp_path: Path) -> None:
    err = manifest_error(tmp_path, "L1,vicuna,PE,Acme,,\n")
    assert err.line == 2 and err.expected is not None
    assert all(t in err.expected for t in FIBRE_TYPES)


def test_manifest_bad_time_names_line(tmp_path: Path) -> None:
    err = manifest_error(tmp_path, "L1,yak,CN,Acme,2024-05-10,\nL2,yak,CN,Acme,10/05/2024,\n")
    assert err.line == 3 and "received_at" in err.message


def test_manifest_missing_column_and_empty_value(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="client"):
        read_lot_manifest(write(tmp_path, "lot_id,declared_type,origin\nL1,yak,CN\n"))
    err = manifest_error(tmp_path, "L1,yak,,Acme,,\n")
    assert err.line == 2 and "origin" in err.message


# --------------------------------------------------------------------------------------
# properties: round trip and line numbers
# --------------------------------------------------------------------------------------

LOT_CHARS = st.characters(
    codec="utf-8", exclude_categories=("Cc", "Cs", "Zs", "Zl", "Zp"), exclude_characters="#"
)
#: lot ids of the import rule (measurements.LOT_ID_RULE)
lot_names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,7}", fullmatch=True)


def _fmt(value: float, style: int) -> str:
    return repr(value) if style == 0 else f"{value:.6g}"


@st.composite
def fibre_tables(draw: st.DrawFn) -> tuple[list[str], list[list[str]]]:
    """A header and rows of text of a valid per-fibre table."""
    optional = draw(
        st.lists(
            st.sampled_from(["length_mm", "curvature_deg_mm", "medullated", "x_note"]),
            unique=True,
        )
    )
    header = draw(st.permutations(["lot_id", "diameter_um", *optional]))
    names = draw(st.lists(lot_names, min_size=1, max_size=4, unique=True))
    n = draw(st.integers(1, 30))
    pos = st.floats(1e-3, 1e4, allow_nan=False)
    values = {
        "lot_id": st.sampled_from(names),
        "diameter_um": st.floats(1.0, 200.0),
        "length_mm": pos,
        "curvature_deg_mm": st.just(0.0) | pos,
        "medullated": st.sampled_from(["true", "False", "YES", "no", "1", "0"]),
        "x_note": st.text(LOT_CHARS, max_size=5) | st.sampled_from(["a,b", 'q"t']),
    }
    rows = []
    for _ in range(n):
        row = []
        for name in header:
            v = draw(values[name])
            row.append(_fmt(v, draw(st.integers(0, 1))) if isinstance(v, float) else v)
        rows.append(row)
    return header, rows


def _render(draw: st.DrawFn, header: list[str], rows: list[list[str]]) -> tuple[bytes, list[int]]:
    """CSV bytes with random comments, blank lines, CRLF and BOM; and each row's line."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    comment = st.sampled_from(["# note", "  # indented, with comma", "", "   ", "#"])
    lines: list[str] = [draw(comment) for _ in range(draw(st.integers(0, 2)))]
    writer.writerow(header)
    lines.append(out.getvalue().removesuffix("\n"))
    row_lines = []
    for row in rows:
        for _ in range(draw(st.integers(0, 1)) * draw(st.integers(0, 2))):
            lines.append(draw(comment))
        out.seek(0)
        out.truncate()
        writer.writerow(row)
        lines.append(out.getvalue().removesuffix("\n"))
        row_lines.append(len(lines))
    lines += [draw(comment) for _ in range(draw(st.integers(0, 2)))]
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    text = eol.join(lines) + draw(st.sampled_from(["", eol]))
    data = text.encode("utf-8")
    if draw(st.booleans()):
        data = codecs.BOM_UTF8 + data
    return data, row_lines


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fibre_round_trip(tmp_path: Path, data: st.DataObject) -> None:
    header, rows = data.draw(fibre_tables())
    raw, _ = _render(data.draw, header, rows)
    lots = read_fibre_csv(write(tmp_path, raw))

    # reference grouping, with a plain Python loop
    col = {name: [r[j] for r in rows] for j, name in enumerate(header)}
    order: dict[str, list[int]] = {}
    for i, lot in enumerate(col["lot_id"]):
        order.setdefault(lot, []).append(i)
    perm = [i for idx in order.values() for i in idx]
    assert lots.lot_ids == tuple(order)
    assert lots.offsets.tolist() == np.cumsum([0] + [len(v) for v in order.values()]).tolist()
    for name in ("diameter_um", "length_mm", "curvature_deg_mm"):
        got = getattr(lots, name)
        if name not in header:
            assert got is None
            continue
        expected = np.array([float(col[name][i]) for i in perm], dtype=np.float32)
        np.testing.assert_array_equal(got, expected)
    if "medullated" in header:
        truth = {"true": True, "yes": True, "1": True}
        expected_m = [truth.get(col["medullated"][i].lower(), False) for i in perm]
        assert lots.medullated is not None and lots.medullated.tolist() == expected_m
    else:
        assert lots.medullated is None
    assert sniff_format(tmp_path / "in.csv") == "fibres"


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_error_line_number_counts_every_line(tmp_path: Path, data: st.DataObject) -> None:
    header, rows = data.draw(fibre_tables())
    bad_row = data.draw(st.integers(0, len(rows) - 1))
    rows[bad_row][header.index("diameter_um")] = data.draw(st.sampled_from(["0.016", "-1", "x"]))
    raw, row_lines = _render(data.draw, header, rows)
    with pytest.raises(InputError) as info:
        read_fibre_csv(write(tmp_path, raw))
    assert info.value.line == row_lines[bad_row]


@st.composite
def histogram_tables(draw: st.DrawFn) -> list[tuple[str, float, float, int]]:
    """Rows (lot, lower, upper, count) of a valid histogram table, shuffled."""
    names = draw(st.lists(lot_names, min_size=1, max_size=3, unique=True))
    rows = []
    for name in names:
        edges = draw(st.lists(st.integers(0, 400), min_size=2, max_size=8, unique=True))
        edges.sort()
        for lo, hi in itertools.pairwise(edges):
            if draw(st.booleans()) or len(rows) == 0:  # gaps are allowed
                hi = min(hi, (lo // 2 + 1) * 2)  # within one whole um (off_grid_classes)
                # a class wholly below 1 um may only be empty (measurements.impossible_classes)
                count = 0 if hi / 2 <= 1.0 else draw(st.integers(0, 10**12))
                rows.append((name, lo / 2, hi / 2, count))
    return draw(st.permutations(rows))


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_histogram_round_trip(tmp_path: Path, data: st.DataObject) -> None:
    rows = data.draw(histogram_tables())
    text_rows = [[lot, _fmt(lo, 1), _fmt(hi, 0), str(c)] for lot, lo, hi, c in rows]
    raw, _ = _render(data.draw, ["lot_id", "lower_um", "upper_um", "count"], text_rows)
    h = read_histogram_csv(write(tmp_path, raw))
    order = list(dict.fromkeys(r[0] for r in rows))
    assert h.lot_ids == tuple(order)
    expected = sorted(rows, key=lambda r: (order.index(r[0]), r[1]))
    assert h.lower_um.tolist() == [r[1] for r in expected]
    assert h.upper_um.tolist() == [r[2] for r in expected]
    assert h.counts.tolist() == [r[3] for r in expected]


# --------------------------------------------------------------------------------------
# fuzzing: bad bytes only ever raise InputError
# --------------------------------------------------------------------------------------

READERS = (read_fibre_csv, read_histogram_csv, read_lot_manifest, read_measurements, sniff_format)
SEEDS = [(DATA / f).read_bytes() for f in ("fibres.csv", "histogram.csv", "lots.csv")]


def _only_input_errors(path: Path) -> None:
    for reader in READERS:
        with contextlib.suppress(InputError):
            reader(path)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid example file with a few random byte edits."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    special = st.sampled_from(
        [b",", b"\n", b"\r", b'"', b"#", b"\x00", b"\xff", b"\xc3", b"-", b".", b"e", b"nan"]
    )
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.integers(0, 3))
        if op == 0:
            data[at:at] = draw(special | st.binary(min_size=1, max_size=4))
        elif op == 1:
            del data[at : at + draw(st.integers(1, 20))]
        elif op == 2:
            data[at : at + 1] = draw(special)
        else:
            data[at:at] = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@pytest.mark.timeout(600)
@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=400) | mutated())
def test_fuzz_only_input_errors(tmp_path: Path, raw: bytes) -> None:
    _only_input_errors(write(tmp_path, raw))


@pytest.mark.timeout(600)
@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.sampled_from(list('ab1.,"#\n\r -e_x')), max_size=200))
def test_fuzz_csv_like_text_only_input_errors(tmp_path: Path, text: str) -> None:
    _only_input_errors(write(tmp_path, "lot_id,diameter_um,medullated\n" + text))
    _only_input_errors(write(tmp_path, "lot_id,lower_um,upper_um,count\n" + text))
    _only_input_errors(write(tmp_path, "lot_id,declared_type,origin,client\n" + text))


# --------------------------------------------------------------------------------------
# a large interleaved file groups correctly (throughput belongs in benchmarks/, not here)
# --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_large_interleaved_file_groups_every_fibre_under_its_lot(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    n = 200_000
    lots = rng.integers(0, 300, n)
    d = np.round(rng.uniform(10, 40, n), 2)
    body = "\n".join(
        f"L{a},{x:.2f},{'yes' if x > 35 else 'no'}" for a, x in zip(lots, d, strict=True)
    )
    p = write(tmp_path, "# big\nlot_id,diameter_um,medullated\n" + body + "\n")
    got = read_fibre_csv(p)
    assert got.n_fibres == n and got.n_lots == len(set(lots.tolist()))
    first_seen = list(dict.fromkeys(f"L{a}" for a in lots.tolist()))
    assert list(got.lot_ids) == first_seen
    for i in (0, got.n_lots // 2, got.n_lots - 1):
        want = d[lots == int(got.lot_ids[i][1:])].astype(np.float32)
        np.testing.assert_array_equal(got.diameter_um[got.offsets[i] : got.offsets[i + 1]], want)
        np.testing.assert_array_equal(
            got.medullated[got.offsets[i] : got.offsets[i + 1]], want > 35
        )
