"""Signed test certificates: issue, reissue, revoke, and verify with recomputation.

A certificate is a JSON document of schema ``fibergrade-certificate/1`` (documented in the
README and :data:`SCHEMA_FIELDS`) serialised canonically (sorted keys, no spaces, UTF-8) and
signed with the lab's Ed25519 key. The file ``<number>.json`` is an envelope::

    {"certificate": {...}, "signature": {"algorithm": "Ed25519",
     "key_fingerprint": "<sha256 of the raw public key>", "value": "<base64>"}}

and ``<number>.pdf`` is its one-page rendering. The signature covers the canonical bytes of
``certificate`` only, so whitespace or key order in the file does not matter but any change
of a value does.

Figures are reported at fixed precision (:data:`PRECISION`): MFD to 0.1 um as certificates
report it (``shared/reference/fibre.md``); the other precisions are the project's own
choice, no source prescribes them. The grade and every criterion's verdict are those the lab
computed at full precision.

Refusals, each a :class:`CertificateRefused` naming the reason: a lot that has not been
graded; a lot whose screening verdict is not ``clean`` and has no recorded override; a lot
graded without a valid calibration is certified only because the grading itself was run
with ``--uncalibrated``, and the certificate then says so.

Verification (:func:`verify_certificate`) checks the signature against a public key, the
revocation list (itself signed), and, given the store, recomputes every figure and the grade
from the raw segment (whose SHA-256 must match), with the recorded calibration record (whose
SHA-256 must match) and the recorded standard (id, version and file digest must match),
reporting each difference.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fibergrade import __version__
from fibergrade.audit import AuditLog, Position, canonical_json, digest, strict_loads
from fibergrade.distribution import DEFAULT_CUT_UM
from fibergrade.errors import FibergradeError, LotNotFoundError, StoreError
from fibergrade.keys import fingerprint
from fibergrade.measurements import LOT_ID_RE, LOT_ID_RULE
from fibergrade.safe_files import replace_with, temp_beside, write_new
from fibergrade.store import under_issue_lock

SCHEMA = "fibergrade-certificate/1"
REVOCATION_SCHEMA = "fibergrade-revocations/1"

#: decimals each figure is reported with on a certificate (MFD: fibre.md; others: own choice)
PRECISION = {
    "n": 0,
    "mfd_um": 1,
    "sd_um": 2,
    "cv_pct": 1,
    "min_um": 1,
    "max_um": 1,
    "p5_um": 1,
    "p50_um": 1,
    "p95_um": 1,
    "cf_pct": 1,
    "pf_pct": 1,
    "coarse_count_pct": 2,
    "coarse_mass_pct": 2,
    "sf_um": 1,
    "curvature_mean_deg_mm": 0,
    "curvature_sd_deg_mm": 0,
    "medullated_pct": 1,
    "length_mean_mm": 1,
}

#: top-level fields of a certificate (schema fibergrade-certificate/1)
SCHEMA_FIELDS = (
    "schema",
    "certificate_number",
    "issued_at",
    "lab",
    "lot",
    "origin_claim",
    "instrument",
    "calibration",
    "standard",
    "figures",
    "basis",
    "grade",
    "screening",
    "raw_segment",
    "grade_result",
    "audit_position",
    "software_version",
    "supersedes",
)


class CertificateError(FibergradeError):
    """A certificate cannot be issued, read or verified."""

    exit_code = 5


class CertificateFileError(CertificateError):
    """A file given as a certificate is not one (missing, a folder, unreadable, not JSON,
    not signed, a revocation list): bad input, exit 2; that file fails, the others of a
    batch are still verified."""

    exit_code = 2


class OutputPathError(CertificateError):
    """An output path given as an option (``--out``) cannot be written: bad input, exit 2,
    raised before anything is stored."""

    exit_code = 2


class ReasonMissing(CertificateError):
    """A ``--reason`` (override, revocation, reissue) that is empty or only blanks: a bad
    option, exit 2, refused before anything is stored."""

    exit_code = 2


def require_reason(reason: str | None, what: str) -> str:
    """``reason`` when it holds text; else :class:`ReasonMissing` naming ``what`` needs it."""
    if reason is None or not reason.strip():
        raise ReasonMissing(f"{what} needs a reason: --reason with some text, not {reason!r}")
    return reason


class CertificateRefused(CertificateError):
    """The lot may not be certified (not graded, flagged, ...); the message says why."""


class VerificationFailed(CertificateError):
    """A certificate fails verification; ``problems`` lists every finding. Exit code 5,
    unless every problem is a check that could not be made for another reason the exit
    codes name (``report.codes``: an unreadable revocation list 2, the screening model 4):
    then the most serious of those."""

    def __init__(
        self, number: str, problems: list[str], report: VerifyReport | None = None
    ) -> None:
        self.number = number
        self.problems = problems
        self.report = report
        if report is not None:
            self.exit_code = report.exit_code()
        super().__init__(f"certificate {number} FAILS verification: " + "; ".join(problems))


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def report_figures(rec: dict[str, Any]) -> dict[str, Any]:
    """The figures of a grade record at certificate precision (None stays None)."""
    out: dict[str, Any] = {}
    for key, dec in PRECISION.items():
        v = rec.get(key)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out[key] = None
        elif dec == 0:
            out[key] = round(float(v))
        else:
            out[key] = round(float(v), dec)
    return out


def sign(doc: dict[str, Any], private_key: Any) -> dict[str, Any]:
    """The signed envelope of a document."""
    return {
        doc_key(doc): doc,
        "signature": {
            "algorithm": "Ed25519",
            "key_fingerprint": fingerprint(private_key),
            "value": base64.b64encode(private_key.sign(canonical_json(doc))).decode("ascii"),
        },
    }


def doc_key(doc: dict[str, Any]) -> str:
    return "revocations" if doc.get("schema") == REVOCATION_SCHEMA else "certificate"


def check_signature(envelope: dict[str, Any], public_key: Any, what: str) -> dict[str, Any]:
    """The signed document, if its signature verifies with ``public_key``; else raise."""
    from cryptography.exceptions import InvalidSignature

    key = "revocations" if "revocations" in envelope else "certificate"
    doc = envelope.get(key)
    sig = envelope.get("signature") or {}
    if not isinstance(doc, dict) or not isinstance(sig, dict) or "value" not in sig:
        raise CertificateFileError(f"{what}: not a signed fibergrade document")
    if sig.get("algorithm") != "Ed25519" or not isinstance(sig["value"], str):
        raise VerificationFailed(
            str(doc.get("certificate_number", what)),
            [
                f"signature: algorithm {sig.get('algorithm')!r} and a base64 text value "
                "expected; fibergrade signs with 'Ed25519'"
            ],
        )
    if sig.get("key_fingerprint") != fingerprint(public_key):
        raise VerificationFailed(
            str(doc.get("certificate_number", what)),
            [
                f"signed with key {str(sig.get('key_fingerprint'))[:16]}..., not with the "
                f"given public key {fingerprint(public_key)[:16]}..."
            ],
        )
    try:
        public_key.verify(base64.b64decode(sig["value"], validate=True), canonical_json(doc))
    except (InvalidSignature, ValueError) as exc:  # binascii.Error is a ValueError
        raise VerificationFailed(
            str(doc.get("certificate_number", what)),
            ["signature does not verify: the document was altered after signing"],
        ) from exc
    return doc


def read_envelope(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        env = strict_loads(p.read_bytes())
    except FileNotFoundError as exc:
        raise CertificateFileError(f"{p}: no such file") from exc
    except IsADirectoryError as exc:
        raise CertificateFileError(f"{p}: a folder, not a certificate file") from exc
    except OSError as exc:
        raise CertificateFileError(f"{p}: cannot be read: {exc.strerror or exc}") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise CertificateFileError(f"{p}: not a JSON certificate ({exc})") from exc
    if not isinstance(env, dict):
        raise CertificateFileError(f"{p}: not a signed fibergrade document")
    return env


# --- issuing ---------------------------------------------------------------------------


@dataclass
class Issued:
    number: str
    json_path: Path
    pdf_path: Path | None
    envelope: dict[str, Any]
    supersedes: str | None = None


@dataclass
class CertifyOutcome:
    issued: list[Issued] = field(default_factory=list)
    #: lots left out of a run that named none, with why (an id no file may be named after)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _screening_of(rec: dict[str, Any]) -> dict[str, Any] | None:
    s = rec.get("screening")
    return s if isinstance(s, dict) else None


def overrides(store: Any) -> dict[str, dict[str, Any]]:
    """The latest override recorded for each lot (with its record digest)."""
    latest: dict[str, dict[str, Any]] = {}
    for d, payload in store.results("override"):
        latest[payload.get("lot_id")] = payload | {"record": d}
    return latest


def stored_certificates(store: Any) -> list[tuple[str, dict[str, Any]]]:
    """Every certificate of the store, fibre and carcass, as ``(record digest, envelope)``,
    each subject's in the order they were issued: by their own count (``-01``, ``-02``...),
    then ``issued_at``. The store sorts results by ``created_at``, which a certificate
    envelope does not have."""

    def issued(item: tuple[str, dict[str, Any]]) -> tuple[int, str, str]:
        doc = item[1].get("certificate", {})
        number = str(doc.get("certificate_number", ""))
        return (_sequence(number), str(doc.get("issued_at", "")), number)

    return sorted(store.results("certificate"), key=issued)


def _sequence(number: str) -> int:
    """A certificate number's own count, ``NN`` of ``PREFIX-NN``: a subject's certificates
    are numbered 01, 02, ... as issued (:func:`next_certificate`), whatever the clock said
    and past 99 too; -1 for a number of another form."""
    tail = number.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def existing_certificates(store: Any, lot_id: str | None = None) -> list[dict[str, Any]]:
    """Fibre certificates issued from this store (envelopes), oldest first."""
    out = []
    for d, env in stored_certificates(store):
        cert = env.get("certificate", {})
        if cert.get("schema") != SCHEMA:  # carcass certificates: fibergrade.meat.certificates
            continue
        if lot_id is None or cert.get("lot", {}).get("lot_id") == lot_id:
            out.append(env | {"_record": d})
    return out


def build_certificate(
    store: Any,
    rec: dict[str, Any],
    *,
    lab_name: str,
    number: str,
    supersedes: str | None,
    audit_pos: Position,
    override: dict[str, Any] | None,
    source_names: dict[str, str],
) -> dict[str, Any]:
    """The certificate document for one graded lot (raises CertificateRefused).

    ``override``: the lot's recorded override, if any; ``source_names``: segment digest ->
    imported file name.
    """
    lot_id = rec["lot_id"]
    if rec.get("grade") is None and rec.get("standard") is None:
        raise CertificateRefused(
            f"lot {lot_id} has no grading scheme for its declared type; grade it with --standard"
        )
    from fibergrade.grading import shadowed_packaged

    shadowed = shadowed_packaged(rec.get("standard"))
    if shadowed is not None:
        raise CertificateRefused(
            f"lot {lot_id} was graded by a standard file that reuses the id and version of the "
            f"packaged standard {shadowed.id} v{shadowed.version} but is not that file (SHA-256 "
            f"{str(rec['standard'].get('digest'))[:12]}..., the packaged file's "
            f"{shadowed.digest[:12]}...); its certificate would name a standard whose limits "
            "it was not graded by. Grade it again with the packaged standard, or with a file "
            "that has its own id or a new version"
        )
    screening = _screening_of(rec)
    if screening is None:
        raise CertificateRefused(
            f"lot {lot_id} has not been screened; run fibergrade grade (which screens) first"
        )
    if screening.get("verdict") != "clean" and override is None:
        raise CertificateRefused(
            f"lot {lot_id} was flagged by screening ({screening.get('verdict')}: "
            f"{'; '.join(screening.get('reasons') or [])}); record an override with "
            f"fibergrade override {lot_id} --reason ... to certify it"
        )
    lot_rec = store.lot(lot_id)
    lot_meta = lot_rec.meta.to_dict()
    seg = lot_rec.segment
    return {
        "schema": SCHEMA,
        "certificate_number": number,
        "issued_at": _now(),
        "lab": {"name": lab_name},
        "lot": {
            k: lot_meta.get(k)
            for k in ("lot_id", "declared_type", "client", "received_at", "measured_at")
        },
        "origin_claim": {
            "country": lot_meta.get("origin"),
            "region": lot_meta.get("region"),
            "geographical_indication": lot_meta.get("gi_code"),
        },
        "instrument": {"id": lot_meta.get("instrument_id")},
        "calibration": {
            "record": rec.get("calibration"),
            "uncalibrated": bool(rec.get("uncalibrated", False)),
            "range_flag": rec.get("calibration_range_flag"),
        },
        "standard": rec["standard"],
        "figures": report_figures(rec),
        "basis": {
            "kind": rec.get("basis"),
            "binned": rec.get("binned", []),
            "cut_um": rec.get("cut_um"),
        },
        "grade": {
            "id": rec.get("grade"),
            "criteria": [
                {k: c.get(k) for k in ("grade", "name", "figure", "op", "limit", "value", "passed")}
                for c in rec.get("criteria", [])
            ],
        },
        "screening": {
            "verdict": screening.get("verdict"),
            "probability": screening.get("probability"),
            "model_digest": screening.get("model_digest"),
            "override": (
                {
                    "reason": override["reason"],
                    "actor": override.get("actor"),
                    "record": override["record"],
                }
                if override is not None and screening.get("verdict") != "clean"
                else None
            ),
        },
        "raw_segment": {"sha256": seg, "source_name": source_names.get(seg)},
        "grade_result": rec.get("result_id"),
        "audit_position": audit_pos.to_dict(),
        "software_version": __version__,
        "supersedes": supersedes,
    }


def superseded_numbers(certificates: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each certificate number some later certificate superseded (its ``supersedes``), with
    the first certificate document that did. A supersession is for good: revoking the
    reissue does not put the certificate it replaced back (the lab said it was wrong)."""
    out: dict[str, dict[str, Any]] = {}
    for env in certificates:  # oldest first: the first reissue of a number is kept
        doc = env.get("certificate")
        if isinstance(doc, dict) and isinstance(doc.get("supersedes"), str):
            out.setdefault(doc["supersedes"], doc)
    return out


def standing_certificate(
    prior: list[dict[str, Any]], revoked: set[str] | dict[str, Any]
) -> dict[str, Any] | None:
    """The envelope of a subject's certificate that stands, of its certificates ``prior``
    (oldest first) and the store's ``revoked`` numbers: the newest that is neither revoked
    nor superseded by a reissue (revoked or not), else None."""
    superseded = superseded_numbers(prior)
    current = [
        e
        for e in prior
        if e["certificate"]["certificate_number"] not in revoked
        and e["certificate"]["certificate_number"] not in superseded
    ]
    return current[-1] if current else None


def next_certificate(
    prior: list[dict[str, Any]],
    revoked: set[str],
    prefix: str,
    subject: str,
    reissue_reason: str | None,
) -> tuple[str, str | None]:
    """The number of a new certificate for a subject whose earlier certificates are
    ``prior`` (oldest first), and the number it supersedes: the one that stands
    (:func:`standing_certificate`), or None. A subject with a certificate that stands is
    refused unless ``reissue_reason``; one whose certificates were all revoked or
    superseded (a revoked reissue) is certified anew without it."""
    current = standing_certificate(prior, revoked)
    supersedes = current["certificate"]["certificate_number"] if current else None
    if supersedes and not reissue_reason:
        raise CertificateRefused(
            f"{subject} is already certified as {supersedes}; to issue a corrected "
            "certificate that supersedes it, pass --reissue --reason ...; to write the "
            "issued one's file again (a run stopped before writing it), pass --export"
        )
    return _file_safe(f"{prefix}-{len(prior) + 1:02d}", subject), supersedes


#: the laboratory named on a certificate when none is given (``--lab``) or inherited
DEFAULT_LAB_NAME = "fibergrade laboratory"


def lab_name_for(prior: list[dict[str, Any]], supersedes: str | None, lab_name: str | None) -> str:
    """The laboratory a new certificate names: ``lab_name`` when given; else, for a reissue,
    the one on the certificate it supersedes, and for a subject certified before (a
    certificate issued after its reissue was revoked), the one on its newest certificate
    (``prior``: the subject's certificates), so that a certificate issued without ``--lab``
    does not rename the lab; else :data:`DEFAULT_LAB_NAME`."""
    if lab_name is not None:
        return lab_name
    docs = [env.get("certificate") or {} for env in prior]
    docs.sort(
        key=lambda d: (
            d.get("certificate_number") != supersedes,
            -_sequence(str(d.get("certificate_number"))),
        )
    )
    for doc in docs:
        name = (doc.get("lab") or {}).get("name")
        if isinstance(name, str) and name:
            return name
    return DEFAULT_LAB_NAME


def unfit_for_file_name(ident: str) -> str | None:
    """Why a lot's or carcass's certificates could not be named after ``ident`` (see
    :func:`_file_safe`), or None."""
    try:
        _file_safe(f"FG-{ident}-01", ident)
    except CertificateRefused:
        return f"its id cannot name a certificate file (ids must be {LOT_ID_RULE})"
    return None


def _file_safe(number: str, subject: str) -> str:
    """A certificate number, which names its files (``NUMBER.json``, ``NUMBER.pdf``), if it
    is one safe file-name part by the import rule for ids (a lot or carcass imported
    before that rule, or through the store's API, may not be): else refused."""
    # 228: NUMBER.json written beside itself as .NUMBER.json.<16 hex>.tmp stays <= 255
    if LOT_ID_RE.match(number) is None or len(number) > 228:
        raise CertificateRefused(
            f"{subject}: its certificate number {number!r} cannot name a file (ids must be "
            f"{LOT_ID_RULE}); nothing is issued for it"
        )
    return number


@under_issue_lock
def certify_lots(
    store: Any,
    lot_ids: list[str] | None,
    private_key: Any,
    out_dir: str | Path,
    *,
    lab_name: str | None = None,
    reissue_reason: str | None = None,
    pdf: bool = True,
    progress: Any = None,
    executor: Any = None,
) -> CertifyOutcome:
    """Issue one certificate per lot (all refusals are found before anything is issued);
    ``lot_ids`` None: every clean graded lot that has no certificate yet. ``lab_name``
    None: see :func:`lab_name_for`.

    Every raw segment the certificates cite is hashed and the PDFs are rendered first, one
    task per segment on ``executor`` (default: this process; :mod:`fibergrade.cluster`);
    then this process alone writes the JSON files and stores the certificates.
    ``progress(done, total, stage)`` reports both stages.
    """
    from fibergrade.workflow import latest_grades

    if reissue_reason is not None:
        require_reason(reissue_reason, "a reissue")
    AuditLog(store.root).check_lab_key(private_key.public_key())
    graded = latest_grades(store)
    skipped: list[tuple[str, str]] = []
    if lot_ids is None:  # chosen here, under the issuing lock, like the numbers
        done = {e["certificate"]["lot"]["lot_id"] for e in existing_certificates(store)}
        lot_ids = [
            lot
            for lot, rec in graded.items()
            if (rec.get("screening") or {}).get("verdict") == "clean"
            and rec.get("grade")
            and lot not in done
        ]
        # a lot stored before the id rule (or through the API) whose id cannot name a
        # file is left out with a note, not let block every other lot's certificate
        unfit = {lot: why for lot in lot_ids if (why := unfit_for_file_name(lot))}
        skipped = list(unfit.items())
        lot_ids = [lot for lot in lot_ids if lot not in unfit]
    unknown = [lot for lot in lot_ids if lot not in graded and not _in_store(store, lot)]
    if unknown:  # grading them first would not help: said as grade and show say it
        raise LotNotFoundError(unknown)
    missing = [lot for lot in lot_ids if lot not in graded]
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise CertificateRefused(f"lot(s) not graded yet: {shown}; run fibergrade grade first")
    revoked = {e["certificate_number"] for e in revocation_entries(store, private_key.public_key())}
    previous: dict[str, list[dict[str, Any]]] = {}
    for env in existing_certificates(store):
        previous.setdefault(env["certificate"]["lot"]["lot_id"], []).append(env)
    audit = AuditLog(store.root)
    plans: list[tuple[dict[str, Any], str, str | None, str]] = []
    for lot in lot_ids:
        number, supersedes = next_certificate(
            previous.get(lot, []), revoked, f"FG-{lot}", f"lot {lot}", reissue_reason
        )
        lab = lab_name_for(previous.get(lot, []), supersedes, lab_name)
        plans.append((graded[lot], number, supersedes, lab))
    pos = audit.position()
    found = overrides(store)
    names = {s.digest: s.source_name for s in store.segments()}
    docs = [
        build_certificate(
            store,
            rec,
            lab_name=lab,
            number=num,
            supersedes=sup,
            audit_pos=pos,
            override=found.get(rec["lot_id"]),
            source_names=names,
        )
        for rec, num, sup, lab in plans
    ]
    out = output_folder(out_dir)
    clear_stale_files(out)
    envs = []
    for doc in docs:
        if reissue_reason and doc["supersedes"]:
            doc["reissue_reason"] = reissue_reason
        envs.append(sign(doc, private_key))
    pdf_paths = [out / f"{doc['certificate_number']}.pdf" for doc in docs]
    # Check every cited raw segment and render the PDFs, one task per segment (on a
    # cluster when asked); only when all succeed is anything stored. The PDFs are rendered
    # into a staging folder inside `out` and moved into place once every task has
    # succeeded. On a failure the folder is removed: a task still running elsewhere then
    # cannot write into it (a PDF is written beside its final name and renamed), so no PDF
    # of a certificate that was not issued is left in `out`.
    by_segment: dict[str, list[int]] = {}
    for i, doc in enumerate(docs):
        by_segment.setdefault(doc["raw_segment"]["sha256"], []).append(i)
    # the metadata the grade records and these certificates state must be the segments'
    # own (checked before any PDF is rendered; a mismatch hashes the segment to tell an
    # altered segment from an altered manifest)
    store.check_manifest(by_segment)
    unlogged = {seg.digest: seg for seg in store.unlogged_segments()}
    for seg, idxs in by_segment.items():
        if seg in unlogged:
            raise CertificateRefused(
                f"lot {docs[idxs[0]]['lot']['lot_id']}: its raw data, segment {seg[:12]} "
                f"({unlogged[seg].source_name}), is not recorded as imported in the audit "
                "log (a run stopped before logging it: import the file again; or the file "
                "was placed by hand); no certificate is issued on it"
            )
    staging = out / f"{STAGING_PREFIX}{uuid.uuid4().hex}" if pdf and docs else None
    if staging is not None:
        staging.mkdir()
    staged = [staging / p.name for p in pdf_paths] if staging is not None else []
    from fibergrade.cluster import InProcess
    from fibergrade.segment_tasks import CertifyTask, certify_segment

    calibrations: dict[str, dict[str, Any] | None] = {}  # for the PDFs: read once each
    tasks = [
        CertifyTask(
            path=os.path.abspath(store.segment_path(seg)),
            digest=seg,
            envelopes=tuple(envs[i] for i in idxs),
            records=tuple(graded[docs[i]["lot"]["lot_id"]] for i in idxs),
            pdf_paths=tuple(os.path.abspath(staged[i]) for i in idxs) if staged else (),
            calibrations=(
                tuple(_calibration_record(store, docs[i], calibrations) for i in idxs)
                if staged
                else ()
            ),
        )
        for seg, idxs in by_segment.items()
    ]
    stage = "checking raw data" + (", rendering PDFs" if pdf else "")
    try:
        (executor or InProcess()).map(
            certify_segment,
            tasks,
            label="certify",
            progress=(lambda k, n: progress(k, n, stage)) if progress else None,
        )
    except BaseException:
        if staging is not None:  # PDFs of certificates that are not issued
            shutil.rmtree(staging, ignore_errors=True)
        raise
    result = CertifyOutcome(skipped=skipped)
    try:
        with checkpointed(audit, private_key):
            for i, (doc, env) in enumerate(zip(docs, envs, strict=True)):
                number = doc["certificate_number"]
                # its PDF goes into place with it, once the certificate is issued
                staged_pdf = (staged[i], pdf_paths[i]) if staging is not None else None
                jpath = publish(store, out, number, env, staged_pdf)
                ppath = pdf_paths[i] if pdf else None
                result.issued.append(Issued(number, jpath, ppath, env, doc["supersedes"]))
                if progress:
                    progress(i + 1, len(docs), "storing certificates")
    finally:
        if staging is not None:  # what is left: PDFs of certificates not issued
            shutil.rmtree(staging, ignore_errors=True)
    relist_after_reissue(store, private_key, result.issued)
    return result


#: a certify run's PDF staging folder inside its output folder
STAGING_PREFIX = ".fibergrade-pending-"
#: leftovers younger than this are not touched: another store's run may be writing them
#: into a shared output folder [unsourced: the project's choice]
STALE_AFTER_S = 3600.0


def _calibration_record(
    store: Any, doc: dict[str, Any], cache: dict[str, dict[str, Any] | None]
) -> dict[str, Any] | None:
    """The calibration record a certificate names (for its PDF: date, range, reference
    set), or None when it names none or the record cannot be read (the PDF then shows
    the id alone; verification, not the PDF, judges the record)."""
    rid = (doc.get("calibration") or {}).get("record")
    if not isinstance(rid, str):
        return None
    if rid not in cache:
        try:
            cache[rid] = store.get_result("calibration", rid)
        except (StoreError, OSError, ValueError):
            cache[rid] = None
    return cache[rid]


def clear_stale_files(out: Path) -> int:
    """Remove what a killed certify run left in its output folder: PDF staging folders
    (``.fibergrade-pending-*``) and half-written files (``.FG-...json.*.tmp``,
    ``.FGM-...``), once they are an hour old. Another run of this store cannot be writing
    them (the issuing lock), but a run of another store may share the folder, and a run's
    files are never that old. Returns how many were removed."""
    removed = 0
    now = time.time()
    candidates = [*out.glob(f"{STAGING_PREFIX}*"), *out.glob(".FG*.*.tmp")]
    for p in candidates:
        try:
            if now - p.stat().st_mtime < STALE_AFTER_S:
                continue
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed += 1
        except FileNotFoundError:
            continue
        except OSError:
            continue  # not ours to insist on: it is only cleanup
    return removed


def _in_store(store: Any, lot_id: str) -> bool:
    try:
        store.lot(lot_id)
    except LotNotFoundError:
        return False
    return True


@under_issue_lock
def export_certificates(
    store: Any,
    subject_ids: list[str],
    out_dir: str | Path,
    public_key: Any,
    *,
    pdf: bool = True,
    kind: str = "lot",
) -> list[Issued]:
    """Write again the files of the certificates that stand (:func:`standing_certificate`) of
    the named subjects, from the store's signed copies: ``kind`` ``"lot"`` for fibre lots
    (JSON, and with ``pdf`` the PDF), ``"carcass"`` for carcasses (JSON; carcass
    certificates have no PDF). For a run stopped after storing a certificate and before
    writing its file, or a lost file. Issues and signs nothing; a stored copy whose
    signature does not verify with the lab's ``public_key`` is refused (it was not issued
    by this lab)."""
    from fibergrade.certificate_pdf import render_pdf

    if kind not in ("lot", "carcass"):
        raise ValueError(f"kind must be 'lot' or 'carcass', got {kind!r}")
    AuditLog(store.root).check_lab_key(public_key)  # another lab's key: said so, exit 3
    out = output_folder(out_dir)
    clear_stale_files(out)
    revoked = {e["certificate_number"] for e in revocation_entries(store, public_key)}
    by_subject: dict[str, list[dict[str, Any]]] = {}
    for env in all_certificates(store):  # read once, each subject's oldest first
        doc = env.get("certificate", {})
        of_kind, ident = _subject(doc)
        if of_kind == kind:
            by_subject.setdefault(ident, []).append(env)
    grade_results: dict[str, dict[str, Any]] = {}
    done = []
    for ident in dict.fromkeys(subject_ids):
        standing = standing_certificate(by_subject.get(ident, []), revoked)
        if standing is None:
            raise CertificateError(f"{kind} {ident} has no certificate that stands in this store")
        env = standing
        doc = env["certificate"]
        number = _file_safe(str(doc["certificate_number"]), f"{kind} {ident}")
        try:
            check_signature(env, public_key, number)
        except CertificateError as exc:
            raise CertificateError(
                f"the store's certificate {number} does not verify with the lab key ({exc}); "
                "it is not exported"
            ) from None
        path = out / f"{number}.json"
        try:
            replace_with(path, _json_bytes(env))
        except OSError as exc:
            raise CertificateError(f"{path}: cannot write: {exc}") from exc
        pdf_path = None
        if pdf and kind == "lot":
            gid = doc["grade_result"]
            if gid not in grade_results:
                grade_results[gid] = {
                    r["lot_id"]: r for r in store.get_result("grade", gid)["lots"]
                }
            pdf_path = out / f"{number}.pdf"
            try:  # render_pdf writes beside the name and renames
                cal = _calibration_record(store, doc, {})
                render_pdf(env, grade_results[gid][ident], pdf_path, calibration=cal)
            except OSError as exc:
                raise CertificateError(f"{pdf_path}: cannot write: {exc}") from exc
        done.append(Issued(number, path, pdf_path, env, doc.get("supersedes")))
    return done


def _write_beside(path: Path, envelope: dict[str, Any]) -> Path:
    """Write a certificate's JSON file beside ``path`` (a hidden temporary name, which
    :func:`clear_stale_files` knows) and return that name, for the caller to rename into
    place when it may."""
    tmp = temp_beside(path)
    try:
        write_new(tmp, _json_bytes(envelope))  # O_EXCL: a link planted there is never followed
    except OSError as exc:
        raise CertificateError(f"{path}: cannot write the certificate: {exc}") from exc
    return tmp


def _json_bytes(doc: dict[str, Any]) -> bytes:
    """A certificate's or revocation list's file, as written: indented UTF-8 JSON."""
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def output_folder(out_dir: str | Path) -> Path:
    """The folder certificates are written to, created if need be; one that cannot be is a
    :class:`CertificateError` (before anything is stored)."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(
            f"{out}: cannot be the certificates' folder: {exc.strerror or exc}"
        ) from exc
    return out


def publish(
    store: Any,
    out: Path,
    number: str,
    envelope: dict[str, Any],
    pdf: tuple[Path, Path] | None = None,
) -> Path:
    """Store a signed certificate (the store logs it in the audit log) and write its JSON
    file ``out/NUMBER.json``, and with ``pdf`` (staged, final) move its rendered PDF into
    place. The JSON is written beside its name first and renamed, and the PDF moved, only
    once the store holds the certificate, so a failure leaves no file of a certificate the
    store does not know (a batch stopped part-way resumes with the rest). A file that
    cannot be put in place after that is a :class:`CertificateError` saying the
    certificate is issued."""
    path = out / f"{number}.json"
    tmp = _write_beside(path, envelope)
    try:
        store.put_result("certificate", envelope)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    problems = []
    for src, dst in [(tmp, path), *([pdf] if pdf else [])]:
        try:
            os.replace(src, dst)
        except OSError as exc:
            src.unlink(missing_ok=True)
            problems.append(f"{dst}: {exc.strerror or exc}")
    if problems:
        raise CertificateError(
            f"certificate {number} is issued (stored and logged), but a file of it cannot be "
            f"written: {'; '.join(problems)}"
        )
    return path


@contextmanager
def checkpointed(audit: AuditLog, private_key: Any) -> Iterator[None]:
    """Sign an audit checkpoint over whatever the block logged (certificates stored), on a
    failure too; a checkpoint that then fails is added as a note to the original error,
    which is what the user sees."""
    before = audit.position()
    try:
        yield
    except BaseException as exc:
        try:
            if audit.position() != before:
                audit.checkpoint(private_key)
        except Exception as again:
            exc.add_note(f"no audit checkpoint could be signed either: {again}")
        raise
    if audit.position() != before:
        audit.checkpoint(private_key)


# --- overrides and revocation -------------------------------------------------------------


def record_override(store: Any, lot_id: str, reason: str, actor: str) -> str:
    """Record that a flagged lot may be certified, and why (logged in the audit log)."""
    require_reason(reason, "an override")
    store.lot(lot_id)  # LotNotFoundError for an unknown lot
    payload = {
        "kind": "override",
        "lot_id": lot_id,
        "reason": reason,
        "actor": actor,
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds"),
    }
    return store.put_result("override", payload)  # logged by the store


def all_certificates(store: Any) -> list[dict[str, Any]]:
    """Every certificate issued from this store, fibre and carcass (envelopes), oldest
    first."""
    return [env for _, env in stored_certificates(store)]


def revocation_entries(store: Any, public_key: Any = None) -> list[dict[str, Any]]:
    """The store's revocation records, oldest first. With the lab's ``public_key`` each
    must carry a signature by it (``revoke`` signs every record it stores): a record
    that does not is :class:`~fibergrade.errors.StoreCorruptError`, since it can only have
    been placed by hand, and a revocation decides whether a certificate stands."""
    from fibergrade.errors import StoreCorruptError

    entries = [p for _, p in store.results("revocation")]
    for e in entries:
        if not all(isinstance(e.get(k), str) for k in _REVOCATION_FIELDS):
            raise StoreCorruptError(
                f"{store.root}: a revocation record lacks "
                f"{', '.join(k for k in _REVOCATION_FIELDS if not isinstance(e.get(k), str))}"
            )
    if public_key is not None:
        for e in entries:
            body = {k: v for k, v in e.items() if k != "signature"}
            try:
                if body.get("schema") != REVOCATION_RECORD_SCHEMA:
                    raise CertificateError("not a signed revocation record")
                check_signature(
                    {"certificate": body, "signature": e.get("signature")}, public_key, "record"
                )
            except CertificateError:
                raise StoreCorruptError(
                    f"{store.root}: the revocation record of {e.get('certificate_number')} "
                    "is not signed by the lab key (placed by hand, or written by a fibergrade "
                    "from before revocation records were signed)"
                ) from None
    return entries


#: a revocation record as ``revoke`` stores it (signed; see :func:`revocation_entries`)
REVOCATION_RECORD_SCHEMA = "fibergrade-revocation-record/1"
_REVOCATION_FIELDS = ("certificate_number", "certificate_sha256", "reason", "revoked_at")


@under_issue_lock
def revoke(
    store: Any, number: str, reason: str, private_key: Any, out_file: str | Path | None = None
) -> tuple[dict[str, Any], Path, list[str]]:
    """Revoke a certificate and write the whole signed revocation list (``out_file``,
    default ``STORE/revocations.json``); the list, the path it was written to, and notes
    on what the revocation leaves standing (a revoked reissue does not put the certificate
    it superseded back: its lot or carcass then has no certificate that stands).

    The list's file is reserved before anything is stored, so a target that cannot be
    written refuses the revocation. Should the write still fail after the revocation is
    stored (a full disk), the error says so and how to write the list again
    (:func:`write_revocation_list`)."""
    require_reason(reason, "a revocation")
    certificates = all_certificates(store)
    found = [e for e in certificates if e["certificate"]["certificate_number"] == number]
    if not found:
        raise CertificateError(f"no certificate {number} was issued from this store")
    signer = str((found[0].get("signature") or {}).get("key_fingerprint"))
    if fingerprint(private_key) != signer:
        # the list and the audit checkpoint are signed with this key: another lab's key
        # would leave every later verification against the lab's public key failing
        raise CertificateError(
            f"certificate {number} was signed with key {signer[:16]}...; this key "
            f"({fingerprint(private_key)[:16]}...) is not the lab key that issued it"
        )
    # read (and checked) before anything is written: a store whose records this key cannot
    # vouch for is refused here, not after the record and its checkpoint are stored
    revoked = {e["certificate_number"] for e in revocation_entries(store, private_key.public_key())}
    if number in revoked:
        raise CertificateError(f"certificate {number} is already revoked")
    notes = _left_standing(certificates, revoked, found[0]["certificate"])
    target = _list_target(store, out_file)
    _check_list_target(target)  # before anything is stored
    entry: dict[str, Any] = {
        "schema": REVOCATION_RECORD_SCHEMA,
        "kind": "revocation",
        "certificate_number": number,
        "certificate_sha256": digest(found[0]["certificate"]),
        "reason": reason,
        "revoked_at": _now(),
    }
    # signed in the store too: standing is judged from these records
    entry["signature"] = sign(entry, private_key)["signature"]
    try:
        store.put_result("revocation", entry)  # logged by the store
        AuditLog(store.root).checkpoint(private_key)
        env = revocation_list(store, private_key)
        _write_list(target, env)
    except CertificateError as exc:
        raise CertificateError(
            f"certificate {number} is revoked (recorded in the store and the audit log), "
            f"but {exc}; write the list again with: fibergrade revoke --list-only --out FILE"
        ) from None
    return env, target, notes


def _left_standing(
    certificates: list[dict[str, Any]], revoked: set[str], doc: dict[str, Any]
) -> list[str]:
    """What revoking ``doc`` leaves standing, said when it stood: its lot or carcass then
    has no certificate that stands, and one it superseded is not put back."""
    subject = _subject(doc)
    same = [e for e in certificates if _subject(e["certificate"]) == subject]
    current = standing_certificate(same, revoked)
    if current is None or current["certificate"]["certificate_number"] != doc["certificate_number"]:
        return []
    kind, ident = subject
    again = f"fibergrade certify {ident}" if kind == "lot" else f"fibergrade meat certify {ident}"
    note = f"{kind} {ident} now has no certificate that stands"
    if doc.get("supersedes"):
        note += (
            f": {doc['supersedes']}, which {doc['certificate_number']} superseded, stays "
            "superseded (revoking a reissue does not put the certificate it replaced back)"
        )
    return [f"{note}; to certify it again: {again}"]


@under_issue_lock
def write_revocation_list(
    store: Any, private_key: Any, out_file: str | Path | None = None
) -> tuple[dict[str, Any], Path]:
    """Write the store's whole signed revocation list again, revoking nothing (after a
    ``revoke`` whose list could not be written, or for a copy elsewhere); the list and the
    path written. The key must be the lab's (it signs the list)."""
    AuditLog(store.root).check_lab_key(private_key.public_key())
    target = _list_target(store, out_file)
    _check_list_target(target)
    env = revocation_list(store, private_key)
    _write_list(target, env)
    return env, target


def relist_after_reissue(store: Any, private_key: Any, issued: list[Issued]) -> Path | None:
    """After certificates that supersede others are issued, write the store's signed
    revocation list (``STORE/revocations.json``) again, so that it lists the supersessions
    as a revocation's list lists the revocation; the path, or None when nothing was
    superseded. A list kept elsewhere is written again with ``revoke --list-only --out``."""
    if not any(i.supersedes for i in issued):
        return None
    target = _list_target(store, None)
    try:
        _check_list_target(target)
        _write_list(target, revocation_list(store, private_key))
    except CertificateError as exc:
        numbers = ", ".join(i.number for i in issued if i.supersedes)
        raise CertificateError(
            f"{numbers} issued (stored and logged), but the revocation list listing what "
            f"they supersede is not written: {exc}; write it again with: fibergrade revoke "
            "--list-only"
        ) from None
    return target


def _list_target(store: Any, out_file: str | Path | None) -> Path:
    return Path(out_file) if out_file else Path(store.root) / "revocations.json"


def _check_list_target(target: Path) -> None:
    """Refuse, before anything is stored, a revocation list target that cannot be written
    (:class:`OutputPathError`): a folder, or a place where no file can be created (a probe
    file under a random name is created there and removed)."""
    if target.is_dir():
        raise OutputPathError(f"{target}: is a folder; the revocation list needs a file name")
    probe = temp_beside(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_new(probe, b"")
        probe.unlink()
    except OSError as exc:
        raise OutputPathError(
            f"{target}: the revocation list cannot be written there: {exc.strerror or exc}"
        ) from None


def _write_list(target: Path, env: dict[str, Any]) -> None:
    """Write the list beside ``target`` under a new random name (never through a link or
    a file put there since) and rename it into place."""
    try:
        replace_with(target, _json_bytes(env))
    except OSError as exc:
        raise CertificateError(
            f"the revocation list cannot be written to {target}: {exc.strerror or exc}"
        ) from None


def revocation_list(store: Any, private_key: Any) -> dict[str, Any]:
    """The store's signed revocation list: ``entries``, every revocation, and
    ``supersessions``, every certificate a reissue superseded (:func:`supersession_entries`),
    so that a superseded certificate fails ``verify --revocations`` offline as it fails
    ``verify --store``. A list without ``supersessions`` was written by a fibergrade from
    before they were listed."""
    public_key = private_key.public_key()
    doc = {
        "schema": REVOCATION_SCHEMA,
        "issued_at": _now(),
        "entries": [
            {k: e[k] for k in _REVOCATION_FIELDS} for e in revocation_entries(store, public_key)
        ],
        "supersessions": supersession_entries(store, public_key),
    }
    return sign(doc, private_key)


def supersession_entries(store: Any, public_key: Any) -> list[dict[str, Any]]:
    """Each certificate of the store a reissue superseded, in the order they were
    superseded: its number and SHA-256, the number that superseded it, when (that one's
    ``issued_at``) and why (its ``reissue_reason``). The superseding certificate must be
    signed by the lab's ``public_key`` (:class:`~fibergrade.errors.StoreCorruptError`
    otherwise: the lab's list would vouch for a certificate it did not issue)."""
    from fibergrade.errors import StoreCorruptError

    certificates = all_certificates(store)
    by_number = {
        str(e["certificate"].get("certificate_number")): e
        for e in certificates
        if isinstance(e.get("certificate"), dict)
    }
    out = []
    for number, newer in superseded_numbers(certificates).items():
        newer_number = str(newer.get("certificate_number"))
        try:
            check_signature(by_number[newer_number], public_key, newer_number)
        except CertificateError:
            raise StoreCorruptError(
                f"{store.root}: the stored certificate {newer_number}, which supersedes "
                f"{number}, is not signed by the lab key"
            ) from None
        old = by_number.get(number)
        out.append(
            {
                "certificate_number": number,
                "certificate_sha256": digest(old["certificate"]) if old else None,
                "superseded_by": newer_number,
                "superseded_at": newer.get("issued_at"),
                "reason": newer.get("reissue_reason"),
            }
        )
    return out


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


# --- verification -------------------------------------------------------------------------


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
    """Verify a certificate file; raises :class:`VerificationFailed` listing every problem.

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
    carcass) that stands (:func:`standing_certificate`), the one a reissue would
    supersede (:func:`next_certificate`)."""
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
        latest = standing.get(_subject(cert))
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


def _subject(cert: dict[str, Any]) -> tuple[str, str]:
    """What a certificate certifies: a fibre lot or a carcass."""
    if "carcass" in cert:
        return ("carcass", str(cert["carcass"].get("carcass_id")))
    return ("lot", str((cert.get("lot") or {}).get("lot_id")))


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
    (:func:`superseded_numbers`), per subject the certificate that stands
    (:func:`standing_certificate`), and the envelope of every certificate the store issued
    by number (read once for a batch)."""
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
        by_subject.setdefault(_subject(doc), []).append(env)
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
    screening = _screening_of(entry) or {}
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
