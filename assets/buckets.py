"""Customer-hash buckets: the per-customer assets as Dagster steps, one step per bucket.

A bucketed asset is a graph of three ops (all visible in the run's timeline):

* ``{asset}__plan`` chooses the number of buckets ``n``: ``scale.buckets`` when set, else one bucket
  per ``scale.bucket_events`` events of the month (rollups) or ``scale.bucket_customers`` customers
  (state and snapshot), and fans out one dynamic step per bucket;
* ``{asset}__bucket[bK]`` computes the asset for the customers whose id hashes into bucket ``K``
  (every partition of the run, in order: the state of month M+1 follows the bucket's own state of
  month M) and writes one sorted part file per partition under
  ``{lake}/_buckets/{asset}/{run_id}/{partition}/``. It holds only that bucket's customers;
* ``{asset}__merge`` streams the parts of each partition, merged by ``customer_id``, into the asset's
  one file ``{lake}/{asset}/{partition}.parquet`` (``sink_parquet``: the table never has to fit in
  memory), applies the asset's finishing step over all customers (the usage tier quantiles of the
  snapshot), records the partition's metadata from that file and deletes the parts.

Every input of a bucketed asset carries ``customer_id``; a bucket step filters each of them to its
bucket before computing, so the asset's own code is the same for one bucket or many. Outputs stay
one table per asset and month, sorted by ``customer_id``: readers never see buckets.

The bucket of an id is ``hash(customer_id) mod n`` with Polars' seeded hash. It only has to agree
between the steps of one run (parts are merged by the run that wrote them), so a change of hash
across Polars versions moves customers between buckets but never changes an output.
"""

import inspect
import math
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import dagster as dg
import polars as pl

from assets.io_manager import STEP_VALUES, write_frame
from segpipe.lake import (Location, asset_path, is_remote, lake_join, remove_folder, scan_parquet,
                          write_parquet_atomic)
from segpipe.slices import write_slices

BUCKET_SEED = 0x5E6B1D
PARTS = "_buckets"

Frames = dict[str, pl.LazyFrame]
#: ``compute(context, inputs, whole)``: yields the asset's partitions (``(partition, DataFrame)``, in
#: order, each written at once so that a bucket holds one month at a time) from its
#: inputs (``{input name: {partition: LazyFrame}}``) filtered to one bucket's customers (except the
#: ``shared`` inputs, which every bucket reads whole); ``whole`` are the same inputs unfiltered, for
#: the rare quantity that needs every customer (read lazily: only what is used is read).
Compute = Callable[[dg.AssetExecutionContext, dict[str, Frames], dict[str, Frames]], Iterator[tuple[str, pl.DataFrame]]]
#: ``finish(context, partition, merged)``: the whole partition after the merge (lazy).
Finish = Callable[[dg.AssetExecutionContext, str, pl.LazyFrame], pl.LazyFrame]
#: ``report(partition, written)``: the partition's metadata, from the file just written (lazy).
Report = Callable[[str, pl.LazyFrame], Mapping[str, object]]


def in_bucket(bucket: int, buckets: int) -> pl.Expr:
    """True for the rows whose ``customer_id`` hashes into ``bucket`` of ``buckets``."""
    if buckets == 1:
        return pl.lit(True)
    return (pl.col("customer_id").hash(seed=BUCKET_SEED) % buckets) == bucket


def bucket_count(rows: int, *, buckets: int | None, per_bucket: int) -> int:
    """``buckets`` when set, else one per ``per_bucket`` rows (at least one)."""
    return buckets if buckets is not None else max(1, math.ceil(rows / per_bucket))


def part_path(lake_dir: Location, asset: str, run_id: str, partition: str, bucket: int, buckets: int) -> Location:
    return lake_join(lake_dir, PARTS, asset, run_id, partition, f"b{bucket:04d}-of-{buckets:04d}.parquet")


def merge_parts(files: list[Location], scratch: Path, *, slice_rows: int) -> pl.LazyFrame:
    """The parts (each sorted by ``customer_id``, no id in two parts) as one lazy frame sorted by
    id: written to ``scratch`` a range of ids at a time (:func:`segpipe.slices.write_slices`; each
    range reads its row groups of every part), so memory follows one range. A chain of
    ``merge_sorted`` held 1.4 GiB for five parts of the 1M snapshot, the ranges 0.7 GiB."""
    return pl.scan_parquet(write_slices(pl.concat([scan_parquet(f) for f in files]), scratch, key="customer_id",
                                        slice_rows=slice_rows, arrange=lambda lf: lf.sort("customer_id"),
                                        name="merged"))


def _rows(frames: Frames) -> int:
    return max((lf.select(pl.len()).collect().item() for lf in frames.values()), default=0)


def bucketed_asset(
    name: str, *, ins: dict[str, dg.AssetIn], size_inputs: dict[str, str], compute: Compute, report: Report,
    finish: Finish | None = None, shared: tuple[str, ...] = (), description: str, **asset_kwargs,
) -> dg.AssetsDefinition:
    """A graph-backed asset ``name`` computed per customer-hash bucket (see the module docstring).

    ``ins`` are the asset's inputs (each with a ``customer_id`` column, except the ``shared`` ones
    such as a model, read whole by every bucket), ``size_inputs`` those whose
    row counts choose the number of buckets, each as ``"events"`` or ``"customers"`` (which
    ``scale.bucket_*`` setting divides it), ``asset_kwargs`` the usual asset arguments (partitions,
    group, metadata, backfill policy...)."""
    names = list(ins)

    @dg.op(name=f"{name}__plan", ins={n: dg.In() for n in size_inputs}, out=dg.DynamicOut(list),
           required_resource_keys={"segpipe"},
           description=f"Chooses the number of customer-hash buckets of {name} and starts one step per bucket.")
    def plan(context: dg.OpExecutionContext, **inputs):
        scale = context.resources.segpipe.config().scale
        sizes = {k: (_rows(frames), size_inputs[k]) for k, frames in inputs.items()}
        per = {"events": scale.bucket_events, "customers": scale.bucket_customers}
        n = max(bucket_count(rows, buckets=scale.buckets, per_bucket=per[kind]) for rows, kind in sizes.values())
        how = ("scale.buckets" if scale.buckets is not None else ", ".join(
            f"{k}: {rows:,} rows / scale.bucket_{kind} {per[kind]:,}" for k, (rows, kind) in sizes.items()))
        context.log.info(f"{name}: {n} bucket(s) ({how})")
        for b in range(n):
            yield dg.DynamicOutput([b, n], mapping_key=f"b{b}")

    @dg.op(name=f"{name}__bucket", ins={"bucket": dg.In(list), **{n: dg.In() for n in names}},
           required_resource_keys={"segpipe"},
           description=f"Computes {name} for the customers of one bucket and writes its part files.")
    def bucket(context: dg.AssetExecutionContext, bucket: list, **inputs):
        b, n = bucket
        keep = in_bucket(b, n)
        frames = {k: v if k in shared else {pk: lf.filter(keep) for pk, lf in v.items()} for k, v in inputs.items()}
        lake = context.resources.segpipe.config().lake_path
        written, rows = {}, {}
        for pk, frame in compute(context, frames, inputs):
            path = part_path(lake, name, context.run_id, pk, b, n)
            write_parquet_atomic(frame, path)
            written[pk], rows[pk] = str(path), frame.height
            del frame
        context.log.info(f"{name} bucket {b + 1}/{n}: " + ", ".join(f"{pk[:7]} {r:,} rows" for pk, r in rows.items()))
        return written

    @dg.op(name=f"{name}__merge", ins={"parts": dg.In(list)}, required_resource_keys={"segpipe"},
           description=f"Streams the bucket parts of {name} into one file per month, sorted by customer_id.")
    def merge(context: dg.AssetExecutionContext, parts: list):
        config = context.resources.segpipe.config()
        lake = config.lake_path
        for pk in sorted(context.partition_keys):
            files = sorted(p[pk] for p in parts)
            with tempfile.TemporaryDirectory(prefix=f"segpipe-{name}-merge-") as scratch:
                merged = merge_parts(files, Path(scratch), slice_rows=config.scale.slice_rows)
                if finish is not None:
                    merged = finish(context, pk, merged)
                write_frame(lake, name, pk, merged)
            written = scan_parquet(asset_path(lake, name, pk))
            context.add_asset_metadata({"buckets": len(files), **report(pk, written)}, partition_key=pk)
        # only once every month is written: a merge re-executed after a failure finds all its parts
        _remove_run_folders(lake, name, context.run_id)
        return None

    def compose(**kw):
        buckets = plan(**{n: kw[n] for n in size_inputs})
        return merge(buckets.map(lambda b: bucket(b, **kw)).collect())

    compose.__name__ = name
    compose.__signature__ = inspect.Signature(
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names])
    return dg.graph_asset(name=name, ins=ins, description=description, **asset_kwargs)(compose)


def _remove_run_folders(lake: Location, asset: str, run_id: str) -> None:
    """Delete the run's bucket parts (``_buckets/{asset}/{run_id}``) and the small values its plan and
    bucket steps passed on (``_steps/{asset}/{run_id}``): both folders belong to this run and asset
    alone. One recursive delete per folder, not one call per object (in an object store each call is
    a request; 35 of them took about 100 s on Azurite). The asset's own folders (``_buckets/{asset}``,
    ``_steps/{asset}``) go too when nothing else is left in them; in an object store an empty
    "folder" marker of them may stay."""
    for folder in (lake_join(lake, PARTS, asset, run_id), lake_join(lake, STEP_VALUES, asset, run_id)):
        remove_folder(folder)
        if not is_remote(lake):
            try:
                Path(folder).parent.rmdir()  # only when empty
            except OSError:
                pass
