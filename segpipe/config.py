"""Project configuration: ``segpipe.yaml`` validated by pydantic.

A user adapts segpipe to their own data by editing this one file. Every model is frozen and
rejects unknown keys, so a typo fails fast with a message naming the key.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from segpipe.contract import (
    CANONICAL_INPUT_COLUMNS,
    DEFAULT_EVENT_TYPES,
    SOURCES,
)

CONFIG_ENV = "SEGPIPE_CONFIG"
DEFAULT_CONFIG_NAME = "segpipe.yaml"


class ConfigError(ValueError):
    """A configuration file is missing or invalid; the message names the file and the key."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Model):
    """One behavioral source: where its files are and how their columns map to the contract."""

    path: str = Field(description="File path or glob, relative to the config file's folder.")
    format: Literal["csv", "parquet", "jsonl"] = Field(description="File format.")
    columns: dict[str, str] = Field(
        description="Canonical column -> column in the source file (see the data contract)."
    )
    timezone: str = Field(
        default="UTC", description="Time zone of naive timestamps in this source (IANA name)."
    )
    event_types: dict[str, str] | None = Field(
        default=None,
        description="Raw event type value -> canonical event type; defaults per source.",
    )
    csv_separator: str = Field(default=",", description="Field separator of CSV files.")

    @field_validator("columns")
    @classmethod
    def _known_columns(cls, columns: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(columns) - set(CANONICAL_INPUT_COLUMNS))
        if unknown:
            raise ValueError(
                f"unknown canonical column(s) {unknown}; expected some of {list(CANONICAL_INPUT_COLUMNS)}"
            )
        if "event_time" not in columns:
            raise ValueError("the mapping must name the source column for 'event_time'")
        if not {"customer_id", "email", "user_id", "anonymous_id"} & set(columns):
            raise ValueError(
                "the mapping must name at least one identifier column: "
                "customer_id, email, user_id or anonymous_id"
            )
        return columns

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, tz: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {tz!r}") from exc
        return tz


class SeasonalWindow(_Model):
    """A recurring window of the year, e.g. the holiday season, as month-day bounds (inclusive)."""

    name: str = Field(description="Short name, used in the feature column name: orders_share_<name>.")
    start: str = Field(description="First day, 'MM-DD'.")
    end: str = Field(description="Last day, 'MM-DD' (may be before start to wrap the new year).")

    @field_validator("start", "end")
    @classmethod
    def _mmdd(cls, value: str) -> str:
        try:
            dt.datetime.strptime(f"2000-{value}", "%Y-%m-%d")
        except ValueError as exc:
            raise ValueError(f"expected 'MM-DD', got {value!r}") from exc
        return value

    @field_validator("name")
    @classmethod
    def _ident(cls, value: str) -> str:
        if not value.isidentifier():
            raise ValueError(f"{value!r} must be a plain identifier (letters, digits, _)")
        return value


class FeaturesConfig(_Model):
    """Feature store settings."""

    timezone: str = Field(
        default="UTC", description="Time zone for weekday / part-of-day features (windows are in UTC days)."
    )
    lapsed_after_days: int = Field(default=90, ge=1, description="Days without any activity to count as lapsed.")
    anonymous_retention_days: int | None = Field(
        default=90, ge=1,
        description="Anonymous visitors (cookies never linked to a known customer) leave the snapshots and the "
                    "customer state after this many days without activity; one that comes back starts over "
                    "(its identifiers keep their id). null keeps them forever.")
    usage_tier_quantiles: tuple[float, float] = Field(
        default=(0.5, 0.8),
        description="Quantiles of active app days in 30 days among app users: below the first is light, "
        "from the first medium, from the second heavy; no app activity is non-user.",
    )
    regular_use_months: int = Field(
        default=3, ge=1, le=12, description="Active months out of the last 6 that count as regular use."
    )
    seasonal_windows: list[SeasonalWindow] = Field(
        default_factory=lambda: [SeasonalWindow(name="holiday", start="11-15", end="12-31")],
        description="Recurring windows for the share of orders placed in them.",
    )
    pricing_page: str = Field(default=r"^/pricing", description="Regex of pricing page paths (web detail).")
    cart_page: str = Field(default=r"^/(cart|checkout)", description="Regex of cart page paths.")
    product_page: str = Field(default=r"^/product/", description="Regex of product page paths.")
    discount_code: str = Field(
        default=r".+", description="Regex an order's detail (discount code) must match to count as discounted."
    )

    @field_validator("timezone")
    @classmethod
    def _tz(cls, tz: str) -> str:
        return SourceConfig._known_timezone(tz)

    @field_validator("usage_tier_quantiles")
    @classmethod
    def _quantiles(cls, q: tuple[float, float]) -> tuple[float, float]:
        if not 0 < q[0] < q[1] < 1:
            raise ValueError(f"need 0 < light/medium < medium/heavy < 1, got {list(q)}")
        return q


class ValidationLabels(_Model):
    """Known labels to score the clusters against (e.g. a survey, or a sample's planted truth): the
    model's metadata reports the adjusted Rand index of the fitted clusters against them. Never an
    input to the clustering."""

    path: str = Field(description="Parquet file with customer_id and the label column (relative to the config).")
    column: str = Field(default="label", description="Label column.")
    only: list[str] | None = Field(default=None, description="Score only customers with these labels.")


class ClusteringConfig(_Model):
    """Behavioral clustering with k-means and automatic k."""

    features: list[str] = Field(
        default=["recency_days", "orders_365d", "revenue_365d", "avg_order_value", "active_days_30d",
                 "days_since_last_activity"],
        description="Feature columns the clustering uses (log1p + robust scaling).",
    )
    k_min: int = Field(default=3, ge=2, description="Smallest k tried.")
    k_max: int = Field(default=8, ge=2, description="Largest k tried.")
    silhouette_sample: int = Field(
        default=5_000, ge=100, le=20_000,
        description="Rows sampled to score each k by silhouette (cost grows with its square).",
    )
    fit_sample: int = Field(
        default=200_000, ge=1_000,
        description="At most this many customers (a seeded random sample) fit the k-means models of each k; "
        "every customer is then assigned to the nearest centroid. Keeps the fit's cost bounded at millions "
        "of customers.",
    )
    min_segment_share: float = Field(
        default=0.02, ge=0, lt=0.5, description="A k whose smallest cluster is below this share is rejected."
    )
    random_state: int = Field(default=42, description="Seed for k-means and sampling.")
    refit_months: list[int] = Field(
        default=[3, 6, 9, 12], description="Months whose snapshot refits the model (quarter ends); others apply it."
    )
    match_max_distance: float = Field(
        default=1.5, gt=0,
        description="A refit cluster keeps the id of the previous model's cluster matched to it when their "
        "centroids are closer than this (scaled units); otherwise it gets a new id.",
    )
    names: dict[str, str] = Field(default_factory=dict, description="Cluster id -> name, overriding generated names.")
    validation_labels: ValidationLabels | None = Field(
        default=None, description="Labels the model's metadata scores the clusters against (adjusted Rand index).")

    @model_validator(mode="after")
    def _k_range(self) -> ClusteringConfig:
        if self.k_min > self.k_max:
            raise ValueError(f"k_min ({self.k_min}) must be <= k_max ({self.k_max})")
        if any(not 1 <= m <= 12 for m in self.refit_months):
            raise ValueError(f"refit_months must be calendar months 1..12, got {self.refit_months}")
        return self


class RfmRule(_Model):
    """One entry of the RFM segment map: score ranges 'lo-hi' (or a single score); first match wins."""

    name: str
    r: str = Field(description="Recency score range, e.g. '4-5'.")
    f: str = Field(description="Frequency score range, e.g. '1-2'.")

    @field_validator("r", "f")
    @classmethod
    def _range(cls, value: str) -> str:
        lo, _, hi = str(value).partition("-")
        try:
            lo_i, hi_i = int(lo), int(hi or lo)
        except ValueError as exc:
            raise ValueError(f"expected a score range like '4-5', got {value!r}") from exc
        if not 1 <= lo_i <= hi_i <= 5:
            raise ValueError(f"scores are 1..5 and lo <= hi, got {value!r}")
        return value

    def bounds(self, which: str) -> tuple[int, int]:
        lo, _, hi = getattr(self, which).partition("-")
        return int(lo), int(hi or lo)


#: The classic RFM segment map (R and F scores), first match wins.
DEFAULT_RFM_MAP: list[dict[str, str]] = [
    {"name": "Champions", "r": "5", "f": "4-5"},
    {"name": "Loyal Customers", "r": "3-4", "f": "4-5"},
    {"name": "Can't Lose Them", "r": "1", "f": "5"},
    {"name": "At Risk", "r": "1-2", "f": "3-5"},
    {"name": "Potential Loyalist", "r": "4-5", "f": "2-3"},
    {"name": "New Customers", "r": "5", "f": "1"},
    {"name": "Promising", "r": "4", "f": "1"},
    {"name": "Need Attention", "r": "3", "f": "3"},
    {"name": "About To Sleep", "r": "3", "f": "1-2"},
    {"name": "Lost", "r": "1", "f": "1"},
    {"name": "Hibernating", "r": "1-2", "f": "1-2"},
]


class RfmConfig(_Model):
    """RFM scoring: quintile scores over buyers and a segment map."""

    recency: str = Field(default="recency_days", description="Feature for R (lower is better).")
    frequency: str = Field(default="orders_lifetime", description="Feature for F.")
    monetary: str = Field(default="revenue_lifetime", description="Feature for M.")
    segment_map: list[RfmRule] = Field(
        default_factory=lambda: [RfmRule(**r) for r in DEFAULT_RFM_MAP],
        description="Ordered (name, R range, F range) rules; first match wins.",
    )
    no_purchase_label: str = Field(default="No purchases yet", description="Label of customers who never ordered.")


class RuleSegment(_Model):
    """A declarative segment: a SQL-like condition over feature columns."""

    name: str
    where: str = Field(description="SQL expression over feature columns, e.g. 'pricing_views_7d >= 3 AND orders_30d = 0'.")


class LifecycleConfig(_Model):
    """Thresholds of the lifecycle / journey stages."""

    churned_after_days: int = Field(default=180, ge=1, description="No activity for this long: churned.")
    lapsed_after_days: int = Field(default=60, ge=1, description="No activity for this long: lapsed.")

    @model_validator(mode="after")
    def _order(self) -> LifecycleConfig:
        if self.lapsed_after_days >= self.churned_after_days:
            raise ValueError("lapsed_after_days must be below churned_after_days")
        return self


SCHEME_NAMES: tuple[str, ...] = ("rfm", "rules", "lifecycle", "cluster")


def check_scheme(name: str, where: str) -> str:
    """``name`` if it is a segmentation scheme, else a ConfigError naming ``where`` and the choices."""
    if name not in SCHEME_NAMES:
        raise ConfigError(f"{where}: unknown scheme {name!r}; expected one of {', '.join(SCHEME_NAMES)}")
    return name


class SegmentsConfig(_Model):
    """Segmentation schemes (RFM, rules, lifecycle, clusters)."""

    rfm: RfmConfig = Field(default_factory=RfmConfig)
    rules: list[RuleSegment] = Field(default_factory=list, description="Rule segments; first match wins.")
    rules_default: str = Field(default="Unsegmented", description="Label when no rule matches.")
    lifecycle: LifecycleConfig = Field(default_factory=LifecycleConfig)
    clustering: ClusteringConfig = Field(default_factory=ClusteringConfig)
    exports: list[str] = Field(default_factory=lambda: list(SCHEME_NAMES),
                               description="Schemes written as activation CSVs (default: all four).")

    @field_validator("exports")
    @classmethod
    def _export_schemes(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in SCHEME_NAMES:
                raise ValueError(f"unknown scheme {name!r}; expected one of {', '.join(SCHEME_NAMES)}")
        return sorted(set(value), key=SCHEME_NAMES.index)


#: Current behavior (30-day windows and recency): what moves first when customers change.
DEFAULT_DRIFT_FEATURES = ["recency_days", "orders_30d", "revenue_30d", "orders_90d", "active_days_30d",
                          "app_days_30d", "product_views_30d", "email_open_rate_30d"]
DEFAULT_DRIFT_CATEGORICAL = ["usage_tier"]


class DriftConfig(_Model):
    """Drift thresholds. A feature has *drifted* when its distance reaches the threshold (normalised
    Wasserstein for numeric features, Jensen-Shannon for categorical ones, Evidently's defaults)
    and the shift is statistically significant; the month has *dataset drift* when the drifted
    share of features reaches ``dataset_drift_share``. PSI is reported per feature with its
    classic bands (``psi_warn``/``psi_alert``)."""

    features: list[str] = Field(default_factory=lambda: list(DEFAULT_DRIFT_FEATURES),
                                description="Numeric features watched (default: current behavior, 30-day windows).")
    categorical: list[str] = Field(default_factory=lambda: list(DEFAULT_DRIFT_CATEGORICAL),
                                   description="Categorical features watched.")
    psi_warn: float = Field(default=0.1, ge=0, description="PSI band: moderate shift.")
    psi_alert: float = Field(default=0.25, ge=0, description="PSI band: major shift.")
    wasserstein: float = Field(default=0.1, gt=0, description="Normalised Wasserstein distance: drifted at or above.")
    js: float = Field(default=0.1, gt=0, le=1, description="Jensen-Shannon distance: drifted at or above.")
    significance: float = Field(default=0.01, gt=0, lt=1,
                                description="A shift counts only when the chi-square p-value is below this.")
    warn_share: float = Field(default=0.25, gt=0, le=1, description="Drifted share of features that warns.")
    dataset_drift_share: float = Field(default=0.5, gt=0, le=1,
                                       description="Drifted share of features that declares dataset drift (alert).")
    warmup_months: int = Field(default=13, ge=0,
                               description="Months after first_month that report drift but never alert: until the "
                                           "history holds the same month-to-month change a year earlier, season "
                                           "cannot be told from drift.")
    centroid_warn: float = Field(default=0.5, gt=0, description="Cluster mean shift (scaled units) that warns.")
    centroid_alert: float = Field(default=1.0, gt=0, description="Cluster mean shift (scaled units) that alerts.")

    @model_validator(mode="after")
    def _order(self) -> DriftConfig:
        for low, high in (("psi_warn", "psi_alert"), ("warn_share", "dataset_drift_share"),
                          ("centroid_warn", "centroid_alert")):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"{low} ({getattr(self, low)}) must be <= {high} ({getattr(self, high)})")
        return self


class ScaleConfig(_Model):
    """How the per-customer steps split their work (docs/scale.md)."""

    buckets: int | None = Field(
        default=None, ge=1, le=4096,
        description="Customer-hash buckets of the per-customer steps (daily and monthly rollups, customer "
                    "state, snapshot features). Each bucket is its own Dagster step, so an executor can run "
                    "them in parallel and on different machines, and a step holds one bucket's customers. "
                    "Unset: chosen per step from the data size (bucket_events, bucket_customers).")
    bucket_events: int = Field(
        default=2_000_000, ge=1_000,
        description="With buckets unset: one bucket of the rollups per this many events of the month.")
    bucket_customers: int = Field(
        default=300_000, ge=1_000,
        description="With buckets unset: one bucket of customer_state and customer_features per this many "
                    "customers (rows of the customer state, or of the month's rollup).")
    slice_rows: int = Field(
        default=500_000, ge=1_000,
        description="Rows sorted at once when a month's table is written by ingestion, the identity graph "
                    "and stitching: the month is cut into ranges of its first sort key (event time, or "
                    "identifier) of about this many rows, sorted one at a time.")


class SegpipeConfig(_Model):
    """The whole project file."""

    first_month: str = Field(description="First month of history, 'YYYY-MM'.")
    lake_dir: str = Field(
        default="data/lake",
        description="Parquet lake: a local folder (relative to the config file) or an object-store URL "
                    "(s3://bucket/prefix, gs://bucket/prefix, az://container/prefix; credentials from "
                    "environment variables, see docs/object-store.md).")
    sources: dict[str, SourceConfig] = Field(description="Any subset of: orders, product, email, web.")
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    segments: SegmentsConfig = Field(default_factory=SegmentsConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    scale: ScaleConfig = Field(default_factory=ScaleConfig)
    playbook: dict[str, str] = Field(default_factory=dict, description="Segment name -> action.")
    base_dir: str = Field(default=".", description="Folder relative paths resolve against (set by the loader).")

    @field_validator("first_month")
    @classmethod
    def _month(cls, value: str) -> str:
        try:
            dt.datetime.strptime(value, "%Y-%m")
        except ValueError as exc:
            raise ValueError(f"expected 'YYYY-MM', got {value!r}") from exc
        return value

    @field_validator("lake_dir")
    @classmethod
    def _lake(cls, value: str) -> str:
        from segpipe.lake import is_url, normalize_url

        if not value.strip():
            raise ValueError("must not be empty")
        return normalize_url(value) if is_url(value) else value

    @field_validator("sources")
    @classmethod
    def _source_names(cls, sources: dict[str, SourceConfig]) -> dict[str, SourceConfig]:
        unknown = sorted(set(sources) - set(SOURCES))
        if unknown:
            raise ValueError(f"unknown source(s) {unknown}; expected some of {list(SOURCES)}")
        if not sources:
            raise ValueError("configure at least one source")
        if "orders" in sources and "amount" not in sources["orders"].columns:
            raise ValueError("orders.columns must map 'amount' (the order value)")
        return sources

    # -- derived paths -------------------------------------------------------------------------
    @property
    def first_month_start(self) -> dt.datetime:
        return dt.datetime.strptime(self.first_month, "%Y-%m").replace(tzinfo=dt.timezone.utc)

    @property
    def lake_path(self) -> Path | str:
        """The lake root: a local folder (resolved against the config's folder), or the
        object-store URL as a ``str`` (:mod:`segpipe.lake`)."""
        from segpipe.lake import lake_root

        return lake_root(self.lake_dir, self.base_dir)

    def source_glob(self, name: str) -> str:
        return str(resolve(self.base_dir, self.sources[name].path))

    def event_type_map(self, name: str) -> dict[str, str]:
        src = self.sources[name]
        return dict(src.event_types) if src.event_types is not None else dict(DEFAULT_EVENT_TYPES[name])


def resolve(base_dir: str | Path, path: str) -> Path:
    """Resolve ``path`` against ``base_dir`` unless it is absolute (``~`` expanded)."""
    p = Path(os.path.expanduser(path))
    return p if p.is_absolute() else (Path(base_dir) / p).resolve()


def config_path(path: str | Path | None = None) -> Path:
    """The config file in use: explicit path, else ``$SEGPIPE_CONFIG``, else ``./segpipe.yaml``."""
    if path is not None:
        return Path(path).resolve()
    env = os.environ.get(CONFIG_ENV)
    return Path(env).resolve() if env else (Path.cwd() / DEFAULT_CONFIG_NAME).resolve()


def parse_config(data: dict, *, base_dir: str | Path = ".", origin: str = "<config>") -> SegpipeConfig:
    """Validate a config mapping; raise :class:`ConfigError` naming each bad key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping at the top level, got {type(data).__name__}")
    data = {**data, "base_dir": str(Path(base_dir).resolve())}
    try:
        return SegpipeConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "<root>"
            msg = "unknown key (not allowed)" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{key}: {msg}")
        raise ConfigError(f"{origin}: invalid configuration\n  " + "\n  ".join(problems)) from None


def load_config(path: str | Path | None = None) -> SegpipeConfig:
    """Load and validate the project config (see :func:`config_path` for which file)."""
    p = config_path(path)
    if not p.is_file():
        raise ConfigError(
            f"config file not found: {p} (set {CONFIG_ENV} or run from the folder holding {DEFAULT_CONFIG_NAME})"
        )
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    return parse_config(data or {}, base_dir=p.parent, origin=str(p))
