"""The executor chosen by ``$SEGPIPE_EXECUTOR``: every choice loads (Kubernetes without a cluster,
also through ``dagster definitions validate``), and one month runs on two real Celery workers
fed by a Redis broker started here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from assets.build import build_definitions
from segpipe.lake import asset_path

from . import celery_support
from .browser_support import BIN, REPO, make_instance_home, make_sample_project, materialize

EXECUTORS = ["in_process", "multiprocess", "celery", "k8s"]
EXECUTOR_VARS = ["SEGPIPE_EXECUTOR", "SEGPIPE_CELERY_BROKER", "SEGPIPE_CELERY_BACKEND", "SEGPIPE_K8S_NAMESPACE",
                 "SEGPIPE_K8S_IMAGE", "SEGPIPE_K8S_MAX_CONCURRENT", "SEGPIPE_K8S_SERVICE_ACCOUNT",
                 "SEGPIPE_K8S_ENV_SECRETS"]
MONTH = "2024-11-01"
#: customer-hash buckets of the Celery run: each bucketed asset runs BUCKETS bucket steps
BUCKETS = 3
BUCKETED = ("customer_activity_daily", "customer_activity_monthly", "customer_state", "customer_features",
            "segment_membership")


@pytest.fixture
def clean_env(monkeypatch):
    """No executor setting inherited from the shell running the tests."""
    for var in EXECUTOR_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def executor_config(job: dg.JobDefinition) -> dict:
    """The config an executor was ``.configured`` with, as Dagster resolves it."""
    return job.executor_def.config_schema.resolve_config({}).value["config"]


@pytest.mark.parametrize("name", EXECUTORS)
def test_every_executor_loads(clean_env, name):
    job = build_definitions(REPO / "segpipe.yaml", executor=name).resolve_job_def("segpipe_refresh")
    assert job.executor_def.name == name


@pytest.mark.parametrize("name", EXECUTORS)
def test_executor_from_the_environment(clean_env, name):
    clean_env.setenv("SEGPIPE_EXECUTOR", name)
    defs = build_definitions(REPO / "segpipe.yaml")
    assert {defs.resolve_job_def(j).executor_def.name for j in ("segpipe_refresh", "segpipe_refit")} == {name}


def test_default_is_in_process_and_unknown_names_are_refused(clean_env):
    job = build_definitions(REPO / "segpipe.yaml").resolve_job_def("segpipe_refresh")
    assert job.executor_def.name == "in_process"
    clean_env.setenv("SEGPIPE_EXECUTOR", "dask")
    with pytest.raises(ValueError, match=r"SEGPIPE_EXECUTOR='dask': expected one of \['celery', 'in_process', 'k8s', "
                                         r"'multiprocess'\]"):
        build_definitions(REPO / "segpipe.yaml")


def test_celery_broker_and_backend_come_from_the_environment(clean_env):
    job = build_definitions(REPO / "segpipe.yaml", executor="celery").resolve_job_def("segpipe_refresh")
    cfg = executor_config(job)
    assert (cfg["broker"], cfg["backend"]) == ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0")
    clean_env.setenv("SEGPIPE_CELERY_BROKER", "redis://queue.internal:6380/3")
    cfg = executor_config(build_definitions(REPO / "segpipe.yaml", executor="celery").resolve_job_def("segpipe_refresh"))
    assert (cfg["broker"], cfg["backend"]) == ("redis://queue.internal:6380/3",) * 2  # backend follows the broker
    clean_env.setenv("SEGPIPE_CELERY_BACKEND", "redis://results.internal:6379/1")
    cfg = executor_config(build_definitions(REPO / "segpipe.yaml", executor="celery").resolve_job_def("segpipe_refresh"))
    assert (cfg["broker"], cfg["backend"]) == ("redis://queue.internal:6380/3", "redis://results.internal:6379/1")


def test_k8s_settings_come_from_the_environment(clean_env):
    cfg = executor_config(build_definitions(REPO / "segpipe.yaml", executor="k8s").resolve_job_def("segpipe_refresh"))
    assert not {"job_namespace", "job_image", "max_concurrent", "env_secrets", "service_account_name"} & set(cfg)
    clean_env.setenv("SEGPIPE_K8S_NAMESPACE", "segpipe")
    clean_env.setenv("SEGPIPE_K8S_IMAGE", "registry.example/segpipe:1.2")
    clean_env.setenv("SEGPIPE_K8S_MAX_CONCURRENT", "4")
    clean_env.setenv("SEGPIPE_K8S_SERVICE_ACCOUNT", "segpipe-runner")
    clean_env.setenv("SEGPIPE_K8S_ENV_SECRETS", "segpipe-key, segpipe-db")
    cfg = executor_config(build_definitions(REPO / "segpipe.yaml", executor="k8s").resolve_job_def("segpipe_refresh"))
    assert cfg["job_namespace"] == "segpipe" and cfg["job_image"] == "registry.example/segpipe:1.2"
    assert cfg["max_concurrent"] == 4 and cfg["service_account_name"] == "segpipe-runner"
    assert cfg["env_secrets"] == ["segpipe-key", "segpipe-db"]
    for bad in ("0", "four", "-2"):
        clean_env.setenv("SEGPIPE_K8S_MAX_CONCURRENT", bad)
        with pytest.raises(ValueError, match="SEGPIPE_K8S_MAX_CONCURRENT"):
            build_definitions(REPO / "segpipe.yaml", executor="k8s")


@pytest.mark.parametrize(("name", "module"), [("celery", "dagster_celery"), ("celery", "redis"), ("k8s", "dagster_k8s")])
def test_missing_extra_names_the_pip_extra(clean_env, name, module):
    clean_env.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    with pytest.raises(ImportError, match=rf"pip install 'segpipe\[{name}\]'"):
        build_definitions(REPO / "segpipe.yaml", executor=name)


def test_dagster_definitions_validate_loads_the_k8s_code_location(tmp_path):
    """The workspace's code location, loaded by Dagster's own CLI with SEGPIPE_EXECUTOR=k8s and no
    cluster; a broken k8s setting fails the same command."""
    home = make_instance_home(tmp_path / "home")
    with dg.DagsterInstance.local_temp(str(home)):
        pass  # create the instance's SQLite storage once: two processes creating it at once can collide
    base = {k: v for k, v in os.environ.items() if k not in EXECUTOR_VARS}
    base.update(DAGSTER_HOME=str(home), SEGPIPE_CONFIG=str(REPO / "segpipe.yaml"), SEGPIPE_EXECUTOR="k8s")
    cmd = [str(BIN / "dagster"), "definitions", "validate", "-w", str(REPO / "workspace.yaml")]
    good = subprocess.Popen(cmd, cwd=REPO, env={**base, "SEGPIPE_K8S_MAX_CONCURRENT": "2"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    bad = subprocess.Popen(cmd, cwd=REPO, env={**base, "SEGPIPE_K8S_MAX_CONCURRENT": "none"},
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    good_out, bad_out = good.communicate(timeout=240)[0], bad.communicate(timeout=240)[0]
    assert good.returncode == 0, good_out
    assert "Validation successful for code location" in good_out
    assert bad.returncode == 1, bad_out
    assert "SEGPIPE_K8S_MAX_CONCURRENT='none'" in bad_out


@pytest.fixture
def redis_server(tmp_path):
    """A running ``redis-server`` on loopback; skipped where it is not installed, except under CI
    (CI=true), where that is a failure."""
    if celery_support.redis_server_binary() is None:
        reason = "redis-server not installed (apt-get install redis-server)"
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"CI must run the Celery executor test: {reason}")
        pytest.skip(reason)
    server = celery_support.RedisServer(tmp_path / "redis")
    try:
        yield server.start()
    finally:
        server.stop()


def _step_events(instance: dg.DagsterInstance, run_id: str):
    """{step: [event type, ...]}, the Celery node that ran each step, and each STEP_START's pid."""
    types, node, pid = defaultdict(list), {}, {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or not entry.step_key:
            continue
        types[entry.step_key].append(event.event_type_value)
        if event.event_type_value == "STEP_START":
            pid[entry.step_key] = event.pid
        metadata = (event.engine_event_data.metadata or {}) if event.event_type_value == "ENGINE_EVENT" else {}
        if "Celery worker" in metadata:
            node[entry.step_key] = metadata["Celery worker"].value
    return types, node, pid


@pytest.mark.timeout(600)
def test_one_month_runs_on_two_celery_workers(tmp_path, redis_server):
    config = make_sample_project(tmp_path / "project", customers=200, months=1, scale={"buckets": BUCKETS})
    home = make_instance_home(tmp_path / "home")
    with dg.DagsterInstance.local_temp(str(home)):
        pass  # create the instance's SQLite storage once, before three processes share it
    env = {k: v for k, v in os.environ.items() if k not in EXECUTOR_VARS}
    env.update(DAGSTER_HOME=str(home), SEGPIPE_CONFIG=str(config), SEGPIPE_EXECUTOR="celery",
               SEGPIPE_CELERY_BROKER=redis_server.url, SEGPIPE_CELERY_BACKEND=redis_server.url)
    worker_yaml = celery_support.write_worker_config(tmp_path / "celery.yaml", redis_server.url, redis_server.url)
    workers = [celery_support.CeleryWorker(n, worker_yaml, env, tmp_path) for n in ("segpipe-a", "segpipe-b")]
    try:
        for w in workers:
            w.start()
        nodes = [w.wait() for w in workers]
        run = subprocess.run(
            [str(BIN / "dagster"), "job", "execute", "-m", "assets.definitions", "-a", "defs",
             "-j", "segpipe_refresh", "--tags", json.dumps({"dagster/partition": MONTH})],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        )
        worker_pids = {w.nodename: w.pids() for w in workers}
    except BaseException:
        for w in workers:
            print(f"--- {w.name}\n{w.log()[-3000:]}")
        raise
    finally:
        for w in workers:
            w.stop()
    logs = "\n".join(f"--- {w.name}\n{w.log()[-3000:]}" for w in workers)
    assert run.returncode == 0, f"{run.stdout[-4000:]}\n{run.stderr[-4000:]}\n{logs}"

    with dg.DagsterInstance.from_config(str(home)) as instance:
        (record,) = instance.get_runs()
        assert record.status == dg.DagsterRunStatus.SUCCESS
        assert record.tags["dagster/partition"] == MONTH
        plan = instance.get_execution_plan_snapshot(record.execution_plan_snapshot_id)
        types, node, pid = _step_events(instance, record.run_id)

    job = build_definitions(config, executor="celery").resolve_job_def("segpipe_refresh")
    # one step per op; the bucketed assets' graphs: plan, one step per bucket, merge
    bucketed = sorted(n.name for n in job.nodes if isinstance(n.definition, dg.GraphDefinition))
    assert bucketed == sorted(BUCKETED)
    steps = sorted([n.name for n in job.nodes if n.name not in bucketed] + [
        f"{a}.{a}__{op}" for a in bucketed for op in ("plan", "merge", *(f"bucket[b{b}]" for b in range(BUCKETS)))])
    assert set(plan.step_keys_to_execute) == {s for s in steps if "[" not in s} | {
        f"{a}.{a}__bucket[?]" for a in bucketed}
    failed = {s: t for s, t in types.items() if "STEP_SUCCESS" not in t or "STEP_FAILURE" in t}
    assert not failed and sorted(types) == steps, (failed, sorted(types))
    # Every step went through a Celery worker, and each ran in that worker's own process.
    assert sorted(node) == steps
    assert set(node.values()) <= set(nodes)
    for step, nodename in node.items():
        assert pid[step] in worker_pids[nodename], (step, nodename, pid[step], worker_pids)
    by_worker = {n: sorted(s for s, m in node.items() if m == n) for n in nodes}
    assert all(by_worker.values()), f"a worker ran no step: {by_worker}"
    # the bucket steps of the month (each a share of the customers) ran on both workers
    bucket_workers = {m for s, m in node.items() if "__bucket[" in s}
    assert bucket_workers == set(nodes), f"bucket steps ran on {bucket_workers} only: {by_worker}"

    # The month's features are in the lake, the same as an in-process run of the same sample writes.
    features = asset_path(tmp_path / "project" / "lake", "customer_features", MONTH)
    assert features.exists()
    got = pl.read_parquet(features)
    ref_config = make_sample_project(tmp_path / "reference", customers=200, months=1)
    result = materialize(ref_config, make_instance_home(tmp_path / "reference-home"), MONTH)
    assert result.success
    want = pl.read_parquet(asset_path(tmp_path / "reference" / "lake", "customer_features", MONTH))
    assert got.height > 0
    assert got.sort("customer_id").equals(want.sort("customer_id"))


def test_worker_support_finds_no_foreign_processes(tmp_path):
    """CeleryWorker.pids() only reports the worker's own process group."""
    worker = celery_support.CeleryWorker("x", Path("unused.yaml"), {}, tmp_path)
    proc = worker.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                                          start_new_session=True)
    try:
        assert worker.pids() == {proc.pid}
        assert os.getpid() not in worker.pids()
    finally:
        worker.stop()
    assert proc.poll() is not None
