"""Config: the sample config loads; wrong keys and types fail naming the key."""

from pathlib import Path

import pytest

from segpipe.config import ConfigError, load_config, parse_config

from .conftest import orders_source, write_project

REPO = Path(__file__).resolve().parent.parent


def test_repo_config_loads_all_four_sources():
    cfg = load_config(REPO / "segpipe.yaml")
    assert list(cfg.sources) == ["orders", "product", "email", "web"]
    assert cfg.lake_path == (REPO / "data" / "lake").resolve()
    assert cfg.event_type_map("email")["open"] == "email_open"


def test_env_var_selects_the_config(tmp_path, monkeypatch):
    path = write_project(tmp_path, {"orders": orders_source()}, first_month="2023-04")
    monkeypatch.setenv("SEGPIPE_CONFIG", str(path))
    cfg = load_config()
    assert cfg.first_month == "2023-04"
    assert cfg.source_glob("orders") == str(tmp_path / "src" / "orders*.csv")


def test_orders_only_with_three_columns_is_enough():
    cfg = parse_config({"first_month": "2025-01", "sources": {"orders": {
        "path": "o.csv", "format": "csv",
        "columns": {"customer_id": "id", "event_time": "date", "amount": "total"}}}})
    assert list(cfg.sources) == ["orders"]


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda c: c.update(frist_month="2025-01"), "frist_month: unknown key"),
        (lambda c: c.update(first_month="2025/01"), "first_month: Value error, expected 'YYYY-MM'"),
        (lambda c: c["sources"]["orders"].update(format="xlsx"), "sources.orders.format"),
        (lambda c: c["sources"]["orders"].update(colums={}), "sources.orders.colums: unknown key"),
        (lambda c: c["sources"]["orders"]["columns"].update(amnt="x"), "unknown canonical column(s) ['amnt']"),
        (lambda c: c["sources"]["orders"]["columns"].pop("event_time"), "'event_time'"),
        (lambda c: c["sources"]["orders"].update(timezone="Mars/Olympus"), "unknown time zone 'Mars/Olympus'"),
        (lambda c: c["sources"].update(crm=c["sources"]["orders"]), "unknown source(s) ['crm']"),
        (lambda c: c.update(segments={"clustering": {"k_min": 6, "k_max": 3}}), "k_min (6) must be <= k_max (3)"),
        (lambda c: c.update(segments={"clustering": {"k_max": "many"}}), "segments.clustering.k_max"),
    ],
)
def test_bad_config_names_the_key(mutate, expected):
    cfg = {"first_month": "2025-01", "sources": {"orders": orders_source()}}
    mutate(cfg)
    with pytest.raises(ConfigError) as err:
        parse_config(cfg, origin="segpipe.yaml")
    assert expected in str(err.value)
    assert str(err.value).startswith("segpipe.yaml: invalid configuration")


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml_is_named(tmp_path):
    p = tmp_path / "segpipe.yaml"
    p.write_text("first_month: [unclosed\n")
    with pytest.raises(ConfigError, match="segpipe.yaml: not valid YAML"):
        load_config(p)
