"""One-page PDF rendering of a signed certificate (fpdf2, with matplotlib's DejaVu font so
Mongolian and Kazakh place names print)."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

from fibergrade.audit import canonical_json
from fibergrade.safe_files import replace_with


def _font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def _fmt(v: Any) -> str:
    return "—" if v is None else str(v)


def render_pdf(
    envelope: dict[str, Any],
    record: dict[str, Any],
    path: str | Path,
    *,
    calibration: dict[str, Any] | None = None,
) -> Path:
    """Write the certificate in ``envelope`` as a one-page PDF; ``record`` is the lot's
    grade record the certificate was made from (it carries the histogram), and
    ``calibration`` the calibration record it names (its date, range and reference set are
    printed; without it, the record's id alone).

    A figure a grading criterion judged is printed with the value the grade was judged on
    (two decimals, as the criteria lines print it) beside the reported figure, so that
    "CV 24.0" never stands next to "24.02 <= 24 FAIL" unexplained."""
    from fpdf import FPDF

    from fibergrade.plots import histogram_png

    cert = envelope["certificate"]
    sig = envelope["signature"]
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(False)
    fonts = _font_dir()
    pdf.add_font("DejaVu", "", str(fonts / "DejaVuSans.ttf"))
    pdf.add_font("DejaVu", "B", str(fonts / "DejaVuSans-Bold.ttf"))
    pdf.add_font("DejaVuMono", "", str(fonts / "DejaVuSansMono.ttf"))
    pdf.add_page()
    pdf.set_font("DejaVu", "B", 15)
    pdf.cell(0, 9, "Fibre test certificate", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", "", 9)
    pdf.cell(
        0,
        5,
        f"{cert['certificate_number']}   issued {cert['issued_at']}   by {cert['lab']['name']}",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    if cert.get("supersedes"):
        pdf.cell(
            0,
            5,
            f"Supersedes {cert['supersedes']}: {cert.get('reissue_reason', '')}",
            new_x="LMARGIN",
            new_y="NEXT",
        )
    pdf.ln(2)
    std = cert["standard"]
    rows = lot_rows(cert, calibration)
    _table(pdf, rows, 62)
    pdf.set_font("DejaVu", "", 7)
    pdf.multi_cell(0, 3.4, f"Standard cites: {_standard_citation(std)}", align="L",
                   new_x="LMARGIN", new_y="NEXT")  # fmt: skip
    pdf.set_font("DejaVuMono", "", 6.5)
    pdf.cell(0, 3.4, f"standard file SHA-256: {_fmt(std.get('digest'))}",
             new_x="LMARGIN", new_y="NEXT")  # fmt: skip
    pdf.ln(1)
    pdf.set_font("DejaVu", "B", 11)
    grade = cert["grade"]["id"] or "meets no grade"
    pdf.cell(0, 7, f"Grade: {grade}", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", "", 8)
    for c in cert["grade"]["criteria"]:
        mark = "pass" if c["passed"] else "FAIL"
        value = "—" if c["value"] is None else f"{c['value']:.2f}"
        pdf.cell(
            0,
            4.2,
            f"  [{c['grade']}] {c['name']}: {value} {c['op']} {c['limit']:g}  {mark}",
            new_x="LMARGIN",
            new_y="NEXT",
        )
    pdf.ln(1)
    fig_rows = figure_rows(cert)
    y0 = pdf.get_y()
    _table(pdf, fig_rows, 42, width=90)
    rec = record
    if rec.get("histogram", {}).get("counts"):
        with tempfile.TemporaryDirectory() as tmp:
            png = histogram_png(rec, Path(tmp) / "h.png")
            pdf.image(str(png), x=103, y=y0, w=97)
    pdf.set_y(max(pdf.get_y(), y0 + 55) + 1)
    binned = (cert.get("basis") or {}).get("binned") or []
    pdf.set_font("DejaVu", "", 7)
    pdf.multi_cell(
        0,
        3.4,
        "Figures are reported at certificate precision (MFD to 0.1 um); a figure a criterion "
        "judged also shows the value it was judged on."
        + (f" From histogram classes (binned): {', '.join(binned)}." if binned else ""),
        align="L",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.ln(1)
    pdf.set_font("DejaVu", "", 9)
    text = screening_text(cert)
    pdf.multi_cell(0, 4.5, text, align="L", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    pdf.set_font("DejaVu", "B", 9)
    pdf.cell(0, 5, "How to verify this certificate", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVuMono", "", 7)
    body = canonical_json(cert)
    lines = [
        f"fibergrade verify {cert['certificate_number']}.json --public-key lab.pub "
        "[--store STORE] [--revocations revocations.json]",
        f"signing key (SHA-256 of Ed25519 public key): {sig['key_fingerprint']}",
        f"SHA-256 of the signed canonical JSON:          {hashlib.sha256(body).hexdigest()}",
        f"raw data segment SHA-256:                      {cert['raw_segment']['sha256']}",
        f"software {cert['software_version']}; the JSON file is authoritative, "
        "this page renders it.",
    ]
    for line in lines:
        pdf.cell(0, 3.8, line, new_x="LMARGIN", new_y="NEXT")
    out = Path(path)
    # beside the name and renamed: a reader never sees half a PDF, and a link planted
    # there is never followed
    replace_with(out, bytes(pdf.output()))
    return out


def lot_rows(cert: dict[str, Any], calibration: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The rows of the page's first table: the lot, its dates and origin, the instrument,
    the calibration (the record's whole SHA-256 and, given the record, its date, range and
    reference set) and the standard."""
    lot, origin, cal = cert["lot"], cert["origin_claim"], cert["calibration"]
    std = cert["standard"]
    return [
        ("Lot", lot["lot_id"]),
        ("Declared type", _fmt(lot.get("declared_type"))),
        ("Client", _fmt(lot.get("client"))),
        ("Received / measured", f"{_fmt(lot.get('received_at'))} / {_fmt(lot.get('measured_at'))}"),
        (
            "Origin",
            " / ".join(x for x in (origin.get("country"), origin.get("region")) if x) or "—",
        ),
        ("Geographical indication claimed", _fmt(origin.get("geographical_indication"))),
        ("Instrument", _fmt(cert["instrument"].get("id"))),
        ("Calibration", _calibration_text(cal)),
        *(
            [("Calibration record", _calibration_details(calibration))]
            if calibration is not None and not cal.get("uncalibrated")
            else []
        ),
        ("Standard", f"{std['id']} v{std['version']}"),
    ]


def _reads_as(text: str, value: float) -> bool:
    """Whether a figure as printed reads as ``value`` to two decimals ("15.3" as 15.30,
    not "24.0" as 24.02): then the value it was judged on goes without saying."""
    try:
        return float(text) == float(f"{value:.2f}")
    except ValueError:
        return False


def figure_rows(cert: dict[str, Any]) -> list[tuple[str, str]]:
    """The figures table: each figure at certificate precision; a figure a criterion judged
    also shows, to the two decimals of the criteria lines, the value it was judged on
    (CV 24.0 beside "24.02 <= 24 FAIL" read as a contradiction)."""
    judged: dict[str, float] = {}
    for c in cert["grade"]["criteria"]:
        if c.get("value") is not None:
            judged.setdefault(c["figure"], c["value"])
    f = cert["figures"]
    cut = (cert.get("basis") or {}).get("cut_um")
    cut_text = f"> {cut:g} um" if isinstance(cut, int | float) else "> cut"

    def fig(key: str) -> str:
        text = _fmt(f.get(key))
        if key in judged and f.get(key) is not None and not _reads_as(text, judged[key]):
            text += f"  (graded on {judged[key]:.2f})"
        return text

    return [
        ("n (snippets)", fig("n")),
        ("MFD (um)", fig("mfd_um")),
        ("SD (um)", fig("sd_um")),
        ("CV (%)", fig("cv_pct")),
        ("Min / max (um)", f"{_fmt(f.get('min_um'))} / {_fmt(f.get('max_um'))}"),
        ("CF (%)", fig("cf_pct")),
        ("PF (%)", fig("pf_pct")),
        (f"{cut_text} by mass (%)", fig("coarse_mass_pct")),
        (f"{cut_text} by count (%)", fig("coarse_count_pct")),
        ("SF (um)", fig("sf_um")),
        ("P5 / P50 / P95 (um)", " / ".join(_fmt(f.get(k)) for k in ("p5_um", "p50_um", "p95_um"))),
        (
            "Curvature (deg/mm)",
            f"mean {_fmt(f.get('curvature_mean_deg_mm'))}, SD {_fmt(f.get('curvature_sd_deg_mm'))}",
        ),
        ("Medullated (%)", fig("medullated_pct")),
        ("Mean length (mm)", fig("length_mean_mm")),
    ]


def screening_text(cert: dict[str, Any]) -> str:
    """The screening line: verdict, probability, model id and digest, any override with
    who recorded it."""
    scr = cert["screening"]
    text = f"Screening: {scr.get('verdict')}"
    if scr.get("probability") is not None:
        text += f" (probability {scr['probability']})"
    digest = scr.get("model_digest")
    if digest:
        text += f", model screening-{str(digest)[:12]} (SHA-256 {digest})"
    if scr.get("override"):
        o = scr["override"]
        text += f". Override recorded by {_fmt(o.get('actor'))}: {o.get('reason')}"
    return text


def _standard_citation(std: dict[str, Any]) -> str:
    """The source a standard cites, when the certificate's is the packaged file (same
    SHA-256); a lab's own file is said to be one (its digest is printed below)."""
    from fibergrade.grading import list_standards

    packaged = next((s for s in list_standards() if s.id == std.get("id")), None)
    if packaged is None:
        return "a lab's own standard file"
    if packaged.digest != std.get("digest"):
        return "not the packaged file of this id (a lab's own or another version)"
    return packaged.source


def _calibration_details(record: dict[str, Any]) -> str:
    """The calibration record's date, validity, MFD range and reference set."""
    ref = record.get("reference") or {}
    rng = record.get("range_um")
    span = f"{rng[0]:g}-{rng[1]:g} um" if isinstance(rng, list) and len(rng) == 2 else "—"
    made = str(record.get("created_at") or "—")[:10]
    until = str(record.get("expires_at") or "—")[:10]
    return f"made {made}, valid to {until}; range {span}; reference {_fmt(ref.get('id'))}"


def _table(pdf: Any, rows: list[tuple[str, str]], key_w: float, width: float = 0) -> None:
    total = width or (pdf.w - pdf.l_margin - pdf.r_margin)
    for key, value in rows:
        pdf.set_font("DejaVu", "B", 8.5)
        pdf.cell(key_w, 5, key, border=1)
        size = 8.5  # a long value (a whole SHA-256 and a flag) is set smaller to fit
        pdf.set_font("DejaVu", "", size)
        while size > 5 and pdf.get_string_width(str(value)) > total - key_w - 2:
            size -= 0.5
            pdf.set_font("DejaVu", "", size)
        pdf.cell(total - key_w, 5, str(value), border=1, new_x="LMARGIN", new_y="NEXT")


def _calibration_text(cal: dict[str, Any]) -> str:
    """The calibration row: the record, and the lot's MFD outside the calibrated range
    (the certificate's ``range_flag``) when it is, as the tables mark it ``<cal``/``>cal``."""
    if cal.get("uncalibrated"):
        return "NONE: graded uncalibrated"
    text = _fmt(cal.get("record"))
    flag = cal.get("range_flag")
    if flag in ("below", "above"):
        text += f" (MFD {flag} the calibrated range)"
    return text
