"""The embedded store: immutable HDF5 segments, a manifest, and content-addressed results.

See ``shared/DESIGN.md``, section "Store": an embedded store needs no server; an import
writes a new segment to a temporary name, flushes and fsyncs it, then renames it into place
and records it in the manifest. A crash leaves at most an orphan temporary file, never a
half-written lot. Raw readings are never rewritten; results point at segments by SHA-256.

Layout of a store directory::

    <root>/segments/<sha256>.h5           immutable segment files, named by their SHA-256
    <root>/manifest.json                  index of segments and lots (a rebuildable cache)
    <root>/results/<kind>/<sha256>.json   result records, named by the SHA-256 of their
                                          canonical JSON bytes
    <root>/.lock                          ``fcntl.flock`` taken by writers

A segment is self-describing. Per-fibre segments hold ``fibres/diameter_um`` (float32,
contiguous, uncompressed) and optionally ``fibres/length_mm``, ``fibres/curvature_deg_mm``
(float32) and ``fibres/medullated`` (bool); histogram segments hold ``classes/lower_um``,
``classes/upper_um`` (float64) and ``classes/counts`` (int64). Both hold ``lots/offsets``
(int64, CSR) and ``lots/lot_id`` (variable-length UTF-8). Root attributes: ``format``
(``"fibergrade-segment"``), ``format_version`` (1), ``kind`` (``"fibres"`` or
``"histogram"``), ``source_name``, ``source_digest`` (SHA-256 of the imported source file),
``created_at`` (ISO 8601 UTC), ``software_version`` and ``lots_meta`` (JSON list of
``LotMeta.to_dict()``).

Commit protocol of a segment (one import item = one segment):

1. write ``segments/.tmp-<random>.h5``, flush, close, fsync the file;
2. compute its SHA-256 and ``os.rename`` it to ``segments/<digest>.h5``, fsync the
   directory. **The rename is the commit point.**
3. rewrite ``manifest.json`` atomically (temporary file, fsync, rename, fsync directory).

On open the manifest is reconciled with the directory: a committed segment missing from the
manifest (the crash came between steps 2 and 3) is read, verified and indexed; a manifest
entry whose file is missing is corruption (raw data was lost) and raises
:class:`~fibergrade.errors.StoreCorruptError`. Temporary files left by a crash are orphans
and are deleted by the next writer once it holds the lock.

A :class:`Store` is a snapshot: it shows the store as of :meth:`Store.open`, its own last
write, or :meth:`Store.refresh`. Readers never take the lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import mmap
import os
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import h5py
import numpy as np

from fibergrade import __version__
from fibergrade.errors import (
    LotConflictError,
    LotNotFoundError,
    StoreCorruptError,
    StoreError,
    StoreLockedError,
)
from fibergrade.measurements import FibreLots, HistogramLots, LotMeta
from fibergrade.safe_files import open_lock, sync_dir, write_new

__all__ = [
    "ImportOutcome",
    "LotRecord",
    "PendingSegment",
    "SegmentRecord",
    "Store",
    "sha256_file",
]

#: value of the ``format`` root attribute of every segment file
SEGMENT_FORMAT = "fibergrade-segment"
#: value of the ``format_version`` root attribute this module writes and reads
SEGMENT_FORMAT_VERSION = 1
#: ``format`` field of manifest.json
MANIFEST_FORMAT = "fibergrade-manifest"
MANIFEST_FORMAT_VERSION = 1

SEGMENT_KINDS = ("fibres", "histogram")

_TMP_PREFIX = ".tmp-"
_MANIFEST_NAME = "manifest.json"
_MANIFEST_TMP_PREFIX = _MANIFEST_NAME + ".tmp-"
_LOCK_NAME = ".lock"
#: the lock of commands that number or deduplicate what they store (see Store.issuing)
_ISSUE_LOCK_NAME = ".issue.lock"
#: how long a writer waits for another process's lock before giving up (seconds); a
#: segment commit holds the store lock for milliseconds [unsourced: the project's choice]
LOCK_WAIT_S = 30.0


_P = ParamSpec("_P")
_R = TypeVar("_R")


def under_issue_lock(fn: Callable[Concatenate[Any, _P], _R]) -> Callable[Concatenate[Any, _P], _R]:
    """Run ``fn(store, ...)`` holding ``store.issuing()`` (see :meth:`Store.issuing`)."""

    @functools.wraps(fn)
    def locked(store: Any, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with store.issuing():
            return fn(store, *args, **kwargs)

    return locked


def _import_payload(seg: SegmentRecord) -> dict[str, Any]:
    """What an import's audit entry digests: the segment, its lots and the source file."""
    return {"segment": seg.digest, "lots": list(seg.lot_ids), "source": seg.source_digest}


def _flock_waiting(fd: int, wait_s: float) -> bool:
    """Take ``flock(LOCK_EX)`` on ``fd``, waiting up to ``wait_s``; False if still held."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
_SEGMENT_NAME_RE = re.compile(r"([0-9a-f]{64})\.h5")
_RESULT_NAME_RE = re.compile(r"([0-9a-f]{64})\.json")
_RESULT_KIND_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: result writes do not take the writer lock, so a writer only removes result temporary
#: files older than this (a live ``put_result`` finishes in milliseconds)
_RESULT_TMP_MAX_AGE_S = 3600.0
_BLOCK = 1 << 20
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


# --------------------------------------------------------------------------- records


#: the audit-log action a newly written result record of each kind is logged as
AUDIT_ACTION = {
    "grade": "grade",
    "calibration": "calibrate",
    "qc": "qc",
    "screening": "screen",
    "override": "override",
    "certificate": "certify",
    "revocation": "revoke",
    "weighing": "acquire",
    "carcasses": "import",
    "halal": "import",
}


@dataclass(frozen=True)
class SegmentRecord:
    """One committed segment file. ``n_rows`` counts fibres, or classes for histograms."""

    digest: str
    path: Path
    kind: str
    source_name: str
    source_digest: str
    created_at: str
    lot_ids: tuple[str, ...]
    n_rows: int


@dataclass(frozen=True)
class LotRecord:
    """Where a lot lives. ``n`` counts fibres, or the total class count for histograms."""

    lot_id: str
    meta: LotMeta
    segment: str
    kind: str
    index: int
    n: int


@dataclass(frozen=True)
class ImportOutcome:
    """What an import did; ``already_imported`` means the source was in the store already."""

    segment: str
    source_name: str
    lot_ids: tuple[str, ...]
    n_rows: int
    already_imported: bool


@dataclass(frozen=True)
class PendingSegment:
    """One table to be committed as its own segment by :meth:`Store.import_segments`.

    ``source_digest`` is the SHA-256 hex of the imported source file (re-import detection);
    a lot missing from ``meta`` gets ``LotMeta(lot_id)``.
    """

    table: FibreLots | HistogramLots
    meta: Mapping[str, LotMeta]
    source_name: str
    source_digest: str


# --------------------------------------------------------------------------- helpers


def sha256_file(path: str | Path) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


def verify_segment_file(path: Path, digest: str) -> None:
    """Recompute the SHA-256 of the segment file at ``path``; :class:`StoreCorruptError`
    when it is missing, unreadable or differs from ``digest`` (its name in the store)."""
    try:
        actual = sha256_file(path)
    except FileNotFoundError as e:
        raise StoreCorruptError(f"{path}: committed segment file is missing") from e
    except OSError as e:
        raise StoreCorruptError(f"{path}: cannot read segment: {e}") from e
    if actual != digest:
        raise StoreCorruptError(
            f"{path}: content digest is {actual}, expected {digest}; the segment file "
            "was altered after it was committed"
        )


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes, tmp_name: str) -> None:
    """Write ``data`` to ``path`` through ``tmp_name`` in the same directory (fsync, rename,
    fsync directory), so readers see the old file or the new one, never a mix."""
    tmp = path.parent / tmp_name
    try:
        write_new(tmp, data, fsync=True)  # O_EXCL: a link planted there is never followed
        os.rename(tmp, path)
        sync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _canonical_json(payload: dict[str, Any], given: Mapping[str, bytes] | None = None) -> bytes:
    """Canonical JSON of ``payload`` plus the top-level entries ``given`` already as
    canonical JSON; byte for byte what serialising the whole object at once gives (keys
    sorted, no spaces: see :func:`fibergrade.audit.canonical_json`)."""
    from fibergrade.audit import canonical_json  # the one canonical form, digests included

    if not given:
        return canonical_json(payload)
    overlap = set(payload) & set(given)
    if overlap:
        raise ValueError(f"keys given twice: {sorted(overlap)}")
    items = [
        canonical_json(k) + b":" + (given[k] if k in given else canonical_json(payload[k]))
        for k in sorted(set(payload) | set(given))
    ]
    return b"{" + b",".join(items) + b"}"


@contextlib.contextmanager
def result_json_errors(kind: str) -> Iterator[None]:
    """Serialising (part of) a ``kind`` result as canonical JSON inside this block: a value
    JSON cannot hold raises :class:`StoreError` saying so (also for the parts a grading
    task serialises on a worker, so the message is the store's wherever it arises)."""
    try:
        yield
    except (TypeError, ValueError) as e:
        raise StoreError(f"{kind} result is not representable as canonical JSON: {e}") from e


def _lot_counts(kind: str, offsets: np.ndarray, counts: np.ndarray | None) -> list[int]:
    """Per-lot ``n``: fibres per lot, or summed class counts for histogram lots."""
    if kind == "fibres" or counts is None:
        return np.diff(offsets).tolist()
    cs = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=cs[1:])
    return (cs[offsets[1:]] - cs[offsets[:-1]]).tolist()


def _read_array(ds: h5py.Dataset, dtype: Any, rows: slice | None = None) -> np.ndarray:
    """Read a 1-D dataset (or the ``rows`` of it) with one ``read_direct`` into a new array."""
    start, stop = (0, ds.shape[0]) if rows is None else (rows.start, rows.stop)
    out = np.empty(stop - start, dtype=dtype)
    if out.size:
        ds.read_direct(out, source_sel=np.s_[start:stop])
    return out


def _map_array(ds: h5py.Dataset, path: Path, dtype: Any) -> np.ndarray | None:
    """A read-only memory map of a whole 1-D dataset, or None when it cannot be mapped.

    Only a contiguous, unfiltered, allocated dataset stored in exactly ``dtype`` (byte order
    included) in a file without a user block is mapped: its bytes in the file are then the
    array. Segments are immutable once committed, so the map always shows committed data;
    it holds a file descriptor until the array is released.
    """
    dtype = np.dtype(dtype)
    if ds.ndim != 1 or ds.dtype != dtype or ds.shape[0] == 0:
        return None
    dcpl = ds.id.get_create_plist()
    if dcpl.get_layout() != h5py.h5d.CONTIGUOUS or dcpl.get_nfilters() != 0:
        return None
    if ds.file.userblock_size != 0 or ds.file.driver != "sec2":
        return None
    offset = ds.id.get_offset()
    if offset is None:
        return None
    n = int(ds.shape[0])
    with open(path, "rb") as fh:
        if offset + n * dtype.itemsize > os.fstat(fh.fileno()).st_size:
            raise StoreCorruptError(f"{path}: dataset {ds.name} runs past the end of the file")
        mapped = mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ)
    return np.frombuffer(mapped, dtype=dtype, count=n, offset=offset)


def _column(
    ds: h5py.Dataset, path: Path, dtype: Any, rows: slice | None, mapped: bool
) -> np.ndarray:
    # only float columns are mapped: a stored bool is a byte that numpy would not check
    # is 0 or 1, while a read converts it
    if mapped and rows is None and np.dtype(dtype).kind == "f":
        arr = _map_array(ds, path, dtype)
        if arr is not None:
            return arr
    return _read_array(ds, dtype, rows)


def _now_after(previous: str | None) -> str:
    """ISO 8601 UTC timestamp (microseconds), strictly after ``previous`` so that sorting
    by ``created_at`` reproduces commit order even if the wall clock steps back."""
    now = datetime.now(UTC)
    if previous is not None:
        with contextlib.suppress(ValueError):
            prev = datetime.fromisoformat(previous)
            if prev.tzinfo is None:
                prev = prev.replace(tzinfo=UTC)
            if now <= prev:
                now = prev + timedelta(microseconds=1)
    return now.strftime(_TIME_FORMAT)


# --------------------------------------------------------------------------- segment files


def _kind_of(table: FibreLots | HistogramLots) -> str:
    if isinstance(table, FibreLots):
        return "fibres"
    if isinstance(table, HistogramLots):
        return "histogram"
    raise StoreError(f"cannot import a {type(table).__name__}; expected FibreLots or HistogramLots")


def _write_segment_file(
    path: Path,
    table: FibreLots | HistogramLots,
    metas: list[LotMeta],
    *,
    source_name: str,
    source_digest: str,
    created_at: str,
) -> None:
    """Write one self-describing segment (layout in the module docstring).

    Datasets are contiguous and uncompressed (reads must be as fast as a plain h5py read)
    and carry no timestamps, so identical content gives identical bytes.
    """
    kind = _kind_of(table)
    with h5py.File(path, "w") as f:
        f.attrs["format"] = SEGMENT_FORMAT
        f.attrs["format_version"] = np.int64(SEGMENT_FORMAT_VERSION)
        f.attrs["kind"] = kind
        f.attrs["source_name"] = source_name
        f.attrs["source_digest"] = source_digest
        f.attrs["created_at"] = created_at
        f.attrs["software_version"] = __version__
        f.attrs["lots_meta"] = json.dumps(
            [m.to_dict() for m in metas], sort_keys=True, ensure_ascii=False
        )
        if isinstance(table, FibreLots):
            g = f.create_group("fibres")
            g.create_dataset("diameter_um", data=table.diameter_um, track_times=False)
            for name, col in table.optional_columns().items():
                g.create_dataset(name, data=col, track_times=False)
        else:
            g = f.create_group("classes")
            g.create_dataset("lower_um", data=table.lower_um, track_times=False)
            g.create_dataset("upper_um", data=table.upper_um, track_times=False)
            g.create_dataset("counts", data=table.counts, track_times=False)
        lots = f.create_group("lots")
        lots.create_dataset("offsets", data=table.offsets, track_times=False)
        lots.create_dataset(
            "lot_id",
            data=np.array(table.lot_ids, dtype=object),
            dtype=h5py.string_dtype("utf-8"),
            track_times=False,
        )
        f.flush()


def _check_segment_attrs(f: h5py.File, path: Path) -> str:
    attrs = f.attrs
    fmt = attrs.get("format")
    if fmt != SEGMENT_FORMAT:
        raise StoreCorruptError(f"{path}: not a fibergrade segment (format attribute {fmt!r})")
    version = attrs.get("format_version")
    if version is None or int(version) != SEGMENT_FORMAT_VERSION:
        raise StoreCorruptError(
            f"{path}: segment format_version {version!r}; this fibergrade reads version "
            f"{SEGMENT_FORMAT_VERSION}"
        )
    kind = str(attrs.get("kind"))
    if kind not in SEGMENT_KINDS:
        raise StoreCorruptError(f"{path}: unknown segment kind {kind!r}")
    return kind


def check_lot_ids(
    path: Path, positions: Sequence[int], found: Sequence[str], expected: Sequence[str]
) -> None:
    """Refuse a read whose lots are not the ones the manifest promised: the lot ids written
    in the segment file itself (covered by its SHA-256) are the truth, and the manifest,
    which says at which index a lot lives, is an unsigned cache. A lot read at another
    lot's index would be graded, and certified, under the wrong id."""
    if tuple(found) != tuple(expected):
        i = next(k for k, (a, b) in enumerate(zip(found, expected, strict=True)) if a != b)
        raise StoreCorruptError(
            f"{path}: index {positions[i]} holds lot {found[i]!r}, but the store's manifest "
            f"says lot {expected[i]!r} is there: manifest.json was altered or is corrupt "
            "(it is rebuilt from the segments if it is removed)"
        )


def read_segment_file(
    path: Path, lot: int | None = None, *, mapped: bool = False
) -> FibreLots | HistogramLots:
    """The whole table of a segment, or only its lot at index ``lot``: one ``read_direct``
    (a hyperslab of just that lot's rows) per dataset.

    With ``mapped`` the float32 fibre columns of a whole table are read-only memory maps of
    the file (see :func:`_map_array`) instead of copies: grading then reads each value from
    the page cache once, where a copy would read it twice. The grading tasks hold one table
    at a time and release it, so the maps (and their file descriptors) are short-lived.
    """
    try:
        with h5py.File(path, "r") as f:
            kind = _check_segment_attrs(f, path)
            offsets = _read_array(f["lots/offsets"], np.int64)
            lot_ids = tuple(f["lots/lot_id"].asstr()[()].tolist())
            rows = None
            if lot is not None:
                rows = slice(int(offsets[lot]), int(offsets[lot + 1]))
                offsets = np.array([0, rows.stop - rows.start], np.int64)
                lot_ids = (lot_ids[lot],)
            if kind == "fibres":
                g = f["fibres"]
                cols = {
                    name: _column(g[name], path, dtype, rows, mapped)
                    for name, dtype in (
                        ("length_mm", np.float32),
                        ("curvature_deg_mm", np.float32),
                        ("medullated", np.bool_),
                    )
                    if name in g
                }
                return FibreLots(
                    lot_ids=lot_ids,
                    offsets=offsets,
                    diameter_um=_column(g["diameter_um"], path, np.float32, rows, mapped),
                    **cols,
                )
            g = f["classes"]
            return HistogramLots(
                lot_ids=lot_ids,
                offsets=offsets,
                lower_um=_read_array(g["lower_um"], np.float64, rows),
                upper_um=_read_array(g["upper_um"], np.float64, rows),
                counts=_read_array(g["counts"], np.int64, rows),
            )
    except FileNotFoundError as e:
        raise StoreCorruptError(f"{path}: committed segment file is missing") from e
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise StoreCorruptError(f"{path}: unreadable segment: {e}") from e


def _index_segment_file(path: Path, digest: str) -> tuple[SegmentRecord, list[LotRecord]]:
    """Read a segment's header (everything but the per-fibre arrays) to index it."""
    try:
        with h5py.File(path, "r") as f:
            kind = _check_segment_attrs(f, path)
            offsets = _read_array(f["lots/offsets"], np.int64)
            lot_ids = tuple(f["lots/lot_id"].asstr()[()].tolist())
            if kind == "fibres":
                counts = None
                n_rows = int(f["fibres/diameter_um"].shape[0])
            else:
                counts = _read_array(f["classes/counts"], np.int64)
                n_rows = int(counts.size)
            meta_list = json.loads(str(f.attrs["lots_meta"]))
            seg = SegmentRecord(
                digest=digest,
                path=path,
                kind=kind,
                source_name=str(f.attrs["source_name"]),
                source_digest=str(f.attrs["source_digest"]),
                created_at=str(f.attrs["created_at"]),
                lot_ids=lot_ids,
                n_rows=n_rows,
            )
    except FileNotFoundError as e:
        raise StoreCorruptError(f"{path}: committed segment file is missing") from e
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise StoreCorruptError(f"{path}: unreadable segment: {e}") from e
    if offsets.size != len(lot_ids) + 1 or len(meta_list) != len(lot_ids):
        raise StoreCorruptError(f"{path}: lots/offsets, lots/lot_id and lots_meta disagree")
    ns = _lot_counts(kind, offsets, counts)
    lots = [
        LotRecord(
            lot_id=lot_id,
            meta=LotMeta.from_dict(m),
            segment=digest,
            kind=kind,
            index=i,
            n=int(n),
        )
        for i, (lot_id, m, n) in enumerate(zip(lot_ids, meta_list, ns, strict=True))
    ]
    return seg, lots


# --------------------------------------------------------------------------- the store


@dataclass
class _State:
    segments: list[SegmentRecord]
    by_digest: dict[str, SegmentRecord]
    lots: dict[str, LotRecord]  # insertion order = commit order, then order within segment
    by_source: dict[str, str]  # source_digest -> segment digest
    manifest_current: bool  # manifest.json on disk says exactly this
    manifest_key: tuple[int, int, int] | None = None  # (inode, mtime_ns, size) when read


class Store:
    """An embedded store directory (DESIGN.md, "Store"). Create with :meth:`Store.open`.

    Attributes:
        root: the store directory.
        orphans_removed: temporary files left by interrupted writes that this object's
            writes deleted (a CLI may report it).
        segments_recovered: committed segments that were missing from manifest.json and
            were indexed from their files at the last open/refresh/write.
    """

    root: Path
    orphans_removed: int
    segments_recovered: int
    #: seconds a writer waits for another process's lock (:data:`LOCK_WAIT_S`)
    lock_wait_s: float

    def __init__(self, root: Path) -> None:
        """Use :meth:`Store.open`; this assumes the directory layout exists."""
        self.root = root
        self.lock_wait_s = LOCK_WAIT_S
        self.orphans_removed = 0
        self.segments_recovered = 0
        #: segments whose SHA-256 this object computed when it loaded them (recovered into
        #: the manifest): :meth:`check_files` does not read them a second time
        self._hashed: set[str] = set()
        self._state = self._load_state()

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, root: str | Path, *, create: bool = True) -> Store:
        """Open the store at ``root``, creating it when ``create`` is true.

        Opening only reads: the manifest is reconciled with ``segments/`` in memory (see the
        module docstring); the reconciled manifest is written by the next write.
        """
        rootp = Path(root)
        if not rootp.exists():
            if not create:
                raise StoreError(
                    f"{rootp}: no store here (the directory does not exist); "
                    "create it by importing data, or check the --store path"
                )
        elif not rootp.is_dir():
            raise StoreError(f"{rootp}: not a directory, so it cannot be a store")
        if create:
            try:
                (rootp / "segments").mkdir(parents=True, exist_ok=True)
                (rootp / "results").mkdir(exist_ok=True)
            except OSError as e:
                raise StoreError(f"{rootp}: cannot create the store: {e}") from e
        elif not (rootp / "segments").is_dir():
            raise StoreError(
                f"{rootp}: not a fibergrade store (expected a segments/ directory in it)"
            )
        return cls(rootp)

    def refresh(self) -> None:
        """Re-read the manifest and segments/ to see what other processes committed."""
        self._state = self._load_state(reuse=self._state)

    @property
    def _segments_dir(self) -> Path:
        return self.root / "segments"

    @property
    def _manifest_path(self) -> Path:
        return self.root / _MANIFEST_NAME

    def _manifest_key(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self._manifest_path)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreError(f"{self._manifest_path}: cannot read: {e}") from e
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _list_segment_files(self) -> set[str]:
        try:
            names = os.listdir(self._segments_dir)
        except OSError as e:
            raise StoreError(f"{self._segments_dir}: cannot list segments: {e}") from e
        return {m.group(1) for n in names if (m := _SEGMENT_NAME_RE.fullmatch(n))}

    def _load_state(self, reuse: _State | None = None) -> _State:
        """Reconcile manifest.json with segments/ (module docstring).

        Manifest first, then the directory listing: a segment is always renamed into place
        before the manifest names it, so the listing taken afterwards covers the manifest.
        ``reuse`` is returned as is when neither the manifest file (every rewrite is a
        rename, so a new inode) nor the set of segment files changed since it was loaded.
        """
        key = self._manifest_key()
        if (
            reuse is not None
            and key is not None
            and key == reuse.manifest_key
            and self._list_segment_files() == reuse.by_digest.keys()
        ):
            self.segments_recovered = 0
            return reuse
        entries = self._read_manifest()
        on_disk = self._list_segment_files()

        pairs: list[tuple[SegmentRecord, list[LotRecord]]] = []
        manifest_ok = entries is not None
        if entries is not None:
            missing = [seg.digest for seg, _ in entries if seg.digest not in on_disk]
            if missing:
                raise StoreCorruptError(
                    f"{self._manifest_path}: segment file(s) named in the manifest are "
                    "missing: "
                    + ", ".join(str(self._segments_dir / f"{d}.h5") for d in missing[:5])
                    + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
                )
            pairs = entries
        known = {seg.digest for seg, _ in pairs}
        recovered: list[tuple[SegmentRecord, list[LotRecord]]] = []
        for digest in sorted(on_disk - known):
            path = self._segments_dir / f"{digest}.h5"
            actual = sha256_file(path)
            if actual != digest:
                raise StoreCorruptError(
                    f"{path}: content digest is {actual}, not the digest in its name"
                )
            recovered.append(_index_segment_file(path, digest))
            self._hashed.add(digest)
        recovered.sort(key=lambda p: (p[0].created_at, p[0].digest))
        self.segments_recovered = len(recovered)
        pairs = pairs + recovered

        state = _State([], {}, {}, {}, manifest_ok and not recovered, key)
        for seg, lots in pairs:
            self._add_to_state(state, seg, lots)
        return state

    def _add_to_state(self, state: _State, seg: SegmentRecord, lots: list[LotRecord]) -> None:
        if seg.digest in state.by_digest:
            raise StoreCorruptError(f"{seg.path}: segment listed twice in the manifest")
        for lot in lots:
            if lot.lot_id in state.lots:
                other = state.by_digest[state.lots[lot.lot_id].segment]
                raise StoreCorruptError(
                    f"lot {lot.lot_id!r} is held by two segments: {other.path} and {seg.path}"
                )
        if seg.source_digest in state.by_source:
            other = state.by_digest[state.by_source[seg.source_digest]]
            raise StoreCorruptError(
                f"source {seg.source_digest} was committed twice: {other.path} and {seg.path}"
            )
        state.segments.append(seg)
        state.by_digest[seg.digest] = seg
        state.by_source[seg.source_digest] = seg.digest
        for lot in lots:
            state.lots[lot.lot_id] = lot

    # ------------------------------------------------------------------ manifest

    def _read_manifest(self) -> list[tuple[SegmentRecord, list[LotRecord]]] | None:
        """Entries of manifest.json, or None when it is missing or unusable (it is a cache
        and is then rebuilt from the segment files, which are the truth: DESIGN.md, "Store").
        Unusable includes what this software never writes: NaN or Infinity, a number too
        large for a count (``1e400``), a key twice, nesting too deep for the parser."""
        from fibergrade.audit import strict_loads

        try:
            raw = self._manifest_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreError(f"{self._manifest_path}: cannot read: {e}") from e
        try:
            doc = strict_loads(raw)
            if (
                doc.get("format") != MANIFEST_FORMAT
                or doc.get("format_version") != MANIFEST_FORMAT_VERSION
            ):
                return None
            out: list[tuple[SegmentRecord, list[LotRecord]]] = []
            for e in doc["segments"]:
                digest = str(e["digest"])
                if not _DIGEST_RE.fullmatch(digest):
                    return None
                kind = str(e["kind"])
                lots_doc = e["lots"]
                seg = SegmentRecord(
                    digest=digest,
                    path=self._segments_dir / f"{digest}.h5",
                    kind=kind,
                    source_name=str(e["source_name"]),
                    source_digest=str(e["source_digest"]),
                    created_at=str(e["created_at"]),
                    lot_ids=tuple(str(x["meta"]["lot_id"]) for x in lots_doc),
                    n_rows=int(e["n_rows"]),
                )
                lots = [
                    LotRecord(
                        lot_id=seg.lot_ids[i],
                        meta=LotMeta.from_dict(x["meta"]),
                        segment=digest,
                        kind=kind,
                        index=i,
                        n=int(x["n"]),
                    )
                    for i, x in enumerate(lots_doc)
                ]
                out.append((seg, lots))
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError):
            return None
        return out

    def _write_manifest(self, state: _State) -> None:
        segs = []
        for seg in state.segments:
            segs.append(
                {
                    "digest": seg.digest,
                    "kind": seg.kind,
                    "source_name": seg.source_name,
                    "source_digest": seg.source_digest,
                    "created_at": seg.created_at,
                    "n_rows": seg.n_rows,
                    "lots": [
                        {"n": state.lots[lot_id].n, "meta": state.lots[lot_id].meta.to_dict()}
                        for lot_id in seg.lot_ids
                    ],
                }
            )
        doc = {
            "format": MANIFEST_FORMAT,
            "format_version": MANIFEST_FORMAT_VERSION,
            "segments": segs,
        }
        data = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        _atomic_write(self._manifest_path, data, _MANIFEST_TMP_PREFIX + secrets.token_hex(8))
        state.manifest_current = True
        state.manifest_key = self._manifest_key()

    # ------------------------------------------------------------------ locking

    @contextlib.contextmanager
    def _locked_file(self, name: str, what: str) -> Iterator[None]:
        """Hold ``flock(LOCK_EX)`` on ``root/name``, waiting up to :attr:`lock_wait_s` for
        another process to let go (:class:`StoreLockedError` after that)."""
        lock_path = self.root / name
        try:
            fd = open_lock(lock_path)
        except OSError as e:
            raise StoreError(f"{lock_path}: cannot open the store lock: {e}") from e
        try:
            try:
                got = _flock_waiting(fd, self.lock_wait_s)
            except OSError as e:
                raise StoreError(f"{lock_path}: cannot lock the store: {e}") from e
            if not got:
                raise StoreLockedError(
                    f"{self.root}: another process is {what} (lock {lock_path} held for "
                    f"over {self.lock_wait_s:g} s); try again when it has finished"
                )
            yield
        finally:
            os.close(fd)  # releases the flock

    @contextlib.contextmanager
    def issuing(self) -> Iterator[None]:
        """One process at a time numbers and stores certificates or revocations, or checks
        and stores carcass and halal records: each reads what is stored, decides (the next
        certificate number; whether a file or an id is new) and stores, and two processes
        doing that at once issued one number twice and imported one file twice. Waits up
        to :attr:`lock_wait_s` for another such command (a batch of PDFs can take minutes:
        then the second command is refused and can be run again)."""
        with self._locked_file(_ISSUE_LOCK_NAME, "issuing certificates or importing records"):
            yield

    @contextlib.contextmanager
    def _write_lock(self) -> Iterator[_State]:
        """Hold ``fcntl.flock(LOCK_EX)`` on ``.lock`` (waiting up to :attr:`lock_wait_s`);
        delete orphans, reload the state (another process may have committed since open)
        and persist a reconciled manifest before yielding it."""
        with self._locked_file(_LOCK_NAME, "writing to this store"):
            self.orphans_removed += self._remove_orphans()
            state = self._load_state(reuse=self._state)
            self._state = state
            if not state.manifest_current:
                self._write_manifest(state)
            yield state

    def _remove_orphans(self) -> int:
        """Delete temporary files of interrupted writes; only call with the lock held."""
        removed = 0
        candidates: list[tuple[Path, float | None]] = []
        with contextlib.suppress(OSError):
            candidates += [
                (p, None) for p in self._segments_dir.iterdir() if p.name.startswith(_TMP_PREFIX)
            ]
        with contextlib.suppress(OSError):
            candidates += [
                (p, None) for p in self.root.iterdir() if p.name.startswith(_MANIFEST_TMP_PREFIX)
            ]
        results = self.root / "results"
        with contextlib.suppress(OSError):
            for kind_dir in results.iterdir():
                if kind_dir.is_dir():
                    candidates += [
                        (p, _RESULT_TMP_MAX_AGE_S)
                        for p in kind_dir.iterdir()
                        if p.name.startswith(_TMP_PREFIX)
                    ]
        now = time.time()
        for path, max_age in candidates:
            try:
                if max_age is not None and now - path.stat().st_mtime < max_age:
                    continue
                path.unlink()
                removed += 1
            except FileNotFoundError:
                continue
            except OSError as e:
                raise StoreError(f"{path}: cannot remove orphan temporary file: {e}") from e
        return removed

    # ------------------------------------------------------------------ importing

    def import_fibres(
        self,
        table: FibreLots,
        meta: Mapping[str, LotMeta],
        *,
        source_name: str,
        source_digest: str,
    ) -> ImportOutcome:
        """Commit per-fibre lots as one segment (see :meth:`import_segments`)."""
        if not isinstance(table, FibreLots):
            raise StoreError(f"import_fibres needs a FibreLots table, got {type(table).__name__}")
        return self.import_segments([PendingSegment(table, meta, source_name, source_digest)])[0]

    def import_histograms(
        self,
        table: HistogramLots,
        meta: Mapping[str, LotMeta],
        *,
        source_name: str,
        source_digest: str,
    ) -> ImportOutcome:
        """Commit histogram lots as one segment (see :meth:`import_segments`)."""
        if not isinstance(table, HistogramLots):
            raise StoreError(
                f"import_histograms needs a HistogramLots table, got {type(table).__name__}"
            )
        return self.import_segments([PendingSegment(table, meta, source_name, source_digest)])[0]

    def import_segments(self, items: list[PendingSegment]) -> list[ImportOutcome]:
        """Commit each item as its own segment, in order, under the writer lock.

        All items are validated first, against each other and against the store: a lot id
        the store (or an earlier item) holds from a different source raises
        :class:`LotConflictError` before anything is written. An item whose
        ``source_digest`` is already in the store (or repeats an earlier item's) is not
        written again; its outcome has ``already_imported=True``.
        """
        if not items:
            return []
        prepared = [self._prepare(item) for item in items]
        with self._write_lock() as state:
            self._audit_ready()  # a log that cannot record the import: nothing is committed
            from fibergrade.audit import AuditLog

            # lots of logged imports whose segment is gone: their ids stay taken
            gone = {
                lot: (d, source)
                for d, (source, lots) in AuditLog(self.root).logged_imports().items()
                if d not in state.by_digest
                for lot in lots
            }
            plan: list[str | None] = []  # per item: digest of existing segment, or None
            batch_sources: dict[str, int] = {}
            batch_lots: dict[str, int] = {}
            for i, (item, _kind, _metas) in enumerate(prepared):
                if item.source_digest in state.by_source:
                    plan.append(state.by_source[item.source_digest])
                    continue
                if item.source_digest in batch_sources:
                    plan.append(None)
                    continue
                for lot_id in item.table.lot_ids:
                    if lot_id in gone:
                        d, source = gone[lot_id]
                        raise LotConflictError(
                            f"lot {lot_id!r} in {item.source_name!r} was imported before "
                            f"(segment {d}, from {source!r}, as the audit log records) and "
                            "that segment is missing from the store: raw data is never "
                            "rewritten, so restore the segment from a backup (see "
                            "`fibergrade audit verify`)"
                        )
                    if lot_id in state.lots:
                        seg = state.by_digest[state.lots[lot_id].segment]
                        raise LotConflictError(
                            f"lot {lot_id!r} in {item.source_name!r} is already in the store "
                            f"(segment {seg.digest}, imported from {seg.source_name!r}); raw "
                            "data is never rewritten, so a new measurement needs a new lot id"
                        )
                    if lot_id in batch_lots:
                        other = items[batch_lots[lot_id]]
                        raise LotConflictError(
                            f"lot {lot_id!r} appears in both {other.source_name!r} and "
                            f"{item.source_name!r}; a lot id may come from one source only"
                        )
                for lot_id in item.table.lot_ids:
                    batch_lots[lot_id] = i
                batch_sources[item.source_digest] = i
                plan.append(None)

            outcomes: list[ImportOutcome] = []
            for (item, kind, metas), existing in zip(prepared, plan, strict=True):
                if existing is None and item.source_digest in state.by_source:
                    existing = state.by_source[item.source_digest]  # repeated in this batch
                if existing is not None:
                    seg = state.by_digest[existing]
                    if not self._import_logged(seg):
                        # committed by a run that stopped before logging it: log it now
                        self._audit_import(seg)
                    outcomes.append(
                        ImportOutcome(seg.digest, seg.source_name, seg.lot_ids, seg.n_rows, True)
                    )
                    continue
                seg = self._commit(state, item, kind, metas)
                self._audit_import(seg)
                outcomes.append(
                    ImportOutcome(seg.digest, seg.source_name, seg.lot_ids, seg.n_rows, False)
                )
            return outcomes

    def _prepare(self, item: PendingSegment) -> tuple[PendingSegment, str, list[LotMeta]]:
        """Validate one import item before the lock is taken; nothing is written here."""
        kind = _kind_of(item.table)
        if not isinstance(item.source_name, str) or not item.source_name:
            raise StoreError("an import needs a non-empty source_name (the imported file)")
        if not isinstance(item.source_digest, str) or not _DIGEST_RE.fullmatch(item.source_digest):
            raise StoreError(
                f"{item.source_name}: source_digest {item.source_digest!r} is not a SHA-256 "
                "hex digest (64 lowercase hex characters)"
            )
        if item.table.n_lots == 0:
            raise StoreError(f"{item.source_name}: holds no lots; nothing to import")
        if isinstance(item.table, FibreLots):
            # raw data are never rewritten: a physically impossible value must not get in
            # (the file readers refuse them first, naming the line; this guards the API)
            from fibergrade.distribution import check_fibres

            check_fibres(item.table)
        metas: list[LotMeta] = []
        for lot_id in item.table.lot_ids:
            m = item.meta.get(lot_id)
            if m is None:
                m = LotMeta(lot_id)
            elif not isinstance(m, LotMeta) or m.lot_id != lot_id:
                raise StoreError(
                    f"{item.source_name}: metadata given for lot {lot_id!r} is "
                    f"{m!r}; expected a LotMeta with that lot id"
                )
            metas.append(m)
        return item, kind, metas

    def _commit(
        self, state: _State, item: PendingSegment, kind: str, metas: list[LotMeta]
    ) -> SegmentRecord:
        """Write, fsync, hash and rename one segment (the commit point), then update the
        manifest. Only call with the writer lock held."""
        seg_dir = self._segments_dir
        tmp = seg_dir / f"{_TMP_PREFIX}{secrets.token_hex(8)}.h5"
        created_at = _now_after(state.segments[-1].created_at if state.segments else None)
        try:
            _write_segment_file(
                tmp,
                item.table,
                metas,
                source_name=item.source_name,
                source_digest=item.source_digest,
                created_at=created_at,
            )
            _fsync_file(tmp)
            digest = sha256_file(tmp)
            final = seg_dir / f"{digest}.h5"
            os.rename(tmp, final)  # the commit point
            sync_dir(seg_dir)
        except BaseException as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if isinstance(e, OSError):
                raise StoreError(f"{seg_dir}: cannot write segment: {e}") from e
            raise
        table = item.table
        counts = table.counts if isinstance(table, HistogramLots) else None
        n_rows = table.n_fibres if isinstance(table, FibreLots) else int(table.lower_um.size)
        seg = SegmentRecord(
            digest=digest,
            path=final,
            kind=kind,
            source_name=item.source_name,
            source_digest=item.source_digest,
            created_at=created_at,
            lot_ids=table.lot_ids,
            n_rows=n_rows,
        )
        ns = _lot_counts(kind, table.offsets, counts)
        lots = [
            LotRecord(lot_id=lot_id, meta=m, segment=digest, kind=kind, index=i, n=int(n))
            for i, (lot_id, m, n) in enumerate(zip(table.lot_ids, metas, ns, strict=True))
        ]
        self._add_to_state(state, seg, lots)
        self._write_manifest(state)
        return seg

    # ------------------------------------------------------------------ listing

    def segments(self) -> list[SegmentRecord]:
        """Committed segments in commit order."""
        return list(self._state.segments)

    def lots(self) -> list[LotRecord]:
        """All lots, in commit order of their segments, then order within the segment."""
        return list(self._state.lots.values())

    def lot(self, lot_id: str) -> LotRecord:
        """The record of one lot; :class:`LotNotFoundError` if the store does not hold it."""
        try:
            return self._state.lots[lot_id]
        except KeyError:
            raise LotNotFoundError([lot_id]) from None

    def segment_path(self, digest: str) -> Path:
        """Path of a committed segment (a distributed engine reads segments by path)."""
        return self._segment(digest).path

    def check_manifest(self, digests: Iterable[str] | None = None) -> None:
        """Compare what ``manifest.json`` says of the given segments (all: None) with the
        segment files themselves: the lots, their order and row counts, and every lot's
        metadata (declared type, instrument, origin...), which the segment's SHA-256
        covers and the manifest, an unsigned index, does not. Grading takes a lot's
        standard and calibration from that metadata and a certificate states it, so an
        edited manifest would change both without a trace. :class:`StoreCorruptError`
        names the first difference."""
        for digest in self._state.by_digest if digests is None else dict.fromkeys(digests):
            seg = self._segment(digest)
            true_seg, true_lots = _index_segment_file(seg.path, digest)
            listed = [self._state.lots.get(x.lot_id) for x in true_lots]
            if (true_seg.lot_ids, true_seg.n_rows, true_lots) == (seg.lot_ids, seg.n_rows, listed):
                continue
            # which of the two changed: the segment file, or the manifest?
            verify_segment_file(seg.path, digest)
            if true_seg.lot_ids != seg.lot_ids or true_seg.n_rows != seg.n_rows:
                raise StoreCorruptError(
                    f"{self._manifest_path}: segment {digest[:12]} holds lots "
                    f"{list(true_seg.lot_ids)[:5]}..., the manifest lists "
                    f"{list(seg.lot_ids)[:5]}...: the manifest was altered"
                )
            for true, rec in zip(true_lots, listed, strict=True):
                if rec != true:
                    got = rec.meta.to_dict() if rec else None
                    want = true.meta.to_dict()
                    what = (
                        ", ".join(
                            f"{k} {got.get(k)!r} (segment: {want.get(k)!r})"
                            for k in sorted(set(got) | set(want))
                            if got.get(k) != want.get(k)
                        )
                        if got
                        else "missing"
                    ) or "its place or size"
                    raise StoreCorruptError(
                        f"{self._manifest_path}: lot {true.lot_id} differs from its segment "
                        f"{digest[:12]}: {what}; the manifest was altered (it is rebuilt "
                        "from the segments if removed)"
                    )

    def _segment(self, digest: str) -> SegmentRecord:
        seg = self._state.by_digest.get(digest)
        if seg is None:
            raise StoreError(f"{self.root}: no segment {digest!r} in the store")
        return seg

    # ------------------------------------------------------------------ reading

    def read_segment(self, digest: str) -> FibreLots | HistogramLots:
        """The whole table of one segment, one ``read_direct`` per dataset."""
        return read_segment_file(self._segment(digest).path)

    def read_lot(self, lot_id: str) -> FibreLots | HistogramLots:
        """One lot's rows only (an HDF5 hyperslab read, not the whole segment)."""
        rec = self.lot(lot_id)
        path = self._segment(rec.segment).path
        table = read_segment_file(path, rec.index)
        check_lot_ids(path, (rec.index,), table.lot_ids, (lot_id,))
        return table

    def verify_segment(self, digest: str) -> None:
        """Recompute the SHA-256 of a segment file; :class:`StoreCorruptError` on mismatch."""
        verify_segment_file(self._segment(digest).path, digest)

    def _resolve(self, lot_ids: Sequence[str], kind: str) -> list[LotRecord]:
        if isinstance(lot_ids, str):
            raise StoreError("lot_ids must be a sequence of lot ids, not a single string")
        ids = list(lot_ids)
        lots = self._state.lots
        missing = [x for x in ids if x not in lots]
        if missing:
            raise LotNotFoundError(missing)
        if len(set(ids)) != len(ids):
            dup = next(x for x, c in Counter(ids).items() if c > 1)
            raise StoreError(f"lot {dup!r} is requested twice")
        recs = [lots[x] for x in ids]
        wrong = [r for r in recs if r.kind != kind]
        if wrong:
            r = wrong[0]
            hint = "read_histograms" if r.kind == "histogram" else "read_fibres"
            what = "histogram classes" if r.kind == "histogram" else "per-fibre measurements"
            raise StoreError(
                f"lot {r.lot_id!r} (segment {r.segment}) holds {what}, not {kind} data; "
                f"read it with {hint}"
            )
        return recs

    def _gather(
        self, lot_ids: Sequence[str] | None, kind: str
    ) -> tuple[list[FibreLots | HistogramLots], list[str] | None]:
        """Per-segment tables holding the requested lots (grouped by segment, in commit
        order), and the requested order when it differs from the grouped order."""
        if lot_ids is None:
            segs = [s for s in self._state.segments if s.kind == kind]
            return [self.read_segment(s.digest) for s in segs], None
        recs = self._resolve(lot_ids, kind)
        wanted: dict[str, list[int]] = {}
        wanted_ids: dict[str, list[str]] = {}
        for r in recs:
            wanted.setdefault(r.segment, []).append(r.index)
            wanted_ids.setdefault(r.segment, []).append(r.lot_id)
        parts: list[FibreLots | HistogramLots] = []
        grouped: list[str] = []
        for seg in self._state.segments:
            idx = wanted.get(seg.digest)
            if idx is None:
                continue
            table = self.read_segment(seg.digest)
            if idx != list(range(table.n_lots)):
                table = table.select(idx)
            check_lot_ids(seg.path, idx, table.lot_ids, wanted_ids[seg.digest])
            parts.append(table)
            grouped.extend(table.lot_ids)
        order = [r.lot_id for r in recs]
        return parts, (None if grouped == order else order)

    def read_fibres(self, lot_ids: Sequence[str] | None = None) -> FibreLots:
        """Per-fibre lots, in the requested order (``None``: every fibre lot, commit order).

        Reads each segment involved once and gathers with numpy; there is no Python loop
        over fibres. An optional column is returned only if every segment read has it
        (``FibreLots.concat``). Unknown ids raise :class:`LotNotFoundError`; a histogram
        lot raises :class:`StoreError`.
        """
        parts, order = self._gather(lot_ids, "fibres")
        fparts = [p for p in parts if isinstance(p, FibreLots)]
        if not fparts:
            return FibreLots.concat([])
        table = fparts[0] if len(fparts) == 1 else FibreLots.concat(fparts)
        if order is not None:
            pos = {x: i for i, x in enumerate(table.lot_ids)}
            table = table.select([pos[x] for x in order])
        return table

    def read_histograms(self, lot_ids: Sequence[str] | None = None) -> HistogramLots:
        """Histogram lots, in the requested order (``None``: every histogram lot)."""
        parts, order = self._gather(lot_ids, "histogram")
        hparts = [p for p in parts if isinstance(p, HistogramLots)]
        if not hparts:
            return HistogramLots.concat([])
        table = hparts[0] if len(hparts) == 1 else HistogramLots.concat(hparts)
        if order is not None:
            pos = {x: i for i, x in enumerate(table.lot_ids)}
            table = table.select([pos[x] for x in order])
        return table

    # ------------------------------------------------------------------ results

    def _result_dir(self, kind: str) -> Path:
        if not isinstance(kind, str) or not _RESULT_KIND_RE.fullmatch(kind):
            raise StoreError(
                f"result kind {kind!r} is not a valid name (letters, digits, '_', '.', '-'; "
                "starting with a letter or digit)"
            )
        return self.root / "results" / kind

    def put_result(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        canonical: Mapping[str, bytes] | None = None,
    ) -> str:
        """Store a result record as canonical JSON; returns its SHA-256 (its name).

        ``canonical`` gives top-level entries already as canonical JSON (a grade result's
        lots, serialised by the tasks that graded them); the stored bytes are the same as
        for the whole object serialised here.

        Idempotent: the same payload gives the same digest and is written once. Result
        writes are atomic and content-addressed, so they do not take the writer lock.
        """
        directory = self._result_dir(kind)
        if not isinstance(payload, dict):
            raise StoreError(f"a {kind} result must be a JSON object, got {type(payload)}")
        with result_json_errors(kind):
            data = _canonical_json(payload, canonical)
        digest = hashlib.sha256(data).hexdigest()
        path = directory / f"{digest}.json"
        if path.exists():
            if digest not in self._logged(kind):
                # written by a run that stopped before logging it: log it now, else it
                # would stay invisible (results() reads logged records only)
                self._audit(AUDIT_ACTION.get(kind, "record"), f"{kind} {digest}", payload, digest)
            return digest
        self._audit_ready()  # a log that cannot record it: the record is not written
        try:
            if not directory.is_dir():
                directory.mkdir(parents=True, exist_ok=True)
                sync_dir(directory.parent)
            _atomic_write(path, data, f"{_TMP_PREFIX}{secrets.token_hex(8)}.json")
        except OSError as e:
            raise StoreError(f"{path}: cannot write result: {e}") from e
        # the audit entry's payload digest is this same SHA-256 of the same canonical bytes
        self._audit(AUDIT_ACTION.get(kind, "record"), f"{kind} {digest}", payload, digest)
        return digest

    def _audit(
        self,
        action: str,
        subject: str,
        payload: dict[str, Any],
        payload_digest: str | None = None,
    ) -> None:
        """Log a step that wrote something new (after its commit; see fibergrade.audit)."""
        from fibergrade.audit import AuditLog

        AuditLog(self.root).append(action, subject, payload, payload_digest=payload_digest)

    def _audit_import(self, seg: SegmentRecord) -> None:
        """Log an import, naming its segment and lots in the entry (the entry's hash covers
        them): :meth:`check_files` can then tell a logged segment that went missing, and
        an import refuses a lot id a missing segment held (raw data is never rewritten)."""
        from fibergrade.audit import AuditLog

        AuditLog(self.root).append(
            "import",
            seg.source_name,
            _import_payload(seg),
            extra={"segment": seg.digest, "lots": list(seg.lot_ids)},
        )

    def _audit_ready(self) -> None:
        """Refuse, before anything is stored, a write the audit log could not record: a log
        that disagrees with its head.json (emptied, deleted, cut short, edited at its end)
        or cannot be read (:class:`~fibergrade.audit.AuditError`, exit code 3). A torn last
        line is repaired here, as the append would."""
        from fibergrade.audit import AuditLog

        AuditLog(self.root).position()

    def _load_result(self, path: Path, digest: str) -> dict[str, Any]:
        try:
            data = path.read_bytes()
        except OSError as e:
            raise StoreError(f"{path}: cannot read result: {e}") from e
        if hashlib.sha256(data).hexdigest() != digest:
            raise StoreCorruptError(f"{path}: content does not match the digest in its name")
        try:
            payload = json.loads(data)
        except ValueError as e:
            raise StoreCorruptError(f"{path}: not valid JSON: {e}") from e
        if not isinstance(payload, dict):
            raise StoreCorruptError(f"{path}: a result record must be a JSON object")
        return payload

    def _import_logged(self, seg: SegmentRecord) -> bool:
        from fibergrade.audit import AuditLog, digest

        return digest(_import_payload(seg)) in AuditLog(self.root).logged_payloads()

    def unlogged_segments(self) -> list[SegmentRecord]:
        """Committed segments whose import the audit log does not record: one committed by
        a run that stopped before logging it (importing the file again logs it), or a
        file placed in ``segments/`` by hand (the store indexes any valid segment it
        finds there)."""
        from fibergrade.audit import AuditLog, digest

        logged = AuditLog(self.root).logged_payloads()
        return [s for s in self._state.segments if digest(_import_payload(s)) not in logged]

    def _logged(self, kind: str) -> set[str]:
        """The SHA-256 of every ``kind`` record the audit log names."""
        from fibergrade.audit import AuditLog

        return AuditLog(self.root).logged_results().get(kind, set())

    def get_result(self, kind: str, digest: str) -> dict[str, Any]:
        """A stored result record; its bytes are checked against ``digest``, and the audit
        log must name it (a record no step logged was not written by this software)."""
        directory = self._result_dir(kind)
        if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest):
            raise StoreError(f"{digest!r} is not a SHA-256 hex digest")
        path = directory / f"{digest}.json"
        if not path.exists():
            raise StoreError(f"{self.root}: no {kind} result {digest}")
        if digest not in self._logged(kind):
            raise StoreCorruptError(
                f"{path}: the audit log does not record this {kind} result; it was not "
                "written by a completed fibergrade step (left by a stopped run, or placed "
                "there by hand)"
            )
        return self._load_result(path, digest)

    def results(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        """All ``(digest, payload)`` of a kind that the audit log records, sorted by
        ``payload["created_at"]`` (missing sorts first) then digest.

        A file the log does not name is left out (a run stopped between writing it and
        logging it, or it was placed by hand; ``fibergrade audit verify`` lists them), and
        a logged record whose file is gone is :class:`StoreCorruptError`: deleting a
        revocation or a reissued certificate must not bring the old certificate back."""
        directory = self._result_dir(kind)
        # the log first: a record is written before it is logged, so whatever the log names
        # now is on disk for the listing (in the other order, a record written and logged
        # in between would look deleted)
        logged = set(self._logged(kind))
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            names = []
        except OSError as e:
            raise StoreError(f"{directory}: cannot list results: {e}") from e
        present = set()
        out = []
        for name in names:
            m = _RESULT_NAME_RE.fullmatch(name)
            if m and m.group(1) in logged:
                present.add(m.group(1))
                out.append((m.group(1), self._load_result(directory / name, m.group(1))))
        missing = logged - present
        if missing:
            raise StoreCorruptError(
                f"{directory}: {len(missing)} {kind} record(s) that the audit log records "
                f"are missing (first: {sorted(missing)[0]}.json); a deleted record would "
                "change what the store says"
            )
        out.sort(key=lambda r: (str(r[1].get("created_at") or ""), r[0]))
        return out

    def unlogged_results(self) -> list[Path]:
        """Result files the audit log does not record (see :meth:`results`)."""
        from fibergrade.audit import AuditLog

        logged = AuditLog(self.root).logged_results()
        out = []
        base = self.root / "results"
        for kind in sorted(os.listdir(base)) if base.is_dir() else []:
            d = base / kind
            if not d.is_dir():
                continue
            for name in sorted(os.listdir(d)):
                m = _RESULT_NAME_RE.fullmatch(name)
                if m and m.group(1) not in logged.get(kind, set()):
                    out.append(d / name)
        return out

    def check_files(
        self, progress: Callable[[int, int], None] | None = None
    ) -> list[tuple[Path, str]]:
        """Recompute the SHA-256 of every result record the audit log names and of every
        committed segment, each file read once, and compare it with the digest in the
        file's name (what the log, the manifest and certificates refer to it by). Returns
        ``(path, what is wrong)`` for each file that is missing, unreadable or altered,
        all of them, not only the first; empty when every one matches. Segments this
        object hashed when it loaded them (recovered into the manifest) are not read
        again. ``progress(done, total)`` is called after each file (a store of many
        gigabytes takes minutes). :class:`~fibergrade.audit.AuditTamperError` when the
        log cannot say which records it names."""
        from fibergrade.audit import AuditLog

        log = AuditLog(self.root)
        logged = log.logged_results()
        base = self.root / "results"
        records = [
            (base / kind / f"{d}.json", d) for kind in sorted(logged) for d in sorted(logged[kind])
        ]
        segments = [s for s in self._state.segments if s.digest not in self._hashed]
        total = len(records) + len(segments)
        bad: list[tuple[Path, str]] = [
            (
                self._segments_dir / f"{d}.h5",
                f"{self._segments_dir / (d + '.h5')}: the segment of {len(lots)} lot(s) "
                f"({', '.join(lots[:3])}{' ...' if len(lots) > 3 else ''}) imported from "
                f"{source!r}, which the audit log records, is missing (raw data is never "
                "removed; restore it from a backup)",
            )
            for d, (source, lots) in sorted(log.logged_imports().items())
            # not known when this store was opened, and not on disk now: an import that
            # ran since is on disk (its segment is committed before it is logged)
            if d not in self._state.by_digest and not (self._segments_dir / f"{d}.h5").exists()
        ]
        done = 0
        for path, d in records:
            try:
                actual = sha256_file(path)
            except FileNotFoundError:
                bad.append(
                    (
                        path,
                        f"{path}: a {path.parent.name} record the audit log records is "
                        "missing (records deleted after they were logged change what the "
                        "store says)",
                    )
                )
            except OSError as e:
                bad.append((path, f"{path}: cannot read result: {e.strerror or e}"))
            else:
                if actual != d:
                    bad.append(
                        (
                            path,
                            f"{path}: content digest is {actual}, expected {d} (the digest in "
                            "its name, which the audit log records): the record was altered "
                            "after it was written",
                        )
                    )
            done += 1
            if progress is not None:
                progress(done, total)
        for seg in segments:
            try:
                verify_segment_file(seg.path, seg.digest)
            except StoreCorruptError as e:
                bad.append((seg.path, str(e)))
            done += 1
            if progress is not None:
                progress(done, total)
        return bad
