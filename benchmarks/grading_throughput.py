#!/usr/bin/env python
"""Grading throughput: fibres per second for six ways of reading or grading the same fibres.

Usage::

    python benchmarks/grading_throughput.py [--fibres N] [--lot-size 4000] [--json] [--out FILE]

All figures come from one run on one synthetic array (log-normal diameters around 16 um,
lots of ``--lot-size`` fibres), each the best of a few repeats:

(a) ``ceiling``    one read pass over the float32 array (``np.sum``);
(b) ``baseline``   a plain per-lot Python loop with ``np.histogram`` + mean/SD per lot;
(c) ``reference``  :func:`fibergrade.distribution.summarise_reference`, in chunks of lots;
(d) ``fast``       :func:`fibergrade.distribution.summarise` with ``engine="fast"``;
(e) ``store``      from an embedded store on disk: ``workflow.summarise_lots`` + ``grade``;
(f) ``h5py_read``  a plain h5py read of the diameter dataset of every segment file.

Ratios (d)/(a), (d)/(b), (e)/(f) and the peak memory of (e), measured in a child process,
are reported against the targets of issue 2. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "grading_throughput.json"
FIGURE_KEYS = ("ceiling", "baseline", "reference", "fast", "store", "h5py_read")
#: targets of issue 2 ("Benchmark"); memory is an upper bound, the others lower bounds
TARGETS = {
    "fast_vs_ceiling": (">=", 0.25),
    "fast_vs_baseline": (">=", 20.0),
    "store_vs_h5py_read": (">=", 0.5),
    "store_peak_memory_vs_raw": ("<=", 2.0),
}
#: the standard the store path grades by (the issue's example scheme for cashmere)
STANDARD_ID = "us-wpla-cashmere"
SEED = 20261120


# --------------------------------------------------------------------------- helpers


def _count(text: str) -> int:
    """A positive whole number, accepting ``100000000`` or ``1e8``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value.is_integer() or value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(value)


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float]]:
    """Best wall time of ``repeats`` calls (garbage collected before each)."""
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), times


def _maxrss_bytes(who: int) -> int:
    """``ru_maxrss`` in bytes (Linux reports KiB, macOS bytes)."""
    rss = resource.getrusage(who).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def _current_rss_bytes() -> int | None:
    """Resident set size now (Linux ``/proc/self/statm``), or None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            resident_pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# --------------------------------------------------------------------------- data


def make_fibres(n_fibres: int, lot_size: int, seed: int = SEED):
    """Synthetic lots: per-lot MFD 14-18 um and CV 18-24 %, log-normal diameters.

    Vectorised, in blocks of ~10^7 fibres to bound temporaries. Values lie within the
    accepted range [1, 200] um by construction: any draw outside it is redrawn, never
    clipped (with these parameters a redraw practically never happens).
    """
    from fibergrade.measurements import DIAMETER_MAX_UM, MM_SUSPECT_BELOW_UM, FibreLots

    n_lots = -(-n_fibres // lot_size)
    sizes = np.full(n_lots, lot_size, np.int64)
    sizes[-1] = n_fibres - lot_size * (n_lots - 1)
    offsets = np.zeros(n_lots + 1, np.int64)
    np.cumsum(sizes, out=offsets[1:])

    rng = np.random.default_rng(seed)
    mfd = rng.uniform(14.0, 18.0, n_lots)
    cv = rng.uniform(0.18, 0.24, n_lots)
    sigma = np.sqrt(np.log1p(cv * cv))
    mu = (np.log(mfd) - 0.5 * sigma * sigma).astype(np.float32)
    sigma = sigma.astype(np.float32)

    d = np.empty(n_fibres, np.float32)
    block = max(1, 10_000_000 // lot_size)
    lo, hi = np.float32(MM_SUSPECT_BELOW_UM), np.float32(DIAMETER_MAX_UM)
    for l0 in range(0, n_lots, block):
        l1 = min(n_lots, l0 + block)
        s, e = int(offsets[l0]), int(offsets[l1])
        m = np.repeat(mu[l0:l1], sizes[l0:l1])
        sg = np.repeat(sigma[l0:l1], sizes[l0:l1])
        z = rng.standard_normal(e - s, dtype=np.float32)
        z *= sg
        z += m
        out = d[s:e]
        np.exp(z, out=out)
        bad = np.flatnonzero(~((out >= lo) & (out <= hi)))
        while bad.size:  # redraw out-of-range values (terminates with probability 1)
            out[bad] = np.exp(m[bad] + sg[bad] * rng.standard_normal(bad.size, np.float32))
            bad = bad[~((out[bad] >= lo) & (out[bad] <= hi))]
    lot_ids = tuple(f"BENCH-{i:07d}" for i in range(n_lots))
    return FibreLots(lot_ids=lot_ids, offsets=offsets, diameter_um=d)


def lot_chunks(lots, max_lots: int, n_lots: int | None = None) -> list:
    """The first ``n_lots`` lots (default all) as tables of at most ``max_lots`` lots (views)."""
    from fibergrade.measurements import FibreLots

    total = lots.n_lots if n_lots is None else min(n_lots, lots.n_lots)
    out = []
    for l0 in range(0, total, max_lots):
        l1 = min(total, l0 + max_lots)
        s, e = int(lots.offsets[l0]), int(lots.offsets[l1])
        out.append(
            FibreLots(
                lot_ids=lots.lot_ids[l0:l1],
                offsets=lots.offsets[l0 : l1 + 1] - s,
                diameter_um=lots.diameter_um[s:e],
            )
        )
    return out


# --------------------------------------------------------------------------- figures


def user_loop(d: np.ndarray, offsets: np.ndarray, n_lots: int) -> list:
    """(b) What a user would write: per lot, a 1-um histogram and the mean and SD."""
    out = []
    for i in range(n_lots):
        x = d[offsets[i] : offsets[i + 1]]
        counts, _ = np.histogram(x, bins=200, range=(0.0, 200.0))
        out.append((counts, x.mean(), x.std(ddof=1)))
    return out


def store_pass(store, standard) -> Any:
    """(e) Read every stored lot segment by segment, summarise and grade (no records)."""
    from fibergrade.grading import grade
    from fibergrade.workflow import summarise_lots

    summary = summarise_lots(store, store.lots(), standard.cut_um, "fast")
    return grade(summary, standard)


def h5py_pass(paths: list[Path]) -> int:
    """(f) A plain h5py read of each segment's diameters, one segment at a time."""
    import h5py

    n = 0
    for p in paths:
        with h5py.File(p, "r") as f:
            a = f["fibres/diameter_um"][...]
        n += a.size
        del a
    return n


def build_store(root: Path, lots, segment_fibres: int) -> tuple[Any, float]:
    """A store holding ``lots`` in segments of about ``segment_fibres`` fibres."""
    from fibergrade.measurements import LotMeta
    from fibergrade.store import Store

    store = Store.open(root)
    lots_per_segment = max(1, round(segment_fibres / max(1, int(np.diff(lots.offsets).max()))))
    t0 = time.perf_counter()
    for k, part in enumerate(lot_chunks(lots, lots_per_segment)):
        meta = {x: LotMeta(x, declared_type="cashmere") for x in part.lot_ids}
        tag = f"fibergrade benchmark segment {k} of {lots.n_fibres} fibres, seed {SEED}"
        store.import_fibres(
            part,
            meta,
            source_name=f"bench-{k:04d}.csv",
            source_digest=hashlib.sha256(tag.encode()).hexdigest(),
        )
    return store, time.perf_counter() - t0


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux >= 4.0, ``clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _peak_rss_bytes() -> int:
    """Peak resident set size: ``VmHWM`` (honours a reset), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return _maxrss_bytes(resource.RUSAGE_SELF)


def memory_child(root: str) -> None:
    """Child process: grade the store once and report RSS before and at peak (JSON)."""
    from fibergrade.distribution import summarise
    from fibergrade.grading import load_standard
    from fibergrade.measurements import FibreLots
    from fibergrade.store import Store

    standard = load_standard(STANDARD_ID)
    store = Store.open(root, create=False)
    # load the compiled kernel and start its threads so that is not counted as growth
    tiny = FibreLots(("w",), np.array([0, 3]), np.array([15.0, 16.0, 17.0], np.float32))
    summarise(tiny, engine="fast")
    gc.collect()
    reset = _reset_peak_rss()
    rss_before = _current_rss_bytes()
    t0 = time.perf_counter()
    store_pass(store, standard)
    seconds = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "rss_before_bytes": rss_before,
                "peak_rss_bytes": _peak_rss_bytes(),
                "peak_reset": reset,
                "seconds": seconds,
            }
        )
    )


def measure_store_memory(root: Path, n_fibres: int) -> dict[str, Any]:
    """Run :func:`memory_child` in a fresh interpreter; peak RSS growth vs raw diameters."""
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--memory-child", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory child failed ({proc.returncode}):\n{proc.stderr}")
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    before = child["rss_before_bytes"]
    peak = child["peak_rss_bytes"]
    if before is None:  # no /proc: growth over nothing, an upper bound
        before = 0
    growth = max(0, peak - before)
    raw = 4 * n_fibres
    if child["peak_reset"]:
        method = (
            "fresh interpreter (subprocess): store opened and kernel loaded first, peak-RSS "
            "mark reset (/proc/self/clear_refs), then one summarise_lots + grade pass; "
            "growth = VmHWM after the pass - VmRSS before it"
        )
    else:
        method = (
            "fresh interpreter (subprocess): peak-RSS mark could not be reset, so growth = "
            "lifetime peak RSS - RSS before the pass, an upper bound"
        )
    return {
        "raw_diameter_bytes": raw,
        "child_rss_before_bytes": before,
        "child_peak_rss_bytes": peak,
        "peak_growth_bytes": growth,
        "peak_growth_vs_raw": growth / raw,
        "peak_reset": child["peak_reset"],
        "child_store_seconds_cold_process": child["seconds"],
        "method": method,
    }


# --------------------------------------------------------------------------- run


def in_memory_figures(lots, args: argparse.Namespace, record: Callable, say: Callable) -> None:
    """(a) to (d), all on the same in-memory array."""
    import numba

    from fibergrade.distribution import summarise, summarise_reference

    d, off, n_lots, n = lots.diameter_um, lots.offsets, lots.n_lots, lots.n_fibres

    # (a) and (d) take turns, as (e) and (f) do, so that a slow spell of the machine falls
    # on both sides of the ratio (d)/(a) rather than on one of them
    say("(a) ceiling and (d) fast, interleaved (after one warm-up call of the kernel) ...")
    summarise(lots, engine="fast")  # warm-up: JIT / on-disk cache load, thread pool start
    a_times: list[float] = []
    d_times: list[float] = []
    for _ in range(args.repeats):
        a_times += best_of(lambda: np.sum(d), 1)[1]
        d_times += best_of(lambda: summarise(lots, engine="fast"), 1)[1]
    record("ceiling", n, min(a_times), a_times, "np.sum over the whole float32 array (one thread)")
    record(
        "fast",
        n,
        min(d_times),
        d_times,
        f"summarise(engine='fast') on all {n_lots:,} lots in one call "
        f"({numba.get_num_threads()} numba threads)",
    )

    base_lots = min(n_lots, args.baseline_lots)
    say(f"(b) baseline: per-lot np.histogram loop over {base_lots:,} lots ...")
    best, times = best_of(lambda: user_loop(d, off, base_lots), args.baseline_repeats)
    record(
        "baseline",
        int(off[base_lots]),
        best,
        times,
        f"Python loop over the first {base_lots:,} of {n_lots:,} lots: np.histogram "
        "(200 x 1-um classes) + mean + std(ddof=1) per lot",
    )

    ref_lots = n_lots if args.reference_lots is None else min(n_lots, args.reference_lots)
    chunks = lot_chunks(lots, args.reference_chunk, ref_lots)
    say(f"(c) reference: summarise_reference over {ref_lots:,} lots in {len(chunks)} chunks ...")
    best, times = best_of(lambda: [summarise_reference(c) for c in chunks], args.reference_repeats)
    record(
        "reference",
        int(off[ref_lots]),
        best,
        times,
        f"summarise_reference on {'all' if ref_lots == n_lots else 'the first'} "
        f"{ref_lots:,} lots, called on {len(chunks)} chunk(s) of <= {args.reference_chunk:,} "
        "lots (it allocates lots x 2000 class counts); time = sum over chunks, best pass",
    )


def store_figures(
    root: Path, lots, args: argparse.Namespace, record: Callable, say: Callable
) -> dict[str, Any]:
    """(e) and (f), the store's peak memory and the extras; ``lots`` is only imported."""
    from fibergrade.grading import load_standard
    from fibergrade.store import Store
    from fibergrade.workflow import grade_lots

    n = lots.n_fibres
    standard = load_standard(STANDARD_ID)
    say(f"building a store of ~{args.segment_fibres:,}-fibre segments in {root} ...")
    store, build_s = build_store(root, lots, args.segment_fibres)
    segs = store.segments()
    paths = [store.segment_path(s.digest) for s in segs]
    stored = sum(s.n_rows for s in segs)
    if stored != n:
        raise RuntimeError(f"the store holds {stored} fibres, expected {n}")

    say("(e) store and (f) h5py read, interleaved ...")
    store_pass(store, standard)  # warm-up (the files are in the page cache after the import)
    h5py_pass(paths)
    e_times: list[float] = []
    f_times: list[float] = []
    for _ in range(args.repeats):
        f_times += best_of(lambda: h5py_pass(paths), 1)[1]
        e_times += best_of(lambda: store_pass(store, standard), 1)[1]
    record(
        "store",
        n,
        min(e_times),
        e_times,
        "workflow.summarise_lots(store, store.lots()) + grading.grade under "
        f"{STANDARD_ID}, {len(segs)} segment(s) one at a time, their diameters "
        "memory-mapped; store already open; "
        "per-lot dict records not built (see details.grade_lots_records)",
    )
    record(
        "h5py_read",
        n,
        min(f_times),
        f_times,
        f"h5py.File(seg)['fibres/diameter_um'][...] for each of {len(segs)} segment file(s)",
    )

    say("store memory: one grading pass in a fresh child process ...")
    memory = measure_store_memory(root, n)

    # grade_lots builds a dict record per lot and picks each lot's standard by its declared
    # type, which is not reading + grading; timed once, on the first segment's lots only
    first = [r.lot_id for r in store.lots() if r.segment == segs[0].digest]
    first_fibres = sum(r.n for r in store.lots() if r.segment == segs[0].digest)
    say(f"extra: workflow.grade_lots(store, {len(first):,} lots, record=False), once ...")
    gl_best = best_of(lambda: grade_lots(store, first, record=False), 1)[0]
    t0 = time.perf_counter()
    Store.open(root, create=False)
    open_s = time.perf_counter() - t0
    return {
        "segments": len(segs),
        "memory": memory,
        "grade_lots_records": {
            "fibres_per_s": first_fibres / gl_best,
            "seconds": gl_best,
            "lots": len(first),
            "fibres": first_fibres,
            "what": "workflow.grade_lots(store, <lots of the first segment>, record=False): "
            "standard chosen per lot by declared type, summarise + grade, per-lot dict "
            "records (LotSummary.to_records, GradeResult.records); not the store figure",
        },
        "store_open_s": open_s,
        "store_build_s": build_s,
    }


def run(args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    import h5py
    import numba

    from fibergrade import __version__

    n, lot_size = args.fibres, args.lot_size
    load_start = _loadavg()
    t_start = time.perf_counter()
    figures: dict[str, float] = {}
    info: dict[str, dict[str, Any]] = {}

    def record(key: str, fibres: int, best: float, times: list[float], what: str) -> None:
        figures[key] = fibres / best
        info[key] = {
            "fibres_per_s": fibres / best,
            "fibres": fibres,
            "best_s": best,
            "times_s": times,
            "what": what,
        }

    say(f"generating {n:,} fibres in lots of {lot_size:,} ...")
    t0 = time.perf_counter()
    lots = make_fibres(n, lot_size)
    gen_s = time.perf_counter() - t0
    n_lots = lots.n_lots
    in_memory_figures(lots, args, record, say)
    with tempfile.TemporaryDirectory(prefix="fibergrade-bench-") as tmp:
        extra = store_figures(Path(tmp) / "store", lots, args, record, say)

    memory = extra.pop("memory")
    ratios = {
        "fast_vs_ceiling": figures["fast"] / figures["ceiling"],
        "fast_vs_baseline": figures["fast"] / figures["baseline"],
        "store_vs_h5py_read": figures["store"] / figures["h5py_read"],
        "store_peak_memory_vs_raw": memory["peak_growth_vs_raw"],
    }
    met = {
        k: bool(ratios[k] >= lim) if op == ">=" else bool(ratios[k] <= lim)
        for k, (op, lim) in TARGETS.items()
    }
    details = {
        "fibres": n,
        "lot_size": lot_size,
        "lots": n_lots,
        "segment_fibres_target": args.segment_fibres,
        "standard": STANDARD_ID,
        "units": "fibres per second, best of the repeats listed in times_s",
        "figures": info,
        "targets": {k: {"op": op, "value": v} for k, (op, v) in TARGETS.items()},
        "met": met,
        "memory": memory,
        **extra,
        "generate_s": gen_s,
        "total_s": time.perf_counter() - t_start,
        "loadavg_start": load_start,
        "loadavg_end": _loadavg(),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "numba": numba.__version__,
            "numba_threads": numba.get_num_threads(),
            "h5py": h5py.__version__,
            "hdf5": h5py.version.hdf5_version,
            "fibergrade": __version__,
        },
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return {**{k: figures[k] for k in FIGURE_KEYS}, "ratios": ratios, "details": details}


def render(doc: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    det = doc["details"]
    t = Table(
        title=f"fibergrade grading throughput: {det['fibres']:,} fibres, "
        f"{det['lots']:,} lots of {det['lot_size']:,}"
    )
    t.add_column("figure")
    t.add_column("fibres/s", justify="right")
    t.add_column("x ceiling", justify="right")
    t.add_column("best s", justify="right")
    t.add_column("fibres timed", justify="right")
    labels = dict(zip(FIGURE_KEYS, "abcdef", strict=True))
    for k in FIGURE_KEYS:
        f = det["figures"][k]
        t.add_row(
            f"({labels[k]}) {k}",
            f"{doc[k]:,.3g}",
            f"{doc[k] / doc['ceiling']:.3f}",
            f"{f['best_s']:.3f}",
            f"{f['fibres']:,}",
        )
    console.print(t)
    for k in FIGURE_KEYS:
        console.print(f"  ({labels[k]}) {det['figures'][k]['what']}", highlight=False)

    r = Table(title="ratios against the targets of issue 2")
    r.add_column("ratio")
    r.add_column("value", justify="right")
    r.add_column("target", justify="right")
    r.add_column("met")
    names = {
        "fast_vs_ceiling": "(d)/(a) fast / ceiling",
        "fast_vs_baseline": "(d)/(b) fast / baseline",
        "store_vs_h5py_read": "(e)/(f) store / h5py read",
        "store_peak_memory_vs_raw": "store peak RSS growth / raw diameter bytes",
    }
    for k, v in doc["ratios"].items():
        op, lim = TARGETS[k]
        ok = det["met"][k]
        r.add_row(names[k], f"{v:.3g}", f"{op} {lim:g}", "[green]yes[/]" if ok else "[red]no[/]")
    console.print(r)
    m = det["memory"]
    console.print(
        f"store memory: peak RSS growth {m['peak_growth_bytes'] / 2**20:,.0f} MiB for "
        f"{m['raw_diameter_bytes'] / 2**20:,.0f} MiB of raw diameters "
        f"(limit {2 * m['raw_diameter_bytes'] / 2**20:,.0f} MiB)"
    )
    gl = det["grade_lots_records"]
    console.print(
        f"grade_lots(record=False) incl. per-lot records: {gl['fibres_per_s']:,.3g} fibres/s; "
        f"store open {det['store_open_s']:.3f} s; store build {det['store_build_s']:.1f} s; "
        f"total {det['total_s']:.0f} s; load average {det['loadavg_start']} -> "
        f"{det['loadavg_end']}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fibres", type=_count, default=10**8, help="fibres in total (10^8)")
    p.add_argument("--lot-size", type=_count, default=4000, help="fibres per lot (4000)")
    p.add_argument("--json", action="store_true", help="print only the JSON object to stdout")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON file ({DEFAULT_OUT})")
    p.add_argument("--repeats", type=_count, default=5, help="rounds of (a)/(d) and (e)/(f) (5)")
    p.add_argument("--baseline-lots", type=_count, default=2000, help="lots timed for (b)")
    p.add_argument("--baseline-repeats", type=_count, default=2, help="repeats of (b) (2)")
    p.add_argument("--reference-lots", type=_count, default=None, help="lots timed for (c) (all)")
    p.add_argument("--reference-chunk", type=_count, default=2000, help="lots per (c) call")
    p.add_argument("--reference-repeats", type=_count, default=2, help="repeats of (c) (2)")
    p.add_argument(
        "--segment-fibres", type=_count, default=10**7, help="fibres per store segment (10^7)"
    )
    p.add_argument("--memory-child", metavar="STORE", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child)
        return 0
    from rich.console import Console

    err = Console(stderr=True)
    doc = run(args, lambda msg: err.print(f"[dim]{msg}[/]"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    if args.json:
        render(doc, err)
        sys.stdout.write(json.dumps(doc, allow_nan=False) + "\n")
    else:
        render(doc, Console())
        err.print(f"[dim]wrote {args.out}[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
