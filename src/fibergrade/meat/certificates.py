"""Signed carcass certificates through the same machinery as fibre certificates.

Schema ``fibergrade-meat-certificate/1``: the carcass (carcass id, animal id, lot), its
grading (category, fat score, MSA eligibility and reasons, EU category and light-lamb band,
colour, pH class, with the schemes' ids and digests), the validated halal slaughter record
(digest, certification body and its certificate) and what the certificate states of it
(``slaughter``: slaughter date, establishment, certification body, halal certificate and
its expiry), the SHA-256 of the stored carcass record,
the weighing link, the audit-log position, the software version and any superseded
certificate. It is signed with the lab's Ed25519 key exactly as fibre certificates are
(:func:`fibergrade.certificates.sign`), stored in the store (and so logged in the audit
log), and verified by :func:`verify_meat` which checks the stored carcass and halal records'
digests and recomputes the grading from the carcass record.

A carcass without a validated halal slaughter record is refused, as is one whose record
shows a failed ante- or post-mortem inspection or no vendor declaration
(:func:`fibergrade.meat.traceability.halal_problems`): the halal claim is what the
certificate vouches for. Verification recomputes that status from the stored record.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from fibergrade import __version__
from fibergrade.audit import AuditLog, digest
from fibergrade.certificates import (
    CertificateRefused,
    CertifyOutcome,
    Issued,
    checkpointed,
    clear_stale_files,
    lab_name_for,
    next_certificate,
    output_folder,
    publish,
    require_reason,
    sign,
    standing_certificate,
    stored_certificates,
    superseded_numbers,
)
from fibergrade.certificates import unfit_for_file_name as unfit
from fibergrade.revocation import relist_after_reissue, revocation_entries
from fibergrade.store import under_issue_lock
from fibergrade.verification import VerifyReport

MEAT_SCHEMA = "fibergrade-meat-certificate/1"
#: the graded fields a carcass certificate carries (and verification recomputes)
GRADED_FIELDS = (
    "category",
    "fat_score",
    "msa_eligible",
    "msa_reasons",
    "eu_category",
    "light_lamb_band",
    "colour_acceptable",
    "ph_class",
)


def carcass_weight(record: dict[str, Any]) -> dict[str, Any]:
    """The weight a carcass certificate reports: meat.md (EU) asks to report the weight and
    whether it is warm or cold. The carcass record's ``hscw_kg`` is the hot standard carcass
    weight, so the basis is ``hot``."""
    return {"hscw_kg": record.get("hscw_kg"), "basis": "hot"}


def meat_certificates(store: Any) -> list[dict[str, Any]]:
    """Carcass certificates issued from this store (envelopes), oldest first."""
    return [
        env
        for _, env in stored_certificates(store)
        if env.get("certificate", {}).get("schema") == MEAT_SCHEMA
    ]


@under_issue_lock
def certify_carcasses(
    store: Any,
    carcass_ids: list[str] | None,
    private_key: Any,
    out_dir: str | Path,
    *,
    lab_name: str | None = None,
    reissue_reason: str | None = None,
) -> CertifyOutcome:
    """One signed certificate per carcass (all refusals found before anything is issued).

    Without ``carcass_ids``: every graded carcass with a validated halal record that has no
    certificate yet, less any whose id cannot name a certificate file (stored before the
    id rule), which are listed in ``skipped``. ``lab_name`` None: the superseded
    certificate's lab for a reissue, else the default
    (:func:`fibergrade.certificates.lab_name_for`).
    """
    from fibergrade.meat.traceability import grade_carcass_records, halal_index, slaughter_facts

    if reissue_reason is not None:
        require_reason(reissue_reason, "a reissue")
    AuditLog(store.root).check_lab_key(private_key.public_key())
    out = output_folder(out_dir)
    clear_stale_files(out)
    # graded without recording: a refusal below must leave nothing in the store
    graded = grade_carcass_records(store, carcass_ids or None)
    records = graded.records
    revoked = {e["certificate_number"] for e in revocation_entries(store, private_key.public_key())}
    previous: dict[str, list[dict[str, Any]]] = {}
    for env in meat_certificates(store):
        previous.setdefault(env["certificate"]["carcass"]["carcass_id"], []).append(env)
    skipped: list[tuple[str, str]] = []
    if not carcass_ids:
        records = [
            r
            for r in records
            if r["halal"].get("status") == "validated" and r["carcass_id"] not in previous
        ]
        left_out = {r["carcass_id"]: why for r in records if (why := unfit(r["carcass_id"]))}
        skipped = list(left_out.items())
        records = [r for r in records if r["carcass_id"] not in left_out]
    for r in records:
        halal = r["halal"]
        if halal.get("status") == "failed":
            raise CertificateRefused(
                f"carcass {r['carcass_id']}: its halal slaughter record "
                f"{halal['record'][:12]} does not support a halal claim "
                f"({'; '.join(halal['problems'])}); no certificate is issued for it"
            )
        if halal.get("status") != "validated":
            raise CertificateRefused(
                f"carcass {r['carcass_id']} has no validated halal slaughter record; import "
                "it with: fibergrade meat import --halal FILE"
            )
    plans = []
    for r in records:
        cid = r["carcass_id"]
        number, supersedes = next_certificate(
            previous.get(cid, []),
            revoked,
            f"FGM-{cid}",
            f"carcass {cid}",
            reissue_reason,
        )
        lab = lab_name_for(previous.get(cid, []), supersedes, lab_name)
        plans.append((r, number, supersedes, lab))
    if not plans:
        return CertifyOutcome(skipped=skipped)
    # every check passed: the very records these certificates are made from are recorded
    result_id = graded.record(store)
    slaughtered = halal_index(store)  # each carcass here has a validated one
    audit = AuditLog(store.root)
    pos = audit.position()
    issued = []
    with checkpointed(audit, private_key):
        for r, number, supersedes, lab in plans:
            doc: dict[str, Any] = {
                "schema": MEAT_SCHEMA,
                "certificate_number": number,
                "issued_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                "lab": {"name": lab},
                "carcass": {k: r.get(k) for k in ("carcass_id", "animal_id", "lot_id")},
                "weight": carcass_weight(r),
                "grading": {k: r.get(k) for k in GRADED_FIELDS},
                "schemes": graded.schemes,
                "halal": r["halal"],
                "slaughter": slaughter_facts(slaughtered[r["carcass_id"]][1]),
                "carcass_record": r["carcass_record"],
                "weighing": r.get("weighing"),
                "grade_result": result_id,
                "audit_position": pos.to_dict(),
                "software_version": __version__,
                "supersedes": supersedes,
            }
            if supersedes:
                doc["reissue_reason"] = reissue_reason
            env = sign(doc, private_key)
            path = publish(store, out, number, env)
            issued.append(Issued(number, path, None, env, supersedes))
    relist_after_reissue(store, private_key, issued)
    return CertifyOutcome(issued, skipped)


def verify_meat(cert: dict[str, Any], store: Any, rep: VerifyReport) -> None:
    """Check the stored records a carcass certificate names and recompute its grading."""
    from fibergrade.errors import FibergradeError, StoreError
    from fibergrade.meat.traceability import grade_carcass_records, halal_index, slaughter_facts

    cid = cert["carcass"]["carcass_id"]
    try:
        store.get_result("carcasses", cert["carcass_record"])
        rep.checks.append(("carcass record", f"{cert['carcass_record'][:16]}... intact"))
        halal_id = (cert.get("halal") or {}).get("record")
        if halal_id:
            store.get_result("halal", halal_id)
            rep.checks.append(("halal record", f"{halal_id[:16]}... intact"))
    except StoreError as exc:
        rep.problems.append(f"stored record: {exc}")
        return
    try:
        graded = grade_carcass_records(store, [cid])
    except FibergradeError as exc:
        rep.problems.append(f"recomputation: {exc}")
        return
    if "schemes" in cert:  # certificates issued before schemes were named carry none
        before = len(rep.problems)
        for role, used in cert["schemes"].items():  # role -> {id, version, digest}
            now = graded.schemes.get(role)
            if now != used:
                have = (
                    "does not use it"
                    if now is None
                    else f"uses {now['id']} version {now['version']} (digest {now['digest'][:12]})"
                )
                rep.problems.append(
                    f"{role} scheme: the certificate used {used.get('id')} version "
                    f"{used.get('version')} (digest {str(used.get('digest'))[:12]}); this "
                    f"software {have}"
                )
        if len(rep.problems) > before:
            return
        rep.checks.append(("schemes", f"the {len(cert['schemes'])} schemes' versions match"))
    again = graded.records[0]
    if again["carcass_record"] != cert["carcass_record"]:
        rep.problems.append("the carcass's stored record differs from the one certified")
    if again["halal"] != cert.get("halal"):
        rep.problems.append(
            f"halal: certificate says {cert.get('halal')!r}, the slaughter record gives "
            f"{again['halal']!r}"
        )
    if "slaughter" in cert:  # certificates issued before it was stated carry none
        found = halal_index(store).get(cid)
        now = slaughter_facts(found[1]) if found else None
        if now != cert["slaughter"]:
            rep.problems.append(
                f"slaughter: certificate says {cert['slaughter']!r}, the slaughter record "
                f"gives {now!r}"
            )
    for k in ("carcass_id", "animal_id", "lot_id"):
        if (cert.get("carcass") or {}).get(k) != again.get(k):
            rep.problems.append(
                f"carcass.{k}: certificate says {(cert.get('carcass') or {}).get(k)!r}, the "
                f"carcass record gives {again.get(k)!r}"
            )
    weighing = again.get("weighing")
    if isinstance(weighing, dict) and "record" in weighing:  # the link as it was at issue
        weighing = weighing | {"record": _weighing_at(store, cid, cert.get("audit_position"))}
    if weighing != cert.get("weighing"):
        rep.problems.append(
            f"weighing: certificate says {cert.get('weighing')!r}, the store gives {weighing!r}"
        )
    if "weight" in cert and carcass_weight(again) != cert["weight"]:
        rep.problems.append(
            f"weight: certificate says {cert['weight']!r}, the carcass record gives "
            f"{carcass_weight(again)!r}"
        )
    for key in GRADED_FIELDS:
        if key == "msa_reasons" and _first_worded(again.get(key), cert["grading"].get(key)):
            rep.notes.append(
                "msa_reasons are worded as before reasons named the field of their value "
                "(the same conditions and values)"
            )
            continue
        if again.get(key) != cert["grading"].get(key):
            rep.problems.append(
                f"{key}: certificate says {cert['grading'].get(key)!r}, "
                f"the carcass record gives {again.get(key)!r}"
            )
    if not rep.problems:
        rep.checks.append(
            (
                "recomputation",
                f"{len(GRADED_FIELDS)} graded fields, the carcass's ids, the weight and the "
                "weighing link agree",
            )
        )


def _weighing_at(store: Any, carcass_id: str, position: Any) -> str | None:
    """The weighing record a carcass certificate links: the carcass's latest weighing
    record logged before the certificate's own audit position (a weighing logged after it,
    e.g. a check weighing, does not make it wrong), or None. The log's order decides, not
    the records' times: a certificate's ``issued_at`` is to the second, and a weighing
    stored within that same second, before it, read as after it."""
    from fibergrade.acquisition import WEIGHING_KIND
    from fibergrade.audit import AuditLog

    before = position.get("seq") if isinstance(position, dict) else None
    log = AuditLog(store.root)
    found: tuple[int, str] | None = None
    for rid, rec in store.results(WEIGHING_KIND):
        seq = log.logged_seq(rid)
        if rec.get("subject") != carcass_id or seq is None:
            continue
        if (not isinstance(before, int) or seq < before) and (found is None or seq > found[0]):
            found = (seq, rid)
    return found[1] if found else None


def _first_worded(again: Any, stated: Any) -> bool:
    """The certificate's MSA reasons are the recomputed ones as first worded (issued
    before the value was named: :func:`~fibergrade.meat.grading.reason_as_first_worded`)."""
    from fibergrade.meat.grading import reason_as_first_worded

    if not isinstance(again, list) or again == stated:
        return False
    return [reason_as_first_worded(r) for r in again] == stated


def certificate_links(
    certificates: list[dict[str, Any]], revoked: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The trace link of each certified carcass's certificate, by carcass id, from the
    store's carcass certificates (:func:`meat_certificates`, each carcass's oldest first)
    and the revocation records by number: the one that stands (as ``verify --store``
    judges it, :func:`~fibergrade.certificates.standing_certificate`), else the newest,
    marked revoked (a revoked reissue does not put the one it superseded back). The link
    says what it supersedes and why, and when and why it was revoked; ``earlier`` lists
    the carcass's other certificates, each superseded or revoked."""
    by_carcass: dict[str, list[dict[str, Any]]] = {}
    for e in certificates:
        by_carcass.setdefault(e["certificate"]["carcass"]["carcass_id"], []).append(e)
    links = {}
    for cid, envs in by_carcass.items():
        current = standing_certificate(envs, revoked)
        doc = (current or envs[-1])["certificate"]
        superseded = superseded_numbers(envs)
        links[cid] = {
            "link": "certificate",
            "id": doc["certificate_number"],
            "digest": digest(doc),
            "issued_at": doc["issued_at"],
            "supersedes": doc.get("supersedes"),
            "reissue_reason": doc.get("reissue_reason"),
            "revoked": doc["certificate_number"] in revoked,
            "revocation": _revocation_of(revoked.get(doc["certificate_number"])),
            "earlier": [
                {
                    "id": number,
                    "superseded_by": _supersession_of(superseded.get(number)),
                    "revocation": _revocation_of(revoked.get(number)),
                }
                for e in envs
                if (number := e["certificate"]["certificate_number"]) != doc["certificate_number"]
            ],
        }
    return links


def _revocation_of(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if entry is None else {k: entry[k] for k in ("revoked_at", "reason")}


def _supersession_of(newer: dict[str, Any] | None) -> dict[str, Any] | None:
    if newer is None:
        return None
    return {
        "id": newer["certificate_number"],
        "issued_at": newer.get("issued_at"),
        "reason": newer.get("reissue_reason"),
    }


def certificate_note(ident: str, link: dict[str, Any]) -> str | None:
    """What became of the carcass certificate ``ident`` when its chain ends in another
    certificate (``link``, of :func:`certificate_links`): superseded (by which, when, why)
    and/or revoked (when, why); None when ``ident`` is the link's own."""
    earlier = next((x for x in link["earlier"] if x["id"] == ident), None)
    if earlier is None:
        return None
    said = []
    if (sup := earlier["superseded_by"]) is not None:
        said.append(f"superseded by {sup['id']} (issued {sup['issued_at']}: {sup['reason']})")
    if (rev := earlier["revocation"]) is not None:
        said.append(f"revoked on {rev['revoked_at']}: {rev['reason']}")
    return f"{ident} does not stand: {'; '.join(said)}; the chain shows {link['id']}"
