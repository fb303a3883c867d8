"""Carcass batches and halal slaughter records in the store, and the traceability chain.

Records (content-addressed result records of :class:`fibergrade.store.Store`):

- ``carcasses``: one per imported carcass CSV, ``{"kind": "carcass-batch",
  "format_version": 1, "created_at", "source_name", "source_digest", "n", "columns",
  "lines"}``; ``columns`` is the columnar table of :class:`~.carcasses.CarcassBatch`.
- ``halal``: one per imported slaughter CSV, ``{"kind": "halal-batch", "format_version": 1,
  "created_at", "source_name", "source_digest", "stun_scheme", "records", "lines"}``.
- ``meat-grades``: one per ``meat grade`` run, the scheme references and every carcass's
  grade.
- ``weighing``: written by ``fibergrade acquire`` (issue 3); a weighing whose ``subject`` is
  a carcass id is linked to that carcass.

A file is recognised by the SHA-256 of its bytes: importing it again does nothing. A carcass
id or animal id already in the store (from another file) is refused with
:class:`~fibergrade.errors.StoredIdConflictError` (a store refusal, exit code 3, as for a fibre
lot id), naming the file and line; a carcass whose animal differs between its carcass row and
its slaughter record is refused as bad input (:class:`~fibergrade.errors.InputError`). Every
check runs before the one record is written, so a refused file leaves nothing behind.

The chain of :func:`trace` is animal -> slaughter -> carcass -> lot -> certificate. Each link
carries the SHA-256 of the canonical JSON of what it stands for (``digest``) and the store
record holding it (``record``). The last link is the carcass's certificate that stands (or,
when none does, its newest, marked revoked), or "no certificate issued".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fibergrade.errors import InputError, StoreCorruptError, StoredIdConflictError
from fibergrade.meat.carcasses import CarcassBatch, ScaleLimit, read_carcass_csv
from fibergrade.meat.errors import NothingToGradeError, TraceNotFoundError
from fibergrade.meat.grading import grade_carcasses
from fibergrade.meat.halal import read_halal_csv
from fibergrade.store import Store, sha256_file, under_issue_lock

__all__ = [
    "CarcassGrading",
    "ImportResult",
    "grade_carcass_records",
    "grade_store",
    "halal_index",
    "halal_link",
    "halal_problems",
    "import_carcasses",
    "import_halal",
    "load_carcasses",
    "scale_limit",
    "slaughter_facts",
    "trace",
]

CARCASS_KIND = "carcasses"
HALAL_KIND = "halal"
GRADES_KIND = "meat-grades"
WEIGHING_KIND = "weighing"
NO_CERTIFICATE = "no certificate issued"
_TO_KG = {"kg": 1.0, "g": 0.001}


@dataclass(frozen=True)
class ImportResult:
    """What an import did; ``already_imported``: the same file was in the store already."""

    source_name: str
    record: str
    n: int
    already_imported: bool


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _digest(obj: Any) -> str:
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def scale_limit(profile: str) -> ScaleLimit:
    """The Max in kg of a scale instrument profile (``instruments/<name>.toml``)."""
    from fibergrade.adapters.errors import ProfileError
    from fibergrade.adapters.profiles import load_profile

    p = load_profile(profile)
    if p.scale is None:
        raise ProfileError(str(p.path), None, f"profile {p.name!r} is not a scale")
    factor = _TO_KG.get(p.scale.unit)
    if factor is None:
        raise ProfileError(
            str(p.path), None, f"scale unit {p.scale.unit!r} cannot be converted to kg"
        )
    return ScaleLimit(profile=p.name, max_kg=p.scale.max * factor)


def _existing(store: Store, kind: str, digest: str) -> tuple[str, dict[str, Any]] | None:
    for rid, rec in store.results(kind):
        if rec.get("source_digest") == digest:
            return rid, rec
    return None


def _stored_ids(store: Store) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """carcass id -> source, animal id -> source, carcass id -> animal id (all records)."""
    carcass: dict[str, str] = {}
    animal: dict[str, str] = {}
    pairs: dict[str, str] = {}
    for _, rec in store.results(CARCASS_KIND):
        cols = rec["columns"]
        src = rec["source_name"]
        carcass.update(dict.fromkeys(cols["carcass_id"], src))
        animal.update(dict.fromkeys(cols["animal_id"], src))
        pairs.update(zip(cols["carcass_id"], cols["animal_id"], strict=True))
    for _, rec in store.results(HALAL_KIND):
        pairs.update((r["carcass_id"], r["animal_id"]) for r in rec["records"])
    return carcass, animal, pairs


@under_issue_lock
def import_carcasses(store: Store, path: str | Path, *, scale: str | None = None) -> ImportResult:
    """Validate a whole carcass CSV and store it as one ``carcasses`` record (or nothing).

    ``scale`` is the instrument profile of the scale that weighed rows without a
    ``scale_profile`` column value.
    """
    path = Path(path)
    if scale is not None:
        scale_limit(scale)  # a --scale that is no scale profile is refused, used or not
    digest = sha256_file(path)
    found = _existing(store, CARCASS_KIND, digest)
    if found:
        return ImportResult(str(path), found[0], int(found[1]["n"]), True)
    batch = read_carcass_csv(path, scale_of=scale_limit, default_scale=scale)
    _check_against_store(store, batch)
    payload = {
        "kind": "carcass-batch",
        "format_version": 1,
        "created_at": _now(),
        "source_name": path.name,
        "source_digest": digest,
        "n": batch.n,
        "columns": batch.columns,
        "lines": batch.lines,
    }
    return ImportResult(str(path), store.put_result(CARCASS_KIND, payload), batch.n, False)


def _check_against_store(store: Store, batch: CarcassBatch) -> None:
    carcass, animal, pairs = _stored_ids(store)
    cols = batch.columns
    for i, (cid, aid) in enumerate(zip(cols["carcass_id"], cols["animal_id"], strict=True)):
        line = batch.lines[i]
        if cid in carcass:
            raise StoredIdConflictError(
                batch.path,
                line,
                f"duplicate carcass_id {cid!r}: already in the store from {carcass[cid]}",
                expected="a carcass id not yet imported",
            )
        if aid in animal:
            raise StoredIdConflictError(
                batch.path,
                line,
                f"animal_id {aid!r} already has a carcass in the store (from {animal[aid]})",
                expected="one carcass per animal",
            )
        if cid in pairs and pairs[cid] != aid:
            raise InputError(
                batch.path,
                line,
                f"carcass {cid!r} is animal {aid!r} here but {pairs[cid]!r} in its halal "
                "slaughter record",
                expected="the same animal id in both records",
            )


@under_issue_lock
def import_halal(store: Store, path: str | Path) -> ImportResult:
    """Validate every slaughter record of a file and store them as one ``halal`` record."""
    path = Path(path)
    digest = sha256_file(path)
    found = _existing(store, HALAL_KIND, digest)
    if found:
        return ImportResult(str(path), found[0], len(found[1]["records"]), True)
    batch = read_halal_csv(path)
    known: dict[str, tuple[str, str]] = {}  # animal/carcass id -> (kind, source)
    for _, rec in store.results(HALAL_KIND):
        for r in rec["records"]:
            known[r["animal_id"]] = ("animal_id", rec["source_name"])
            known[r["carcass_id"]] = ("carcass_id", rec["source_name"])
    _, _, pairs = _stored_ids(store)
    for line, r in zip(batch.lines, batch.records, strict=True):
        for key in ("animal_id", "carcass_id"):
            hit = known.get(r[key])
            if hit and hit[0] == key:
                raise StoredIdConflictError(
                    path,
                    line,
                    f"{key} {r[key]!r} already has a slaughter record (from {hit[1]})",
                    expected=f"one slaughter record per {key}",
                )
        if r["carcass_id"] in pairs and pairs[r["carcass_id"]] != r["animal_id"]:
            raise InputError(
                path,
                line,
                f"carcass {r['carcass_id']!r} is animal {r['animal_id']!r} here but "
                f"{pairs[r['carcass_id']]!r} in the carcass records",
                expected="the same animal id in both records",
            )
    payload = {
        "kind": "halal-batch",
        "format_version": 1,
        "created_at": _now(),
        "source_name": path.name,
        "source_digest": digest,
        "stun_scheme": batch.stun_scheme,
        "records": batch.records,
        "lines": batch.lines,
    }
    return ImportResult(str(path), store.put_result(HALAL_KIND, payload), len(batch.records), False)


def load_carcasses(store: Store) -> tuple[dict[str, list[Any]], list[str]]:
    """Every stored carcass as one columnar table, and the record digest of each row."""
    cols: dict[str, list[Any]] = {}
    origin: list[str] = []
    for rid, rec in store.results(CARCASS_KIND):
        for name, values in rec["columns"].items():
            cols.setdefault(name, []).extend(values)
        origin.extend([rid] * int(rec["n"]))
    return cols, origin


def halal_problems(record: dict[str, Any]) -> list[str]:
    """Why a stored slaughter record cannot carry a halal claim for its carcass (empty: it
    can). The record holds the vendor declaration and the ante- and post-mortem results
    (meat.md, "Halal slaughter record"); an animal or carcass that failed inspection, or
    came without a vendor declaration, is kept on record for traceability but never
    certified. (Alive at cut, the cut and the stun are refused at import.)"""
    problems = []
    if record.get("vendor_declaration") is not True:
        problems.append("no vendor declaration")
    for key, name in (("ante_mortem", "ante-mortem"), ("post_mortem", "post-mortem")):
        if record.get(key) != "pass":
            problems.append(f"{name} inspection: {record.get(key)}")
    return problems


def halal_link(halal: tuple[str, dict[str, Any]] | None) -> dict[str, Any]:
    """A graded carcass's ``halal`` entry: ``validated`` (its slaughter record supports the
    halal claim), ``failed`` (with the ``problems`` of :func:`halal_problems`) or ``no
    slaughter record``."""
    if halal is None:
        return {"status": "no slaughter record", "record": None}
    rid, rec = halal
    link = {"status": "validated", "record": rid, "certificate_number": rec["certificate_number"]}
    problems = halal_problems(rec)
    if problems:
        link |= {"status": "failed", "problems": problems}
    return link


def slaughter_facts(record: dict[str, Any]) -> dict[str, Any]:
    """What a carcass certificate states of its slaughter record (meat.md, "Halal
    slaughter record"): the slaughter date and establishment, and the halal certification
    body with its certificate and that certificate's expiry."""
    return {
        "slaughtered_at": record["slaughtered_at"],
        "establishment_approval": record["establishment_approval"],
        "certification_body": record["certification_body"],
        "halal_certificate": record["certificate_number"],
        "halal_certificate_expiry": record["certificate_expiry"],
    }


def halal_index(store: Store) -> dict[str, tuple[str, dict[str, Any]]]:
    """carcass id -> (halal record digest, slaughter record), of every stored record."""
    return _halal_index(store)


def _halal_index(store: Store) -> dict[str, tuple[str, dict[str, Any]]]:
    """carcass id -> (halal record digest, slaughter record)."""
    out = {}
    for rid, rec in store.results(HALAL_KIND):
        for r in rec["records"]:
            out[r["carcass_id"]] = (rid, r)
    return out


def _weighings(store: Store) -> dict[str, tuple[str, dict[str, Any]]]:
    """subject (carcass id) -> the latest weighing record of it (digest, payload)."""
    out = {}
    for rid, rec in store.results(WEIGHING_KIND):  # sorted by created_at
        subject = rec.get("subject")
        if isinstance(subject, str) and subject:
            out[subject] = (rid, rec)
    return out


def _weighing_link(rec: dict[str, Any], link: tuple[str, dict[str, Any]] | None) -> None:
    """Add the weighing record to a graded carcass and flag a weight that differs from it."""
    if link is None:
        rec["weighing"]["record"] = None
        return
    rid, w = link
    rec["weighing"]["record"] = rid
    factor = _TO_KG.get(str(w.get("unit")))
    value = w.get("value")
    if factor is None or not isinstance(value, int | float):
        rec["flags"].append(f"weighing record {rid[:12]} has no weight in kg or g to compare")
    elif abs(value * factor - rec["hscw_kg"]) > 1e-9:
        rec["flags"].append(
            f"hscw_kg {rec['hscw_kg']:g} differs from weighing record {rid[:12]} "
            f"({value * factor:g} kg)"
        )
    # scales.md: "Record whether a stored weight came from a stable or an immediate
    # command"; a carcass weight backed by an immediate reading is flagged, as the carcass
    # file's own mode is (grading._flags)
    if w.get("mode") != "stable":
        steady = "stable" if w.get("device_stable") is True else "not stable"
        rec["flags"].append(
            f"weighing record {rid[:12]} is an immediate reading ({steady} on the device), "
            "not a stable weighing"
        )


@dataclass
class CarcassGrading:
    """The graded carcasses of one run, not yet recorded (see :func:`grade_carcass_records`)."""

    records: list[dict[str, Any]]
    schemes: list[dict[str, Any]]  # the schemes' ids, versions and digests
    carcass_records: list[str]  # the stored carcass records graded

    def record(self, store: Store) -> str:
        """Store these exact records as one ``meat-grades`` result; its digest."""
        return store.put_result(
            GRADES_KIND,
            {
                "kind": "meat-grades",
                "created_at": _now(),
                "schemes": self.schemes,
                "carcass_records": self.carcass_records,
                "carcasses": self.records,
            },
        )


def grade_carcass_records(store: Store, carcass_ids: Sequence[str] | None = None) -> CarcassGrading:
    """Grade the stored carcasses (all, or ``carcass_ids``), recording nothing: the
    per-carcass records with the carcass, halal and weighing record digests."""
    cols, origin = load_carcasses(store)
    if not origin:
        raise NothingToGradeError(
            f"{store.root}: no carcasses in the store; import them with "
            "'fibergrade meat import FILE'"
        )
    if carcass_ids:
        pos = {c: i for i, c in enumerate(cols["carcass_id"])}
        missing = [c for c in carcass_ids if c not in pos]
        if missing:
            raise NothingToGradeError(f"carcass(es) not in the store: {', '.join(missing)}")
        idx = [pos[c] for c in dict.fromkeys(carcass_ids)]
        cols = {k: [v[i] for i in idx] for k, v in cols.items()}
        origin = [origin[i] for i in idx]
    grades = grade_carcasses(cols)
    records = grades.records()
    halal = _halal_index(store)
    weighings = _weighings(store)
    for rec, rid in zip(records, origin, strict=True):
        rec["carcass_record"] = rid
        rec["halal"] = halal_link(halal.get(rec["carcass_id"]))
        _weighing_link(rec, weighings.get(rec["carcass_id"]))
    return CarcassGrading(records, grades.scheme_refs(), sorted(set(origin)))


def grade_store(
    store: Store, carcass_ids: Sequence[str] | None = None, *, record: bool = True
) -> tuple[list[dict[str, Any]], str | None]:
    """Grade the stored carcasses (all, or ``carcass_ids``) and record the result.

    Returns the per-carcass records (with the carcass, halal and weighing record digests)
    and the digest of the ``meat-grades`` record (None when ``record`` is false).
    """
    graded = grade_carcass_records(store, carcass_ids)
    return graded.records, graded.record(store) if record else None


def _row(cols: dict[str, list[Any]], i: int) -> dict[str, Any]:
    return {k: v[i] for k, v in cols.items()}


def trace(store: Store, ident: str, public_key: Any = None) -> dict[str, Any]:
    """The chains animal -> slaughter -> carcass -> lot -> certificate for an id.

    ``ident`` may be an animal id, a carcass id, a lot id or a certificate number (of the
    certification body); ``matched`` says which. One chain per carcass involved.

    With the lab's ``public_key`` the revocations that decide which certificate a chain
    ends in must each be signed by it, and so must every carcass certificate of the
    store (a record that is not is :class:`~fibergrade.errors.StoreCorruptError`);
    ``signatures_checked`` says whether they were. Without it they are read as stored.
    """
    cols, origin = load_carcasses(store)
    halal = _halal_index(store)
    ids = cols.get("carcass_id", [])
    matched: list[str] = []
    wanted: list[str] = []
    for key, kind in (("carcass_id", "carcass"), ("animal_id", "animal"), ("lot_id", "lot")):
        hits = [ids[i] for i, v in enumerate(cols.get(key, [])) if v == ident]
        hits += [c for c, (_, r) in halal.items() if r[key] == ident]
        if hits:
            matched.append(kind)
            wanted.extend(hits)
    cert_hits = [c for c, (_, r) in halal.items() if r["certificate_number"] == ident]
    if cert_hits:
        matched.append("halal certificate")
        wanted.extend(cert_hits)
    from fibergrade.meat.certificates import (
        certificate_links,
        certificate_note,
        meat_certificates,
    )
    from fibergrade.revocation import revocation_entries

    certificates = meat_certificates(store)  # read once: for the id and for every chain
    if public_key is not None:
        from fibergrade.audit import AuditLog

        AuditLog(store.root).check_lab_key(public_key)  # another lab's key: said so first
        _check_certificates(store, certificates, public_key)
    ours = [
        env["certificate"]["carcass"]["carcass_id"]
        for env in certificates
        if env["certificate"]["certificate_number"] == ident
    ]
    if ours:  # the number the chain's last link shows
        matched.append("carcass certificate")
        wanted.extend(ours)
    if not wanted:
        raise TraceNotFoundError(
            f"{ident!r} is no animal, carcass, carcass lot, halal certificate or carcass "
            f"certificate in the store {store.root} (fibre lots and their FG- certificates: "
            "see `fibergrade show LOT` and `fibergrade verify`)"
        )
    grades = {}
    for gid, g in store.results(GRADES_KIND):  # latest grade wins
        for rec in g["carcasses"]:
            grades[rec["carcass_id"]] = gid
    weighings = _weighings(store)
    pos = {c: i for i, c in enumerate(ids)}
    lot_members: dict[str, list[str]] = {}
    for i, lot in enumerate(cols.get("lot_id", [])):
        lot_members.setdefault(lot, []).append(_digest(_row(cols, i)))
    chains = [
        _chain(c, cols, pos, origin, halal, grades, weighings, lot_members)
        for c in dict.fromkeys(wanted)
    ]
    links = certificate_links(
        certificates, {e["certificate_number"]: e for e in revocation_entries(store, public_key)}
    )
    notes = []
    for chain in chains:  # the last link: the carcass's certificate, when one was issued
        link = links.get(chain[2].get("id"))
        if link is not None:
            chain[-1] = link
            if (note := certificate_note(ident, link)) is not None:
                notes.append(note)
    return {
        "id": ident,
        "matched": matched,
        "chains": chains,
        "notes": notes,
        "signatures_checked": public_key is not None,
    }


def _check_certificates(store: Store, certificates: list[dict[str, Any]], public_key: Any) -> None:
    """Every stored carcass certificate must verify with the lab's ``public_key``: one that
    does not was not issued by this lab, and would decide what a chain ends in."""
    from fibergrade.certificates import CertificateError, check_signature

    for env in certificates:
        number = env["certificate"].get("certificate_number")
        try:
            check_signature(env, public_key, str(number))
        except CertificateError as exc:
            raise StoreCorruptError(
                f"{store.root}: the stored carcass certificate {number} does not verify with "
                f"the lab key ({exc})"
            ) from None


def _chain(
    cid: str,
    cols: dict[str, list[Any]],
    pos: dict[str, int],
    origin: list[str],
    halal: dict[str, tuple[str, dict[str, Any]]],
    grades: dict[str, str],
    weighings: dict[str, tuple[str, dict[str, Any]]],
    lot_members: dict[str, list[str]],
) -> list[dict[str, Any]]:
    i = pos.get(cid)
    row = _row(cols, i) if i is not None else None
    h = halal.get(cid)
    animal_id = row["animal_id"] if row else h[1]["animal_id"] if h else None
    lot_id = row["lot_id"] if row else h[1]["lot_id"] if h else None
    animal = {"link": "animal", "id": animal_id}
    if h:
        r = h[1]
        animal |= {"species": r["species"], "ante_mortem": r["ante_mortem"]}
        facts = ("animal_id", "species", "category", "vendor_declaration", "ante_mortem")
        animal |= {"record": h[0], "digest": _digest({k: r[k] for k in facts})}
    elif row:
        facts = ("animal_id", "sex", "ssc")
        animal |= {"record": origin[i], "digest": _digest({k: row[k] for k in facts})}
    if h:
        r = h[1]
        slaughter = {
            "link": "slaughter",
            "id": cid,
            "record": h[0],
            "digest": _digest(r),
            "slaughtered_at": r["slaughtered_at"],
            "establishment_approval": r["establishment_approval"],
            "slaughterman": f"{r['slaughterman_id']} ({r['slaughterman_registration']})",
            "checker": f"{r['checker_id']} ({r['checker_registration']})",
            "stun": r["stun"],
            "alive_at_cut": r["alive_at_cut"],
            "vendor_declaration": r["vendor_declaration"],
            "ante_mortem": r["ante_mortem"],
            "post_mortem": r["post_mortem"],
            "halal_problems": halal_problems(r),
            "certification_body": r["certification_body"],
            "halal_certificate": r["certificate_number"],
            "halal_certificate_expiry": r["certificate_expiry"],
        }
    else:
        slaughter = {"link": "slaughter", "status": "no slaughter record", "digest": None}
    if row:
        w = weighings.get(cid)
        carcass = {
            "link": "carcass",
            "id": cid,
            "record": origin[i],
            "digest": _digest(row),
            "hscw_kg": row["hscw_kg"],
            "weighed_at": row["weighed_at"],
            "weighing_record": w[0] if w else None,
            "grade_record": grades.get(cid),
        }
    else:
        carcass = {"link": "carcass", "id": cid, "status": "no carcass record", "digest": None}
    members = lot_members.get(lot_id or "", [])
    lot = {
        "link": "lot",
        "id": lot_id,
        "carcasses": len(members),
        "digest": _digest(sorted(members)) if members else None,
    }
    certificate = {"link": "certificate", "status": NO_CERTIFICATE, "digest": None}
    return [animal, slaughter, carcass, lot, certificate]
