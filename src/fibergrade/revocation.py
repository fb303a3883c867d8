"""Revoking certificates, and the signed revocation list that also lists supersessions.

A revocation (:func:`revoke`) is a record of schema ``fibergrade-revocation-record/1``
(:data:`REVOCATION_RECORD_SCHEMA`: the certificate's number and SHA-256, the reason and
when), signed with the lab's Ed25519 key and kept in the store, which logs it in the audit
log; a record the lab key did not sign cannot decide whether a certificate stands
(:func:`revocation_entries`). A certificate a reissue superseded no longer stands either,
for good: revoking the reissue does not put it back (:func:`supersession_entries`).

The revocation list (``STORE/revocations.json``, or a file given with ``--out``) is a signed
document of schema ``fibergrade-revocations/1``
(:data:`~fibergrade.certificates.REVOCATION_SCHEMA`) listing every revocation
(``entries``) and every supersession (``supersessions``). Each revocation writes it, and
each reissue writes the store's own again (:func:`relist_after_reissue`), so that an
auditor without the store can tell that a certificate no longer stands
(``verify --revocations``, :mod:`fibergrade.verification`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fibergrade.audit import AuditLog, digest
from fibergrade.certificates import (
    REVOCATION_SCHEMA,
    CertificateError,
    Issued,
    OutputPathError,
    all_certificates,
    check_signature,
    json_bytes,
    now,
    require_reason,
    sign,
    standing_certificate,
    subject_of,
    superseded_numbers,
)
from fibergrade.keys import fingerprint
from fibergrade.safe_files import replace_with, temp_beside, write_new
from fibergrade.store import under_issue_lock


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
        "revoked_at": now(),
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
    subject = subject_of(doc)
    same = [e for e in certificates if subject_of(e["certificate"]) == subject]
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
    (:class:`~fibergrade.certificates.OutputPathError`): a folder, or a place where no file
    can be created (a probe file under a random name is created there and removed)."""
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
        replace_with(target, json_bytes(env))
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
        "issued_at": now(),
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
