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


def render_pdf(envelope: dict[str, Any], record: dict[str, Any], path: str | Path) -> Path:
    """Write the certificate in ``envelope`` as a one-page PDF; ``record`` is the lot's
    grade record the certificate was made from (it carries the histogram)."""
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
    lot, origin, cal = cert["lot"], cert["origin_claim"], cert["calibration"]
    rows = [
        ("Lot", lot["lot_id"]),
        ("Declared type", _fmt(lot.get("declared_type"))),
        ("Client", _fmt(lot.get("client"))),
        (
            "Origin",
            " / ".join(x for x in (origin.get("country"), origin.get("region")) if x) or "—",
        ),
        ("Geographical indication claimed", _fmt(origin.get("geographical_indication"))),
        ("Instrument", _fmt(cert["instrument"].get("id"))),
        ("Calibration", _calibration_text(cal)),
        ("Standard", f"{cert['standard']['id']} v{cert['standard']['version']}"),
    ]
    _table(pdf, rows, 62)
    pdf.ln(2)
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
    f = cert["figures"]
    fig_rows = [
        ("n (snippets)", f["n"]),
        ("MFD (um)", f["mfd_um"]),
        ("SD (um)", f["sd_um"]),
        ("CV (%)", f["cv_pct"]),
        ("CF (%)", f["cf_pct"]),
        ("PF (%)", f["pf_pct"]),
        ("> cut by mass (%)", f["coarse_mass_pct"]),
        ("SF (um)", f["sf_um"]),
        ("P5 / P50 / P95 (um)", f"{f['p5_um']} / {f['p50_um']} / {f['p95_um']}"),
    ]
    y0 = pdf.get_y()
    _table(pdf, [(a, _fmt(b)) for a, b in fig_rows], 40, width=80)
    rec = record
    if rec.get("histogram", {}).get("counts"):
        with tempfile.TemporaryDirectory() as tmp:
            png = histogram_png(rec, Path(tmp) / "h.png")
            pdf.image(str(png), x=100, y=y0, w=100)
    pdf.set_y(max(pdf.get_y(), y0 + 55) + 2)
    scr = cert["screening"]
    pdf.set_font("DejaVu", "", 9)
    text = f"Screening: {scr.get('verdict')}"
    if scr.get("override"):
        text += f" (override recorded: {scr['override']['reason']})"
    pdf.multi_cell(0, 5, text, new_x="LMARGIN", new_y="NEXT")
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


def _table(pdf: Any, rows: list[tuple[str, str]], key_w: float, width: float = 0) -> None:
    total = width or (pdf.w - pdf.l_margin - pdf.r_margin)
    for key, value in rows:
        pdf.set_font("DejaVu", "B", 8.5)
        pdf.cell(key_w, 5, key, border=1)
        pdf.set_font("DejaVu", "", 8.5)
        pdf.cell(total - key_w, 5, str(value), border=1, new_x="LMARGIN", new_y="NEXT")


def _calibration_text(cal: dict[str, Any]) -> str:
    """The calibration row: the record, and the lot's MFD outside the calibrated range
    (the certificate's ``range_flag``) when it is, as the tables mark it ``<cal``/``>cal``."""
    if cal.get("uncalibrated"):
        return "NONE: graded uncalibrated"
    text = _fmt(cal.get("record"))[:32]
    flag = cal.get("range_flag")
    if flag in ("below", "above"):
        text += f" (MFD {flag} the calibrated range)"
    return text
