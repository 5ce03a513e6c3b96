"""The command line and Dagster's own CLI against a real instance on disk."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import polars as pl

from segpipe.cli import main
from segpipe.lake import asset_path

BIN = Path(sys.executable).parent


def _env(config: Path, home: Path) -> dict:
    return {**os.environ, "SEGPIPE_CONFIG": str(config), "DAGSTER_HOME": str(home)}


def test_segpipe_run_and_show(orders_project, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    assert main(["--config", str(orders_project), "run", "--from", "2025-01", "--to", "2025-02"]) == 0
    out = capsys.readouterr().out
    assert "2 month(s) 2025-01 .. 2025-02" in out
    assert "done    ingest_orders" in out and "done    segment_profiles" in out and "done    segment_membership.segment_membership__bucket[b0]" in out
    assert "RFM segments, snapshot 2025-02 (4 customers)" in out
    assert "Behavioral clusters, snapshot 2025-02" in out and "Lifecycle stages, snapshot 2025-02" in out
    # the run is recorded in the project's instance (visible in the UI)
    assert (tmp_path / "home" / "dagster.yaml").read_text().count("enabled: false") == 2
    assert any((tmp_path / "home").rglob("*.db"))
    assert main(["--config", str(orders_project), "show", "2025-01"]) == 0
    out = capsys.readouterr().out
    assert "Ingestion, 2025-01" in out and "RFM segments, snapshot 2025-01 (2 customers)" in out


def test_segpipe_run_rejects_months_outside_history(orders_project, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    assert main(["--config", str(orders_project), "run", "--from", "2024-06"]) == 2
    assert "--from 2024-06: not a partition" in capsys.readouterr().err


def test_show_of_a_month_not_built(orders_project, capsys):
    assert main(["--config", str(orders_project), "show", "2025-01"]) == 1
    assert "no segments for 2025-01" in capsys.readouterr().out


def test_bad_config_is_one_clear_line(tmp_path, capsys):
    (tmp_path / "segpipe.yaml").write_text("first_month: '2025-01'\nsources: {}\nlake: x\n")
    assert main(["--config", str(tmp_path / "segpipe.yaml"), "show", "2025-01"]) == 2
    err = capsys.readouterr().err
    assert "lake: unknown key" in err and "sources: Value error, configure at least one source" in err


def test_ui_refuses_a_port_in_use(orders_project, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["--config", str(orders_project), "ui", "--port", str(port)]) == 2
    assert f"port {port} on 127.0.0.1 is already in use" in capsys.readouterr().err


def test_dagster_asset_materialize_partition_range(orders_project, tmp_path):
    """Dagster's own CLI, pointed at the code location, materializes a range in one run."""
    home = tmp_path / "home"
    home.mkdir()
    proc = subprocess.run(
        [str(BIN / "dagster"), "asset", "materialize", "-m", "assets.definitions", "--select", "*",
         "--partition-range", "2025-01-01...2025-02-01"],
        env=_env(orders_project, home), capture_output=True, text=True, timeout=300,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lake = orders_project.parent / "lake"
    for month in ("2025-01-01", "2025-02-01"):
        assert asset_path(lake, "segment_membership", month).is_file()
    assert pl.read_parquet(asset_path(lake, "orders_ingested", "2025-02-01")).height == 3


def test_segpipe_library_never_imports_dagster():
    code = ("import importlib, pkgutil, sys, segpipe\n"
            "for m in pkgutil.iter_modules(segpipe.__path__):\n"
            "    importlib.import_module('segpipe.' + m.name)\n"
            "print('dagster' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_rule_on_a_missing_feature_is_one_clear_line(orders_project, tmp_path, monkeypatch, capsys):
    import yaml

    cfg = yaml.safe_load(orders_project.read_text())
    cfg["segments"] = {"rules": [{"name": "Hot leads", "where": "pricing_view_7d >= 3"}]}
    orders_project.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    assert main(["--config", str(orders_project), "run", "--from", "2025-01", "--to", "2025-01"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "segments.rules['Hot leads']: unknown feature column(s) ['pricing_view_7d']" in err


def test_an_unknown_scheme_name_is_one_clear_line(orders_project, capsys):
    import yaml

    assert main(["--config", str(orders_project), "show", "2025-01", "--scheme", "rmf"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "segpipe: --scheme: unknown scheme 'rmf'; expected one of rfm, rules, lifecycle, cluster"

    cfg = yaml.safe_load(orders_project.read_text())
    cfg["segments"] = {"exports": ["rfm", "clusters"]}
    orders_project.write_text(yaml.safe_dump(cfg))
    assert main(["--config", str(orders_project), "run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "segments.exports: Value error, unknown scheme 'clusters'; expected one of rfm, rules, lifecycle, cluster" in err


def test_exports_only_the_configured_schemes(orders_project, tmp_path, monkeypatch):
    import yaml

    cfg = yaml.safe_load(orders_project.read_text())
    cfg["segments"] = {"exports": ["lifecycle", "rfm"]}
    orders_project.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    assert main(["--config", str(orders_project), "run", "--from", "2025-01", "--to", "2025-01"]) == 0
    exports = orders_project.parent / "lake" / "exports"
    assert sorted(p.name for p in exports.iterdir()) == ["lifecycle", "rfm"]
    rows = pl.read_csv(exports / "rfm" / "2025-01-01.csv")
    members = pl.read_parquet(asset_path(orders_project.parent / "lake", "segment_membership", "2025-01-01"))
    assert rows.columns == ["customer_id", "segment", "action"]
    assert rows["customer_id"].to_list() == sorted(members["customer_id"].to_list()) and rows.height >= 2
