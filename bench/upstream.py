"""Peak memory and time of each upstream step of one month: ingestion per source, identity links,
identity graph, identity map and stitching (issue #8).

Not a test: it prints figures. Each step runs in a fresh subprocess, so its peak RSS
(``getrusage``) is its own. The steps call the segpipe library the way the assets do (ingestion
with a scratch folder for the sorted month, the identity graph from the previous month's graph,
the map updated from the previous month's map with the graph's new links, or built from the graph
in the first month), reading the inputs of a ``bench/features.py --keep`` lake and writing to a
scratch folder that is deleted afterwards.

Two reference runs in the same script put the figures in proportion:

* ``read <source>``: Polars reading the month's raw file of the largest source whole
  (``read_ndjson`` / ``read_csv``), the least any ingestion of it could hold;
* ``map from all links``: the identity map built straight from every month's links to date, as
  segpipe did before ``identity_graph`` existed;
* ``map built from the graph``: the month's map built from the whole graph, what ``identity_map``
  did every month before it was updated from the previous month's (the first month still does).

Usage::

    .venv/bin/python bench/upstream.py --size 1000000            # needs bench/out/c1000000_m24
    .venv/bin/python bench/upstream.py --size 200000 --json bench/out/upstream_200k.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

SOURCES = ("orders", "product", "email", "web")
STEPS = (*(f"ingest {s}" for s in SOURCES), "identity_links", "identity_graph", "identity_map",
         "behavioral_events", "read product (reference)", "map from all links (reference)",
         "map built from the graph (reference)")


def _month_keys(lake: Path) -> list[str]:
    return sorted(p.stem for p in (lake / "identity_links").glob("*.parquet"))


def run_step(step: str, base: Path, month: str, scratch: Path) -> dict:
    """One step, in this process; returns rows, wall and cpu seconds and the peak RSS."""
    import polars as pl

    import features as B  # bench/features.py: config of the sample, pseudonymization key
    from segpipe.config import ScaleConfig
    from segpipe.identity import build_identity_map, month_map, stitch_month, write_graph, write_links
    from segpipe.ingest import ingest_source
    from segpipe.lake import asset_path
    from segpipe.timeutil import month_key, month_start, next_month

    lake, sample = base / "lake", base / "sample"
    keys = [k for k in _month_keys(lake) if k <= month]
    prev_graph = scratch / "previous_graph.parquet"

    def ingested():
        return pl.concat([pl.scan_parquet(asset_path(lake, f"{s}_ingested", month)) for s in SOURCES])

    note = ""
    w0, c0 = time.perf_counter(), time.process_time()
    if step.startswith("ingest "):
        source = step.split()[1]
        cfg = B.month_config(sample, month[:7]).model_copy(update={"lake_dir": str(scratch / "lake")})
        res = ingest_source(cfg, source, [month], key=B.KEY, out_dir=scratch / source)[month]
        if not res.balanced:
            raise SystemExit(f"{source}: rows not accounted for: {res.stats()}")
        rows = res.rows_read
    elif step == "identity_links":
        rows = write_links(ingested(), scratch / "links", slice_rows=ScaleConfig().slice_rows).select(pl.len()).collect().item()
    elif step == "identity_graph":
        graph = write_graph(pl.scan_parquet(prev_graph), pl.scan_parquet(asset_path(lake, "identity_links", month)),
                            scratch / "graph", slice_rows=ScaleConfig().slice_rows)
        rows = graph.select(pl.len()).collect().item()
    elif step == "identity_map":  # as the asset: the previous month's map updated, or built in the first month
        graph = pl.scan_parquet(scratch / "graph" / "*.parquet")
        previous = asset_path(lake, "identity_map", month_key(next_month(month_start(month), -1)))
        plan, note = month_map(pl.scan_parquet(previous) if previous.is_file() else None, graph,
                               since=month_start(month), slice_rows=ScaleConfig().slice_rows)
        plan.sink_parquet(scratch / "map.parquet", compression="lz4")
        rows = pl.scan_parquet(scratch / "map.parquet").select(pl.len()).collect().item()
    elif step == "map built from the graph (reference)":
        rows = build_identity_map(pl.scan_parquet(scratch / "graph" / "*.parquet"), distinct=True,
                                  slice_rows=ScaleConfig().slice_rows).height
    elif step == "behavioral_events":
        ev = stitch_month(ingested(), pl.scan_parquet(asset_path(lake, "identity_map", month)), scratch / "events",
                          slice_rows=ScaleConfig().slice_rows)
        rows = ev.select(pl.len()).collect().item()
    elif step == "read product (reference)":
        path = next(p for p in sorted((sample / "product").glob("*")) if month[:7] in p.name)
        if path.suffix == ".jsonl":  # every key as text, as segpipe reads them
            with open(path, encoding="utf-8") as fh:
                keys_ = list(json.loads(fh.readline()))
            frame = pl.read_ndjson(path, schema={k: pl.String for k in keys_})
        else:
            frame = pl.read_csv(path, infer_schema=False)
        rows = frame.height
    elif step == "map from all links (reference)":
        rows = build_identity_map(pl.concat([pl.scan_parquet(asset_path(lake, "identity_links", k)) for k in keys])).height
    else:
        raise SystemExit(f"unknown step {step!r}")
    return {"step": step, "rows": rows, "wall": time.perf_counter() - w0, "cpu": time.process_time() - c0,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "note": note}


def prepare_previous_graph(base: Path, month: str, scratch: Path) -> float:
    """The previous month's identity graph (all links before ``month``), as the lake would hold it."""
    import polars as pl

    from segpipe.identity import LINK_SCHEMA, accumulate_links

    lake = base / "lake"
    before = [lake / "identity_links" / f"{k}.parquet" for k in _month_keys(lake) if k < month]
    t0 = time.perf_counter()
    links = pl.scan_parquet(before) if before else pl.LazyFrame(schema=LINK_SCHEMA)
    accumulate_links(pl.LazyFrame(schema=LINK_SCHEMA), links).sink_parquet(scratch / "previous_graph.parquet")
    return time.perf_counter() - t0


def _subprocess(args, month: str, scratch: Path, step: str) -> dict:
    """Run one step in a fresh process. This process stays small: a child's peak RSS (ru_maxrss)
    starts from its parent's, as the kernel keeps the high-water mark across fork and exec."""
    out = subprocess.run([sys.executable, __file__, "--size", str(args.size), "--months", str(args.months),
                          "--month", month, "--out", str(args.out), "--step", step, "--scratch", str(scratch)],
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{step} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1_000_000, help="customers of the bench/features.py sample")
    ap.add_argument("--months", type=int, default=24)
    ap.add_argument("--month", default=None, help="partition key (default: the last month of the lake)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--only", default=None, help="comma-separated steps to run (default: all)")
    ap.add_argument("--step", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--scratch", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    base = args.out / f"c{args.size}_m{args.months}"
    lake = base / "lake"
    if not (lake / "identity_links").is_dir():
        raise SystemExit(f"{lake} has no upstream tables: run bench/features.py --sizes {args.size} --keep first")
    month = args.month or _month_keys(lake)[-1]
    if args.step == "prepare":
        print(json.dumps({"seconds": prepare_previous_graph(base, month, args.scratch)}))
        return 0
    if args.step:
        print(json.dumps(run_step(args.step, base, month, args.scratch)))
        return 0
    scratch = args.out / f"upstream_scratch_c{args.size}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        prep = _subprocess(args, month, scratch, "prepare")["seconds"]
        print(f"{args.size:,} customers, month {month[:7]} ({platform.node()}, {time.strftime('%Y-%m-%d %H:%M')}); "
              f"previous month's graph prepared in {prep:.1f} s", flush=True)
        results = []
        for step in (args.only.split(",") if args.only else STEPS):
            r = _subprocess(args, month, scratch, step)
            results.append(r)
            print(f"  {step:38s} {r['rows']:>12,} rows  wall {r['wall']:7.1f} s  cpu {r['cpu']:7.1f} s  "
                  f"peak {r['peak_mib']:7,.0f} MiB  {r['note']}".rstrip(), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    by = {r["step"]: r for r in results}
    if args.only:
        return 0
    pipeline = [r for r in results if "reference" not in r["step"]]
    top = max(pipeline, key=lambda r: r["peak_mib"])
    print(f"largest step: {top['step']} {top['peak_mib']:,.0f} MiB; "
          f"ingest product / plain read of its file: {by['ingest product']['peak_mib'] / by['read product (reference)']['peak_mib']:.2f}x; "
          f"identity_graph + identity_map / map from all links: cpu "
          f"{(by['identity_graph']['cpu'] + by['identity_map']['cpu']) / by['map from all links (reference)']['cpu']:.2f}x, "
          f"peak {max(by['identity_graph']['peak_mib'], by['identity_map']['peak_mib']) / by['map from all links (reference)']['peak_mib']:.2f}x; "
          f"identity_map / map built from the graph: wall "
          f"{by['identity_map']['wall'] / by['map built from the graph (reference)']['wall']:.2f}x, "
          f"peak {by['identity_map']['peak_mib'] / by['map built from the graph (reference)']['peak_mib']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"size": args.size, "month": month, "steps": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
