"""Interleaved comparison of the single-month refresh: the feature library of a git revision against
the working tree, in one process.

Not a test: it prints figures. Between two runs of ``bench/features.py`` the 20k refresh ratio moves
by several percent with the same code (the spread is between processes, not between the repeats of
one), which hides changes of that size. This script loads ``segpipe/features.py`` of ``--base``
beside the working tree's and times the refresh of the first and last month (``rollup`` +
``snapshot`` of ``bench/features.py``, inputs from the lake of an earlier ``--keep`` run, outputs to
a scratch folder) with each version in turn, swapping which goes first every repeat, so both see the
same machine. It reports, per version and month, the best and median wall time, the least cpu time
and the best time of each part, then month last / month first.

Usage::

    .venv/bin/python bench/features.py --sizes 20000 --keep        # once: the lake
    .venv/bin/python bench/compare.py --base HEAD --size 20000 --repeat 16
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import features as bench  # noqa: E402  (bench/features.py)
import segpipe.features as working  # noqa: E402

#: names bench/features.py imported from segpipe.features: swapped per version
SWAPPED = ("build_activity_daily", "build_activity_monthly", "build_features", "daily_months", "daily_schema",
           "leaving_months", "monthly_months", "update_customer_state", "MONTHLY_SCHEMA")


def load_revision(rev: str, folder: Path):
    """``segpipe/features.py`` of git revision ``rev`` as a module (it imports the rest of segpipe
    from the working tree)."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:segpipe/features.py"], check=True,
                         capture_output=True, text=True).stdout
    path = folder / "features_base.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("segpipe_features_base", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="HEAD", help="git revision to compare the working tree with (default %(default)s)")
    ap.add_argument("--size", type=int, default=20000, help="customers of the kept lake (default %(default)s)")
    ap.add_argument("--months", type=int, default=24, help="months of the kept lake (default %(default)s)")
    ap.add_argument("--repeat", type=int, default=16, help="refreshes of each month with each version")
    ap.add_argument("--out", type=Path, default=bench.DEFAULT_OUT, help="where bench/features.py kept the lake")
    a = ap.parse_args(argv)
    try:
        lake, first, last = bench.kept_lake(a.out, a.size, a.months)
    except FileNotFoundError as e:
        print(e)
        return 2
    keys = [first, last]
    spec = bench.base_config().features
    with tempfile.TemporaryDirectory(prefix="segpipe-compare-") as tmp:
        tmp = Path(tmp)
        versions = {f"base {a.base}": load_revision(a.base, tmp), "working tree": working}
        runs: dict[str, dict[str, list[tuple[float, float, dict]]]] = {v: {k: [] for k in keys} for v in versions}
        order = list(versions)
        for i in range(a.repeat):
            for v in (order if i % 2 == 0 else order[::-1]):
                for name in SWAPPED:
                    setattr(bench, name, getattr(versions[v], name))
                for k in keys:
                    out = tmp / "scratch" / k
                    shutil.rmtree(out, ignore_errors=True)
                    w0, c0 = time.perf_counter(), time.process_time()
                    r = bench.rollup(lake, k, spec, out)
                    s = bench.snapshot(lake, k, keys[0], spec, out)
                    parts = {**{n: x["wall"] for n, x in r.parts.items()},
                             **{f"s.{n}": x["wall"] for n, x in s.parts.items() if n != "_rows"}}
                    runs[v][k].append((time.perf_counter() - w0, time.process_time() - c0, parts))
    print(f"{a.size:,} customers, {a.repeat} interleaved repeats; best (median) wall s, least cpu s, best ms per part")
    for v, by_month in runs.items():
        for k, xs in by_month.items():
            print(f"  {v:>16} {k[:7]}: wall {min(x[0] for x in xs):.3f} ({statistics.median(x[0] for x in xs):.3f}) "
                  f"cpu {min(x[1] for x in xs):.3f}  "
                  + " ".join(f"{p}={min(x[2][p] for x in xs) * 1000:.1f}" for p in xs[0][2]))
        a1, a2 = by_month[keys[0]], by_month[keys[-1]]
        print(f"  {v:>16} month {a.months} / month 1: wall {min(x[0] for x in a2) / min(x[0] for x in a1):.3f} "
              f"(medians {statistics.median(x[0] for x in a2) / statistics.median(x[0] for x in a1):.3f}), "
              f"cpu {min(x[1] for x in a2) / min(x[1] for x in a1):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
