"""Tests of the deterministic sample-data generator (segpipe.sample)."""
from __future__ import annotations

import ast
import csv
import io
import json
from collections import Counter
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from segpipe import sample
from segpipe.sample import generate_sample

ORDERS_COLS = ["order_id", "customer_id", "email", "ordered_at", "order_total", "items",
               "category", "channel", "discount_code"]
PRODUCT_KEYS = ["event_uuid", "user_id", "ts", "event_name", "feature", "platform",
                "account_email"]
EMAIL_COLS = ["message_id", "recipient", "event", "occurred_at", "campaign"]
WEB_SCHEMA = {"view_id": pl.String, "anonymous_id": pl.String, "customer_id": pl.String,
              "viewed_at": pl.Datetime("us", "UTC"), "page_path": pl.String,
              "device": pl.String}

CUSTOMERS, MONTHS, SHARE = 600, 21, 0.02


# ------------------------------------------------------------------------------------
# parsing helpers: raw files -> classified rows (independent of the generator's code)
# ------------------------------------------------------------------------------------
def _parse_ts(text: str, fmt: str) -> datetime | None:
    try:
        return datetime.strptime(text, fmt)
    except (ValueError, TypeError):
        return None


def _ts_kind(ts: datetime | None, history: tuple[int, int]) -> str | None:
    if ts is None:
        return "bad_timestamp"
    if ts.year == 2031:
        return "future_timestamp"
    if ts.year == 2019:
        return "past_timestamp"
    assert history[0] <= ts.year <= history[1], ts
    return None


def _dups(keys: list) -> int:
    return sum(c - 1 for c in Counter(keys).values())


def _orders_file(path: Path, history) -> tuple[list[dict], Counter]:
    text = path.read_text()
    lines = text.split("\n")
    if lines[-1] == "":
        lines = lines[:-1]
    assert next(csv.reader([lines[0]])) == ORDERS_COLS
    kinds: Counter = Counter()
    clean: list[dict] = []
    body = lines[1:]
    seen: set[str] = set()
    for line in body:
        if line in seen:  # exact duplicates are counted below, kept once
            continue
        seen.add(line)
        row = next(csv.reader([line]))
        if len(row) == len(ORDERS_COLS) + 1:
            kinds["extra_delimiter"] += 1
            continue
        if len(row) < len(ORDERS_COLS):
            kinds["truncated_line"] += 1
            assert line is body[-1] and not text.endswith("\n")
            continue
        rec = dict(zip(ORDERS_COLS, row))
        ts = _parse_ts(rec["ordered_at"], "%Y-%m-%d %H:%M:%S")
        kind = _ts_kind(ts, history)
        if kind is None and float(rec["order_total"]) < 0:
            kind = "negative_total"
        if kind is None and rec["customer_id"] == "":
            kind = "null_key"
        if kind:
            kinds[kind] += 1
        else:
            rec["ts"] = ts
            clean.append(rec)
    kinds["duplicate"] = _dups(body)
    return clean, kinds


def _product_file(path: Path, history) -> tuple[list[dict], Counter]:
    kinds: Counter = Counter()
    clean: list[dict] = []
    lines = path.read_text().splitlines()
    for line in dict.fromkeys(lines):  # exact duplicates are counted below, kept once
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            kinds["invalid_json"] += 1
            continue
        assert list(rec) == PRODUCT_KEYS
        ts = _parse_ts(rec["ts"], "%Y-%m-%dT%H:%M:%SZ")
        kind = _ts_kind(ts, history)
        if kind is None and rec["user_id"] in (None, ""):
            kind = "null_key"
        if kind is None and rec["event_name"] not in sample.PRODUCT_EVENTS:
            assert rec["event_name"] == "teleport"
            kind = "unknown_enum"
        if kind:
            kinds[kind] += 1
        else:
            rec["ts"] = ts
            clean.append(rec)
    kinds["duplicate"] = _dups(lines)
    return clean, kinds


def _email_file(path: Path, history) -> tuple[list[dict], Counter]:
    kinds: Counter = Counter()
    clean: list[dict] = []
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == EMAIL_COLS
    for row in dict.fromkeys(tuple(r) for r in rows[1:]):  # duplicates kept once
        rec = dict(zip(EMAIL_COLS, row))
        ts = _parse_ts(rec["occurred_at"], "%Y-%m-%dT%H:%M:%S")
        kind = _ts_kind(ts, history)
        if kind is None and rec["recipient"] == "":
            kind = "null_key"
        if kind is None and rec["event"] not in sample.EMAIL_EVENTS:
            assert rec["event"] == "bounced"
            kind = "unknown_enum"
        if kind:
            kinds[kind] += 1
        else:
            rec["ts"] = ts
            clean.append(rec)
    kinds["duplicate"] = _dups([tuple(r) for r in rows[1:]])
    return clean, kinds


def _web_file(path: Path, history) -> tuple[pl.DataFrame, Counter]:
    df = pl.read_parquet(path)
    assert dict(df.schema) == WEB_SCHEMA
    year = df["viewed_at"].dt.year()
    kinds = Counter({
        "null_timestamp": df["viewed_at"].null_count(),
        "future_timestamp": int((year == 2031).sum()),
        "past_timestamp": int((year == 2019).sum()),
        "duplicate": df.height - df.unique().height,
    })
    clean = df.filter(pl.col("viewed_at").dt.year().is_between(*history)).unique(
        maintain_order=True)
    assert clean.height == df.height - sum(kinds.values())
    return clean, kinds


class Data:
    """Generated data set + clean rows of every source, parsed once per module."""

    def __init__(self, out: Path, manifest: dict):
        self.out, self.manifest = out, manifest
        self.months = manifest["months"]
        years = [int(m[:4]) for m in self.months]
        self.history = (min(years), max(years))
        self.gt = pl.read_parquet(out / "ground_truth" / "customers.parquet")
        self.kinds: dict[str, dict[str, Counter]] = {s: {} for s in sample.SOURCES}
        self.rows_in_file: dict[str, int] = {}
        orders, product, email, web = [], [], [], []
        for i, label in enumerate(self.months):
            for src, rel, parse, sink in (
                ("orders", f"orders/orders_{label}.csv", _orders_file, orders),
                ("product", f"product/events_{label}.jsonl", _product_file, product),
                ("email", f"email/email_{label}.csv", _email_file, email),
            ):
                clean, kinds = parse(out / rel, self.history)
                for r in clean:
                    r["file_month"] = i
                sink.extend(clean)
                self.kinds[src][rel] = kinds
            rel = f"web/pageviews_{label}.parquet"
            clean, kinds = _web_file(out / rel, self.history)
            web.append(clean.with_columns(file_month=pl.lit(i)))
            self.kinds["web"][rel] = kinds
        self.orders = pl.DataFrame(orders).with_columns(
            pl.col("order_total").cast(pl.Float64), pl.col("items").cast(pl.Int64),
            pl.col("discount_code").replace("", None))
        self.product = pl.DataFrame(product, infer_schema_length=None)
        self.email = pl.DataFrame(email)
        self.web = pl.concat(web)
        for df in (self.orders, self.product, self.email):
            assert df.height > 0

    def month_of(self, col: str = "ts") -> pl.Expr:
        return (pl.col(col).dt.year() - int(self.months[0][:4])) * 12 + \
            pl.col(col).dt.month() - int(self.months[0][5:7])

    def arch(self, name: str) -> pl.DataFrame:
        return self.gt.filter(pl.col("archetype") == name)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Data:
    out = tmp_path_factory.mktemp("sample")
    manifest = generate_sample(out, customers=CUSTOMERS, months=MONTHS, seed=7,
                               bad_row_share=SHARE)
    return Data(out, manifest)


# ------------------------------------------------------------------------------------
# determinism, files, manifest
# ------------------------------------------------------------------------------------
def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_same_arguments_give_byte_identical_files(tmp_path):
    kw = dict(customers=300, months=6, start="2025-09", seed=11, bad_row_share=0.02)
    m1 = generate_sample(tmp_path / "a", **kw)
    m2 = generate_sample(tmp_path / "b", **kw)
    f1, f2 = _all_files(tmp_path / "a"), _all_files(tmp_path / "b")
    assert m1 == m2
    assert len(f1) == 4 * 6 + 2  # 4 sources x 6 months + ground truth + manifest
    assert f1.keys() == f2.keys()
    for name in f1:
        assert f1[name] == f2[name], name
    m3 = generate_sample(tmp_path / "c", **{**kw, "seed": 12})
    f3 = _all_files(tmp_path / "c")
    assert f3.keys() == f1.keys()
    differing = [n for n in f1 if f1[n] != f3[n]]
    assert len(differing) == len(f1)
    assert m3["parameters"]["seed"] == 12


def test_regenerating_into_same_dir_replaces_files_atomically(tmp_path):
    kw = dict(customers=120, months=3, seed=3)
    generate_sample(tmp_path, **kw)
    before = _all_files(tmp_path)
    generate_sample(tmp_path, **kw)
    assert _all_files(tmp_path) == before
    leftovers = [p for p in tmp_path.rglob("*") if p.name.startswith(".") or
                 p.name.endswith(".tmp")]
    assert leftovers == []


def test_every_file_exists_and_manifest_matches(data: Data):
    man, out = data.manifest, data.out
    assert json.loads((out / "manifest.json").read_text()) == man
    assert man["parameters"] == {"customers": CUSTOMERS, "months": MONTHS,
                                 "start": "2024-11", "seed": 7, "bad_row_share": SHARE}
    assert data.months[0] == "2024-11" and data.months[-1] == "2026-07"
    assert len(man["files"]) == 4 * MONTHS
    for rel, info in man["files"].items():
        assert (out / rel).is_file(), rel
        assert info["rows"] == man["row_counts"][info["source"]][info["month"]]
    # row counts as written (data lines / parquet rows incl. bad and malformed ones)
    for label in data.months:
        web = pl.read_parquet(out / f"web/pageviews_{label}.parquet")
        assert man["row_counts"]["web"][label] == web.height
        lines = (out / f"product/events_{label}.jsonl").read_text().splitlines()
        assert man["row_counts"]["product"][label] == len(lines)
        for src, rel in (("orders", f"orders/orders_{label}.csv"),
                         ("email", f"email/email_{label}.csv")):
            lines = (out / rel).read_text().splitlines()
            assert man["row_counts"][src][label] == len(lines) - 1  # header
    for src in sample.SOURCES:
        assert man["total_rows"][src] == sum(man["row_counts"][src].values())
    assert man["ground_truth"]["rows"] == data.gt.height == man["customers_total"]
    assert man["drift"]["applied"] and man["drift"]["month"] == data.months[18]
    assert "bargain_hunters" in man["drift"]["description"]
    cohort = man["drift"]["new_cohort"]
    assert cohort["applied"] and cohort["month"] == data.months[19]
    assert cohort["archetype"] == "mobile_app_newcomers"


def test_files_parse_with_expected_columns(data: Data):
    first = data.months[0]
    orders = pl.read_csv(data.out / f"orders/orders_{first}.csv", infer_schema=False)
    assert orders.columns == ORDERS_COLS
    email = pl.read_csv(data.out / f"email/email_{first}.csv", infer_schema=False)
    assert email.columns == EMAIL_COLS
    product = pl.read_ndjson(data.out / f"product/events_{first}.jsonl")
    assert product.columns == PRODUCT_KEYS
    assert dict(data.gt.schema) == {
        "customer_id": pl.String, "archetype": pl.String, "email": pl.String,
        "app_user_id": pl.String, "anonymous_ids": pl.List(pl.String),
        "first_active_month": pl.String, "has_orders": pl.Boolean}
    # value formats and vocabularies of the clean rows
    o = data.orders
    assert o["order_id"].str.contains(r"^O\d{8}$").all()
    assert o["customer_id"].str.contains(r"^C\d{7}$").all()
    assert o["email"].str.contains(r"^[a-z]+\.[a-z]+\d+@example\.(com|org|net)$").all()
    assert o["order_total"].min() > 0 and o["items"].min() >= 1
    assert set(o["category"]) == set(sample.ORDER_CATEGORIES)
    assert set(o["channel"]) == set(sample.ORDER_CHANNELS)
    assert o["order_id"].is_unique().all()
    p = data.product
    assert p["event_uuid"].is_unique().all()
    assert p["event_uuid"].str.contains(
        r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$").all()
    assert p["user_id"].str.contains(r"^u_[0-9a-f]{8}$").all()
    assert set(p["event_name"]) == set(sample.PRODUCT_EVENTS)
    assert set(p["platform"]) <= set(sample.PLATFORMS)
    feat = p.filter(pl.col("event_name") == "feature_used")["feature"]
    assert feat.null_count() == 0 and set(feat) <= set(sample.FEATURES)
    assert p.filter(pl.col("event_name") != "feature_used")["feature"].null_count() == \
        p.filter(pl.col("event_name") != "feature_used").height
    e = data.email
    assert set(e["event"]) == set(sample.EMAIL_EVENTS)
    assert e["campaign"].str.contains(
        r"^\d{4}-\d{2}-(newsletter|promo|black-friday|holiday-gifts|welcome)$").all()
    w = data.web
    assert w["anonymous_id"].str.contains(r"^a_[0-9a-f]{12}$").all()
    assert w["view_id"].is_unique().all()
    assert set(w["device"]) == set(sample.DEVICES)
    assert w["page_path"].str.contains(
        r"^(/|/pricing|/cart|/checkout|/product/[a-z]+/\d+|/blog/[a-z0-9-]+)$").all()
    assert w["customer_id"].null_count() > 0


def test_no_dagster_import():
    tree = ast.parse(Path(sample.__file__).read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not any(n.split(".")[0] == "dagster" for n in names)


# ------------------------------------------------------------------------------------
# bad rows
# ------------------------------------------------------------------------------------
def test_bad_row_counts_in_manifest_match_files(data: Data):
    man = data.manifest
    for src in sample.SOURCES:
        total = Counter()
        for rel, kinds in data.kinds[src].items():
            expected = {k: v for k, v in man["files"][rel]["bad_rows"].items() if v}
            assert {k: v for k, v in kinds.items() if v} == expected, rel
            total.update(kinds)
        assert {k: v for k, v in total.items() if v} == \
            {k: v for k, v in man["bad_rows"][src].items() if v}
        # every documented kind is exercised at this size/share
        assert set(man["bad_rows"][src]) == set(sample.BAD_ROW_KINDS[src])
        assert all(v > 0 for v in man["bad_rows"][src].values()), (src, man["bad_rows"][src])
        # about bad_row_share of the rows
        bad = sum(man["bad_rows"][src].values())
        assert 0.5 * SHARE < bad / man["total_rows"][src] < 1.6 * SHARE, src


def test_malformed_lines_are_where_documented(data: Data):
    man = data.manifest
    stray = f"orders/orders_{data.months[5]}.csv"
    assert man["files"][stray]["bad_rows"]["extra_delimiter"] == 1
    last = data.out / f"orders/orders_{data.months[-1]}.csv"
    assert not last.read_bytes().endswith(b"\n")
    assert man["files"][f"orders/orders_{data.months[-1]}.csv"]["bad_rows"][
        "truncated_line"] == 1
    assert man["files"][f"product/events_{data.months[11]}.jsonl"]["bad_rows"][
        "invalid_json"] == 1
    # polars needs to be told about the ragged line
    with pytest.raises(Exception):
        pl.read_csv(data.out / stray, infer_schema=False)
    # future/past rows sit in monthly files whose name does not match their timestamp
    assert man["bad_rows"]["orders"]["future_timestamp"] > 0


def test_no_bad_rows_when_share_is_zero(tmp_path):
    man = generate_sample(tmp_path, customers=200, months=7, seed=5, bad_row_share=0.0)
    assert all(v == 0 for src in man["bad_rows"].values() for v in src.values())
    years = (2024, 2025)
    for label in man["months"]:
        _, k = _orders_file(tmp_path / f"orders/orders_{label}.csv", years)
        assert sum(k.values()) == 0
        _, k = _product_file(tmp_path / f"product/events_{label}.jsonl", years)
        assert sum(k.values()) == 0
        _, k = _email_file(tmp_path / f"email/email_{label}.csv", years)
        assert sum(k.values()) == 0
        _, k = _web_file(tmp_path / f"web/pageviews_{label}.parquet", years)
        assert sum(k.values()) == 0
    for src in sample.SOURCES:
        assert man["clean_row_counts"][src] == man["row_counts"][src]


def test_invalid_arguments_rejected(tmp_path):
    with pytest.raises(ValueError):
        generate_sample(tmp_path, customers=0)
    with pytest.raises(ValueError):
        generate_sample(tmp_path, customers=10, bad_row_share=0.9)


# ------------------------------------------------------------------------------------
# planted behaviour
# ------------------------------------------------------------------------------------
def test_archetype_shares_near_targets(data: Data):
    counts = data.gt.group_by("archetype").len()
    got = dict(zip(counts["archetype"], counts["len"]))
    for name, share in sample.ARCHETYPE_SHARES.items():
        assert abs(got[name] / CUSTOMERS - share) <= 0.01, name
    assert abs(got["mobile_app_newcomers"] / CUSTOMERS - 0.06) <= 0.01
    assert data.gt.height == CUSTOMERS + got["mobile_app_newcomers"]
    assert data.gt["customer_id"].is_unique().all() and data.gt["email"].is_unique().all()
    app = data.gt["app_user_id"].drop_nulls()
    assert app.is_unique().all()
    assert data.gt["anonymous_ids"].explode().drop_nulls().is_unique().all()
    assert data.gt["anonymous_ids"].list.len().max() <= 3


def test_email_only_customers_never_order_or_log_in(data: Data):
    eo = data.arch("email_only")
    assert eo.height > 0
    assert not eo["has_orders"].any()
    assert eo["app_user_id"].null_count() == eo.height
    assert eo["anonymous_ids"].list.len().max() == 0
    ids, mails = set(eo["customer_id"]), set(eo["email"])
    assert not ids & set(data.orders["customer_id"])
    assert not mails & set(data.orders["email"])
    # also none of the raw rows, bad ones included
    for label in data.months:
        raw = (data.out / f"orders/orders_{label}.csv").read_text()
        assert not any(m in raw for m in list(mails)[:50])
    assert not ids & set(data.web["customer_id"].drop_nulls())
    assert not mails & set(data.product["account_email"].drop_nulls())
    # but they do engage with email
    eng = data.email.filter(pl.col("recipient").is_in(list(mails)) &
                            pl.col("event").is_in(["open", "click"]))
    assert eng["recipient"].n_unique() > 0.5 * eo.height


def test_has_orders_matches_orders(data: Data):
    ordered = set(data.orders["customer_id"])
    gt = data.gt.with_columns(seen=pl.col("customer_id").is_in(list(ordered)))
    assert (gt["seen"] == gt["has_orders"]).all()


def test_each_app_user_has_exactly_one_signup(data: Data):
    p = data.product
    gt_app = data.gt.filter(pl.col("app_user_id").is_not_null())
    assert set(p["user_id"]) == set(gt_app["app_user_id"])
    signups = p.filter(pl.col("event_name") == "signup")
    assert signups["user_id"].is_unique().all()
    assert signups.height == gt_app.height
    joined = signups.join(gt_app, left_on="user_id", right_on="app_user_id")
    assert (joined["account_email"] == joined["email"]).all()
    assert p.filter(pl.col("event_name") != "signup")["account_email"].null_count() == \
        p.filter(pl.col("event_name") != "signup").height
    # the signup is the user's first event, in the month they start using the app
    first = p.group_by("user_id").agg(pl.col("ts").min().alias("first_ts"))
    j = signups.join(first, on="user_id")
    assert (j["ts"] == j["first_ts"]).all()
    assert (j["file_month"] == j.select(data.month_of()).to_series()).all()
    # the raw files (bad rows included) also hold exactly one signup per app user
    raw = []
    for label in data.months:
        for line in (data.out / f"product/events_{label}.jsonl").read_text().splitlines():
            if '"event_name":"signup"' in line:
                raw.append(json.loads(line)["user_id"])
    assert sorted(raw) == sorted(gt_app["app_user_id"])


def test_anonymous_cookies_get_identified_later(data: Data):
    w = data.web.with_columns(month=data.month_of("viewed_at"))
    per = w.group_by("anonymous_id").agg(
        pl.col("month").filter(pl.col("customer_id").is_null()).min().alias("anon_first"),
        pl.col("month").filter(pl.col("customer_id").is_not_null()).min().alias("id_first"),
        pl.col("customer_id").drop_nulls().n_unique().alias("n_ids"),
        pl.col("customer_id").drop_nulls().first().alias("customer_id"),
    )
    assert per["n_ids"].max() == 1  # a cookie belongs to one customer
    late = per.filter(pl.col("anon_first") < pl.col("id_first"))
    web_customers = data.gt.filter(pl.col("anonymous_ids").list.len() > 0)
    assert late["customer_id"].n_unique() >= 0.2 * web_customers.height
    # the identification agrees with the ground truth
    truth = data.gt.select("customer_id", "anonymous_ids").explode("anonymous_ids")
    j = late.join(truth, left_on=["anonymous_id", "customer_id"],
                  right_on=["anonymous_ids", "customer_id"], how="inner")
    assert j.height == late.height
    # every planted cookie shows up; purely anonymous visitors exist too
    assert set(truth["anonymous_ids"].drop_nulls()) <= set(w["anonymous_id"])
    never = per.filter(pl.col("n_ids") == 0)["anonymous_id"]
    assert len(set(never) - set(truth["anonymous_ids"].drop_nulls())) > 0
    assert data.manifest["anonymous_visitors"] > 0
    # a customer has 1-3 cookies, and some have several
    n = web_customers["anonymous_ids"].list.len()
    assert n.min() >= 1 and n.max() == 3


def test_bargain_hunters_stop_ordering_after_drift(data: Data):
    o = data.orders.join(data.gt.select("customer_id", "archetype"), on="customer_id")
    o = o.with_columns(month=data.month_of())
    bh = o.filter(pl.col("archetype") == "bargain_hunters")
    assert bh.filter(pl.col("month") < 18).height > 100
    assert bh.filter(pl.col("month") >= 18).height == 0
    # other archetypes keep ordering
    assert o.filter((pl.col("month") >= 18) & (pl.col("archetype") == "loyal_regulars")).height


def test_mobile_app_newcomers_cohort(data: Data):
    nc = data.arch("mobile_app_newcomers")
    assert (nc["first_active_month"] == data.months[19]).all()
    assert nc["app_user_id"].null_count() == 0
    p = data.product.filter(pl.col("user_id").is_in(list(nc["app_user_id"])))
    assert p.select(data.month_of()).to_series().min() == 19
    per_user = p.height / nc.height / 2  # months 19 and 20
    others = data.arch("loyal_regulars").filter(pl.col("app_user_id").is_not_null())
    p2 = data.product.filter(pl.col("user_id").is_in(list(others["app_user_id"])) &
                             (pl.col("file_month") >= 19))
    assert per_user > 2 * p2.height / others.height / 2
    w = data.web.filter(pl.col("customer_id").is_in(list(nc["customer_id"])))
    assert (w["device"] == "mobile").mean() > 0.7
    assert set(p["platform"]) <= {"ios", "android"}


def test_archetype_behaviour(data: Data):
    o = data.orders.join(data.gt.select("customer_id", "archetype"), on="customer_id")
    stats = o.group_by("archetype").agg(
        pl.col("order_total").mean().alias("aov"),
        pl.col("discount_code").is_not_null().mean().alias("disc"),
        pl.len().alias("n"),
        pl.col("ordered_at").str.slice(5, 2).is_in(["11", "12"]).mean().alias("novdec"),
    )
    s = {r["archetype"]: r for r in stats.iter_rows(named=True)}
    assert s["champions"]["aov"] > 2 * s["bargain_hunters"]["aov"]
    assert s["bargain_hunters"]["disc"] > 0.6
    assert all(s[a]["disc"] < 0.4 for a in ("champions", "loyal_regulars", "power_users"))
    assert s["seasonal_gift_buyers"]["novdec"] > 0.6
    seas = o.filter(pl.col("archetype") == "seasonal_gift_buyers")
    assert seas["category"].is_in(["toys", "electronics", "books"]).mean() > 0.7
    per_cust = {a: s[a]["n"] / data.arch(a).height for a in s}
    assert per_cust["champions"] > 2 * per_cust["casual"]
    assert per_cust["window_shoppers"] < per_cust["loyal_regulars"] / 3
    assert per_cust["power_users"] < per_cust["loyal_regulars"] / 3
    # app usage: power users dominate, many features, invites
    p = data.product.join(data.gt.select("app_user_id", "archetype"), left_on="user_id",
                          right_on="app_user_id")
    ps = p.group_by("archetype").agg(
        (pl.len() / pl.col("user_id").n_unique()).alias("per_user"),
        pl.col("feature").n_unique().alias("features"),
        (pl.col("event_name") == "invite_sent").mean().alias("inv"))
    ps = {r["archetype"]: r for r in ps.iter_rows(named=True)}
    assert ps["power_users"]["per_user"] > 1.5 * ps["champions"]["per_user"]
    assert ps["power_users"]["per_user"] > 4 * ps["loyal_regulars"]["per_user"]
    assert ps["power_users"]["inv"] > 3 * ps["loyal_regulars"]["inv"]
    # window shoppers: many product / pricing / cart views, rarely checkout
    w = data.web.join(data.gt.select("customer_id", "archetype"), on="customer_id")
    ws = w.group_by("archetype").agg(
        pl.col("page_path").str.contains(r"^/(product|pricing|cart)").mean().alias("browse"),
        pl.len().alias("n"))
    ws = {r["archetype"]: r for r in ws.iter_rows(named=True)}
    assert ws["window_shoppers"]["browse"] > 0.8
    assert ws["window_shoppers"]["n"] / data.arch("window_shoppers").height > \
        2 * ws["loyal_regulars"]["n"] / data.arch("loyal_regulars").height
    # champions open emails more than casual customers
    e = data.email.join(data.gt.select("email", "archetype"), left_on="recipient",
                        right_on="email")
    opens = e.group_by("archetype").agg(
        ((pl.col("event") == "open").sum() / (pl.col("event") == "sent").sum()).alias("r"))
    opens = dict(zip(opens["archetype"], opens["r"]))
    assert opens["champions"] > 2 * opens["casual"]


def test_lapsing_activity_decays_to_nothing(data: Data):
    lap = data.arch("lapsing")
    o = data.orders.filter(pl.col("customer_id").is_in(list(lap["customer_id"])))
    months = o.select(data.month_of()).to_series()
    assert (months < 4).sum() > 5 * max((months >= 8).sum(), 1)
    assert (months >= 12).sum() == 0
    w = data.web.filter(pl.col("customer_id").is_in(list(lap["customer_id"])))
    assert w.filter(pl.col("file_month") >= 12).height == 0


def test_new_customers_first_appear_in_last_six_months(data: Data):
    nc = data.arch("new_customers")
    assert set(nc["first_active_month"]) <= set(data.months[-6:])
    o = data.orders.filter(pl.col("customer_id").is_in(list(nc["customer_id"])))
    assert o["file_month"].min() >= MONTHS - 6


def test_no_activity_before_first_active_month(data: Data):
    idx = {m: i for i, m in enumerate(data.months)}
    gt = data.gt.with_columns(
        first=pl.col("first_active_month").replace_strict(idx, return_dtype=pl.Int64))
    o = data.orders.join(gt, on="customer_id")
    assert (o["file_month"] >= o["first"]).all()
    p = data.product.join(gt, left_on="user_id", right_on="app_user_id")
    assert (p["file_month"] >= p["first"]).all()
    e = data.email.join(gt, left_on="recipient", right_on="email")
    assert (e["file_month"] >= e["first"]).all()
    # customers acquired inside the window get a welcome email in that month
    welcome = e.filter(pl.col("campaign").str.ends_with("-welcome") &
                       (pl.col("event") == "sent"))
    assert (welcome["file_month"] == welcome["first"]).all()
    assert welcome.height == welcome["recipient"].n_unique()
    acquired_later = gt.filter(pl.col("first") > 0)
    assert set(acquired_later["email"]) <= set(welcome["recipient"])
    truth = gt.select("first", "anonymous_ids").explode("anonymous_ids")
    w = data.web.join(truth, left_on="anonymous_id", right_on="anonymous_ids")
    assert (w["file_month"] >= w["first"]).all()


def test_email_sequences_are_consistent(data: Data):
    e = data.email
    assert e["message_id"].is_unique().all()  # one id per event row
    sends = e.filter(pl.col("event") == "sent").select(
        "recipient", "campaign", pl.col("ts").alias("sent_at"))
    assert sends.select("recipient", "campaign").is_unique().all()
    # opens / clicks / unsubscribes follow a send of the same campaign to the recipient
    follow = e.filter(pl.col("event") != "sent").join(sends, on=["recipient", "campaign"],
                                                      how="left")
    assert follow.height > 0
    assert follow["sent_at"].null_count() == 0
    assert (follow["ts"] > follow["sent_at"]).all()
    # clicks follow an open of the same campaign
    first_open = e.filter(pl.col("event") == "open").group_by("recipient", "campaign").agg(
        pl.col("ts").min().alias("open_at"))
    clicks = e.filter(pl.col("event") == "click").join(
        first_open, on=["recipient", "campaign"], how="left")
    assert clicks["open_at"].null_count() == 0 and (clicks["ts"] > clicks["open_at"]).all()
    # no sends after an unsubscribe
    unsub = e.filter(pl.col("event") == "unsubscribe").group_by("recipient").agg(
        pl.col("ts").min().alias("unsub_at"))
    assert unsub.height > 0
    later = e.filter(pl.col("event") == "sent").join(unsub, on="recipient").filter(
        pl.col("ts") > pl.col("unsub_at"))
    assert later.height == 0


def test_ids_are_unique_per_row_in_raw_files(data: Data):
    """The pipeline maps these ids to event_id: only exact duplicates may repeat one."""
    for src in sample.SOURCES:
        dup = data.manifest["bad_rows"][src]["duplicate"]
        assert dup > 0
    ids = {"orders": data.orders["order_id"], "product": data.product["event_uuid"],
           "email": data.email["message_id"], "web": data.web["view_id"]}
    for src, col in ids.items():
        assert col.is_unique().all(), src
    # raw email files: message_id repeats only on verbatim duplicate lines
    for label in data.months:
        with open(data.out / f"email/email_{label}.csv", newline="") as fh:
            rows = list(csv.reader(fh))[1:]
        by_id: dict[str, set] = {}
        for r in rows:
            by_id.setdefault(r[0], set()).add(tuple(r))
        assert all(len(v) == 1 for v in by_id.values())


def test_volume_per_customer_month_is_sane(data: Data):
    idx = {m: i for i, m in enumerate(data.months)}
    gt = data.gt.with_columns(
        active_months=MONTHS - pl.col("first_active_month").replace_strict(
            idx, return_dtype=pl.Int64))
    cm = gt.filter(pl.col("has_orders"))["active_months"].sum()
    assert 0.2 < data.orders.height / cm < 3.0
    am = gt.filter(pl.col("app_user_id").is_not_null())["active_months"].sum()
    assert 2 < data.product.height / am < 60
    assert 0.5 < data.email.height / gt["active_months"].sum() < 8
    wm = gt.filter(pl.col("anonymous_ids").list.len() > 0)["active_months"].sum()
    assert 0.5 < data.web.height / wm < 15
    per_cm = data.orders.group_by("customer_id", "file_month").len()["len"]
    assert per_cm.max() < 25
    per_um = data.product.group_by("user_id", "file_month").len()["len"]
    assert per_um.max() < 400


def test_timestamps_inside_their_file_month(data: Data):
    for df, col in ((data.orders, "ts"), (data.product, "ts"), (data.email, "ts")):
        assert (df.select(data.month_of(col)).to_series() == df["file_month"]).all()
    w = data.web.with_columns(month=data.month_of("viewed_at"))
    assert (w["month"] == w["file_month"]).all()


def test_csv_text_is_polars_readable_when_told_about_ragged_lines(data: Data):
    text = (data.out / f"orders/orders_{data.months[0]}.csv").read_text()
    df = pl.read_csv(io.StringIO(text), infer_schema=False)
    assert df.columns == ORDERS_COLS
    totals = df["order_total"].drop_nulls()
    assert totals.str.contains(r"^-?\d+\.\d{2}$").all()
