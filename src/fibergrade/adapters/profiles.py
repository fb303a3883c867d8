"""Instrument profiles: one TOML file per instrument model in ``instruments/``.

A profile says how to talk to an instrument or how to read its export files, so that a lab
adds a new export format by writing a profile, with no code (issue 3, DESIGN.md
"Interchange formats"). The loader is strict: an unknown section or key, a missing field, a
value of the wrong type or outside its allowed set is refused with a :class:`ProfileError`
that names the file and the dotted key.

Sections by ``instrument.kind``:

``kind = "scale"``  (``protocol`` one of ``mt-sics``, ``sbi``, ``and``, ``cas``)
    ``[instrument]`` kind, protocol, optional description, model, source
    ``[serial]``     baudrate, bytesize, parity (N/E/O/M/S), stopbits (1, 1.5, 2);
                     optional xonxoff, rtscts, dsrdtr (default false)
    ``[scale]``      unit, max, e; optional min (default 20 e, the OIML R76 class III
                     minimum, scales.md "Legal metrology"), id, device_id (CAS address,
                     default 1), reply_timeout_s (2), stability_window_s (1.0, scales.md
                     "about one second"), stability_timeout_s (10), poll_interval_s (0.1)

``kind = "analyser"``  (``protocol = "fibergrade-line"``, see :mod:`.analyser`)
    ``[instrument]``, ``[serial]`` as above; optional ``[analyser]`` line_timeout_s (5),
    max_line_bytes (256)

``kind = "export"``  (``protocol`` ``per-fibre-table`` or ``histogram-table``)
    ``[file]``     delimiter (one character; ``"\\t"`` for tab), decimal (``"."`` or ``","``);
                   optional encoding (utf-8), header_line (1-based, default 1: lines before
                   it are the vendor's preamble), comment (a prefix; lines starting with it
                   are skipped), instrument_label (the preamble field before the
                   instrument's id, e.g. ``Instrument`` for ``Instrument,LS-DEMO-01``: the
                   lots of the file take that id unless a manifest gives them one; needs
                   header_line above 1; see :func:`.exports.preamble_instrument`)
    ``[columns]``  fibergrade field = header text in the file. per-fibre-table: lot_id,
                   diameter required; length, curvature, medullated optional.
                   histogram-table: lot_id, lower, count required; upper optional (else
                   ``[histogram] class_width_um``).
    ``[units]``    diameter (``um`` or ``mm``); optional length (``mm``)
    optional ``[values]`` true, false: the texts of a medullated column (case-insensitive)
    optional ``[histogram]`` class_width_um

Profiles are found by name (the file stem) in, in order: the directories of the
``FIBERGRADE_INSTRUMENTS`` environment variable (``os.pathsep``-separated; a lab's own
profiles), ``./instruments`` of the current directory, and the ``instruments/`` directory of
the source checkout this module was imported from (``src/fibergrade/adapters/`` -> the
checkout root). ``make`` installs the package editable, so the last one holds from any
working directory; the profiles are not package data, so a non-editable install (a wheel)
finds them only through the first two or by path. A name that is not found is refused with
the known names and the directories searched. A profile can always be given as a path.
"""

from __future__ import annotations

import contextlib
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fibergrade.adapters.errors import ProfileError

#: ``instrument.kind`` -> the protocols it accepts
KINDS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "scale": ("mt-sics", "sbi", "and", "cas"),
        "analyser": ("fibergrade-line",),
        "export": ("per-fibre-table", "histogram-table"),
    }
)

PARITIES = ("N", "E", "O", "M", "S")


@dataclass(frozen=True)
class SerialSettings:
    """Serial line settings passed to pyserial (ignored by ``socket://`` URLs)."""

    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1
    xonxoff: bool = False
    rtscts: bool = False
    dsrdtr: bool = False

    def pyserial_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``serial.Serial`` attributes."""
        return {
            "baudrate": self.baudrate,
            "bytesize": self.bytesize,
            "parity": self.parity,
            "stopbits": self.stopbits,
            "xonxoff": self.xonxoff,
            "rtscts": self.rtscts,
            "dsrdtr": self.dsrdtr,
        }


@dataclass(frozen=True)
class ScaleSettings:
    """Metrological and timing settings of a scale, in the scale's ``unit``."""

    unit: str
    max: float
    e: float
    min: float
    id: str | None = None
    device_id: int = 1
    reply_timeout_s: float = 2.0
    stability_window_s: float = 1.0
    stability_timeout_s: float = 10.0
    poll_interval_s: float = 0.1


@dataclass(frozen=True)
class AnalyserSettings:
    """Settings of a live analyser speaking the fibergrade line protocol."""

    line_timeout_s: float = 5.0
    max_line_bytes: int = 256


@dataclass(frozen=True)
class ExportSettings:
    """How to read an export file: layout, number format, column map and units."""

    delimiter: str
    decimal: str
    columns: Mapping[str, str]
    diameter_unit: str
    length_unit: str = "mm"
    encoding: str = "utf-8"
    header_line: int = 1
    comment: str | None = None
    #: the preamble field that precedes the instrument id (None: the preamble is not read)
    instrument_label: str | None = None
    true_values: tuple[str, ...] = ("1", "true", "yes", "y")
    false_values: tuple[str, ...] = ("0", "false", "no", "n")
    class_width_um: float | None = None


@dataclass(frozen=True)
class Profile:
    """A loaded, validated instrument profile."""

    name: str
    path: Path
    kind: str
    protocol: str
    description: str = ""
    model: str | None = None
    source: str | None = None
    serial: SerialSettings | None = None
    scale: ScaleSettings | None = None
    analyser: AnalyserSettings | None = None
    export: ExportSettings | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


# --------------------------------------------------------------------------- schema

_Check = Callable[[Any], str | None]  # returns why a value is refused, or None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, int | float) and not isinstance(v, bool)) and math.isfinite(v)


def _string(v: Any) -> str | None:
    return None if isinstance(v, str) and v.strip() else "must be a non-empty string"


def _boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


def _positive(v: Any) -> str | None:
    return None if _is_num(v) and v > 0 else "must be a number > 0"


def _nonnegative(v: Any) -> str | None:
    return None if _is_num(v) and v >= 0 else "must be a number >= 0"


def _one_of(*allowed: Any) -> _Check:
    def check(v: Any) -> str | None:
        if isinstance(v, bool) or v not in allowed:
            return "must be one of " + ", ".join(repr(a) for a in allowed)
        return None

    return check


def _int_range(lo: int, hi: int) -> _Check:
    def check(v: Any) -> str | None:
        return None if _is_int(v) and lo <= v <= hi else f"must be an integer {lo}..{hi}"

    return check


def _string_list(v: Any) -> str | None:
    if isinstance(v, list) and v and all(isinstance(x, str) and x.strip() for x in v):
        return None
    return "must be a non-empty list of non-empty strings"


def _one_char(v: Any) -> str | None:
    return None if isinstance(v, str) and len(v) == 1 else "must be exactly one character"


def _encoding(v: Any) -> str | None:
    import codecs

    if not isinstance(v, str):
        return "must be a text encoding name such as 'utf-8'"
    try:
        codecs.lookup(v)
    except LookupError:
        return f"{v!r} is not a text encoding Python knows"
    return None


# section -> key -> (required, check)
_INSTRUMENT = {
    "kind": (True, _one_of(*KINDS)),
    "protocol": (True, _string),
    "description": (False, _string),
    "model": (False, _string),
    "source": (False, _string),
}
_SERIAL = {
    "baudrate": (True, _int_range(50, 4_000_000)),
    "bytesize": (True, _one_of(5, 6, 7, 8)),
    "parity": (True, _one_of(*PARITIES)),
    "stopbits": (True, _one_of(1, 1.5, 2)),
    "xonxoff": (False, _boolean),
    "rtscts": (False, _boolean),
    "dsrdtr": (False, _boolean),
}
_SCALE = {
    "unit": (True, _string),
    "max": (True, _positive),
    "e": (True, _positive),
    "min": (False, _nonnegative),
    "id": (False, _string),
    "device_id": (False, _int_range(0, 99)),
    "reply_timeout_s": (False, _positive),
    "stability_window_s": (False, _positive),
    "stability_timeout_s": (False, _positive),
    "poll_interval_s": (False, _positive),
}
_ANALYSER = {
    "line_timeout_s": (False, _positive),
    "max_line_bytes": (False, _int_range(32, 65536)),
}
_FILE = {
    "delimiter": (True, _one_char),
    "decimal": (True, _one_of(".", ",")),
    "encoding": (False, _encoding),
    "header_line": (False, _int_range(1, 10_000)),
    "comment": (False, _string),
    "instrument_label": (False, _string),
}
_UNITS = {
    "diameter": (True, _one_of("um", "mm")),
    "length": (False, _one_of("mm")),
}
_VALUES = {"true": (False, _string_list), "false": (False, _string_list)}
_HISTOGRAM = {"class_width_um": (False, _positive)}
_COLUMNS = {
    "per-fibre-table": {
        "lot_id": (True, _string),
        "diameter": (True, _string),
        "length": (False, _string),
        "curvature": (False, _string),
        "medullated": (False, _string),
    },
    "histogram-table": {
        "lot_id": (True, _string),
        "lower": (True, _string),
        "upper": (False, _string),
        "count": (True, _string),
    },
}

# kind -> section -> (required section, schema)
_SECTIONS: dict[str, dict[str, tuple[bool, dict[str, tuple[bool, _Check]]]]] = {
    "scale": {
        "instrument": (True, _INSTRUMENT),
        "serial": (True, _SERIAL),
        "scale": (True, _SCALE),
    },
    "analyser": {
        "instrument": (True, _INSTRUMENT),
        "serial": (True, _SERIAL),
        "analyser": (False, _ANALYSER),
    },
    "export": {
        "instrument": (True, _INSTRUMENT),
        "file": (True, _FILE),
        "columns": (True, {}),  # schema depends on the protocol, filled in below
        "units": (True, _UNITS),
        "values": (False, _VALUES),
        "histogram": (False, _HISTOGRAM),
    },
}


def _check_section(
    path: str, name: str, table: Any, schema: Mapping[str, tuple[bool, _Check]]
) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ProfileError(path, name, "must be a table ([" + name + "])")
    for key in table:
        if key not in schema:
            raise ProfileError(
                path,
                f"{name}.{key}",
                "unknown key; allowed keys here: " + ", ".join(sorted(schema)),
            )
    for key, (required, check) in schema.items():
        if key not in table:
            if required:
                raise ProfileError(path, f"{name}.{key}", "missing required key")
            continue
        why = check(table[key])
        if why:
            raise ProfileError(path, f"{name}.{key}", f"{why} (got {table[key]!r})")
    return table


def profile_from_dict(
    data: Mapping[str, Any], path: str | Path, name: str | None = None
) -> Profile:
    """Validate a parsed TOML document and build a :class:`Profile`.

    Raises :class:`ProfileError` naming ``path`` and the offending key.
    """
    spath = str(path)
    if "instrument" not in data:
        raise ProfileError(spath, "instrument", "missing required section")
    inst = _check_section(spath, "instrument", data["instrument"], _INSTRUMENT)
    kind = inst["kind"]
    protocol = inst["protocol"]
    if protocol not in KINDS[kind]:
        raise ProfileError(
            spath,
            "instrument.protocol",
            f"{protocol!r} is not a {kind} protocol; known: " + ", ".join(KINDS[kind]),
        )
    sections = dict(_SECTIONS[kind])
    if kind == "export":
        sections["columns"] = (True, _COLUMNS[protocol])
    for sec in data:
        if sec not in sections:
            raise ProfileError(
                spath,
                sec,
                f"unknown section for a {kind} profile; allowed: " + ", ".join(sections),
            )
    checked: dict[str, dict[str, Any]] = {}
    for sec, (required, schema) in sections.items():
        if sec not in data:
            if required:
                raise ProfileError(spath, sec, "missing required section")
            checked[sec] = {}
            continue
        checked[sec] = _check_section(spath, sec, data[sec], schema)

    serial = None
    if "serial" in sections:
        serial = SerialSettings(**checked["serial"])

    scale = analyser = export = None
    if kind == "scale":
        s = dict(checked["scale"])
        if s["e"] >= s["max"]:
            raise ProfileError(spath, "scale.e", f"e ({s['e']}) must be smaller than max")
        # OIML R76 class III: Min = 20 e (scales.md, Legal metrology). A scale outside class
        # III (n = max/e above 10,000: the MT-SICS, A&D and SBI examples) gets the same
        # default [unsourced for other classes: the reference gives class III's Min only];
        # a profile states its own min when the scale's certificate says otherwise.
        s.setdefault("min", 20 * s["e"])
        if s["min"] >= s["max"]:
            raise ProfileError(spath, "scale.min", f"min ({s['min']}) must be below max")
        scale = ScaleSettings(**s)
    elif kind == "analyser":
        analyser = AnalyserSettings(**checked["analyser"])
    else:
        f = checked["file"]
        if f["delimiter"] == f["decimal"]:
            raise ProfileError(
                spath,
                "file.decimal",
                f"the decimal separator {f['decimal']!r} equals the delimiter; a file with "
                "decimal comma needs another delimiter such as ';'",
            )
        if f["delimiter"] in '\r\n"':
            raise ProfileError(spath, "file.delimiter", "must not be a quote or line break")
        if "instrument_label" in f and f.get("header_line", 1) == 1:
            raise ProfileError(
                spath,
                "file.instrument_label",
                "is read from the preamble, the lines before the header: it needs "
                "file.header_line above 1",
            )
        cols = checked["columns"]
        headers = list(cols.values())
        dup = next((h for h in headers if headers.count(h) > 1), None)
        if dup is not None:
            raise ProfileError(spath, "columns", f"header {dup!r} is mapped to two fields")
        hist = checked["histogram"]
        if protocol == "histogram-table" and "upper" not in cols and not hist:
            raise ProfileError(
                spath,
                "histogram.class_width_um",
                "missing: a histogram profile needs either columns.upper or "
                "histogram.class_width_um",
            )
        values = checked["values"]
        if values and "medullated" not in cols:
            raise ProfileError(spath, "values", "given but columns.medullated is not mapped")
        t = tuple(x.strip().lower() for x in values.get("true", ExportSettings.true_values))
        fv = tuple(x.strip().lower() for x in values.get("false", ExportSettings.false_values))
        if set(t) & set(fv):
            raise ProfileError(spath, "values", "a text is listed as both true and false")
        units = checked["units"]
        if "length" in units and "length" not in cols:
            raise ProfileError(spath, "units.length", "given but columns.length is not mapped")
        export = ExportSettings(
            delimiter=f["delimiter"],
            decimal=f["decimal"],
            columns=MappingProxyType({k: v.strip() for k, v in cols.items()}),
            diameter_unit=units["diameter"],
            length_unit=units.get("length", "mm"),
            encoding=f.get("encoding", "utf-8"),
            header_line=f.get("header_line", 1),
            comment=f.get("comment"),
            instrument_label=f["instrument_label"].strip() if "instrument_label" in f else None,
            true_values=t,
            false_values=fv,
            class_width_um=hist.get("class_width_um"),
        )

    return Profile(
        name=name or Path(path).stem,
        path=Path(path),
        kind=kind,
        protocol=protocol,
        description=inst.get("description", ""),
        model=inst.get("model"),
        source=inst.get("source"),
        serial=serial,
        scale=scale,
        analyser=analyser,
        export=export,
        raw=MappingProxyType(dict(data)),
    )


# --------------------------------------------------------------------------- finding


def instrument_dirs() -> list[Path]:
    """Directories searched for profiles by name, in order (see the module docstring)."""
    dirs: list[Path] = []
    env = os.environ.get("FIBERGRADE_INSTRUMENTS")
    if env:
        dirs.extend(Path(p) for p in env.split(os.pathsep) if p)
    with contextlib.suppress(OSError):  # the working directory may have been removed
        dirs.append(Path.cwd() / "instruments")
    # src/fibergrade/adapters/profiles.py -> checkout root
    dirs.append(Path(__file__).resolve().parents[3] / "instruments")
    seen: set[Path] = set()
    out = []
    for d in dirs:
        r = d.resolve()
        if r not in seen:
            seen.add(r)
            out.append(r)
    return out


def list_profiles() -> dict[str, Path]:
    """Every profile name found on the search path, mapped to its file (first wins)."""
    found: dict[str, Path] = {}
    for d in instrument_dirs():
        if d.is_dir():
            for p in sorted(d.glob("*.toml")):
                found.setdefault(p.stem, p)
    return found


def find_profile(name_or_path: str | Path) -> Path:
    """Resolve a profile name (``mt-sics-scale``) or a path to an existing file."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.parent != Path(".") or p.exists():
        if p.is_file():
            return p
        if p.is_dir():
            raise ProfileError(str(p), None, "is a directory, not a profile file")
        raise ProfileError(str(p), None, "no such profile file")
    known = list_profiles()
    if str(name_or_path) in known:
        return known[str(name_or_path)]
    raise ProfileError(
        str(name_or_path),
        None,
        "no profile of that name; known profiles: "
        + (", ".join(sorted(known)) or "none")
        + " (searched "
        + ", ".join(str(d) for d in instrument_dirs())
        + ")",
    )


def load_profile(name_or_path: str | Path) -> Profile:
    """Load and validate a profile given by name or by path.

    Raises :class:`ProfileError` (names the file and the key) for a missing file, bad TOML,
    unknown or missing keys and out-of-range values.
    """
    path = find_profile(name_or_path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ProfileError(str(path), None, f"cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")  # TOML is UTF-8 (tomllib.load would raise a bare error)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ProfileError(
            str(path),
            None,
            f"line {line}: byte 0x{raw[exc.start]:02x} is not UTF-8 text; a profile is a "
            "UTF-8 TOML file (instruments/*.toml)",
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(str(path), None, f"not valid TOML: {exc}") from None
    return profile_from_dict(data, path)
