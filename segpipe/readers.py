"""Read raw source files (CSV, Parquet, JSON Lines) into frames with their row numbers.

Structural problems (a CSV line with the wrong number of fields, a JSONL line that is not a JSON
object) never abort the read: the line becomes a quarantine row naming the file, the line and the
reason. Problems a user must fix (file missing or unreadable, not UTF-8, a mapped column absent, a
zero-byte CSV) raise :class:`SourceError` naming the file (and the column, or the byte and line).
A file that changes while it is read raises :class:`SourceChangedError`. Transient I/O errors
(``EIO``, ``EAGAIN``, ``ESTALE``, ...) propagate as :class:`OSError` so the orchestrator can retry.

Any file may be gzip-compressed (``*.csv.gz``, ``*.jsonl.gz``, detected by its magic bytes, not its
name). See ``docs/reliability.md`` for every decision on hostile input.
"""

from __future__ import annotations

import csv
import errno
import glob
import gzip
import io
import json
import os
import re
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import polars as pl

from segpipe.contract import QUARANTINE_SCHEMA

# The local part stops at URL punctuation, so "/unsubscribe?email=ann@example.com" keeps its path.
_EMAIL_RE = r"[^\s,;:\"'{}\[\]<>?&=/]+@[^\s,;:\"'{}\[\]<>?&/]+"
_EMAIL_PY = re.compile(_EMAIL_RE)
_GZIP_MAGIC = b"\x1f\x8b"

# A single CSV field may be large (a 1 MB free-text detail is kept as is); the csv module's default
# limit of 128 KiB would otherwise turn such a line into a parser crash.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

#: errno values worth a retry: the same read may well succeed a moment later.
TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name) for name in (
        "EIO", "EAGAIN", "EWOULDBLOCK", "EINTR", "ETIMEDOUT", "ESTALE", "EBUSY", "ENFILE", "EMFILE",
        "ENOMEM", "ENETDOWN", "ENETUNREACH", "ENETRESET", "ECONNRESET", "ECONNABORTED", "EHOSTUNREACH",
        "EHOSTDOWN", "EREMOTEIO", "ENOLINK", "ECOMM",
    ) if hasattr(errno, name)
)


class SourceError(ValueError):
    """A source file cannot be used as configured; the message names the file (and column)."""


class SourceChangedError(SourceError):
    """A source file changed between listing and reading, or while being read: re-run later."""


def is_transient(exc: OSError) -> bool:
    """True for I/O errors a retry may cure (EIO, EAGAIN, ESTALE, ...), False for missing files,
    permissions and the like, which a user must fix."""
    return exc.errno in TRANSIENT_ERRNOS


def redact_text(text: str) -> str:
    """:func:`redact` for plain Python strings (error messages)."""
    return _EMAIL_PY.sub("<email>", text)


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


def _os_error(exc: OSError, path: str, source: str, doing: str = "read") -> Exception:
    """A transient error stays an :class:`OSError` (retried); anything else is a SourceError."""
    if is_transient(exc):
        return OSError(exc.errno, f"source '{source}': transient I/O error, cannot {doing} {path}: "
                                  f"{exc.strerror or exc} (a retry may succeed)")
    return SourceError(f"source '{source}': cannot {doing} {path}: {exc.strerror or exc}")


def stat_source_file(path: str, *, source: str) -> os.stat_result:
    """``os.stat`` of a listed file; a file gone since it was listed is a :class:`SourceChangedError`."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise SourceChangedError(
            f"source '{source}': {path} disappeared while the source was being read; re-run"
        ) from None
    except OSError as exc:
        raise _os_error(exc, path, source, "stat") from None


def _signature(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


def _check_unchanged(path: str, source: str, before: os.stat_result, after: os.stat_result, when: str) -> None:
    if _signature(before) != _signature(after):
        raise SourceChangedError(
            f"source '{source}': {path} changed {when} (size {before.st_size} -> {after.st_size} bytes, "
            f"mtime_ns {before.st_mtime_ns} -> {after.st_mtime_ns}); wait until it is complete, then re-run"
        )


#: How much of a source file is read at a time: CSV and JSON Lines in blocks of whole lines of
#: about this many bytes, Parquet in slices of ``CHUNK_BYTES // PARQUET_ROW_BYTES`` rows. Memory of
#: ingestion follows one block (plus the rows kept), not the size of the file.
CHUNK_BYTES = 8 * 2**20
PARQUET_ROW_BYTES = 200


def read_source_chunks(
    path: str, *, fmt: str, columns: list[str], source: str, separator: str = ",",
    listed: os.stat_result | None = None, chunk_bytes: int | None = None,
) -> Iterator[RawFile]:
    """Read one file piece by piece, keeping only ``columns`` (source names), with a 1-based
    ``source_row`` (the line number in CSV and JSON Lines, the row number in Parquet).

    Yields one :class:`RawFile` per block of about ``chunk_bytes`` (default :data:`CHUNK_BYTES`);
    a file always yields at least one, possibly empty. Rows and quarantined lines are exactly those
    of reading the whole file at once (:func:`read_source_file`): blocks end on line boundaries,
    and a CSV block never ends inside a quoted field.

    Parameters
    ----------
    path : str
        The file (plain or gzip-compressed, detected by its magic bytes).
    fmt : {"csv", "parquet", "jsonl"}
        Its format.
    columns : list of str
        Source column names the mapping needs; a missing one raises :class:`SourceError`.
    source : str
        Source name, for messages and quarantine rows.
    separator : str
        CSV field separator.
    listed : os.stat_result, optional
        The file's ``os.stat`` when its source was listed; a file that changed since then, or
        changes while being read (size, mtime, inode), raises :class:`SourceChangedError`.

    Raises
    ------
    SourceError
        The file cannot be used: gone, unreadable, not UTF-8, empty CSV, corrupt, a column missing.
        Raised when the problem is met, so blocks before it may have been yielded already.
    OSError
        A transient I/O error (see :data:`TRANSIENT_ERRNOS`): retrying may succeed.
    """
    if listed is None:
        try:
            before = os.stat(path)
        except OSError as exc:
            raise _os_error(exc, path, source) from None
    else:
        before = stat_source_file(path, source=source)
        _check_unchanged(path, source, listed, before, "since it was listed")
    size = chunk_bytes or CHUNK_BYTES
    if fmt == "csv":
        parts = _csv_chunks(path, columns, source, separator, size)
    elif fmt == "jsonl":
        parts = _jsonl_chunks(path, columns, source, size)
    elif fmt == "parquet":
        parts = _parquet_chunks(path, columns, source, max(1, size // PARQUET_ROW_BYTES))
    else:  # pragma: no cover - the config only allows the three
        raise SourceError(f"source '{source}': unknown format {fmt!r} for {path}")
    try:
        for frame, malformed in parts:
            yield RawFile(path=path, frame=frame, malformed=malformed, mtime=before.st_mtime)
    except OSError as exc:
        raise _os_error(exc, path, source) from None
    _check_unchanged(path, source, before, stat_source_file(path, source=source), "while being read")


def read_source_file(
    path: str, *, fmt: str, columns: list[str], source: str, separator: str = ",",
    listed: os.stat_result | None = None,
) -> RawFile:
    """The whole file at once: :func:`read_source_chunks` (same parameters and errors) concatenated."""
    chunks = list(read_source_chunks(path, fmt=fmt, columns=columns, source=source, separator=separator,
                                     listed=listed))
    return RawFile(
        path=path, mtime=chunks[0].mtime,
        frame=pl.concat([c.frame for c in chunks], how="vertical"),
        malformed=pl.concat([c.malformed for c in chunks], how="vertical"),
    )


def _missing_columns(path: str, source: str, have: list[str], want: list[str]) -> None:
    missing = [c for c in want if c not in have]
    if missing:
        # The "header" may really be a data row (a file without header): never echo an email.
        found = redact_text(repr(have[:50])) + (f" and {len(have) - 50} more" if len(have) > 50 else "")
        raise SourceError(
            f"source '{source}': {path} has no column {', '.join(repr(c) for c in missing)} "
            f"(mapped in the config); columns found: {found}"
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


def _open_raw(path: str):
    """The file opened for binary reading, through gzip when it starts with the gzip magic number."""
    fh = open(path, "rb")  # noqa: SIM115 - closed by the caller
    if fh.read(2) == _GZIP_MAGIC:
        fh.close()
        return gzip.open(path, "rb")
    fh.seek(0)
    return fh


def _text_blocks(path: str, source: str, size: int, *, csv_quotes: bool = False) -> Iterator[tuple[int, str]]:
    """``(first line number, text)`` of consecutive blocks of whole lines of about ``size`` bytes,
    decoded from UTF-8 (a leading byte order mark dropped; UTF-16 and bytes that are not UTF-8
    refused, naming the byte offset, line and column). With ``csv_quotes`` a block only ends where
    the double quotes seen so far are balanced, so a quoted field spanning lines stays in one block.
    A file without a byte yields nothing."""
    line, offset, pending, first = 1, 0, b"", True
    with _open_raw(path) as fh:
        while True:
            try:
                data = fh.read(max(size, len(pending)))  # a line longer than a block: read ever more
            except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
                raise SourceError(
                    f"source '{source}': {path} is a corrupt or truncated gzip file ({exc}); re-export it"
                ) from None
            eof = not data
            if first:
                first = False
                if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
                    raise SourceError(
                        f"source '{source}': {path} is UTF-16 (byte order mark at byte 0), not UTF-8; "
                        f"re-encode it as UTF-8 (e.g. iconv -f UTF-16 -t UTF-8)"
                    )
                if data.startswith(b"\xef\xbb\xbf"):
                    data, offset = data[3:], 3
            buf = pending + data
            if eof:
                if buf:
                    yield line, _decode_block(path, buf, source, offset, line)
                return
            cut = buf.rfind(b"\n") + 1
            if csv_quotes and cut:
                quotes = buf.count(b'"', 0, cut)
                while cut and quotes % 2:  # walk back line by line to a balanced end
                    prev = buf.rfind(b"\n", 0, cut - 1) + 1
                    quotes -= buf.count(b'"', prev, cut)
                    cut = prev
            if not cut:  # no complete line (or no balanced one) yet: read on
                pending = buf
                continue
            block, pending = buf[:cut], buf[cut:]
            yield line, _decode_block(path, block, source, offset, line)
            line += block.count(b"\n")
            offset += len(block)


def _decode_block(path: str, data: bytes, source: str, offset: int, line: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        at = data.count(b"\n", 0, exc.start) + line
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        bad = data[exc.start:exc.end].hex(" ")
        raise SourceError(
            f"source '{source}': {path} is not UTF-8 (byte offset {offset + exc.start}, line {at}, column {col}: "
            f"byte(s) {bad}, {exc.reason}); re-encode it as UTF-8 (for Windows-1252 / Latin-1 exports: "
            f"iconv -f CP1252 -t UTF-8)"
        ) from None


def _lines(text: str, *, strip_cr: bool = True) -> list[str]:
    """A block's lines, without the ``\\n`` line ends (and without a ``\\r`` before them)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines] if strip_cr else lines


def _csv_chunks(path: str, columns: list[str], source: str, sep: str, size: int) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    header: list[str] | None = None
    head = ""
    for line, text in _text_blocks(path, source, size, csv_quotes=True):
        lines = _lines(text)
        if header is None:
            if not lines or not lines[0].strip():
                raise SourceError(f"source '{source}': {path} line 1 (the header) is blank; expected column names")
            head = lines[0]
            header = next(csv.reader([head], delimiter=sep))
            _missing_columns(path, source, header, columns)
            lines, line = lines[1:], line + 1
        yield _csv_block(path, lines, line, head, header, columns, source, sep)
    if header is None:
        # A zero-byte CSV is most often a failed or truncated export: refuse rather than read it
        # as "no rows". A file with only the header line is a valid empty file.
        raise SourceError(
            f"source '{source}': {path} is empty (0 bytes, no header line): a failed export? "
            f"Write at least the header line for an empty file, or remove it"
        )


def _csv_block(path: str, lines: list[str], first: int, head: str, header: list[str], columns: list[str],
               source: str, sep: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows and malformed lines of the CSV ``lines`` (numbered from ``first``) under the header line
    ``head`` (parsed: ``header``)."""
    if any(ln.count('"') % 2 for ln in lines):
        # A quoted field spans lines: only a full CSV parser can tell records apart.
        return _csv_block_slow(path, "\n".join(lines) + "\n", first, header, columns, source, sep)
    n = len(header)
    good: list[int] = []
    bad: list[tuple[int, str, str]] = []
    for i, ln in enumerate(lines, start=first):
        if not ln.strip():
            if ln:  # whitespace-only line: not a record, but not silently ignored either
                bad.append((i, "blank line with whitespace", ln))
            continue
        nf = ln.count(sep) + 1 if '"' not in ln else len(next(csv.reader([ln], delimiter=sep)))
        if nf != n:
            bad.append((i, f"malformed CSV line: expected {n} fields, found {nf}", ln))
        else:
            good.append(i)
    body = "\n".join([head, *(lines[i - first] for i in good)]) + "\n"
    frame = pl.read_csv(
        io.StringIO(body), separator=sep, infer_schema=False, columns=columns, raise_if_empty=False
    ) if good else pl.DataFrame(schema={c: pl.String for c in columns})
    if frame.height != len(good):  # pragma: no cover - defensive: fall back to the exact parser
        return _csv_block_slow(path, "\n".join(lines) + "\n", first, header, columns, source, sep)
    frame = frame.select(columns).with_columns(pl.Series("source_row", good, dtype=pl.Int64))
    return frame, _malformed(path, source, bad)


def _csv_block_slow(
    path: str, text: str, first: int, header: list[str], columns: list[str], source: str, sep: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    idx = [header.index(c) for c in columns]
    n = len(header)
    data: list[list[str]] = [[] for _ in columns]
    rows: list[int] = []
    bad: list[tuple[int, str, str]] = []
    start = first
    for rec in reader:
        if not rec:
            start = first + reader.line_num
            continue
        if len(rec) != n:
            bad.append((start, f"malformed CSV line: expected {n} fields, found {len(rec)}", sep.join(rec)))
        else:
            rows.append(start)
            for d, j in zip(data, idx):
                d.append(rec[j])
        start = first + reader.line_num
    frame = pl.DataFrame({c: d for c, d in zip(columns, data)}, schema={c: pl.String for c in columns})
    frame = frame.with_columns(pl.Series("source_row", rows, dtype=pl.Int64))
    return frame, _malformed(path, source, bad)


def _jsonl_chunks(path: str, columns: list[str], source: str, size: int) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """JSON Lines blocks; a mapped key that no line of the file has raises (after the last block)."""
    seen: set[str] = set()  # mapped keys met so far
    found: set[str] = set()  # every key met on the per-line path, for the message
    any_good = False
    empty = True
    for line, text in _text_blocks(path, source, size):
        empty = False
        frame, malformed, keys = _jsonl_block(path, text, line, columns, source)
        any_good |= frame.height > 0
        if keys is not None:  # parsed line by line: the keys are known exactly
            found |= keys
            seen |= keys & set(columns)
        else:
            for c in set(columns) - seen:
                # a key with only null values still counts as present
                if frame[c].null_count() < frame.height or json.dumps(c) in text:
                    seen.add(c)
        yield frame, malformed
    if empty:
        yield pl.DataFrame(schema={**{c: pl.String for c in columns}, "source_row": pl.Int64}), _malformed(path, source, [])
    if any_good and not set(columns) <= seen:
        _missing_columns(path, source, sorted(found | _jsonl_keys(path, source)), columns)


def _jsonl_keys(path: str, source: str, limit: int = 1000) -> set[str]:
    """Keys of the first ``limit`` JSON objects of the file (for an error message)."""
    keys: set[str] = set()
    n = 0
    for _, text in _text_blocks(path, source, CHUNK_BYTES):
        for ln in text.split("\n"):
            try:
                obj = json.loads(ln)
            except ValueError:
                continue
            if isinstance(obj, dict):
                keys.update(obj)
                n += 1
                if n >= limit:
                    return keys
    return keys


def _jsonl_block(path: str, text: str, first: int, columns: list[str], source: str
                 ) -> tuple[pl.DataFrame, pl.DataFrame, set[str] | None]:
    """Rows and malformed lines of a block of JSON Lines (numbered from ``first``), and the keys
    seen when the lines were parsed one by one (None on the fast path)."""
    lines = _lines(text, strip_cr=False)  # a JSON line keeps its CR (JSON reads it as whitespace)
    nonblank = [i for i, ln in enumerate(lines, start=first) if ln.strip()]
    schema = {c: pl.String for c in columns}
    if not nonblank:
        return (pl.DataFrame(schema={**schema, "source_row": pl.Int64}), _malformed(path, source, []), set())
    try:  # fast path: every line parses; the slow path below finds the ones that do not
        frame = pl.read_ndjson(io.StringIO(text), schema=schema)
    except Exception:  # noqa: BLE001 - any parse error sends us to the per-line path
        frame = None
    if frame is not None and frame.height == len(nonblank):
        frame = frame.with_columns(pl.Series("source_row", nonblank, dtype=pl.Int64))
        return frame, _malformed(path, source, []), None
    good: list[int] = []
    bad: list[tuple[int, str, str]] = []
    seen_keys: set[str] = set()
    for i, ln in enumerate(lines, start=first):
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
    body = "\n".join(lines[i - first] for i in good)
    frame = pl.read_ndjson(io.StringIO(body), schema=schema) if good else pl.DataFrame(schema=schema)
    frame = frame.with_columns(pl.Series("source_row", good, dtype=pl.Int64))
    return frame, _malformed(path, source, bad), seen_keys


def _parquet_chunks(path: str, columns: list[str], source: str, rows: int) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """Parquet in slices of ``rows`` rows (a gzip-compressed Parquet file is decompressed in memory)."""
    with _open_raw(path) as fh:
        gzipped = isinstance(fh, gzip.GzipFile)
        if gzipped:
            try:
                target: str | io.BytesIO = io.BytesIO(fh.read())
            except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
                raise SourceError(
                    f"source '{source}': {path} is a corrupt or truncated gzip file ({exc}); re-export it"
                ) from None
        else:
            target = path

    def unreadable(exc: Exception) -> Exception:
        if isinstance(exc, OSError) and is_transient(exc):
            return exc
        return SourceError(f"source '{source}': {path} is not a readable Parquet file: {exc}")

    try:
        schema = pl.read_parquet_schema(target)
        if isinstance(target, io.BytesIO):
            target.seek(0)
        total = pl.scan_parquet(target).select(pl.len()).collect().item()
    except Exception as exc:  # polars raises several error types for a corrupt file
        raise unreadable(exc) from None
    _missing_columns(path, source, list(schema), columns)
    for c in columns:
        dtype = schema[c]
        if dtype.is_nested() or dtype == pl.Object:
            raise SourceError(
                f"source '{source}': {path} column {c!r} has type {dtype}; expected text, a number, "
                f"a date or a timestamp"
            )
    for start in range(0, max(total, 1), rows):
        if isinstance(target, io.BytesIO):
            target.seek(0)
        try:  # a corrupt row group surfaces only when the data is read
            frame = pl.scan_parquet(target).select(columns).slice(start, rows).collect()
        except Exception as exc:
            raise unreadable(exc) from None
        for c in columns:
            if frame.schema[c] == pl.Binary:
                try:
                    frame = frame.with_columns(pl.col(c).cast(pl.String))
                except Exception:  # noqa: BLE001 - polars' error type for invalid UTF-8 varies
                    raise SourceError(
                        f"source '{source}': {path} column {c!r} holds bytes that are not UTF-8 text"
                    ) from None
        frame = frame.with_columns(pl.int_range(start + 1, start + pl.len() + 1, dtype=pl.Int64).alias("source_row"))
        yield frame, pl.DataFrame(schema=QUARANTINE_SCHEMA)
