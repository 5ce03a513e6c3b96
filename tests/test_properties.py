"""Property-based tests (hypothesis) of the promises that must hold for *any* input.

* Row accounting: for any CSV (garbage included), per month rows_read == kept + quarantined +
  duplicates, and every data line of the file is in exactly one of events / quarantine / removed
  duplicates.
* Ingestion output does not depend on the order of the rows or on how a month is split into files.
* segment membership (every scheme, cluster model included) has exactly one row per customer for
  any feature frame.
"""

import csv
import datetime as dt
import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from segpipe.clustering import fit_cluster_model
from segpipe.config import ClusteringConfig, FeaturesConfig, SegmentsConfig, load_config
from segpipe.features import feature_schema
from segpipe.ingest import ingest_source
from segpipe.segments import SCHEMES, build_membership, clusterable

from .conftest import write_project

KEY = b"k"
MONTHS = ["2025-01-01", "2025-02-01", "2025-03-01"]
HEADER = "oid,cust,when,amt,email,cat"
#: Modest by default (the whole file runs in well under a minute); raise it to hunt for bugs:
#: SEGPIPE_HYPOTHESIS_EXAMPLES=2000 pytest tests/test_properties.py
EXAMPLES = int(os.environ.get("SEGPIPE_HYPOTHESIS_EXAMPLES", "40"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                            HealthCheck.too_slow])

# -- generators -----------------------------------------------------------------------------------
ids = st.sampled_from(["1", "2", "3", "", "x-9"])
customers = st.sampled_from(["C1", "C2", " C3 ", "", "Jos\u00e9", "\u5ba2"])
times = st.sampled_from([
    "2025-01-05 10:00:00", "2025-01-31T23:30:00-02:00", "2025-02-01T00:00:00Z", "2025-02-14",
    "2025-03-02 08:15:00.5", "1736503200", "1739000000000", "not-a-date", "", "2019-06-01", "2031-01-01",
    "2025-02-30",
])
amounts = st.sampled_from(["5", "10.25", "-1", "$1,234.50", "1,5", "", "abc", "€12", "0", "NaN"])
emails = st.sampled_from(["a@example.com", "B@Example.com ", "", "not-an-email"])
cats = st.sampled_from(["toys", "Books", "", "home and garden", "caf\u00e9"])
# garbage without quotes: every line stays one record, so each line can be traced
plain_garbage = st.text(alphabet=st.characters(blacklist_characters='\n"', blacklist_categories=("Cs",)), max_size=40)
any_garbage = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


def row(with_id: bool = True):
    fields = [ids if with_id else st.just(""), customers, times, amounts, emails, cats]
    return st.tuples(*fields).map(lambda t: ",".join(t))


def lines_of(garbage, with_id: bool = True):
    return st.lists(st.one_of(row(with_id), row(with_id), garbage), min_size=0, max_size=30)


def _project(root: Path, files: dict[str, str], *, event_id: bool) -> Path:
    src = root / "src"
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    for name, text in files.items():
        (src / name).write_text(text, encoding="utf-8", newline="")
    columns = {"customer_id": "cust", "event_time": "when", "amount": "amt", "email": "email", "category": "cat"}
    if event_id:
        columns["event_id"] = "oid"
    return write_project(root, {"orders": {"path": "src/*.csv", "format": "csv", "columns": columns}})


def _ingest(cfg: Path):
    return ingest_source(load_config(cfg), "orders", MONTHS, key=KEY)


def _file(lines: list[str]) -> str:
    return HEADER + "\n" + "".join(ln + "\n" for ln in lines)


# -- accounting -----------------------------------------------------------------------------------
@SETTINGS
@given(lines=lines_of(plain_garbage))
def test_every_line_is_kept_quarantined_or_a_removed_duplicate(lines):
    with tempfile.TemporaryDirectory() as d:
        res = _ingest(_project(Path(d), {"orders.csv": _file(lines)}, event_id=True))
    for r in res.values():
        assert r.balanced, r.stats()
    kept = [n for r in res.values() for n in r.events["source_row"].to_list()]
    quarantined = [n for r in res.values() for n in r.quarantine["source_row"].to_list()]
    dups = sum(r.duplicates for r in res.values())
    # data lines of the file: line 1 is the header; a line is one record here (no quotes generated)
    records = [i for i, ln in enumerate(lines, start=2) if ln.removesuffix("\r") != ""]
    assert len(kept) + len(quarantined) == len(set(kept) | set(quarantined)), "a line counted twice"
    assert set(kept) | set(quarantined) <= set(records)
    assert len(records) == len(kept) + len(quarantined) + dups
    assert sum(r.rows_read for r in res.values()) == len(records)


@SETTINGS
@given(lines=lines_of(any_garbage))
def test_accounting_holds_for_any_bytes_including_quotes(lines):
    text = _file(lines)
    with tempfile.TemporaryDirectory() as d:
        res = _ingest(_project(Path(d), {"orders.csv": text}, event_id=True))
    for r in res.values():
        assert r.balanced, r.stats()
    rows = [n for r in res.values() for n in [*r.events["source_row"], *r.quarantine["source_row"]]]
    assert len(rows) == len(set(rows)), "a record counted twice"
    n_lines = text.count("\n") + 1
    assert all(2 <= n <= n_lines for n in rows)
    # as many records as Python's csv module finds (non-empty ones), neither more nor fewer
    expected = sum(1 for rec in csv.reader(io.StringIO(text.split("\n", 1)[1], newline="")) if rec)
    if all(ln.count('"') % 2 == 0 for ln in text.split("\n")):
        expected = sum(1 for ln in text.split("\n")[1:] if ln.removesuffix("\r"))
    assert sum(r.rows_read for r in res.values()) == expected


# -- order and file split invariance --------------------------------------------------------------
def _canonical(res) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    events = {m: r.events.drop("source_file", "source_row") for m, r in res.items()}
    events = pl.concat([e.with_columns(pl.lit(m).alias("month")) for m, e in events.items()])
    quarantine = pl.concat([r.quarantine.drop("source_file", "source_row") for r in res.values()])
    totals = {k: sum(r.stats()[k] for r in res.values()) for k in next(iter(res.values())).stats()}
    return events.sort(pl.all()), quarantine.sort(pl.all()), totals


@SETTINGS
@given(
    lines=lines_of(plain_garbage.filter(lambda s: "\r" not in s), with_id=False),
    data=st.data(),
)
def test_output_does_not_depend_on_row_order_or_file_split(lines, data):
    order = data.draw(st.permutations(range(len(lines))))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(lines)), max_size=3)))
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        base = _canonical(_ingest(_project(root, {"orders.csv": _file(lines)}, event_id=False)))
        shuffled = _canonical(_ingest(_project(root, {"orders.csv": _file([lines[i] for i in order])}, event_id=False)))
        bounds = [0, *cuts, len(lines)]
        parts = {f"orders_{i}.csv": _file(lines[a:b]) for i, (a, b) in enumerate(zip(bounds, bounds[1:]))}
        split = _canonical(_ingest(_project(root, parts, event_id=False)))
    for other in (shuffled, split):
        assert_frame_equal(other[0], base[0])
        assert_frame_equal(other[1], base[1])
        assert other[2] == base[2]


# -- segments -------------------------------------------------------------------------------------
def _column(rng: np.random.Generator, dtype: pl.DataType, n: int, null_share: float, scale: float) -> pl.Series:
    """Random values of ``dtype`` (nulls at ``null_share``; a small value pool to force ties)."""
    if dtype == pl.Float64:
        values = rng.choice(np.round(rng.exponential(scale, size=5), 2), size=n).tolist()
    elif dtype == pl.Int64:
        values = rng.choice(rng.integers(0, max(int(scale), 1) + 1, size=5), size=n).tolist()
    elif dtype == pl.Boolean:
        values = rng.choice([True, False], size=n).tolist()
    elif dtype == pl.Date:
        values = [dt.date(2024, 1, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 420, size=n)]
    elif isinstance(dtype, pl.Datetime):
        values = [dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(hours=int(h)) for h in rng.integers(0, 10_000, size=n)]
    elif dtype == pl.String:
        values = rng.choice(["web", "app", "email", "toys", "high", "low"], size=n).tolist()
    else:  # nested columns: empty
        return pl.Series([None] * n, dtype=dtype)
    mask = rng.random(n) < null_share
    return pl.Series([None if m else v for v, m in zip(values, mask)], dtype=dtype)


@st.composite
def feature_frames(draw):
    """Feature frames with every column of the contract: random sizes, nulls, ties, anonymous visitors."""
    n = draw(st.integers(min_value=0, max_value=40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    null_share = draw(st.sampled_from([0.0, 0.3, 1.0]))
    scale = draw(st.sampled_from([0.0, 1.0, 50.0, 1e6]))
    schema = feature_schema(FeaturesConfig())
    cols = {c: _column(rng, t, n, null_share, scale) for c, t in schema.items()}
    cols["customer_id"] = pl.Series([f"c{i:03d}" for i in rng.permutation(n)], dtype=pl.String)
    cols["identity"] = pl.Series(rng.choice(["customer", "contact", "anonymous"], size=n).tolist(), dtype=pl.String)
    cols["snapshot_month"] = pl.Series([dt.date(2025, 3, 1)] * n, dtype=pl.Date)
    return pl.DataFrame(cols, schema=schema)


@settings(max_examples=max(EXAMPLES * 5 // 8, 1), deadline=None)
@given(fit_on=feature_frames(), later=feature_frames(), k_min=st.integers(2, 4), k_extra=st.integers(0, 2))
def test_every_customer_has_exactly_one_membership_row(fit_on, later, k_min, k_extra):
    """Every customer of a snapshot gets exactly one membership row with a label in every scheme,
    whether the cluster model was fitted on this snapshot, carried forward from another, or absent."""
    cfg = SegmentsConfig(clustering=ClusteringConfig(k_min=k_min, k_max=k_min + k_extra, silhouette_sample=100))
    known = clusterable(fit_on)
    model = fit_cluster_model(known, cfg.clustering) if known.height > cfg.clustering.k_max else None
    for features in (fit_on, later):
        members = build_membership(features, model, cfg)
        assert members["customer_id"].to_list() == sorted(features["customer_id"].to_list())
        assert members["customer_id"].n_unique() == members.height
        for column in SCHEMES.values():
            assert members[column].null_count() == 0, column
