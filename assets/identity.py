"""Identity stitching and the unified behavioral event table."""

import tempfile
from pathlib import Path

import dagster as dg
import polars as pl

from assets.ingestion import ingested_key
from assets.metadata import OWNER, column_schema, partitions_of, preview, require
from assets.partitions import HISTORY_TO_DATE, PREVIOUS_MONTH, monthly_partitions
from assets.resources import SegpipeResource
from segpipe.config import SegpipeConfig
from segpipe.contract import EVENT_SCHEMA, INGESTED_SCHEMA
from segpipe.timeutil import month_key, month_start, next_month
from segpipe.identity import (
    LINK_SCHEMA,
    MAP_SCHEMA,
    month_map,
    stitch_month,
    write_graph,
    write_links,
)


def build_identity_assets(config: SegpipeConfig) -> list[dg.AssetsDefinition]:
    monthly = monthly_partitions(config)
    sources = list(config.sources)
    ins = {f"{s}_ingested": dg.AssetIn(ingested_key(s)) for s in sources}
    common = dict(partitions_def=monthly, kinds={"polars", "parquet"}, owners=[OWNER],
                  backfill_policy=dg.BackfillPolicy.single_run())

    @dg.asset(
        ins=ins,
        group_name="identity",
        **common,
        metadata={"dagster/column_schema": column_schema(LINK_SCHEMA, {
            "node": "Identifier with its kind prefix (c: customer id, e: email hash, p: phone hash, u: app user, a: cookie).",
            "other": "An identifier seen on the same event.",
            "first_seen": "First time the two were seen together.",
        })},
    )
    def identity_links(context: dg.AssetExecutionContext, segpipe: SegpipeResource, **ingested: dict[str, pl.LazyFrame]):
        """Identifier pairs seen together on the month's events (emails as keyed hashes)."""
        slice_rows = segpipe.config().scale.slice_rows
        with tempfile.TemporaryDirectory(prefix="segpipe-identity-links-") as scratch:
            out: dict[str, pl.LazyFrame] = {}
            for pk in partitions_of(context):
                frames = [require(ingested[f"{s}_ingested"], pk, f"{s}_ingested") for s in sources]
                out[pk] = write_links(pl.concat(frames), Path(scratch) / pk, slice_rows=slice_rows)
                context.add_asset_metadata({"dagster/row_count": out[pk].select(pl.len()).collect().item()},
                                           partition_key=pk)
            yield dg.Output(out)

    @dg.asset(
        ins={
            "links": dg.AssetIn("identity_links", partition_mapping=HISTORY_TO_DATE),
            "previous_graph": dg.AssetIn("identity_graph", partition_mapping=PREVIOUS_MONTH),
        },
        group_name="identity",
        **common,
        metadata={"dagster/column_schema": column_schema(LINK_SCHEMA, {
            "node": "Identifier with its kind prefix.",
            "other": "An identifier seen on the same event in this month or before.",
            "first_seen": "First time the two were seen together.",
        })},
    )
    def identity_graph(context: dg.AssetExecutionContext, segpipe: SegpipeResource, links: dict[str, pl.LazyFrame],
                       previous_graph: dict[str, pl.LazyFrame]):
        """Every identifier link seen up to the end of the month (distinct, earliest time): the
        previous month's graph plus the month's links. The first month, or a month whose previous
        graph was never built, starts from all links to date. Months are streamed through a local
        scratch folder into the lake: a run over many months holds one at a time."""
        slice_rows = segpipe.config().scale.slice_rows
        with tempfile.TemporaryDirectory(prefix="segpipe-identity-graph-") as scratch:
            out: dict[str, pl.LazyFrame] = {}
            for pk in partitions_of(context):
                if pk not in links:
                    raise FileNotFoundError(f"identity_links has no partition {pk}")
                prev = month_key(next_month(month_start(pk), -1))
                if prev in out:
                    base, start = out[prev], "previous graph"
                elif prev in previous_graph:
                    base, start = previous_graph[prev], "previous graph"
                else:
                    base = pl.concat([lf for k, lf in links.items() if k < pk] or [pl.LazyFrame(schema=LINK_SCHEMA)])
                    start = "all links to date"
                out[pk] = write_graph(base, links[pk], Path(scratch) / pk, slice_rows=slice_rows)
                stats = out[pk].select(pl.len().alias("links"), pl.col("node").n_unique().alias("identifiers")).collect()
                context.add_asset_metadata(
                    {"dagster/row_count": stats["links"].item(), "identifiers": stats["identifiers"].item(),
                     "built_from": start},
                    partition_key=pk,
                )
            yield dg.Output(out)

    @dg.asset(
        ins={
            "graph": dg.AssetIn("identity_graph"),
            "previous_map": dg.AssetIn("identity_map", partition_mapping=PREVIOUS_MONTH),
        },
        group_name="identity",
        **common,
        metadata={"dagster/column_schema": column_schema(MAP_SCHEMA, {
            "node": "Identifier with its kind prefix.",
            "hops": "Links from the identifier to the customer id (0: the id itself; -1: synthetic id).",
            "first_seen": "First time the identifier was seen.",
        })},
    )
    def identity_map(context: dg.AssetExecutionContext, segpipe: SegpipeResource, graph: dict[str, pl.LazyFrame],
                     previous_map: dict[str, pl.LazyFrame]):
        """Every identifier seen up to the end of the month → one customer_id (the user's own id
        where a path to it exists, else a stable synthetic 'sp-' id), from the month's identity graph.
        The previous month's map is updated with the links first seen this month (only what they
        can change is worked out again); the first month, or a month whose previous map is missing
        or does not match the graph, is built from the whole graph. Both give the same map."""
        with tempfile.TemporaryDirectory(prefix="segpipe-identity-map-") as scratch:
            out: dict[str, pl.LazyFrame] = {}
            for pk in partitions_of(context):
                links = require(graph, pk, "identity_graph")
                prev = month_key(next_month(month_start(pk), -1))
                base = out.get(prev, previous_map.get(prev))
                path = Path(scratch) / f"{pk}.parquet"
                plan, built_from = month_map(base, links, since=month_start(pk),
                                             slice_rows=segpipe.config().scale.slice_rows)
                plan.sink_parquet(path, compression="lz4")
                imap = pl.scan_parquet(path)
                stats = imap.select(
                    pl.len().alias("rows"), pl.col("customer_id").null_count().alias("unmapped"),
                    pl.col("customer_id").n_unique().alias("customers"),
                    pl.col("customer_id").filter(pl.col("hops") < 0).n_unique().alias("synthetic"),
                ).collect().row(0, named=True)
                identifiers = links.filter(pl.col("node") == pl.col("other")).select(pl.len()).collect().item()
                if stats["rows"] != identifiers or stats["unmapped"]:
                    raise ValueError(f"identity_map {pk[:7]}: {stats['rows']} rows ({stats['unmapped']} without a "
                                     f"customer id) for the graph's {identifiers} identifiers ({built_from})")
                context.add_asset_metadata(
                    {
                        "dagster/row_count": stats["rows"],
                        "customers": stats["customers"],
                        "synthetic_customers": stats["synthetic"],
                        "identifiers_per_customer": stats["rows"] / max(stats["customers"], 1),
                        "built_from": built_from,
                    },
                    partition_key=pk,
                )
                out[pk] = imap
            yield dg.Output(out)

    @dg.asset(
        ins={**ins, "identity_map": dg.AssetIn("identity_map")},
        group_name="events",
        **common,
        metadata={"dagster/column_schema": column_schema(EVENT_SCHEMA)},
    )
    def behavioral_events(context: dg.AssetExecutionContext, segpipe: SegpipeResource,
                          identity_map: dict[str, pl.LazyFrame], **ingested):
        """All sources' events of the month in the canonical contract, each with its stitched customer_id."""
        slice_rows = segpipe.config().scale.slice_rows
        with tempfile.TemporaryDirectory(prefix="segpipe-behavioral-events-") as scratch:
            out: dict[str, pl.LazyFrame] = {}
            for pk in partitions_of(context):
                frames = [require(ingested[f"{s}_ingested"], pk, f"{s}_ingested") for s in sources]
                ev = stitch_month(pl.concat(frames), require(identity_map, pk, "identity_map"),
                                  Path(scratch) / pk, slice_rows=slice_rows)
                stats = ev.select(pl.len().alias("rows"), pl.col("customer_id").null_count().alias("unmatched"),
                                  pl.col("customer_id").n_unique().alias("customers")).collect().row(0, named=True)
                if stats["unmatched"]:
                    raise ValueError(f"behavioral_events {pk[:7]}: {stats['unmatched']} events have no customer_id "
                                     "after stitching")
                by_source = ev.group_by("source").len().sort("source").collect()
                context.add_asset_metadata(
                    {
                        "dagster/row_count": stats["rows"],
                        "customers": stats["customers"],
                        **{f"events_{r['source']}": r["len"] for r in by_source.iter_rows(named=True)},
                        "preview": preview(ev.head(10).collect()),
                    },
                    partition_key=pk,
                )
                out[pk] = ev
            yield dg.Output(out)

    return [identity_links, identity_graph, identity_map, behavioral_events]


__all__ = ["build_identity_assets", "INGESTED_SCHEMA"]
