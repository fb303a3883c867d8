#!/usr/bin/env python
"""Acquisition throughput: does live acquisition keep up with an analyser at 115200 baud?

Usage::

    python benchmarks/acquisition_throughput.py [--seconds 10] [--baud 115200] [--json] [--out FILE]

Three measurements in one run, all with the real reader (``AnalyserReader``):

(a) ``paced``    a simulated analyser streams on a real pty, paced as a serial line at
                 ``--baud`` (8N1: baud / 10 bytes per second, 11520 at 115200), for about
                 ``--seconds``; :func:`fibergrade.acquisition.acquire_samples` reads it and
                 commits every sample into a temporary store. Reported: lines parsed per
                 second against the line rate of the serial line, lost lines (sent minus
                 read: must be 0), bad samples (must be 0), and the reading thread's CPU
                 time as a share of the wall time.
(b) ``parser``   the reader alone, unpaced, on the same kind of stream held in memory (no
                 pty, no store): lines per second, i.e. the headroom over the line rate.
(c) ``unpaced``  acquisition from the pty with the simulator unpaced (as fast as the reader
                 takes it), store commits included.

The ratios are measured in the same run; see ``benchmarks/README.md``. Exit status 1 when a
line or a sample was lost in (a).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "acquisition_throughput.json"
SEED = 20261122


def make_stream(n_samples: int, fibres: int, seed: int) -> tuple[list[Any], list[bytes]]:
    """Synthetic samples (the simulator's generator) and their protocol lines."""
    from fibergrade.adapters import analyser
    from fibergrade.adapters.simulators import synthetic_samples

    samples = list(synthetic_samples(n_samples, fibres=fibres, seed=seed))
    lines = [line for sid, d, c in samples for line in analyser.format_sample(sid, d, c)]
    return samples, lines


def acquire_from_simulator(samples: list[Any], bytes_per_s: float | None) -> dict[str, Any]:
    """Stream ``samples`` on a pty (paced at ``bytes_per_s``, or unpaced) and acquire them
    into a temporary store; returns the figures."""
    from fibergrade.acquisition import acquire_samples
    from fibergrade.adapters.analyser import AnalyserReader
    from fibergrade.adapters.profiles import load_profile
    from fibergrade.adapters.simulators import AnalyserSimulator, Simulator
    from fibergrade.store import Store

    profile = load_profile("analyser-line")
    device = AnalyserSimulator(samples, bytes_per_s=bytes_per_s)
    with tempfile.TemporaryDirectory(prefix="fg-acq-bench-") as tmp:
        store = Store.open(Path(tmp) / "store", create=True)
        with Simulator(device) as sim, AnalyserReader.open(profile, sim.url) as reader:
            cpu0 = time.thread_time()
            run = acquire_samples(
                store,
                reader,
                profile=profile.name,
                max_samples=len(samples),
                idle_timeout_s=5.0,
            )
            cpu = time.thread_time() - cpu0
            for seg in store.segments():
                store.verify_segment(seg.digest)
    return {
        "samples_sent": len(samples),
        "samples_committed": len(run.committed),
        "bad_samples": len(run.errors),
        "lines_sent": device.lines_sent,
        "lines_read": run.lines_read,
        "lost_lines": device.lines_sent - run.lines_read,
        "garbage_lines": run.discarded_lines,
        "elapsed_s": run.elapsed_s,
        "lines_per_s": run.lines_read / run.elapsed_s if run.elapsed_s > 0 else math.nan,
        "reader_cpu_s": cpu,
        "ended": run.ended,
    }


def parser_alone(lines: list[bytes], repeats: int) -> dict[str, Any]:
    """Lines per second of the reader on an in-memory stream (best of ``repeats``)."""
    from fibergrade.adapters.analyser import AnalyserReader
    from fibergrade.adapters.transport import ReplayPort, Transport

    data = b"".join(lines)
    times = []
    for _ in range(repeats):
        reader = AnalyserReader(
            Transport(ReplayPort.from_bytes(data, chunk=4096), max_line=256), line_timeout_s=1.0
        )
        t0 = time.perf_counter()
        n = sum(1 for _ in reader.samples(idle_timeout_s=0.01))
        times.append(time.perf_counter() - t0)
        if reader.lines_read != len(lines) or reader.discarded:
            raise RuntimeError("the in-memory stream did not parse cleanly")
    best = min(times)
    return {"lines": len(lines), "samples": n, "times_s": times, "lines_per_s": len(lines) / best}


def run(args: argparse.Namespace, say) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    t_start = time.perf_counter()
    bytes_per_s = args.baud / 10.0  # 8N1: start bit, 8 data bits, stop bit
    _, probe_lines = make_stream(2, args.fibres, SEED)
    mean_line = sum(map(len, probe_lines)) / len(probe_lines)
    line_rate = bytes_per_s / mean_line
    n_paced = max(1, round(args.seconds * line_rate / (args.fibres + 1)))
    samples, lines = make_stream(n_paced, args.fibres, SEED)
    mean_line = sum(map(len, lines)) / len(lines)
    line_rate = bytes_per_s / mean_line

    say(
        f"(a) {n_paced} samples x {args.fibres} fibres ({len(lines):,} lines, "
        f"{mean_line:.1f} bytes/line) paced at {args.baud} baud = {bytes_per_s:.0f} bytes/s "
        f"= {line_rate:.0f} lines/s, about {len(lines) / line_rate:.1f} s"
    )
    paced = acquire_from_simulator(samples, bytes_per_s)
    say(
        f"    read {paced['lines_read']:,} of {paced['lines_sent']:,} lines in "
        f"{paced['elapsed_s']:.2f} s, lost {paced['lost_lines']}, bad samples "
        f"{paced['bad_samples']}"
    )

    parser_lines = make_stream(max(1, args.parser_lines // (args.fibres + 1)), args.fibres, SEED)[1]
    say(f"(b) the reader alone on {len(parser_lines):,} lines in memory, best of {args.repeats}")
    parser = parser_alone(parser_lines, args.repeats)

    n_unpaced = max(1, args.unpaced_samples)
    say(f"(c) {n_unpaced} samples unpaced over the pty, committed to a store")
    unpaced = acquire_from_simulator(make_stream(n_unpaced, args.fibres, SEED + 1)[0], None)

    ratios = {
        "paced_parsed_vs_line_rate": paced["lines_per_s"] / line_rate,
        "parser_vs_line_rate": parser["lines_per_s"] / line_rate,
        "unpaced_acquire_vs_line_rate": unpaced["lines_per_s"] / line_rate,
        "reader_cpu_share_paced": paced["reader_cpu_s"] / paced["elapsed_s"]
        if paced["elapsed_s"] > 0
        else math.nan,
    }
    kept_up = (
        paced["lost_lines"] == 0
        and paced["bad_samples"] == 0
        and paced["samples_committed"] == paced["samples_sent"]
    )
    return {
        "line_rate_lines_per_s": line_rate,
        "paced_lines_per_s": paced["lines_per_s"],
        "parser_lines_per_s": parser["lines_per_s"],
        "unpaced_acquire_lines_per_s": unpaced["lines_per_s"],
        "lost_lines": paced["lost_lines"],
        "kept_up": kept_up,
        "ratios": {k: round(v, 4) for k, v in ratios.items()},
        "details": {
            "baud": args.baud,
            "bytes_per_s": bytes_per_s,
            "mean_line_bytes": round(mean_line, 2),
            "fibres_per_sample": args.fibres,
            "paced": paced,
            "parser": parser,
            "unpaced": unpaced,
            "total_s": round(time.perf_counter() - t_start, 2),
            "machine": {
                "python": platform.python_version(),
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
            },
        },
    }


def render(doc: dict[str, Any], console) -> None:  # type: ignore[no-untyped-def]
    from rich.table import Table

    r = doc["ratios"]
    t = Table(title=f"acquisition at {doc['details']['baud']} baud (8N1)")
    t.add_column("measurement")
    t.add_column("lines/s", justify="right")
    t.add_column("x line rate", justify="right")
    t.add_row("line rate of the serial line", f"{doc['line_rate_lines_per_s']:,.0f}", "1.00")
    t.add_row(
        "(a) acquired, paced stream on a pty",
        f"{doc['paced_lines_per_s']:,.0f}",
        f"{r['paced_parsed_vs_line_rate']:.2f}",
    )
    t.add_row(
        "(b) reader alone, in memory",
        f"{doc['parser_lines_per_s']:,.0f}",
        f"{r['parser_vs_line_rate']:.1f}",
    )
    t.add_row(
        "(c) acquired, unpaced stream on a pty",
        f"{doc['unpaced_acquire_lines_per_s']:,.0f}",
        f"{r['unpaced_acquire_vs_line_rate']:.1f}",
    )
    console.print(t)
    p = doc["details"]["paced"]
    verdict = "[green]kept up[/]" if doc["kept_up"] else "[bold red]DID NOT KEEP UP[/]"
    console.print(
        f"(a): {p['lines_read']:,} of {p['lines_sent']:,} lines read, lost lines "
        f"{doc['lost_lines']}, bad samples {p['bad_samples']}, "
        f"{p['samples_committed']}/{p['samples_sent']} samples committed; reader CPU "
        f"{100 * r['reader_cpu_share_paced']:.1f} % of the wall time: {verdict}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0, help="length of the paced run (10)")
    p.add_argument("--baud", type=int, default=115200, help="serial line rate (115200)")
    p.add_argument("--fibres", type=int, default=400, help="fibre snippets per sample (400)")
    p.add_argument("--parser-lines", type=int, default=200_000, help="lines for (b) (200000)")
    p.add_argument("--unpaced-samples", type=int, default=20, help="samples for (c) (20)")
    p.add_argument("--repeats", type=int, default=3, help="repeats of (b) (3)")
    p.add_argument("--json", action="store_true", help="print only the JSON object to stdout")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON file ({DEFAULT_OUT})")
    args = p.parse_args(argv)
    if args.seconds <= 0 or args.baud < 300 or args.fibres < 1 or args.parser_lines < 1:
        p.error("--seconds must be > 0, --baud >= 300, --fibres and --parser-lines >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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
    return 0 if doc["kept_up"] else 1


if __name__ == "__main__":
    sys.exit(main())
