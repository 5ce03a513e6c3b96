"""Builds ``dagster.Definitions`` from a ``segpipe.yaml`` (see ``assets.definitions``)."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from assets.drift import build_drift_assets
from assets.features import build_feature_assets
from assets.identity import build_identity_assets
from assets.ingestion import build_ingestion_asset
from assets.io_manager import ParquetIOManager
from assets.partitions import monthly_partitions
from assets.report import build_report_assets
from assets.resources import SegpipeResource
from assets.segments import build_segment_assets
from schedules import build_jobs, build_schedules, build_sensors
from segpipe.config import config_path, load_config
from segpipe.features import feature_schema
from segpipe.schemes import compile_rules
from segpipe.segments import check_clustering_features, check_drift_features

EXECUTOR_ENV = "SEGPIPE_EXECUTOR"
_EXECUTORS = {"in_process": dg.in_process_executor, "multiprocess": dg.multiprocess_executor}


def build_definitions(path: str | Path | None = None, *, executor: str | None = None) -> dg.Definitions:
    """All assets, checks, jobs, schedules and resources for the config at ``path``."""
    cfg_path = config_path(path)
    config = load_config(cfg_path)
    name = executor or os.environ.get(EXECUTOR_ENV, "in_process")
    if name not in _EXECUTORS:
        raise ValueError(f"{EXECUTOR_ENV}={name!r}: expected one of {sorted(_EXECUTORS)}")
    schema = feature_schema(config.features)
    check_clustering_features(schema, config.segments.clustering.features)
    check_drift_features(schema, config.drift.features, config.drift.categorical)
    compile_rules(config.segments.rules, schema)  # unknown column -> ConfigError naming the rule
    assets = [
        *(build_ingestion_asset(config, s) for s in config.sources),
        *build_identity_assets(config),
        *build_feature_assets(config),
        *build_segment_assets(config),
        *build_drift_assets(config),
        *build_report_assets(config),
    ]
    jobs = build_jobs(monthly_partitions(config))
    return dg.Definitions(
        assets=assets,
        jobs=jobs,
        schedules=build_schedules(jobs),
        sensors=build_sensors(monthly_partitions(config)),
        resources={
            "io_manager": ParquetIOManager(lake_dir=str(config.lake_path)),
            "segpipe": SegpipeResource(config_path=str(cfg_path)),
        },
        executor=_EXECUTORS[name],
    )

