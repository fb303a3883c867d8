"""The append-only, hash-chained audit log kept in the store.

``<store>/audit/log.jsonl`` holds one JSON object per line::

    {"seq": 7, "time": "...", "actor": "...", "action": "grade", "subject": "...",
     "payload_digest": "<sha256 of the canonical JSON of what the step produced>",
     "prev": "<hash of entry 6>", "hash": "<sha256 of this entry without 'hash'>"}

The first entry's ``prev`` is 64 zeros. Each entry's ``hash`` covers every other field,
so an edited entry no longer matches its hash; a deleted, inserted or reordered entry breaks
the ``seq`` sequence and the ``prev`` link of the entry after it.

The store logs every step that writes something: each new segment (``import``) and each new
result record (grading, calibration, QC, screening, override, certificate, revocation,
weighing: ``fibergrade.store.AUDIT_ACTION``), right after its commit; the entry's
``payload_digest`` is then the record's own name. A crash between a commit and its log entry
leaves a committed item without an entry, never an entry without its item.

``<store>/audit/head.json`` names the last entry (seq and hash) and is rewritten with every
append, so a log cut short is found by comparing the two. At checkpoints (certificate
issue, revocation, or ``fibergrade audit checkpoint``) the head is signed with the lab's
Ed25519 key and the signature is appended as an entry of its own (``action =
"checkpoint"``). A truncation that also rolls ``head.json`` back to an earlier state cannot
be seen from the store alone; it is caught against anything that recorded a later position
of the log: signed checkpoints, and every certificate, which carries the log position at
issue.

Appends take an exclusive ``fcntl`` lock on ``audit/.lock`` and ``fsync`` the log before the
head is replaced (write to a temporary file, fsync, rename).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import fcntl
import getpass
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fibergrade.errors import FibergradeError

GENESIS = "0" * 64
ACTIONS = (
    "import",
    "acquire",
    "calibrate",
    "qc",
    "grade",
    "screen",
    "override",
    "certify",
    "revoke",
    "key",
    "checkpoint",
    "record",
    "repair",
)


class AuditError(FibergradeError):
    """The audit log cannot be read or written."""

    exit_code = 3


class AuditTamperError(AuditError):
    """The audit log fails verification; names the first bad entry."""

    def __init__(self, line: int | None, seq: int | None, message: str) -> None:
        self.line = line
        self.seq = seq
        where = f"audit log line {line}" if line is not None else "audit log"
        if seq is not None:
            where += f" (entry {seq})"
        super().__init__(f"{where}: {message}")


def canonical_json(obj: Any) -> bytes:
    """The one byte representation that digests and signatures are computed over."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def digest(obj: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of ``obj``."""
    return hashlib.sha256(canonical_json(obj)).hexdigest()


def entry_hash(entry: dict[str, Any]) -> str:
    return digest({k: v for k, v in entry.items() if k != "hash"})


def default_actor() -> str:
    """Who is acting: $FIBERGRADE_ACTOR, else the login name."""
    actor = os.environ.get("FIBERGRADE_ACTOR")
    if actor:
        return actor
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def checkpoint_message(seq: int, head_hash: str) -> bytes:
    """The bytes a checkpoint signature covers."""
    return f"fibergrade-audit-checkpoint:{seq}:{head_hash}".encode("ascii")


@dataclass(frozen=True)
class Position:
    """A position in the log: the last entry's sequence number and hash."""

    seq: int
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash}


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (canonical JSON never writes it)")


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"key {k!r} appears twice")
        out[k] = v
    return out


def strict_loads(data: bytes | str) -> Any:
    """JSON as this software writes it: each key once per object (with two
    ``"certificate"`` or ``"subject"`` keys this reader would take the last, another the
    first) and no NaN or Infinity. ``ValueError`` otherwise."""
    return json.loads(data, parse_constant=_no_constant, object_pairs_hook=_no_repeats)


def parse_entry(raw: bytes) -> dict[str, Any]:
    """One log line as the log writes it, or ``ValueError``: a JSON object, each key once,
    in canonical form byte for byte (the entry's hash covers the parsed entry, so a line
    written any other way, say with a second ``"subject"`` that a reader could take, is
    not an entry this software wrote)."""
    entry = strict_loads(raw)
    if not isinstance(entry, dict):
        raise ValueError("not a JSON object")
    if canonical_json(entry) != raw.rstrip(b"\n"):
        raise ValueError("not in the canonical form the log writes (reformatted or edited)")
    return entry


#: what :meth:`AuditLog.logged_results` has read of each log: (inode, bytes read, kinds,
#: payload digests)
_LOGGED: dict[str, tuple[int, int, dict[str, set[str]], set[str]]] = {}
#: a result kind's name (see fibergrade.store); an import's subject is a file name, which
#: could look like "<kind> <sha256>" but never ends in its own payload's digest
_KIND = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class AuditLog:
    """The audit log of one store directory."""

    def __init__(self, store_root: str | Path) -> None:
        self.dir = Path(store_root) / "audit"
        self.path = self.dir / "log.jsonl"
        self.head_path = self.dir / "head.json"

    # -- writing --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _last(self) -> tuple[int, str]:
        """Sequence number and hash of the last entry (-1 and GENESIS when empty)."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return -1, GENESIS
        with open(self.path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            block = min(size, 65536)
            fh.seek(size - block)
            tail = fh.read(block).rstrip(b"\n").rsplit(b"\n", 1)[-1]
        try:
            last = json.loads(tail)
            return int(last["seq"]), str(last["hash"])
        except (ValueError, KeyError, TypeError) as exc:
            raise AuditError(f"{self.path}: the last entry is unreadable ({exc})") from exc

    def append(
        self,
        action: str,
        subject: str,
        payload: Any = None,
        *,
        actor: str | None = None,
        extra: dict[str, Any] | None = None,
        payload_digest: str | None = None,
    ) -> dict[str, Any]:
        """Append one entry and return it. ``payload`` is digested, not stored.

        A caller that already holds :func:`digest` of the payload (the store names a result
        record by exactly that) passes it as ``payload_digest`` instead, so that a large
        payload is not serialised twice (a grade result of 15,000 lots: 0.5 s).
        """
        if action not in ACTIONS:
            raise AuditError(f"unknown audit action {action!r}; known: {', '.join(ACTIONS)}")
        if payload_digest is None and payload is not None:
            payload_digest = digest(payload)  # before taking the lock: it can take a while
        with self._locked():
            self._repair_torn_tail()
            return self._write_entry(action, subject, payload_digest, actor, extra)

    def _repair_torn_tail(self) -> None:
        """Remove a torn last line (lock held). Every entry is written with its line break
        in one ``write``; a last line without one is an append cut short (power loss,
        full disk), which no later append could follow. It is cut off and the cut is
        logged (action ``repair``, the removed bytes' SHA-256) right after. A whole entry
        that follows its predecessor and lost only its line break is kept and given it
        back; only bytes that never were an entry are removed."""
        try:
            size = os.path.getsize(self.path)
        except FileNotFoundError:
            return
        if size == 0:
            return
        with open(self.path, "rb+") as fh:
            fh.seek(max(0, size - 65536))
            tail = fh.read()
            if tail.endswith(b"\n"):
                return
            cut = tail.rfind(b"\n")
            if cut < 0 and size > len(tail):
                raise AuditError(f"{self.path}: the last line is torn and over 64 KiB long")
            keep = size - len(tail) + cut + 1
            removed = tail[cut + 1 :]
            try:
                whole = parse_entry(removed)
                before = None
                if keep > 0:  # the whole line before it (its end is at keep - 1)
                    fh.seek(max(0, keep - 1 - 65536))
                    before = parse_entry(fh.read(keep - 1 - fh.tell()).rsplit(b"\n", 1)[-1])
                complete = entry_hash(whole) == whole.get("hash") and (
                    (whole.get("seq"), whole.get("prev")) == (0, GENESIS)
                    if before is None
                    else (whole.get("seq"), whole.get("prev"))
                    == (before.get("seq", -2) + 1, before.get("hash"))
                )
            except (ValueError, TypeError):
                complete = False
            if complete:  # a whole entry that lost only its line break: give it back
                fh.seek(0, os.SEEK_END)
                fh.write(b"\n")
                fh.flush()
                os.fsync(fh.fileno())
                return
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
        self._write_entry(
            "repair",
            f"torn last line removed ({len(removed)} bytes)",
            hashlib.sha256(removed).hexdigest(),
        )

    def _write_entry(
        self,
        action: str,
        subject: str,
        payload_digest: str | None,
        actor: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Chain one entry after the last, append its line and move the head to it (lock
        held); the entry is returned."""
        seq, prev = self._last()
        entry: dict[str, Any] = {
            "seq": seq + 1,
            "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds"),
            "actor": actor or default_actor(),
            "action": action,
            "subject": subject,
            "payload_digest": payload_digest,
            "prev": prev,
        }
        if extra:
            entry.update(extra)
        entry["hash"] = entry_hash(entry)
        line = canonical_json(entry) + b"\n"
        new = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            done = 0
            while done < len(line):  # a short write (full disk) raises or goes on
                done += os.write(fd, line[done:])
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:  # a new file's name is durable once its folder is synced
            dfd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        self._write_head(Position(entry["seq"], entry["hash"]))
        return entry

    def _write_head(self, pos: Position) -> None:
        tmp = self.dir / f".head.tmp-{os.getpid()}"
        with open(tmp, "wb") as fh:
            fh.write(canonical_json(pos.to_dict()))
            fh.flush()
            os.fsync(fh.fileno())
        # not followed by a sync of the folder: a head.json that lags after a power loss
        # reads as a log longer than its head, which verify takes for the crash it is
        os.replace(tmp, self.head_path)

    def check_lab_key(self, public_key: Any) -> None:
        """Refuse a key that signed none of the log's checkpoints (when it has any): what
        another key signed (a checkpoint, a certificate) would leave every later check
        against the lab's public key failing, and the log cannot be undone. A checkpoint
        counts only by its signature: its fingerprint field is text anyone could write.
        Key rotation is not supported."""
        from fibergrade.keys import fingerprint

        with self._locked():
            self._repair_torn_tail()  # a torn last line would make the log unreadable
        mine = fingerprint(public_key)
        entries = self.entries()
        checkpoints = [e for e in entries if e.get("action") == "checkpoint"]
        for e in checkpoints:  # a checkpoint this key really signed: the lab's key
            try:
                _check_checkpoint(e, entries, 0, public_key)  # (line: for messages only)
                return
            except (AuditTamperError, KeyError, TypeError, IndexError):
                continue  # a fingerprint anyone could write; only a signature counts
        if checkpoints:
            lab = str(checkpoints[-1].get("key_fingerprint"))
            raise AuditError(
                f"this store's audit log is signed with key {lab[:16]}..., and no checkpoint "
                f"in it is signed by the key given ({mine[:16]}...): it is not the lab key, "
                "so it signs nothing here"
            )

    def checkpoint(self, private_key: Any, *, actor: str | None = None) -> dict[str, Any]:
        """Sign the current head with the lab key and append the signature."""
        self.check_lab_key(private_key.public_key())  # repairs a torn last line first
        seq, head = self._last()
        if seq < 0:
            raise AuditError("the audit log is empty: nothing to checkpoint")
        sig = private_key.sign(checkpoint_message(seq, head))
        from fibergrade.keys import fingerprint

        return self.append(
            "checkpoint",
            f"{seq}:{head}",
            actor=actor,
            extra={
                "signed_seq": seq,
                "signed_hash": head,
                "key_fingerprint": fingerprint(private_key.public_key()),
                "signature": base64.b64encode(sig).decode("ascii"),
            },
        )

    def position(self) -> Position:
        with self._locked():
            self._repair_torn_tail()
            seq, h = self._last()
        return Position(seq, h)

    # -- reading and verifying ------------------------------------------------------------

    def entries(self) -> list[dict[str, Any]]:
        """Every entry, parsed (no checks; see :meth:`verify`)."""
        if not self.path.exists():
            return []
        out = []
        with open(self.path, "rb") as fh:
            for i, raw in enumerate(fh, start=1):
                if not raw.strip():
                    raise AuditTamperError(i, None, "an empty line (no entry is ever blank)")
                try:
                    out.append(parse_entry(raw))
                except ValueError as exc:
                    raise AuditTamperError(i, None, f"not a JSON entry ({exc})") from exc
        return out

    def logged_results(self) -> dict[str, set[str]]:
        """Result kind -> the SHA-256 of every result record the log names (the store logs
        each one it writes, subject ``"<kind> <sha256>"``). Read incrementally: the log only
        grows, so a second call in one process parses only the entries appended since."""
        return self._scan()[0]

    def logged_payloads(self) -> set[str]:
        """The payload digest of every entry (read incrementally, as
        :meth:`logged_results`): an import's entry names its segment this way."""
        return self._scan()[1]

    def _scan(self) -> tuple[dict[str, set[str]], set[str]]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return {}, set()
        key = str(self.path)
        ino, offset, kinds, payloads = _LOGGED.get(key, (st.st_ino, 0, {}, set()))
        if ino != st.st_ino or st.st_size < offset:  # another log under this path
            offset, kinds, payloads = 0, {}, set()
        if st.st_size > offset:
            with open(self.path, "rb") as fh:
                fh.seek(offset)
                chunk = fh.read(st.st_size - offset)
            end = chunk.rfind(b"\n") + 1  # a line still being written is read next time
            for line in chunk[:end].splitlines():
                try:
                    e = parse_entry(line)
                except ValueError:
                    continue  # not an entry: counts for nothing (audit verify names it)
                pd, subject = e.get("payload_digest"), e.get("subject")
                if not isinstance(pd, str):
                    continue
                payloads.add(pd)
                if isinstance(subject, str):
                    kind, _, named = subject.partition(" ")
                    # a result record's entry: subject "<kind> <sha256>", payload the same
                    if named == pd and _KIND.fullmatch(kind):
                        kinds.setdefault(kind, set()).add(pd)
            offset += end
        _LOGGED[key] = (st.st_ino, offset, kinds, payloads)
        return kinds, payloads

    def verify(self, public_key: Any | None = None) -> VerifyReport:
        """Check the chain, the head and (given the lab's public key) every checkpoint.

        Raises :class:`AuditTamperError` naming the first bad entry.
        """
        entries = self.entries()
        prev = GENESIS
        checkpoints = 0
        last_checkpoint = -1
        for line, e in enumerate(entries, start=1):
            seq = e.get("seq") if isinstance(e, dict) else None
            if not isinstance(e, dict) or "hash" not in e:
                raise AuditTamperError(line, seq, "entry has no hash")
            if seq != line - 1:
                raise AuditTamperError(
                    line,
                    seq,
                    f"sequence number {seq} where {line - 1} was expected: an entry was "
                    "deleted, inserted or moved",
                )
            if entry_hash(e) != e["hash"]:
                raise AuditTamperError(line, seq, "entry was edited: its hash does not match")
            if e.get("prev") != prev:
                raise AuditTamperError(
                    line, seq, "chain broken: 'prev' is not the hash of the entry before it"
                )
            if e.get("action") == "checkpoint":
                checkpoints += 1
                # what a checkpoint covers is the entry it signs, not its own place: a copy
                # of an old checkpoint appended later covers nothing new
                signed = e.get("signed_seq")
                if isinstance(signed, int) and not isinstance(signed, bool) and signed < seq:
                    last_checkpoint = max(last_checkpoint, signed)
                _check_checkpoint(e, entries, line, public_key)  # signature only with a key
            prev = e["hash"]
        head = self._read_head()
        n = len(entries)
        if head is None:
            if n:
                raise AuditTamperError(None, None, "head.json is missing: cannot tell truncation")
        elif head.seq > n - 1:
            raise AuditTamperError(
                n,
                n - 1 if n else None,
                f"log truncated: the head names entry {head.seq} but the log ends at entry {n - 1}",
            )
        elif head.seq >= 0 and entries[head.seq].get("hash") != head.hash:
            raise AuditTamperError(
                head.seq + 1, head.seq, "entry differs from the one head.json names"
            )
        # a log longer than its head is what a crash between an append and the head update
        # leaves; the entries themselves were checked above
        results = self.dir.parent / "results"
        for kind, digests in sorted(self.logged_results().items()):
            gone = sorted(d for d in digests if not (results / kind / f"{d}.json").exists())
            if gone:
                raise AuditTamperError(
                    None,
                    None,
                    f"{len(gone)} {kind} record(s) the log records are missing from "
                    f"{results / kind} (first: {gone[0]}.json): deleted after they were logged",
                )
        return VerifyReport(
            entries=n,
            checkpoints=checkpoints,
            # a checkpoint entry is vouched for by its own signature
            unanchored=sum(
                1 for e in entries[last_checkpoint + 1 :] if e.get("action") != "checkpoint"
            ),
            head=Position(n - 1, prev) if n else Position(-1, GENESIS),
            signatures_checked=public_key is not None,
        )

    def check_position(self, pos: Position, entries: list[dict[str, Any]] | None = None) -> None:
        """Raise unless the log contains entry ``pos.seq`` with hash ``pos.hash``.

        ``entries``: the log as already read (a batch of checks reads it once).
        """
        entries = self.entries() if entries is None else entries
        if pos.seq >= len(entries):
            raise AuditTamperError(
                None,
                pos.seq,
                f"the log ends at entry {len(entries) - 1} but a document recorded entry "
                f"{pos.seq}: the log was truncated",
            )
        if entries[pos.seq].get("hash") != pos.hash:
            raise AuditTamperError(
                pos.seq + 1, pos.seq, "entry differs from the one a document recorded"
            )

    def _read_head(self) -> Position | None:
        if not self.head_path.exists():
            return None
        try:
            d = json.loads(self.head_path.read_bytes())
            return Position(int(d["seq"]), str(d["hash"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise AuditTamperError(None, None, f"head.json is unreadable ({exc})") from exc


@dataclass(frozen=True)
class VerifyReport:
    entries: int
    checkpoints: int
    unanchored: int  # entries after the last entry a checkpoint signs
    head: Position
    signatures_checked: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "entries": self.entries,
            "checkpoints": self.checkpoints,
            "entries_after_last_checkpoint": self.unanchored,
            "head": self.head.to_dict(),
            "signatures_checked": self.signatures_checked,
        }


def _check_checkpoint(
    e: dict[str, Any], entries: list[dict[str, Any]], line: int, key: Any | None
) -> None:
    from cryptography.exceptions import InvalidSignature

    from fibergrade.keys import fingerprint

    seq = e["seq"]
    signed_seq = e.get("signed_seq")
    if not isinstance(signed_seq, int) or not (0 <= signed_seq < seq):
        raise AuditTamperError(line, seq, "checkpoint names no earlier entry")
    if entries[signed_seq].get("hash") != e.get("signed_hash"):
        raise AuditTamperError(line, seq, f"checkpoint signs a different entry {signed_seq}")
    if key is None:
        return
    if e.get("key_fingerprint") != fingerprint(key):
        raise AuditTamperError(line, seq, "checkpoint was signed with another key")
    try:
        key.verify(
            base64.b64decode(e.get("signature", ""), validate=True),
            checkpoint_message(signed_seq, e["signed_hash"]),
        )
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise AuditTamperError(line, seq, "checkpoint signature does not verify") from exc
