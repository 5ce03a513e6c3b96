"""Feature store: hand-computed expectations per family, window edges, BTYD, incremental = scratch."""

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from segpipe.config import FeaturesConfig
from segpipe.contract import EVENT_SCHEMA
from segpipe.features import (
    FEATURES,
    build_activity_daily,
    build_activity_monthly,
    build_features,
    feature_schema,
    from_cents,
    keep_current,
    update_customer_state,
)
from segpipe.timeutil import month_key, month_range, month_start, next_month

UTC = dt.timezone.utc
SPEC = FeaturesConfig()


def ev(cid: str, when: str, etype: str = "order", source: str | None = None, amount: float | None = None,
       category: str | None = None, channel: str | None = None, detail: str | None = None) -> dict:
    src = source or {"order": "orders", "page_view": "web"}.get(etype, "email" if etype.startswith("email") else "product")
    t = dt.datetime.fromisoformat(when).replace(tzinfo=UTC)
    return {"event_id": f"{cid}-{when}-{etype}", "customer_id": cid, "event_time": t, "source": src,
            "event_type": etype, "amount": amount if amount is not None else (10.0 if etype == "order" else None),
            "quantity": None, "category": category, "channel": channel, "detail": detail}


def frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=EVENT_SCHEMA)


def incremental_features(events: pl.DataFrame, months: list[str], spec: FeaturesConfig = SPEC,
                         anonymous: tuple[str, ...] = ()):
    """Run the incremental path month by month, exactly as the assets do: yields (month, features
    as a LazyFrame, built only when collected)."""
    state, dailies, monthlies = None, [], []
    for m in months:
        lo = dt.datetime.fromisoformat(m).replace(tzinfo=UTC)
        mev = events.filter(pl.col("event_time").dt.truncate("1mo") == lo).lazy()
        d = build_activity_daily(mev, spec=spec).collect()
        mo = build_activity_monthly(mev, month=m, daily=d.lazy()).collect()
        ident = pl.concat([d.select("customer_id"), mo.select("customer_id")] +
                          ([state.select("customer_id")] if state is not None else [])).unique().select(
            "customer_id", pl.when(pl.col("customer_id").is_in(list(anonymous))).then(pl.lit("anonymous"))
            .otherwise(pl.lit("customer")).alias("identity")).lazy()
        state = update_customer_state(state.lazy() if state is not None else None, d.lazy(), mo.lazy(), spec=spec,
                                      identity=ident, month=m,
                                      history=pl.concat(monthlies).lazy() if monthlies else None).collect()
        dailies.append(d)
        monthlies.append(mo)
        # identity kinds from the state, as the customer_features asset does
        yield m, build_features(state.lazy(), pl.concat(dailies).lazy(), pl.concat(monthlies).lazy(), None,
                                month=m, spec=spec)


def features_for(events: pl.DataFrame, month: str, spec: FeaturesConfig = SPEC, first: str | None = None,
                 anonymous: tuple[str, ...] = ()) -> pl.DataFrame:
    """Features of ``month`` by the incremental path from ``first`` (default: the first event's month)."""
    keys = month_range(first or month_key(events["event_time"].min()), month)
    return list(incremental_features(events, keys, spec, anonymous))[-1][1].collect()


def row(f: pl.DataFrame, cid: str) -> dict:
    return f.filter(pl.col("customer_id") == cid).row(0, named=True)


def test_every_family_is_present_and_defined():
    families = {fam for fam, _ in FEATURES.values()} - {"id"}
    assert families == {"purchase", "usage", "occasion", "benefits", "loyalty", "journey", "channel", "intent"}
    assert all(desc.strip() for _, desc in FEATURES.values())
    assert set(feature_schema(SPEC)) == set(FEATURES) | {"orders_share_holiday"}


def test_window_edges_at_the_snapshot_boundary():
    f = features_for(frame([
        ev("A", "2025-06-30 23:59:59"),          # last second of June: inside 7/30-day windows
        ev("A", "2025-06-01 00:00:00"),          # first instant of the 30-day window (July 1 - 30 days)
        ev("A", "2025-05-31 23:59:59"),          # just outside 30 days, inside 90
        ev("A", "2025-07-01 00:00:00"),          # July: not part of the June snapshot
    ]), "2025-06", first="2025-05")
    a = row(f, "A")
    assert (a["orders_30d"], a["orders_90d"], a["orders_lifetime"]) == (2, 3, 3)
    assert a["active_days_7d"] == 1 and a["active_days_30d"] == 2
    assert a["recency_days"] == pytest.approx(1 / 86400)
    assert a["last_order_date"] == dt.date(2025, 6, 30)


def test_single_order_customer_btyd():
    f = features_for(frame([ev("B", "2025-06-10 12:00:00", amount=42.0)]), "2025-06")
    b = row(f, "B")
    assert (b["frequency"], b["recency"], b["T"], b["monetary_value"]) == (0, 0, 20, 0.0)
    assert b["repeat_buyer"] is False and b["inter_purchase_days"] is None
    assert b["avg_order_value"] == 42.0 and b["purchase_days"] == 1


def test_btyd_in_lifetimes_convention_across_months_and_same_day_orders():
    f = features_for(frame([
        ev("C", "2025-04-03 08:00:00", amount=5.0),
        ev("C", "2025-04-03 20:00:00", amount=7.0),   # same day as the first: one period
        ev("C", "2025-05-10 10:00:00", amount=20.0),
        ev("C", "2025-06-20 10:00:00", amount=10.0),
        ev("C", "2025-06-20 11:00:00", amount=30.0),  # same day: that period's value is 40
    ]), "2025-06")
    c = row(f, "C")
    assert c["frequency"] == 2
    assert c["recency"] == (dt.date(2025, 6, 20) - dt.date(2025, 4, 3)).days
    assert c["T"] == (dt.date(2025, 6, 30) - dt.date(2025, 4, 3)).days
    assert c["monetary_value"] == pytest.approx((20.0 + 40.0) / 2)
    assert c["orders_lifetime"] == 5 and c["purchase_days"] == 3
    assert c["inter_purchase_days"] == pytest.approx(c["recency"] / 2)


def test_leap_day_windows():
    f = features_for(frame([
        ev("L", "2024-01-30 12:00:00"),   # 31 days before 2024-03-01: outside 30 days
        ev("L", "2024-01-31 00:00:00"),   # exactly 30 days before: inside
        ev("L", "2024-02-29 18:00:00"),
    ]), "2024-02", first="2024-01")
    l_ = row(f, "L")
    assert l_["orders_30d"] == 2 and l_["orders_90d"] == 3
    assert l_["T"] == 30  # Jan 30 -> Feb 29 (leap day counted)
    assert l_["recency"] == 30 and l_["frequency"] == 2


def test_time_zone_moves_weekday_and_part_of_day():
    rows = [ev("Z", "2025-06-07 03:00:00", "login")]  # Saturday 03:00 UTC = Friday 23:00 in New York
    utc = row(features_for(frame(rows), "2025-06"), "Z")
    ny = row(features_for(frame(rows), "2025-06", spec=FeaturesConfig(timezone="America/New_York")), "Z")
    assert (utc["weekend_share_90d"], utc["night_share_90d"], utc["evening_share_90d"]) == (1.0, 1.0, 0.0)
    assert (ny["weekend_share_90d"], ny["night_share_90d"], ny["evening_share_90d"]) == (0.0, 0.0, 1.0)


def test_usage_channel_intent_and_journey_families():
    events = frame([
        ev("U", "2025-06-01 09:00:00", "signup", detail=None),
        ev("U", "2025-06-02 09:00:00", "login"),
        ev("U", "2025-06-02 09:05:00", "feature_used", detail="reports"),
        ev("U", "2025-06-25 09:05:00", "feature_used", detail="export"),
        ev("U", "2025-06-26 10:00:00", "invite_sent"),
        ev("U", "2025-06-28 10:00:00", "login"),
        ev("U", "2025-06-20 10:00:00", "email_sent", detail="c1"),
        ev("U", "2025-06-20 11:00:00", "email_open", detail="c1"),
        ev("U", "2025-06-21 10:00:00", "email_sent", detail="c2"),
        ev("U", "2025-06-29 10:00:00", "page_view", detail="/pricing"),
        ev("U", "2025-06-30 10:00:00", "page_view", detail="/pricing/plans"),
        ev("U", "2025-06-30 10:01:00", "page_view", detail="/cart"),
        ev("U", "2025-06-30 10:02:00", "page_view", detail="/product/toys/1"),
        ev("U", "2025-06-30 10:03:00", "page_view", detail="/product/toys/1"),
        ev("U", "2025-06-30 10:04:00", "email_unsubscribe"),
        ev("Q", "2025-04-02 10:00:00"),  # a buyer who has done nothing for 89 days
    ])
    f = features_for(events, "2025-06", first="2025-04")
    u, q = row(f, "U"), row(f, "Q")
    assert (u["logins_7d"], u["logins_30d"], u["features_used_lifetime"], u["invites_30d"]) == (1, 2, 2, 1)
    assert u["app_days_30d"] == 5 and u["signed_up"] and u["first_key_action_date"] == dt.date(2025, 6, 2)
    assert u["expansion"] and not u["regular_use"]
    assert (u["emails_sent_90d"], u["email_open_rate_30d"], u["email_click_rate_30d"]) == (2, 0.5, 0.0)
    assert u["unsubscribed"]
    # activity: 6 app events + 1 open + 5 page views = 12 (sends and the unsubscribe are not activity)
    assert u["app_share_90d"] == pytest.approx(6 / 12) and u["web_share_90d"] == pytest.approx(5 / 12)
    assert u["preferred_channel"] == "app"
    assert (u["pricing_views_7d"], u["cart_views_14d"], u["cart_no_order_14d"]) == (2, 1, True)
    assert (u["product_views_30d"], u["product_views_repeat_30d"]) == (2, 1)
    # a customer without activity in the windows keeps his row: 0 counts, null rates
    assert (q["orders_30d"], q["active_days_30d"], q["logins_30d"]) == (0, 0, 0)
    assert q["email_open_rate_90d"] is None and q["usage_tier"] == "non-user"
    assert q["lapsed"] is False and q["orders_90d"] == 1


def test_loyalty_and_benefits():
    events = frame([
        ev("G", "2024-12-01 10:00:00", amount=100.0, category="toys", detail="XMAS"),
        ev("G", "2024-12-20 10:00:00", amount=50.0, category="books"),
        ev("G", "2025-03-05 10:00:00", amount=50.0, category="toys"),
        ev("G", "2025-03-06 10:00:00", "login"),
    ])
    g = row(features_for(events, "2025-06", first="2024-12"), "G")
    assert g["dominant_category"] == "toys"
    assert {d["category"]: d["share"] for d in g["category_share"]} == {"books": 0.25, "toys": 0.75}
    assert g["discount_share_365d"] == pytest.approx(1 / 3)
    assert g["orders_share_holiday"] == pytest.approx(2 / 3)   # Dec 1 and Dec 20 fall in 11-15..12-31
    assert g["repeat_buyer"] and g["active_months_12"] == 2  # December and March
    assert g["longest_gap_days"] == (dt.date(2025, 3, 5) - dt.date(2024, 12, 20)).days - 1
    assert g["lapsed"] is True  # last activity Mar 6, more than 90 days before Jul 1


def test_usage_tiers_by_quantiles():
    rows = []
    for i, days in enumerate([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]):
        rows += [ev(f"T{i}", f"2025-06-{d + 1:02d} 10:00:00", "login") for d in range(days)]
    rows.append(ev("N", "2025-06-05 10:00:00"))
    f = features_for(frame(rows), "2025-06")
    tiers = dict(zip(f["customer_id"], f["usage_tier"]))
    assert tiers["N"] == "non-user"
    assert [tiers[f"T{i}"] for i in range(10)] == ["light"] * 4 + ["medium"] * 3 + ["heavy"] * 3


def test_customers_stay_in_later_snapshots():
    f = features_for(frame([ev("E", "2025-01-15 10:00:00")]), "2025-06", first="2025-01")
    e = row(f, "E")
    assert e["orders_lifetime"] == 1 and e["orders_90d"] == 0 and e["recency_days"] == pytest.approx(166.583333, abs=1e-5)


def test_idle_anonymous_visitors_leave_the_snapshot_after_the_retention():
    """Known customers stay for ever; a cookie never linked to anyone stays while it was active in
    the last anonymous_retention_days (90 by default), and comes back when it returns."""
    rows = [ev("K", "2025-01-10 10:00:00", "page_view"), ev("A", "2025-01-10 10:00:00", "page_view"),
            ev("B", "2025-03-20 10:00:00", "page_view")]
    april = features_for(frame(rows), "2025-04", first="2025-01", anonymous=("A", "B"))
    assert april["customer_id"].to_list() == ["B", "K"]  # A idle since 10 Jan: 110 days at 30 Apr
    march = features_for(frame(rows), "2025-03", first="2025-01", anonymous=("A", "B"))
    assert march["customer_id"].to_list() == ["A", "B", "K"]  # 80 days at 31 Mar
    back = features_for(frame([*rows, ev("A", "2025-05-02 10:00:00", "page_view")]), "2025-05", first="2025-01",
                        anonymous=("A", "B"))
    # A was dropped from the state at the end of April, so it starts over in May
    assert row(back, "A")["tenure_days"] < 30 and "A" in back["customer_id"].to_list()
    keep = features_for(frame(rows), "2025-04", SPEC.model_copy(update={"anonymous_retention_days": None}),
                        first="2025-01", anonymous=("A", "B"))
    assert keep["customer_id"].to_list() == ["A", "B", "K"]


def stitched_sample(root: Path, *, months: int, start: str, customers: int) -> pl.DataFrame:
    """Events of a generated sample, ingested and stitched with the library."""
    from segpipe.config import load_config
    from segpipe.identity import build_identity_map, identity_links, stitch_events
    from segpipe.ingest import ingest_source
    from segpipe.sample import generate_sample

    import yaml
    generate_sample(root / "data" / "sample", customers=customers, months=months, start=start, seed=3, bad_row_share=0)
    cfg = yaml.safe_load((Path(__file__).resolve().parent.parent / "segpipe.yaml").read_text())
    cfg["first_month"] = start
    (root / "segpipe.yaml").write_text(yaml.safe_dump(cfg))
    config = load_config(root / "segpipe.yaml")
    keys = month_range(start, month_key(next_month(month_start(start), months - 1)))
    ingested = pl.concat([r.events for s in config.sources for r in ingest_source(config, s, keys, key=b"k").values()])
    imap = build_identity_map(identity_links(ingested.lazy()))
    return stitch_events(ingested.lazy(), imap.lazy()).select(list(EVENT_SCHEMA)).collect()


@pytest.fixture(scope="module")
def sample_events(tmp_path_factory) -> pl.DataFrame:
    """Five months of a small generated sample."""
    return stitched_sample(tmp_path_factory.mktemp("fsample"), months=5, start="2024-11", customers=400)


def test_btyd_equals_a_direct_per_customer_computation(sample_events):
    f = features_for(sample_events, "2025-03", first="2024-11")
    end_day = dt.date(2025, 3, 31)
    orders = sample_events.filter(pl.col("event_type") == "order").with_columns(day=pl.col("event_time").dt.date())
    checked = 0
    for (cid,), grp in orders.group_by("customer_id"):
        per_day = {}
        for d, amt in zip(grp["day"], grp["amount"]):
            per_day[d] = per_day.get(d, 0.0) + amt
        days = sorted(per_day)
        freq = len(days) - 1
        expected = (freq, (days[-1] - days[0]).days if freq else 0, (end_day - days[0]).days,
                    sum(per_day[d] for d in days[1:]) / freq if freq else 0.0)
        r = row(f, cid)
        assert (r["frequency"], r["recency"], r["T"]) == expected[:3], cid
        assert r["monetary_value"] == pytest.approx(expected[3]), cid
        checked += 1
    assert checked > 100


def test_incremental_features_equal_a_from_scratch_build(sample_events):
    incremental = features_for(sample_events, "2025-03", first="2024-11")
    lazy = sample_events.lazy()
    daily = build_activity_daily(lazy, spec=SPEC)
    monthly = pl.concat([build_activity_monthly(lazy.filter(pl.col("event_time").dt.strftime("%Y-%m") == m[:7]), month=m,
                                                spec=SPEC)
                         for m in month_range("2024-11", "2025-03")])
    state = update_customer_state(None, daily, monthly, spec=SPEC)
    ident = state.select("customer_id", pl.lit("customer").alias("identity"))
    scratch = build_features(state, daily, monthly, ident, month="2025-03-01", spec=SPEC).collect()
    assert incremental.height > 300
    assert_frame_equal(incremental, scratch)


def test_docs_feature_table_is_current():
    from segpipe.features import features_markdown

    path = Path(__file__).resolve().parent.parent / "docs" / "features.md"
    assert path.read_text() == features_markdown(), "regenerate: python -m segpipe.features > docs/features.md"


def test_long_windows_from_monthly_blocks_equal_day_windows(sample_events):
    """Windows of 90 days and more are summed from whole months plus the partial first month's day
    rows; they must equal the plain sum of the day rows inside the window, for snapshots whose
    window edges fall mid-month (90 days before 1 Feb is 3 Nov; 365 days before 1 Mar 2025 is 1 Mar 2024)."""
    daily = build_activity_daily(sample_events.lazy(), spec=SPEC).collect()
    for month in ("2025-01", "2025-02", "2025-03"):
        f = features_for(sample_events, month, first="2024-11")
        end = next_month(month_start(month_key(month))).date()

        def win(col: str, days: int, d=daily, end=end) -> pl.Expr:
            inside = (pl.col("day") >= end - dt.timedelta(days=days)) & (pl.col("day") < end)
            return pl.col(col).filter(inside).sum()

        ref = daily.group_by("customer_id").agg(
            win("orders", 90).alias("orders_90d"), win("orders", 365).alias("orders_365d"),
            ((pl.col("revenue").filter((pl.col("day") >= end - dt.timedelta(days=90)) & (pl.col("day") < end)) * 100)
             .round(0).cast(pl.Int64).sum() / 100).alias("revenue_90d"),
            ((pl.col("activity") > 0) & (pl.col("day") >= end - dt.timedelta(days=90)) & (pl.col("day") < end))
            .sum().alias("active_days_90d"),
            win("email_opens", 90).alias("opens"), win("emails_sent", 90).alias("sent"),
            win("app_activity", 90).alias("app_90"), win("activity", 90).alias("act_90"),
            win("discount_orders", 365).alias("disc_365"),
        )
        got = f.join(ref, on="customer_id", how="left")
        got = got.with_columns(pl.col([c for c in got.columns if c.endswith("_right")] +
                                      ["opens", "sent", "app_90", "act_90", "disc_365"]).fill_null(0))
        assert got.height > 300
        for mine, theirs in (("orders_90d", "orders_90d_right"), ("orders_365d", "orders_365d_right"),
                             ("revenue_90d", "revenue_90d_right"), ("active_days_90d", "active_days_90d_right")):
            diff = got.filter((pl.col(mine).cast(pl.Float64) - pl.col(theirs).cast(pl.Float64)).abs() > 1e-9)
            assert diff.height == 0, (month, mine, diff.select("customer_id", mine, theirs).head())
        rate = got.filter(pl.col("sent") > 0)
        assert (rate["email_open_rate_90d"] - rate["opens"] / rate["sent"]).abs().max() < 1e-9
        share = got.filter(pl.col("act_90") > 0)
        assert (share["app_share_90d"] - share["app_90"] / share["act_90"]).abs().max() < 1e-9
        disc = got.filter(pl.col("orders_365d") > 0)
        assert (disc["discount_share_365d"] - disc["disc_365"] / disc["orders_365d"]).abs().max() < 1e-9


def test_monthly_rollups_of_an_older_lake_are_completed_from_their_daily_rows(sample_events):
    """A lake written before the window counters existed keeps working after an upgrade: the missing
    columns come from the month's daily rollup; without it, the error says what to rebuild."""
    from segpipe.features import MONTHLY_SCHEMA, WINDOW_COUNTERS, complete_monthly

    lazy = sample_events.lazy().filter(pl.col("event_time").dt.strftime("%Y-%m") == "2025-02")
    daily = build_activity_daily(lazy, spec=SPEC)
    new = build_activity_monthly(lazy, month="2025-02-01", daily=daily).collect()
    old = new.drop("active_days", *WINDOW_COUNTERS)
    assert complete_monthly(old.lazy(), daily, month="2025-02-01").collect().equals(new)
    assert complete_monthly(new.lazy(), None, month="2025-02-01").collect().columns == list(MONTHLY_SCHEMA)
    with pytest.raises(ValueError, match=r"customer_activity_monthly 2025-02 lacks .*rebuild the month"):
        complete_monthly(old.lazy(), None, month="2025-02-01")


@pytest.fixture(scope="module")
def long_sample(tmp_path_factory) -> pl.DataFrame:
    """17 months (Nov 2023 - Mar 2025): the running 6- and 12-month sums fill, then months leave them,
    across the leap day of 2024."""
    return stitched_sample(tmp_path_factory.mktemp("lsample"), months=17, start="2023-11", customers=250)


def test_running_sums_keep_long_windows_exact_as_months_leave_them(long_sample):
    """The 180/365-day windows and the month-granular features come from running sums that add the
    new month and subtract the month leaving. Month by month they must equal (a) a from-scratch build
    over all events so far and (b) plain sums of the events inside each window, including the
    snapshots whose 365-day window starts on the 2nd because it holds 29 February 2024."""
    ev = long_sample.with_columns(day=pl.col("event_time").dt.date())
    months = month_range("2023-11", "2025-03")
    checked = 0
    for m, snapshot in incremental_features(long_sample, months):
        inc = snapshot.collect()
        end = next_month(month_start(m)).date()
        if m >= "2024-10-01":  # (a) at least 12 months of history: every span has lost months
            upto = long_sample.filter(pl.col("event_time") < next_month(month_start(m))).lazy()
            daily = build_activity_daily(upto, spec=SPEC)
            monthly = pl.concat([build_activity_monthly(upto.filter(pl.col("event_time").dt.strftime("%Y-%m") == k[:7]),
                                                        month=k, spec=SPEC) for k in month_range("2023-11", m)])
            state = update_customer_state(None, daily, monthly, spec=SPEC)
            scratch = build_features(state, daily, monthly, state.select("customer_id", pl.lit("customer").alias("identity")),
                                     month=m, spec=SPEC).collect()
            assert_frame_equal(inc, scratch)
        # (b) plain event sums inside the windows
        orders = ev.filter(pl.col("event_type") == "order")
        inside = lambda days: (pl.col("day") >= end - dt.timedelta(days=days)) & (pl.col("day") < end)  # noqa: E731
        ref = orders.group_by("customer_id").agg(
            inside(365).sum().alias("o365"),
            (pl.col("amount").filter(inside(365)) * 100).round(0).cast(pl.Int64).sum().alias("c365"),
        )
        first12 = next_month(month_start(m), -11).date()
        did = (pl.col("event_type").is_in(["order", "email_open", "email_click"]) | pl.col("source").is_in(["product", "web"]))
        active = ev.filter(did & (pl.col("day") >= first12) & (pl.col("day") < end)).group_by("customer_id").agg(
            pl.col("day").dt.truncate("1mo").n_unique().alias("m12"))
        cats = (orders.filter((pl.col("day") >= first12) & (pl.col("day") < end))
                .group_by("customer_id", pl.col("category").fill_null("unknown"))
                .agg((pl.col("amount") * 100).round(0).cast(pl.Int64).sum().alias("c"))
                .sort("customer_id", "c", "category", descending=[False, True, False])
                .group_by("customer_id", maintain_order=True).agg(pl.col("category").first().alias("dom")))
        got = (inc.join(ref, on="customer_id", how="left").join(active, on="customer_id", how="left")
               .join(cats, on="customer_id", how="left").with_columns(pl.col("o365", "c365", "m12").fill_null(0)))
        assert (got["orders_365d"] == got["o365"]).all(), m
        assert ((got["revenue_365d"] * 100).round(0).cast(pl.Int64) == got["c365"]).all(), m
        assert (got["active_months_12"] == got["m12"]).all(), m
        assert (got["dominant_category"].fill_null("-") == got["dom"].fill_null("-")).all(), m
        checked += got.height
    assert checked > 2000


def _monthly_states(events: pl.DataFrame, months: list[str], *, shuffle: bool = False):
    """(month, daily rows, monthly rows, state) of the incremental path, as the customer_state asset
    runs it (every id a customer). ``shuffle`` hands every input over in a random row order."""
    state, monthlies = None, []
    for i, m in enumerate(months):
        mev = events.filter(pl.col("event_time").dt.truncate("1mo") == month_start(m)).lazy()
        d = build_activity_daily(mev, spec=SPEC).collect()
        mo = build_activity_monthly(mev, month=m, daily=d.lazy()).collect()
        ids = pl.concat([d.select("customer_id")] + ([state.select("customer_id")] if state is not None else [])).unique()
        ident = ids.with_columns(pl.lit("customer").alias("identity"))
        prev, dd = state, d
        if shuffle:
            prev = state.sample(fraction=1.0, shuffle=True, seed=i) if state is not None else None
            dd = d.sample(fraction=1.0, shuffle=True, seed=100 + i)
        state = update_customer_state(prev.lazy() if prev is not None else None, dd.lazy(), mo.lazy(), spec=SPEC,
                                      identity=ident.lazy(), month=m,
                                      history=pl.concat(monthlies).lazy() if monthlies else None).collect()
        monthlies.append(mo)
        yield m, d, mo, state


def test_dominant_category_of_a_tie_is_the_first_in_alphabetical_order():
    """Three categories bought in reverse alphabetical order over three months, two of them tied for
    the most spend: the dominant category is the first of the tie in alphabetical order, the shares
    come in category order."""
    events = frame([
        ev("H", "2025-02-03 10:00:00", amount=30.0, category="toys"),
        ev("H", "2025-03-03 10:00:00", amount=30.0, category="fashion"),
        ev("H", "2025-04-03 10:00:00", amount=30.0, category="books"),
        ev("H", "2025-04-04 10:00:00", amount=10.0, category="toys"),
        ev("H", "2025-04-05 10:00:00", amount=10.0, category="fashion"),
    ])
    h = row(features_for(events, "2025-04", first="2025-02"), "H")
    assert h["dominant_category"] == "fashion"  # 40 in fashion and toys, 30 in books
    assert [d["category"] for d in h["category_share"]] == ["books", "fashion", "toys"]
    assert [d["share"] for d in h["category_share"]] == pytest.approx([0.27272727, 0.36363636, 0.36363636])


def test_keep_current_drops_merged_ids_and_idle_visitors_in_the_state_order():
    """The previous state keeps its row order (its merge relies on it), gets each id's kind of the
    month, and loses the ids stitching merged away and the anonymous visitors idle for longer than
    the retention (90 days before the end of 2025-03 is 2025-01-01)."""
    ts = lambda y, m, d: dt.datetime(y, m, d, tzinfo=UTC)  # noqa: E731
    state = pl.DataFrame({
        "customer_id": ["c9", "a1", "m5", "a2", "b3"],  # deliberately not sorted
        "last_seen": [ts(2024, 1, 5), ts(2024, 12, 31), ts(2025, 3, 1), ts(2025, 1, 1), ts(2024, 12, 1)],
        "identity": ["customer", "anonymous", "contact", "anonymous", "anonymous"],
        "orders": [3, 0, 1, 0, 0],
    }, schema_overrides={"last_seen": pl.Datetime("us", "UTC")})
    identity = pl.DataFrame({"customer_id": ["a1", "a2", "b3", "c9", "z0"],  # m5 merged into another id
                             "identity": ["anonymous", "anonymous", "contact", "customer", "anonymous"]})
    out = keep_current(state.lazy(), identity.lazy(), month="2025-03-01", spec=SPEC).collect()
    # c9: a customer idle for a year stays; a1: anonymous, idle since before 2025-01-01, leaves; m5: merged
    # away; a2: anonymous, last seen exactly on the cut, stays; b3 is idle too, but its group gained an
    # email: the kind of the month (contact), not the state's (anonymous), decides, so it stays
    assert out.select("customer_id", "identity", "orders").rows() == [
        ("c9", "customer", 3), ("a2", "anonymous", 0), ("b3", "contact", 0)]
    kept = keep_current(state.lazy(), identity.lazy(), month="2025-03-01",
                        spec=FeaturesConfig(anonymous_retention_days=None)).collect()
    assert kept["customer_id"].to_list() == ["c9", "a1", "a2", "b3"]


def test_incremental_state_equals_a_from_scratch_state(long_sample):
    """The monthly state update (the previous state's rows, the month's day rows and the months
    leaving the running sums folded in one group-by; the list columns kept in id order) gives,
    column for column, the state built in one go from all events so far."""
    months = month_range("2023-11", "2025-03")
    dailies, monthlies, checked = [], [], 0
    for m, d, mo, inc in _monthly_states(long_sample, months):
        dailies.append(d)
        monthlies.append(mo)
        if m not in ("2023-11-01", "2024-02-01", "2024-05-01", "2024-11-01", "2025-03-01"):
            continue
        daily = pl.concat(dailies)
        ident = daily.select("customer_id").unique().with_columns(pl.lit("customer").alias("identity"))
        scratch = update_customer_state(None, daily.lazy(), pl.concat(monthlies).lazy(), spec=SPEC,
                                        identity=ident.lazy(), month=m).collect()
        assert_frame_equal(inc, scratch)
        assert inc["customer_id"].is_sorted() and inc["customer_id"].is_unique().all()
        # what the fold must get right beyond sums: a customer without orders has no first-day revenue,
        # lists changed for some customers and kept for others
        assert inc.filter(pl.col("orders") == 0)["first_day_revenue"].null_count() == (inc["orders"] == 0).sum()
        checked += inc.height
    assert checked > 800
    assert (inc["features_used"].list.len() > 0).sum() > 50 and (inc["category_12m"].list.len() > 1).sum() > 20


def test_the_state_does_not_depend_on_the_order_of_its_input_rows(long_sample):
    """Rollups and states are written sorted, but an input in another order (a bucket written by
    an older segpipe, a hand-made file) must give the same state: the update sorts what is not."""
    months = month_range("2023-11", "2024-12")
    ordered = [s for *_, s in _monthly_states(long_sample, months)]
    shuffled = [s for *_, s in _monthly_states(long_sample, months, shuffle=True)]
    for m, a, b in zip(months, ordered, shuffled):
        assert_frame_equal(a, b)


def test_money_from_cents_is_the_exact_quotient_whatever_the_chunking():
    """Polars divides a column by a number as a multiplication by the inverse, except in a one-row
    column: 4330 / 100 came out as 43.300000000000004 or 43.3 depending on how the engine cut the
    rows. from_cents gives the double nearest to the quotient in every case."""
    import numpy as np

    values = np.random.default_rng(7).integers(-10**9, 10**9, 200_001).tolist() + [4330, 18745, 63181, 1, -1, 0]
    exact = [v / 100 for v in values]
    assert pl.DataFrame({"c": values}).select(from_cents(pl.col("c")))["c"].to_list() == exact
    for v in (4330, 18745):
        assert pl.DataFrame({"c": [v]}).select(from_cents(pl.col("c"))).item() == v / 100
        assert pl.DataFrame({"c": [v, v]}).select(from_cents(pl.col("c")))["c"].to_list() == [v / 100] * 2
    # and the state's money: 43.30 on one day, 144.15 the next
    events = frame([ev("A", "2025-01-05 10:00:00", amount=43.3), ev("A", "2025-01-06 10:00:00", amount=144.15),
                    ev("B", "2025-01-05 11:00:00", amount=43.3)])
    state = next(s for *_, s in _monthly_states(events, ["2025-01-01"]))
    assert state.select("customer_id", "revenue", "first_day_revenue").rows() == [
        ("A", 18745 / 100, 4330 / 100), ("B", 4330 / 100, 4330 / 100)]


def test_first_day_amount_packed_with_its_day_is_found_by_a_plain_min():
    """The state's first-order-day revenue is the min of day-and-cents packed in one integer (so a
    streaming group-by needs no row order): the packing must order by day whatever the amounts
    (negative ones too, days before 1970 too) and give the amount back exactly."""
    from segpipe.features import _cents_of, _day_and_cents

    days = [dt.date(1969, 12, 31), dt.date(1970, 1, 1), dt.date(2024, 2, 29), dt.date(2026, 10, 31)]
    amounts = [-(2**40) + 1, -1, 0, 1, 4330, 2**40 - 1]
    f = pl.DataFrame([(d, a) for d in days for a in amounts], schema={"day": pl.Date, "c": pl.Int64}, orient="row")
    packed = f.with_columns(k=_day_and_cents(pl.col("day"), pl.col("c")))
    assert packed.select(_cents_of(pl.col("k")))["k"].to_list() == f["c"].to_list()
    # any amount on an earlier day packs below every amount on a later day
    by_day = packed.group_by("day").agg(pl.col("k").min().alias("lo"), pl.col("k").max().alias("hi")).sort("day")
    assert (by_day["hi"].head(3) < by_day["lo"].tail(3)).all()
    shuffled = packed.sample(fraction=1.0, shuffle=True, seed=3).with_columns(g=pl.col("day") >= dt.date(2024, 1, 1))
    firsts = shuffled.group_by("g").agg(_cents_of(pl.col("k").min()).alias("c"), pl.col("day").min()).sort("g")
    assert firsts.rows() == [(False, -(2**40) + 1, dt.date(1969, 12, 31)), (True, -(2**40) + 1, dt.date(2024, 2, 29))]


def test_leap_day_365_day_window_starts_on_the_second():
    """365 days before 1 Apr 2024 is 2 Apr 2023: an order on 1 Apr 2023 is outside the window, one on
    2 Apr 2023 inside, although both are in the 12 months the running sums hold."""
    rows = [ev("L", "2023-04-01 12:00:00", amount=5.0), ev("L", "2023-04-02 12:00:00", amount=7.0),
            ev("L", "2024-03-10 12:00:00", amount=11.0)]
    f = features_for(frame(rows), "2024-03", first="2023-04")
    r = row(f, "L")
    assert (r["orders_365d"], r["revenue_365d"], r["active_months_12"]) == (2, 18.0, 2)
    g = row(features_for(frame(rows), "2024-04", first="2023-04"), "L")  # April 2023 has left the 12 months
    assert (g["orders_365d"], g["revenue_365d"], g["active_months_12"]) == (1, 11.0, 1)


def test_the_state_update_reads_its_inputs_from_files_as_the_asset_does(long_sample, tmp_path):
    """The asset hands the update scans of Parquet files (the previous state among them, read together
    with the month's inputs): each month's state from scans equals the one from frames in memory,
    also when the previous state's file is not sorted by id (a bucket of an older segpipe)."""
    months = month_range("2023-11", "2024-12")
    chain = list(_monthly_states(long_sample, months))  # the in-memory path, built once
    states = {m: s for m, *_, s in chain}
    monthlies = []
    for i, (m, d, mo, _) in enumerate(chain):
        files = {}
        for name, frame_ in (("daily", d), ("monthly", mo)):
            files[name] = tmp_path / f"{name}-{m}.parquet"
            frame_.write_parquet(files[name])
        if i:
            prev = states[months[i - 1]]
            files["previous"] = tmp_path / f"state-{months[i - 1]}.parquet"
            (prev.sample(fraction=1.0, shuffle=True, seed=i) if i % 2 else prev).write_parquet(files["previous"])
        ident = pl.concat([d.select("customer_id")] + ([states[months[i - 1]].select("customer_id")] if i else [])
                          ).unique().with_columns(pl.lit("customer").alias("identity"))
        got = update_customer_state(
            pl.scan_parquet(files["previous"]) if i else None, pl.scan_parquet(files["daily"]),
            pl.scan_parquet(files["monthly"]), spec=SPEC, identity=ident.lazy(), month=m,
            history=pl.concat([pl.scan_parquet(f) for f in monthlies]) if monthlies else None).collect()
        assert_frame_equal(got, states[m])
        monthlies.append(files["monthly"])
    assert states[months[-1]].height > 100 and states[months[-1]]["orders_12m"].sum() > 0


def test_a_state_written_before_the_running_sums_is_upgraded_from_the_rollups(long_sample):
    """A lake whose customer_state predates the running sums keeps working: the next month rebuilds
    them from the 12 monthly rollups before it, and from then on the state equals one built with
    running sums all along. Without those rollups the error says what is missing."""
    from segpipe.features import ROLLING_SCHEMA, leaving_months

    def month_rows(m: str):
        mev = long_sample.filter(pl.col("event_time").dt.strftime("%Y-%m") == m[:7]).lazy()
        d = build_activity_daily(mev, spec=SPEC).collect()
        return d, build_activity_monthly(mev, month=m, daily=d.lazy()).collect()

    months = month_range("2023-11", "2025-01")
    rollups = {m: month_rows(m) for m in months}
    states = {}
    for i, m in enumerate(months):
        d, mo = rollups[m]
        prev = states.get(months[i - 1]) if i else None
        hist = [rollups[k][1] for k in leaving_months(m) if k in rollups]
        states[m] = update_customer_state(prev.lazy() if prev is not None else None, d.lazy(), mo.lazy(), spec=SPEC,
                                          month=m, history=pl.concat(hist).lazy() if hist else None).collect()
    old = states["2024-11-01"].drop(*ROLLING_SCHEMA)
    d, mo = rollups["2024-12-01"]
    with pytest.raises(ValueError, match="lacks the running sums"):
        update_customer_state(old.lazy(), d.lazy(), mo.lazy(), spec=SPEC, month="2024-12-01").collect()
    twelve = pl.concat([rollups[k][1] for k in month_range("2023-12", "2024-11")]).lazy()  # M-12 .. M-1
    upgraded = update_customer_state(old.lazy(), d.lazy(), mo.lazy(), spec=SPEC, month="2024-12-01",
                                     history=twelve).collect()
    assert_frame_equal(upgraded, states["2024-12-01"])
    assert upgraded["orders_12m"].sum() > 0 and upgraded["category_12m"].list.len().sum() > 0


def test_ids_merged_into_another_customer_leave_the_state():
    """When identity stitching links an anonymous id to a customer, the old id is no longer in the
    identity map: it leaves the state at once instead of lingering as a duplicate visitor."""
    jan = frame([ev("C", "2025-01-05 10:00:00"), ev("sp-x", "2025-01-06 10:00:00", "page_view")])
    feb = frame([ev("C", "2025-02-05 10:00:00", "page_view")])
    state = None
    for m, events, ids in (("2025-01-01", jan, {"C": "customer", "sp-x": "anonymous"}), ("2025-02-01", feb, {"C": "customer"})):
        d = build_activity_daily(events.lazy(), spec=SPEC).collect()
        mo = build_activity_monthly(events.lazy(), month=m, daily=d.lazy()).collect()
        ident = pl.DataFrame({"customer_id": list(ids), "identity": list(ids.values())}).lazy()
        state = update_customer_state(state.lazy() if state is not None else None, d.lazy(), mo.lazy(), spec=SPEC,
                                      identity=ident, month=m).collect()
        if m == "2025-01-01":
            assert state["customer_id"].to_list() == ["C", "sp-x"]
    assert state["customer_id"].to_list() == ["C"]
    assert state["orders"].to_list() == [1] and state["active_months_12m"].to_list() == [2]
