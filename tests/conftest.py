"""Shared fixtures: small real projects (config + raw files) written to a temporary folder."""

from __future__ import annotations

import importlib.util
import os
import textwrap
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("SEGPIPE_PSEUDONYMIZATION_KEY", "test-key-not-secret")

ROOT = Path(__file__).resolve().parents[1]

ORDERS_HEADER = "oid,cust,when,amt,email,cat\n"

#: The longest modules (a daemon backfill each, a Celery run, the drift project's history, three
#: refresh runs on S3, Azurite and a local lake). `make test` runs two pytest-xdist workers, one
#: module at a time each, in this order (``--dist loadfile --no-loadscope-reorder``): starting these
#: first lets the short modules fill the other worker, instead of one of them running alone at the end.
LONG_MODULES = ("test_backfill.py", "test_postgres.py", "test_drift_pipeline.py", "test_executors.py",
                "test_object_store.py")


def pytest_collection_modifyitems(session, config, items):
    """Long modules first (see :data:`LONG_MODULES`); the order within a module and of the others stays."""
    items.sort(key=lambda item: (LONG_MODULES.index(item.path.name) if item.path.name in LONG_MODULES
                                 else len(LONG_MODULES)))


def load_bench_script(name: str):
    """``bench/{name}.py`` as a module (the benchmark scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_project(root: Path, sources: dict, *, first_month: str = "2025-01", extra: dict | None = None) -> Path:
    """Write ``segpipe.yaml`` for ``sources`` under ``root``; return the config path."""
    cfg = {"first_month": first_month, "lake_dir": "lake", "sources": sources, **(extra or {})}
    path = root / "segpipe.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def orders_source(path: str = "src/orders*.csv") -> dict:
    return {
        "path": path,
        "format": "csv",
        "columns": {"event_id": "oid", "customer_id": "cust", "event_time": "when", "amount": "amt",
                    "email": "email", "category": "cat"},
    }


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


@pytest.fixture
def orders_project(tmp_path: Path) -> Path:
    """A project with one orders CSV covering Jan and Feb 2025 and one of each bad row."""
    write_text(tmp_path / "src" / "orders.csv", ORDERS_HEADER + textwrap.dedent("""\
        1,C1,2025-01-05 10:00:00,10.50,ann@example.com,toys
        2,C1,2025-02-05 10:00:00,20,ann@example.com,toys
        3,C2,2025-01-07T10:00:00Z,5,bob@example.com,books
        3,C2,2025-01-07T10:00:00Z,5,bob@example.com,books
        4,C3,2025-02-07,7,cy@example.com,home
        5,C2,not-a-date,5,bob@example.com,books
        6,,2025-01-08 10:00:00,5,dan@example.com,books
        7,C4,2025-01-03 09:00:00,-5,eve@example.com,toys
        8,C5,2031-01-01 00:00:00,9,fay@example.com,toys
        9,C6,2019-06-01 00:00:00,9,gus@example.com,toys
        10,C7,2025-02-09 12:00:00,12,hal@example.com,home
        """))
    return write_project(tmp_path, {"orders": orders_source("src/orders.csv")})
