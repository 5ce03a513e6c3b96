"""Read raw source files (CSV, Parquet, JSON Lines) into frames with their row numbers.

Structural problems (a CSV line with the wrong number of fields, a JSONL line that is not a JSON
object) never abort the read: the line becomes a quarantine row naming the file, the line and the
reason. Problems a user must fix (file missing or unreadable, a mapped column absent) raise
:class:`SourceError` naming the file and the column.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from segpipe.contract import QUARANTINE_SCHEMA

_EMAIL_RE = r"[^\s,;:\"'{}\[\]<>]+@[^\s,;:\"'{}\[\]<>]+"


class SourceError(ValueError):
    """A source file cannot be used as configured; the message names the file (and column)."""


@dataclass(frozen=True)
class RawFile:
    """One source file as read: mapped columns as strings (CSV/JSONL) or typed (Parquet)."""

    path: str
    frame: pl.DataFrame  # source columns + "source_row" (Int64)
    malformed: pl.DataFrame  # QUARANTINE_SCHEMA rows for lines that could not be parsed
    mtime: float  # file modification time (seconds since epoch) when read


def redact(expr: pl.Expr) -> pl.Expr:
    """Replace anything shaped like an email address with ``<email>``."""
    return expr.str.replace_all(_EMAIL_RE, "<email>")


def list_source_files(pattern: str, *, source: str) -> list[str]:
    """Files matching ``pattern`` (a path or glob), sorted; raise if there are none."""
    files = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
    if not files:
        raise SourceError(f"source '{source}': no file matches {pattern}")
    return files


def read_source_file(
    path: str, *, fmt: str, columns: list[str], source: str, separator: str = ","
) -> RawFile:
    """Read one file, keeping only ``columns`` (source names), with a 1-based ``source_row``.

    Parameters
    ----------
    path : str
        The file.
    fmt : {"csv", "parquet", "jsonl"}
        Its format.
    columns : list of str
        Source column names the mapping needs; a missing one raises :class:`SourceError`.
    source : str
        Source name, for messages and quarantine rows.
    separator : str
        CSV field separator.
    """
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise SourceError(f"source '{source}': cannot read {path}: {exc.strerror}") from None
    try:
        if fmt == "csv":
            frame, malformed = _read_csv(path, columns, source, separator)
        elif fmt == "jsonl":
            frame, malformed = _read_jsonl(path, columns, source)
        elif fmt == "parquet":
            frame, malformed = _read_parquet(path, columns, source)
        else:  # pragma: no cover - the config only allows the three
            raise SourceError(f"source '{source}': unknown format {fmt!r} for {path}")
    except OSError as exc:
        raise SourceError(f"source '{source}': cannot read {path}: {exc}") from None
    return RawFile(path=path, frame=frame, malformed=malformed, mtime=stat.st_mtime)


def _missing_columns(path: str, source: str, have: list[str], want: list[str]) -> None:
    missing = [c for c in want if c not in have]
    if missing:
        raise SourceError(
            f"source '{source}': {path} has no column {', '.join(repr(c) for c in missing)} "
            f"(mapped in the config); columns found: {have}"
        )


def _malformed(path: str, source: str, rows: list[tuple[int, str, str]]) -> pl.DataFrame:
    if not rows:
        return pl.DataFrame(schema=QUARANTINE_SCHEMA)
    line_nos, reasons, raws = zip(*rows)
    return pl.DataFrame(
        {
            "source": [source] * len(rows),
            "source_file": [path] * len(rows),
            "source_row": list(line_nos),
            "reason": list(reasons),
            "raw": list(raws),
        },
        schema=QUARANTINE_SCHEMA,
    ).with_columns(redact(pl.col("raw")))


def _decode(path: str, data: bytes, source: str) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"source '{source}': {path} is not UTF-8 (byte {exc.start}: {exc.reason}); re-encode it as UTF-8"
        ) from None


def _read_csv(path: str, columns: list[str], source: str, sep: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    text = _decode(path, Path(path).read_bytes(), source)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    if not lines:
        raise SourceError(f"source '{source}': {path} is empty (no header line)")
    header = next(csv.reader([lines[0]], delimiter=sep))
    _missing_columns(path, source, header, columns)
    if any(ln.count('"') % 2 for ln in lines):
        # A quoted field spans lines: only a full CSV parser can tell records apart.
        return _read_csv_slow(path, text, header, columns, source, sep)
    n = len(header)
    good: list[int] = []
    bad: list[tuple[int, str, str]] = []
    for i, ln in enumerate(lines[1:], start=2):
        if not ln.strip():
            if ln:  # whitespace-only line: not a record, but not silently ignored either
                bad.append((i, "blank line with whitespace", ln))
            continue
        nf = ln.count(sep) + 1 if '"' not in ln else len(next(csv.reader([ln], delimiter=sep)))
        if nf != n:
            bad.append((i, f"malformed CSV line: expected {n} fields, found {nf}", ln))
        else:
            good.append(i)
    body = "\n".join([lines[0], *(lines[i - 1] for i in good)]) + "\n"
    frame = pl.read_csv(
        io.StringIO(body), separator=sep, infer_schema=False, columns=columns, raise_if_empty=False
    )
    if frame.height != len(good):  # pragma: no cover - defensive: fall back to the exact parser
        return _read_csv_slow(path, text, header, columns, source, sep)
    frame = frame.with_columns(pl.Series("source_row", good, dtype=pl.Int64))
    return frame, _malformed(path, source, bad)


def _read_csv_slow(
    path: str, text: str, header: list[str], columns: list[str], source: str, sep: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    next(reader)
    idx = [header.index(c) for c in columns]
    n = len(header)
    data: list[list[str]] = [[] for _ in columns]
    rows: list[int] = []
    bad: list[tuple[int, str, str]] = []
    start = reader.line_num + 1
    for rec in reader:
        if not rec:
            start = reader.line_num + 1
            continue
        if len(rec) != n:
            bad.append((start, f"malformed CSV line: expected {n} fields, found {len(rec)}", sep.join(rec)))
        else:
            rows.append(start)
            for d, j in zip(data, idx):
                d.append(rec[j])
        start = reader.line_num + 1
    frame = pl.DataFrame({c: d for c, d in zip(columns, data)}, schema={c: pl.String for c in columns})
    frame = frame.with_columns(pl.Series("source_row", rows, dtype=pl.Int64))
    return frame, _malformed(path, source, bad)


def _read_jsonl(path: str, columns: list[str], source: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    text = _decode(path, Path(path).read_bytes(), source)
    lines = text.split("\n")
    nonblank = [i for i, ln in enumerate(lines, start=1) if ln.strip()]
    if nonblank:
        try:  # fast path: every line parses; the slow path below finds the ones that do not
            frame = pl.read_ndjson(io.StringIO(text), schema={c: pl.String for c in columns})
            names = pl.read_ndjson(io.StringIO(text), infer_schema_length=None).columns
        except Exception:  # noqa: BLE001 - any parse error sends us to the per-line path
            frame = None
        if frame is not None and frame.height == len(nonblank):
            _missing_columns(path, source, names, columns)
            frame = frame.with_columns(pl.Series("source_row", nonblank, dtype=pl.Int64))
            return frame, _malformed(path, source, [])
    good: list[int] = []
    bad: list[tuple[int, str, str]] = []
    seen_keys: set[str] = set()
    for i, ln in enumerate(lines, start=1):
        s = ln.strip()
        if not s:
            continue
        try:
            obj = json.loads(s)
        except ValueError as exc:
            bad.append((i, f"invalid JSON: {exc.msg} at column {exc.colno}", ln))
            continue
        if not isinstance(obj, dict):
            bad.append((i, f"JSON line is a {type(obj).__name__}, not an object", ln))
            continue
        seen_keys.update(obj)
        good.append(i)
    if good and not set(columns) <= seen_keys:
        _missing_columns(path, source, sorted(seen_keys), columns)
    body = "\n".join(lines[i - 1] for i in good)
    if good:
        frame = pl.read_ndjson(io.StringIO(body), schema={c: pl.String for c in columns})
    else:
        frame = pl.DataFrame(schema={c: pl.String for c in columns})
    frame = frame.with_columns(pl.Series("source_row", good, dtype=pl.Int64))
    return frame, _malformed(path, source, bad)


def _read_parquet(path: str, columns: list[str], source: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    try:
        schema = pl.read_parquet_schema(path)
    except Exception as exc:  # polars raises several error types for a corrupt file
        raise SourceError(f"source '{source}': {path} is not a readable Parquet file: {exc}") from None
    _missing_columns(path, source, list(schema), columns)
    frame = pl.read_parquet(path, columns=columns)
    frame = frame.with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("source_row"))
    return frame, pl.DataFrame(schema=QUARANTINE_SCHEMA)
