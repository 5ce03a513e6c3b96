"""Scale benchmark: the whole pipeline as users run it, at growing customer counts.

Not a test: it prints figures and ratios. For each size (customers x 24 months) it

1. generates the sample with ``segpipe sample`` (reused when its ``manifest.json`` matches),
2. builds the whole history as an analyst's backfill does, in runs of ``--history-chunk`` months
   (``segpipe run --from A --to B``; one run over all 24 months holds every month's ingested rows at
   once, see docs/refresh.md),
3. refreshes month 1 and month 24 alone, as the monthly schedule does:
   ``segpipe run --from M --to M`` (inputs of the other months already in the lake),
4. materializes the bucketed assets of month 24 again with ``scale.buckets: 2`` through
   ``dagster asset materialize``, once with the in-process executor and once with the multiprocess
   executor (2 processes, one per step): the speed-up of running bucket steps side by side,

each ``segpipe run`` in its own process, measured with ``os.wait4`` (wall, cpu, peak RSS of that
process: the whole Dagster run executes in it with the default in-process executor). Per asset it
reads the step times of the run from the project's Dagster instance. It reports month 24 / month 1
for the refresh (target 1.5), the refresh's peak RSS (target at 3M customers: under 4 GiB) and, across
sizes, wall time per customer (target: no faster than linear growth).

Usage::

    .venv/bin/python bench/scale.py --sizes 20000            # a minute or two
    .venv/bin/python bench/scale.py --sizes 200000           # ~25 minutes on 2 cores
    .venv/bin/python bench/scale.py                          # 200k, 1M, 3M (hours; ~50 GB of sample at 3M)
    .venv/bin/python bench/scale.py --seed-from bench/out/c1000000_m24 --keep   # 1M refreshes on a seeded lake

Both single-month refreshes run after the whole history is in place. Ingestion reads only the raw
files holding rows of the month (its per-file month index, docs/scale.md), so neither reads the
whole history; ``bench/features.py`` measures the feature store alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from segpipe.timeutil import month_key, month_range, month_start, next_month  # noqa: E402

BIN = Path(sys.executable).parent
DEFAULT_OUT = ROOT / "bench" / "out" / "scale"
START = "2024-11"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def month_keys(months: int) -> list[str]:
    return month_range(START, month_key(next_month(month_start(START), months - 1)))


def measured(cmd: list[str], cwd: Path, env: dict) -> dict:
    """Run ``cmd`` to completion; wall, cpu (user + system) and peak RSS of the process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-4000:]}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mib": usage.ru_maxrss / 1024, "out": out}


def step_times(home: Path) -> dict[str, float]:
    """Wall seconds per step of the latest run in the instance at ``home``."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(home)
    with dg.DagsterInstance.get() as instance:
        run = instance.get_runs(limit=1)[0]
        stats = instance.get_run_step_stats(run.run_id)
    return {s.step_key: (s.end_time or 0) - (s.start_time or 0) for s in stats if s.start_time}


def project(base: Path, customers: int, months: int) -> Path:
    """A project folder: the sample, a segpipe.yaml pointed at it, its own lake and instance."""
    sample = base / "data" / "sample"
    manifest = sample / "manifest.json"
    wanted = {"customers": customers, "months": months, "start": START}
    if manifest.is_file():
        have = json.loads(manifest.read_text()).get("parameters", {})
        if any(have.get(k) != v for k, v in wanted.items()):
            shutil.rmtree(sample)
    cfg = yaml.safe_load((ROOT / "segpipe.yaml").read_text())
    cfg["first_month"] = START
    cfg["lake_dir"] = "lake"
    base.mkdir(parents=True, exist_ok=True)
    (base / "segpipe.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return base / "segpipe.yaml"


#: The assets computed per customer-hash bucket (docs/scale.md).
BUCKETED = ("customer_activity_daily", "customer_activity_monthly", "customer_state", "customer_features",
            "segment_membership")


def bucket_parallelism(base: Path, config: Path, env: dict, month: str) -> dict:
    """The bucketed assets of ``month`` with two buckets (``dagster asset materialize``), in process
    and with the multiprocess executor (2 processes, each step its own process); wall, cpu and
    peak RSS of each (the multiprocess peak is the largest step process's), and the bucket steps' times."""
    two = base / "segpipe-2-buckets.yaml"
    cfg = yaml.safe_load(config.read_text())
    cfg["scale"] = {"buckets": 2}
    two.write_text(yaml.safe_dump(cfg, sort_keys=False))
    out = {}
    for executor in ("in_process", "multiprocess"):
        log(f"  refresh of {month[:7]} with 2 buckets, {executor} executor")
        run_env = {**env, "SEGPIPE_CONFIG": str(two), "SEGPIPE_EXECUTOR": executor}
        out[executor] = measured([str(BIN / "dagster"), "asset", "materialize", "-m", "assets.definitions", "-a", "defs",
                                  "--select", ",".join(BUCKETED), "--partition", month], ROOT, run_env)
        out[executor].pop("out", None)
        out[executor]["bucket_steps"] = {k: v for k, v in step_times(base / ".dagster_home").items() if "__bucket[" in k}
    out["speedup"] = out["in_process"]["wall"] / out["multiprocess"]["wall"]
    return out


def run_size(customers: int, months: int, out: Path, keep: bool, history_chunk: int = 6) -> dict:
    base = out / f"c{customers}_m{months}"
    config = project(base, customers, months)
    env = {**os.environ, "SEGPIPE_CONFIG": str(config), "DAGSTER_HOME": str(base / ".dagster_home"),
           "SEGPIPE_PSEUDONYMIZATION_KEY": os.environ.get("SEGPIPE_PSEUDONYMIZATION_KEY", "bench-key-not-secret")}
    segpipe = str(BIN / "segpipe")
    keys = month_keys(months)
    res: dict = {"customers": customers, "months": months}
    if not (base / "data" / "sample" / "manifest.json").is_file():
        log(f"{customers:,} customers: generating the sample")
        res["sample"] = measured([segpipe, "sample", "--customers", str(customers), "--months", str(months),
                                  "--start", START], base, env)
    shutil.rmtree(base / "lake", ignore_errors=True)
    shutil.rmtree(base / ".dagster_home", ignore_errors=True)
    chunks = [keys[i:i + history_chunk] for i in range(0, len(keys), history_chunk)]
    log(f"{customers:,} customers: whole history, {len(keys)} months in {len(chunks)} run(s)")
    runs = [measured([segpipe, "run", "--from", c[0][:7], "--to", c[-1][:7]], base, env) for c in chunks]
    res["history"] = {"wall": sum(r["wall"] for r in runs), "cpu": sum(r["cpu"] for r in runs),
                      "rss_mib": max(r["rss_mib"] for r in runs), "runs": len(runs), "chunk_months": history_chunk}
    for label, key in (("month_1", keys[0]), (f"month_{len(keys)}", keys[-1])):
        log(f"{customers:,} customers: refresh of {key[:7]} alone")
        res[label] = measured([segpipe, "run", "--from", key[:7], "--to", key[:7]], base, env)
        res[label]["steps"] = step_times(base / ".dagster_home")
    res["parallel"] = bucket_parallelism(base, config, env, keys[-1])
    for part in ("sample", "history", "month_1", f"month_{len(keys)}"):
        res.get(part, {}).pop("out", None)
    if not keep:
        shutil.rmtree(base, ignore_errors=True)
    return res


#: The pseudonymization key of bench/features.py (a seeded lake's hashes were made with it).
FEATURES_BENCH_KEY = "segpipe-bench-fixed-pseudonymization-key"


def land(base: Path, config: Path, sample: Path, month: str) -> None:
    """Point every source of ``config`` at a landing folder holding the sample's files of ``month``
    only (symlinks), as a monthly drop does; ingestion then reads that month's files."""
    cfg = yaml.safe_load(config.read_text())
    for name, src in cfg["sources"].items():
        pattern = Path(src["path"]).name  # e.g. *.csv
        folder = base / "landing" / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        files = [f for f in sorted((sample / name).glob(pattern)) if month[:7] in f.name]
        if len(files) != 1:
            raise SystemExit(f"expected one {name} file of {month[:7]} in {sample / name}, found {files}")
        (folder / files[0].name).symlink_to(files[0].resolve())
        src["path"] = f"landing/{name}/{pattern}"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))


def run_seeded(seed: Path, out: Path, keep: bool, parallel: bool) -> dict:
    """Refreshes of month 1 and month 24 on a lake seeded from a ``bench/features.py --keep`` run
    (``seed`` = its ``c{N}_m{M}`` folder: sample + a lake of every upstream and feature-store table)
    instead of a history built through the pipeline (about 1.5 h at 1M customers here). The lake is
    hard-linked; the sources point at a landing folder with the refreshed month's files only. The
    month before the last is run first, unmeasured, to put the tables the seed lacks in place
    (identity_graph, segment model and memberships, drift), as the monthly schedule would have."""
    manifest = json.loads((seed / "sample" / "manifest.json").read_text())["parameters"]
    customers, months = manifest["customers"], manifest["months"]
    base = out / f"c{customers}_m{months}_seeded"
    shutil.rmtree(base, ignore_errors=True)
    config = project(base, customers, months)
    subprocess.run(["cp", "-al", str(seed / "lake"), str(base / "lake")], check=True)
    (base / "lake" / "upstream.json").unlink(missing_ok=True)
    env = {**os.environ, "SEGPIPE_CONFIG": str(config), "DAGSTER_HOME": str(base / ".dagster_home"),
           "SEGPIPE_PSEUDONYMIZATION_KEY": FEATURES_BENCH_KEY}
    segpipe = str(BIN / "segpipe")
    keys = month_keys(months)
    res: dict = {"customers": customers, "months": months, "seeded_from": str(seed)}
    log(f"{customers:,} customers (seeded lake): warm-up run of {keys[-2][:7]}, not measured")
    land(base, config, seed / "sample", keys[-2])
    res["warm_up"] = measured([segpipe, "run", "--from", keys[-2][:7], "--to", keys[-2][:7]], base, env)
    for label, key in ((f"month_{len(keys)}", keys[-1]), ("month_1", keys[0])):
        log(f"{customers:,} customers (seeded lake): refresh of {key[:7]} alone")
        land(base, config, seed / "sample", key)
        res[label] = measured([segpipe, "run", "--from", key[:7], "--to", key[:7]], base, env)
        res[label]["steps"] = step_times(base / ".dagster_home")
    if parallel:
        land(base, config, seed / "sample", keys[-1])
        res["parallel"] = bucket_parallelism(base, config, env, keys[-1])
    for part in ("warm_up", "month_1", f"month_{len(keys)}"):
        res.get(part, {}).pop("out", None)
    if not keep:
        shutil.rmtree(base, ignore_errors=True)
    return res


def report(results: list[dict]) -> str:
    lines = [f"machine: {platform.platform()}, {os.cpu_count()} cpus, python {platform.python_version()}", ""]
    lines.append("size        stage                     wall s     cpu s   peak RSS MiB")
    for r in results:
        last = f"month_{r['months']}"
        for part in ("sample", "history", "warm_up", "month_1", last):
            if part in r:
                p = r[part]
                lines.append(f"{r['customers']:>10,}  {part:<22} {p['wall']:>9.1f} {p['cpu']:>9.1f} {p['rss_mib']:>14,.0f}")
        one, last_r = r["month_1"], r[last]
        lines.append(f"{'':>10}  month {r['months']} / month 1 refresh: wall {last_r['wall'] / one['wall']:.2f}, "
                     f"cpu {last_r['cpu'] / one['cpu']:.2f} -> target <= 1.5 "
                     f"{'MET' if max(last_r['wall'] / one['wall'], last_r['cpu'] / one['cpu']) <= 1.5 else 'FAILS'}")
        slow = sorted(last_r["steps"].items(), key=lambda kv: -kv[1])[:6]
        lines.append(f"{'':>10}  slowest steps of the month-{r['months']} refresh: "
                     + ", ".join(f"{k} {v:.1f}s" for k, v in slow))
        if "parallel" in r:
            par = r["parallel"]
            lines.append(f"{'':>10}  bucketed assets of month {r['months']}, 2 buckets: in-process {par['in_process']['wall']:.1f}s "
                         f"(peak {par['in_process']['rss_mib']:,.0f} MiB), multiprocess x2 {par['multiprocess']['wall']:.1f}s "
                         f"(peak {par['multiprocess']['rss_mib']:,.0f} MiB): speed-up x{par['speedup']:.2f}")
    if len(results) > 1:
        base = results[0]
        for r in results[1:]:
            last = f"month_{r['months']}"
            grow = r["customers"] / base["customers"]
            lines.append(f"refresh wall {base['customers']:,} -> {r['customers']:,} customers (x{grow:.1f}): "
                         f"x{r[last]['wall'] / base[last]['wall']:.2f}; peak RSS x{r[last]['rss_mib'] / base[last]['rss_mib']:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="200000,1000000,3000000", help="customers per size, comma separated")
    ap.add_argument("--months", type=int, default=24)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--keep", action="store_true", help="keep each size's sample, lake and instance")
    ap.add_argument("--history-chunk", type=int, default=6, help="months per run of the history (default %(default)s)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    ap.add_argument("--seed-from", type=Path, action="append", default=[],
                    help="instead of --sizes: a bench/features.py --keep size folder (e.g. bench/out/c1000000_m24) "
                         "whose lake seeds the history; repeatable")
    ap.add_argument("--no-parallel", action="store_true", help="skip the 2-bucket in-process vs multiprocess runs")
    a = ap.parse_args(argv)
    if a.seed_from:
        results = [run_seeded(seed, a.out, a.keep, not a.no_parallel) for seed in a.seed_from]
    else:
        results = [run_size(int(s), a.months, a.out, a.keep, a.history_chunk) for s in a.sizes.split(",") if s.strip()]
    text = report(results)
    print(text)
    if a.json:
        a.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
