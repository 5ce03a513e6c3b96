"""Benchmark of the feature store: rollup and snapshot stages, month by month, from files on disk.

Not a test: it prints figures and ratios. For each size (customers x months) it

1. generates the sample with :func:`segpipe.sample.generate_sample` (or reuses a sample folder whose
   ``manifest.json`` has the same parameters),
2. builds the upstream inputs with the segpipe library, month by month, into a small Parquet lake
   laid out like the pipeline's (``{lake}/{asset}/{YYYY-MM-01}.parquet``, atomic writes):
   ``ingest_source`` per source -> ``identity_links`` -> ``build_identity_map`` (cumulative over the
   months <= M: the map the ``identity_map`` asset holds, which updates the month before's) ->
   ``stitch_events`` -> ``behavioral_events``,
3. times the **rollup stage** (``build_activity_daily`` + ``build_activity_monthly``) and the
   **snapshot stage** (``update_customer_state`` from the previous month's state, the month's
   rollups and the rollups leaving the running sums (``leaving_months(M)``) +
   ``build_features`` over the daily rows of ``daily_months(M)`` and the monthly rollups of
   ``monthly_months(M)``,
   with ``customer_identity`` of the month's identity map) for every month, each reading its inputs
   from disk and writing its outputs like the assets in ``assets/features.py``,
4. re-times the refresh of the first, 13th and last month alone (rollup + snapshot, inputs on disk,
   outputs to a scratch folder, best of ``--repeat`` taken round the three months in turn) and
   reports last/first, raw and per event; with ``--processes N`` it times them again in N-1 fresh
   processes on the same lake and judges the target on the median of the N ratios (at 20k the
   ratio moves by several percent between processes running the same code),
5. runs a minimal reference in the same process: one Polars scan of all months' behavioral events
   with count / sum(amount) / max(event_time) per customer, and reports
   (full feature build over all months) / (reference).

Each size runs in a fresh subprocess, so its peak RSS is its own. Within it the peak is reset
before each stage (``echo 5 > /proc/self/clear_refs`` resets the kernel's high-water mark, which
``getrusage(RUSAGE_SELF).ru_maxrss`` reports), so the RSS column is the stage's own peak.

Ingestion reads, per month, only that month's file of each source (the config's source paths are
pointed at the month's file): ``ingest_source`` with the configured glob scans every file of the
source whatever months it is asked for, which would make the upstream part of this benchmark
quadratic in the number of months. The first size checks that both give the same rows for the
last month and reports how long the full-glob call takes.

Usage::

    .venv/bin/python bench/features.py --quick
    .venv/bin/python bench/features.py --sizes 20000,200000 --budget-minutes 25
    .venv/bin/python bench/features.py            # 20k, 200k, 1M (1M: ~18 GB of sample)
    # after a --keep run: time the single-month refreshes again without building all months again
    .venv/bin/python bench/features.py --sizes 1000000 --reuse-upstream --reuse-features --keep --repeat 5
    # the 20k ratio, judged on the median of five processes
    .venv/bin/python bench/features.py --sizes 20000 --reuse-upstream --reuse-features --keep --repeat 10 --processes 5
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import polars as pl  # noqa: E402
import yaml  # noqa: E402

from segpipe.config import SegpipeConfig, parse_config  # noqa: E402
from segpipe.contract import EVENT_SCHEMA  # noqa: E402
from segpipe.features import (  # noqa: E402
    MONTHLY_SCHEMA,
    build_activity_daily,
    build_activity_monthly,
    build_features,
    daily_months,
    daily_schema,
    leaving_months,
    monthly_months,
    update_customer_state,
)
from segpipe.identity import build_identity_map, customer_identity, identity_links, stitch_events  # noqa: E402
from segpipe.ingest import ingest_source  # noqa: E402
from segpipe.lake import asset_path, write_parquet_atomic  # noqa: E402
from segpipe.timeutil import month_key, month_range, month_start, next_month  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "out"
DEFAULT_SIZES = "20000,200000,1000000"
START = "2024-11"
SEED = 42
BAD_ROW_SHARE = 0.005  # generate_sample's default, recorded in the manifest
KEY = b"segpipe-bench-fixed-pseudonymization-key"


# -- measuring -----------------------------------------------------------------------------------
def reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (Linux >= 4.0); False when not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """``ru_maxrss`` (KiB on Linux) in MiB: the peak since the process started or the last reset."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Stage:
    """Accumulates wall and CPU seconds and the peak RSS of one stage over several calls."""

    def __init__(self, name: str):
        self.name, self.wall, self.cpu, self.rss, self.per_month = name, 0.0, 0.0, 0.0, {}

    def run(self, month: str, fn):
        reset_peak_rss()
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        w, c = time.perf_counter() - w0, time.process_time() - c0
        rss = peak_rss_mib()
        self.wall += w
        self.cpu += c
        self.rss = max(self.rss, rss)
        self.per_month[month] = {"wall": w, "cpu": c, "rss_mib": rss, "load": os.getloadavg()[0]}
        if isinstance(out, Timer):
            self.per_month[month]["parts"] = out.parts
        return out

    def summary(self) -> dict:
        return {"wall": self.wall, "cpu": self.cpu, "rss_mib": self.rss, "per_month": self.per_month}


class Timer:
    """Wall and CPU seconds of named parts of a stage (``with t("name"): ...``)."""

    def __init__(self):
        self.parts: dict[str, dict[str, float]] = {}

    def __call__(self, name: str):
        timer = self

        class _Ctx:
            def __enter__(self):
                self.w, self.c = time.perf_counter(), time.process_time()

            def __exit__(self, *exc):
                d = timer.parts.setdefault(name, {"wall": 0.0, "cpu": 0.0})
                d["wall"] += time.perf_counter() - self.w
                d["cpu"] += time.process_time() - self.c

        return _Ctx()


def code_fingerprint() -> dict[str, str]:
    """sha256 (first 12 hex) of the library modules under test: other people edit them meanwhile."""
    import hashlib

    return {m: hashlib.sha256((ROOT / "segpipe" / m).read_bytes()).hexdigest()[:12]
            for m in ("features.py", "identity.py", "ingest.py")}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- config --------------------------------------------------------------------------------------
def base_config() -> SegpipeConfig:
    data = yaml.safe_load((ROOT / "segpipe.yaml").read_text(encoding="utf-8"))
    return parse_config(data, base_dir=ROOT, origin=str(ROOT / "segpipe.yaml"))


def month_config(sample: Path, month: str | None) -> SegpipeConfig:
    """segpipe.yaml with each source pointed at the sample: at its files of ``month`` (YYYY-MM)
    only, or at the configured glob when ``month`` is None."""
    data = yaml.safe_load((ROOT / "segpipe.yaml").read_text(encoding="utf-8"))
    for src in data["sources"].values():
        rel = Path(src["path"])
        # data/sample/<source dir>/<file glob>  ->  <sample>/<source dir>/<file glob>
        parts = rel.parts[2:] if rel.parts[:2] == ("data", "sample") else rel.parts[-2:]
        pattern = str(sample.joinpath(*parts))
        if month is not None:
            files = [f for f in sorted(glob.glob(pattern)) if month in Path(f).name]
            if len(files) != 1:
                raise SystemExit(f"expected one file of {month} for {pattern}, found {files}")
            pattern = files[0]
        src["path"] = pattern
    return parse_config(data, base_dir=ROOT, origin="bench")


# -- sample --------------------------------------------------------------------------------------
def ensure_sample(sample: Path, customers: int, months: int) -> tuple[dict, float, bool]:
    from segpipe.sample import generate_sample

    want = {"customers": customers, "months": months, "start": START, "seed": SEED, "bad_row_share": BAD_ROW_SHARE}
    manifest = sample / "manifest.json"
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        if m.get("parameters") == want:
            return m, 0.0, True
    t0 = time.perf_counter()
    m = generate_sample(sample, customers=customers, months=months, start=START, seed=SEED)
    return m, time.perf_counter() - t0, False


# -- upstream ------------------------------------------------------------------------------------
def build_upstream(sample: Path, lake: Path, keys: list[str], sources: list[str]) -> dict:
    """Ingested events, identity links / map and behavioral events for every month, to the lake."""
    ingest, ident, stitch = Stage("ingest"), Stage("identity"), Stage("stitch")
    rows = {}
    for pk in keys:
        cfg = month_config(sample, pk[:7])

        def do_ingest():
            n = 0
            for s in sources:
                res = ingest_source(cfg, s, [pk], key=KEY)[pk]
                if not res.balanced:
                    raise SystemExit(f"{s} {pk}: rows not accounted for: {res.stats()}")
                write_parquet_atomic(res.events, asset_path(lake, f"{s}_ingested", pk))
                n += res.rows_read
            return n

        rows_read = ingest.run(pk, do_ingest)

        def ingested():
            return pl.concat([pl.scan_parquet(asset_path(lake, f"{s}_ingested", pk)) for s in sources])

        def do_identity():
            links = identity_links(ingested()).collect().sort("node", "other")
            write_parquet_atomic(links, asset_path(lake, "identity_links", pk))
            to_date = [pl.scan_parquet(asset_path(lake, "identity_links", k)) for k in keys if k <= pk]
            imap = build_identity_map(pl.concat(to_date))
            write_parquet_atomic(imap, asset_path(lake, "identity_map", pk))
            return imap.height

        nodes = ident.run(pk, do_identity)

        def do_stitch():
            ev = (
                stitch_events(ingested(), pl.scan_parquet(asset_path(lake, "identity_map", pk)))
                .select(list(EVENT_SCHEMA)).collect().sort("event_time", "source", "event_id")
            )
            if ev["customer_id"].null_count():
                raise SystemExit(f"{pk}: {ev['customer_id'].null_count()} events without customer_id")
            write_parquet_atomic(ev, asset_path(lake, "behavioral_events", pk))
            return ev.height, ev["customer_id"].n_unique()

        events, active = stitch.run(pk, do_stitch)
        rows[pk] = {"rows_read": rows_read, "events": events, "active_customers": active, "identity_nodes": nodes}
        log(f"  upstream {pk[:7]}: {rows_read:,} rows read, {events:,} events, {active:,} active customers, "
            f"ingest {ingest.per_month[pk]['wall']:.1f}s identity {ident.per_month[pk]['wall']:.1f}s "
            f"stitch {stitch.per_month[pk]['wall']:.1f}s")
    return {"stages": {s.name: s.summary() for s in (ingest, ident, stitch)}, "months": rows}


def check_full_glob_ingest(sample: Path, lake: Path, pk: str, sources: list[str]) -> dict:
    """ingest_source for one month with the configured glob (all files): same rows, how long."""
    cfg = month_config(sample, None)
    t0 = time.perf_counter()
    same = True
    for s in sources:
        res = ingest_source(cfg, s, [pk], key=KEY)[pk]
        mine = pl.read_parquet(asset_path(lake, f"{s}_ingested", pk))
        same &= res.events.drop("source_file").equals(mine.drop("source_file"))
    return {"month": pk, "seconds": time.perf_counter() - t0, "same_rows": bool(same)}


# -- the two stages under test ---------------------------------------------------------------------
def rollup(lake: Path, pk: str, spec, out: Path) -> Timer:
    """customer_activity_daily + customer_activity_monthly of one month, from its events on disk."""
    t = Timer()
    ev = pl.scan_parquet(asset_path(lake, "behavioral_events", pk))
    with t("build_activity_daily"):
        daily = build_activity_daily(ev, spec=spec).collect()
    with t("write"):
        write_parquet_atomic(daily, asset_path(out, "customer_activity_daily", pk))
    with t("build_activity_monthly"):
        monthly = build_activity_monthly(ev, month=pk, daily=daily.lazy()).collect()
    with t("write"):
        write_parquet_atomic(monthly, asset_path(out, "customer_activity_monthly", pk))
    return t


def snapshot(lake: Path, pk: str, first: str, spec, out: Path) -> Timer:
    """customer_state (previous state + the month's rollups) + customer_features of one month.

    Reads the month's own rollups from ``out`` and everything else from ``lake`` (they are the same
    folder in the sequential run)."""
    def src(asset: str, k: str) -> Path:
        p = asset_path(out, asset, k)
        return p if p.is_file() else asset_path(lake, asset, k)

    t = Timer()
    prev_key = month_key(next_month(month_start(pk), -1))
    leaving = [pl.scan_parquet(src("customer_activity_monthly", k)) for k in leaving_months(pk)
               if src("customer_activity_monthly", k).is_file()]
    with t("update_customer_state"):
        prev = None if pk == first else pl.scan_parquet(src("customer_state", prev_key))
        state = update_customer_state(
            prev, pl.scan_parquet(src("customer_activity_daily", pk)), pl.scan_parquet(src("customer_activity_monthly", pk)),
            spec=spec, identity=customer_identity(pl.scan_parquet(asset_path(lake, "identity_map", pk))), month=pk,
            history=pl.concat(leaving) if leaving else None,
        ).collect()
    with t("write"):
        write_parquet_atomic(state, asset_path(out, "customer_state", pk))
    win = [pl.scan_parquet(src("customer_activity_daily", k)) for k in daily_months(pk) if src("customer_activity_daily", k).is_file()]
    mon = [pl.scan_parquet(src("customer_activity_monthly", k)) for k in monthly_months(pk)
           if src("customer_activity_monthly", k).is_file()]
    with t("build_features"):
        feats = build_features(
            pl.scan_parquet(asset_path(out, "customer_state", pk)),
            pl.concat(win) if win else pl.LazyFrame(schema=daily_schema(spec)),
            pl.concat(mon) if mon else pl.LazyFrame(schema=MONTHLY_SCHEMA),
            None, month=pk, spec=spec,  # identity kinds from the state, as the asset does
        ).collect()
    with t("write"):
        write_parquet_atomic(feats, asset_path(out, "customer_features", pk))
    t.parts["_rows"] = {"customers": feats.height, "daily_rows_in_window": sum(
        pl.scan_parquet(src("customer_activity_daily", k)).select(pl.len()).collect().item()
        for k in daily_months(pk) if src("customer_activity_daily", k).is_file())}
    return t


def reference(lake: Path) -> tuple[float, float, int]:
    t0, c0 = time.perf_counter(), time.process_time()
    ref = (
        pl.scan_parquet(str(lake / "behavioral_events" / "*.parquet"))
        .group_by("customer_id")
        .agg(pl.len().alias("events"), pl.col("amount").sum().alias("revenue"), pl.col("event_time").max().alias("last"))
        .collect()
    )
    return time.perf_counter() - t0, time.process_time() - c0, ref.height


#: Phases of one size, in order (``--stop-after``).
PHASES = ("sample", "upstream", "full_glob_ingest", "features", "refresh", "reference")


# -- one size, in its own process ------------------------------------------------------------------
class StopAfter(Exception):
    """Raised by ``run_size`` once the phase given to ``--stop-after`` is saved."""


def time_refreshes(lake: Path, keys: list[str], spec, repeat: int, scratch: Path
                   ) -> tuple[dict[str, list[dict]], dict[str, float], list[str]]:
    """Time the refresh (rollup + snapshot, inputs from ``lake``, outputs to ``scratch``) of the
    first, 13th and last month ``repeat`` times. Returns the runs per month, each month's peak RSS
    and the months probed."""
    probe = list(dict.fromkeys([keys[0], keys[min(12, len(keys) - 1)], keys[-1]]))
    # the repeats go round the probed months in turn (1, 13, 24, 1, 13, 24, ...), so a change of the
    # machine's load during the benchmark touches every month alike instead of one month's repeats
    runs: dict[str, list[dict]] = {k: [] for k in probe}
    rss: dict[str, float] = {k: 0.0 for k in probe}
    for _ in range(repeat):
        for k in probe:
            out_k = scratch / k
            shutil.rmtree(out_k, ignore_errors=True)
            r, s = Stage("r"), Stage("s")
            r.run(k, lambda: rollup(lake, k, spec, out_k))
            s.run(k, lambda: snapshot(lake, k, keys[0], spec, out_k))
            runs[k].append({"rollup": r.wall, "snapshot": s.wall, "total": r.wall + s.wall, "cpu": r.cpu + s.cpu,
                            "parts": {**r.per_month[k]["parts"], **{f"s.{n}": v for n, v in s.per_month[k]["parts"].items()}},
                            "load": s.per_month[k]["load"]})
            rss[k] = max(rss[k], r.rss, s.rss)
    return runs, rss, probe


def refresh_figures(runs: list[dict]) -> dict[str, float]:
    """Best wall, least cpu and median wall of one month's refresh runs (:func:`time_refreshes`)."""
    return {"total": min(x["total"] for x in runs), "min_cpu": min(x["cpu"] for x in runs),
            "median_total": statistics.median(x["total"] for x in runs)}


def size_dir(out: Path, customers: int, months: int) -> Path:
    """The folder of one size's sample and lake under ``out``."""
    return out / f"c{customers}_m{months}"


def kept_lake(out: Path, customers: int, months: int) -> tuple[Path, str, str]:
    """The lake an earlier ``--keep`` run of this size left under ``out``, with its first and last
    month keys. FileNotFoundError, saying how to make it, when either month's rollup is missing."""
    lake = size_dir(out, customers, months) / "lake"
    first, last = START + "-01", month_key(next_month(month_start(START), months - 1))
    for k in (first, last):
        if not asset_path(lake, "customer_activity_daily", k).is_file():
            raise FileNotFoundError(f"no kept lake with {k[:7]} in {lake}: "
                                    f"run bench/features.py --sizes {customers} --keep first")
    return lake, first, last


def refresh_only(customers: int, months: int, out: Path, result_path: Path, repeat: int) -> None:
    """``--refresh-only``: time the single-month refreshes again on the lake of an earlier run of
    this size (a fresh process: between processes the ratio moves more than between the repeats of
    one) and write the best and least-cpu figures per month to ``result_path``."""
    base = size_dir(out, customers, months)
    keys = month_range(START, month_key(next_month(month_start(START), months - 1)))
    runs, _, _ = time_refreshes(base / "lake", keys, base_config().features, repeat, base / "refresh-again")
    shutil.rmtree(base / "refresh-again", ignore_errors=True)
    result_path.write_text(json.dumps({k: refresh_figures(xs) for k, xs in runs.items()}))


def run_size(customers: int, months: int, out: Path, result_path: Path, repeat: int, check_glob: bool,
             reuse_upstream: bool, stop_after: str | None = None, reuse_features: bool = False) -> None:
    try:
        _run_size(customers, months, out, result_path, repeat, check_glob, reuse_upstream, stop_after, reuse_features)
    except StopAfter:
        log(f"  stopped after phase {stop_after!r} (--stop-after)")


def _run_size(customers: int, months: int, out: Path, result_path: Path, repeat: int, check_glob: bool,
              reuse_upstream: bool, stop_after: str | None, reuse_features: bool = False) -> None:
    res: dict = {"customers": customers, "months": months, "phases_done": [], "code": code_fingerprint()}

    def save(phase: str) -> None:
        res["phases_done"].append(phase)
        result_path.write_text(json.dumps(res, indent=1, default=str))
        if phase == stop_after:
            raise StopAfter(phase)

    t_all = time.perf_counter()
    base = size_dir(out, customers, months)
    sample, lake = base / "sample", base / "lake"
    reset_peak_rss()
    log(f"size {customers:,} customers x {months} months: sample in {sample}")
    manifest, gen_s, reused = ensure_sample(sample, customers, months)
    res["sample"] = {"seconds": gen_s, "reused": reused, "rss_mib": peak_rss_mib(),
                     "raw_rows": manifest["total_rows"], "customers_total": manifest["customers_total"],
                     "disk_bytes": sum(f.stat().st_size for f in sample.rglob("*") if f.is_file())}
    log(f"  sample {'reused' if reused else f'generated in {gen_s:.1f}s'}")
    save("sample")

    cfg = base_config()
    spec = cfg.features
    sources = list(cfg.sources)
    keys = month_range(START, month_key(next_month(month_start(START), months - 1)))
    have_upstream = all(asset_path(lake, "behavioral_events", k).is_file() for k in keys)
    if reuse_upstream and have_upstream and (lake / "upstream.json").is_file():
        res["upstream"] = json.loads((lake / "upstream.json").read_text())
        res["upstream"]["reused"] = True
        log("  upstream reused from an earlier run (its timings are the earlier run's)")
    else:
        for sub in lake.glob("*"):
            if sub.is_dir():
                shutil.rmtree(sub)
        res["upstream"] = build_upstream(sample, lake, keys, sources)
        (lake / "upstream.json").write_text(json.dumps(res["upstream"], default=str))
    save("upstream")
    if check_glob and not res["upstream"].get("reused"):
        log(f"  checking ingest_source with the configured glob for {keys[-1][:7]} ...")
        res["full_glob_ingest"] = check_full_glob_ingest(sample, lake, keys[-1], sources)
        log(f"  full-glob ingest of one month: {res['full_glob_ingest']}")
        save("full_glob_ingest")

    events = {k: pl.scan_parquet(asset_path(lake, "behavioral_events", k)).select(pl.len()).collect().item() for k in keys}
    res["events"] = events
    built = lake / "features.json"  # the sequential run's figures, for --reuse-features
    feature_assets = ("customer_activity_daily", "customer_activity_monthly", "customer_state", "customer_features")
    if reuse_features and built.is_file() and all(asset_path(lake, a, k).is_file() for a in feature_assets for k in keys):
        seq = json.loads(built.read_text())
        res["rollup"], res["snapshot"], res["state_customers"] = seq["rollup"], seq["snapshot"], seq["state_customers"]
        res["features_built_by"] = seq["code"]
        customers_per_month = seq["state_customers"]
        log(f"  sequential feature build reused from an earlier run (its timings are that run's; features.py "
            f"{seq['code']['features.py']}, now {res['code']['features.py']})")
    else:
        if reuse_features:
            log(f"  --reuse-features: no complete earlier build in {lake} ({built.name} or a month's files missing), "
                "building all months")
        for asset in feature_assets:
            shutil.rmtree(lake / asset, ignore_errors=True)
        built.unlink(missing_ok=True)
        # sequential run: every month, as a month-by-month backfill would
        roll, snap = Stage("rollup"), Stage("snapshot")
        customers_per_month = {}
        for k in keys:
            roll.run(k, lambda: rollup(lake, k, spec, lake))
            customers_per_month[k] = snap.run(k, lambda: snapshot(lake, k, keys[0], spec, lake)).parts["_rows"]["customers"]
            log(f"  {k[:7]}: {events[k]:>11,} events  rollup {roll.per_month[k]['wall']:6.2f}s  "
                f"snapshot {snap.per_month[k]['wall']:6.2f}s  state {customers_per_month[k]:,} customers  "
                f"rss {max(roll.per_month[k]['rss_mib'], snap.per_month[k]['rss_mib']):,.0f} MiB")
        res["rollup"], res["snapshot"] = roll.summary(), snap.summary()
        res["state_customers"] = customers_per_month
        built.write_text(json.dumps({k: res[k] for k in ("code", "rollup", "snapshot", "state_customers")}, default=str))
    save("features")

    # refresh of single months from their inputs on disk (outputs to a scratch folder)
    scratch = base / "refresh"
    runs, rss, probe = time_refreshes(lake, keys, spec, repeat, scratch)
    refresh = {}
    identical = True
    for k in probe:
        identical &= pl.read_parquet(asset_path(scratch / k, "customer_features", k)).equals(
            pl.read_parquet(asset_path(lake, "customer_features", k)))
        best = min(runs[k], key=lambda x: x["total"])
        refresh[k] = {**best, **refresh_figures(runs[k]), "events": events[k],
                      "state_customers": customers_per_month[k], "rss_mib": rss[k],
                      "daily_rows_in_window": best["parts"]["s._rows"]["daily_rows_in_window"]}
        log(f"  refresh {k[:7]}: total {best['total']:.2f}s (median {refresh[k]['median_total']:.2f}s) "
            f"cpu {refresh[k]['min_cpu']:.2f}s load {best['load']:.1f}")
    shutil.rmtree(scratch, ignore_errors=True)
    res["refresh_identical_to_sequential"] = bool(identical)
    res["refresh"] = refresh
    save("refresh")

    reset_peak_rss()
    walls, cpus, n = [], [], 0
    for _ in range(repeat):
        w, c, n = reference(lake)
        walls.append(w)
        cpus.append(c)
    res["reference"] = {"seconds": min(walls), "cpu": min(cpus), "all": walls, "customers": n, "rss_mib": peak_rss_mib()}
    log(f"  reference scan: {res['reference']}")
    res["wall_total"] = time.perf_counter() - t_all
    if code_fingerprint() != res["code"]:
        res["code_changed_during_run"] = code_fingerprint()
    save("reference")


# -- report --------------------------------------------------------------------------------------
def fmt_rate(n: float, s: float) -> str:
    return f"{n / s:,.0f}" if s > 0 else "-"


def _parts_total(per_month: dict, months: list[str] | None = None) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for k, v in per_month.items():
        if months is not None and k not in months:
            continue
        for name, d in v.get("parts", {}).items():
            if name.startswith("_"):
                continue
            o = out.setdefault(name, {"wall": 0.0, "cpu": 0.0})
            o["wall"] += d["wall"]
            o["cpu"] += d["cpu"]
    return out


#: the issue's target for the refresh of the last month / the refresh of month 1
TARGET_RATIO = 1.5


def verdict(wall: float, cpu: float) -> str:
    """The target judged on a wall and a cpu ratio: it holds only if both are within it."""
    if max(wall, cpu) <= TARGET_RATIO:
        return "holds"
    return "FAILS" if min(wall, cpu) > TARGET_RATIO else "UNCLEAR (wall and cpu disagree)"


def process_ratios(procs: list[dict], first: str, last: str) -> tuple[list[float], list[float]]:
    """Month ``last`` / month ``first`` per process (``refresh_processes`` of a result: each process's
    best wall and least cpu per month): the wall ratios and the cpu ratios."""
    return ([p[last]["total"] / p[first]["total"] for p in procs],
            [p[last]["min_cpu"] / p[first]["min_cpu"] for p in procs])


def report(results: list[dict], skipped: list[str]) -> str:
    lines = []
    hdr = f"  {'stage':<26}{'wall s':>9}{'cpu s':>9}{'events/s':>12}{'peak RSS MiB':>14}"
    for r in results:
        n, m = r["customers"], r["months"]
        total_customers = r.get("sample", {}).get("customers_total")
        lines.append(f"\n=== {n:,} customers x {m} months ({total_customers or '?':,} incl. the drift cohort) — "
                     f"phases done: {', '.join(r['phases_done'])}")
        if "sample" in r:
            s = r["sample"]
            how = "reused" if s["reused"] else f"generated in {s['seconds']:.1f} s"
            lines.append(f"sample: {how}, {s['disk_bytes'] / 2**30:.2f} GiB, raw rows {sum(s['raw_rows'].values()):,}")
        ev = r.get("events", {})
        total_ev = sum(ev.values())
        if "upstream" in r:
            u = r["upstream"]
            up_ev = sum(x["events"] for x in u["months"].values())
            lines.append(f"upstream, per month (not the focus){' — reused from an earlier run' if u.get('reused') else ''}:")
            lines.append(hdr)
            for name, st in u["stages"].items():
                lines.append(f"  {name:<26}{st['wall']:>9.1f}{st['cpu']:>9.1f}{fmt_rate(up_ev, st['wall']):>12}"
                             f"{st['rss_mib']:>14,.0f}")
            idm = u["stages"]["identity"]["per_month"]
            ks = sorted(idm)
            lines.append(f"  identity (build_identity_map over all links to date): month 1 {idm[ks[0]]['cpu']:.2f} cpu s "
                         f"-> month {len(ks)} {idm[ks[-1]]['cpu']:.2f} cpu s")
        if "full_glob_ingest" in r:
            g = r["full_glob_ingest"]
            mine = r["upstream"]["stages"]["ingest"]["per_month"].get(g["month"], {}).get("wall", float("nan"))
            lines.append(f"  ingest_source({g['month'][:7]}) with the configured glob (reads all {m} files of each source): "
                         f"{g['seconds']:.1f} s vs {mine:.1f} s with only the month's files; same rows: {g['same_rows']}")
        if "rollup" in r:
            loads = [v["load"] for st in ("rollup", "snapshot") for v in r[st]["per_month"].values()]
            lines.append(f"feature store, all {m} months in sequence ({total_ev:,} events; 1-min load average during "
                         f"the stages {min(loads):.1f}..{max(loads):.1f} on {os.cpu_count()} cores):")
            if "features_built_by" in r:
                lines.append(f"  (reused from an earlier run, features.py {r['features_built_by']['features.py']}; "
                             f"the refreshes below ran features.py {r['code']['features.py']})")
            lines.append(hdr)
            for name in ("rollup", "snapshot"):
                st = r[name]
                lines.append(f"  {name:<26}{st['wall']:>9.1f}{st['cpu']:>9.1f}{fmt_rate(total_ev, st['wall']):>12}"
                             f"{st['rss_mib']:>14,.0f}")
                for part, d in sorted(_parts_total(st["per_month"]).items(), key=lambda x: -x[1]["cpu"]):
                    lines.append(f"    {part:<24}{d['wall']:>9.1f}{d['cpu']:>9.1f}")
            both = r["rollup"]["wall"] + r["snapshot"]["wall"]
            lines.append(f"  {'rollup + snapshot':<26}{both:>9.1f}{r['rollup']['cpu'] + r['snapshot']['cpu']:>9.1f}"
                         f"{fmt_rate(total_ev, both):>12}")
            lines.append("  per month:  month       events  rollup s (cpu)  snapshot s (cpu)  state customers"
                         "  daily rows in window  rollup ev/s  snapshot ev/s  load")
            for k in sorted(r["rollup"]["per_month"]):
                a, b = r["rollup"]["per_month"][k], r["snapshot"]["per_month"][k]
                win = b.get("parts", {}).get("_rows", {}).get("daily_rows_in_window", 0)
                lines.append(f"             {k[:7]} {ev[k]:>12,} {a['wall']:>7.2f} ({a['cpu']:5.2f}) {b['wall']:>8.2f} "
                             f"({b['cpu']:6.2f}) {r['state_customers'][k]:>16,} {win:>21,} {fmt_rate(ev[k], a['wall']):>12}"
                             f" {fmt_rate(ev[k], b['wall']):>14} {b['load']:>5.1f}")
        if "refresh" in r:
            ref = r["refresh"]
            ks = sorted(ref)
            f, l = ref[ks[0]], ref[ks[-1]]
            lines.append("refresh of one month alone (rollup + snapshot from its inputs on disk; best wall of the repeats, "
                         "least cpu of the repeats):")
            for k in ks:
                x = ref[k]
                lines.append(f"  {k[:7]}: {x['total']:.2f} s wall (rollup {x['rollup']:.2f} + snapshot {x['snapshot']:.2f}; "
                             f"median {x['median_total']:.2f}), {x['min_cpu']:.2f} s cpu; {x['events']:,} events, "
                             f"{x['state_customers']:,} customers in state, {x['daily_rows_in_window']:,} daily rows in the "
                             f"365-day window; {x['total'] / x['events'] * 1e6:.1f} us/event; peak RSS {x['rss_mib']:,.0f} MiB")
            names = [p for p in f["parts"] if not p.startswith("s._") and p != "s.write" and p != "write"]
            lines.append("  cpu s by function:   " + "  ".join(f"{p.removeprefix('s.')}" for p in names))
            for k in ks:
                lines.append(f"    {k[:7]}:          " + "  ".join(
                    f"{ref[k]['parts'][p]['cpu']:>{len(p.removeprefix('s.'))}.2f}" for p in names))
            raw, raw_cpu = l["total"] / f["total"], l["min_cpu"] / f["min_cpu"]
            per_ev = (l["total"] / l["events"]) / (f["total"] / f["events"])
            per_ev_cpu = (l["min_cpu"] / l["events"]) / (f["min_cpu"] / f["events"])
            lines.append(f"  month {len(ev)} / month 1 cost: wall {raw:.2f}, cpu {raw_cpu:.2f}  -> target <= {TARGET_RATIO} "
                         f"{verdict(raw, raw_cpu)}")
            procs = r.get("refresh_processes", [])
            if len(procs) > 1:
                walls, cpus = process_ratios(procs, ks[0], ks[-1])
                mw, mc = statistics.median(walls), statistics.median(cpus)
                lines.append(f"  month {len(ev)} / month 1 in {len(procs)} processes (this one, then fresh ones on the same "
                             f"lake; each the best of its repeats): wall {' '.join(f'{x:.2f}' for x in walls)}, cpu "
                             f"{' '.join(f'{x:.2f}' for x in cpus)}")
                lines.append(f"    median of the processes: wall {mw:.2f}, cpu {mc:.2f}  -> target <= {TARGET_RATIO} {verdict(mw, mc)}")
            lines.append(f"  per event of the month:     wall {per_ev:.2f}, cpu {per_ev_cpu:.2f}")
            lines.append(f"  customers in state grew {l['state_customers'] / f['state_customers']:.2f}x, events "
                         f"{l['events'] / f['events']:.2f}x, daily rows in the window {l['daily_rows_in_window'] / f['daily_rows_in_window']:.2f}x")
            # month 1 has no previous state, nothing leaving the running sums and one month in its windows:
            # split month N's cost into what its larger data explains and the work only later months do
            grown = f["rollup"] * l["events"] / f["events"] + f["snapshot"] * l["state_customers"] / f["state_customers"]
            lines.append(f"  grown with the data alone (rollup x events, snapshot x customers in state) month {len(ev)} would "
                         f"take {grown:.2f} s, {grown / f['total']:.2f}x month 1; the other {l['total'] - grown:.2f} s "
                         f"({(l['total'] - grown) / l['total']:.0%}) is work month 1 does not do (previous state, months "
                         f"leaving the running sums, windows longer than one month)")
            lines.append(f"  rollup us per event: month 1 {f['rollup'] / f['events'] * 1e6:.2f}, month {len(ev)} "
                         f"{l['rollup'] / l['events'] * 1e6:.2f}; snapshot us per customer in state: month 1 "
                         f"{f['snapshot'] / f['state_customers'] * 1e6:.2f}, month {len(ev)} "
                         f"{l['snapshot'] / l['state_customers'] * 1e6:.2f}")
            if len(ks) == 3:
                mid = ref[ks[1]]
                lines.append(f"  month {len(ev)} / month 13 (the 365-day window stops growing at 13 months): wall "
                             f"{l['total'] / mid['total']:.2f}, cpu {l['min_cpu'] / mid['min_cpu']:.2f}; customers in state "
                             f"{l['state_customers'] / mid['state_customers']:.2f}x, events {l['events'] / mid['events']:.2f}x")
            if "refresh_identical_to_sequential" in r:
                lines.append(f"  refreshed features identical to the sequential run's: {r['refresh_identical_to_sequential']}")
        if "reference" in r and "rollup" in r:
            rf = r["reference"]["seconds"]
            both = r["rollup"]["wall"] + r["snapshot"]["wall"]
            lines.append(f"reference: one Polars scan of all {total_ev:,} behavioral events, count/sum(amount)/max(event_time) "
                         f"per customer: {rf:.2f} s ({fmt_rate(total_ev, rf)} events/s, peak RSS {r['reference']['rss_mib']:,.0f} MiB)")
            rc = r["reference"].get("cpu")
            both_cpu = r["rollup"]["cpu"] + r["snapshot"]["cpu"]
            cpu_txt = f", cpu {both_cpu / rc:.0f}x (reference {rc:.2f} cpu s)" if rc else ""
            lines.append(f"  full feature build over all {m} months (rollup + snapshot) / reference: wall {both / rf:.0f}x{cpu_txt}")
            if "refresh" in r:
                last = r["refresh"][sorted(r["refresh"])[-1]]
                cpu_txt = f", cpu {last['min_cpu'] / rc:.1f}x" if rc else ""
                lines.append(f"  refresh of the last month alone / reference: wall {last['total'] / rf:.1f}x{cpu_txt}")
        if "code" in r:
            lines.append("segpipe modules (sha256/12): " + ", ".join(f"{k} {v}" for k, v in r["code"].items())
                         + ("  (changed on disk during the run, the run used the versions above: "
                            + str(r["code_changed_during_run"]) + ")"
                            if "code_changed_during_run" in r else ""))
        if "wall_total" in r:
            lines.append(f"wall time of this size: {r['wall_total']:.0f} s")
    for s in skipped:
        lines.append(f"\nNOT RUN: {s}")
    return "\n".join(lines)


def machine() -> str:
    try:
        free = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.strip()
    except OSError:
        free = "?"
    return (f"{platform.node()} {platform.machine()}, nproc={os.cpu_count()}, python {platform.python_version()}, "
            f"polars {pl.__version__} (thread pool {pl.thread_pool_size()})\n{free}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=DEFAULT_SIZES, help="customers per size, comma separated (default %(default)s)")
    ap.add_argument("--months", type=int, default=24, help="months of history (default %(default)s)")
    ap.add_argument("--quick", action="store_true", help="20k customers only")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where samples and the bench lake go (default bench/out)")
    ap.add_argument("--repeat", type=int, default=3, help="repeats of the single-month refresh and the reference")
    ap.add_argument("--budget-minutes", type=float, default=25.0,
                    help="stop starting sizes (and stop a running one) past this total wall time")
    ap.add_argument("--keep", action="store_true", help="keep the generated samples and lake (default: delete each size's folder when done)")
    ap.add_argument("--reuse-upstream", action="store_true", help="reuse the behavioral events of an earlier --keep run")
    ap.add_argument("--reuse-features", action="store_true",
                    help="with --reuse-upstream: reuse the rollups, states and features of an earlier --keep run "
                         "instead of building all months again; only the single-month refreshes and the reference "
                         "are timed, and the refreshes are compared with that run's features")
    ap.add_argument("--json", type=Path, default=None, help="also write all figures as JSON here")
    ap.add_argument("--stop-after", choices=PHASES, default=None,
                    help="stop each size after this phase (e.g. 'upstream' to prepare a sample and its lake "
                         "for later --reuse-upstream runs)")
    ap.add_argument("--processes", type=int, default=1,
                    help="time the single-month refreshes in this many processes (the size's own and fresh ones on "
                         "its lake) and judge the target on the median of their month last / month 1 ratios: "
                         "between processes the ratio moves more than between the repeats of one (default %(default)s)")
    ap.add_argument("--refresh-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--check-glob", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--from-json", type=Path, default=None, help="print the report of an earlier --json file and exit")
    a = ap.parse_args(argv)

    if a.from_json is not None:
        d = json.loads(a.from_json.read_text())
        print(d["machine"])
        print(report(d["results"], d["not_run"]))
        return 0

    if a.one is not None and a.refresh_only:
        refresh_only(a.one, a.months, a.out, a.result, a.repeat)
        return 0
    if a.one is not None:
        run_size(a.one, a.months, a.out, a.result, a.repeat, a.check_glob, a.reuse_upstream, a.stop_after, a.reuse_features)
        return 0

    sizes = [20_000] if a.quick else [int(s) for s in a.sizes.split(",") if s.strip()]
    a.out.mkdir(parents=True, exist_ok=True)
    print(f"segpipe feature store benchmark, {dt.datetime.now():%Y-%m-%d %H:%M}\n{machine()}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    t0 = time.perf_counter()
    budget = a.budget_minutes * 60
    results, skipped = [], []
    prev: tuple[int, float] | None = None
    for i, n in enumerate(sizes):
        left = budget - (time.perf_counter() - t0)
        if prev is not None:
            estimate = prev[1] * n / prev[0]
            if estimate > left:
                skipped.append(f"{n:,} customers: estimated {estimate / 60:.0f} min (linear from {prev[0]:,}) "
                               f"> {left / 60:.0f} min left of the {a.budget_minutes:g} min budget")
                continue
        if left <= 0:
            skipped.append(f"{n:,} customers: budget of {a.budget_minutes:g} min used up")
            continue
        result_path = a.out / f"result_c{n}_m{a.months}.json"
        result_path.unlink(missing_ok=True)
        one = [sys.executable, str(Path(__file__).resolve()), "--one", str(n), "--months", str(a.months),
               "--out", str(a.out), "--repeat", str(a.repeat)]
        cmd = [*one, "--result", str(result_path)]
        if i == 0:
            cmd.append("--check-glob")
        if a.reuse_upstream:
            cmd.append("--reuse-upstream")
        if a.reuse_features:
            cmd.append("--reuse-features")
        if a.stop_after:
            cmd += ["--stop-after", a.stop_after]
        started = time.perf_counter()
        try:
            proc = subprocess.run(cmd, timeout=left)
            status = f"exit code {proc.returncode}" if proc.returncode else None
        except subprocess.TimeoutExpired:
            status = f"stopped after {left / 60:.0f} min (budget)"
        took = time.perf_counter() - started
        r = json.loads(result_path.read_text()) if result_path.is_file() else {"customers": n, "months": a.months, "phases_done": []}
        if status:
            skipped.append(f"{n:,} customers: incomplete ({status}); phases done: {r['phases_done']}")
        if a.processes > 1 and "refresh" in r["phases_done"]:
            r["refresh_processes"] = [{k: {x: v[x] for x in ("total", "min_cpu", "median_total")}  # as refresh_figures
                                       for k, v in r["refresh"].items()}]
            again = a.out / f"refresh_c{n}_m{a.months}.json"
            for _ in range(a.processes - 1):
                again.unlink(missing_ok=True)
                try:
                    subprocess.run([*one, "--result", str(again), "--refresh-only"],
                                   timeout=max(budget - (time.perf_counter() - t0), 1), check=True)
                except (subprocess.TimeoutExpired, subprocess.CalledProcessError) as e:
                    skipped.append(f"{n:,} customers: refresh timing in a fresh process stopped ({e})")
                    break
                r["refresh_processes"].append(json.loads(again.read_text()))
            again.unlink(missing_ok=True)
        results.append(r)
        prev = (n, took - r.get("full_glob_ingest", {}).get("seconds", 0.0))
        if not a.keep:
            shutil.rmtree(a.out / f"c{n}_m{a.months}", ignore_errors=True)
    text = report(results, skipped)
    print(text)
    print(f"\ntotal wall time: {time.perf_counter() - t0:.0f} s")
    if a.json:
        a.json.write_text(json.dumps({"machine": machine(), "results": results, "not_run": skipped}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
