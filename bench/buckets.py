"""Bucket benchmark: peak memory and parallel speed-up of the customer-bucket steps of one month.

Not a test: it prints figures and ratios. It takes a lake that ``bench/features.py --keep`` built
(behavioral events, identity map and every month's rollups and customer state, laid out like the
pipeline's) and materializes the feature store's bucketed assets (``customer_activity_daily``,
``customer_activity_monthly``, ``customer_state``, ``customer_features``) of one month through
``dagster asset materialize``, each in its own process, its memory sampled from ``/proc`` every
0.2 s over the whole process tree (the largest single process, and the largest total at one instant):

1. one bucket, in-process executor (the reference: every customer in one step),
2. the bucket count chosen from the data size (``scale.bucket_*`` defaults), in process,
3. the same buckets with the multiprocess executor (2 processes: buckets side by side).

Peak RSS of the in-process runs is the run's one process (its steps run one after another in it,
and freed memory is not always returned to the system); of the multiprocess run, the largest step
process's. Wall time is the whole command's, Dagster's start-up included. Every run rewrites the month's four tables; the script checks they come
out identical each time (same bytes is not required, same rows is).

Usage::

    .venv/bin/python bench/features.py --sizes 1000000 --keep     # builds bench/out/c1000000_m24
    .venv/bin/python bench/buckets.py --size 1000000 --month 2026-10
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FEATURE_STORE = ("customer_activity_daily", "customer_activity_monthly", "customer_state", "customer_features")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def project(base: Path, scale: dict | None) -> Path:
    """A segpipe.yaml beside the benchmark's sample and lake (``scale`` settings if given)."""
    cfg = yaml.safe_load((ROOT / "segpipe.yaml").read_text())
    cfg["first_month"] = "2024-11"
    cfg["lake_dir"] = str(base / "lake")
    for src in cfg["sources"].values():
        src["path"] = str(base / "sample" / Path(src["path"]).relative_to("data/sample"))
    if scale:
        cfg["scale"] = scale
    path = base / f"segpipe-buckets-{'auto' if scale is None else '-'.join(f'{k}{v}' for k, v in scale.items())}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


class TreeRSS(threading.Thread):
    """Samples, every ``interval`` seconds, the resident memory of a process and all its descendants
    (``/proc``): the largest single process seen and the largest total at one instant. ``wait4``
    cannot do this for the multiprocess executor, whose step processes a fork server starts."""

    def __init__(self, pid: int, interval: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.interval, self.done = pid, interval, threading.Event()
        self.max_process_kib, self.max_total_kib = 0, 0

    @staticmethod
    def _tree(root: int) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as fh:
                        ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(entry))
        out, todo = [], [root]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo += children.get(pid, [])
        return out

    @staticmethod
    def _rss_kib(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def run(self) -> None:
        while not self.done.is_set():
            sizes = [self._rss_kib(p) for p in self._tree(self.pid)]
            self.max_process_kib = max(self.max_process_kib, max(sizes, default=0))
            self.max_total_kib = max(self.max_total_kib, sum(sizes))
            self.done.wait(self.interval)


def materialize(config: Path, home: Path, month: str, executor: str) -> dict:
    env = {**os.environ, "SEGPIPE_CONFIG": str(config), "DAGSTER_HOME": str(home), "SEGPIPE_EXECUTOR": executor,
           "SEGPIPE_PSEUDONYMIZATION_KEY": os.environ.get("SEGPIPE_PSEUDONYMIZATION_KEY", "bench-key-not-secret")}
    cmd = [str(BIN / "dagster"), "asset", "materialize", "-m", "assets.definitions", "-a", "defs",
           "--select", ",".join(FEATURE_STORE), "--partition", month]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = TreeRSS(proc.pid)
    sampler.start()
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    sampler.done.set()
    sampler.join()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out[-4000:]}")
    return {"wall": wall, "cpu_parent": usage.ru_utime + usage.ru_stime, "rss_mib": sampler.max_process_kib / 1024,
            "rss_total_mib": sampler.max_total_kib / 1024, "steps": step_times(home)}


def step_times(home: Path) -> dict[str, float]:
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(home)
    with dg.DagsterInstance.get() as instance:
        run = instance.get_runs(limit=1)[0]
        stats = instance.get_run_step_stats(run.run_id)
    return {s.step_key: round((s.end_time or 0) - (s.start_time or 0), 2) for s in stats if s.start_time}


def tables(lake: Path, month: str):
    import polars as pl

    return {a: pl.read_parquet(lake / a / f"{month}.parquet") for a in FEATURE_STORE}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=1_000_000, help="customers of the bench/features.py run to use")
    ap.add_argument("--months", type=int, default=24)
    ap.add_argument("--month", default="2026-10", help="month to materialize, YYYY-MM")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    base = a.out / f"c{a.size}_m{a.months}"
    month = f"{a.month}-01"
    lake = base / "lake"
    if not (lake / "customer_state" / f"{month}.parquet").is_file():
        raise SystemExit(f"{lake} has no customer_state for {a.month}: run bench/features.py --sizes {a.size} --keep first")
    home = base / ".dagster_home_buckets"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    runs, reference = {}, None
    for label, scale, executor in (("1 bucket, in process", {"buckets": 1}, "in_process"),
                                   ("auto buckets, in process", None, "in_process"),
                                   ("auto buckets, multiprocess x2", None, "multiprocess")):
        log(f"{a.size:,} customers, {a.month}: {label}")
        runs[label] = materialize(project(base, scale), home, month, executor)
        got = tables(lake, month)
        if reference is None:
            reference = got
        runs[label]["identical"] = all(got[k].equals(reference[k]) for k in FEATURE_STORE)
        runs[label]["buckets_per_asset"] = {
            asset: sum(1 for k in runs[label]["steps"] if k.startswith(f"{asset}.{asset}__bucket[")) for asset in FEATURE_STORE}
        log(f"  wall {runs[label]['wall']:.1f}s peak RSS {runs[label]['rss_mib']:,.0f} MiB (all processes "
            f"{runs[label]['rss_total_mib']:,.0f} MiB) "
            f"buckets {runs[label]['buckets_per_asset']} identical {runs[label]['identical']}")
    one, auto, par = (runs[k] for k in runs)
    print(f"\n{a.size:,} customers, month {a.month}, the feature store's four bucketed assets:")
    print(f"{'':32} {'wall s':>8} {'peak RSS MiB':>13} {'all processes':>14}  buckets per asset")
    for label, r in runs.items():
        print(f"{label:32} {r['wall']:8.1f} {r['rss_mib']:13,.0f} {r['rss_total_mib']:14,.0f}  {r['buckets_per_asset']}")
    print(f"peak RSS, auto buckets / one bucket: {auto['rss_mib'] / one['rss_mib']:.2f}")
    print(f"speed-up of 2 processes over in-process with the same buckets: x{auto['wall'] / par['wall']:.2f}")
    print(f"tables identical in every run: {all(r['identical'] for r in runs.values())}")
    if a.json:
        a.json.write_text(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
