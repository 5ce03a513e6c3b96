"""Instance storage on PostgreSQL (dagster-postgres), selected by the instance's ``dagster.yaml``.

A throwaway cluster (tests/pg_support.py) on a free loopback port; ``segpipe instance --storage
postgres`` writes the DAGSTER_HOME's ``dagster.yaml`` (connection from DAGSTER_PG_* variables);
one month runs in process, then a 3-month asset backfill runs through ``dagster dev`` (webserver
and daemon), and everything Dagster records is read back from PostgreSQL itself, with nothing
written to SQLite files in DAGSTER_HOME.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from segpipe.cli import main
from segpipe.instance import POSTGRES_ENV, instance_yaml
from segpipe.lake import asset_path
from tests import pg_support
from tests.browser_support import REPO, Webserver, backfill_all_assets, last_complete_months, make_sample_project, materialize

ASSETS = ("customer_state", "customer_features", "segment_membership", "segment_outcomes", "segment_migration")


@pytest.fixture
def pg():
    """A running throwaway cluster; skipped where PostgreSQL's server is not installed, except
    under CI (CI=true), where that is a failure."""
    reason = pg_support.missing_reason()
    if reason:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"CI must run the PostgreSQL tests: {reason}")
        pytest.skip(reason)
    with pg_support.postgres_cluster() as server:
        yield server


def pg_env(monkeypatch, server: pg_support.PgServer) -> None:
    values = {"hostname": server.host, "port": str(server.port), "db_name": server.db_name,
              "username": server.username, "password": server.password}
    for field, var in POSTGRES_ENV.items():
        monkeypatch.setenv(var, values[field])


def sqlite_files(home: Path) -> list[str]:
    """Files in ``home`` that are (or would be) Dagster's SQLite storage."""
    return sorted(str(p.relative_to(home)) for p in home.rglob("*")
                  if p.suffix in (".db", ".sqlite", ".db-wal", ".db-journal") or p.name in ("history", "schedules"))


def failures(server: pg_support.PgServer) -> str:
    """The failure events recorded in PostgreSQL, for an assertion message."""
    rows = server.query("SELECT step_key, event FROM event_logs WHERE dagster_event_type IN "
                        "('STEP_FAILURE', 'RUN_FAILURE', 'ENGINE_EVENT') ORDER BY id")
    return "\n".join(f"{step}: {event[:1500]}" for step, event in rows if "rror" in event)


def test_the_deploy_example_is_what_segpipe_writes_and_dagster_accepts_it(tmp_path, monkeypatch, capsys):
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster_postgres import DagsterPostgresStorage
    from dagster_postgres.utils import pg_url_from_config

    deploy = REPO / "deploy" / "dagster-postgres.yaml"
    assert yaml.safe_load(deploy.read_text()) == yaml.safe_load(instance_yaml("postgres"))
    cfg = make_sample_project(tmp_path, customers=20, months=1)
    home = tmp_path / "home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for var in POSTGRES_ENV.values():
        monkeypatch.delenv(var, raising=False)
    assert main(["--config", str(cfg), "instance", "--storage", "postgres"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {home / 'dagster.yaml'} (postgres storage)" in out and "not set here: DAGSTER_PG_HOST" in out
    assert (home / "dagster.yaml").read_text() == instance_yaml("postgres")
    # Dagster's own schema resolves every connection setting from the environment.
    monkeypatch.setenv("DAGSTER_PG_HOST", "db.internal")
    monkeypatch.setenv("DAGSTER_PG_PORT", "6543")
    monkeypatch.setenv("DAGSTER_PG_DB", "dagster")
    monkeypatch.setenv("DAGSTER_PG_USERNAME", "seg")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "s3cret")
    config, _ = dagster_instance_config(str(home))
    processed = process_config(DagsterPostgresStorage.config_type(), config["storage"]["postgres"])
    assert processed.success, processed.errors
    assert pg_url_from_config(processed.value) == "postgresql+psycopg2://seg:s3cret@db.internal:6543/dagster"
    # Switching an existing instance's storage is never silent.
    assert main(["--config", str(cfg), "instance"]) == 2
    assert "already exists with other settings; --force replaces it" in capsys.readouterr().err
    assert (home / "dagster.yaml").read_text() == instance_yaml("postgres")
    assert main(["--config", str(cfg), "instance", "--force"]) == 0
    assert (home / "dagster.yaml").read_text() == instance_yaml("sqlite")


@pytest.mark.timeout(900)
def test_a_month_and_a_3_month_daemon_backfill_recorded_in_postgres(pg, tmp_path, monkeypatch):
    from assets.partitions import monthly_partitions
    from segpipe.config import load_config

    first, *backfill = last_complete_months(4)  # one month in process, then the last three as a backfill
    config = make_sample_project(tmp_path, customers=200, months=4, start=first[:7])
    assert monthly_partitions(load_config(config)).get_last_partition_key() == backfill[-1]
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    pg_env(monkeypatch, pg)
    assert main(["--config", str(config), "instance", "--storage", "postgres"]) == 0
    lake = tmp_path / "lake"

    # One month in process, on the instance that dagster.yaml selects.
    result = materialize(config, home, first)
    assert result.success
    assert pg.query("SELECT status FROM runs WHERE run_id = %s", (result.run_id,)) == [("SUCCESS",)]
    rows = pg.query("SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = "
                    "'ASSET_MATERIALIZATION' AND asset_key = %s AND partition = %s",
                    (result.run_id, json.dumps(["customer_features"]), first))
    assert rows == [(1,)]
    materialized = {json.loads(k)[0] for (k,) in pg.query(
        "SELECT DISTINCT asset_key FROM event_logs WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'",
        (result.run_id,))}
    assert set(ASSETS) <= materialized
    assert asset_path(lake, "customer_features", first).is_file()
    assert sqlite_files(home) == []

    # Three months as an asset backfill: dagster dev (webserver + daemon) on the same instance.
    server = Webserver(config, home, daemon=True).start()
    try:
        url = server.wait(180)
        backfill_id, bf = backfill_all_assets(url, backfill, title="3 months on PostgreSQL", timeout=780, poll=3)
        assert bf.get("status") in ("COMPLETED", "COMPLETED_SUCCESS"), (
            f"backfill {bf}\n{failures(pg)}\n{server.log()[-4000:]}")
    finally:
        server.stop()
    runs = bf["runs"]
    assert runs and all(r["status"] == "SUCCESS" for r in runs), runs
    for month in backfill:
        for asset in ASSETS:
            assert asset_path(lake, asset, month).is_file(), f"{asset} {month} missing"

    # The backfill, its runs and their materializations are rows in PostgreSQL.
    assert pg.query("SELECT status FROM bulk_actions WHERE key = %s", (backfill_id,)) == [("COMPLETED_SUCCESS",)]
    backfill_runs = dict(pg.query("SELECT run_id, status FROM runs WHERE backfill_id = %s", (backfill_id,)))
    assert backfill_runs == {r["runId"]: "SUCCESS" for r in runs}
    by_month = dict(pg.query(
        "SELECT partition, count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
        "AND asset_key = %s GROUP BY partition", (json.dumps(["customer_features"]),)))
    assert by_month == {first: 1, **{m: 1 for m in backfill}}
    assert pg.query("SELECT count(*) FROM runs") == [(1 + len(runs),)]
    heartbeats = {t for (t,) in pg.query("SELECT daemon_type FROM daemon_heartbeats")}
    assert "BACKFILL" in heartbeats, heartbeats
    assert sqlite_files(home) == []
