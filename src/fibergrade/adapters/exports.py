"""Vendor export files read through instrument profiles (``kind = "export"``).

A profile (see :mod:`fibergrade.adapters.profiles`) gives the delimiter, the decimal
separator (comma included), the encoding, the line of the header row, the header text of
each column fibergrade uses and the units; a new export format is a new profile, not new
code (DESIGN.md, "Interchange formats"). Two layouts:

``per-fibre-table`` -> :class:`fibergrade.measurements.FibreLots`
    one row per fibre snippet: lot id, diameter, and optionally length, curvature and a
    medullated flag (e.g. an OFDA-style export).
``histogram-table`` -> :class:`fibergrade.measurements.HistogramLots`
    one row per diameter class: lot id, class lower bound, optional upper bound (else
    ``class_width_um``), count (e.g. a Laserscan-style 1-um histogram, IWTO-12).

Rules (each violation is an :class:`fibergrade.errors.InputError` naming the file, the
1-based line as a text editor counts it, and what was expected):

* lines before ``header_line`` are the vendor's preamble and are skipped; blank lines and
  lines starting with the profile's ``comment`` prefix are skipped;
* every mapped column must be in the header; other columns are ignored;
* a data row has as many fields as the header; a field may be quoted, but a row may not
  span lines;
* numbers use the profile's decimal separator and nothing else: ``16.5`` in a
  decimal-comma file is refused (no guessing), as are thousands separators and exponents;
* diameters (converted from mm when the profile says so) must pass
  :func:`fibergrade.measurements.diameter_problem`; curvature must be 0..9999.999 deg/mm;
  lengths > 0 mm; counts whole numbers >= 0; histogram classes within 0..200 um, sorted and
  not overlapping within a lot;
* the rows of a lot are contiguous: a lot id that reappears after another lot is refused.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np

from fibergrade.adapters.analyser import CURVATURE_MAX_DEG_MM
from fibergrade.adapters.errors import ProfileError
from fibergrade.adapters.profiles import ExportSettings, Profile
from fibergrade.errors import InputError
from fibergrade.measurements import DIAMETER_MAX_UM, FibreLots, HistogramLots, diameter_problem

_NUM = {
    ".": re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$"),
    ",": re.compile(r"^[+-]?(?:\d+(?:,\d*)?|,\d+)$"),
}
_INT = re.compile(r"^\+?\d+$")
_UNIT_FACTOR = {"um": 1.0, "mm": 1000.0}


def _number(text: str, decimal: str, path: Path, line: int, column: str) -> float:
    t = text.strip()
    if _NUM[decimal].match(t):
        return float(t.replace(",", "."))
    other = "," if decimal == "." else "."
    name = "decimal comma" if decimal == "," else "decimal point"
    if _NUM[other].match(t) and other in t:
        raise InputError(
            path,
            line,
            f"column {column!r}: {text!r} uses {other!r} as decimal separator, "
            f"but the profile declares a {name}",
            expected=f"a number written with {decimal!r}",
        )
    raise InputError(
        path,
        line,
        f"column {column!r}: {text!r} is not a number",
        expected=f"a number written with {decimal!r} (no exponent, no grouping)",
    )


def _rows(path: Path, ex: ExportSettings) -> tuple[list[str], int, list[tuple[int, list[str]]]]:
    """(header fields, header line number, [(line number, fields)]) of the data rows."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(path, None, f"cannot read: {exc.strerror or exc}") from None
    enc = "utf-8-sig" if ex.encoding.lower().replace("_", "-") in ("utf-8", "utf8") else ex.encoding
    try:
        text = data.decode(enc)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(
            path,
            line,
            f"byte {data[exc.start]:#04x} is not valid {ex.encoding}",
            expected=f"text in {ex.encoding} (profile file.encoding)",
        ) from None
    lines = [x[:-1] if x.endswith("\r") else x for x in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()  # the file's final line break
    if len(lines) < ex.header_line:
        raise InputError(
            path,
            None,
            f"the file has {len(lines)} lines, no header row at line {ex.header_line}",
            expected="the header row the profile names",
        )

    def split(line_no: int, raw: str) -> list[str]:
        try:
            return next(csv.reader([raw], delimiter=ex.delimiter, strict=True))
        except (csv.Error, StopIteration) as exc:
            raise InputError(
                path,
                line_no,
                f"cannot split the row: {exc}",
                expected=f"fields separated by {ex.delimiter!r}",
            ) from None

    header = [h.strip() for h in split(ex.header_line, lines[ex.header_line - 1])]
    rows = []
    for no in range(ex.header_line + 1, len(lines) + 1):
        raw = lines[no - 1]
        if not raw.strip() or (ex.comment and raw.lstrip().startswith(ex.comment)):
            continue
        fields = split(no, raw)
        if len(fields) != len(header):
            raise InputError(
                path,
                no,
                f"{len(fields)} fields, the header has {len(header)}",
                expected=f"{len(header)} fields separated by {ex.delimiter!r}",
            )
        rows.append((no, fields))
    if not rows:
        raise InputError(
            path, None, "no data rows after the header", expected="at least one measurement row"
        )
    return header, ex.header_line, rows


def _column_index(
    path: Path, header: list[str], header_no: int, ex: ExportSettings
) -> dict[str, int]:
    idx = {}
    for fld, name in ex.columns.items():
        hits = [i for i, h in enumerate(header) if h == name]
        if not hits:
            raise InputError(
                path,
                header_no,
                f"column {name!r} (profile columns.{fld}) is not in the header",
                expected="one of " + ", ".join(repr(h) for h in header if h),
            )
        if len(hits) > 1:
            raise InputError(path, header_no, f"column {name!r} appears {len(hits)} times")
        idx[fld] = hits[0]
    return idx


def _lot_runs(path: Path, lots: list[tuple[int, str]]) -> tuple[tuple[str, ...], np.ndarray]:
    """Lot ids in order and CSR offsets; refuses a lot that reappears later."""
    ids: list[str] = []
    starts: list[int] = []
    first_line: dict[str, int] = {}
    for i, (no, lot) in enumerate(lots):
        if not ids or ids[-1] != lot:
            if lot in first_line:
                raise InputError(
                    path,
                    no,
                    f"lot {lot!r} reappears after other lots (first seen at line "
                    f"{first_line[lot]})",
                    expected="the rows of each lot together",
                )
            first_line[lot] = no
            ids.append(lot)
            starts.append(i)
    offsets = np.array([*starts, len(lots)], dtype=np.int64)
    return tuple(ids), offsets


def _lot_id(path: Path, no: int, text: str, column: str) -> str:
    lot = text.strip()
    if not lot:
        raise InputError(path, no, f"column {column!r}: empty lot id", expected="a lot id")
    return lot


def read_per_fibre(profile: Profile, path: str | Path) -> FibreLots:
    """Read a per-fibre export (``per-fibre-table``) into :class:`FibreLots`."""
    ex = _export_settings(profile, "per-fibre-table")
    path = Path(path)
    header, header_no, rows = _rows(path, ex)
    col = _column_index(path, header, header_no, ex)
    names = ex.columns
    factor = _UNIT_FACTOR[ex.diameter_unit]
    n = len(rows)
    diam = np.empty(n, dtype=np.float32)
    length = np.empty(n, dtype=np.float32) if "length" in col else None
    curv = np.empty(n, dtype=np.float32) if "curvature" in col else None
    med = np.empty(n, dtype=np.bool_) if "medullated" in col else None
    lots: list[tuple[int, str]] = []
    for i, (no, f) in enumerate(rows):
        lots.append((no, _lot_id(path, no, f[col["lot_id"]], names["lot_id"])))
        text = f[col["diameter"]]
        v = _number(text, ex.decimal, path, no, names["diameter"]) * factor
        problem = diameter_problem(v)
        if problem:
            shown = f"{text.strip()} {ex.diameter_unit}" + (f" = {v:g} um" if factor != 1 else "")
            raise InputError(
                path,
                no,
                f"diameter {shown} {problem}",
                expected=f"0 < diameter <= {DIAMETER_MAX_UM:g} um",
            )
        diam[i] = v
        if length is not None:
            x = _number(f[col["length"]], ex.decimal, path, no, names["length"])
            if not x > 0:
                raise InputError(
                    path, no, f"length {x:g} mm is not positive", expected="a length > 0 mm"
                )
            length[i] = x
        if curv is not None:
            x = _number(f[col["curvature"]], ex.decimal, path, no, names["curvature"])
            if not 0 <= x <= CURVATURE_MAX_DEG_MM:
                raise InputError(
                    path,
                    no,
                    f"curvature {x:g} deg/mm is impossible",
                    expected=f"0 .. {CURVATURE_MAX_DEG_MM:g} deg/mm",
                )
            curv[i] = x
        if med is not None:
            t = f[col["medullated"]].strip().lower()
            if t in ex.true_values:
                med[i] = True
            elif t in ex.false_values:
                med[i] = False
            else:
                raise InputError(
                    path,
                    no,
                    f"column {names['medullated']!r}: {t!r} is not a medullation flag",
                    expected="one of " + ", ".join(ex.true_values + ex.false_values),
                )
    ids, offsets = _lot_runs(path, lots)
    return FibreLots(ids, offsets, diam, length_mm=length, curvature_deg_mm=curv, medullated=med)


def read_histogram(profile: Profile, path: str | Path) -> HistogramLots:
    """Read a histogram export (``histogram-table``) into :class:`HistogramLots`."""
    ex = _export_settings(profile, "histogram-table")
    path = Path(path)
    header, header_no, rows = _rows(path, ex)
    col = _column_index(path, header, header_no, ex)
    names = ex.columns
    factor = _UNIT_FACTOR[ex.diameter_unit]
    n = len(rows)
    lo = np.empty(n, dtype=np.float64)
    hi = np.empty(n, dtype=np.float64)
    counts = np.empty(n, dtype=np.int64)
    lots: list[tuple[int, str]] = []
    prev: tuple[str, float] | None = None
    for i, (no, f) in enumerate(rows):
        lot = _lot_id(path, no, f[col["lot_id"]], names["lot_id"])
        lots.append((no, lot))
        a = _number(f[col["lower"]], ex.decimal, path, no, names["lower"]) * factor
        if "upper" in col:
            b = _number(f[col["upper"]], ex.decimal, path, no, names["upper"]) * factor
        else:
            assert ex.class_width_um is not None  # the profile loader guarantees it
            b = a + ex.class_width_um
        if not (0 <= a < b <= DIAMETER_MAX_UM) or not (math.isfinite(a) and math.isfinite(b)):
            raise InputError(
                path,
                no,
                f"class [{a:g}, {b:g}) um is impossible",
                expected=f"0 <= lower < upper <= {DIAMETER_MAX_UM:g} um",
            )
        if prev is not None and prev[0] == lot and a < prev[1] - 1e-9:
            raise InputError(
                path,
                no,
                f"class [{a:g}, {b:g}) um overlaps or precedes the "
                f"class before it (which ends at {prev[1]:g} um)",
                expected="classes of a lot in ascending order, not overlapping",
            )
        prev = (lot, b)
        ct = f[col["count"]].strip()
        if not _INT.match(ct):
            raise InputError(
                path,
                no,
                f"column {names['count']!r}: {ct!r} is not a count",
                expected="a whole number >= 0",
            )
        lo[i], hi[i], counts[i] = a, b, int(ct)
    ids, offsets = _lot_runs(path, lots)
    return HistogramLots(ids, offsets, lo, hi, counts)


def _export_settings(profile: Profile, protocol: str) -> ExportSettings:
    if profile.kind != "export" or profile.export is None or profile.protocol != protocol:
        raise ProfileError(
            str(profile.path),
            "instrument.protocol",
            f"is {profile.protocol!r}, this reader needs {protocol!r}",
        )
    return profile.export


def read_export(profile: Profile, path: str | Path) -> FibreLots | HistogramLots:
    """Read ``path`` as the profile says: per-fibre table or histogram table.

    The entry point for ``fibergrade import --instrument PROFILE FILE``.
    """
    if profile.kind != "export":
        raise ProfileError(
            str(profile.path),
            "instrument.kind",
            f"is {profile.kind!r}; importing a file needs an export profile",
        )
    if profile.protocol == "per-fibre-table":
        return read_per_fibre(profile, path)
    return read_histogram(profile, path)
