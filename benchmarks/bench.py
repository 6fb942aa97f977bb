"""``make bench``: every benchmark in one table, each row a ratio (or a cost) against its target, pass or
fail, and for a miss what limits it; written to ``benchmarks/results/bench.json`` and ``bench.md`` with the
machine described. About 12 minutes on 2 CPU cores; ``--quick`` is a smoke test of the harness (the test
suite runs it), whose numbers mean nothing.

Sections (each also runs alone: ``python benchmarks/bench_<section>.py``):

- ``attacks``: PGD-10 against the limit (10 forward+backward passes w.r.t. the input) and against
  torchattacks' PGD loop, ``keep_best``'s cost, our APGD-CE against the official one, scaling in batch
  size and steps;
- ``methods``: Lightning's PGD-AT epoch against a hand-written loop; every method's epoch against the
  cost of its forward/backward passes;
- ``entropysgd``: EntropySGD-AT per gradient evaluation against PGD-AT (1st, 2nd order, AWP);
- ``arovr``: AROVR^g against backprop per bare step and per epoch;
- ``monitoring``: the monitoring preset's share of an epoch;
- ``evaluate``: seconds per attack per 1,000 images.

Ratios are measured side by side in one process, the two sides interleaved, median of paired rounds.

    python benchmarks/bench.py [--only attacks methods ...] [--quick] [--data_dir data]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import bench_arovr
import bench_attacks
import bench_entropysgd
import bench_evaluate
import bench_methods
import bench_monitoring
import torch
from _timing import table

RESULTS = Path(__file__).parent / "results"

#: section -> (module, options for the full run, options for --quick)
SECTIONS = {
    "attacks": (bench_attacks, {"repeats": 7, "quick": False}, {"repeats": 2, "quick": True}),
    "methods": (bench_methods, {"repeats": 5, "quick": False}, {"repeats": 2, "quick": True}),
    "entropysgd": (
        bench_entropysgd,
        {"repeats": 5, "n": 2560, "net": "cnn", "L": 20},
        {"repeats": 2, "n": 512, "net": "cnn", "L": 4},
    ),
    "arovr": (
        bench_arovr,
        {"repeats": 5, "n": 5000, "device": "cpu"},
        {"repeats": 2, "n": 500, "device": "cpu"},
    ),
    "monitoring": (
        bench_monitoring,
        {"repeats": 3, "train_subset": 10_000},
        {"repeats": 1, "train_subset": 512},
    ),
    "evaluate": (bench_evaluate, {"n": 200, "quick": False}, {"n": 20, "quick": True}),
}


def machine() -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the harness, not the speed")
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--out", default=str(RESULTS / "bench.json"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    load_before = os.getloadavg()
    rows, seconds = [], {}
    for name in args.only:
        module, full, quick = SECTIONS[name]
        opts = argparse.Namespace(data_dir=args.data_dir, **(quick if args.quick else full))
        t0 = time.perf_counter()
        rows += module.rows(opts)
        seconds[name] = time.perf_counter() - t0
        print(f"[bench] {name}: {seconds[name]:.0f} s", file=sys.stderr, flush=True)
    info = {
        **machine(),
        "quick": args.quick,
        "section_seconds": seconds,
        "total_seconds": time.perf_counter() - started,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }
    header = (
        f"{info['cpu']}, {info['cores']} cores, torch {info['torch']}, {info['date']}; "
        f"{info['total_seconds'] / 60:.1f} min; load average {load_before[0]:.2f} before, "
        f"{info['load_average_after'][0]:.2f} after"
    )
    if args.quick:
        header += " (--quick: sizes too small to mean anything)"
    text = f"{header}\n\n{table(rows)}\n"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
    out.with_suffix(".md").write_text(text)
    print("\n" + text)
    misses = [r for r in rows if r["pass"] is False]
    print(f"{len(rows)} rows, {len(misses)} targets missed; wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
