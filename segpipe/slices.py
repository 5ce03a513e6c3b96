"""Writing a large sorted table a slice at a time, so that memory follows one slice, not the table.

A month's events are sorted by time first (ingestion, stitching) and the identity graph by its
node first. Rows are cut into ranges of that first sort key, each range is sorted (or grouped and
sorted) on its own and written as one Parquet part; the parts read in order are the whole table,
sorted exactly as one sort of everything would be: every row of a range sorts before every row
of the next. A scan of the parts is one table to the IO manager, which streams it into the lake.

The ranges' bounds are sample values of the key (rows picked by a hash of the key, so the same
data always gives the same bounds). Rows sharing one key value always stay in one range, so a
single value held by more rows than a slice can hold makes that slice larger; nothing is lost.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path

import polars as pl

#: Rows of the sample taken per range to place its bounds.
_SAMPLE_PER_SLICE = 200


def slice_bounds(frame: pl.LazyFrame, key: str, *, rows: int, slices: int) -> list:
    """At most ``slices - 1`` increasing values of ``key`` that cut ``frame`` (``rows`` rows) into
    ranges of about equal size, from a deterministic sample of about 200 rows per range."""
    if slices <= 1 or rows == 0:
        return []
    every = max(1, rows // (slices * _SAMPLE_PER_SLICE))
    sample = (
        frame.select(key).filter(pl.col(key).is_not_null() & (pl.col(key).hash(seed=17) % every == 0))
        .collect()
        .get_column(key)
        .sort()
    )
    if sample.len() == 0:
        return []
    picks = [sample[min(sample.len() - 1, (i * sample.len()) // slices)] for i in range(1, slices)]
    # a bound at the smallest value sampled would open with a range of (almost) nothing
    return sorted(set(picks) - {sample[0]})


def write_slices(
    frame: pl.LazyFrame,
    folder: Path,
    *,
    key: str,
    slice_rows: int,
    arrange: Callable[[pl.LazyFrame], pl.LazyFrame],
    name: str = "part",
    scatter: bool = False,
    rows: int | None = None,
) -> list[Path]:
    """Write ``frame`` to Parquet parts in ``folder``, one per range of ``key``, each part being
    ``arrange(rows of the range)`` (which must sort by ``key`` first), one range per ``slice_rows``
    rows of ``frame`` (``rows``: its size when known, else counted). Returns the parts in
    order; read together they are ``arrange(frame)``. Null keys go to the first range (they sort
    first).

    Each range is read with a filter on ``frame``: cheap when ``frame`` scans files sorted (or
    nearly) by ``key``, whose row groups the filter skips. For a ``frame`` that is costly to compute
    again (links derived from events), ``scatter`` computes it once, writing its rows to one folder
    per range with a partitioned ``sink_parquet``, then arranges each range from its folder (it
    holds a write buffer per range: measured 10-20 % more memory than filters on sorted files)."""
    folder.mkdir(parents=True, exist_ok=True)
    bounds = _bounds(frame, key, rows=rows, slice_rows=slice_rows)
    if scatter and bounds:
        return _scattered(frame, folder, key=key, bounds=bounds, arrange=arrange, name=name)
    parts = []
    for i, keep in enumerate(_ranges(key, bounds)):
        path = folder / f"{name}-{i:05d}.parquet"
        arrange(frame.filter(keep)).sink_parquet(path, compression="lz4")
        parts.append(path)
    return parts


def key_ranges(frame: pl.LazyFrame, key: str, *, slice_rows: int) -> list[pl.Expr]:
    """Filters cutting ``frame`` into ranges of ``key`` of about ``slice_rows`` rows each, in key
    order (one filter when ``frame`` fits one range)."""
    return _ranges(key, _bounds(frame, key, rows=None, slice_rows=slice_rows))


def _bounds(frame: pl.LazyFrame, key: str, *, rows: int | None, slice_rows: int) -> list:
    if rows is None:
        rows = frame.select(pl.len()).collect().item()
    return slice_bounds(frame, key, rows=rows, slices=max(1, math.ceil(rows / max(slice_rows, 1))))


def _ranges(key: str, bounds: list) -> list[pl.Expr]:
    return [in_range(pl.col(key), bounds, i) for i in range(len(bounds) + 1)]


def in_range(key: pl.Expr, bounds: list, i: int) -> pl.Expr:
    """True for the rows of range ``i`` of ``bounds`` (:func:`slice_bounds`): from ``bounds[i-1]``
    included to ``bounds[i]`` excluded; the first range also holds the nulls."""
    cond = pl.lit(True)
    if i > 0:
        cond = key >= bounds[i - 1]
    if i < len(bounds):
        cond = cond & ((key < bounds[i]) | key.is_null() if i == 0 else key < bounds[i])
    return cond


def _scattered(frame: pl.LazyFrame, folder: Path, *, key: str, bounds: list,
               arrange: Callable[[pl.LazyFrame], pl.LazyFrame], name: str) -> list[Path]:
    scatter = folder / f"{name}-scatter"
    shutil.rmtree(scatter, ignore_errors=True)
    k = pl.col(key)
    where = pl.sum_horizontal([(k >= b).cast(pl.UInt32) for b in bounds]).fill_null(0).alias("__slice")
    frame.with_columns(where).sink_parquet(pl.PartitionBy(scatter, key="__slice", include_key=False),
                                           compression="lz4", mkdir=True)
    empty = frame.clear()
    parts = [folder / f"{name}-{i:05d}.parquet" for i in range(len(bounds) + 1)]
    for i, part in enumerate(parts):
        held = sorted((scatter / f"__slice={i}").glob("*.parquet"))
        arrange(pl.scan_parquet(held) if held else empty).sink_parquet(part, compression="lz4")
        for f in held:
            f.unlink()
    shutil.rmtree(scatter, ignore_errors=True)
    return parts
