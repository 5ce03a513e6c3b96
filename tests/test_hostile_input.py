"""Hostile source files, each written for real to a temporary folder and ingested.

Every case states what segpipe promises (see docs/reliability.md): a row is kept, quarantined with a
reason, or the whole file is refused with a message naming the file (and column, byte or line).
"""

import errno
import gzip
import json
import os
import unicodedata
from pathlib import Path

import polars as pl
import pytest

from segpipe import readers
from segpipe.config import load_config
from segpipe.ingest import ingest_source, pseudonymize
from segpipe.readers import SourceChangedError, SourceError, read_source_file

from .conftest import ORDERS_HEADER, orders_source, write_project, write_text

KEY = b"k"
MONTHS = ["2025-01-01", "2025-02-01"]


@pytest.fixture(autouse=True, params=["whole", "blocks"])
def block_size(request, monkeypatch):
    """Every case runs twice: with files read in one block, and in blocks of a few bytes (a few
    lines, or one Parquet row), so that no promise depends on where a block ends."""
    if request.param == "blocks":
        monkeypatch.setattr(readers, "CHUNK_BYTES", 7)
        monkeypatch.setattr(readers, "PARQUET_ROW_BYTES", 7)
    return request.param


def _orders(tmp_path: Path, body: str | bytes, *, name: str = "orders.csv", **src) -> Path:
    """Write an orders file (header added to text bodies) and its project; return the config path."""
    path = tmp_path / "src" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(body, str):
        path.write_text(ORDERS_HEADER + body, encoding="utf-8")
    else:
        path.write_bytes(body)
    return write_project(tmp_path, {"orders": {**orders_source(f"src/{name}"), **src}})


def _ingest(config_path: Path, source: str = "orders", months=MONTHS):
    return ingest_source(load_config(config_path), source, list(months), key=KEY)


def _reasons(res) -> dict[int, str]:
    return {r["source_row"]: r["reason"] for r in res.quarantine.iter_rows(named=True)}


def _jsonl_project(tmp_path: Path, lines: list, name: str = "events.jsonl", gz: bool = False) -> Path:
    text = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n"
    path = tmp_path / "src" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    src = {"path": f"src/{name}", "format": "jsonl",
           "columns": {"event_id": "id", "user_id": "uid", "event_time": "ts", "event_type": "name"}}
    return write_project(tmp_path, {"product": src})


# -- encodings ------------------------------------------------------------------------------------
def test_cp1252_file_is_refused_naming_file_byte_and_line(tmp_path):
    body = (ORDERS_HEADER + "1,C1,2025-01-05,5,a@example.com,toys\n2,Jos\u00e9,2025-01-06,5,b@example.com,caf\u00e9\n")
    cfg = _orders(tmp_path, body.encode("cp1252"))
    offset = body.encode("cp1252").index(b"\xe9")
    with pytest.raises(SourceError) as err:
        _ingest(cfg)
    msg = str(err.value)
    assert "orders.csv is not UTF-8" in msg
    assert f"byte offset {offset}, line 3, column 6: byte(s) e9" in msg
    assert "iconv -f CP1252 -t UTF-8" in msg


def test_latin1_jsonl_is_refused_naming_the_line(tmp_path):
    cfg = _jsonl_project(tmp_path, [{"id": "e1", "uid": "u1", "ts": "2025-01-02T10:00:00Z", "name": "login"}])
    path = tmp_path / "src" / "events.jsonl"
    path.write_bytes(path.read_bytes() + '{"id": "e2", "uid": "M\u00fcller"}\n'.encode("latin-1"))
    with pytest.raises(SourceError, match=r"events.jsonl is not UTF-8 \(byte offset \d+, line 2, column 23"):
        _ingest(cfg, source="product")


def test_utf16_file_is_refused_clearly(tmp_path):
    cfg = _orders(tmp_path, (ORDERS_HEADER + "1,C1,2025-01-05,5,a@example.com,toys\n").encode("utf-16"))
    with pytest.raises(SourceError, match=r"orders.csv is UTF-16 .*re-encode it as UTF-8"):
        _ingest(cfg)


def test_utf8_bom_is_stripped(tmp_path):
    cfg = _orders(tmp_path, b"\xef\xbb\xbf" + (ORDERS_HEADER + "1,C1,2025-01-05,5,a@example.com,toys\n").encode())
    res = _ingest(cfg)["2025-01-01"]
    assert res.events["event_id"].to_list() == ["1"] and res.rows_quarantined == 0


# -- time stamps ----------------------------------------------------------------------------------
def test_mixed_offsets_and_naive_times_in_one_column(tmp_path):
    rows = {
        "1": ("2025-01-10T10:00:00Z", "2025-01-10 10:00:00"),
        "2": ("2025-01-10T10:00:00+02:00", "2025-01-10 08:00:00"),
        "3": ("2025-01-10T10:00:00+0200", "2025-01-10 08:00:00"),
        "4": ("2025-01-10 10:00:00.250-05:30", "2025-01-10 15:30:00.250000"),
        "5": ("2025-01-10 10:00:00", "2025-01-10 09:00:00"),  # naive: Europe/Berlin (UTC+1 in winter)
        "6": ("2025-01-10T10:00", "2025-01-10 09:00:00"),
        "7": ("2025-01-10", "2025-01-09 23:00:00"),
        "8": ("2025-01-10T10:00Z", "2025-01-10 10:00:00"),
        "9": ("2025-07-10 10:00:00", None),  # summer time, UTC+2 (outside the months ingested)
    }
    body = "".join(f"{i},C{i},{t},5,a@example.com,toys\n" for i, (t, _) in rows.items())
    res = _ingest(_orders(tmp_path, body, timezone="Europe/Berlin"), months=["2025-01-01", "2025-07-01"])
    got = {r["event_id"]: str(r["event_time"]) for r in res["2025-01-01"].events.iter_rows(named=True)}
    assert got == {i: f"{want}+00:00" for i, (_, want) in rows.items() if want}
    assert [str(t) for t in res["2025-07-01"].events["event_time"]] == ["2025-07-10 08:00:00+00:00"]


def test_daylight_saving_gaps_and_overlaps(tmp_path):
    """A naive time that never happened in the source's zone (spring forward) is quarantined; an
    ambiguous one (fall back) is the earlier instant."""
    body = ("1,C1,2025-03-30 02:30:00,5,a@example.com,toys\n"   # Berlin: 02:00 -> 03:00, no 02:30
            "2,C1,2025-10-26 02:30:00,5,a@example.com,toys\n")  # Berlin: 02:30 happens twice
    res = _ingest(_orders(tmp_path, body, timezone="Europe/Berlin"), months=["2025-03-01", "2025-10-01"])
    # an unplaceable row lives in the month most of its file belongs to: here October
    assert _reasons(res["2025-10-01"]) == {2: "unparseable event_time 2025-03-30 02:30:00 (column 'when')"}
    assert [str(t) for t in res["2025-10-01"].events["event_time"]] == ["2025-10-26 00:30:00+00:00"]
    assert res["2025-03-01"].rows_read == 0


def test_epoch_seconds_and_milliseconds_are_parsed_as_utc(tmp_path):
    body = ("1,C1,1736503200,5,a@example.com,toys\n"       # 2025-01-10 10:00:00 UTC, seconds
            "2,C1,1736503200123,5,a@example.com,toys\n"    # same, milliseconds (+123 ms)
            "3,C1,1736503200.5,5,a@example.com,toys\n"     # fractional seconds
            "4,C1,173650320,5,a@example.com,toys\n"        # 9 digits: neither
            "5,C1,17365032001,5,a@example.com,toys\n")     # 11 digits: neither
    # the source time zone never applies to an epoch number: it is UTC by definition
    res = _ingest(_orders(tmp_path, body, timezone="Asia/Tokyo"))["2025-01-01"]
    got = {r["event_id"]: str(r["event_time"]) for r in res.events.iter_rows(named=True)}
    assert got == {"1": "2025-01-10 10:00:00+00:00", "2": "2025-01-10 10:00:00.123000+00:00",
                   "3": "2025-01-10 10:00:00.500000+00:00"}
    assert _reasons(res) == {5: "unparseable event_time 173650320 (column 'when')",
                             6: "unparseable event_time 17365032001 (column 'when')"}


def test_epoch_integers_in_jsonl_and_parquet(tmp_path):
    cfg = _jsonl_project(tmp_path, [
        {"id": "e1", "uid": "u1", "ts": 1736503200, "name": "login"},
        {"id": "e2", "uid": "u1", "ts": 1736503200123, "name": "login"},
        {"id": "e3", "uid": "u1", "ts": "2025-01-11T00:00:00Z", "name": "login"},  # a date string among numbers
    ])
    res = _ingest(cfg, source="product")["2025-01-01"]
    assert res.events["event_id"].to_list() == ["e1", "e2", "e3"] and res.rows_quarantined == 0

    pq = tmp_path / "pq"
    (pq / "src").mkdir(parents=True)
    pl.DataFrame({"v": ["a", "b"], "anon": ["x", "y"], "t": [1736503200, 1736503200000]}).write_parquet(pq / "src" / "w.parquet")
    src = {"path": "src/w.parquet", "format": "parquet", "columns": {"event_id": "v", "anonymous_id": "anon", "event_time": "t"}}
    res = _ingest(write_project(pq, {"web": src}), source="web")["2025-01-01"]
    assert [str(t) for t in res.events["event_time"]] == ["2025-01-10 10:00:00+00:00"] * 2


def test_a_number_among_date_strings_is_not_taken_for_a_time(tmp_path):
    """Most times of the source are date strings: a bare number is more likely a shifted column."""
    body = ("1,C1,2025-01-05 10:00:00,5,a@example.com,toys\n2,C1,2025-01-06 10:00:00,5,a@example.com,toys\n"
            "3,C1,1736503200,5,a@example.com,toys\n")
    res = _ingest(_orders(tmp_path, body))["2025-01-01"]
    assert _reasons(res) == {4: "unparseable event_time 1736503200 (column 'when')"}
    assert res.balanced


# -- numbers --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "amount", "reason"), [
    ("$1,234.50", 1234.5, None),
    ("€12", 12.0, None),
    ("12.50 EUR", 12.5, None),
    ("USD 7", 7.0, None),
    ("£ 3.5", 3.5, None),
    ("1,234,567", 1234567.0, None),
    ("+4", 4.0, None),
    ("-$5", None, "negative amount"),
    ("1,5", None, "amount is not a number: 1,5"),
    ("1 234,50", None, "amount is not a number: 1 234,50"),
    ("1.234,50", None, "amount is not a number: 1.234,50"),
    ("12,50 €", None, "amount is not a number: 12,50 €"),
    ("$5 USD", None, "amount is not a number: $5 USD"),
    ("NaN", None, "amount is not a number: NaN"),
    ("inf", None, "amount is not a number: inf"),
    ("twelve", None, "amount is not a number: twelve"),
])
def test_amount_text_forms(tmp_path, raw, amount, reason):
    res = _ingest(_orders(tmp_path, f'1,C1,2025-01-05,"{raw}",a@example.com,toys\n'))["2025-01-01"]
    if reason is None:
        assert res.events["amount"].to_list() == [amount]
    else:
        assert _reasons(res) == {2: reason} and res.rows_kept == 0


def test_quantity_must_be_a_representable_integer(tmp_path):
    write_text(tmp_path / "src" / "orders.csv", "oid,cust,when,amt,qty\n1,C1,2025-01-05,5,2\n2,C1,2025-01-05,5,1e30\n"
               "3,C1,2025-01-05,5,inf\n4,C1,2025-01-05,5,2.5\n5,C1,2025-01-05,5,\"1,000\"\n")
    src = {"path": "src/orders.csv", "format": "csv",
           "columns": {"event_id": "oid", "customer_id": "cust", "event_time": "when", "amount": "amt", "quantity": "qty"}}
    res = _ingest(write_project(tmp_path, {"orders": src}))["2025-01-01"]
    assert dict(zip(res.events["event_id"], res.events["quantity"])) == {"1": 2, "5": 1000}
    assert _reasons(res) == {3: "quantity is not an integer: 1e30", 4: "quantity is not an integer: inf",
                             5: "quantity is not an integer: 2.5"}


# -- long strings, unicode ------------------------------------------------------------------------
def test_a_one_megabyte_field_is_kept_whole(tmp_path):
    big = "x" * 1_000_000
    body = (f"1,C1,2025-01-05,5,a@example.com,{big}\n"
            f'2,C1,2025-01-06,5,a@example.com,"{big},with a comma"\n'
            '3,C1,2025-01-07,5,a@example.com,"multi\nline"\n')  # forces the exact (slow) CSV parser
    write_text(tmp_path / "src" / "orders.csv", "oid,cust,when,amt,email,detail\n" + body)
    src = {**orders_source("src/orders.csv")}
    src["columns"] = {**{k: v for k, v in src["columns"].items() if k != "category"}, "detail": "detail"}
    res = _ingest(write_project(tmp_path, {"orders": src}))["2025-01-01"]
    details = dict(zip(res.events["event_id"], res.events["detail"]))
    assert details["1"] == big and details["2"] == big + ",with a comma" and details["3"] == "multi\nline"

    cfg = _jsonl_project(tmp_path / "j", [{"id": "e1", "uid": big, "ts": "2025-01-02T10:00:00Z", "name": "login"}])
    assert _ingest(cfg, source="product")["2025-01-01"].events["user_id"].str.len_chars().to_list() == [1_000_000]


def test_unicode_customer_ids_are_kept_exactly_and_emails_are_nfc_normalised(tmp_path):
    nfc = unicodedata.normalize("NFC", "Jos\u00e9-\u5ba2\u6237-\U0001f600")
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfc != nfd
    email_nfc = unicodedata.normalize("NFC", "ren\u00e9@example.com")
    email_nfd = unicodedata.normalize("NFD", email_nfc)
    body = (f"1,{nfc},2025-01-05,5,{email_nfc},toys\n2,{nfd},2025-01-06,5,{email_nfd},toys\n"
            f"3, {nfc} ,2025-01-07,5, {email_nfc.upper()} ,toys\n")
    res = _ingest(_orders(tmp_path, body))["2025-01-01"]
    refs = dict(zip(res.events["event_id"], res.events["customer_ref"]))
    assert refs == {"1": nfc, "2": nfd, "3": nfc}  # byte for byte; only surrounding spaces trimmed
    hashes = set(res.events["email_hash"])
    assert len(hashes) == 1  # the same address however it is encoded or cased
    assert hashes == set(pseudonymize(pl.Series([email_nfc]), KEY))


# -- Parquet with another schema than configured ---------------------------------------------------
def _web_parquet(tmp_path: Path, frame: pl.DataFrame, columns: dict) -> Path:
    (tmp_path / "src").mkdir(parents=True, exist_ok=True)
    frame.write_parquet(tmp_path / "src" / "web.parquet")
    return write_project(tmp_path, {"web": {"path": "src/web.parquet", "format": "parquet", "columns": columns}})


def test_parquet_missing_column_names_column_and_file(tmp_path):
    cfg = _web_parquet(tmp_path, pl.DataFrame({"anon": ["x"], "time": ["2025-01-02"]}), {"anonymous_id": "anon", "event_time": "t"})
    with pytest.raises(SourceError, match=r"source 'web': .*web.parquet has no column 't' \(mapped in the config\)"):
        _ingest(cfg, source="web")


def test_parquet_columns_of_the_wrong_type_are_parsed_like_csv_text(tmp_path):
    frame = pl.DataFrame({
        "oid": [1, 2, 3], "cust": [10, 11, 12],  # integers where text is expected
        "when": ["2025-01-05 10:00:00", "2025-01-06T10:00:00Z", "soon"],  # strings where a timestamp is expected
        "amt": ["$1,234.50", "12", "1,5"],  # strings where a number is expected
        "qty": [1.0, 2.0, 3.0],  # floats where an integer is expected
    })
    (tmp_path / "src").mkdir()
    frame.write_parquet(tmp_path / "src" / "orders.parquet")
    src = {"path": "src/orders.parquet", "format": "parquet",
           "columns": {"event_id": "oid", "customer_id": "cust", "event_time": "when", "amount": "amt", "quantity": "qty"}}
    res = _ingest(write_project(tmp_path, {"orders": src}))["2025-01-01"]
    ev = res.events.sort("event_id")
    assert ev["customer_ref"].to_list() == ["10", "11"] and ev["amount"].to_list() == [1234.5, 12.0]
    assert ev["quantity"].to_list() == [1, 2]
    assert _reasons(res) == {3: "unparseable event_time soon (column 'when')"}


def test_parquet_nested_column_is_refused_naming_it(tmp_path):
    cfg = _web_parquet(tmp_path, pl.DataFrame({"anon": [["x"]], "t": ["2025-01-02"]}), {"anonymous_id": "anon", "event_time": "t"})
    with pytest.raises(SourceError, match=r"web.parquet column 'anon' has type List\(String\)"):
        _ingest(cfg, source="web")


# -- JSONL ----------------------------------------------------------------------------------------
def test_jsonl_garbage_lines_are_quarantined_and_counted(tmp_path):
    cfg = _jsonl_project(tmp_path, [
        {"id": "e1", "uid": "u1", "ts": "2025-01-02T10:00:00Z", "name": "login"},
        "this is not json",
        '{"id": "e2", "uid": "u1", "ts": "2025-01-02T1',  # truncated
        "null",
        "",
        '"a string"',
        {"id": "e3", "uid": None, "ts": "2025-01-02T10:00:00Z", "name": "login"},
    ])
    res = _ingest(cfg, source="product")["2025-01-01"]
    r = _reasons(res)
    assert r[2].startswith("invalid JSON") and r[3].startswith("invalid JSON")
    assert r[4] == "JSON line is a NoneType, not an object" and r[6] == "JSON line is a str, not an object"
    assert r[7] == "missing user_id (column 'uid')"
    assert res.stats() == {"rows_read": 6, "rows_kept": 1, "rows_quarantined": 5, "duplicates_removed": 0}


# -- compression ----------------------------------------------------------------------------------
def test_gzip_csv_and_jsonl_are_read_transparently(tmp_path):
    body = ORDERS_HEADER + "1,C1,2025-01-05,5,a@example.com,toys\n2,C1,bad,5,a@example.com,toys\n"
    plain = _ingest(_orders(tmp_path / "plain", body.encode()))["2025-01-01"]
    gz = _ingest(_orders(tmp_path / "gz", gzip.compress(body.encode()), name="orders.csv.gz"))["2025-01-01"]
    # detected by the magic bytes, not the name
    misnamed = _ingest(_orders(tmp_path / "mis", gzip.compress(body.encode()), name="orders.csv"))["2025-01-01"]
    for res in (gz, misnamed):
        assert res.stats() == plain.stats()
        assert res.events.drop("source_file").equals(plain.events.drop("source_file"))
        assert res.quarantine.drop("source_file").equals(plain.quarantine.drop("source_file"))
    line = {"id": "e1", "uid": "u1", "ts": "2025-01-02T10:00:00Z", "name": "login"}
    res = _ingest(_jsonl_project(tmp_path / "j", [line, "{oops"], name="ev.jsonl.gz", gz=True), source="product")
    assert res["2025-01-01"].rows_kept == 1 and _reasons(res["2025-01-01"])[2].startswith("invalid JSON")


def test_corrupt_gzip_is_refused(tmp_path):
    data = gzip.compress((ORDERS_HEADER + "1,C1,2025-01-05,5,a@example.com,toys\n" * 50).encode())
    cfg = _orders(tmp_path, data[: len(data) // 2], name="orders.csv.gz")
    with pytest.raises(SourceError, match=r"orders.csv.gz is a corrupt or truncated gzip file"):
        _ingest(cfg)


# -- empty files ----------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True])
def test_reading_in_blocks_gives_the_rows_and_line_numbers_of_a_whole_read(tmp_path, gz):
    """Blocks end on line boundaries and never inside a quoted field: the same rows, the same line
    numbers and the same quarantined lines whatever the block size (BOM, CRLF, multi-line fields)."""
    body = "\ufeff" + ORDERS_HEADER.replace("\n", "\r\n")
    for i in range(1, 41):
        if i % 7 == 0:
            body += f'{i},C{i},2025-01-05,5,a@example.com,"two\r\nlines ""quoted"""\r\n'
        elif i % 11 == 0:
            body += f"{i},C{i},broken\r\n"
        else:
            body += f"{i},C{i},2025-01-{i % 28 + 1:02d},{i},a@example.com,toys\r\n"
    path = tmp_path / ("orders.csv.gz" if gz else "orders.csv")
    data = body.encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    cols = ["oid", "cust", "cat"]
    reads = {}
    for size in (5, 37, 200, 10**6):
        chunks = list(readers.read_source_chunks(str(path), fmt="csv", columns=cols, source="orders",
                                                 chunk_bytes=size))
        reads[size] = (pl.concat([c.frame for c in chunks]), pl.concat([c.malformed for c in chunks]), len(chunks))
    frame, bad, _ = reads[10**6]
    assert frame.height == 40 - 3 and bad["source_row"].to_list() == [13, 26, 38]  # lines of rows 11, 22, 33
    # line numbers count the physical lines: row 7's field spans two, so row 8 is on line 10
    assert frame.filter(pl.col("oid") == "8")["source_row"].item() == 10
    assert frame.filter(pl.col("oid") == "7")["cat"].item() == 'two\nlines "quoted"'  # line ends as \n
    assert reads[5][2] > 20 and reads[37][2] > 5  # really read in many blocks
    for size, (f, b, _) in reads.items():
        assert f.equals(frame) and b.equals(bad), size


def test_zero_byte_csv_is_refused_but_a_header_only_csv_is_empty(tmp_path):
    with pytest.raises(SourceError, match=r"orders.csv is empty \(0 bytes, no header line\): a failed export\?"):
        _ingest(_orders(tmp_path / "a", b""))
    with pytest.raises(SourceError, match=r"is empty \(0 bytes"):
        _ingest(_orders(tmp_path / "b", gzip.compress(b""), name="orders.csv.gz"))
    res = _ingest(_orders(tmp_path / "c", ""))
    assert all(r.stats()["rows_read"] == 0 for r in res.values())


def test_zero_byte_jsonl_is_zero_rows_and_zero_byte_parquet_is_refused(tmp_path):
    cfg = _jsonl_project(tmp_path, [])
    (tmp_path / "src" / "events.jsonl").write_bytes(b"")
    assert _ingest(cfg, source="product")["2025-01-01"].rows_read == 0
    cfg = _web_parquet(tmp_path / "p", pl.DataFrame({"a": ["x"], "t": ["2025-01-02"]}), {"anonymous_id": "a", "event_time": "t"})
    (tmp_path / "p" / "src" / "web.parquet").write_bytes(b"")
    with pytest.raises(SourceError, match=r"web.parquet is not a readable Parquet file"):
        _ingest(cfg, source="web")


# -- files that change under the reader ------------------------------------------------------------
def test_file_changed_since_listing_is_refused(tmp_path):
    path = write_text(tmp_path / "orders.csv", ORDERS_HEADER + "1,C1,2025-01-05,5,a@example.com,toys\n")
    listed = os.stat(path)
    with open(path, "a") as fh:
        fh.write("2,C1,2025-01-06,5,a@example.com,toys\n")
    with pytest.raises(SourceChangedError, match=r"orders.csv changed since it was listed \(size \d+ -> \d+ bytes"):
        read_source_file(str(path), fmt="csv", columns=["oid"], source="orders", listed=listed)
    path.unlink()
    with pytest.raises(SourceChangedError, match=r"orders.csv disappeared .*re-run"):
        read_source_file(str(path), fmt="csv", columns=["oid"], source="orders", listed=listed)


def test_file_appended_to_while_being_read_is_refused(tmp_path, monkeypatch):
    cfg = _orders(tmp_path, "1,C1,2025-01-05,5,a@example.com,toys\n")
    real = readers._csv_chunks

    def read_then_producer_appends(path, *args):
        yield from real(path, *args)
        with open(path, "a") as fh:  # the exporter is still writing the file
            fh.write("2,C1,2025-01-06,5,a@example.com,toys\n")

    monkeypatch.setattr(readers, "_csv_chunks", read_then_producer_appends)
    with pytest.raises(SourceChangedError, match=r"orders.csv changed while being read .*re-run"):
        _ingest(cfg)
    monkeypatch.undo()
    assert _ingest(cfg)["2025-01-01"].rows_kept == 2  # once complete, the re-run reads it all


# -- I/O errors: transient ones are retried, the rest name the file ------------------------------------
@pytest.mark.parametrize(("code", "kind"), [(errno.EIO, OSError), (errno.EAGAIN, OSError), (errno.EACCES, SourceError),
                                            (errno.EISDIR, SourceError)])
def test_transient_io_errors_stay_oserrors(tmp_path, monkeypatch, code, kind):
    cfg = _orders(tmp_path, "1,C1,2025-01-05,5,a@example.com,toys\n")

    def failing(path):
        raise OSError(code, os.strerror(code), path)

    monkeypatch.setattr(readers, "_open_raw", failing)
    with pytest.raises(OSError if kind is OSError else SourceError, match=r"orders.csv") as err:
        _ingest(cfg)
    assert isinstance(err.value, kind) and not (kind is OSError and isinstance(err.value, SourceError))
    if kind is OSError:
        assert err.value.errno == code and "a retry may succeed" in str(err.value)


# -- no raw email leaks through messages, reasons or free text --------------------------------------
def test_emails_never_leak_into_errors_reasons_or_detail(tmp_path):
    # a file without a header line: its first data row is taken for the header
    cfg = _orders(tmp_path / "a", b"1,C1,2025-01-05,5,ann@example.com,toys\n")
    with pytest.raises(SourceError) as err:
        _ingest(cfg)
    assert "@example.com" not in str(err.value) and "<email>" in str(err.value)
    write_text(tmp_path / "b" / "src" / "orders.csv", "oid,cust,when,amt,email,detail\n"
               "1,C1,2025-01-05,bob@example.com,a@example.com,ok\n"
               "2,C1,2025-01-05,5,a@example.com,/unsubscribe?email=cy@example.com\n")
    src = {**orders_source("src/orders.csv")}
    src["columns"] = {**{k: v for k, v in src["columns"].items() if k != "category"}, "detail": "detail"}
    res = _ingest(write_project(tmp_path / "b", {"orders": src}))["2025-01-01"]
    assert _reasons(res) == {2: "amount is not a number: <email>"}
    assert res.events["detail"].to_list() == ["/unsubscribe?email=<email>"]
    assert "@" not in res.quarantine.write_csv()
