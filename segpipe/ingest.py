"""Ingestion: map a source's columns to the contract, validate, pseudonymize, quarantine, dedupe.

The unit of work is one source and a set of months. Every row read from the source's files is
given a *home month*: the month of its event time when that time is valid, else the dominant month
of its file (so a row whose time cannot be placed is quarantined exactly once, in the month the rest
of its file belongs to; the first month when the file has no valid row). A run for month M then
accounts for exactly the rows whose home is M:

    rows_read == rows_kept + rows_quarantined + duplicates_removed

Parsing rules for hostile input (documented with their tests in ``docs/reliability.md``):

* times: ISO 8601 with an offset (``Z``, ``+02:00``, ``+0200``) are taken as given; naive ones are in
  the source's time zone; a bare number with 10 digits is epoch seconds (fraction allowed), with 13
  digits epoch milliseconds, always UTC. In a source whose times are mostly date strings (counted
  over all its files, see :func:`time_votes`) a bare number is not taken for a time (more likely a
  shifted column) and is quarantined as unparseable.
* amounts: one leading or trailing currency symbol or ISO code is stripped (``$1,234.50``, ``€12``,
  ``12.50 EUR``); commas are thousands separators only in groups of three before an optional
  ``.`` decimal part; anything else with a comma or a space (``1,5``, ``1 234,50``) is ambiguous and
  quarantined; NaN and infinity are not numbers.
* identifiers are kept exactly (only surrounding whitespace is trimmed, no Unicode normalisation, so
  they join back to the user's systems byte for byte); emails and phones are NFC-normalised,
  trimmed and lower-cased before hashing; email-shaped text in ``detail`` and in quarantine
  reasons is redacted.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from segpipe.config import SegpipeConfig, SourceConfig
from segpipe.contract import (
    CONSTANT_EVENT_TYPE,

    INGESTED_SCHEMA,
    QUARANTINE_SCHEMA,
)
from segpipe.readers import RawFile, list_source_files, read_source_chunks, redact, stat_source_file
from segpipe.slices import write_slices
from segpipe.timeutil import month_start

#: Which identifier every row of a source must carry, in order of preference, when the
#: config does not say.
_KEY_PREFERENCE: dict[str, tuple[str, ...]] = {
    "orders": ("customer_id", "email", "user_id", "anonymous_id"),
    "product": ("user_id", "customer_id", "email", "anonymous_id"),
    "email": ("email", "customer_id", "user_id", "anonymous_id"),
    "web": ("anonymous_id", "customer_id", "user_id", "email"),
}
_TIME_FORMATS_AWARE = ("%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M%#z", "%Y-%m-%d %H:%M%#z")
_EPOCH_SECONDS = r"^[0-9]{10}(\.[0-9]+)?$"
_EPOCH_MILLIS = r"^[0-9]{13}(\.[0-9]+)?$"
_CURRENCY = (
    r"(?:[$€£¥₹₩₽₺₪₫₴₦₱]|US\$|A\$|C\$|USD|EUR|GBP|JPY|CHF|CAD|AUD|NZD|SEK|NOK|DKK|PLN|CZK|HUF|INR|CNY"
    r"|BRL|MXN|ZAR|SGD|HKD)"
)
_TIME_FORMATS_NAIVE = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d")
_CONTENT_COLUMNS = [c for c in INGESTED_SCHEMA if c not in ("source_file", "source_row")]


@dataclass(frozen=True)
class MonthIngest:
    """What ingestion produced for one source and month."""

    month: str  # "YYYY-MM-01" partition key
    events: pl.DataFrame | pl.LazyFrame  # INGESTED_SCHEMA, sorted; lazy (a Parquet file) with ``out_dir``
    quarantine: pl.DataFrame  # QUARANTINE_SCHEMA, sorted
    rows_read: int
    duplicates: int
    rows_kept: int  # rows of ``events``
    files: list[str] = field(default_factory=list)  # every file of the source
    files_read: int = 0  # of those, the files read (the others hold no row of the months asked for)

    @property
    def rows_quarantined(self) -> int:
        return self.quarantine.height

    @property
    def balanced(self) -> bool:
        return self.rows_read == self.rows_kept + self.rows_quarantined + self.duplicates

    def stats(self) -> dict[str, int]:
        return {
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "rows_quarantined": self.rows_quarantined,
            "duplicates_removed": self.duplicates,
        }


def key_column(source: str, cfg: SourceConfig) -> str:
    """The identifier column every row of this source must have."""
    return next(c for c in _KEY_PREFERENCE[source] if c in cfg.columns)


def pseudonymize(values: pl.Series, key: bytes) -> pl.Series:
    """Keyed hash (HMAC-SHA256, first 32 hex chars) of normalised (trimmed, lower-case) values.

    Null and empty values stay null. Each distinct value is hashed once.
    """
    norm = values.cast(pl.String).str.normalize("NFC").str.strip_chars().str.to_lowercase()
    uniq = norm.drop_nulls().unique()
    uniq = uniq.filter(uniq.str.len_chars() > 0)
    mapping = pl.DataFrame(
        {
            "v": uniq,
            "h": [hmac.new(key, v.encode("utf-8"), hashlib.sha256).hexdigest()[:32] for v in uniq.to_list()],
        },
        schema={"v": pl.String, "h": pl.String},
    )
    out = pl.DataFrame({"v": norm}).join(mapping, on="v", how="left", maintain_order="left")
    return out["h"].alias(values.name)


def _stable_row_hash(frame: pl.DataFrame, columns: list[str]) -> pl.Series:
    joined = frame.select(
        pl.concat_str([pl.col(c).cast(pl.String).fill_null("\x00") for c in columns], separator="\x1f")
    ).to_series()
    return pl.Series(
        "event_id", ["h" + hashlib.blake2b(s.encode(), digest_size=10).hexdigest() for s in joined.to_list()]
    )


def _epoch_time(s: pl.Expr) -> pl.Expr:
    """10-digit epoch seconds or 13-digit epoch milliseconds (optional fraction) as UTC, else null."""
    whole = s.str.extract(r"^([0-9]+)", 1).str.to_integer(strict=False)
    frac = s.str.extract(r"\.([0-9]+)$", 1).fill_null("")
    micros = (
        pl.when(s.str.contains(_EPOCH_SECONDS))
        .then(whole * 1_000_000 + frac.str.slice(0, 6).str.pad_end(6, "0").str.to_integer(strict=False))
        .when(s.str.contains(_EPOCH_MILLIS))
        .then(whole * 1_000 + frac.str.slice(0, 3).str.pad_end(3, "0").str.to_integer(strict=False))
    )
    return micros.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


def _is_epoch_shaped(s: pl.Expr) -> pl.Expr:
    return s.str.contains(_EPOCH_SECONDS) | s.str.contains(_EPOCH_MILLIS)


def _is_date_shaped(s: pl.Expr) -> pl.Expr:
    return s.str.contains(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}")


def text_time(s: pl.Expr, tz: str) -> pl.Expr:
    """Parse time text in any accepted format (explicit offsets win; naive times are in ``tz``) to UTC."""
    aware = [s.str.to_datetime(f, strict=False, time_unit="us", time_zone="UTC") for f in _TIME_FORMATS_AWARE]
    naive = [
        s.str.to_datetime(f, strict=False, time_unit="us")
        .dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null")
        .dt.convert_time_zone("UTC")
        for f in _TIME_FORMATS_NAIVE
    ]
    return pl.coalesce(*aware, *naive)


def time_votes(raw: RawFile, column: str) -> tuple[int, int]:
    """How many of a file's times are bare numbers and how many are date strings (YYYY-MM-DD...).

    Summed over all files of a source, the votes decide whether the source's bare numbers are
    epoch times (numbers >= dates) or misplaced values (quarantined): a per-source decision, so
    neither the order of the rows nor how they are split into files changes the outcome.
    """
    dtype = raw.frame.schema[column]
    if isinstance(dtype, (pl.Datetime, pl.Date)):
        return 0, raw.frame.height - raw.frame[column].null_count()
    s = pl.col(column).cast(pl.String).str.strip_chars()
    numbers, dates = raw.frame.select(
        _is_epoch_shaped(s).sum().alias("numbers"), _is_date_shaped(s).sum().alias("dates")
    ).row(0)
    return int(numbers), int(dates)


def _parse_time(col: pl.Expr, dtype: pl.DataType, tz: str, epoch_numbers: bool | None = None) -> pl.Expr:
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            return col.dt.cast_time_unit("us").dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null").dt.convert_time_zone("UTC")
        return col.dt.cast_time_unit("us").dt.convert_time_zone("UTC")
    if isinstance(dtype, pl.Date):
        return col.cast(pl.Datetime("us")).dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null").dt.convert_time_zone("UTC")
    s = col.cast(pl.String).str.strip_chars()
    epoch = _epoch_time(s)
    numbers_win = pl.lit(True if epoch_numbers is None else epoch_numbers)
    if dtype.is_numeric():
        return pl.when(numbers_win).then(epoch)
    text = text_time(s, tz)
    if epoch_numbers is None:  # decide from this file alone
        numbers_win = _is_epoch_shaped(s).sum() >= _is_date_shaped(s).sum()
    # A bare number is an epoch time unless most of the source's times are date strings.
    return pl.when(text.is_not_null()).then(text).when(numbers_win).then(epoch)


def _parse_number(text: pl.Expr, *, currency: bool) -> pl.Expr:
    """Float64 of a trimmed number text (null when not a finite number), see the module docstring."""
    t = text
    if currency:
        lead = rf"^([-+]?)\s*{_CURRENCY}\s*([-+]?[0-9.][0-9.,]*)$"
        trail = rf"^([-+]?[0-9.][0-9.,]*)\s*{_CURRENCY}$"
        t = (
            pl.when(t.str.contains(lead)).then(t.str.replace(lead, "${1}${2}"))
            .when(t.str.contains(trail)).then(t.str.replace(trail, "${1}"))
            .otherwise(t)
        )
    thousands = t.str.contains(r"^[-+]?[0-9]{1,3}(,[0-9]{3})+(\.[0-9]+)?$")
    num = pl.when(thousands).then(t.str.replace_all(",", "")).otherwise(t).cast(pl.Float64, strict=False)
    return pl.when(num.is_finite()).then(num)


def raw_values(cfg: SourceConfig) -> pl.Expr:
    """A row's source values (the mapped columns) as JSON, email-shaped text redacted: the ``raw``
    column of quarantine rows."""
    src_cols = list(dict.fromkeys(cfg.columns.values()))
    return redact(pl.struct([pl.col(c).cast(pl.String) for c in src_cols]).struct.json_encode())


def normalize_file(
    raw: RawFile, *, source: str, cfg: SourceConfig, event_types: dict[str, str],
    first_month: dt.datetime, key: bytes, epoch_numbers: bool | None = None,
) -> pl.DataFrame:
    """Map one file's rows to the ingested schema plus ``reason`` (null when valid) and ``raw``.

    ``epoch_numbers`` says whether bare numbers in the time column are epoch times (see
    :func:`time_votes`); None decides from this file alone.

    ``raw`` holds the source values as JSON (email-shaped text redacted), for quarantine rows.
    """
    m = cfg.columns
    f = raw.frame.with_columns(raw_values(cfg).alias("__raw"))

    def text(canon: str) -> pl.Expr:
        if canon not in m:
            return pl.lit(None, dtype=pl.String)
        e = pl.col(m[canon]).cast(pl.String).str.strip_chars()
        return pl.when(e.str.len_chars() > 0).then(e).otherwise(None)

    time_dtype = f.schema[m["event_time"]]
    raw_time = pl.col(m["event_time"])
    out = f.select(
        text("event_id").alias("event_id"),
        text("customer_id").alias("customer_ref"),
        text("email").alias("__email"),
        text("phone").alias("__phone"),
        text("user_id").alias("user_id"),
        text("anonymous_id").alias("anonymous_id"),
        _parse_time(raw_time, time_dtype, cfg.timezone, epoch_numbers).alias("event_time"),
        raw_time.cast(pl.String).alias("__raw_time"),
        (text("event_type") if "event_type" in m else pl.lit(CONSTANT_EVENT_TYPE.get(source))).alias("__raw_type"),
        text("amount").alias("__amount"),
        text("quantity").alias("__quantity"),
        text("category").str.to_lowercase().alias("category"),
        text("channel").str.to_lowercase().alias("channel"),
        redact(text("detail")).alias("detail"),
        pl.col("source_row"),
        pl.col("__raw"),
    )
    # "$1,234.50" is 1234.5; "1,5" or "1 234,50" are ambiguous and quarantined as not a number.
    amount_num = _parse_number(pl.col("__amount"), currency=True)
    qty_num = _parse_number(pl.col("__quantity"), currency=False)
    qty_int = pl.when((qty_num == qty_num.round(0)) & (qty_num.abs() < 9.2e18)).then(qty_num).cast(pl.Int64, strict=False)
    type_map = pl.DataFrame({"__raw_type": list(event_types), "event_type": list(event_types.values())})
    out = out.with_columns(
        amount=amount_num,
        quantity=qty_int,
        email_hash=pseudonymize(out["__email"], key),
        phone_hash=pseudonymize(out["__phone"], key),
        source=pl.lit(source),
        source_file=pl.lit(raw.path),
    ).join(type_map, on="__raw_type", how="left", maintain_order="left")

    kcol = {"customer_id": "customer_ref", "email": "__email", "phone": "__phone"}.get(
        key_column(source, cfg), key_column(source, cfg)
    )
    future_after = dt.datetime.fromtimestamp(raw.mtime, tz=dt.timezone.utc)
    is_orders = source == "orders"
    reason = (
        pl.when(pl.col(kcol).is_null())
        .then(pl.lit(f"missing {key_column(source, cfg)} (column {m[key_column(source, cfg)]!r})"))
        .when(pl.col("__raw_time").is_null() | (pl.col("__raw_time").str.strip_chars() == ""))
        .then(pl.lit(f"missing event_time (column {m['event_time']!r})"))
        .when(pl.col("event_time").is_null())
        .then(pl.format("unparseable event_time {} (column {})", pl.col("__raw_time"), pl.lit(repr(m["event_time"]))))
        .when(pl.col("event_time") < first_month)
        .then(pl.lit(f"event_time before the first month {first_month:%Y-%m}"))
        .when(pl.col("event_time") > future_after)
        .then(pl.lit(f"event_time in the future (after the file was written, {future_after:%Y-%m-%d %H:%M} UTC)"))
        .when(pl.col("__raw_type").is_null())
        .then(pl.lit("missing event_type"))
        .when(pl.col("event_type").is_null())
        .then(pl.format("unknown event_type {}", pl.col("__raw_type")))
        .when(pl.col("__amount").is_not_null() & pl.col("amount").is_null())
        .then(pl.format("amount is not a number: {}", pl.col("__amount")))
        .when(pl.col("amount") < 0)
        .then(pl.lit("negative amount"))
        .when(pl.lit(is_orders) & pl.col("amount").is_null() & (pl.col("event_type") == "order"))
        .then(pl.lit("missing amount on an order"))
        .when(pl.col("__quantity").is_not_null() & pl.col("quantity").is_null())
        .then(pl.format("quantity is not an integer: {}", pl.col("__quantity")))
        .when(pl.col("quantity") < 0)
        .then(pl.lit("negative quantity"))
        .otherwise(None)
    )
    placeable = (
        pl.col("event_time").is_not_null()
        & (pl.col("event_time") >= first_month)
        & (pl.col("event_time") <= future_after)
    )
    out = out.with_columns(reason=redact(reason), placeable=placeable)
    if "event_id" not in m:
        out = out.with_columns(event_id=_stable_row_hash(out, ["__raw"]))
    return out.select(*INGESTED_SCHEMA, "reason", "placeable", pl.col("__raw").alias("raw")).cast(
        {k: v for k, v in INGESTED_SCHEMA.items()}
    )


def ingest_source(
    config: SegpipeConfig, source: str, months: list[str], *, key: bytes, out_dir: Path | None = None,
) -> dict[str, MonthIngest]:
    """Ingest ``source`` for the given partition keys ("YYYY-MM-01"); one pass over its files
    (a second one over the files holding bare numbers when most of the source's times are dates).

    Files are read in blocks and the rows of the months asked for go to Parquet files in a
    temporary folder, so reading takes the memory of one block. Each month's events are then
    deduplicated and sorted: into a DataFrame, or with ``out_dir`` into Parquet parts in
    ``{out_dir}/{month}/`` (``events`` is then a LazyFrame over them), sorted a range of event times
    at a time (``scale.slice_rows`` rows each), so that memory follows one slice, not the month.

    Raises
    ------
    SourceError
        When no file matches, a file cannot be read or lacks a mapped column.
    SourceChangedError
        When a file changed since it was listed or while it was read (worth a retry).
    OSError
        On a transient I/O error (worth a retry).
    """
    cfg = config.sources[source]
    files = list_source_files(config.source_glob(source), source=source)
    # Size, mtime and inode as listed: a file that changes before or while it is read is refused.
    listed = {path: stat_source_file(path, source=source) for path in files}
    first = config.first_month_start
    wanted = sorted({month_start(m).date() for m in months})
    types = config.event_type_map(source)
    time_col = cfg.columns["event_time"]

    def chunks(path: str) -> Iterator[RawFile]:
        return read_source_chunks(
            path, fmt=cfg.format, columns=list(dict.fromkeys(cfg.columns.values())),
            source=source, separator=cfg.csv_separator, listed=listed[path],
        )

    def read(path: str, epoch_numbers: bool, spill: Path) -> tuple[pl.DataFrame | None, list[str], tuple[int, int]]:
        """One file, block by block. Its rows of the wanted months (with their ``home``) go to
        Parquet files in ``spill``, without the source values (``raw``) of the valid ones; returned
        are its unparseable lines if they belong to a wanted month, every month its rows and lines
        belong to (for the file index) and its time votes. Memory follows one block, not the file
        nor the months asked for."""
        shutil.rmtree(spill, ignore_errors=True)  # a second reading replaces the first
        spill.mkdir(parents=True)
        unplaced, malformed = [], []
        counts: dict[dt.date, int] = {}
        numbers = dates = 0
        for b, raw in enumerate(chunks(path)):
            n, d = time_votes(raw, time_col)
            numbers, dates = numbers + n, dates + d
            norm = normalize_file(raw, source=source, cfg=cfg, event_types=types, first_month=first, key=key,
                                  epoch_numbers=epoch_numbers)
            norm = norm.with_columns(
                home=pl.when(pl.col("placeable")).then(pl.col("event_time").dt.truncate("1mo").dt.date()),
                raw=pl.when(pl.col("reason").is_not_null()).then(pl.col("raw")),
            )
            for month, n in norm.group_by("home").len().drop_nulls("home").iter_rows():
                counts[month] = counts.get(month, 0) + n
            kept = norm.filter(pl.col("home").is_in(wanted))
            if kept.height:
                kept.write_parquet(spill / f"{b:06d}.parquet", compression="lz4")
            lost = norm.filter(pl.col("home").is_null())
            if lost.height:  # to disk too: a filtered frame holds on to the whole block's buffers
                lost.write_parquet(spill / f"unplaced-{b:06d}.parquet")
                unplaced.append(spill / f"unplaced-{b:06d}.parquet")
            if raw.malformed.height:
                malformed.append(raw.malformed)
        # A row whose time cannot be placed, and a line that could not even be parsed, belong to
        # the file's dominant month (the earliest of equals; the first month without any).
        home = min(counts, key=lambda m: (-counts[m], m)) if counts else first.date()
        if unplaced and home in wanted:
            pl.read_parquet(unplaced).with_columns(home=pl.lit(home, dtype=pl.Date)).write_parquet(
                spill / "rest.parquet", compression="lz4")
        for f in unplaced:
            f.unlink()
        months = set(counts) | ({home} if unplaced or malformed else set())
        lines = (pl.concat(malformed).with_columns(home=pl.lit(home, dtype=pl.Date))
                 if malformed and home in wanted else None)
        return lines, sorted(m.isoformat() for m in months), (numbers, dates)

    def raw_of(rows: pl.DataFrame) -> pl.DataFrame:
        """``source_file, source_row, raw`` of the given rows, read again from their files: valid
        rows do not keep their source values, and only a conflict (below, rare) needs them."""
        found = []
        for (path,), part in rows.group_by("source_file", maintain_order=True):
            want = part["source_row"].implode()
            for raw in chunks(path):
                hit = raw.frame.filter(pl.col("source_row").is_in(want))
                if hit.height:
                    found.append(hit.select(pl.lit(path).alias("source_file"), "source_row",
                                            raw_values(cfg).alias("raw")))
        return (pl.concat(found) if found
                else pl.DataFrame(schema={"source_file": pl.String, "source_row": pl.Int64, "raw": pl.String}))

    empty = pl.DataFrame(schema={**INGESTED_SCHEMA, "reason": pl.String, "placeable": pl.Boolean, "raw": pl.String,
                                 "home": pl.Date})
    index = FileIndex.load(config, source)
    wanted_keys = {m.isoformat() for m in wanted}
    with tempfile.TemporaryDirectory(prefix=f"segpipe-ingest-{source}-") as tmp:
        spills = [Path(tmp) / f"{i:06d}" for i in range(len(files))]
        malformed_per_file: list[pl.DataFrame | None] = []
        votes: list[tuple[int, int]] = []
        read_files: set[str] = set()
        for path, spill in zip(files, spills):  # bare numbers are provisionally epoch times
            known = index.get(path, listed[path])
            if known is not None and not wanted_keys & set(known["months"]):
                # read before, unchanged since, and none of its rows belongs to the months asked for
                votes.append(tuple(known["votes"]))
                malformed_per_file.append(None)
                continue
            lines, months, file_votes = read(path, True, spill)
            read_files.add(path)
            votes.append(file_votes)
            index.put(path, listed[path], months=months, votes=file_votes)
            malformed_per_file.append(lines)
        if sum(v[0] for v in votes) < sum(v[1] for v in votes):
            # Most of the source's times are date strings: its bare numbers are not times after all.
            # Rare (a mixed source), so only then are the files holding numbers read a second time
            # (skipped ones too: the index knows their months with bare numbers read as times).
            for i, path in enumerate(files):
                if votes[i][0]:
                    read_files.add(path)
                    malformed_per_file[i], _, _ = read(path, False, spills[i])
        index.save(keep=files)
        malformed = [m for m in malformed_per_file if m is not None]
        bad_lines = (
            pl.concat(malformed) if malformed
            else pl.DataFrame(schema={**QUARANTINE_SCHEMA, "home": pl.Date})
        )
        parts = sorted(str(f) for f in Path(tmp).glob("*/*.parquet"))
        allrows = pl.scan_parquet(parts) if parts else empty.lazy()
        return {m.strftime("%Y-%m-%d"): _month_result(
            m, allrows.filter(pl.col("home") == m), bad_lines.filter(pl.col("home") == m).drop("home"),
            raw_of=raw_of, files=files, files_read=len(read_files), out_dir=out_dir,
            slice_rows=config.scale.slice_rows) for m in wanted}


#: Sort order of a source's ingested events.
INGESTED_ORDER = ("event_time", "event_id")


def _month_result(month: dt.date, rows: pl.LazyFrame, lines: pl.DataFrame, *, raw_of, files: list[str],
                  files_read: int, out_dir: Path | None, slice_rows: int) -> MonthIngest:
    """One month's events and quarantine from its rows (lazy, spilled to disk) and unparseable lines."""
    valid = rows.filter(pl.col("reason").is_null())
    invalid = rows.filter(pl.col("reason").is_not_null()).collect()
    # Only rows whose event_id repeats can be duplicates or conflicts: found by hashing that one
    # column, so the content of all columns is compared for those few rows alone.
    # First among 64-bit hashes of the ids (a month of ids as strings would be the step's largest
    # table), then exactly among the few ids whose hash repeats.
    h = pl.col("event_id").hash(seed=3)
    twice = valid.select(h.alias("h")).filter(pl.col("h").is_duplicated()).unique().collect()["h"]
    repeated = (valid.select("event_id").filter(h.is_in(twice.implode()))
                .filter(pl.col("event_id").is_duplicated()).unique().collect())
    parts, conflicts, dups = [valid], invalid.clear(), 0
    if repeated.height:
        # Exact duplicates: identical content (wherever it was read from); keep the first read.
        rep = valid.join(repeated.lazy(), on="event_id", how="semi").collect().sort("source_file", "source_row")
        kept = rep.unique(subset=_CONTENT_COLUMNS, keep="first", maintain_order=True)
        dups = rep.height - kept.height
        # The same event_id with different content is a conflict, not a duplicate: keep the first.
        conflict = kept.select(pl.int_range(pl.len()).over("event_id") > 0).to_series()
        conflicts = kept.filter(conflict).with_columns(
            reason=pl.format("event_id {} repeats with different content", pl.col("event_id"))
        )
        if conflicts.height:
            conflicts = conflicts.drop("raw").join(raw_of(conflicts.select("source_file", "source_row")),
                                                   on=["source_file", "source_row"], how="left", maintain_order="left"
                                                   ).select(conflicts.columns)
        parts = [valid.join(repeated.lazy(), on="event_id", how="anti"), kept.filter(~conflict).lazy()]
    events = pl.concat([p.select(list(INGESTED_SCHEMA)) for p in parts])
    if out_dir is None:
        events = events.collect().sort(*INGESTED_ORDER)
        kept = events.height
    else:
        kept = events.select(pl.len()).collect().item()
        events = pl.scan_parquet(write_slices(events, Path(out_dir) / f"{month:%Y-%m-%d}", key="event_time", rows=kept,
                                              slice_rows=slice_rows, arrange=lambda lf: lf.sort(*INGESTED_ORDER)))
    quarantine = pl.concat(
        [
            lines,
            pl.concat([invalid, conflicts]).select(
                pl.col("source").cast(QUARANTINE_SCHEMA["source"]), "source_file", "source_row", "reason", "raw"
            ),
        ]
    ).sort("source_file", "source_row")
    key_str = month.strftime("%Y-%m-%d")
    return MonthIngest(
        month=key_str,
        events=events,
        quarantine=quarantine,
        rows_read=rows.select(pl.len()).collect().item() + lines.height,  # counted, not derived
        duplicates=dups,
        rows_kept=kept,
        files=files,
        files_read=files_read,
    )


class FileIndex:
    """Which months each file of a source holds rows for, so that a refresh of one month reads only
    the files holding rows of that month (and the new or changed ones), not the source's whole history.

    Kept in the lake at ``_ingest_index/{source}.json``: per file path its size, mtime and inode as
    listed, the months of its rows (their home months, with bare numbers read as epoch times) and its
    time votes (:func:`time_votes`). An entry counts only while the file's size, mtime and inode are the
    same and the source's settings (column mapping, format, event types, first month) have not
    changed; otherwise the file is read again. Losing the file only costs a full read."""

    VERSION = 1

    def __init__(self, location, fingerprint: str, entries: dict):
        self.location, self.fingerprint, self.entries, self.changed = location, fingerprint, entries, False

    @classmethod
    def load(cls, config: SegpipeConfig, source: str) -> FileIndex:
        from segpipe.lake import exists, lake_join, read_bytes

        settings = {"source": config.sources[source].model_dump(mode="json"), "first_month": config.first_month,
                    "event_types": config.event_type_map(source), "version": cls.VERSION}
        fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
        location = lake_join(config.lake_path, "_ingest_index", f"{source}.json")
        entries = {}
        try:
            if exists(location):
                data = json.loads(read_bytes(location))
                if data.get("fingerprint") == fingerprint:
                    entries = data.get("files", {})
        except (OSError, ValueError):
            entries = {}  # unreadable: every file is read again, and the index rewritten
        return cls(location, fingerprint, entries)

    @staticmethod
    def _signature(st: os.stat_result) -> list[int]:
        return [st.st_size, st.st_mtime_ns, st.st_ino]

    def get(self, path: str, st: os.stat_result) -> dict | None:
        entry = self.entries.get(path)
        return entry if entry is not None and entry.get("stat") == self._signature(st) else None

    def put(self, path: str, st: os.stat_result, *, months: list[str], votes: tuple[int, int]) -> None:
        entry = {"stat": self._signature(st), "months": months, "votes": list(votes)}
        if self.entries.get(path) != entry:
            self.entries[path], self.changed = entry, True

    def save(self, keep: list[str]) -> None:
        """Write the index if it changed, with the entries of the files in ``keep`` (the listing)."""
        gone = set(self.entries) - set(keep)
        for path in gone:
            del self.entries[path]
        if not (self.changed or gone):
            return
        from segpipe.lake import write_atomic

        body = json.dumps({"fingerprint": self.fingerprint, "files": dict(sorted(self.entries.items()))},
                          indent=1).encode()
        try:
            write_atomic(self.location, lambda fh: fh.write(body))
        except OSError:
            pass  # a cache: the next run reads the files again
        self.changed = False
