"""Instructions a single-month refresh executes, counted by Valgrind: the refresh ratio without the
machine's noise.

Not a test: it prints figures. ``bench/features.py`` times the refresh of month 1 and month 24 in
wall and cpu seconds. On a small shared VM the same code gives ratios from 1.35 to 1.63 between
processes (bench/RESULTS.md), the spread being as wide as the distance to the target. This script
counts the instructions instead, with Valgrind's cachegrind (``--cache-sim=no``: the count only),
the way SQLite tracks its performance: the count repeats to within a few parts in a thousand
(the ratio to within 0.01).

How: for each month, two fresh processes run under cachegrind on the lake of an earlier
``bench/features.py --keep`` run. One refreshes the month once, the other twice (rollup + snapshot
of ``bench/features.py``, outputs to a scratch folder). The difference is one warm refresh. Python
start-up, imports and first-call set-up cancel out. Polars runs on one thread
(``POLARS_MAX_THREADS=1``). With more threads, idle workers spin and the count moves.

What the count leaves out: page faults, cache misses, and the overlap of two threads. Those are
in the seconds of ``bench/features.py``, so this complements that script and does not replace it.

Usage (Valgrind from Debian: ``apt-get install valgrind``)::

    .venv/bin/python bench/features.py --sizes 20000 --keep      # once: the lake
    .venv/bin/python bench/instructions.py --size 20000           # ~3 minutes at 20k
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve()

#: cachegrind's total line in its output file
_SUMMARY = re.compile(r"^summary:\s+(\d+)\s*$", re.MULTILINE)


def bench_features():
    """``bench/features.py`` (imported late: the parent process needs only its helpers, after the arguments)."""
    for p in (ROOT, ROOT / "bench"):
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))
    import features  # bench/features.py

    return features


def cachegrind_total(text: str, source: str = "cachegrind output") -> int:
    """The instruction count (``Ir``) of a cachegrind output file's ``summary:`` line."""
    m = _SUMMARY.search(text)
    if m is None:
        raise ValueError(f"{source}: no 'summary:' line (was it written by --tool=cachegrind?)")
    return int(m.group(1))


def one_refresh(once: int, twice: int) -> int:
    """Instructions of one warm refresh: the process that refreshed twice less the one that refreshed once."""
    if twice <= once:
        raise ValueError(f"the process with two refreshes counted {twice:,} instructions, not more than "
                         f"the one with one refresh ({once:,}): the counts are not from the same setup")
    return twice - once


def count(size: int, months: int, out: Path, month: str, times: int, stage: str, scratch: Path) -> int:
    """Instructions of a process that refreshes ``month`` ``times`` times, under cachegrind."""
    result = scratch / f"cg.{month}.{stage}.{times}.out"
    # outputs under a folder of its own (stage, times; the month is a subfolder): processes run side by side
    cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={result}",
           sys.executable, str(HERE), "--child", month, "--times", str(times), "--stage", stage,
           "--size", str(size), "--months", str(months), "--out", str(out), "--scratch", str(scratch / f"s.{stage}.{times}")]
    env = {**os.environ, "POLARS_MAX_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.splitlines()[-15:])
        raise RuntimeError(f"{' '.join(cmd[:4])} ... --child {month} --times {times} failed ({proc.returncode}):\n{tail}")
    return cachegrind_total(result.read_text(), str(result))


def child(a: argparse.Namespace) -> int:
    """Refresh one month ``a.times`` times in this process (run under cachegrind by :func:`count`)."""
    bench = bench_features()
    lake, first, _ = bench.kept_lake(a.out, a.size, a.months)
    spec = bench.base_config().features
    for _ in range(a.times):
        out = a.scratch / a.child
        shutil.rmtree(out, ignore_errors=True)
        if a.stage in ("refresh", "rollup"):
            bench.rollup(lake, a.child, spec, out)
        if a.stage in ("refresh", "snapshot"):
            bench.snapshot(lake, a.child, first, spec, out)  # reads the month's rollups from the lake if not in out
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=20000, help="customers of the kept lake (default %(default)s)")
    ap.add_argument("--months", type=int, default=24, help="months of the kept lake (default %(default)s)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out", help="where bench/features.py kept the lake")
    ap.add_argument("--by-stage", action="store_true", help="count the rollup and the snapshot stages apart too")
    ap.add_argument("--result", type=Path, help="write the counts to this JSON file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--times", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--stage", default="refresh", choices=("refresh", "rollup", "snapshot"), help=argparse.SUPPRESS)
    ap.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        return child(a)

    bench = bench_features()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)")
        return 2
    try:
        _, first, last = bench.kept_lake(a.out, a.size, a.months)
    except FileNotFoundError as e:
        print(e)
        return 2
    stages = ["refresh", *(["rollup", "snapshot"] if a.by_stage else [])]
    jobs = [(k, s, n) for s in stages for k in (first, last) for n in (1, 2)]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="segpipe-instructions-") as tmp:
        # one process per core: cachegrind runs a process on one thread
        with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
            got = dict(zip(jobs, pool.map(lambda j: count(a.size, a.months, a.out, j[0], j[2], j[1], Path(tmp)), jobs)))
    per = {s: {k: one_refresh(got[(k, s, 1)], got[(k, s, 2)]) for k in (first, last)} for s in stages}
    ratio = per["refresh"][last] / per["refresh"][first]
    print(f"{a.size:,} customers x {a.months} months: instructions of one warm refresh (Valgrind cachegrind, "
          f"Polars on 1 thread), {time.perf_counter() - t0:.0f} s")
    for s in stages:
        print(f"  {s:<9} month 1 ({first[:7]}) {per[s][first] / 1e9:6.3f} G   month {a.months} ({last[:7]}) "
              f"{per[s][last] / 1e9:6.3f} G   ratio {per[s][last] / per[s][first]:.3f}")
    print(f"  month {a.months} / month 1 instructions: {ratio:.3f}  -> target <= {bench.TARGET_RATIO} "
          f"{'holds' if ratio <= bench.TARGET_RATIO else 'FAILS'}")
    if a.result:
        a.result.write_text(json.dumps({
            "customers": a.size, "months": a.months, "first": first, "last": last, "ratio": ratio,
            "instructions": per, "processes": {f"{k}/{s}/x{n}": v for (k, s, n), v in got.items()},
            "code": bench.code_fingerprint(), "machine": bench.machine(),
        }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
