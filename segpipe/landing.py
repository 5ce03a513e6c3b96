"""The landing folder: which source files are new or changed since the last look, and their months.

Files land where the sources' ``path`` globs point (``sources.<name>.path``; e.g.
``data/landing/orders/*.csv``). :func:`snapshot` records each file's size and modification
time; :func:`changed` compares two snapshots; :func:`file_months` says which snapshot months a
file holds: from a ``YYYY-MM`` in its name when there is one, else from its event times.
"""

from __future__ import annotations

import datetime as dt
import os
import re

import polars as pl

from segpipe.config import SegpipeConfig
from segpipe.ingest import text_time
from segpipe.readers import SourceError, list_source_files, read_source_file

MONTH_IN_NAME = re.compile(r"(?<!\d)((?:19|20)\d{2})[-_]?(0[1-9]|1[0-2])(?!\d)")


def snapshot(config: SegpipeConfig) -> dict[str, dict]:
    """``{path: {"source", "size", "mtime_ns"}}`` of every file the sources' globs match now."""
    out: dict[str, dict] = {}
    for source in config.sources:
        try:
            paths = list_source_files(config.source_glob(source), source=source)
        except SourceError:  # no file yet for this source: nothing landed
            continue
        for path in paths:
            try:
                st = os.stat(path)
            except FileNotFoundError:  # removed between listing and stat
                continue
            out[path] = {"source": source, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return dict(sorted(out.items()))


def changed(previous: dict[str, dict], current: dict[str, dict]) -> list[str]:
    """Paths that are new in ``current`` or whose size or modification time changed."""
    return [p for p, st in current.items()
            if p not in previous or (previous[p]["size"], previous[p]["mtime_ns"]) != (st["size"], st["mtime_ns"])]


def file_months(config: SegpipeConfig, source: str, path: str) -> list[str]:
    """Partition keys (``YYYY-MM-01``) of the months the file holds: the ``YYYY-MM`` in its name,
    else the months of the event times it contains (text in the formats ingestion accepts;
    unparseable ones ignored)."""
    m = MONTH_IN_NAME.search(os.path.basename(path))
    if m:
        return [f"{m.group(1)}-{m.group(2)}-01"]
    cfg = config.sources[source]
    col = cfg.columns["event_time"]
    raw = read_source_file(path, fmt=cfg.format, columns=[col], source=source, separator=cfg.csv_separator)
    times = raw.frame[col]
    if times.dtype == pl.String:
        times = raw.frame.select(text_time(pl.col(col).str.strip_chars(), cfg.timezone)).to_series()
    if not isinstance(times.dtype, pl.Datetime | pl.Date):
        return []
    first = config.first_month_start.date()
    months = sorted({d for d in times.dt.truncate("1mo").cast(pl.Date).drop_nulls().to_list()
                     if first <= d <= dt.date.today()})
    return [d.isoformat() for d in months]
