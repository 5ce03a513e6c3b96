"""Identity stitching and the unified behavioral event table."""


import dagster as dg
import polars as pl

from assets.ingestion import ingested_key
from assets.metadata import OWNER, column_schema, partitions_of, preview, require
from assets.partitions import HISTORY_TO_DATE, monthly_partitions
from segpipe.config import SegpipeConfig
from segpipe.contract import EVENT_SCHEMA, INGESTED_SCHEMA
from segpipe.identity import LINK_SCHEMA, MAP_SCHEMA, build_identity_map, stitch_events
from segpipe.identity import identity_links as extract_identity_links


def build_identity_assets(config: SegpipeConfig) -> list[dg.AssetsDefinition]:
    monthly = monthly_partitions(config)
    sources = list(config.sources)
    ins = {f"{s}_ingested": dg.AssetIn(ingested_key(s)) for s in sources}

    @dg.asset(
        ins=ins,
        partitions_def=monthly,
        group_name="identity",
        kinds={"polars", "parquet"},
        owners=[OWNER],
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"dagster/column_schema": column_schema(LINK_SCHEMA, {
            "node": "Identifier with its kind prefix (c: customer id, e: email hash, p: phone hash, u: app user, a: cookie).",
            "other": "An identifier seen on the same event.",
            "first_seen": "First time the two were seen together.",
        })},
    )
    def identity_links(context: dg.AssetExecutionContext, **ingested: dict[str, pl.LazyFrame]):
        """Identifier pairs seen together on the month's events (emails as keyed hashes)."""
        out = {}
        for pk in partitions_of(context):
            frames = [require(ingested[f"{s}_ingested"], pk, f"{s}_ingested") for s in sources]
            links = extract_identity_links(pl.concat(frames)).collect().sort("node", "other")
            out[pk] = links
            context.add_asset_metadata({"dagster/row_count": links.height}, partition_key=pk)
        return out

    @dg.asset(
        ins={"links": dg.AssetIn("identity_links", partition_mapping=HISTORY_TO_DATE)},
        partitions_def=monthly,
        group_name="identity",
        kinds={"polars", "parquet"},
        owners=[OWNER],
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"dagster/column_schema": column_schema(MAP_SCHEMA, {
            "node": "Identifier with its kind prefix.",
            "hops": "Links from the identifier to the customer id (0: the id itself; -1: synthetic id).",
            "first_seen": "First time the identifier was seen.",
        })},
    )
    def identity_map(context: dg.AssetExecutionContext, links: dict[str, pl.LazyFrame]):
        """Every identifier seen up to the end of the month → one customer_id (the user's own id
        where a path to it exists, else a stable synthetic 'sp-' id)."""
        out = {}
        for pk in partitions_of(context):
            to_date = [lf for k, lf in links.items() if k <= pk]
            if pk not in links:
                raise FileNotFoundError(f"identity_links has no partition {pk}")
            imap = build_identity_map(pl.concat(to_date))
            out[pk] = imap
            customers = imap["customer_id"].n_unique()
            synthetic = imap.filter(pl.col("hops") < 0)["customer_id"].n_unique()
            context.add_asset_metadata(
                {
                    "dagster/row_count": imap.height,
                    "customers": customers,
                    "synthetic_customers": synthetic,
                    "identifiers_per_customer": imap.height / max(customers, 1),
                },
                partition_key=pk,
            )
        return out

    @dg.asset(
        ins={**ins, "identity_map": dg.AssetIn("identity_map")},
        partitions_def=monthly,
        group_name="events",
        kinds={"polars", "parquet"},
        owners=[OWNER],
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"dagster/column_schema": column_schema(EVENT_SCHEMA)},
    )
    def behavioral_events(context: dg.AssetExecutionContext, identity_map: dict[str, pl.LazyFrame], **ingested):
        """All sources' events of the month in the canonical contract, each with its stitched customer_id."""
        out = {}
        for pk in partitions_of(context):
            frames = [require(ingested[f"{s}_ingested"], pk, f"{s}_ingested") for s in sources]
            ev = (
                stitch_events(pl.concat(frames), require(identity_map, pk, "identity_map"))
                .select(list(EVENT_SCHEMA))
                .collect()
                .sort("event_time", "source", "event_id")
            )
            unmatched = ev["customer_id"].null_count()
            if unmatched:
                raise ValueError(f"behavioral_events {pk[:7]}: {unmatched} events have no customer_id after stitching")
            out[pk] = ev
            by_source = ev.group_by("source").len().sort("source")
            context.add_asset_metadata(
                {
                    "dagster/row_count": ev.height,
                    "customers": ev["customer_id"].n_unique(),
                    **{f"events_{r['source']}": r["len"] for r in by_source.iter_rows(named=True)},
                    "preview": preview(ev),
                },
                partition_key=pk,
            )
        return out

    return [identity_links, identity_map, behavioral_events]


__all__ = ["build_identity_assets", "INGESTED_SCHEMA"]
