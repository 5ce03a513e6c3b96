"""The behavioral feature store: one row per customer per snapshot month, eight families.

Three incremental building blocks, each built from one month of events or from the previous
month's block, so refreshing a month costs that month's events plus the customer count, never a
rescan of history:

* :func:`build_activity_daily` — per customer and UTC day of the month: counts and sums, with the
  day's first and last event time (exact day windows come from these rows).
* :func:`build_activity_monthly` — per customer and month: activity, category spend, features used.
* :func:`update_customer_state` — cumulative lifetime state: the previous month's state merged with
  the month's daily rows.

:func:`build_features` joins the state with the daily rows of the last two months and of the
first months of the 90/180/365-day windows, and the monthly rows of the months the 90-day window
touches; the state carries running 6- and 12-month sums for the rest. A snapshot for month M is
"as of the end of M": windows of N days cover the UTC days ``[end - N days, end)`` where ``end`` is
the first day of M+1. Features marked *month-granular* in :data:`FEATURE_DEFINITIONS` count whole
calendar months.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from segpipe.config import FeaturesConfig
from segpipe.timeutil import month_start, next_month

_TS = pl.Datetime("us", "UTC")
CHANNELS = ("web", "app", "email", "store")
PARTS_OF_DAY = {"night": (0, 6), "morning": (6, 12), "afternoon": (12, 18), "evening": (18, 24)}

# -- daily rollup --------------------------------------------------------------------------------
DAILY_SCHEMA: dict[str, pl.DataType] = {
    "customer_id": pl.String(), "day": pl.Date(), "first_time": _TS, "last_time": _TS,
    "events": pl.UInt32(), "orders": pl.UInt32(), "revenue": pl.Float64(), "discount_orders": pl.UInt32(),
    "app_events": pl.UInt32(), "logins": pl.UInt32(), "feature_uses": pl.UInt32(), "invites": pl.UInt32(),
    "upgrades": pl.UInt32(), "signups": pl.UInt32(), "emails_sent": pl.UInt32(), "email_opens": pl.UInt32(),
    "email_clicks": pl.UInt32(), "unsubscribes": pl.UInt32(), "page_views": pl.UInt32(),
    "pricing_views": pl.UInt32(), "cart_views": pl.UInt32(), "product_views": pl.UInt32(),
    **{f"{c}_activity": pl.UInt32() for c in CHANNELS},
    **{f"{p}_activity": pl.UInt32() for p in PARTS_OF_DAY},
    "weekend_activity": pl.UInt32(), "activity": pl.UInt32(),
}


def cents(expr: pl.Expr) -> pl.Expr:
    """Money amounts as whole cents (Int64), so that sums are exact whatever their order."""
    return (expr * 100).round(0).cast(pl.Int64)


def from_cents(expr: pl.Expr) -> pl.Expr:
    """Whole cents back in currency units: the double nearest to ``cents / 100``.

    Polars divides a column by a number as a multiplication by its inverse (4330 / 100 gives
    43.300000000000004) but a one-row column exactly, so the last bit would depend on how the
    engine cut the rows into chunks; rounding to cents afterwards gives the exact quotient always.
    """
    return (expr.cast(pl.Float64) / 100).round(2)


def money_sum(expr: pl.Expr) -> pl.Expr:
    """Sum of money amounts in whole cents (exact integer arithmetic), back in currency units.

    Float sums depend on summation order in their last bits, which the streaming engine does not
    fix; summing integer cents makes every re-run byte-identical. Amounts are rounded to cents.
    """
    return from_cents(cents(expr).sum())


def _seasonal_columns(spec: FeaturesConfig) -> list[str]:
    return [f"orders_{w.name}" for w in spec.seasonal_windows]


def daily_schema(spec: FeaturesConfig) -> dict[str, pl.DataType]:
    """Schema of :func:`build_activity_daily` for this config (one column per seasonal window)."""
    return {**DAILY_SCHEMA, **{c: pl.UInt32() for c in _seasonal_columns(spec)}}


def _in_window(day: pl.Expr, start: str, end: str) -> pl.Expr:
    md = day.dt.strftime("%m-%d")
    return (md >= start) & (md <= end) if start <= end else (md >= start) | (md <= end)


def build_activity_daily(events: pl.LazyFrame, *, spec: FeaturesConfig) -> pl.LazyFrame:
    """Per customer and UTC day: counts and sums of the day's behavioral events.

    ``activity`` counts what the customer did (orders, app events, email opens and clicks, page
    views; not emails merely sent); channel and part-of-day columns split it.
    """
    et, src = pl.col("event_type"), pl.col("source").cast(pl.String)
    detail = pl.col("detail").fill_null("")
    is_order = et == "order"
    local = pl.col("event_time").dt.convert_time_zone(spec.timezone)
    hour = local.dt.hour()
    is_page = src == "web"
    acted = is_order | (src == "product") | et.is_in(["email_open", "email_click"]) | is_page
    channel = (
        pl.when(is_order).then(pl.col("channel").fill_null("web").replace({"online": "web"}))
        .when(src == "product").then(pl.lit("app"))
        .when(src == "email").then(pl.lit("email"))
        .otherwise(pl.lit("web"))
    )
    day = pl.col("event_time").dt.date()

    def n(cond: pl.Expr) -> pl.Expr:
        return cond.sum().cast(pl.UInt32)

    aggs = [
        pl.col("event_time").min().alias("first_time"),
        pl.col("event_time").max().alias("last_time"),
        pl.len().cast(pl.UInt32).alias("events"),
        n(is_order).alias("orders"),
        money_sum(pl.when(is_order).then(pl.col("amount"))).alias("revenue"),
        n(is_order & detail.str.contains(spec.discount_code)).alias("discount_orders"),
        n(src == "product").alias("app_events"),
        n(et == "login").alias("logins"),
        n(et == "feature_used").alias("feature_uses"),
        n(et == "invite_sent").alias("invites"),
        n(et == "upgrade").alias("upgrades"),
        n(et == "signup").alias("signups"),
        n(et == "email_sent").alias("emails_sent"),
        n(et == "email_open").alias("email_opens"),
        n(et == "email_click").alias("email_clicks"),
        n(et == "email_unsubscribe").alias("unsubscribes"),
        n(is_page).alias("page_views"),
        n(is_page & detail.str.contains(spec.pricing_page)).alias("pricing_views"),
        n(is_page & detail.str.contains(spec.cart_page)).alias("cart_views"),
        n(is_page & detail.str.contains(spec.product_page)).alias("product_views"),
        *[n(acted & (channel == c)).alias(f"{c}_activity") for c in CHANNELS],
        *[n(acted & (hour >= lo) & (hour < hi)).alias(f"{p}_activity") for p, (lo, hi) in PARTS_OF_DAY.items()],
        n(acted & (local.dt.weekday() >= 6)).alias("weekend_activity"),
        n(acted).alias("activity"),
        *[n(is_order & _in_window(local.dt.date(), w.start, w.end)).alias(f"orders_{w.name}")
          for w in spec.seasonal_windows],
    ]
    schema = daily_schema(spec)
    return (
        events.with_columns(day=day)
        .group_by("customer_id", "day")
        .agg(aggs)
        .select(list(schema))
        .cast(schema)
        .sort("customer_id", "day")
    )


# -- monthly rollup ------------------------------------------------------------------------------
#: Daily counters summed per month too, so that windows of 90 days and more read whole months from
#: the monthly rollup and day rows only for the window's partial first month.
WINDOW_COUNTERS = ("discount_orders", "logins", "invites", "upgrades", "emails_sent", "email_opens", "email_clicks",
                   *(f"{c}_activity" for c in CHANNELS), *(f"{p}_activity" for p in PARTS_OF_DAY), "weekend_activity")
MONTHLY_SCHEMA: dict[str, pl.DataType] = {
    "customer_id": pl.String(), "month": pl.Date(), "events": pl.UInt32(), "activity": pl.UInt32(),
    "orders": pl.UInt32(), "revenue": pl.Float64(),
    "category_revenue": pl.List(pl.Struct({"category": pl.String(), "orders": pl.UInt32(), "revenue": pl.Float64()})),
    "features_used": pl.List(pl.String()),
    "active_days": pl.UInt32(), **{c: pl.UInt32() for c in WINDOW_COUNTERS},
}


def _monthly_sums(daily: pl.LazyFrame) -> pl.LazyFrame:
    return daily.group_by("customer_id").agg(
        (pl.col("activity") > 0).sum().cast(pl.UInt32).alias("active_days"),
        *[pl.col(c).sum().cast(pl.UInt32) for c in WINDOW_COUNTERS],
    )


def complete_monthly(monthly: pl.LazyFrame, daily: pl.LazyFrame | None, *, month: str) -> pl.LazyFrame:
    """A monthly rollup with every column of :data:`MONTHLY_SCHEMA`. Rollups written before the
    window counters existed get them from the month's daily rows (so an upgraded lake keeps
    working without a rebuild); without those rows, a clear error says what to rebuild."""
    have = monthly.collect_schema().names()
    missing = [c for c in MONTHLY_SCHEMA if c not in have]
    if not missing:
        return monthly
    if daily is None:
        raise ValueError(f"customer_activity_monthly {month[:7]} lacks {missing} (written by an older segpipe) and "
                         f"its daily rollup is missing too: rebuild the month (segpipe run --from {month[:7]} ...)")
    return (monthly.select([c for c in have if c in MONTHLY_SCHEMA])
            .join(_monthly_sums(daily), on="customer_id", how="left")
            .select(list(MONTHLY_SCHEMA)).cast(MONTHLY_SCHEMA).sort("customer_id"))


def build_activity_monthly(events: pl.LazyFrame, *, month: str, daily: pl.LazyFrame | None = None,
                           spec: FeaturesConfig | None = None) -> pl.LazyFrame:
    """Per customer active in ``month``: activity, order revenue by category, distinct features used,
    and the month's sums of the daily counters (:data:`WINDOW_COUNTERS`, active days) from
    ``daily`` (:func:`build_activity_daily` of the month; built from ``events`` when omitted)."""
    if daily is None:
        daily = build_activity_daily(events, spec=spec or FeaturesConfig())
    sums = _monthly_sums(daily)
    is_order = pl.col("event_type") == "order"
    base = events.group_by("customer_id").agg(
        pl.len().cast(pl.UInt32).alias("events"),
        (is_order | (pl.col("source") == "product") | pl.col("event_type").is_in(["email_open", "email_click"])
         | (pl.col("source") == "web")).sum().cast(pl.UInt32).alias("activity"),
        is_order.sum().cast(pl.UInt32).alias("orders"),
        money_sum(pl.when(is_order).then(pl.col("amount"))).alias("revenue"),
        pl.col("detail").filter(pl.col("event_type") == "feature_used").drop_nulls().unique().sort().alias("features_used"),
    )
    cats = (
        events.filter(is_order)
        .group_by("customer_id", pl.col("category").fill_null("unknown"))
        .agg(pl.len().cast(pl.UInt32).alias("orders"), money_sum(pl.col("amount")).alias("revenue"))
        .sort("customer_id", "category")
        .group_by("customer_id")
        .agg(pl.struct("category", "orders", "revenue").sort_by(pl.col("category")).alias("category_revenue"))
    )
    return (
        base.join(cats, on="customer_id", how="left")
        .join(sums, on="customer_id", how="left")
        .with_columns(pl.lit(month_start(month).date()).alias("month"),
                      pl.col("category_revenue").fill_null(pl.lit([], dtype=MONTHLY_SCHEMA["category_revenue"])))
        .select(list(MONTHLY_SCHEMA))
        .cast(MONTHLY_SCHEMA)
        .sort("customer_id")
    )


# -- cumulative state ----------------------------------------------------------------------------
STATE_SCHEMA: dict[str, pl.DataType] = {
    "customer_id": pl.String(), "first_seen": _TS, "last_seen": _TS,
    "first_active_day": pl.Date(), "last_active_day": pl.Date(), "longest_gap_days": pl.Int64(),
    "first_order_time": _TS, "last_order_time": _TS, "first_order_day": pl.Date(), "last_order_day": pl.Date(),
    "orders": pl.Int64(), "order_days": pl.Int64(), "revenue": pl.Float64(), "first_day_revenue": pl.Float64(),
    "invites": pl.Int64(),
    "signup_time": _TS, "first_key_action_time": _TS, "first_expansion_time": _TS,
    "unsubscribed": pl.Boolean(), "features_used": pl.List(pl.String()),
    "identity": pl.String(),
}


#: Running sums over the last months, kept in the state so a snapshot reads a few monthly rollups,
#: not 12: column -> (monthly quantity, months M-n+1..M summed). ``cents`` is order revenue in
#: integer cents (exact under the add-and-subtract updates), ``active`` a month with any activity.
ROLLING_SPANS: dict[str, tuple[str, int]] = {
    "orders_12m": ("orders", 12), "cents_12m": ("cents", 12), "discount_orders_12m": ("discount_orders", 12),
    "cents_6m": ("cents", 6), "active_months_12m": ("active", 12), "active_months_6m": ("active", 6),
}
ROLLING_DESCRIPTIONS: dict[str, str] = {
    "orders_12m": "Orders in the 12 months up to this one (running sum).",
    "cents_12m": "Order revenue in integer cents, 12 months up to this one (running sum).",
    "discount_orders_12m": "Orders with a discount code, 12 months up to this one (running sum).",
    "cents_6m": "Order revenue in integer cents, 6 months up to this one (running sum).",
    "active_months_12m": "Months with any activity among the 12 up to this one (running sum).",
    "active_months_6m": "Months with any activity among the 6 up to this one (running sum).",
    "category_12m": "Orders and revenue (cents) per category, 12 months up to this one (running sum).",
}
_CATEGORY_12M = pl.List(pl.Struct({"category": pl.String(), "orders": pl.Int64(), "cents": pl.Int64()}))
ROLLING_SCHEMA: dict[str, pl.DataType] = {**{c: pl.Int64() for c in ROLLING_SPANS}, "category_12m": _CATEGORY_12M}
#: Months whose rollups leave the running sums when month M comes in (M-12 and M-6).
LEAVING_OFFSETS = tuple(sorted({n for _, n in ROLLING_SPANS.values()}, reverse=True))


def _state_schema(spec: FeaturesConfig) -> dict[str, pl.DataType]:
    return {**STATE_SCHEMA, **{c: pl.Int64() for c in _seasonal_columns(spec)}, **ROLLING_SCHEMA}


def leaving_months(month: str) -> list[str]:
    """Partition keys of the monthly rollups :func:`update_customer_state` subtracts for ``month``."""
    return [next_month(month_start(month), -n).strftime("%Y-%m-%d") for n in LEAVING_OFFSETS]


def _month_quantities(monthly: pl.LazyFrame) -> pl.LazyFrame:
    """``customer_id, month`` and the quantities the running sums add up, from monthly rollups."""
    return monthly.select(
        "customer_id", "month", pl.col("orders").cast(pl.Int64), cents(pl.col("revenue")).alias("cents"),
        pl.col("discount_orders").cast(pl.Int64), (pl.col("activity") > 0).cast(pl.Int64).alias("active"),
    )


def _month_categories(monthly: pl.LazyFrame) -> pl.LazyFrame:
    """``customer_id, month, category, orders, cents`` from the rollups' category lists."""
    return (monthly.select("customer_id", "month", "category_revenue").explode("category_revenue")
            .unnest("category_revenue").drop_nulls("category")
            .select("customer_id", "month", "category", pl.col("orders").cast(pl.Int64),
                    cents(pl.col("revenue")).alias("cents")))


def _rolling(parts: list[pl.LazyFrame], cats: list[pl.LazyFrame]) -> pl.LazyFrame:
    """Sum signed running-sum rows per customer (columns of :data:`ROLLING_SPANS`) and signed
    category rows per customer and category into :data:`ROLLING_SCHEMA` columns."""
    sums = pl.concat(parts, how="vertical").group_by("customer_id").agg(pl.col(list(ROLLING_SPANS)).sum())
    return sums.join(_category_lists(pl.concat(cats, how="vertical")), on="customer_id", how="full", coalesce=True)


def _span_rows(q: pl.LazyFrame, weight) -> pl.LazyFrame:
    """Running-sum rows from month quantities ``q``: each column of :data:`ROLLING_SPANS` gets its
    quantity times ``weight(n)`` (a number or an expression, ``n`` the span's months)."""
    return q.select("customer_id", *[(pl.col(src) * weight(n)).cast(pl.Int64).alias(col)
                                     for col, (src, n) in ROLLING_SPANS.items()])


def rolling_from_monthly(monthly: pl.LazyFrame, *, month: str) -> pl.LazyFrame:
    """The running sums as of the end of ``month`` straight from the monthly rollups (of at least
    the 12 months up to ``month``): the from-scratch build, and the upgrade of a state written before
    the running sums existed."""
    m = month_start(month)
    rows = monthly.filter((pl.col("month") <= m.date()) & (pl.col("month") >= next_month(m, -11).date()))
    inside = {n: next_month(m, -n + 1).date() for _, n in ROLLING_SPANS.values()}
    return _rolling([_span_rows(_month_quantities(rows), lambda n: (pl.col("month") >= inside[n]).cast(pl.Int64))],
                    [_month_categories(rows).drop("month")])


def _leaving(previous: pl.LazyFrame, history: pl.LazyFrame | None, *, month: str) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """What leaves the running sums with ``month``: rows of the columns of :data:`ROLLING_SPANS`
    with the amounts to subtract (negated), and the category rows of month M-12 with negated
    orders and cents. Rows come from ``history`` (the rollups of :func:`leaving_months`); a
    customer's leaving month counts only if it is not before the month of its ``first_seen`` in
    ``previous`` (an anonymous visitor that left the state and came back started over)."""
    m = month_start(month)
    cat = {"customer_id": pl.String(), "category": pl.String(), "orders": pl.Int64(), "cents": pl.Int64()}
    if history is None:
        return pl.LazyFrame(schema={"customer_id": pl.String(), **{c: pl.Int64() for c in ROLLING_SPANS}}), \
            pl.LazyFrame(schema=cat)
    since = previous.select("customer_id", pl.col("first_seen").dt.truncate("1mo").dt.date().alias("__since"))
    months = [next_month(m, -k).date() for k in LEAVING_OFFSETS]
    gone = (history.filter(pl.col("month").is_in(months)).join(since, on="customer_id", how="inner")
            .filter(pl.col("month") >= pl.col("__since"))).collect().lazy()  # read by both results
    parts = [_span_rows(_month_quantities(gone.filter(pl.col("month") == mk)), lambda n, k=k: -1 if n == k else 0)
             for k, mk in zip(LEAVING_OFFSETS, months)]
    cats = (_month_categories(gone.filter(pl.col("month") == next_month(m, -12).date())).drop("month")
            .with_columns(-pl.col("orders"), -pl.col("cents")))
    return pl.concat(parts), cats


def _category_lists(rows: pl.LazyFrame) -> pl.LazyFrame:
    """``customer_id, category_12m`` from signed category rows (categories left with orders), each
    list sorted by category (:func:`build_features` relies on it)."""
    return (rows.group_by("customer_id", "category").agg(pl.col("orders", "cents").sum())
            .filter(pl.col("orders") > 0).sort("customer_id", "category")
            .group_by("customer_id", maintain_order=True)
            .agg(pl.struct("category", "orders", "cents").alias("category_12m")))


def _part_schema(spec: FeaturesConfig) -> dict[str, pl.DataType]:
    """Columns of the rows :func:`_fold` folds into a state: each row is one day of a customer, a
    previous state's row, or a month leaving the running sums."""
    return {
        "customer_id": pl.String(), "__src": pl.UInt8(),
        **{c: STATE_SCHEMA[c] for c in (*_EARLIEST, *_LATEST)},
        "longest_gap_days": pl.Int64(), **{c: pl.Int64() for c in _SUMS}, "first_day_key": pl.Int64(),
        "unsubscribed": pl.Boolean(), **{c: pl.Int64() for c in _seasonal_columns(spec)}, "identity": pl.String(),
        **{c: pl.Int64() for c in ROLLING_SPANS},
    }


#: Kinds of rows folded into a state (column ``__src``).
_PREVIOUS, _DAY, _LEAVING = 0, 1, 2
_EARLIEST = ("first_seen", "first_active_day", "first_order_time", "first_order_day", "signup_time",
             "first_key_action_time", "first_expansion_time")
_LATEST = ("last_seen", "last_active_day", "last_order_time", "last_order_day")
_SUMS = ("orders", "order_days", "cents", "invites")
_CENTS_BITS = 41  # amounts of a day in (-2**40, 2**40) cents


def _day_and_cents(day: pl.Expr, amount: pl.Expr) -> pl.Expr:
    """A day and an amount (whole cents) packed in one integer that orders by day: the smallest of
    a customer's packed values holds its first day's amount. A group-by finds it as a plain min
    (``sort_by``/``first`` would need the rows in order and held in memory)."""
    return day.cast(pl.Int32).cast(pl.Int64) * 2**_CENTS_BITS + amount + 2**(_CENTS_BITS - 1)


def _cents_of(packed: pl.Expr) -> pl.Expr:
    """The amount of :func:`_day_and_cents`."""
    return packed - (packed // 2**_CENTS_BITS) * 2**_CENTS_BITS - 2**(_CENTS_BITS - 1)


def _rows(frame: pl.LazyFrame, src: int, spec: FeaturesConfig, **cols: pl.Expr) -> pl.LazyFrame:
    """``frame`` as rows of :func:`_part_schema`: the given columns, null for the others."""
    schema = _part_schema(spec)
    cols = {"__src": pl.lit(src, dtype=pl.UInt8), **cols}
    return frame.select("customer_id", *[cols[c].cast(t).alias(c) if c in cols else pl.lit(None, dtype=t).alias(c)
                                         for c, t in schema.items() if c != "customer_id"])


def _day_rows(daily: pl.LazyFrame, spec: FeaturesConfig, *, rolling: bool) -> pl.LazyFrame:
    """The daily rows (sorted by customer and day) as rows to fold. An active day carries the days
    without activity since the customer's active day before (``longest_gap_days``); with
    ``rolling`` (the rows are one month's) the rows carry the month's additions to the running sums,
    the month's activity counted on the customer's first active day."""
    has_order = pl.col("orders") > 0
    active = pl.col("activity") > 0
    key = (pl.col("orders") > 0) | (pl.col("feature_uses") > 0)
    expand = (pl.col("invites") > 0) | (pl.col("upgrades") > 0)

    def where(cond: pl.Expr, col: str) -> pl.Expr:
        return pl.when(cond).then(pl.col(col))

    # the active day before this row and its customer (rows in customer and day order)
    before = where(active, "day").shift(1).forward_fill()
    same = active & (where(active, "customer_id").shift(1).forward_fill() == pl.col("customer_id")).fill_null(False)
    quantity = {"orders": pl.col("orders"), "cents": cents(pl.col("revenue")),
                "discount_orders": pl.col("discount_orders"), "active": active & ~same}
    return _rows(
        daily, _DAY, spec,
        first_seen=pl.col("first_time"), last_seen=pl.col("last_time"),
        first_active_day=where(active, "day"), last_active_day=where(active, "day"),
        longest_gap_days=pl.when(same).then((pl.col("day") - before).dt.total_days() - 1),
        first_order_time=where(has_order, "first_time"), last_order_time=where(has_order, "last_time"),
        first_order_day=where(has_order, "day"), last_order_day=where(has_order, "day"),
        orders=pl.col("orders"), order_days=has_order, cents=cents(pl.col("revenue")),
        first_day_key=pl.when(has_order).then(_day_and_cents(pl.col("day"), cents(pl.col("revenue")))),
        invites=pl.col("invites"), signup_time=where(pl.col("signups") > 0, "first_time"),
        first_key_action_time=where(key, "first_time"), first_expansion_time=where(expand, "first_time"),
        unsubscribed=pl.col("unsubscribes") > 0,
        **{c: pl.col(c) for c in _seasonal_columns(spec)},
        **({c: quantity[q] for c, (q, _) in ROLLING_SPANS.items()} if rolling else {}),
    )


def _fold_day_columns(spec: FeaturesConfig) -> list[str]:
    """The columns of the daily rows :func:`_day_rows` reads."""
    return ["customer_id", "day", "first_time", "last_time", "orders", "revenue", "discount_orders", "activity",
            "feature_uses", "invites", "upgrades", "signups", "unsubscribes", *_seasonal_columns(spec)]


def _in_day_order(daily: pl.LazyFrame, spec: FeaturesConfig) -> pl.LazyFrame:
    """The columns of the daily rows :func:`_day_rows` reads, sorted by customer and day. Rollups
    are written in that order, so they are only checked (a pass over two columns), not sorted."""
    d = daily.select(_fold_day_columns(spec)).collect()
    nxt = pl.col("customer_id").shift(-1)
    ordered = ((pl.col("customer_id") < nxt) | ((pl.col("customer_id") == nxt) & (pl.col("day") <= pl.col("day").shift(-1))))
    if not d.select(ordered.fill_null(True).all()).item():
        d = d.sort("customer_id", "day")
    return d.lazy()


def _previous_rows(previous: pl.LazyFrame, spec: FeaturesConfig) -> pl.LazyFrame:
    """A previous state's rows as rows to fold."""
    return _rows(
        previous, _PREVIOUS, spec,
        **{c: pl.col(c) for c in (*_EARLIEST, *_LATEST, "longest_gap_days", "orders", "order_days", "invites",
                                  "unsubscribed", *_seasonal_columns(spec), "identity", *ROLLING_SPANS)},
        cents=cents(pl.col("revenue")),
        first_day_key=_day_and_cents(pl.col("first_order_day"), cents(pl.col("first_day_revenue"))),
    )


def _fold(rows: pl.LazyFrame, spec: FeaturesConfig, *, rolling: bool) -> pl.LazyFrame:
    """One state row per customer from the rows of :func:`_part_schema`: earliest and latest times,
    sums, the first order day's revenue and the longest gap between active days. No aggregate
    depends on the rows' order (the day rows carry their gaps), so the streaming engine folds
    them as they come."""
    src = pl.col("__src")
    out = rows.group_by("customer_id").agg(
        *[pl.col(c).min() for c in _EARLIEST], *[pl.col(c).max() for c in _LATEST],
        pl.col("longest_gap_days").max(),
        # the gap between the previous state's last active day and the month's first one
        (pl.when(src == _DAY).then(pl.col("first_active_day")).min()
         - pl.when(src == _PREVIOUS).then(pl.col("last_active_day")).max()).dt.total_days().alias("__bridge"),
        *[pl.col(c).sum() for c in (*_SUMS, *_seasonal_columns(spec))],
        pl.col("first_day_key").min(),
        pl.col("unsubscribed").any(), pl.col("identity").max(),
        *([pl.col(list(ROLLING_SPANS)).sum()] if rolling else []),
        (src == _PREVIOUS).any().alias("__known"),
    )
    return out.with_columns(
        pl.max_horizontal("longest_gap_days", pl.col("__bridge") - 1).fill_null(0).alias("longest_gap_days"),
        from_cents(pl.col("cents")).alias("revenue"), from_cents(_cents_of(pl.col("first_day_key"))).alias("first_day_revenue"),
    ).drop("__bridge", "cents", "first_day_key")


def _features_used(monthly: pl.LazyFrame) -> pl.LazyFrame:
    """``customer_id, features_used``: the distinct features of the monthly rows, sorted."""
    return (monthly.select("customer_id", "features_used").explode("features_used").drop_nulls()
            .group_by("customer_id").agg(pl.col("features_used").unique().sort()))


def keep_current(frame: pl.LazyFrame, identity: pl.LazyFrame, *, month: str, spec: FeaturesConfig) -> pl.LazyFrame:
    """``frame`` (with ``customer_id`` and ``last_seen``) with each id's ``identity`` of ``month``:
    only the ids still in the identity map (identity stitching has merged the others into another
    customer), less the anonymous visitors idle for more than ``spec.anonymous_retention_days``
    at the end of ``month``. Rows stay in the order of ``frame``."""
    out = frame.drop("identity", strict=False).join(identity.select("customer_id", "identity"), on="customer_id",
                                                    how="inner", maintain_order="left")
    if spec.anonymous_retention_days is None:
        return out
    return out.filter(~idle_anonymous(pl.col("identity") == "anonymous", month=month, spec=spec))


def idle_anonymous(is_anonymous: pl.Expr, *, month: str, spec: FeaturesConfig) -> pl.Expr:
    """True for anonymous visitors whose ``last_seen`` is more than
    ``spec.anonymous_retention_days`` before the end of ``month``."""
    assert spec.anonymous_retention_days is not None
    gone = pl.lit(next_month(month_start(month)) - dt.timedelta(days=spec.anonymous_retention_days), dtype=_TS)
    return is_anonymous & (pl.col("last_seen") < gone)


def update_customer_state(
    previous: pl.LazyFrame | None, daily: pl.LazyFrame, monthly: pl.LazyFrame, *, spec: FeaturesConfig,
    identity: pl.LazyFrame | None = None, month: str | None = None, history: pl.LazyFrame | None = None,
) -> pl.LazyFrame:
    """State after ``month``: the ``previous`` month's state merged with the month's daily and
    monthly rows. ``previous=None`` builds the state from scratch (the rows may span many months;
    ``month`` defaults to the last of them). Pass the previous state as a scan rather than
    collecting it first: it is read together with the month's inputs.

    The state holds lifetime aggregates and the running sums of :data:`ROLLING_SCHEMA` (last 12
    and 6 months). With a ``previous`` state, ``history`` gives the monthly rollups leaving the
    running sums (:func:`leaving_months`); a previous state written before the running sums
    existed needs the 12 monthly rollups before ``month`` there instead.

    With ``identity`` (:func:`segpipe.identity.customer_identity` of ``month``) the previous state
    first loses the ids that are no longer in the identity map (identity stitching merged them into
    another customer) and the anonymous visitors idle for more than
    ``spec.anonymous_retention_days``: they are not in the snapshots any more, and one that returns
    starts over."""
    schema = _state_schema(spec)
    if previous is None:
        d = _in_day_order(daily, spec)
        cur = (_fold(_day_rows(d, spec, rolling=False), spec, rolling=False)
               .drop("identity", "__known").join(_features_used(monthly), on="customer_id", how="left")
               .with_columns(pl.col("features_used").fill_null(pl.lit([], dtype=pl.List(pl.String)))))
        if identity is not None:
            cur = cur.join(identity.select("customer_id", "identity"), on="customer_id", how="left")
        last = month or monthly.select(pl.col("month").max()).collect().item().strftime("%Y-%m-%d")
        roll = rolling_from_monthly(monthly, month=last)
        return _with_rolling(cur, roll, schema)
    if month is None:
        raise ValueError("update_customer_state: month is required with a previous state")
    # The inputs read by several parts of the plan below are materialized once, not scanned per part,
    # and together: their reads and decoding overlap.
    inputs = {"previous": previous, "daily": daily.select(_fold_day_columns(spec)),
              "monthly": monthly.select("customer_id", "month", "category_revenue", "features_used")}
    if identity is not None:
        inputs["identity"] = identity.select("customer_id", "identity")
    if history is not None:  # only the columns the running sums read (7 of the rollup's 25)
        inputs["history"] = history.select("customer_id", "month", "orders", "revenue", "discount_orders", "activity",
                                           "category_revenue")
    got = dict(zip(inputs, (f.lazy() for f in pl.collect_all(list(inputs.values())))))
    previous, monthly, identity, history = got["previous"], got["monthly"], got.get("identity"), got.get("history")
    d = _in_day_order(got["daily"], spec)
    if identity is not None:
        previous = keep_current(previous, identity, month=month, spec=spec)
    if not all(c in previous.collect_schema().names() for c in ROLLING_SCHEMA):
        # a state written before the running sums existed: rebuild them from the 12 rollups before
        if history is None:
            raise ValueError(f"customer_state before {month[:7]} lacks the running sums (written by an older segpipe): "
                             "pass the monthly rollups of the 12 months before")
        before = rolling_from_monthly(history, month=next_month(month_start(month), -1).strftime("%Y-%m-%d"))
        previous = _with_rolling(previous.drop(*ROLLING_SCHEMA, strict=False), before, None)
    # Nothing below depends on the previous state's row order (the fold is a group-by, the list columns
    # are put in id order), so a state not sorted by id (a bucket of an older segpipe) needs no sort.
    previous = previous.collect()
    minus, gone_cats = _leaving(previous.lazy(), history, month=month)

    # The scalar columns: one group-by over the previous state's rows, the month's day rows and the
    # rows leaving the running sums, no joins. The list columns change for few customers:
    # they stay in id order (the previous state's, less the changed rows, plus the changed and new
    # rows, sorted) and join the sorted scalars side by side (gathering lists in a join's order costs
    # ten times the scalars).
    rows = pl.concat([_previous_rows(previous.lazy(), spec), _day_rows(d, spec, rolling=True),
                      _rows(minus, _LEAVING, spec, **{c: pl.col(c) for c in ROLLING_SPANS})])
    # with the month's category rows (independent of the fold): computed side by side
    merged, month_cats, gone_cats = pl.collect_all([_fold(rows, spec, rolling=True).sort("customer_id"),
                                                    _month_categories(monthly).drop("month"), gone_cats])
    new = merged.lazy().filter(~pl.col("__known")).select("customer_id")  # ids first seen this month (or starting over)

    # Category lists and feature lists change only for the customers with rows this month (or leaving):
    # recomputed for those alone, the others keep theirs.
    touched = pl.concat([month_cats.select("customer_id"), gone_cats.select("customer_id")]).unique()
    old_cats = (previous.select("customer_id", "category_12m").filter(pl.col("customer_id").is_in(touched["customer_id"].implode()))
                .explode("category_12m").unnest("category_12m").drop_nulls("category"))
    cats = touched.lazy().join(_category_lists(pl.concat([old_cats.lazy(), month_cats.lazy(), gone_cats.lazy()])),
                               on="customer_id", how="left").select(
        "customer_id", pl.col("category_12m").fill_null(pl.lit([], dtype=_CATEGORY_12M)))
    # the month's rollup has one row per customer, its features distinct and sorted
    used = monthly.select("customer_id", "features_used").filter(pl.col("features_used").list.len() > 0).join(
        previous.lazy().select("customer_id", pl.col("features_used").alias("__old")), on="customer_id", how="left"
    ).select("customer_id", pl.col("__old").fill_null(pl.lit([], dtype=pl.List(pl.String)))
             .list.set_union("features_used").list.sort().alias("features_used"))

    def in_id_order(col: str, changed: pl.DataFrame) -> pl.LazyFrame:
        ids = changed["customer_id"].implode()
        return pl.concat([
            previous.lazy().select("customer_id", col).filter(~pl.col("customer_id").is_in(ids)),
            changed.lazy(),
            new.filter(~pl.col("customer_id").is_in(ids)).with_columns(pl.lit([], dtype=schema[col]).alias(col)),
        ]).sort("customer_id")

    lists = ("category_12m", "features_used")
    kinds = [] if identity is None else [  # customers new this month get their identity kind
        merged.lazy().select("customer_id").join(new.join(identity, on="customer_id", how="inner"), on="customer_id",
                                                 how="left", maintain_order="left")]
    done = pl.collect_all([cats, used, *kinds])  # side by side, as below
    if kinds:
        merged = merged.with_columns(pl.coalesce(pl.col("identity"), done[2]["identity"]))
    lists_in_order = pl.collect_all([in_id_order(c, ch) for c, ch in zip(lists, done[:2])])
    for col, ordered in zip(lists, lists_in_order):
        if not ordered["customer_id"].equals(merged["customer_id"]):  # would be a bug above, never a data problem
            raise AssertionError(f"update_customer_state {month[:7]}: {col} rows do not line up with the merged state")
    return merged.with_columns(ordered[col] for col, ordered in zip(lists, lists_in_order)).lazy().select(
        list(schema)).cast(schema)


def _with_rolling(lifetime: pl.LazyFrame, rolling: pl.LazyFrame,
                  schema: dict[str, pl.DataType] | None) -> pl.LazyFrame:
    """``lifetime`` rows with their running sums (0 and [] for customers without), an ``identity``
    column (null if absent) and, with ``schema``, in that schema sorted by id."""
    if "identity" not in lifetime.collect_schema().names():
        lifetime = lifetime.with_columns(pl.lit(None, dtype=pl.String).alias("identity"))
    out = (lifetime.join(rolling, on="customer_id", how="left")
           .with_columns(pl.col(list(ROLLING_SPANS)).fill_null(0),
                         pl.col("category_12m").fill_null(pl.lit([], dtype=_CATEGORY_12M))))
    return out if schema is None else out.select(list(schema)).cast(schema).sort("customer_id")


# -- snapshot features ---------------------------------------------------------------------------
#: Column -> (family, one-line definition). Shown in the UI as column descriptions and in docs.
FEATURES: dict[str, tuple[str, str]] = {
    "customer_id": ("id", "Stitched customer id."),
    "identity": ("id", "customer (own customer id), contact (email/app account only) or anonymous (cookies only)."),
    "snapshot_month": ("id", "Snapshot month: features as of the end of this month (UTC)."),
    # purchase / RFM
    "first_seen": ("purchase", "Time of the first event of any kind."),
    "last_seen": ("purchase", "Time of the last event of any kind."),
    "tenure_days": ("purchase", "Days from the first event to the end of the snapshot."),
    "first_order_date": ("purchase", "UTC day of the first order (null if none)."),
    "last_order_date": ("purchase", "UTC day of the last order (null if none)."),
    "recency_days": ("purchase", "Days from the last order to the end of the snapshot (null if none)."),
    "orders_30d": ("purchase", "Orders in the last 30 days."),
    "orders_90d": ("purchase", "Orders in the last 90 days."),
    "orders_365d": ("purchase", "Orders in the last 365 days."),
    "orders_lifetime": ("purchase", "Orders up to the end of the snapshot."),
    "revenue_30d": ("purchase", "Order revenue in the last 30 days."),
    "revenue_90d": ("purchase", "Order revenue in the last 90 days."),
    "revenue_365d": ("purchase", "Order revenue in the last 365 days."),
    "revenue_lifetime": ("purchase", "Order revenue up to the end of the snapshot."),
    "avg_order_value": ("purchase", "revenue_lifetime / orders_lifetime (0 without orders)."),
    "purchase_days": ("purchase", "Distinct UTC days with an order, lifetime."),
    "frequency": ("purchase", "BTYD: repeat purchase periods = purchase_days - 1 (lifetimes/pymc-marketing, days)."),
    "recency": ("purchase", "BTYD: days from the first to the last purchase day (0 without repeat)."),
    "T": ("purchase", "BTYD: days from the first purchase day to the snapshot's last day."),
    "monetary_value": ("purchase", "BTYD: mean revenue of repeat purchase days (0 without repeat)."),
    # usage rate
    "active_days_7d": ("usage", "Distinct days with any activity in the last 7 days."),
    "active_days_30d": ("usage", "Distinct days with any activity in the last 30 days."),
    "active_days_90d": ("usage", "Distinct days with any activity in the last 90 days."),
    "logins_7d": ("usage", "App logins in the last 7 days."),
    "logins_30d": ("usage", "App logins in the last 30 days."),
    "logins_90d": ("usage", "App logins in the last 90 days."),
    "app_days_30d": ("usage", "Distinct days with app activity in the last 30 days."),
    "features_used_lifetime": ("usage", "Distinct product features used, lifetime."),
    "invites_30d": ("usage", "Invites sent in the last 30 days."),
    "invites_lifetime": ("usage", "Invites sent, lifetime."),
    "usage_tier": ("usage", "heavy / medium / light by quantiles of app_days_30d among app users; non-user without."),
    "usage_trend": ("usage", "Active days in the last 30 days / (active days in the 60 before / 2); null if both 0."),
    # occasion and timing
    "weekend_share_90d": ("occasion", "Share of activity on Saturday/Sunday (features.timezone), last 90 days."),
    **{f"{p}_share_90d": ("occasion", f"Share of activity in the {p} ({lo:02d}-{hi:02d}h, features.timezone), last 90 days.")
       for p, (lo, hi) in PARTS_OF_DAY.items()},
    "inter_purchase_days": ("occasion", "Mean days between purchase days: recency / frequency (null without repeat)."),
    # benefits sought
    "dominant_category": ("benefits", "Category with the most revenue in the last 12 months (month-granular)."),
    "category_share": ("benefits", "Revenue share per category, last 12 months (month-granular): list of {category, share}."),
    "discount_share_365d": ("benefits", "Share of orders with a discount code, last 365 days (null without orders)."),
    # loyalty
    "repeat_buyer": ("loyalty", "Ordered on at least two distinct days."),
    "active_months_12": ("loyalty", "Months with any activity among the last 12 (month-granular)."),
    "lapsed": ("loyalty", "No activity in the last features.lapsed_after_days days."),
    "longest_gap_days": ("loyalty", "Longest run of days without activity between two active days, lifetime."),
    # journey stage inputs
    "signed_up": ("journey", "Has an app signup event."),
    "first_key_action_date": ("journey", "Day of the first order or feature use (null if none)."),
    "regular_use": ("journey", "Active in at least features.regular_use_months of the last 6 months (month-granular)."),
    "expansion": ("journey", "Invited others or upgraded in the last 90 days, or revenue_90d above the 90 days before."),
    # channel engagement
    "emails_sent_90d": ("channel", "Emails sent to the customer in the last 90 days."),
    "email_open_rate_30d": ("channel", "Email opens / emails sent, last 30 days (null if none sent)."),
    "email_open_rate_90d": ("channel", "Email opens / emails sent, last 90 days (null if none sent)."),
    "email_click_rate_30d": ("channel", "Email clicks / emails sent, last 30 days (null if none sent)."),
    "email_click_rate_90d": ("channel", "Email clicks / emails sent, last 90 days (null if none sent)."),
    "unsubscribed": ("channel", "Unsubscribed from email at any time."),
    **{f"{c}_share_90d": ("channel", f"Share of activity through {c}, last 90 days.") for c in CHANNELS},
    "preferred_channel": ("channel", "Channel with the most activity in the last 90 days (null without activity)."),
    # intent signals
    "pricing_views_7d": ("intent", "Pricing page views in the last 7 days."),
    "cart_views_14d": ("intent", "Cart / checkout page views in the last 14 days."),
    "cart_no_order_14d": ("intent", "Cart views in the last 14 days and no order in those 14 days."),
    "product_views_30d": ("intent", "Product page views in the last 30 days."),
    "product_views_repeat_30d": ("intent", "Product page views in the last 30 days beyond one per active day (repeat views)."),
    "days_since_last_activity": ("intent", "Days from the last activity to the end of the snapshot."),
}
FEATURE_DEFINITIONS: dict[str, str] = {k: v[1] for k, v in FEATURES.items()}

_F, _I, _B, _S, _D = pl.Float64(), pl.Int64(), pl.Boolean(), pl.String(), pl.Date()
FEATURE_SCHEMA: dict[str, pl.DataType] = {
    "customer_id": _S, "identity": _S, "snapshot_month": _D, "first_seen": _TS, "last_seen": _TS,
    "tenure_days": _F, "first_order_date": _D, "last_order_date": _D, "recency_days": _F,
    "orders_30d": _I, "orders_90d": _I, "orders_365d": _I, "orders_lifetime": _I,
    "revenue_30d": _F, "revenue_90d": _F, "revenue_365d": _F, "revenue_lifetime": _F, "avg_order_value": _F,
    "purchase_days": _I, "frequency": _I, "recency": _I, "T": _I, "monetary_value": _F,
    "active_days_7d": _I, "active_days_30d": _I, "active_days_90d": _I, "logins_7d": _I, "logins_30d": _I,
    "logins_90d": _I, "app_days_30d": _I, "features_used_lifetime": _I, "invites_30d": _I, "invites_lifetime": _I,
    "usage_tier": _S, "usage_trend": _F, "weekend_share_90d": _F, **{f"{p}_share_90d": _F for p in PARTS_OF_DAY},
    "inter_purchase_days": _F, "dominant_category": _S,
    "category_share": pl.List(pl.Struct({"category": _S, "share": _F})), "discount_share_365d": _F,
    "repeat_buyer": _B, "active_months_12": _I, "lapsed": _B, "longest_gap_days": _I,
    "signed_up": _B, "first_key_action_date": _D, "regular_use": _B, "expansion": _B,
    "emails_sent_90d": _I, "email_open_rate_30d": _F, "email_open_rate_90d": _F, "email_click_rate_30d": _F,
    "email_click_rate_90d": _F, "unsubscribed": _B, **{f"{c}_share_90d": _F for c in CHANNELS},
    "preferred_channel": _S, "pricing_views_7d": _I, "cart_views_14d": _I, "cart_no_order_14d": _B,
    "product_views_30d": _I, "product_views_repeat_30d": _I, "days_since_last_activity": _F,
}


def feature_schema(spec: FeaturesConfig) -> dict[str, pl.DataType]:
    """Feature columns for this config (one seasonal share per configured window)."""
    out = dict(FEATURE_SCHEMA)
    for w in spec.seasonal_windows:
        out[f"orders_share_{w.name}"] = pl.Float64()
    return out


def feature_definitions(spec: FeaturesConfig) -> dict[str, str]:
    defs = dict(FEATURE_DEFINITIONS)
    for w in spec.seasonal_windows:
        defs[f"orders_share_{w.name}"] = f"Share of lifetime orders placed {w.start}..{w.end} (features.timezone)."
    return defs


def _preferred_channel() -> pl.Expr:
    """The channel with the most activity in 90 days; ties go to the first of CHANNELS."""
    top = pl.max_horizontal(*[pl.col(f"{c}_90d") for c in CHANNELS])
    expr = pl.when(top <= 0).then(pl.lit(None, dtype=pl.String))
    for c in CHANNELS:
        expr = expr.when(pl.col(f"{c}_90d") == top).then(pl.lit(c))
    return expr


SHORT_WINDOW_DAYS = 30
LONG_WINDOW_DAYS = (90, 180, 365)


def _usage_quantiles(spec: FeaturesConfig) -> tuple[pl.Expr, pl.Expr]:
    """The app-day quantiles of ``spec.usage_tier_quantiles`` among the frame's app users."""
    app_days = pl.col("app_days_30d").filter(pl.col("app_days_30d") > 0)
    return tuple(app_days.quantile(q, interpolation="lower") for q in spec.usage_tier_quantiles)


def usage_tier(spec: FeaturesConfig, thresholds: tuple[float | None, float | None] | None = None) -> pl.Expr:
    """``usage_tier`` from ``app_days_30d``: non-user without app days, else heavy / medium / light
    by ``spec.usage_tier_quantiles`` of app days among the app users of the whole frame, or by given
    ``thresholds`` (:func:`usage_thresholds` of the whole snapshot, when it is computed in buckets)."""
    app_days = pl.col("app_days_30d")
    if thresholds is None:
        lo, hi = _usage_quantiles(spec)
    else:
        lo, hi = (pl.lit(t, dtype=pl.Float64) for t in thresholds)
    return (pl.when(~(app_days > 0)).then(pl.lit("non-user")).when(app_days >= hi).then(pl.lit("heavy"))
            .when(app_days >= lo).then(pl.lit("medium")).otherwise(pl.lit("light")).alias("usage_tier"))


def usage_thresholds(features: pl.LazyFrame, spec: FeaturesConfig) -> tuple[float | None, float | None]:
    """The app-day quantiles of :func:`usage_tier` over all of ``features`` (reads one column)."""
    lo, hi = _usage_quantiles(spec)
    return features.select(lo.alias("lo"), hi.alias("hi")).collect().row(0)


def daily_months(month: str) -> list[str]:
    """Partition keys of the daily rollups :func:`build_features` reads for ``month``: the months
    of the windows up to 30 days, and the first month of each longer window when the window starts
    after its 1st (its days before the window are subtracted)."""
    end = next_month(month_start(month))
    keys = set(window_months(month, SHORT_WINDOW_DAYS))
    for n in LONG_WINDOW_DAYS:
        edge = end - dt.timedelta(days=n)
        if edge.day != 1:
            keys.add(edge.strftime("%Y-%m-01"))
    return sorted(keys)


def monthly_months(month: str) -> list[str]:
    """Partition keys of the monthly rollups :func:`build_features` reads for ``month``: the months
    the 90-day window touches (longer windows come from the state's running sums)."""
    return window_months(month, 90)


def window_months(month: str, days: int = 365) -> list[str]:
    """Partition keys of the months a ``days`` window ending with ``month`` touches."""
    end = next_month(month_start(month))
    first = month_start(end - dt.timedelta(days=days))
    out, cur = [], first
    while cur < end:
        out.append(cur.strftime("%Y-%m-%d"))
        cur = next_month(cur)
    return out


def build_features(
    state: pl.LazyFrame, daily: pl.LazyFrame, monthly: pl.LazyFrame, identity: pl.LazyFrame | None = None,
    *, month: str, spec: FeaturesConfig,
) -> pl.LazyFrame:
    """Snapshot features as of the end of ``month``.

    Parameters
    ----------
    state : LazyFrame
        :func:`update_customer_state` through ``month``: every customer seen so far.
    daily : LazyFrame
        :func:`build_activity_daily` rows of (at least) the months :func:`daily_months` names.
    monthly : LazyFrame
        :func:`build_activity_monthly` rows of (at least) the months :func:`monthly_months` names.

    Windows up to 30 days sum day rows. The 90-day window sums the monthly rollups of the months it
    touches; the 180- and 365-day windows and the month-granular features (active months, category
    shares) come from the state's running sums. The long windows subtract the days of their first
    month before the window starts, so all stay exact to the day while a snapshot reads at most 4
    monthly rollups and, of the older months' day rows, only the first days.
    identity : LazyFrame, optional
        :func:`segpipe.identity.customer_identity` of the month; by default the state's ``identity``
        column (set by :func:`update_customer_state` from the same identity map).
    """
    start = month_start(month)
    end_dt = next_month(start)
    end = end_dt.date()
    last_day = end - dt.timedelta(days=1)
    as_of = pl.lit(end_dt, dtype=_TS)

    def since(days: int) -> pl.Expr:
        return pl.col("day") >= end - dt.timedelta(days=days)

    # Windows up to 30 days: day rows of this month and the one before.
    d = daily.filter((pl.col("day") < end) & since(SHORT_WINDOW_DAYS))

    # masks summed over whole columns (Polars' grouped fast path), not filters inside the aggregation
    def s(col: str, days: int) -> pl.Expr:
        return pl.when(since(days)).then(pl.col(col)).sum().cast(pl.Int64)

    def days_with(cond: pl.Expr, days: int) -> pl.Expr:
        return (cond & since(days)).sum().cast(pl.Int64)

    active = pl.col("activity") > 0
    short = d.group_by("customer_id").agg(
        *[s("orders", n).alias(f"orders_{n}d") for n in (14, 30)],
        money_sum(pl.when(since(30)).then(pl.col("revenue"))).alias("revenue_30d"),
        *[days_with(active, n).alias(f"active_days_{n}d") for n in (7, 30)],
        *[s("logins", n).alias(f"logins_{n}d") for n in (7, 30)],
        days_with(pl.col("app_events") > 0, 30).alias("app_days_30d"),
        s("invites", 30).alias("invites_30d"),
        s("emails_sent", 30).alias("sent_30d"), s("email_opens", 30).alias("opens_30d"),
        s("email_clicks", 30).alias("clicks_30d"),
        s("pricing_views", 7).alias("pricing_views_7d"),
        s("cart_views", 14).alias("cart_views_14d"),
        s("product_views", 30).alias("product_views_30d"),
        days_with(pl.col("product_views") > 0, 30).alias("product_view_days_30d"),
    )
    # 90 days: the monthly rollups of the months the window touches, less the day rows of its first
    # month before the window starts (a few days; none when it starts on the 1st).
    counters = ["orders", "revenue", "activity", "active_days", *WINDOW_COUNTERS]
    cut90 = end - dt.timedelta(days=90)
    first90 = month_start(cut90).date()
    month_rows = monthly.filter((pl.col("month") <= start.date()) & (pl.col("month") >= first90)).select(
        "customer_id", *[pl.col(c).cast(pl.Float64 if c == "revenue" else pl.Int64) for c in counters])
    day_rows = daily.filter((pl.col("day") >= first90) & (pl.col("day") < cut90)).select(
        "customer_id",
        *[-(active if c == "active_days" else pl.col(c)).cast(pl.Float64 if c == "revenue" else pl.Int64).alias(c)
          for c in counters])
    w90_cols = {
        "orders": "orders_90d", "cents": "cents_90d", "active_days": "active_days_90d", "logins": "logins_90d",
        "invites": "invites_90d", "upgrades": "upgrades_90d", "activity": "activity_90d",
        "weekend_activity": "weekend_90d", **{f"{p}_activity": f"{p}_90d" for p in PARTS_OF_DAY},
        **{f"{c}_activity": f"{c}_90d" for c in CHANNELS}, "emails_sent": "emails_sent_90d",
        "email_opens": "opens_90d", "email_clicks": "clicks_90d"}
    w90 = (pl.concat([month_rows, day_rows], how="vertical").with_columns(cents(pl.col("revenue")).alias("cents"))
           .group_by("customer_id").agg(pl.col(src).sum().cast(pl.Int64).alias(out) for src, out in w90_cols.items()))

    # 180 and 365 days: the state's running sums of the months the window touches (6 and 12), less the
    # days of the first month before the window starts (none when it starts on the 1st).
    def before_cut(days: int, months: int, cols: dict[str, str]) -> pl.LazyFrame:
        cut = end - dt.timedelta(days=days)
        first = next_month(start, -months + 1).date()
        assert first <= cut < next_month(month_start(first)).date(), (days, months, cut)
        rows = daily.filter((pl.col("day") >= first) & (pl.col("day") < cut))
        return rows.select("customer_id", pl.col("orders").cast(pl.Int64), cents(pl.col("revenue")).alias("cents"),
                           pl.col("discount_orders").cast(pl.Int64)).group_by("customer_id").agg(
            pl.col(src).sum().alias(out) for src, out in cols.items())

    early = (before_cut(365, 12, {"orders": "orders_early365", "cents": "cents_early365",
                                  "discount_orders": "discount_early365"})
             .join(before_cut(180, 6, {"cents": "cents_early180"}), on="customer_id", how="full", coalesce=True))
    long = (
        state.select("customer_id", *ROLLING_SPANS)
        .join(w90, on="customer_id", how="left").join(early, on="customer_id", how="left")
        .with_columns(pl.all().exclude("customer_id").fill_null(0))
        .with_columns(
            (pl.col("orders_12m") - pl.col("orders_early365")).alias("orders_365d"),
            (pl.col("discount_orders_12m") - pl.col("discount_early365")).alias("discount_orders_365d"),
            from_cents(pl.col("cents_90d")).alias("revenue_90d"),
            from_cents(pl.col("cents_12m") - pl.col("cents_early365")).alias("revenue_365d"),
            from_cents(pl.col("cents_6m") - pl.col("cents_early180") - pl.col("cents_90d"))
            .alias("revenue_prev_90d"),
            pl.col("active_months_12m").alias("active_months_12"), pl.col("active_months_6m").alias("active_months_6"),
        )
        .drop(*ROLLING_SPANS, "cents_90d", "orders_early365", "cents_early365", "discount_early365", "cents_early180")
    )
    win = short.join(long, on="customer_id", how="full", coalesce=True).with_columns(
        (pl.col("active_days_90d").fill_null(0) - pl.col("active_days_30d").fill_null(0)).alias("active_days_prev_60d"))
    # A state's category list is sorted by category (:func:`_category_lists`) and a group keeps its
    # rows' order, so the first category with the most spend is the alphabetically first of a tie and
    # the shares come out in category order without sorting (joined onto the state in its order).
    cats = (
        state.select("customer_id", "category_12m").explode("category_12m").unnest("category_12m")
        .drop_nulls("category")
        # integer cents: the total does not depend on summation order, so re-runs match
        .with_columns((pl.col("cents") / pl.col("cents").sum().over("customer_id")).alias("share"))
        .group_by("customer_id")
        .agg(pl.col("category").get(pl.col("cents").arg_max()).alias("dominant_category"),
             pl.struct("category", "share").alias("category_share"))
    )

    def zero(*cols: str) -> list[pl.Expr]:
        return [pl.col(c).fill_null(0) for c in cols]

    def rate(num: str, den: str) -> pl.Expr:
        return pl.when(pl.col(den) > 0).then(pl.col(num) / pl.col(den)).otherwise(None)

    def share(col: str) -> pl.Expr:
        return rate(col, "activity_90d")

    # The state is sorted by id and the joins onto it keep its order, so the final sort finds the rows
    # in order instead of moving all 70 columns (a list column among them): 6.1 -> 4.5 s at 1M, month 24,
    # measured alone (5.0 -> 4.7 s inside bench/features.py's refresh).
    people = state if identity is None else state.drop("identity").join(identity, on="customer_id", how="left",
                                                                         maintain_order="left")
    if spec.anonymous_retention_days is not None:  # customers without an identity count as anonymous here
        people = people.filter(~idle_anonymous(pl.col("identity").fill_null("anonymous").eq("anonymous"),
                                               month=month, spec=spec))
    f = (
        people.join(win, on="customer_id", how="left", maintain_order="left")
        .join(cats, on="customer_id", how="left", maintain_order="left")
        .with_columns(zero(*[c for c in win.collect_schema().names() if c != "customer_id"]))
        .with_columns(pl.col("revenue_30d", "revenue_90d", "revenue_365d", "revenue_prev_90d").cast(pl.Float64))
    )
    has_order = pl.col("orders") > 0
    freq = (pl.col("order_days") - 1).clip(lower_bound=0)
    repeat = freq > 0
    f = f.with_columns(
        pl.col("identity").fill_null("anonymous"),
        pl.lit(start.date()).alias("snapshot_month"),
        ((as_of - pl.col("first_seen")).dt.total_seconds() / 86400.0).alias("tenure_days"),
        pl.col("first_order_day").alias("first_order_date"),
        pl.col("last_order_day").alias("last_order_date"),
        ((as_of - pl.col("last_order_time")).dt.total_seconds() / 86400.0).alias("recency_days"),
        pl.col("orders").alias("orders_lifetime"),
        pl.col("revenue").alias("revenue_lifetime"),
        pl.when(has_order).then(pl.col("revenue") / pl.col("orders")).otherwise(0.0).alias("avg_order_value"),
        pl.col("order_days").alias("purchase_days"),
        pl.when(has_order).then(freq).alias("frequency"),
        pl.when(has_order).then(pl.when(repeat).then(
            (pl.col("last_order_day") - pl.col("first_order_day")).dt.total_days()).otherwise(0)).alias("recency"),
        pl.when(has_order).then((pl.lit(last_day) - pl.col("first_order_day")).dt.total_days()).alias("T"),
        pl.when(has_order).then(pl.when(repeat).then(
            (pl.col("revenue") - pl.col("first_day_revenue")) / freq).otherwise(0.0)).alias("monetary_value"),
        pl.col("features_used").list.len().cast(pl.Int64).alias("features_used_lifetime"),
        usage_tier(spec),
        pl.when((pl.col("active_days_30d") + pl.col("active_days_prev_60d")) > 0).then(
            pl.col("active_days_30d") / (pl.col("active_days_prev_60d") / 2).clip(lower_bound=0.5)).alias("usage_trend"),
        share("weekend_90d").alias("weekend_share_90d"),
        *[share(f"{p}_90d").alias(f"{p}_share_90d") for p in PARTS_OF_DAY],
        pl.when(repeat).then((pl.col("last_order_day") - pl.col("first_order_day")).dt.total_days() / freq)
        .alias("inter_purchase_days"),
        rate("discount_orders_365d", "orders_365d").alias("discount_share_365d"),
        (pl.col("order_days") >= 2).alias("repeat_buyer"),
        (pl.col("last_active_day").is_null()
         | (pl.col("last_active_day") < end - dt.timedelta(days=spec.lapsed_after_days))).alias("lapsed"),
        pl.col("signup_time").is_not_null().alias("signed_up"),
        pl.col("first_key_action_time").dt.date().alias("first_key_action_date"),
        (pl.col("active_months_6") >= spec.regular_use_months).alias("regular_use"),
        ((pl.col("invites_90d") > 0) | (pl.col("upgrades_90d") > 0)
         | ((pl.col("revenue_90d") > pl.col("revenue_prev_90d")) & (pl.col("revenue_prev_90d") > 0))).alias("expansion"),
        rate("opens_30d", "sent_30d").alias("email_open_rate_30d"),
        rate("opens_90d", "emails_sent_90d").alias("email_open_rate_90d"),
        rate("clicks_30d", "sent_30d").alias("email_click_rate_30d"),
        rate("clicks_90d", "emails_sent_90d").alias("email_click_rate_90d"),
        *[share(f"{c}_90d").alias(f"{c}_share_90d") for c in CHANNELS],
        _preferred_channel().alias("preferred_channel"),
        ((pl.col("cart_views_14d") > 0) & (pl.col("orders_14d") == 0)).alias("cart_no_order_14d"),
        (pl.col("product_views_30d") - pl.col("product_view_days_30d")).clip(lower_bound=0).alias("product_views_repeat_30d"),
        ((as_of - pl.col("last_seen")).dt.total_seconds() / 86400.0).alias("days_since_last_activity"),
        pl.col("invites").alias("invites_lifetime"),
        *[pl.when(has_order).then(pl.col(f"orders_{w.name}") / pl.col("orders")).alias(f"orders_share_{w.name}")
          for w in spec.seasonal_windows],
    )
    schema = feature_schema(spec)
    # Sums over many rows depend on summation order in the last bits; 12 significant digits make re-runs
    # byte-identical whatever order the engine summed in.
    floats = [c for c, t in schema.items() if t == pl.Float64()]
    return f.select(list(schema)).cast(schema).with_columns(pl.col(floats).round_sig_figs(12)).sort("customer_id")


def features_markdown(spec: FeaturesConfig | None = None) -> str:
    """The feature reference (docs/features.md), generated from :data:`FEATURES`."""
    spec = spec or FeaturesConfig()
    defs = feature_definitions(spec)
    fams = {c: f for c, (f, _) in FEATURES.items()}
    lines = [
        "# Feature reference",
        "",
        "Generated by `python -m segpipe.features > docs/features.md` from the definitions in",
        "`segpipe/features.py` (a test keeps this file current). One row per customer per snapshot",
        "month, as of the end of the month (UTC). Windows of N days cover the UTC days",
        "`[end - N days, end)`; *month-granular* features count whole calendar months. The BTYD",
        "columns (`frequency`, `recency`, `T`, `monetary_value`) follow lifetimes /",
        "pymc-marketing's `summary_data_from_transaction_data(freq=\"D\")` with",
        "`observation_period_end` = the snapshot's last day; they are null for customers without orders.",
        "",
        "Who is in a snapshot: every known customer seen up to the month's end, for ever, and anonymous",
        "visitors (cookies never linked to a known customer) while they were active in the last",
        f"`features.anonymous_retention_days` ({spec.anonymous_retention_days}) days; an anonymous visitor",
        "idle for longer leaves the state too and starts over if it returns. An id that identity",
        "stitching merges into another customer (a cookie later linked to a known customer) leaves the",
        "state when the merge happens; its earlier months stay in the rollups under the old id.",
        "",
        "How windows are computed: up to 30 days from the daily rollups of the month and the one",
        "before; 90 days from the monthly rollups of the months the window touches; 180 and 365 days and",
        "the month-granular features from running 6- and 12-month sums kept in `customer_state` (each",
        "month adds its rollup and subtracts the one leaving, in integer cents). The long windows then",
        "subtract the day rows of their first month before the window starts (a few days), so every",
        "window is exact to the day, and a snapshot reads at most 4 monthly rollups.",
        "",
        "| column | family | type | definition |",
        "| --- | --- | --- | --- |",
    ]
    for col, dtype in feature_schema(spec).items():
        lines.append(f"| `{col}` | {fams.get(col, 'occasion')} | {dtype} | {defs[col]} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(features_markdown(), end="")
