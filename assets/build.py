"""Builds ``dagster.Definitions`` from a ``segpipe.yaml`` (see ``assets.definitions``)."""

from __future__ import annotations

import importlib
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
CELERY_BROKER_ENV = "SEGPIPE_CELERY_BROKER"
CELERY_BACKEND_ENV = "SEGPIPE_CELERY_BACKEND"
CELERY_DEFAULT_URL = "redis://127.0.0.1:6379/0"
K8S_NAMESPACE_ENV = "SEGPIPE_K8S_NAMESPACE"
K8S_IMAGE_ENV = "SEGPIPE_K8S_IMAGE"
K8S_MAX_CONCURRENT_ENV = "SEGPIPE_K8S_MAX_CONCURRENT"
K8S_SERVICE_ACCOUNT_ENV = "SEGPIPE_K8S_SERVICE_ACCOUNT"
K8S_ENV_SECRETS_ENV = "SEGPIPE_K8S_ENV_SECRETS"


def _optional_module(module: str, extra: str):
    """Import ``module`` (an optional executor's package) or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{EXECUTOR_ENV}={extra} needs the {module!r} package: pip install 'segpipe[{extra}]'"
        ) from exc


def celery_executor() -> dg.ExecutorDefinition:
    """dagster-celery's executor, pointed at ``$SEGPIPE_CELERY_BROKER`` / ``$SEGPIPE_CELERY_BACKEND``
    (default: Redis on 127.0.0.1:6379, database 0). The workers must use the same broker."""
    dagster_celery = _optional_module("dagster_celery", "celery")
    broker = os.environ.get(CELERY_BROKER_ENV) or CELERY_DEFAULT_URL
    backend = os.environ.get(CELERY_BACKEND_ENV) or broker
    if any(url.startswith(("redis://", "rediss://")) for url in (broker, backend)):
        _optional_module("redis", "celery")  # kombu's and celery's Redis transport need the client
    return dagster_celery.celery_executor.configured({"broker": broker, "backend": backend})


def k8s_executor() -> dg.ExecutorDefinition:
    """dagster-k8s's ``k8s_job_executor``: one Kubernetes Job per step. Optional settings from the
    environment; without them the step image is ``$DAGSTER_CURRENT_IMAGE`` (set by Dagster's Helm
    chart), the namespace and the rest come from the run launcher, and concurrency is unlimited."""
    dagster_k8s = _optional_module("dagster_k8s", "k8s")
    config: dict = {}
    if os.environ.get(K8S_NAMESPACE_ENV):
        config["job_namespace"] = os.environ[K8S_NAMESPACE_ENV]
    if os.environ.get(K8S_IMAGE_ENV):
        config["job_image"] = os.environ[K8S_IMAGE_ENV]
    if os.environ.get(K8S_SERVICE_ACCOUNT_ENV):
        config["service_account_name"] = os.environ[K8S_SERVICE_ACCOUNT_ENV]
    secrets = [s.strip() for s in os.environ.get(K8S_ENV_SECRETS_ENV, "").split(",") if s.strip()]
    if secrets:
        config["env_secrets"] = secrets
    raw = os.environ.get(K8S_MAX_CONCURRENT_ENV, "").strip()
    if raw:
        try:
            max_concurrent = int(raw)
        except ValueError:
            max_concurrent = 0
        if max_concurrent < 1:
            raise ValueError(f"{K8S_MAX_CONCURRENT_ENV}={raw!r}: expected a whole number of at least 1")
        config["max_concurrent"] = max_concurrent
    return dagster_k8s.k8s_job_executor.configured(config)


def multiprocess_executor() -> dg.ExecutorDefinition:
    """Dagster's multiprocess executor, each step a child process forked from a server that has
    already imported Dagster (and nothing that starts threads: Polars starts its thread pool on
    import, and forking a process with threads can deadlock), so steps skip Dagster's import."""
    return dg.multiprocess_executor.configured({"start_method": {"forkserver": {"preload_modules": ["dagster"]}}})


_EXECUTORS = {
    "in_process": lambda: dg.in_process_executor,
    "multiprocess": multiprocess_executor,
    "celery": celery_executor,
    "k8s": k8s_executor,
}


def build_definitions(path: str | Path | None = None, *, executor: str | None = None) -> dg.Definitions:
    """All assets, checks, jobs, schedules and resources for the config at ``path``."""
    cfg_path = config_path(path)
    config = load_config(cfg_path)
    name = executor or os.environ.get(EXECUTOR_ENV, "in_process")
    if name not in _EXECUTORS:
        raise ValueError(f"{EXECUTOR_ENV}={name!r}: expected one of {sorted(_EXECUTORS)}")
    executor_def = _EXECUTORS[name]()
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
        executor=executor_def,
    )

