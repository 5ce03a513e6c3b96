"""The Dagster instance's ``dagster.yaml``: embedded SQLite (the default) or PostgreSQL.

Only text is produced here (no Dagster import). The PostgreSQL variant is Dagster's own
``storage: postgres:`` block (package ``dagster-postgres``) with every connection setting read
from an environment variable when the instance loads, so the file holds no secret and the same
file serves every machine; ``deploy/dagster-postgres.yaml`` is this text.
"""

from __future__ import annotations

from pathlib import Path

STORAGES = ("sqlite", "postgres")

# postgres_db field -> the environment variable it is read from (Dagster's own names).
POSTGRES_ENV = {
    "hostname": "DAGSTER_PG_HOST",
    "port": "DAGSTER_PG_PORT",
    "db_name": "DAGSTER_PG_DB",
    "username": "DAGSTER_PG_USERNAME",
    "password": "DAGSTER_PG_PASSWORD",
}

# The SQLAlchemy URL scheme: the psycopg2 driver that dagster-postgres installs, named explicitly.
PG_SCHEME = "postgresql+psycopg2"

_COMMON = """\
telemetry:
  enabled: false
nux:
  enabled: false
"""


def instance_yaml(storage: str = "sqlite") -> str:
    """The ``dagster.yaml`` text for ``storage`` (``sqlite`` or ``postgres``)."""
    if storage == "sqlite":
        return "# Embedded Dagster instance for segpipe (git-ignored). SQLite storage under this folder.\n" + _COMMON
    if storage == "postgres":
        fields = "".join(f"      {field}: {{env: {var}}}\n" for field, var in POSTGRES_ENV.items())
        return ("# Dagster instance for segpipe: runs, event logs, schedules and backfills in PostgreSQL\n"
                "# (dagster-postgres). Connection settings come from the environment when the instance loads:\n"
                "# " + ", ".join(POSTGRES_ENV.values()) + ".\n"
                "storage:\n  postgres:\n    postgres_db:\n" + fields
                + f"      scheme: {PG_SCHEME}  # psycopg2 (SQLAlchemy 2.1's default driver is psycopg 3)\n"
                + _COMMON)
    raise ValueError(f"unknown instance storage {storage!r}; expected one of {', '.join(STORAGES)}")


def write_instance_yaml(home: Path, storage: str = "sqlite", *, force: bool = False) -> Path:
    """Write ``home/dagster.yaml`` for ``storage``; returns its path. An existing file with other
    content is kept (FileExistsError) unless ``force``."""
    text = instance_yaml(storage)
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    if path.exists() and not force and path.read_text(encoding="utf-8") != text:
        raise FileExistsError(f"{path} already exists with other settings; --force replaces it")
    path.write_text(text, encoding="utf-8")
    return path
