"""Ingestion on real files: mapping, validation, quarantine, dedupe, accounting, bad input."""

import json

import polars as pl
import pytest

from segpipe.config import load_config
from segpipe.ingest import ingest_source
from segpipe.readers import SourceError

from .conftest import ORDERS_HEADER, orders_source, write_project, write_text

KEY = b"k"


def _ingest(config_path, months=("2025-01-01", "2025-02-01"), source="orders"):
    return ingest_source(load_config(config_path), source, list(months), key=KEY)


def test_rows_are_accounted_per_month(orders_project):
    res = _ingest(orders_project)
    jan, feb = res["2025-01-01"], res["2025-02-01"]
    assert jan.stats() == {"rows_read": 8, "rows_kept": 2, "rows_quarantined": 5, "duplicates_removed": 1}
    assert feb.stats() == {"rows_read": 3, "rows_kept": 3, "rows_quarantined": 0, "duplicates_removed": 0}
    assert jan.balanced and feb.balanced
    # every data line of the file is accounted for exactly once over the months
    assert jan.rows_read + feb.rows_read == 11
    assert sorted(jan.events["event_id"]) == ["1", "3"]
    assert sorted(feb.events["event_id"]) == ["10", "2", "4"]


def test_months_streamed_to_files_equal_the_months_in_memory(orders_project, tmp_path):
    """With ``out_dir`` each month's events are sorted into Parquet parts, a range of event times
    at a time (what the asset does, so that memory follows one slice): the same rows, order and
    accounting, whether the month fits one slice or takes several."""
    in_memory = _ingest(orders_project)
    config = load_config(orders_project)
    assert max(r.events.height for r in in_memory.values()) > 2
    for slice_rows in (1_000_000, 2):
        cfg = config.model_copy(update={"scale": config.scale.model_copy(update={"slice_rows": slice_rows})})
        out = tmp_path / f"scratch-{slice_rows}"
        streamed = ingest_source(cfg, "orders", ["2025-01-01", "2025-02-01"], key=KEY, out_dir=out)
        for pk, res in in_memory.items():
            lazy = streamed[pk]
            parts = sorted((out / pk).glob("*.parquet"))
            assert isinstance(lazy.events, pl.LazyFrame)
            several = res.events.height > slice_rows and res.events["event_time"].n_unique() > 1
            assert len(parts) >= 2 if several else len(parts) == 1, parts
            assert lazy.events.collect().equals(res.events) and lazy.quarantine.equals(res.quarantine)
            assert lazy.stats() == res.stats() and lazy.balanced


def test_quarantine_names_file_row_and_reason(orders_project):
    q = _ingest(orders_project)["2025-01-01"].quarantine
    rows = {r["source_row"]: r["reason"] for r in q.iter_rows(named=True)}
    assert rows[7] == "unparseable event_time not-a-date (column 'when')"
    assert rows[8] == "missing customer_id (column 'cust')"
    assert rows[9] == "negative amount"
    assert rows[10].startswith("event_time in the future")
    assert rows[11] == "event_time before the first month 2025-01"
    assert set(q["source_file"]) == {str(orders_project.parent / "src" / "orders.csv")}
    # the raw row is kept for inspection, but never a raw email address
    assert not q["raw"].str.contains("@").any()
    assert q.filter(pl.col("source_row") == 9)["raw"].item() == (
        '{"oid":"7","cust":"C4","when":"2025-01-03 09:00:00","amt":"-5","email":"<email>","cat":"toys"}'
    )


def test_unplaceable_rows_are_quarantined_once_whatever_months_run(orders_project):
    cfg = load_config(orders_project)
    only_feb = ingest_source(cfg, "orders", ["2025-02-01"], key=KEY)["2025-02-01"]
    only_jan = ingest_source(cfg, "orders", ["2025-01-01"], key=KEY)["2025-01-01"]
    assert only_feb.rows_quarantined == 0
    assert only_jan.rows_quarantined == 5
    both = ingest_source(cfg, "orders", ["2025-01-01", "2025-02-01"], key=KEY)
    assert sum(r.rows_quarantined for r in both.values()) == 5


def test_events_follow_the_contract(orders_project):
    ev = _ingest(orders_project)["2025-02-01"].events
    assert ev.schema["event_time"] == pl.Datetime("us", "UTC")
    assert ev["event_time"].is_sorted()
    row = ev.filter(pl.col("event_id") == "4").row(0, named=True)
    assert row["customer_ref"] == "C3" and row["amount"] == 7.0 and row["event_type"] == "order"
    assert str(row["event_time"]) == "2025-02-07 00:00:00+00:00"
    assert row["category"] == "home" and row["source"] == "orders"
    # email pseudonymized with the key, stable, never raw
    assert len(row["email_hash"]) == 32 and "@" not in row["email_hash"]
    again = _ingest(orders_project)["2025-02-01"].events
    assert again.equals(ev)
    other_key = ingest_source(load_config(orders_project), "orders", ["2025-02-01"], key=b"other")
    assert other_key["2025-02-01"].events["email_hash"][0] != ev["email_hash"][0]


def test_source_time_zone_is_applied(tmp_path):
    write_text(tmp_path / "src" / "orders.csv", ORDERS_HEADER + "1,C1,2025-01-31 23:30:00,5,a@example.com,toys\n"
               "2,C1,2025-02-01T00:30:00+01:00,5,a@example.com,toys\n")
    src = {**orders_source("src/orders.csv"), "timezone": "America/New_York"}
    res = _ingest(write_project(tmp_path, {"orders": src}))
    # 23:30 in New York on Jan 31 is Feb 1 04:30 UTC: it belongs to February
    feb = res["2025-02-01"].events.sort("event_id")
    assert [str(t) for t in feb["event_time"]] == ["2025-02-01 04:30:00+00:00"]
    # an explicit offset wins over the source's zone: 00:30+01:00 is Jan 31 23:30 UTC
    assert [str(t) for t in res["2025-01-01"].events["event_time"]] == ["2025-01-31 23:30:00+00:00"]


def test_missing_file_is_named(tmp_path):
    cfg = write_project(tmp_path, {"orders": orders_source("src/nothing*.csv")})
    with pytest.raises(SourceError, match=r"source 'orders': no file matches .*src/nothing\*\.csv"):
        _ingest(cfg)


def test_missing_mapped_column_names_column_and_file(tmp_path):
    write_text(tmp_path / "src" / "orders.csv", "oid,cust,when,amount,email,cat\n1,C1,2025-01-05,5,a@example.com,x\n")
    cfg = write_project(tmp_path, {"orders": orders_source("src/orders.csv")})
    with pytest.raises(SourceError, match=r"orders.csv has no column 'amt' \(mapped in the config\)"):
        _ingest(cfg)


def test_unreadable_file_is_named(tmp_path):
    p = write_text(tmp_path / "src" / "orders.csv", ORDERS_HEADER)
    p.write_bytes(b"oid,cust\n\xff\xfe\xfa,1\n")
    cfg = write_project(tmp_path, {"orders": orders_source("src/orders.csv")})
    with pytest.raises(SourceError, match=r"orders.csv is not UTF-8"):
        _ingest(cfg)


def test_corrupt_parquet_is_named(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "web.parquet").write_bytes(b"PAR1 this is not parquet")
    src = {"path": "src/web.parquet", "format": "parquet",
           "columns": {"anonymous_id": "a", "event_time": "t"}}
    with pytest.raises(SourceError, match=r"web.parquet is not a readable Parquet file"):
        _ingest(write_project(tmp_path, {"web": src}), source="web")


def test_stray_delimiter_and_truncated_last_line_are_quarantined(tmp_path):
    write_text(tmp_path / "src" / "orders.csv", ORDERS_HEADER + "1,C1,2025-01-05,5,a@example.com,toys\n"
               "2,C1,2025-01-06,5,a@example.com,toys,EXTRA\n"
               '3,C2,2025-01-07,"1,250.50",b@example.com,toys\n'
               '5,C2,2025-01-07,"1,5",b@example.com,toys\n'
               "4,C2,2025-01-0")
    res = _ingest(write_project(tmp_path, {"orders": orders_source("src/orders.csv")}))["2025-01-01"]
    assert res.balanced and res.rows_read == 5
    q = {r["source_row"]: r["reason"] for r in res.quarantine.iter_rows(named=True)}
    assert q == {
        3: "malformed CSV line: expected 6 fields, found 7",
        5: "amount is not a number: 1,5",
        6: "malformed CSV line: expected 6 fields, found 3",
    }
    # a quoted separator is a value, not a stray delimiter; "1,250.50" has a thousands separator
    assert res.events.filter(pl.col("event_id") == "3")["amount"].item() == 1250.5


def test_multiline_quoted_csv_field_keeps_line_numbers(tmp_path):
    write_text(tmp_path / "src" / "orders.csv", ORDERS_HEADER + '1,C1,2025-01-05,5,a@example.com,"to\nys"\n'
               "2,C1,2025-01-06,-5,a@example.com,toys\n")
    res = _ingest(write_project(tmp_path, {"orders": orders_source("src/orders.csv")}))["2025-01-01"]
    assert res.events["category"].to_list() == ["to\nys"]
    assert res.quarantine["source_row"].to_list() == [4]


def test_jsonl_bad_line_is_quarantined(tmp_path):
    lines = [
        {"id": "e1", "uid": "u1", "ts": "2025-01-02T10:00:00Z", "name": "login"},
        "{not json",
        [1, 2],
        {"id": "e2", "uid": "u1", "ts": "2025-01-03T10:00:00Z", "name": "teleport"},
        {"id": "e3", "uid": "u2", "ts": 1735900000, "name": "login"},
    ]
    text = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n"
    write_text(tmp_path / "src" / "events.jsonl", text)
    src = {"path": "src/*.jsonl", "format": "jsonl",
           "columns": {"event_id": "id", "user_id": "uid", "event_time": "ts", "event_type": "name"}}
    res = _ingest(write_project(tmp_path, {"product": src}), source="product")["2025-01-01"]
    q = {r["source_row"]: r["reason"] for r in res.quarantine.iter_rows(named=True)}
    assert q[2].startswith("invalid JSON")
    assert q[3] == "JSON line is a list, not an object"
    assert q[4] == "unknown event_type teleport"
    assert q[5] == "unparseable event_time 1735900000 (column 'ts')"
    assert res.events["event_id"].to_list() == ["e1"] and res.balanced


def test_empty_month_is_an_empty_partition(orders_project):
    res = _ingest(orders_project, months=("2025-03-01",))["2025-03-01"]
    assert res.stats() == {"rows_read": 0, "rows_kept": 0, "rows_quarantined": 0, "duplicates_removed": 0}
    assert res.events.height == 0 and "event_time" in res.events.columns


def test_duplicates_across_files_and_event_id_conflicts(tmp_path):
    row = "1,C1,2025-01-05 10:00:00,5,a@example.com,toys\n"
    write_text(tmp_path / "src" / "orders_a.csv", ORDERS_HEADER + row)
    write_text(tmp_path / "src" / "orders_b.csv", ORDERS_HEADER + row + "1,C1,2025-01-05 10:00:00,6,a@example.com,toys\n")
    res = _ingest(write_project(tmp_path, {"orders": orders_source("src/orders_*.csv")}))["2025-01-01"]
    assert res.stats() == {"rows_read": 3, "rows_kept": 1, "rows_quarantined": 1, "duplicates_removed": 1}
    assert res.events["source_file"].item().endswith("orders_a.csv")
    assert res.quarantine["reason"].item() == "event_id 1 repeats with different content"
    # valid rows do not carry their source values; the conflict's are read back from its file (emails redacted)
    assert res.quarantine.select("source_file", "source_row").row(0)[1] == 3
    assert json.loads(res.quarantine["raw"].item()) == {
        "oid": "1", "cust": "C1", "when": "2025-01-05 10:00:00", "amt": "6", "email": "<email>", "cat": "toys"}


def test_parquet_source_with_typed_naive_timestamps(tmp_path):
    (tmp_path / "src").mkdir()
    pl.DataFrame({
        "v": ["a", "b"], "anon": ["x1", "x2"], "cust": [None, "C9"],
        "t": pl.Series(["2025-01-02 12:00:00", "2025-01-03 12:00:00"]).str.to_datetime(),
        "path": ["/pricing", "/cart"],
    }).write_parquet(tmp_path / "src" / "web.parquet")
    src = {"path": "src/web.parquet", "format": "parquet", "timezone": "Europe/Berlin",
           "columns": {"event_id": "v", "anonymous_id": "anon", "customer_id": "cust", "event_time": "t", "detail": "path"}}
    res = _ingest(write_project(tmp_path, {"web": src}), source="web")["2025-01-01"]
    assert res.events["event_type"].unique().to_list() == ["page_view"]
    assert [str(t) for t in res.events["event_time"]] == ["2025-01-02 11:00:00+00:00", "2025-01-03 11:00:00+00:00"]
    assert res.events["source_row"].to_list() == [1, 2]


def _frames(results):
    return {m: (r.events, r.quarantine, r.rows_read, r.duplicates) for m, r in results.items()}


def _same(a, b):
    assert sorted(a) == sorted(b)
    for m in a:
        assert a[m][0].equals(b[m][0]) and a[m][1].equals(b[m][1]) and a[m][2:] == b[m][2:], m


def test_file_index_reads_only_the_files_holding_the_month(tmp_path):
    """A refresh of one month reads the files holding rows of that month (and new or changed files),
    not the source's whole history, with the same rows as a full read."""
    import os
    import shutil

    from segpipe.sample import generate_sample

    from .browser_support import make_sample_project

    config_path = make_sample_project(tmp_path / "p", customers=150, months=4, start="2024-11")
    cfg = load_config(config_path)
    index = tmp_path / "p" / "lake" / "_ingest_index"
    for source in ("orders", "product", "email", "web"):
        full = ingest_source(cfg, source, ["2025-01-01"], key=b"k")  # no index yet: every file is read
        n = len(full["2025-01-01"].files)
        assert full["2025-01-01"].files_read == n == 4
        assert (index / f"{source}.json").is_file()
        entries = json.loads((index / f"{source}.json").read_text())["files"]
        holding = {p for p, e in entries.items() if "2025-02-01" in e["months"]}
        again = ingest_source(cfg, source, ["2025-02-01"], key=b"k")
        assert again["2025-02-01"].files_read == len(holding) < n, source
        shutil.rmtree(index)
        _same(_frames(again), _frames(ingest_source(cfg, source, ["2025-02-01"], key=b"k")))
    # a changed file is read again, whatever its months were
    ingest_source(cfg, "orders", ["2024-11-01"], key=b"k")  # index the orders files again
    orders = sorted((tmp_path / "p" / "data" / "sample" / "orders").glob("*.csv"))
    stat = orders[0].stat()
    os.utime(orders[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    entries = json.loads((index / "orders.json").read_text())["files"]
    holding = {p for p, e in entries.items() if "2025-02-01" in e["months"]}
    res = ingest_source(cfg, "orders", ["2025-02-01"], key=b"k")["2025-02-01"]
    assert res.files_read == len(holding | {str(orders[0])})
    # a new sample (other seed) under the same paths: every file changed, all read, index rewritten
    generate_sample(tmp_path / "p" / "data" / "sample", customers=150, months=4, start="2024-11", seed=99)
    res = ingest_source(cfg, "orders", ["2025-02-01"], key=b"k")["2025-02-01"]
    assert res.files_read == 4
    shutil.rmtree(index)
    _same({"x": (res.events, res.quarantine, res.rows_read, res.duplicates)},
          {"x": _frames(ingest_source(cfg, "orders", ["2025-02-01"], key=b"k"))["2025-02-01"]})
