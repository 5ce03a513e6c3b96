"""The canonical behavioral event contract (see DESIGN.md, "Data contract")."""

from __future__ import annotations

import polars as pl

#: The four behavioral sources, in a fixed order.
SOURCES: tuple[str, ...] = ("orders", "product", "email", "web")
SourceEnum = pl.Enum(list(SOURCES))

#: Canonical columns a source mapping may fill. Identifier columns (customer_id, email, phone,
#: user_id, anonymous_id) feed identity stitching; email and phone are direct identifiers and
#: are pseudonymized at ingestion.
CANONICAL_INPUT_COLUMNS: dict[str, str] = {
    "event_id": "Id of the event in the source; a stable hash of the source row when absent.",
    "customer_id": "The user's own customer id (orders, CRM), kept as is.",
    "email": "Email address (direct identifier: pseudonymized).",
    "phone": "Phone number (direct identifier: pseudonymized).",
    "user_id": "Product / app user id.",
    "anonymous_id": "Web cookie / device id.",
    "event_time": "When the event happened.",
    "event_type": "Kind of event, mapped to a canonical event type.",
    "amount": "Order value (orders).",
    "quantity": "Items in the order (orders).",
    "category": "Product category.",
    "channel": "Device or channel.",
    "detail": "Feature name / page path / campaign / discount code.",
}

#: Raw event type -> canonical event type, per source, when the config gives none.
DEFAULT_EVENT_TYPES: dict[str, dict[str, str]] = {
    "orders": {"order": "order"},
    "product": {t: t for t in ("signup", "login", "feature_used", "invite_sent", "upgrade")},
    "email": {
        **{t: f"email_{t}" for t in ("sent", "open", "click", "unsubscribe")},
        **{f"email_{t}": f"email_{t}" for t in ("sent", "open", "click", "unsubscribe")},
    },
    "web": {"page_view": "page_view"},
}
#: Event type used when a source maps no event_type column.
CONSTANT_EVENT_TYPE: dict[str, str] = {"orders": "order", "web": "page_view"}

EVENT_TIME = pl.Datetime("us", "UTC")

#: Ingested (pre-stitching) event: canonical columns with identifiers still separate.
INGESTED_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.String(),
    "customer_ref": pl.String(),
    "email_hash": pl.String(),
    "phone_hash": pl.String(),
    "user_id": pl.String(),
    "anonymous_id": pl.String(),
    "event_time": EVENT_TIME,
    "source": SourceEnum,
    "event_type": pl.String(),
    "amount": pl.Float64(),
    "quantity": pl.Int64(),
    "category": pl.String(),
    "channel": pl.String(),
    "detail": pl.String(),
    "source_file": pl.String(),
    "source_row": pl.Int64(),
}

#: Canonical behavioral event after identity stitching (DESIGN.md contract).
EVENT_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.String(),
    "customer_id": pl.String(),
    "event_time": EVENT_TIME,
    "source": SourceEnum,
    "event_type": pl.String(),
    "amount": pl.Float64(),
    "quantity": pl.Int64(),
    "category": pl.String(),
    "channel": pl.String(),
    "detail": pl.String(),
}

QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "source": SourceEnum,
    "source_file": pl.String(),
    "source_row": pl.Int64(),
    "reason": pl.String(),
    "raw": pl.String(),
}

COLUMN_DESCRIPTIONS: dict[str, str] = {
    "customer_id": "Stitched customer id: the user's own id where known, else 'sp-' + hash.",
    "customer_ref": "The user's own customer id as it appears in the source (null if absent).",
    "email_hash": "Keyed hash (HMAC-SHA256) of the normalised email address.",
    "phone_hash": "Keyed hash (HMAC-SHA256) of the normalised phone number.",
    "source": "Behavioral source: orders, product, email or web.",
    "source_file": "File the row was read from.",
    "source_row": "Line number in the file (CSV/JSONL, header is line 1) or 1-based row (Parquet).",
    "reason": "Why the row was quarantined.",
    "raw": "The raw row as read (direct identifiers redacted).",
    **{k: v for k, v in CANONICAL_INPUT_COLUMNS.items() if k not in ("customer_id",)},
    "snapshot_month": "Snapshot month (as of the end of this month, UTC).",
    "identity": "customer (own customer id), contact (email/app account only) or anonymous (cookies only).",
    "scheme": "Segment scheme: rfm, rules, lifecycle or cluster.",
    "segment": "Segment name within the scheme.",
    "customers": "Customers in the segment.",
    "share_customers": "Share of the snapshot's customers in the segment.",
    "revenue_365d": "Order revenue of the segment's customers in the last 365 days.",
    "share_revenue": "Share of the last 365 days' revenue.",
    "playbook_action": "Action from the config's playbook for this segment.",
    "action": "Action from the config's playbook for this segment.",
}
