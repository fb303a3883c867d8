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
head is replaced (write to a temporary file, fsync, rename). So the head never names an entry
the log lacks: before chaining an entry, a writer checks that the log holds the entry the
head names, with its hash (the head may lag, by what a crash between an append and its head
update cut off), and refuses otherwise (:class:`AuditTamperError`), rather than starting a
new chain over a deleted or emptied log or appending after a cut. Readers of which records
the log names apply the same check, and refuse a whole line that is not an entry instead of
skipping it (a torn last line, still being written, is left for the next read).
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
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fibergrade.errors import StoreError
from fibergrade.safe_files import open_lock, replace_with, sync_dir

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


class AuditError(StoreError):
    """The audit log cannot be read or written. A :class:`~fibergrade.errors.StoreError`
    (exit code 3): the log is the part of the store that says which records count, so what
    handles a store that cannot be read handles this too."""

    exit_code = 3


class AuditTamperError(AuditError):
    """The audit log fails verification; names the first bad entry (``line``, 1-based, and
    ``seq``, when known) and the file (``path``)."""

    def __init__(
        self, line: int | None, seq: int | None, message: str, *, path: str | Path | None = None
    ) -> None:
        self.line = line
        self.seq = seq
        self.path = None if path is None else str(path)
        self.message = message
        where = f"audit log line {line}" if line is not None else "audit log"
        if seq is not None:
            where += f" (entry {seq})"
        text = f"{where}: {message}"
        if self.path is not None and self.path not in message:
            text += f" [{self.path}]"
        super().__init__(text)


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
    try:
        return json.loads(data, parse_constant=_no_constant, object_pairs_hook=_no_repeats)
    except RecursionError:
        raise ValueError("nested too deeply (no record this software writes is)") from None


def parse_entry(raw: bytes) -> dict[str, Any]:
    """One log line as the log writes it, or ``ValueError``: a JSON object, each key once,
    in canonical form byte for byte (the entry's hash covers the parsed entry, so a line
    written any other way, say with a second ``"subject"`` that a reader could take, is
    not an entry this software wrote)."""
    entry = strict_loads(raw)
    if not isinstance(entry, dict):
        raise ValueError("not a JSON object")
    try:
        form = canonical_json(entry)
    except RecursionError:
        raise ValueError("nested too deeply (no entry the log writes is)") from None
    if form != raw.rstrip(b"\n"):
        raise ValueError("not in the canonical form the log writes (reformatted or edited)")
    return entry


@dataclass
class _Scanned:
    """What :meth:`AuditLog._scan` has read of one log."""

    key: tuple[Any, Any]  # stat keys of (head.json, log.jsonl) when this was read
    ino: int  # of log.jsonl
    offset: int  # bytes read (whole lines only)
    lines: int  # entries read: the last one is entry ``lines - 1``
    recent: dict[int, str]  # seq -> hash of the last entries read (at least _RECENT)
    kinds: dict[str, set[str]]  # result kind -> digests of the records the log names
    payloads: set[str]  # every entry's payload digest
    #: segment digest -> (source file name, lot ids) of every import entry that names them
    imports: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    last_line: bytes = b""  # the last whole line read, with its line break
    #: result record digest -> sequence number of the entry that first logged it
    logged_seq: dict[str, int] = field(default_factory=dict)


#: what :meth:`AuditLog._scan` has read of each log, by path
_LOGGED: dict[str, _Scanned] = {}
#: how many of the last entries' hashes a scan keeps to check head.json against (a head
#: lags its log only by the appends a crash or a power loss cut off before their head update)
_RECENT = 1024
#: a result kind's name (see fibergrade.store); an import's subject is a file name, which
#: could look like "<kind> <sha256>" but never ends in its own payload's digest
_KIND = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _stat_key(path: Path) -> tuple[int, int, int] | None:
    """(inode, mtime, size) of ``path``, None when it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AuditError(f"{path}: cannot read: {_why(exc)}") from exc
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _position_of(entry: dict[str, Any]) -> Position:
    """An entry's (or head.json's) seq and hash; ``ValueError`` when they are not what the
    log writes (a whole number from 0; 64 lowercase hex digits)."""
    seq, h = entry.get("seq"), entry.get("hash")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise ValueError(f"'seq' is {seq!r}, expected a whole number from 0")
    if not isinstance(h, str) or not _HEX64.fullmatch(h):
        raise ValueError(f"'hash' is {h!r}, expected 64 lowercase hex digits")
    return Position(seq, h)


def _tail_lines(fh: Any, end: int, count: int) -> list[tuple[int, bytes]]:
    """The last ``count`` lines (fewer when the file has fewer) of the first ``end`` bytes
    of ``fh``, ``end`` being just past a line break; last first, each as (offset of its
    first byte, its bytes without the line break). Reads backwards in 64 KiB blocks."""
    out: list[tuple[int, bytes]] = []
    if end <= 0:
        return out
    pos = end - 1  # the last line break ends the last line; buf is the file's [pos, ...)
    buf = b""
    while len(out) < count:
        cut = buf.rfind(b"\n")
        if cut >= 0:
            out.append((pos + cut + 1, buf[cut + 1 :]))
            buf = buf[:cut]
        elif pos > 0:
            step = min(pos, 65536)
            pos -= step
            fh.seek(pos)
            buf = fh.read(step) + buf
        else:
            out.append((0, buf))
            break
    return out


def _after_last_break(fh: Any, end: int) -> int:
    """The offset just past the last line break in the first ``end`` bytes of ``fh`` (0
    when there is none), read backwards in 64 KiB blocks."""
    pos = end
    while pos > 0:
        step = min(pos, 65536)
        pos -= step
        fh.seek(pos)
        cut = fh.read(step).rfind(b"\n")
        if cut >= 0:
            return pos + cut + 1
    return 0


def _line_number(fh: Any, start: int) -> int:
    """The 1-based number of the line starting at byte ``start`` (for messages only)."""
    fh.seek(0)
    n = done = 0
    while done < start:
        block = fh.read(min(1 << 20, start - done))
        if not block:
            break
        n += block.count(b"\n")
        done += len(block)
    return n + 1


class AuditLog:
    """The audit log of one store directory."""

    def __init__(self, store_root: str | Path) -> None:
        self.dir = Path(store_root) / "audit"
        self.path = self.dir / "log.jsonl"
        self.head_path = self.dir / "head.json"

    # -- writing --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        lock = self.dir / ".lock"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = open_lock(lock)
        except OSError as exc:
            raise AuditError(f"{lock}: cannot open the audit log's lock: {_why(exc)}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _last(self) -> tuple[int, str]:
        """Sequence number and hash of the last entry (-1 and GENESIS when the log is
        empty), checked against head.json (lock held, torn last line repaired): an entry
        chained after a log that disagrees with its head would seal the damage (a new
        chain over a deleted log, an append after a cut), so that is
        :class:`AuditTamperError` (see :meth:`_check_head`)."""
        try:
            size = os.path.getsize(self.path)
        except FileNotFoundError:
            size = 0
        except OSError as exc:
            raise AuditError(f"{self.path}: cannot read the audit log: {_why(exc)}") from exc
        pos = self._check_head(size)
        return pos.seq, pos.hash

    def _check_head(self, end: int) -> Position:
        """The last entry of the log's first ``end`` bytes (whole lines; 0: none), which
        must agree with head.json: the head names that entry or, when a crash (or a power
        loss) came between an append and its head update, an earlier one with the hash the
        log holds for it; without head.json the log may hold only its first entry (a crash
        in the log's very first append, before the head was first written). The last
        entry must be an entry the log writes, hash included. :class:`AuditTamperError`
        names what disagrees: a log deleted, emptied or cut short while head.json remains,
        a last entry that is not the head's, a head that is gone."""
        head = self._read_head()
        if end <= 0:
            problem = self._head_problem(head, 0, lambda _seq: None)
            if problem is not None:
                raise problem
            return Position(-1, GENESIS)
        try:
            with open(self.path, "rb") as fh:
                ((start, raw),) = _tail_lines(fh, end, 1)
                last = self._entry_at(fh, start, raw)
                if head is None and start != 0:
                    raise self._headless("more than one line")

                def hash_at(seq: int) -> str:
                    if seq == last.seq:
                        return last.hash
                    back = _tail_lines(fh, end, last.seq - seq + 1)
                    at, line = back[-1]
                    pos = self._entry_at(fh, at, line)
                    if len(back) < last.seq - seq + 1 or pos.seq != seq:
                        raise AuditTamperError(
                            _line_number(fh, at),
                            pos.seq,
                            f"sequence number {pos.seq} where {seq} was expected (counting "
                            f"back from the last entry, {last.seq}): an entry was deleted, "
                            "inserted or moved",
                            path=self.path,
                        )
                    return pos.hash

                problem = self._head_problem(head, last.seq + 1, hash_at)
        except OSError as exc:
            raise AuditError(f"{self.path}: cannot read the audit log: {_why(exc)}") from exc
        if problem is not None:
            raise problem
        return last

    def _entry_at(self, fh: Any, start: int, raw: bytes) -> Position:
        """The position of the entry ``raw`` (the line at byte ``start``), which must be an
        entry the log writes with the hash it carries; else :class:`AuditTamperError`."""
        try:
            entry = parse_entry(raw)
            pos = _position_of(entry)
            if entry_hash(entry) != pos.hash:
                raise ValueError("entry was edited: its hash does not match")
        except (ValueError, TypeError) as exc:
            seq = None
            with contextlib.suppress(Exception):
                seq = _position_of(json.loads(raw)).seq
            raise AuditTamperError(
                _line_number(fh, start),
                seq,
                f"not an entry the log writes ({exc}); nothing is appended after it",
                path=self.path,
            ) from exc
        return pos

    def _gone(self, head: Position) -> AuditTamperError:
        what = "is missing" if not self.path.exists() else "holds no whole entry"
        return AuditTamperError(
            None,
            None,
            f"{self.path} {what}, but {self.head_path} names entry {head.seq}: the log was "
            "deleted, emptied or cut short (restore it from a backup; nothing is written "
            "over it)",
            path=self.path,
        )

    def _headless(self, held: str) -> AuditTamperError:
        return AuditTamperError(
            None,
            None,
            f"{self.head_path} is missing, but the log holds {held}: without it a log cut "
            "short cannot be told from a whole one (only a crash in the log's very first "
            "append leaves no head, and a log of one entry)",
            path=self.head_path,
        )

    def _head_problem(self, head: Position | None, n: int, hash_at: Any) -> AuditTamperError | None:
        """What is wrong, if anything, between head.json (``head``) and a log of ``n``
        entries numbered in order, ``hash_at(seq)`` giving an entry's hash (None when not
        at hand). The head is written after its entry (see :meth:`_write_entry`), so it
        may lag the log but never lead it."""
        if head is None:
            return self._headless(f"{n} entries") if n > 1 else None
        if n == 0:
            return self._gone(head)
        if head.seq > n - 1:
            return AuditTamperError(
                n,
                n - 1,
                f"log truncated: the head names entry {head.seq} but the log ends at entry "
                f"{n - 1} ({self.head_path} is written after each entry, never before)",
                path=self.path,
            )
        h = hash_at(head.seq)
        if h is not None and h != head.hash:
            return AuditTamperError(
                head.seq + 1,
                head.seq,
                f"entry differs from the one {self.head_path.name} names",
                path=self.path,
            )
        return None

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

        Refused (:class:`AuditTamperError`, nothing written) when the log disagrees with
        head.json (see :meth:`_check_head`).
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
        back; only bytes that never were an entry are removed. Nothing is cut from a log
        whose whole lines disagree with head.json (a log cut short mid-line is not an
        append cut short: :class:`AuditTamperError`)."""
        try:
            # never through a link: a log.jsonl planted as a link to another file would
            # have that file cut (truncate follows the name)
            fd = os.open(self.path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise AuditError(f"{self.path}: cannot read the audit log: {_why(exc)}") from exc
        try:
            st = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            raise AuditError(f"{self.path}: cannot read the audit log: {_why(exc)}") from exc
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise AuditError(f"{self.path}: the audit log is not a regular file")
        size = st.st_size
        if size == 0:
            os.close(fd)
            return
        try:
            with open(fd, "rb+") as fh:  # closes fd
                fh.seek(size - 1)
                if fh.read(1) == b"\n":
                    return
                keep = _after_last_break(fh, size)  # a torn line may be of any length
                fh.seek(keep)
                removed = fh.read(size - keep)
                try:
                    whole = parse_entry(removed)
                    before = None
                    if keep > 0:  # the whole line before it (its end is at keep - 1)
                        before = parse_entry(_tail_lines(fh, keep, 1)[0][1])
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
                # the head never names a torn line (it is written after its entry): the
                # whole lines before it must agree with the head, or this is no torn append
                self._check_head(keep)
                fh.truncate(keep)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise AuditError(f"{self.path}: cannot repair the audit log: {_why(exc)}") from exc
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
        held); the entry is returned. The log is written (and fsynced) first and head.json
        after it: a crash in between leaves a log one entry longer than its head, which
        :meth:`_check_head` and :meth:`verify` accept and the next append moves the head
        past."""
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
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            try:
                done = 0
                while done < len(line):  # a short write (full disk) raises or goes on
                    done += os.write(fd, line[done:])
                os.fsync(fd)
            finally:
                os.close(fd)
            if new:  # a new file's name is durable once its folder is synced
                sync_dir(self.dir)
        except OSError as exc:
            raise AuditError(f"{self.path}: cannot append to the audit log: {_why(exc)}") from exc
        self._write_head(Position(entry["seq"], entry["hash"]))
        return entry

    def _write_head(self, pos: Position) -> None:
        new = not self.head_path.exists()
        try:
            # written beside it under a new random name (never a planted link), fsynced,
            # renamed over it. A replaced head.json is not followed by a sync of the
            # folder: one that lags after a power loss reads as a log longer than its
            # head, which is accepted for the crash it is; the first one is, since a log
            # of more than one entry without a head is refused
            replace_with(self.head_path, canonical_json(pos.to_dict()), fsync=True)
            if new:
                sync_dir(self.dir)
        except OSError as exc:
            raise AuditError(f"{self.head_path}: cannot write the log's head: {_why(exc)}") from exc

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
        pos = self.position()  # under the lock, checked against head.json
        seq, head = pos.seq, pos.hash
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
        """The last entry, checked against head.json (see :meth:`_check_head`)."""
        with self._locked():
            self._repair_torn_tail()
            seq, h = self._last()
        return Position(seq, h)

    # -- reading and verifying ------------------------------------------------------------

    def entries(self) -> list[dict[str, Any]]:
        """Every entry, parsed (no checks; see :meth:`verify`). A last line with no line
        break yet is not an entry yet (a writer's append in progress, or a torn one that
        the next writer cuts and logs) and is left out."""
        return self._read_entries()[0]

    def _read_entries(self) -> tuple[list[dict[str, Any]], int]:
        """:meth:`entries`, and how many bytes the unfinished last line left out holds."""
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            return [], 0
        except OSError as exc:
            raise AuditError(f"{self.path}: cannot read the audit log: {_why(exc)}") from exc
        out = []
        with fh:
            try:
                for i, raw in enumerate(fh, start=1):
                    if not raw.endswith(b"\n"):
                        return out, len(raw)  # the last line, still being written (or torn)
                    if not raw.strip():
                        raise AuditTamperError(
                            i, None, "an empty line (no entry is ever blank)", path=self.path
                        )
                    try:
                        out.append(parse_entry(raw))
                    except ValueError as exc:
                        raise AuditTamperError(
                            i, None, f"not a JSON entry ({exc})", path=self.path
                        ) from exc
            except OSError as exc:
                raise AuditError(f"{self.path}: cannot read the audit log: {_why(exc)}") from exc
        return out, 0

    def logged_seq(self, digest: str) -> int | None:
        """The sequence number of the entry that logged the result record ``digest``
        (None when the log names no such record): where it stands among the log's steps,
        exactly, which timestamps of one-second resolution cannot say."""
        return self._scan().logged_seq.get(digest)

    def logged_results(self) -> dict[str, set[str]]:
        """Result kind -> the SHA-256 of every result record the log names (the store logs
        each one it writes, subject ``"<kind> <sha256>"``). Read incrementally: the log only
        grows, so a second call in one process parses only the entries appended since.
        :class:`AuditTamperError` when the log cannot say (see :meth:`_scan`)."""
        return self._scan().kinds

    def logged_payloads(self) -> set[str]:
        """The payload digest of every entry (read incrementally, as
        :meth:`logged_results`): an import's entry names its segment this way."""
        return self._scan().payloads

    def _still_ends_with(self, offset: int, last_line: bytes) -> bool:
        """Whether the log's bytes just before ``offset`` are still ``last_line`` (the last
        line a scan read): a log rewritten in place under the same name, as long as
        before or longer, does not pass for the one read."""
        if not last_line:
            return True
        try:
            with open(self.path, "rb") as fh:
                fh.seek(offset - len(last_line))
                return fh.read(len(last_line)) == last_line
        except OSError:
            return False

    def logged_imports(self) -> dict[str, tuple[str, tuple[str, ...]]]:
        """Segment digest -> (source file name, lot ids) of every import the log records
        with its segment named (read incrementally, as :meth:`logged_results`). Imports
        logged before entries named their segment are not in it: their payload digest
        alone names it."""
        return self._scan().imports

    def _scan(self) -> _Scanned:
        """Read the entries appended since the last call. Every whole line must be an entry
        the log writes (canonical JSON, a whole ``seq`` and ``hash``), numbered in order,
        and the log must agree with head.json (:meth:`_head_problem`); else
        :class:`AuditTamperError` naming the line or file: leaving out a line, or a log
        emptied, deleted or cut short, would drop the records it names (a calibration, a
        revocation) without a word. A last line still being written (no line break yet)
        is read next time. Hashes, chain and signatures are :meth:`verify`'s."""
        name = str(self.path)
        head_key = _stat_key(self.head_path)
        state = _LOGGED.get(name)
        if state is not None and state.key == (head_key, _stat_key(self.path)):
            return state
        head = self._read_head()  # before the log, which holds the entry any head names
        log_key = _stat_key(self.path)
        _LOGGED.pop(name, None)  # put back once read whole: a raise leaves no half state
        if log_key is None:
            problem = self._head_problem(head, 0, lambda _seq: None)
            if problem is not None:
                raise problem
            return _Scanned((None, None), 0, 0, 0, {}, {}, set())  # no log: names nothing
        ino, size = log_key[0], log_key[2]
        if (
            state is None
            or state.ino != ino
            or size < state.offset
            or not self._still_ends_with(state.offset, state.last_line)
        ):  # another log here, or this one rewritten in place: read it all again
            state = _Scanned((None, None), ino, 0, 0, {}, {}, set())
        if size > state.offset:
            try:
                with open(self.path, "rb") as fh:
                    fh.seek(state.offset)
                    chunk = fh.read(size - state.offset)
            except OSError as exc:
                raise AuditError(f"{self.path}: cannot read the audit log: {_why(exc)}") from exc
            end = chunk.rfind(b"\n") + 1  # a line still being written is read next time
            if end:
                state.last_line = chunk[:end].rsplit(b"\n", 2)[-2] + b"\n"
            for raw in chunk[:end].split(b"\n")[:-1]:
                line = state.lines + 1
                try:
                    e = parse_entry(raw)
                    pos = _position_of(e)
                except ValueError as exc:
                    raise AuditTamperError(
                        line,
                        None,
                        f"not an entry the log writes ({exc}); the records the log names "
                        "cannot be told",
                        path=self.path,
                    ) from exc
                if pos.seq != state.lines:
                    raise AuditTamperError(
                        line,
                        pos.seq,
                        f"sequence number {pos.seq} where {state.lines} was expected: an "
                        "entry was deleted, inserted or moved",
                        path=self.path,
                    )
                state.lines += 1
                state.recent[pos.seq] = pos.hash
                seg, lots = e.get("segment"), e.get("lots")
                if (
                    e.get("action") == "import"
                    and isinstance(seg, str)
                    and isinstance(lots, list)
                    and all(isinstance(x, str) for x in lots)
                ):
                    state.imports[seg] = (str(e.get("subject")), tuple(lots))
                pd, subject = e.get("payload_digest"), e.get("subject")
                if not isinstance(pd, str):
                    continue
                state.payloads.add(pd)
                if isinstance(subject, str):
                    kind, _, named = subject.partition(" ")
                    # a result record's entry: subject "<kind> <sha256>", payload the same
                    if named == pd and _KIND.fullmatch(kind):
                        state.kinds.setdefault(kind, set()).add(pd)
                        state.logged_seq.setdefault(pd, pos.seq)
            state.offset += end
            if len(state.recent) > 2 * _RECENT:
                state.recent = {s: h for s, h in state.recent.items() if s >= state.lines - _RECENT}
        problem = self._head_problem(head, state.lines, state.recent.get)
        if problem is not None:
            raise problem
        state.key = (head_key, log_key)
        _LOGGED[name] = state
        return state

    def verify(self, public_key: Any | None = None, *, results: bool = True) -> VerifyReport:
        """Check the chain, the head and (given the lab's public key) every checkpoint, and
        (``results``) that every result record the log names is there.

        Raises :class:`AuditTamperError` naming the first bad entry.
        """
        # the head first: a writer appends to the log and then moves the head, so a head
        # read before the log names an entry the log already holds (read after, it could
        # name one appended in between, and a sound log would read as cut short)
        head = self._read_head()
        entries, unfinished = self._read_entries()
        prev = GENESIS
        checkpoints = 0
        last_checkpoint = -1
        for line, e in enumerate(entries, start=1):
            seq = e.get("seq") if isinstance(e, dict) else None
            if not isinstance(e, dict) or "hash" not in e:
                raise AuditTamperError(line, seq, "entry has no hash", path=self.path)
            if seq != line - 1:
                raise AuditTamperError(
                    line,
                    seq,
                    f"sequence number {seq} where {line - 1} was expected: an entry was "
                    "deleted, inserted or moved",
                    path=self.path,
                )
            if entry_hash(e) != e["hash"]:
                raise AuditTamperError(
                    line, seq, "entry was edited: its hash does not match", path=self.path
                )
            if e.get("prev") != prev:
                raise AuditTamperError(
                    line,
                    seq,
                    "chain broken: 'prev' is not the hash of the entry before it",
                    path=self.path,
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
        n = len(entries)
        # a log longer than its head is what a crash between an append and the head update
        # leaves; the entries themselves were checked above
        problem = self._head_problem(head, n, lambda s: entries[s].get("hash"))
        if problem is not None:
            raise problem
        if results:
            for kind, gone in self.missing_results().items():
                raise AuditTamperError(
                    None,
                    None,
                    f"{len(gone)} {kind} record(s) the log records are missing from "
                    f"{gone[0].parent} (first: {gone[0].name}): deleted after they were logged",
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
            unfinished_bytes=unfinished,
        )

    def missing_results(self) -> dict[str, list[Path]]:
        """Result kind -> the files of records the log names that are gone (sorted)."""
        results = self.dir.parent / "results"
        out = {}
        for kind, digests in sorted(self.logged_results().items()):
            gone = sorted(
                results / kind / f"{d}.json"
                for d in digests
                if not (results / kind / f"{d}.json").exists()
            )
            if gone:
                out[kind] = gone
        return out

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
        """head.json's position, None when there is none."""
        try:
            data = self.head_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AuditError(f"{self.head_path}: cannot read: {_why(exc)}") from exc
        try:
            d = strict_loads(data)
            if not isinstance(d, dict):
                raise ValueError("not a JSON object")
            return _position_of(d)
        except ValueError as exc:
            raise AuditTamperError(
                None,
                None,
                f"{self.head_path} is unreadable ({exc}); expected "
                '{"hash": "<64 hex digits>", "seq": <entry number>}',
                path=self.head_path,
            ) from exc


@dataclass(frozen=True)
class VerifyReport:
    entries: int
    checkpoints: int
    unanchored: int  # entries after the last entry a checkpoint signs
    head: Position
    signatures_checked: bool
    #: bytes after the last line break: an append in progress, or one cut short (power
    #: loss) that the next write cuts and logs; not an entry, so not counted or checked
    unfinished_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "entries": self.entries,
            "checkpoints": self.checkpoints,
            "entries_after_last_checkpoint": self.unanchored,
            "head": self.head.to_dict(),
            "signatures_checked": self.signatures_checked,
            "unfinished_bytes": self.unfinished_bytes,
        }

    @staticmethod
    def unread() -> dict[str, Any]:
        """The keys of :meth:`to_dict` for a log that could not be read through: every
        figure unknown (None), no signature checked."""
        empty = VerifyReport(0, 0, 0, Position(-1, GENESIS), False).to_dict()
        return dict.fromkeys(empty) | {"signatures_checked": False}


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
