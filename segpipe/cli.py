"""The ``segpipe`` command: sample data, runs through Dagster, the UI and segment summaries.

Importing any ``segpipe`` module never imports Dagster (tested). The ``run`` command hands over to
``assets.runner``, the Dagster side, only when it is invoked.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

import polars as pl

from segpipe.config import ConfigError, SegpipeConfig, check_scheme, load_config
from segpipe.instance import POSTGRES_ENV, STORAGES, instance_yaml, write_instance_yaml
from segpipe.lake import asset_path, check_reachable, exists, is_remote, read_parquet, scan_parquet
from segpipe.readers import SourceError
from segpipe.timeutil import month_key, month_range

DAGSTER_YAML = instance_yaml("sqlite")


def instance_home(config: SegpipeConfig) -> Path:
    """The instance folder: ``$DAGSTER_HOME`` or ``.dagster_home`` beside the config."""
    return Path(os.environ.get("DAGSTER_HOME") or Path(config.base_dir) / ".dagster_home").resolve()


def dagster_home(config: SegpipeConfig) -> Path:
    """The instance folder (:func:`instance_home`), created with telemetry and the first-run tour
    off (SQLite storage) unless it has a ``dagster.yaml``; sets ``$DAGSTER_HOME``."""
    home = instance_home(config)
    home.mkdir(parents=True, exist_ok=True)
    yaml_path = home / "dagster.yaml"
    if not yaml_path.exists():
        yaml_path.write_text(DAGSTER_YAML, encoding="utf-8")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


# -- instance -------------------------------------------------------------------------------------
def cmd_instance(args: argparse.Namespace, config: SegpipeConfig) -> int:
    path = write_instance_yaml(instance_home(config), args.storage, force=args.force)
    print(f"wrote {path} ({args.storage} storage)")
    if args.storage == "postgres":
        unset = [var for var in POSTGRES_ENV.values() if not os.environ.get(var)]
        print("the instance reads " + ", ".join(POSTGRES_ENV.values()) + " from the environment when it loads"
              + (f"; not set here: {', '.join(unset)}" if unset else ""))
    return 0


# -- sample ---------------------------------------------------------------------------------------
def cmd_sample(args: argparse.Namespace, config: SegpipeConfig | None) -> int:
    from segpipe.sample import generate_sample

    base = Path(config.base_dir) if config else Path.cwd()
    out = Path(args.out) if args.out else base / "data" / "sample"
    if args.if_missing and (out / "manifest.json").is_file():
        print(f"sample data present in {out} (use --force to regenerate)")
        return 0
    t0 = time.perf_counter()
    manifest = generate_sample(
        out, customers=args.customers, months=args.months, start=args.start, seed=args.seed
    )
    print(f"sample written to {out} in {time.perf_counter() - t0:.1f}s: "
          + ", ".join(f"{s}={n:,} rows" for s, n in manifest["total_rows"].items())
          + f"; {manifest['customers_total']:,} customers")
    return 0


# -- run ------------------------------------------------------------------------------------------
def _print_table(frame: pl.DataFrame) -> None:
    with pl.Config(tbl_rows=50, tbl_cols=20, tbl_width_chars=160, fmt_str_lengths=60,
                   tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        print(frame)


SCHEME_TITLES = {"cluster": "Behavioral clusters", "rfm": "RFM segments", "lifecycle": "Lifecycle stages",
                 "rules": "Rule segments"}


def print_summary(config: SegpipeConfig, month: str, schemes: list[str] | None = None) -> bool:
    """Print the segment summary (of ``schemes``, default all) and the ingestion accounting of
    ``month``; False if not built."""
    key = month_key(month)
    lake = config.lake_path
    prof_path = asset_path(lake, "segment_profiles", key)
    if not exists(prof_path):
        print(f"no segments for {key[:7]}: {prof_path} does not exist (run: segpipe run --from {key[:7]} --to {key[:7]})")
        return False
    acc = []
    for s in config.sources:
        p, q = asset_path(lake, f"{s}_ingested", key), asset_path(lake, f"{s}_quarantine", key)
        if exists(p):
            acc.append({"source": s, "rows_kept": scan_parquet(p).select(pl.len()).collect().item(),
                        "rows_quarantined": scan_parquet(q).select(pl.len()).collect().item() if exists(q) else 0})
    if acc:
        print(f"\nIngestion, {key[:7]}:")
        _print_table(pl.DataFrame(acc))
    prof = read_parquet(prof_path)
    for scheme, title in SCHEME_TITLES.items():
        if schemes and scheme not in schemes:
            continue
        part = prof.filter(pl.col("scheme") == scheme)
        if part.height == 0:
            continue
        print(f"\n{title}, snapshot {key[:7]} ({int(part['customers'].sum()):,} customers):")
        _print_table(part.select(
            "segment", "customers",
            (pl.col("share_customers") * 100).round(1).alias("% customers"),
            (pl.col("share_revenue") * 100).round(1).alias("% revenue 365d"),
            pl.col("median_orders_365d").alias("med. orders 365d"),
            pl.col("median_days_since_last_activity").round(0).alias("med. days idle"),
            pl.col("playbook_action").alias("action"),
        ))
    return True


def cmd_run(args: argparse.Namespace, config: SegpipeConfig, config_file: Path) -> int:
    import tempfile

    from assets.partitions import monthly_partitions
    from segpipe.readers import list_source_files

    # Fail before Dagster starts, with one line naming what to fix: the lake must be writable and
    # every source must have at least one file.
    lake = config.lake_path
    if is_remote(lake):
        try:
            check_reachable(str(lake))
        except (OSError, ValueError) as exc:
            detail = " ".join(str(exc).split())
            raise ConfigError(f"lake {lake} is not reachable ({detail}); check the bucket and the credentials in "
                              f"the environment (docs/object-store.md) or set lake_dir in {config_file}") from None
    else:
        try:
            lake.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=lake, prefix=".write-probe-"):
                pass
        except OSError as exc:
            raise ConfigError(f"lake directory {lake} is not writable ({exc.strerror or exc}); "
                              f"fix its permissions or set lake_dir in {config_file}") from None
    for source in config.sources:
        list_source_files(config.source_glob(source), source=source)
    dagster_home(config)
    parts = monthly_partitions(config)
    last_key = parts.get_last_partition_key()
    if last_key is None:
        raise ConfigError(f"first_month {config.first_month} has no complete month yet")
    first = month_key(args.from_month) if args.from_month else parts.get_first_partition_key()
    last = month_key(args.to_month) if args.to_month else last_key
    valid = set(parts.get_partition_keys())
    for label, k in (("--from", first), ("--to", last)):
        if k not in valid:
            raise ConfigError(f"{label} {k[:7]}: not a partition (months {config.first_month} to {last_key[:7]})")
    if first > last:
        raise ConfigError(f"--from {first[:7]} is after --to {last[:7]}")
    print(f"segpipe run: {len(month_range(first, last))} month(s) {first[:7]} .. {last[:7]}, "
          f"lake {config.lake_path}, instance {os.environ['DAGSTER_HOME']}")
    from assets.runner import run_pipeline

    ok = run_pipeline(config_file, first, last, refit=args.refit)
    if ok:
        print_summary(config, last)
    return 0 if ok else 1


def cmd_show(args: argparse.Namespace, config: SegpipeConfig) -> int:
    schemes = [check_scheme(s, "--scheme") for s in args.scheme or []]
    return 0 if print_summary(config, args.month, schemes) else 1


# -- ui -------------------------------------------------------------------------------------------
def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def cmd_ui(args: argparse.Namespace, config: SegpipeConfig, config_file: Path) -> int:
    home = dagster_home(config)
    if port_in_use(args.host, args.port):
        print(f"segpipe ui: port {args.port} on {args.host} is already in use; pick another with --port",
              file=sys.stderr)
        return 2
    root = Path(config.base_dir)
    workspace = root / "workspace.yaml"
    if not workspace.is_file():
        workspace = Path(__file__).resolve().parent.parent / "workspace.yaml"
    env = {**os.environ, "SEGPIPE_CONFIG": str(config_file), "DAGSTER_HOME": str(home)}
    dagster = Path(sys.executable).with_name("dagster")
    cmd = [str(dagster) if dagster.exists() else "dagster", "dev", "-w", str(workspace),
           "-h", args.host, "-p", str(args.port)]
    print(f"Dagster UI: http://{args.host}:{args.port}  (instance {home}; Ctrl-C stops)", flush=True)
    os.chdir(workspace.parent)
    os.execvpe(cmd[0], cmd, env)  # replaces this process: Ctrl-C reaches dagster dev directly


# -- entry point ----------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="segpipe", description="Behavioral customer segmentation on Dagster.")
    p.add_argument("--config", help="config file (default: $SEGPIPE_CONFIG or ./segpipe.yaml)")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sample", help="generate the deterministic sample data")
    s.add_argument("--out", help="output folder (default: data/sample beside the config)")
    s.add_argument("--customers", type=int, default=20_000)
    s.add_argument("--months", type=int, default=24)
    s.add_argument("--start", default="2024-11", help="first month, YYYY-MM")
    s.add_argument("--seed", type=int, default=42)
    s.add_argument("--if-missing", action="store_true", help="do nothing when a sample is already there")
    r = sub.add_parser("run", help="materialize every asset for a month range through Dagster")
    r.add_argument("--from", dest="from_month", help="first month, YYYY-MM (default: first_month)")
    r.add_argument("--to", dest="to_month", help="last month, YYYY-MM (default: last complete month)")
    r.add_argument("--refit", action="store_true",
                   help="refit the cluster model and RFM thresholds on the --to month's snapshot")
    u = sub.add_parser("ui", help="start the Dagster webserver and daemon")
    u.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    u.add_argument("--port", type=int, default=3000)
    i = sub.add_parser("instance", help="write the Dagster instance's dagster.yaml (SQLite or PostgreSQL storage)")
    i.add_argument("--storage", choices=STORAGES, default="sqlite",
                   help="sqlite (embedded, default) or postgres (connection from DAGSTER_PG_* variables)")
    i.add_argument("--force", action="store_true", help="replace a dagster.yaml that has other settings")
    sh = sub.add_parser("show", help="print the segment summary of a month")
    sh.add_argument("month", help="YYYY-MM")
    sh.add_argument("--scheme", action="append", help="only this scheme (rfm, rules, lifecycle, cluster); repeatable")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "sample":
            try:
                config = load_config(args.config)
            except ConfigError:
                config = None
            return cmd_sample(args, config)
        from segpipe.config import config_path

        config_file = config_path(args.config)
        config = load_config(config_file)
        if args.command == "run":
            return cmd_run(args, config, config_file)
        if args.command == "show":
            return cmd_show(args, config)
        if args.command == "ui":
            return cmd_ui(args, config, config_file)
        if args.command == "instance":
            return cmd_instance(args, config)
    except (ConfigError, SourceError, OSError) as exc:
        # One line, whatever the error: a multi-line config report becomes "key: problem; key: problem".
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        print(f"segpipe: {'; '.join(lines)}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
