"""Feature store assets: daily and monthly rollups, cumulative customer state, snapshot features."""

import dagster as dg
import polars as pl

from assets.buckets import bucketed_asset
from assets.metadata import OWNER, column_schema, partitions_of, preview, require
from assets.partitions import PREVIOUS_MONTH, monthly_partitions
from segpipe.config import SegpipeConfig
from segpipe.features import (
    FEATURES,
    MONTHLY_SCHEMA,
    ROLLING_DESCRIPTIONS,
    ROLLING_SCHEMA,
    _state_schema,
    build_activity_daily,
    build_activity_monthly,
    build_features,
    complete_monthly,
    daily_months,
    daily_schema,
    feature_definitions,
    feature_schema,
    leaving_months,
    monthly_months,
    update_customer_state,
    usage_thresholds,
    usage_tier,
)
from segpipe.identity import IDENTITY_KINDS, customer_identity
from segpipe.timeutil import month_key, month_range, month_start, next_month

LAST_13_MONTHS = dg.TimeWindowPartitionMapping(start_offset=-12, end_offset=0, allow_nonexistent_upstream_partitions=True)
#: the months the 90-day window touches (3 or 4)
LAST_4_MONTHS = dg.TimeWindowPartitionMapping(start_offset=-3, end_offset=0, allow_nonexistent_upstream_partitions=True)

_ROLLUP_DESCRIPTIONS = {
    "discount_orders": "Orders with a discount code.", "app_events": "Product/app events.",
    "logins": "App logins.", "feature_uses": "Feature-used events.", "invites": "Invites sent.",
    "upgrades": "Upgrades.", "signups": "Signups.", "emails_sent": "Emails sent to the customer.",
    "email_opens": "Email opens.", "email_clicks": "Email clicks.", "unsubscribes": "Email unsubscribes.",
    "page_views": "Web page views.", "pricing_views": "Pricing page views.", "cart_views": "Cart / checkout page views.",
    "product_views": "Product page views.", "web_activity": "Activity through the web.", "app_activity": "Activity in the app.",
    "email_activity": "Email opens and clicks.", "store_activity": "Store orders.",
    "night_activity": "Activity 00-06h (features.timezone).", "morning_activity": "Activity 06-12h.",
    "afternoon_activity": "Activity 12-18h.", "evening_activity": "Activity 18-24h.",
    "weekend_activity": "Activity on Saturday/Sunday (features.timezone).",
    "active_days": "Days of the month with any activity.",
    "orders_holiday": "Orders in the configured seasonal window 'holiday'.",
    "first_seen": "First event ever.", "last_seen": "Last event so far.", "first_active_day": "First day with activity.",
    "last_active_day": "Last day with activity.", "longest_gap_days": "Longest run of idle days between two active days.",
    "first_order_time": "First order.", "last_order_time": "Last order.", "first_order_day": "UTC day of the first order.",
    "last_order_day": "UTC day of the last order.", "order_days": "Distinct days with an order.",
    "first_day_revenue": "Revenue on the first order day (for the BTYD monetary value; null without orders).",
    "signup_time": "First signup.", "first_key_action_time": "First order or feature use.",
    "first_expansion_time": "First invite or upgrade.", "unsubscribed": "Unsubscribed from email at any time.",
    "day": "UTC day.", "first_time": "First event time of the day.", "last_time": "Last event time of the day.",
    "events": "Events (all kinds).", "activity": "Things the customer did: orders, app events, email opens/clicks, page views.",
    "month": "Month of the rollup.", "orders": "Orders.", "revenue": "Order revenue.",
    "category_revenue": "Orders and revenue per product category.", "features_used": "Distinct product features used.",
}


def build_feature_assets(config: SegpipeConfig) -> list[dg.AssetsDefinition]:
    monthly = monthly_partitions(config)
    spec = config.features
    common = dict(partitions_def=monthly, group_name="features", kinds={"polars", "parquet"}, owners=[OWNER],
                  backfill_policy=dg.BackfillPolicy.single_run())

    def daily_compute(context, inputs, _whole):
        spec_ = context.resources.segpipe.config().features
        events = inputs["behavioral_events"]
        for pk in partitions_of(context):
            yield pk, build_activity_daily(require(events, pk, "behavioral_events"), spec=spec_).collect()

    def daily_report(pk: str, daily: pl.LazyFrame) -> dict:
        row = daily.select(pl.len(), pl.col("customer_id").n_unique()).collect().row(0)
        return {"dagster/row_count": row[0], "active_customers": row[1]}

    customer_activity_daily = bucketed_asset(
        "customer_activity_daily", ins={"behavioral_events": dg.AssetIn("behavioral_events")},
        size_inputs={"behavioral_events": "events"}, compute=daily_compute, report=daily_report,
        description="Per customer and UTC day of the month: orders, revenue, app, email, web and intent counts, "
                    "split by channel and part of day. Exact day windows of the features come from these rows.",
        metadata={"dagster/column_schema": column_schema(daily_schema(spec), _ROLLUP_DESCRIPTIONS)}, **common)

    def monthly_compute(context, inputs, _whole):
        for pk in partitions_of(context):
            yield pk, build_activity_monthly(
                require(inputs["behavioral_events"], pk, "behavioral_events"), month=pk,
                daily=require(inputs["customer_activity_daily"], pk, "customer_activity_daily")).collect()

    def monthly_report(pk: str, roll: pl.LazyFrame) -> dict:
        n, buyers = roll.select(pl.len(), (pl.col("orders") > 0).sum()).collect().row(0)
        return {"dagster/row_count": n, "active_customers": n, "buyers": buyers}

    customer_activity_monthly = bucketed_asset(
        "customer_activity_monthly",
        ins={"behavioral_events": dg.AssetIn("behavioral_events"),
             "customer_activity_daily": dg.AssetIn("customer_activity_daily")},
        size_inputs={"behavioral_events": "events"}, compute=monthly_compute, report=monthly_report,
        description="Per customer active in the month: activity, order revenue by category, features used, and "
                    "the month's sums of the daily counters (windows of 90 days and more read these).",
        metadata={"dagster/column_schema": column_schema(MONTHLY_SCHEMA, _ROLLUP_DESCRIPTIONS)}, **common)

    def state_compute(context, inputs, _whole):
        previous_state = inputs["previous_state"]
        customer_activity_daily, customer_activity_monthly = inputs["customer_activity_daily"], inputs["customer_activity_monthly"]
        keys = partitions_of(context)
        first_partition = monthly.get_first_partition_key()
        prev_key = month_key(next_month(month_start(keys[0]), -1))
        if keys[0] == first_partition:
            prev = None
        elif prev_key in previous_state:
            prev = previous_state[prev_key]  # read by update_customer_state together with the month's inputs
        else:
            raise FileNotFoundError(
                f"customer_state for {prev_key[:7]} is missing: materialize customer_state from "
                f"{first_partition[:7]} up to {keys[0][:7]} (it accumulates month by month)")
        for pk in keys:
            if prev is None or all(c in prev.collect_schema().names() for c in ROLLING_SCHEMA):
                wanted = leaving_months(pk)
            else:  # upgrade: a state written before the running sums existed gets them from 12 months of rollups
                wanted = month_range(month_key(next_month(month_start(pk), -12)), month_key(next_month(month_start(pk), -1)))
            history = [complete_monthly(customer_activity_monthly[k], customer_activity_daily.get(k), month=k)
                       for k in wanted if k >= first_partition]
            missing = [k[:7] for k in wanted if k >= first_partition and k not in customer_activity_monthly]
            if missing:
                raise FileNotFoundError(f"customer_activity_monthly {', '.join(missing)} is missing: customer_state "
                                        f"{pk[:7]} subtracts it from the running sums; materialize it first")
            state = update_customer_state(
                prev.lazy() if prev is not None else None,
                require(customer_activity_daily, pk, "customer_activity_daily"),
                require(customer_activity_monthly, pk, "customer_activity_monthly"),
                spec=context.resources.segpipe.config().features,
                identity=customer_identity(require(inputs["identity_map"], pk, "identity_map")), month=pk,
                history=pl.concat(history) if history else None,
            ).collect()
            prev = state
            yield pk, state

    def state_report(pk: str, state: pl.LazyFrame) -> dict:
        n, buyers = state.select(pl.len(), (pl.col("orders") > 0).sum()).collect().row(0)
        return {"dagster/row_count": n, "customers": n, "buyers": buyers}

    customer_state = bucketed_asset(
        "customer_state",
        ins={
            "previous_state": dg.AssetIn("customer_state", partition_mapping=PREVIOUS_MONTH),
            # this month's rollups, and the months leaving the running sums (M-12, M-6; all 12 when
            # the previous state predates the running sums). Loaded lazily: only those are read.
            "customer_activity_daily": dg.AssetIn("customer_activity_daily", partition_mapping=LAST_13_MONTHS),
            "customer_activity_monthly": dg.AssetIn("customer_activity_monthly", partition_mapping=LAST_13_MONTHS),
            "identity_map": dg.AssetIn("identity_map"),
        },
        size_inputs={"previous_state": "customers", "customer_activity_monthly": "customers"}, compute=state_compute, report=state_report,
        description="Cumulative state per customer: lifetime aggregates (first/last times, orders, purchase days, "
                    "revenue, journey markers) and running 6- and 12-month sums (orders, revenue, active months, "
                    "category spend), the previous month's state plus this month's rollups less the months leaving "
                    "the sums. Ids merged into another customer by identity stitching, and anonymous visitors idle "
                    "for longer than features.anonymous_retention_days, are dropped.",
        metadata={"dagster/column_schema": column_schema(_state_schema(spec), {
            **_ROLLUP_DESCRIPTIONS, **ROLLING_DESCRIPTIONS, "identity": FEATURES["identity"][1],
            "orders": "Orders so far.", "revenue": "Order revenue so far.", "invites": "Invites sent so far.",
            "features_used": "Distinct features used so far."})},
        **common)

    def features_compute(context, inputs, _whole):
        spec_ = context.resources.segpipe.config().features
        daily, monthly_rollups = inputs["daily"], inputs["monthly_rollups"]
        for pk in partitions_of(context):
            win = [daily[k] for k in daily_months(pk) if k in daily]
            # rollups written by an older segpipe get the window counters from their daily rows
            mon = [complete_monthly(monthly_rollups[k], daily.get(k), month=k) for k in monthly_months(pk)
                   if k in monthly_rollups]
            state = require(inputs["customer_state"], pk, "customer_state")
            # the state carries the month's identity kinds; a state written before it did gets them here
            identity = (None if "identity" in state.collect_schema().names()
                        else customer_identity(require(inputs["identity_map"], pk, "identity_map")))
            yield pk, build_features(
                state,
                pl.concat(win) if win else pl.LazyFrame(schema=daily_schema(spec_)),
                pl.concat(mon) if mon else pl.LazyFrame(schema=MONTHLY_SCHEMA),
                identity, month=pk, spec=spec_,
            ).collect()

    def features_finish(context, pk: str, feats: pl.LazyFrame) -> pl.LazyFrame:
        # usage tiers are quantiles over all customers: computed again on the merged buckets
        spec_ = context.resources.segpipe.config().features
        return feats.with_columns(usage_tier(spec_, usage_thresholds(feats, spec_)))

    def features_report(pk: str, feats: pl.LazyFrame) -> dict:
        buyer = pl.col("orders_lifetime") > 0
        row = feats.select(
            pl.len().alias("n"), buyer.sum().alias("buyers"), pl.col("repeat_buyer").sum().alias("repeat"),
            pl.col("lapsed").mean().alias("lapsed"), pl.col("revenue_lifetime").sum().alias("revenue"),
            pl.col("recency_days").filter(buyer).median().alias("recency"),
            *[(pl.col("identity") == k).sum().alias(f"identity_{k}") for k in IDENTITY_KINDS],
        ).collect().row(0, named=True)
        return {
            "dagster/row_count": row["n"],
            "customers": row["n"],
            "buyers": row["buyers"],
            "repeat_buyers": int(row["repeat"] or 0),
            "lapsed_share": float(row["lapsed"] or 0.0),
            "revenue_lifetime": float(row["revenue"] or 0.0),
            "median_recency_days": float(row["recency"] or 0.0),
            **{f"identity_{k}": row[f"identity_{k}"] for k in IDENTITY_KINDS},
            "preview": preview(feats.drop("category_share").head(10).collect()),
        }

    customer_features = bucketed_asset(
        "customer_features",
        ins={
            "customer_state": dg.AssetIn("customer_state"),
            "daily": dg.AssetIn("customer_activity_daily", partition_mapping=LAST_13_MONTHS),
            "monthly_rollups": dg.AssetIn("customer_activity_monthly", partition_mapping=LAST_4_MONTHS),
            "identity_map": dg.AssetIn("identity_map"),
        },
        size_inputs={"customer_state": "customers"}, compute=features_compute, finish=features_finish, report=features_report,
        description="One row per customer seen up to the end of the month: behavioral features of eight families "
                    "(purchase/RFM with BTYD summary, usage, occasion, benefits, loyalty, journey, channel, intent) "
                    "as of the month's end. Column descriptions give each definition.",
        metadata={"dagster/column_schema": column_schema(feature_schema(spec), feature_definitions(spec)),
                  "feature_families": dg.MetadataValue.json(
                      {fam: [c for c, (f, _) in FEATURES.items() if f == fam]
                       for fam in dict.fromkeys(f for f, _ in FEATURES.values())})},
        **common)

    return [customer_activity_daily, customer_activity_monthly, customer_state, customer_features]
