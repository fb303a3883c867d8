"""Verifying signed certificates, fibre and carcass, offline and with recomputation.

Verification (:func:`verify_certificate`, a batch :func:`verify_certificates`) checks the
signature against a public key, the revocation list (itself signed), and, given the store,
recomputes every figure and the grade from the raw segment (whose SHA-256 must match), with
the recorded calibration record (whose SHA-256 must match) and the recorded standard (id,
version and file digest must match), reporting each difference.

Findings are collected in a :class:`VerifyReport` (checks made, problems, notes); a
certificate with any problem raises :class:`~fibergrade.certificates.VerificationFailed`.
A carcass certificate is recomputed by :func:`fibergrade.meat.certificates.verify_meat`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fibergrade.audit import AuditLog, Position, digest
from fibergrade.certificates import (
    REVOCATION_SCHEMA,
    SCHEMA,
    SCHEMA_FIELDS,
    CertificateError,
    CertificateFileError,
    VerificationFailed,
    all_certificates,
    check_signature,
    read_envelope,
    report_figures,
    screening_of,
    standing_certificate,
    subject_of,
    superseded_numbers,
)
from fibergrade.distribution import DEFAULT_CUT_UM
from fibergrade.errors import FibergradeError, LotNotFoundError, StoreError
from fibergrade.keys import fingerprint
from fibergrade.revocation import revocation_entries


@dataclass
class VerifyReport:
    number: str
    checks: list[tuple[str, str]] = field(default_factory=list)  # (check, result text)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: problems that are a check not made (not a finding against the certificate), with
    #: the exit code of their cause; every other problem is exit code 5
    codes: dict[str, int] = field(default_factory=dict)

    def exit_code(self) -> int:
        """5 when a problem is a finding; else the most serious code of the checks not
        made (0 without problems)."""
        if not self.problems:
            return 0
        if any(p not in self.codes for p in self.problems):
            return VerificationFailed.exit_code
        return max(self.codes[p] for p in self.problems)

    def to_dict(self) -> dict[str, Any]:
        return {
            "certificate_number": self.number,
            "ok": not self.problems,
            "checks": [{"check": c, "result": r} for c, r in self.checks],
            "problems": list(self.problems),
            "notes": list(self.notes),
        }


def verify_certificate(
    path: str | Path,
    public_key: Any,
    *,
    store: Any | None = None,
    revocations: str | Path | None = None,
    cache: dict[Any, Any] | None = None,
) -> VerifyReport:
    """Verify a certificate file; raises
    :class:`~fibergrade.certificates.VerificationFailed` listing every problem.

    ``cache`` (any dict, reused across calls) keeps segment checks, calibration records and
    standards between certificates of one batch, so each segment is hashed once.
    """
    env = read_envelope(path)
    if "revocations" in env:
        raise CertificateFileError(
            f"{path}: a revocation list, not a certificate (it is given with --revocations)"
        )
    cert = check_signature(env, public_key, str(path))
    number = str(cert.get("certificate_number"))
    rep = VerifyReport(number)
    from fibergrade.meat.certificates import MEAT_SCHEMA, verify_meat

    if cert.get("schema") not in (SCHEMA, MEAT_SCHEMA):
        raise VerificationFailed(number, [f"unknown schema {cert.get('schema')!r}"])
    rep.checks.append(
        ("signature", f"valid Ed25519 signature by key {fingerprint(public_key)[:16]}...")
    )
    fields, types = _shape_problems(cert) if cert["schema"] == SCHEMA else ([], [])
    rep.problems += fields + types
    if types:  # a document the checks below cannot read is not what certify signs
        raise VerificationFailed(number, rep.problems, rep)
    if cache is None:
        cache = {}
    if revocations is not None:
        rev_doc = _revocation_list(revocations, public_key, cache)
        _revocation_list_check(rev_doc, number, rep, revocations)
    if cert.get("calibration", {}).get("uncalibrated"):
        rep.notes.append("graded WITHOUT a valid calibration (--uncalibrated)")
    if store is None and revocations is None:  # not to be taken as checked
        rep.notes.append(
            "revocation and supersession were NOT checked: give the lab's signed revocation "
            "list (--revocations FILE) or the store (--store)"
        )
    # (a list given carries supersessions; one written before it did is noted by
    # _revocation_list_check)
    try:
        if store is not None:
            _standing(cert, store, rep, cache, public_key)
            _audit_position(cert, store, rep, cache, public_key)
        if store is not None and cert["schema"] == MEAT_SCHEMA:
            verify_meat(cert, store, rep)
        elif store is not None:
            _recompute(cert, store, rep, cache)
        if cert["schema"] == SCHEMA:
            _check_override(cert, store, rep, cache)
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:
        # a signed document whose fields are not of its schema fails, never a traceback
        rep.problems.append(
            f"the certificate's fields are not those of {cert['schema']}: "
            f"{type(exc).__name__}: {exc}"
        )
    if rep.problems:
        raise VerificationFailed(number, rep.problems, rep)
    return rep


#: the parts of a fibre certificate that are objects (build_certificate); the others are
#: strings (``supersedes``: a number or null)
_SCALAR_FIELDS = {"schema", "certificate_number", "issued_at", "grade_result", "software_version"}
_OBJECT_FIELDS = tuple(f for f in SCHEMA_FIELDS if f not in _SCALAR_FIELDS | {"supersedes"})


def _shape_problems(cert: dict[str, Any]) -> tuple[list[str], list[str]]:
    """A fibre certificate's fields against its schema: each field certify writes is
    there (a certificate without ``screening`` would skip the screening check), no other
    (a field verification does not check must not ride on the signature); and, apart, its
    parts that are not objects (the other checks cannot read those)."""
    fields = [f"field {f!r} is missing (schema {SCHEMA})" for f in SCHEMA_FIELDS if f not in cert]
    fields += [
        f"field {f!r} is not part of schema {SCHEMA}"
        for f in cert
        if f not in SCHEMA_FIELDS and f != "reissue_reason"
    ]
    types = [
        f"field {f!r} is {type(cert[f]).__name__}, not an object"
        for f in _OBJECT_FIELDS
        if f in cert and not isinstance(cert[f], dict)
    ]
    return fields, types


def _audit_position(
    cert: dict[str, Any], store: Any, rep: VerifyReport, cache: dict[Any, Any], public_key: Any
) -> None:
    """The store's audit log is intact (its whole chain and its checkpoints' signatures by
    the lab key, checked once per batch) and holds the entry the certificate recorded when
    it was issued (fibre and carcass alike)."""
    from fibergrade.audit import AuditTamperError

    pos = cert.get("audit_position") or {}
    try:
        seq, hsh = int(pos["seq"]), str(pos["hash"])
    except (KeyError, TypeError, ValueError):
        rep.problems.append(f"audit log: the certificate records no usable position ({pos!r})")
        return
    if seq < 0:  # issued from a store whose log was still empty
        return
    log = AuditLog(store.root)
    try:
        _cached(cache, ("audit-chain",), lambda: log.verify(public_key))
        entries = _cached(cache, ("audit",), log.entries)
        log.check_position(Position(seq, hsh), entries)
    except AuditTamperError as exc:
        rep.problems.append(str(exc))  # "audit log line N (entry M): ..."
        return
    rep.checks.append(("audit log", f"intact, and contains entry {seq} as recorded"))


def _standing(
    cert: dict[str, Any], store: Any, rep: VerifyReport, cache: dict[Any, Any], public_key: Any
) -> None:
    """Whether the certificate still stands in the store, whatever revocation list was
    given, if any: not revoked there, not superseded by a reissue (for good: a revoked
    reissue does not put the one it replaced back), and the certificate of its lot (or
    carcass) that stands (:func:`~fibergrade.certificates.standing_certificate`), the one
    a reissue would supersede (:func:`~fibergrade.certificates.next_certificate`)."""
    try:
        revoked, superseded, standing, envelopes = _cached(
            cache, ("standing",), lambda: _store_standing(store, public_key)
        )
    except StoreError as exc:
        rep.problems.append(f"standing in the store cannot be told: {exc}")
        return
    number = str(cert.get("certificate_number"))
    if number not in envelopes:
        rep.problems.append(
            f"certificate {number} was not issued from this store (an older copy of the "
            "store, or another lab's)"
        )
        return
    if digest(envelopes[number]["certificate"]) != digest(cert):
        rep.problems.append(
            f"the store's certificate {number} is another document: this one differs from "
            "what the store issued under that number"
        )
        return
    if number in revoked:
        e = revoked[number]
        rep.problems.append(f"revoked in the store on {e['revoked_at']}: {e['reason']}")
        return
    newer = superseded.get(number)
    if newer is None:  # not superseded by name, yet not the one that stands (a newer one)
        latest = standing.get(subject_of(cert))
        if latest is not None and latest["certificate_number"] != number:
            newer = latest
    if newer is not None:
        newer_number = str(newer["certificate_number"])
        try:
            check_signature(envelopes[newer_number], public_key, newer_number)
        except CertificateError:
            rep.problems.append(
                f"the store's newer certificate {newer_number} is not signed by "
                "the lab key: it was not issued by this lab (the store was tampered with)"
            )
            return
        gone = (
            f"; {newer_number} was itself revoked on {revoked[newer_number]['revoked_at']}, "
            f"which does not put {number} back"
            if newer_number in revoked
            else ""
        )
        rep.problems.append(
            f"superseded by {newer_number} (issued {newer['issued_at']}: "
            f"{newer.get('reissue_reason')}){gone}"
        )
        return
    rep.checks.append(("standing in the store", "neither revoked nor superseded"))


def _store_standing(
    store: Any,
    public_key: Any,
) -> tuple[
    dict[str, dict[str, Any]],
    dict[str, dict[str, Any]],
    dict[Any, dict[str, Any]],
    dict[str, dict[str, Any]],
]:
    """The store's revocations by certificate number (each signed by the lab key), the
    superseded numbers with the certificate that superseded each
    (:func:`~fibergrade.certificates.superseded_numbers`), per subject the certificate that
    stands (:func:`~fibergrade.certificates.standing_certificate`), and the envelope of
    every certificate the store issued by number (read once for a batch)."""
    from fibergrade.errors import StoreCorruptError

    revoked = {e["certificate_number"]: e for e in revocation_entries(store, public_key)}
    by_subject: dict[Any, list[dict[str, Any]]] = {}
    envelopes: dict[str, dict[str, Any]] = {}
    certificates = all_certificates(store)  # each subject's oldest first
    for env in certificates:
        doc = env.get("certificate")
        if not isinstance(doc, dict):
            raise StoreCorruptError(f"{store.root}: a stored certificate record holds none")
        envelopes[str(doc.get("certificate_number"))] = env
        by_subject.setdefault(subject_of(doc), []).append(env)
    standing = {}
    for subject, envs in by_subject.items():
        current = standing_certificate(envs, revoked)
        if current is not None:
            standing[subject] = current["certificate"]
    return revoked, superseded_numbers(certificates), standing, envelopes


def given_standards(paths: list[str | Path] | list[Path]) -> dict[Any, Any]:
    """A verification cache (see :func:`verify_certificate`) that holds the given standard
    files under their ids, so that certificates graded by a lab's own standard (not a
    packaged one) can be recomputed; each must still match the certificate's version and
    digest. Two files with one id are refused."""
    from fibergrade.grading import load_standard

    cache: dict[Any, Any] = {}
    for path in paths:
        std = load_standard(path)
        key = ("standard", std.id)
        if key in cache:
            raise CertificateError(f"{path}: a second standard file with id {std.id!r}")
        cache[key] = (True, std)
        cache[("standard file", std.id)] = str(path)  # named on the report
    return cache


def _cached(cache: dict[Any, Any], key: Any, make: Any) -> Any:
    """``make()`` once per key; an exception is remembered and raised again."""
    if key not in cache:
        try:
            cache[key] = (True, make())
        except FibergradeError as exc:
            cache[key] = (False, exc)
    ok, value = cache[key]
    if not ok:
        raise value
    return value


def _recompute(cert: dict[str, Any], store: Any, rep: VerifyReport, cache: dict[Any, Any]) -> None:
    """Recompute the lot's figures and grade from the raw segment and compare."""
    import numpy as np

    from fibergrade.calibration import correct_table
    from fibergrade.grading import grade as grade_summary
    from fibergrade.grading import load_standard
    from fibergrade.segment_tasks import summarise_table

    lot_id = cert["lot"]["lot_id"]
    seg = cert["raw_segment"]["sha256"]
    try:
        _cached(cache, ("segment", seg), lambda: store.verify_segment(seg))
    except StoreError as exc:
        rep.problems.append(f"raw data: {exc}")
        return
    try:
        _cached(cache, ("manifest", seg), lambda: store.check_manifest([seg]))
    except StoreError as exc:
        rep.problems.append(f"lot metadata: {exc}")
        return
    unlogged = _cached(cache, ("unlogged",), lambda: {s.digest for s in store.unlogged_segments()})
    if seg in unlogged:
        rep.problems.append(
            f"raw data: segment {seg[:16]}... is not recorded as imported in the store's audit log"
        )
        return
    rep.checks.append(("raw segment", f"SHA-256 {seg[:16]}... matches, import logged"))
    try:
        lot = store.lot(lot_id)
    except LotNotFoundError:
        rep.problems.append(f"lot {lot_id} is not in the store")
        return
    if lot.segment != seg:
        rep.problems.append(
            f"lot {lot_id} lives in segment {lot.segment[:16]}..., not {seg[:16]}..."
        )
        return
    _compare_lot(cert, lot, store, rep, cache)
    a = np.zeros(1)
    b = np.ones(1)
    stated_cal = cert.get("calibration") or {}
    cal_id = stated_cal.get("record")
    cal_range: list[float] | None = None
    # grading records a lot as uncalibrated exactly when it names no calibration record
    # (calibration.CalibrationFields): one that says calibrated names a logged record of
    # its instrument, and one that names none is recomputed on its raw diameters
    if cal_id is None and stated_cal.get("uncalibrated") is not True:
        rep.problems.append(
            f"calibration: the certificate says uncalibrated "
            f"{stated_cal.get('uncalibrated')!r} but names no calibration record; the raw "
            "data are recomputed uncorrected, as a lot graded without a calibration is, "
            "and such a certificate says uncalibrated: true"
        )
    if cal_id is not None and stated_cal.get("uncalibrated") is not False:
        rep.problems.append(
            f"calibration: the certificate says uncalibrated "
            f"{stated_cal.get('uncalibrated')!r} and names calibration record {str(cal_id)[:12]}"
        )
    if cal_id is not None:
        try:
            cal = _cached(
                cache, ("calibration", cal_id), lambda: store.get_result("calibration", cal_id)
            )
        except StoreError as exc:
            rep.problems.append(f"calibration record: {exc}")
            return
        if cal.get("instrument_id") != lot.meta.instrument_id:
            rep.problems.append(
                f"calibration record {cal_id[:12]} is of instrument {cal.get('instrument_id')!r}"
                f"; lot {lot_id} was measured on {lot.meta.instrument_id!r}"
            )
            return
        a[0], b[0] = cal["line"]["intercept_um"], cal["line"]["slope"]
        cal_range = list(cal["range_um"])
        rep.checks.append(
            ("calibration record", f"{cal_id[:16]}... intact, of instrument {cal['instrument_id']}")
        )
    std_ref = cert["standard"]
    try:
        std = _cached(cache, ("standard", std_ref["id"]), lambda: load_standard(std_ref["id"]))
    except FibergradeError as exc:
        rep.problems.append(
            f"standard: {exc}; a lab's own standard file is given with --standard FILE"
        )
        return
    given = cache.get(("standard file", std.id))
    wanted = (std_ref["version"], std_ref["digest"])
    if given is not None and (std.version, std.digest) != wanted:
        # the lab's own file of this id is another version (a new version of a packaged
        # standard): a certificate graded by the packaged one is recomputed with that
        try:
            packaged = _cached(
                cache, ("packaged standard", std.id), lambda: load_standard(std_ref["id"])
            )
        except FibergradeError:
            packaged = None
        if packaged is not None and (packaged.version, packaged.digest) == wanted:
            std, given = packaged, None
    if (std.version, std.digest) != wanted:
        has = f"the file {given} given with --standard has" if given else "this software has"
        rep.problems.append(
            f"standard {std.id}: {has} version {std.version} "
            f"(digest {std.digest[:12]}), the certificate used {std_ref['version']} "
            f"(digest {std_ref['digest'][:12]})"
        )
        return
    rep.checks.append(
        (
            "standard",
            f"{std.id} version {std.version}, "
            + (
                f"the lab's own file {given} given with --standard"
                if given is not None
                else "packaged with this software"
            )
            + f", SHA-256 {std.digest[:16]}...",
        )
    )
    if lot.meta.declared_type not in std.applies_to:
        rep.notes.append(
            f"graded by {std.id}, which applies to {', '.join(std.applies_to)}, not to the "
            f"lot's declared type {lot.meta.declared_type!r}"
        )
    table = correct_table(store.read_lot(lot_id), a, b)  # this lot's rows only
    summary = summarise_table(table, std.cut_um, "fast")
    rec = summary.to_records()[0] | grade_summary(summary, std).records()[0]
    again = report_figures(rec)
    before = len(rep.problems)
    stated_figures = cert["figures"] if isinstance(cert["figures"], dict) else {}
    for key in [*again, *(k for k in stated_figures if k not in again)]:
        value = stated_figures.get(key, "(missing)")
        if key not in again or key not in stated_figures or again[key] != value:
            rep.problems.append(
                f"{key}: certificate says {value}, raw data give {again.get(key, '(nothing)')}"
            )
    if rec["grade"] != cert["grade"]["id"]:
        rep.problems.append(
            f"grade: certificate says {cert['grade']['id']}, raw data give {rec['grade']}"
        )
    rep.problems += _criteria_differences(cert["grade"].get("criteria"), rec["criteria"])
    rep.problems += _differences(
        cert.get("basis"),
        {"kind": rec["basis"], "binned": rec["binned"], "cut_um": rec["cut_um"]},
        "basis",
        "raw data give",
    )
    rep.problems += _differences(
        {"range_flag": stated_cal.get("range_flag")},
        {"range_flag": _range_flag(rec["mfd_um"], cal_range)},
        "calibration",
        "raw data give",
    )
    if len(rep.problems) == before:
        rep.checks.append(
            (
                "recomputation",
                f"{len(again)} figures, "
                + (f"grade {rec['grade']}" if rec["grade"] else "'meets no grade'")
                + f", its {len(rec['criteria'])} criteria, the basis and the calibration "
                "range flag agree",
            )
        )
    _grade_record(cert, lot_id, store, rep, cache)
    _rescreen(cert, table, summary if std.cut_um == DEFAULT_CUT_UM else None, lot, rep, cache)


#: what a certificate states of its lot, by field, and the lot metadata key it comes from
#: (the metadata is in the raw segment, which its SHA-256 covers; see build_certificate)
_LOT_FIELDS = {
    "lot": {k: k for k in ("lot_id", "declared_type", "client", "received_at", "measured_at")},
    "origin_claim": {
        "country": "origin",
        "region": "region",
        "geographical_indication": "gi_code",
    },
    "instrument": {"id": "instrument_id"},
}


def _differences(
    stated: Any, derived: dict[str, Any], where: str, source: str = "the store gives"
) -> list[str]:
    """Each field of ``stated`` (a certificate's part) that differs from ``derived``
    (the same part as the store gives it), naming the field and both values; a part that
    is not an object, a field missing and a field the certificate adds are differences
    too."""
    if not isinstance(stated, dict):
        return [f"{where}: certificate says {stated!r}, {source} {derived!r}"]
    return [
        f"{where}.{k}: certificate says {stated.get(k, '(missing)')!r}, "
        f"{source} {derived.get(k, '(nothing)')!r}"
        for k in [*derived, *(k for k in stated if k not in derived)]
        if k not in stated or k not in derived or stated[k] != derived[k]
    ]


#: what a certificate states of each criterion (build_certificate)
_CRITERION_KEYS = ("grade", "name", "figure", "op", "limit", "value", "passed")


def _criteria_differences(stated: Any, again: list[dict[str, Any]]) -> list[str]:
    """Each criterion field (value, limit, op, passed, ...) of the certificate that differs
    from the recomputation's. A criterion's value is the figure at full precision: it is
    compared to within a relative 1e-9, not to the last bit (the figures were summed with
    another lot order when graded)."""
    want = [{k: c.get(k) for k in _CRITERION_KEYS} for c in again]
    if not isinstance(stated, list) or len(stated) != len(want):
        count = len(stated) if isinstance(stated, list) else stated
        return [f"grade.criteria: certificate lists {count!r}, the standard has {len(want)}"]
    found = []
    for i, (s, w) in enumerate(zip(stated, want, strict=True)):
        if not isinstance(s, dict):
            found.append(f"grade.criteria[{i}]: certificate says {s!r}, raw data give {w!r}")
            continue
        for k in [*w, *(k for k in s if k not in w)]:
            got, exp = s.get(k, "(missing)"), w.get(k, "(nothing)")
            if k == "value" and _close(got, exp):
                continue
            if k not in s or k not in w or got != exp:
                source = "raw data give" if k in ("value", "passed") else "the standard gives"
                found.append(
                    f"grade.criteria[{i}] ({w['grade']}: {w['name']}).{k}: certificate says "
                    f"{got!r}, {source} {exp!r}"
                )
    return found


def _close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    if not isinstance(a, int | float) or not isinstance(b, int | float):
        return False
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _range_flag(mfd_um: Any, cal_range: list[float] | None) -> str | None:
    """The calibration range flag grading gives a lot (calibration.CalibrationFields): its
    corrected MFD below or above the calibrated range, None in it or when uncalibrated."""
    if cal_range is None or mfd_um is None or math.isnan(mfd_um):
        return None
    lo, hi = cal_range
    return "below" if mfd_um < lo else "above" if mfd_um > hi else None


def _grade_record(
    cert: dict[str, Any], lot_id: str, store: Any, rep: VerifyReport, cache: dict[Any, Any]
) -> None:
    """The grade record the certificate names (``grade_result``): logged, holding this lot
    of this segment, and saying what the certificate says (certify signs that record's
    entry, so a certificate that differs was not made from it)."""
    gid = cert.get("grade_result")
    try:
        lots = _cached(
            cache,
            ("grade", gid),
            lambda: {r.get("lot_id"): r for r in store.get_result("grade", gid).get("lots", [])},
        )
    except StoreError as exc:
        rep.problems.append(f"grade_result: {exc}")
        return
    entry = lots.get(lot_id)
    if entry is None:
        rep.problems.append(f"grade_result: the grade record {str(gid)[:12]} holds no lot {lot_id}")
        return
    screening = screening_of(entry) or {}
    derived = {
        "figures": report_figures(entry),
        "standard": entry.get("standard"),
        "grade": {
            "id": entry.get("grade"),
            "criteria": [{k: c.get(k) for k in _CRITERION_KEYS} for c in entry.get("criteria", [])],
        },
        "calibration": {
            "record": entry.get("calibration"),
            "uncalibrated": bool(entry.get("uncalibrated", False)),
            "range_flag": entry.get("calibration_range_flag"),
        },
        "basis": {
            "kind": entry.get("basis"),
            "binned": entry.get("binned", []),
            "cut_um": entry.get("cut_um"),
        },
        "screening": {k: screening.get(k) for k in ("verdict", "probability", "model_digest")},
        "raw_segment": {"sha256": entry.get("segment", cert["raw_segment"]["sha256"])},
    }
    found = []
    for part, want in derived.items():
        stated = cert.get(part)
        if isinstance(stated, dict) and isinstance(want, dict):
            stated = {k: stated.get(k) for k in want}
        if stated != want:
            found.append(
                f"grade_result: the grade record {str(gid)[:12]} says {part} {want!r}, the "
                f"certificate {stated!r}: it was not made from that record"
            )
    rep.problems += found
    if not found:
        rep.checks.append(
            ("grade record", f"{str(gid)[:16]}... logged, and the certificate says what it does")
        )


def _check_override(
    cert: dict[str, Any], store: Any | None, rep: VerifyReport, cache: dict[Any, Any]
) -> None:
    """An override on a certificate: said in a note, and with the store, a logged override
    record of this very lot with the reason and actor stated. A lot screened clean carries
    none; one that is not clean cannot be certified without one."""
    screening = cert.get("screening") or {}
    override = screening.get("override")
    verdict = screening.get("verdict")
    lot_id = (cert.get("lot") or {}).get("lot_id")
    if override is None:
        if verdict is not None and verdict != "clean":
            rep.problems.append(
                f"screening: verdict {verdict} and no override; such a lot is not certified"
            )
        return
    if not isinstance(override, dict):
        rep.problems.append(f"screening.override: not an override record: {override!r}")
        return
    rep.notes.append(
        f"certified over a screening verdict of {verdict} by an override of "
        f"{override.get('actor')!r}: {override.get('reason')!r}"
    )
    if verdict == "clean":
        rep.problems.append(
            "screening.override: the lot was screened clean; certify records an override "
            "only on a lot that was flagged"
        )
    if store is None:
        return
    rid = override.get("record")
    try:
        payload = _cached(cache, ("override", rid), lambda: store.get_result("override", rid))
    except StoreError as exc:
        rep.problems.append(
            f"screening.override: the record it names is not a logged override: {exc}"
        )
        return
    found = []
    if payload.get("lot_id") != lot_id:
        found.append(
            f"screening.override: record {str(rid)[:12]} is the override of lot "
            f"{payload.get('lot_id')!r}, not of lot {lot_id!r}"
        )
    for k in ("reason", "actor"):
        if override.get(k) != payload.get(k):
            found.append(
                f"screening.override.{k}: certificate says {override.get(k)!r}, the override "
                f"record says {payload.get(k)!r}"
            )
    rep.problems += found
    if not found:
        rep.checks.append(
            (
                "override",
                f"record {str(rid)[:16]}... logged, of lot {lot_id}, recorded "
                f"{payload.get('created_at')}",
            )
        )


def _compare_lot(
    cert: dict[str, Any], lot: Any, store: Any, rep: VerifyReport, cache: dict[Any, Any]
) -> None:
    """The lot, origin claim and instrument the certificate states against the lot's
    metadata in its raw segment, and the source file name against the segment's."""
    meta = lot.meta.to_dict()
    found: list[str] = []
    for part, keys in _LOT_FIELDS.items():
        derived = {field_: meta.get(key) for field_, key in keys.items()}
        found += _differences(cert.get(part), derived, part)
    names = _cached(
        cache, ("source names",), lambda: {s.digest: s.source_name for s in store.segments()}
    )
    stated = (cert.get("raw_segment") or {}).get("source_name")
    if stated != names.get(lot.segment):
        found.append(
            f"raw_segment.source_name: certificate says {stated!r}, the store gives "
            f"{names.get(lot.segment)!r}"
        )
    rep.problems += found
    if not found:
        rep.checks.append(
            (
                "lot metadata",
                "lot, client, declared type, dates, origin claim and instrument agree with "
                "the raw segment",
            )
        )


def _rescreen(
    cert: dict[str, Any],
    table: Any,
    summary: Any,
    lot: Any,
    rep: VerifyReport,
    cache: dict[Any, Any],
) -> None:
    """Screen the lot again with the model the certificate names (the shipped one, by its
    digest) and compare the verdict: the grade record certify read it from is a file, and
    the verdict decided whether the lot could be certified without an override."""
    from fibergrade.screening import load_model, load_model_by_digest, screening_entries
    from fibergrade.segment_tasks import summarise_table

    stated = cert.get("screening") or {}
    if stated.get("verdict") is None:  # certify refuses a lot that was not screened
        rep.problems.append("screening: the certificate states no verdict; none is recomputed")
        return
    named = str(stated.get("model_digest"))
    try:
        current = _cached(cache, ("model",), load_model)
        # the model the certificate was screened with: the current one, or a retired one
        # kept in models/archive (a rebuilt model must not leave certificates unverifiable)
        model = _cached(cache, ("model", named), lambda: load_model_by_digest(named))
    except FibergradeError as exc:
        problem = (
            f"screening model: the certificate used {named[:12]}, which this software cannot "
            f"load ({exc}); the verdict is not recomputed"
        )
        rep.problems.append(problem)
        rep.codes[problem] = exc.exit_code  # the screening model: 4
        return
    if model.digest != current.digest:
        rep.notes.append(
            f"screened again with the retired model {named[:12]} the certificate names "
            f"(models/archive; the current one is {current.digest[:12]})"
        )
    if summary is None:
        summary = summarise_table(table, DEFAULT_CUT_UM, "fast")
    deferred = cache.get(_DEFERRED)
    if isinstance(deferred, list):  # a batch: screened together at its end
        deferred.append((rep, summary, lot.meta.declared_type, stated, model))
        return
    got = screening_entries(model, summary, [lot.meta.declared_type])[0]
    _compare_verdict(rep, stated, got, model)


#: cache key of the screenings a batch defers (see :func:`verify_certificates`)
_DEFERRED = "deferred-screening"


#: a screening probability is reported to 4 decimals: one that differs by no more than a
#: unit of the last (a value on a rounding boundary) agrees
_PROBABILITY_TOLERANCE = 1.5e-4


def _compare_verdict(
    rep: VerifyReport, stated: dict[str, Any], got: dict[str, Any], model: Any
) -> None:
    """The screening verdict and its probability the certificate states against the lot
    screened again (``got``: a :func:`~fibergrade.screening.screening_entries` entry)."""
    verdict, prob = got["verdict"], got["probability"]
    said = stated.get("probability")
    found = []
    if verdict != stated["verdict"]:
        found.append(
            f"screening: certificate says {stated['verdict']}, the raw data give {verdict}"
        )
    if not (
        said is prob
        or (
            isinstance(said, int | float)
            and not isinstance(said, bool)
            and prob is not None
            and abs(said - prob) <= _PROBABILITY_TOLERANCE
        )
    ):
        found.append(
            f"screening.probability: certificate says {said!r}, the raw data give {prob!r}"
        )
    rep.problems += found
    if not found:
        rep.checks.append(
            (
                "screening",
                f"verdict {verdict} (probability {prob}) recomputed with model {model.digest[:12]}",
            )
        )


def verify_certificates(
    paths: list[Path],
    public_key: Any,
    *,
    store: Any | None = None,
    revocations: str | Path | None = None,
    cache: dict[Any, Any] | None = None,
) -> list[VerifyReport | CertificateFileError | VerificationFailed]:
    """:func:`verify_certificate` over a batch, one outcome per path in order: the report,
    or the failure. The lots are screened again all at once at the end (one model call for
    the batch, not ~5 ms per certificate); a file that is not a certificate fails alone."""
    from fibergrade.distribution import LotSummary
    from fibergrade.screening import screening_entries

    cache = {} if cache is None else cache
    deferred: list[Any] = []
    cache[_DEFERRED] = deferred
    outcomes: list[VerifyReport | CertificateFileError | VerificationFailed] = []
    # a revocation list that cannot be used fails every certificate, each still checked
    # for the rest (the list's problem, said once per report, is not the certificate's)
    bad_list = None
    if revocations is not None:  # read and checked once for the batch (kept in the cache)
        try:
            _revocation_list(revocations, public_key, cache)
        except RevocationListUnusable as exc:
            bad_list = (str(exc), exc.exit_code)
    try:
        for path in paths:
            try:
                rep = verify_certificate(
                    path,
                    public_key,
                    store=store,
                    revocations=None if bad_list else revocations,
                    cache=cache,
                )
            except VerificationFailed as exc:
                rep = exc.report if exc.report is not None else exc
            except CertificateFileError as exc:
                rep = exc
            if bad_list is not None and isinstance(rep, VerifyReport):
                rep.problems.append(bad_list[0])
                rep.codes[bad_list[0]] = bad_list[1]
            outcomes.append(rep)
    finally:
        cache.pop(_DEFERRED, None)
    if deferred:
        model = deferred[0][4]  # the one model of the run (its digest was checked)
        summary = LotSummary.concat([d[1] for d in deferred])
        verdicts = screening_entries(model, summary, [d[2] for d in deferred])
        for (rep, _, _, stated, _), got in zip(deferred, verdicts, strict=True):
            _compare_verdict(rep, stated, got, model)
    # a report that only the batch screening (or the list) found wrong fails now
    return [
        VerificationFailed(o.number, o.problems, o)
        if isinstance(o, VerifyReport) and o.problems
        else o
        for o in outcomes
    ]


class RevocationListUnusable(CertificateError):
    """A revocation list that cannot be used: a file that cannot be read or is no signed
    fibergrade list is bad input (``exit_code`` 2); one whose signature does not verify with
    the lab key was forged or altered, and what it says of a certificate cannot be known:
    that certificate fails verification (5)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _revocation_list(
    revocations: str | Path, public_key: Any, cache: dict[Any, Any]
) -> dict[str, Any]:
    """The signed document of a revocation list, read and checked once per ``cache`` (a
    batch), or :class:`RevocationListUnusable`."""
    key = ("revocation list", str(revocations))
    return _cached(cache, key, lambda: _checked_revocation_list(revocations, public_key))


def _checked_revocation_list(revocations: str | Path, public_key: Any) -> dict[str, Any]:
    """The signed document of a revocation list, or :class:`RevocationListUnusable`."""
    try:
        doc = check_signature(read_envelope(revocations), public_key, str(revocations))
    except CertificateFileError as exc:
        raise RevocationListUnusable(f"revocation list {exc}", 2) from None
    except VerificationFailed as exc:
        raise RevocationListUnusable(
            f"{revocations}: the revocation list fails its own check: " + "; ".join(exc.problems),
            5,
        ) from None
    if doc.get("schema") != REVOCATION_SCHEMA:
        raise RevocationListUnusable(f"{revocations}: not a fibergrade revocation list", 2)
    return doc


def _revocation_list_check(
    rev_doc: dict[str, Any], number: str, rep: VerifyReport, revocations: str | Path
) -> None:
    """Judge a certificate by a signed revocation list: revoked, or superseded by a reissue
    (a list from before supersessions were listed has no ``supersessions``: said in a
    note, since it cannot tell)."""
    of = f"list of {rev_doc.get('issued_at')}"
    hit = [e for e in rev_doc.get("entries", []) if e.get("certificate_number") == number]
    if hit:
        rep.problems.append(f"revoked on {hit[0]['revoked_at']}: {hit[0]['reason']} ({of})")
        return
    listed = rev_doc.get("supersessions")
    if not isinstance(listed, list):
        rep.checks.append(("revocation list", f"not revoked ({of})"))
        rep.notes.append(
            f"{revocations}: the {of} predates supersessions in the list: whether this "
            "certificate was superseded by a reissue is told only with --store"
        )
        return
    sup = [e for e in listed if isinstance(e, dict) and e.get("certificate_number") == number]
    if sup:
        e = sup[0]
        rep.problems.append(
            f"superseded by {e.get('superseded_by')} (issued {e.get('superseded_at')}: "
            f"{e.get('reason')}) ({of})"
        )
        return
    rep.checks.append(("revocation list", f"neither revoked nor superseded ({of})"))
