"""Signed test certificates: the schema, signing, and issuing and reissuing them.

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

Besides issuing, this module holds what revoking (:mod:`fibergrade.revocation`) and
verifying (:mod:`fibergrade.verification`) certificates share with it: the schema, the
errors, signing and checking a signature (:func:`sign`, :func:`check_signature`,
:func:`read_envelope`), the store's certificates (:func:`stored_certificates`) and which of
a subject's certificates stands (:func:`standing_certificate`).
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
from typing import TYPE_CHECKING, Any

from fibergrade import __version__
from fibergrade.audit import AuditLog, Position, canonical_json, strict_loads
from fibergrade.errors import FibergradeError, LotNotFoundError, StoreError
from fibergrade.keys import fingerprint
from fibergrade.measurements import LOT_ID_RE, LOT_ID_RULE
from fibergrade.safe_files import replace_with, temp_beside, write_new
from fibergrade.store import under_issue_lock

if TYPE_CHECKING:
    from fibergrade.verification import VerifyReport

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


def now() -> str:
    """The time a certificate, a revocation or a revocation list is stamped with: UTC, to
    the second."""
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


def screening_of(rec: dict[str, Any]) -> dict[str, Any] | None:
    """The screening a grade record carries, or None (the lot was not screened)."""
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


def all_certificates(store: Any) -> list[dict[str, Any]]:
    """Every certificate issued from this store, fibre and carcass (envelopes), oldest
    first."""
    return [env for _, env in stored_certificates(store)]


def subject_of(cert: dict[str, Any]) -> tuple[str, str]:
    """What a certificate certifies: a fibre lot or a carcass."""
    if "carcass" in cert:
        return ("carcass", str(cert["carcass"].get("carcass_id")))
    return ("lot", str((cert.get("lot") or {}).get("lot_id")))


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
    screening = screening_of(rec)
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
        "issued_at": now(),
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
    # revocation builds on this module: imported here, not at the top
    from fibergrade.revocation import relist_after_reissue, revocation_entries
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
    from fibergrade.revocation import revocation_entries  # (builds on this module)

    if kind not in ("lot", "carcass"):
        raise ValueError(f"kind must be 'lot' or 'carcass', got {kind!r}")
    AuditLog(store.root).check_lab_key(public_key)  # another lab's key: said so, exit 3
    out = output_folder(out_dir)
    clear_stale_files(out)
    revoked = {e["certificate_number"] for e in revocation_entries(store, public_key)}
    by_subject: dict[str, list[dict[str, Any]]] = {}
    for env in all_certificates(store):  # read once, each subject's oldest first
        doc = env.get("certificate", {})
        of_kind, ident = subject_of(doc)
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
            replace_with(path, json_bytes(env))
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
        write_new(tmp, json_bytes(envelope))  # O_EXCL: a link planted there is never followed
    except OSError as exc:
        raise CertificateError(f"{path}: cannot write the certificate: {exc}") from exc
    return tmp


def json_bytes(doc: dict[str, Any]) -> bytes:
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


# --- overrides ----------------------------------------------------------------------------


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
