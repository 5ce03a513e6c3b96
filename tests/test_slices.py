"""Tables written a slice at a time (segpipe.slices) equal one sort of everything."""

import datetime as dt
import random

import polars as pl
import pytest

from segpipe.identity import (LINK_SCHEMA, accumulate_links, build_identity_map, identity_links, stitch_events, stitch_month,
                              write_graph, write_links)
from segpipe.slices import slice_bounds, write_slices

UTC = dt.timezone.utc


def _events(n: int, seed: int) -> pl.DataFrame:
    """Events with many equal times (ties broken by the other keys), some null times, several sources."""
    rnd = random.Random(seed)
    start = dt.datetime(2025, 3, 1, tzinfo=UTC)
    return pl.DataFrame({
        "event_time": [None if rnd.random() < 0.03 else start + dt.timedelta(minutes=rnd.randrange(300))
                       for _ in range(n)],
        "source": [rnd.choice(["web", "email", "orders"]) for _ in range(n)],
        "event_id": [f"e{rnd.randrange(10 * n):06d}" for _ in range(n)],
        "amount": [rnd.random() for _ in range(n)],
    }, schema_overrides={"event_time": pl.Datetime("us", "UTC")})


@pytest.mark.parametrize("scatter", [False, True], ids=["filtered", "scattered"])
@pytest.mark.parametrize("slice_rows", [1, 37, 500, 10_000])
def test_parts_read_in_order_are_the_sorted_table(tmp_path, slice_rows, scatter):
    frame = _events(2_000, seed=slice_rows)
    src = tmp_path / "in.parquet"
    frame.write_parquet(src)
    order = ["event_time", "source", "event_id", "amount"]
    parts = write_slices(pl.scan_parquet(src), tmp_path / "out", key="event_time", rows=frame.height,
                         slice_rows=slice_rows, arrange=lambda lf: lf.sort(order), scatter=scatter)
    got = pl.scan_parquet(parts).collect()
    assert sorted((tmp_path / "out").iterdir()) == parts  # nothing left beside the parts
    assert got.equals(frame.sort(order))
    sizes = [pl.scan_parquet(p).select(pl.len()).collect().item() for p in parts]
    assert sum(sizes) == frame.height
    if slice_rows == 10_000:
        assert len(parts) == 1
    else:  # the ranges follow the requested size, give or take the sample (300 distinct times only)
        assert len(parts) >= min(frame.height // slice_rows, 300) // 2
        assert max(sizes) <= 3 * max(slice_rows, frame.height // 300) + 60
    # the same data always gives the same bounds, so a re-run writes the same parts
    assert slice_bounds(pl.scan_parquet(src), "event_time", rows=frame.height, slices=7) == \
        slice_bounds(pl.scan_parquet(src), "event_time", rows=frame.height, slices=7)


def test_one_key_value_larger_than_a_slice_stays_whole(tmp_path):
    """Rows sharing one key value cannot be cut: their range is larger, nothing is lost."""
    t = dt.datetime(2025, 3, 1, tzinfo=UTC)
    frame = pl.DataFrame({"event_time": [t] * 900 + [t + dt.timedelta(seconds=i) for i in range(1, 101)],
                          "event_id": [f"{i:04d}" for i in range(1000)]})
    parts = write_slices(frame.lazy(), tmp_path, key="event_time", rows=1000, slice_rows=50,
                         arrange=lambda lf: lf.sort("event_time", "event_id"))
    sizes = [pl.scan_parquet(p).select(pl.len()).collect().item() for p in parts]
    assert max(sizes) >= 900 and sum(sizes) == 1000 and len(parts) >= 2 and min(sizes) > 0
    assert pl.scan_parquet(parts).collect().equals(frame.sort("event_time", "event_id"))


def _links(n: int, seed: int, start: dt.datetime) -> pl.DataFrame:
    rnd = random.Random(seed)
    nodes = [f"{k}:{rnd.randrange(400)}" for k in "cuea" for _ in range(100)]
    rows = []
    for _ in range(n):
        a, b = rnd.choice(nodes), rnd.choice(nodes)
        rows.append((a, b, start + dt.timedelta(hours=rnd.randrange(2000))))
    return pl.DataFrame(rows, schema=LINK_SCHEMA, orient="row")


def test_graph_in_slices_equals_the_graph_at_once(tmp_path):
    previous, month = _links(3_000, 1, dt.datetime(2025, 1, 1, tzinfo=UTC)), _links(800, 2, dt.datetime(2025, 4, 1, tzinfo=UTC))
    previous.write_parquet(tmp_path / "prev.parquet")
    month.write_parquet(tmp_path / "month.parquet")
    whole = accumulate_links(pl.scan_parquet(tmp_path / "prev.parquet"), pl.scan_parquet(tmp_path / "month.parquet")).collect()
    sliced = write_graph(pl.scan_parquet(tmp_path / "prev.parquet"), pl.scan_parquet(tmp_path / "month.parquet"),
                         tmp_path / "graph", slice_rows=300)
    assert len(list((tmp_path / "graph").glob("*.parquet"))) >= 5
    assert sliced.collect().equals(whole)
    # and the map built by streaming over the parts, a range of identifiers at a time, is the map
    # of the links at once
    whole_map = build_identity_map(pl.concat([previous.lazy(), month.lazy()]))
    assert whole_map.filter(pl.col("hops") > 0).height and whole_map.filter(pl.col("hops") < 0).height
    for slice_rows in (1_000_000, 200, 7):
        assert build_identity_map(sliced, distinct=True, slice_rows=slice_rows).equals(whole_map)


def test_links_in_slices_equal_the_links_at_once(tmp_path):
    """write_links scatters the events' identifier pairs by ranges of identifiers, once."""
    events = _stitch_input(4_000)
    events.write_parquet(tmp_path / "events.parquet")
    got = write_links(pl.scan_parquet(tmp_path / "events.parquet"), tmp_path / "links", slice_rows=400)
    assert len(list((tmp_path / "links").iterdir())) >= 5
    assert got.collect().equals(identity_links(events.lazy()).collect())


def _stitch_input(n: int) -> pl.DataFrame:
    t0 = dt.datetime(2025, 3, 1, tzinfo=UTC)
    rnd = random.Random(5)
    return pl.DataFrame({
        "event_id": [f"e{i:05d}" for i in range(n)],
        "customer_ref": [rnd.choice([None, None, "C1", "C2"]) for _ in range(n)],
        "user_id": [rnd.choice([None, "u1", "u2", "u3"]) for _ in range(n)],
        "email_hash": [rnd.choice([None, "h1", "h2"]) for _ in range(n)],
        "anonymous_id": [f"k{rnd.randrange(50)}" for _ in range(n)],
        "event_time": [t0 + dt.timedelta(minutes=rnd.randrange(2_000)) for _ in range(n)],
        "source": [rnd.choice(["web", "product"]) for _ in range(n)],
        "event_type": ["x"] * n,
        "amount": [None] * n, "quantity": [None] * n, "category": [None] * n, "channel": [None] * n,
        "detail": [None] * n,
    }, schema_overrides={"event_time": pl.Datetime("us", "UTC"), "amount": pl.Float64, "quantity": pl.Int64,
                         "category": pl.String, "channel": pl.String, "detail": pl.String})


def test_stitched_month_in_slices_equals_one_sort(tmp_path):
    """stitch_month: the streamed join sorted a time range at a time is the stitched month sorted
    at once, with every event's customer."""
    n = 3_000
    events = _stitch_input(n)
    events.write_parquet(tmp_path / "events.parquet")

    imap = build_identity_map(identity_links(events.lazy()))
    imap.write_parquet(tmp_path / "map.parquet")
    got = stitch_month(pl.scan_parquet(tmp_path / "events.parquet"), pl.scan_parquet(tmp_path / "map.parquet"),
                       tmp_path / "stitched", slice_rows=250).collect()
    whole = stitch_events(events.lazy(), imap.lazy()).collect().sort("event_time", "source", "event_id")
    assert got.equals(whole.select(got.columns))
    assert got["customer_id"].null_count() == 0 and got.height == n
    parts = sorted((tmp_path / "stitched").glob("*.parquet"))
    assert len(parts) >= 6 and sorted(p.name for p in (tmp_path / "stitched").iterdir()) == [p.name for p in parts]
