"""Metadata helpers shared by the assets: column schemas, previews, per-partition figures."""

from __future__ import annotations

import dagster as dg
import polars as pl

from segpipe.contract import COLUMN_DESCRIPTIONS

OWNER = "team:data-platform"


def column_schema(schema: dict[str, pl.DataType], descriptions: dict[str, str] | None = None) -> dg.TableSchema:
    """A ``dagster/column_schema`` value from a Polars schema and one-line definitions."""
    desc = {**COLUMN_DESCRIPTIONS, **(descriptions or {})}
    return dg.TableSchema(
        columns=[dg.TableColumn(name=c, type=str(t), description=desc.get(c)) for c, t in schema.items()]
    )


def _cell(value: object, limit: int = 60) -> str:
    text = "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def preview(frame: pl.DataFrame, rows: int = 10) -> dg.MetadataValue:
    """A Markdown preview of the first rows."""
    head = frame.head(rows)
    if head.width == 0:
        return dg.MetadataValue.md("_empty_")
    cols = head.columns
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in head.iter_rows():
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return dg.MetadataValue.md("\n".join(lines))


def partitions_of(context: dg.AssetExecutionContext) -> list[str]:
    """The partition keys this run materializes, sorted."""
    return sorted(context.partition_keys)


def require(frames: dict[str, pl.LazyFrame], key: str, asset: str) -> pl.LazyFrame:
    """The upstream partition ``key`` of ``asset``; a clear error when it was never materialized."""
    if key not in frames:
        raise FileNotFoundError(f"upstream {asset} has no partition {key}: materialize {asset} for {key[:7]} first")
    return frames[key]
