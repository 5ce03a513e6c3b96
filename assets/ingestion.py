"""Ingestion assets: one per configured source, partitioned by event month."""

import tempfile
from pathlib import Path

import dagster as dg

from assets.metadata import OWNER, column_schema, partitions_of, preview
from assets.partitions import monthly_partitions
from assets.resources import SegpipeResource
from segpipe.config import SegpipeConfig
from segpipe.contract import INGESTED_SCHEMA, QUARANTINE_SCHEMA
from segpipe.ingest import ingest_source
from segpipe.readers import SourceChangedError, SourceError

ACCOUNTING_CHECK = "rows_accounted"


def ingested_key(source: str) -> dg.AssetKey:
    return dg.AssetKey(f"{source}_ingested")


def quarantine_key(source: str) -> dg.AssetKey:
    return dg.AssetKey(f"{source}_quarantine")


def build_ingestion_asset(config: SegpipeConfig, source: str) -> dg.AssetsDefinition:
    """The multi-asset that ingests ``source``: valid events plus the quarantine table."""
    cfg = config.sources[source]
    events_key, quarantine_key_ = ingested_key(source), quarantine_key(source)

    @dg.multi_asset(
        name=f"ingest_{source}",
        outs={
            events_key.to_python_identifier(): dg.AssetOut(
                key=events_key,
                description=(
                    f"Valid {source} events of the month: columns mapped to the contract, direct identifiers "
                    f"pseudonymized, exact duplicates removed. Read from {cfg.path} ({cfg.format})."
                ),
                group_name="ingestion",
                kinds={"polars", "parquet", cfg.format},
                owners=[OWNER],
                metadata={"dagster/column_schema": column_schema(INGESTED_SCHEMA), "source_path": cfg.path},
            ),
            quarantine_key_.to_python_identifier(): dg.AssetOut(
                key=quarantine_key_,
                description=f"Rows of {source} that failed validation, with file, row number and reason.",
                group_name="ingestion",
                kinds={"polars", "parquet"},
                owners=[OWNER],
                metadata={"dagster/column_schema": column_schema(QUARANTINE_SCHEMA)},
            ),
        },
        check_specs=[
            dg.AssetCheckSpec(
                ACCOUNTING_CHECK,
                asset=events_key,
                blocking=True,
                description="Every row read is kept, quarantined or a removed duplicate: read == kept + quarantined + duplicates.",
            )
        ],
        partitions_def=monthly_partitions(config),
        backfill_policy=dg.BackfillPolicy.single_run(),
        retry_policy=dg.RetryPolicy(max_retries=2, delay=1, backoff=dg.Backoff.EXPONENTIAL),
        can_subset=False,
    )
    def _ingest(context: dg.AssetExecutionContext, segpipe: SegpipeResource):
        # Each month's events are sorted into a local scratch file and streamed into the lake from
        # there by the IO manager (while this generator is suspended at its yield): a run over many
        # months never holds them in memory.
        with tempfile.TemporaryDirectory(prefix=f"segpipe-{source}-") as scratch:
            yield from _ingest_months(context, segpipe, Path(scratch))

    def _ingest_months(context: dg.AssetExecutionContext, segpipe: SegpipeResource, scratch: Path):
        keys = partitions_of(context)
        try:
            results = ingest_source(segpipe.config(), source, keys, key=segpipe.key(), out_dir=scratch)
        except SourceChangedError:
            raise  # a file still being written: the retry policy tries again a little later
        except SourceError as exc:
            # A problem in the data or the config: retrying cannot help, fail once with the reason.
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        per_month = {}
        for pk, res in results.items():
            stats = res.stats()
            per_month[pk] = stats
            read = max(stats["rows_read"], 1)
            context.add_asset_metadata(
                {
                    **stats,
                    "dagster/row_count": res.rows_kept,
                    "quarantine_rate": stats["rows_quarantined"] / read,
                    "files_scanned": len(res.files),
                    "files_read": res.files_read,
                    "preview": preview(res.events.head(10).drop("email_hash", "phone_hash").lazy().collect()),
                },
                asset_key=events_key,
                partition_key=pk,
            )
            reasons = res.quarantine.group_by("reason").len().sort("len", descending=True).head(20)
            context.add_asset_metadata(
                {"dagster/row_count": res.rows_quarantined, "top_reasons": preview(reasons, 20)},
                asset_key=quarantine_key_,
                partition_key=pk,
            )
            context.log.info(f"{source} {pk[:7]}: " + ", ".join(f"{k}={v}" for k, v in stats.items()))
        unbalanced = {pk: s for pk, s in per_month.items() if not results[pk].balanced}
        yield dg.Output({pk: r.events for pk, r in results.items()}, output_name=events_key.to_python_identifier())
        yield dg.Output({pk: r.quarantine for pk, r in results.items()}, output_name=quarantine_key_.to_python_identifier())
        yield dg.AssetCheckResult(
            check_name=ACCOUNTING_CHECK,
            asset_key=events_key,
            passed=not unbalanced,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "months": len(per_month),
                "rows_read": sum(s["rows_read"] for s in per_month.values()),
                "rows_kept": sum(s["rows_kept"] for s in per_month.values()),
                "rows_quarantined": sum(s["rows_quarantined"] for s in per_month.values()),
                "duplicates_removed": sum(s["duplicates_removed"] for s in per_month.values()),
                "unbalanced_months": dg.MetadataValue.json(unbalanced),
            },
        )

    return _ingest
