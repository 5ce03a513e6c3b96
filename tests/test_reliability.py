"""Crashes, re-runs, concurrent runs, retries, environment errors and secrets, for real.

Real processes are killed with SIGKILL, real processes race for the same partition, and the
``segpipe`` command runs as a subprocess; see docs/reliability.md for the promise each test proves.
"""

import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from assets.build import build_definitions
from assets.io_manager import ParquetIOManager
from segpipe import ingest as ingest_mod
from segpipe.cli import main
from segpipe.lake import TMP_PREFIX, asset_path
from segpipe.locks import PartitionLockTimeout, lock_path, partition_lock
from segpipe.readers import SourceChangedError
from segpipe.sample import generate_sample
from segpipe.secrets import KEY_ENV, KEY_FILE, pseudonymization_key

from .conftest import orders_source, write_project, write_text

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SEGPIPE = [str(BIN / "segpipe")] if (BIN / "segpipe").exists() else [sys.executable, "-m", "segpipe.cli"]
DOMAINS = ("@example.com", "@example.org", "@example.net")


def _lake_files(lake: Path) -> dict[str, bytes]:
    return {str(p.relative_to(lake)): p.read_bytes() for p in sorted(lake.rglob("*.parquet"))}


def _temp_files(lake: Path) -> list[Path]:
    """Temp files in the folders of the IO manager's Parquet tables (files other assets write
    themselves, such as HTML reports, are not the IO manager's to clean)."""
    tables = {p.parent for p in lake.rglob("*.parquet")} | {lake}
    return [p for d in tables for p in d.iterdir() if p.name.startswith(TMP_PREFIX)]


def _run_job(config_path: Path, first: str, last: str | None = None, *, only: list[str] | None = None,
             instance: dg.DagsterInstance | None = None):
    """A real in-process run of the refresh job (``only``: just these asset keys)."""
    job = build_definitions(config_path).resolve_job_def("segpipe_refresh")
    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last or first}
    selection = [dg.AssetKey(k) for k in only] if only else None
    if instance is not None:
        return job.execute_in_process(instance=instance, tags=tags, raise_on_error=False, asset_selection=selection)
    with dg.DagsterInstance.ephemeral() as inst:
        return job.execute_in_process(instance=inst, tags=tags, raise_on_error=False, asset_selection=selection)


INGEST_ORDERS = ["orders_ingested", "orders_quarantine"]


# -- a generated sample, run once by the real `segpipe run` command --------------------------------
@pytest.fixture(scope="module")
def sample_project(tmp_path_factory):
    """A small generated sample (2 months), run once through a `segpipe run` subprocess into lake_a."""
    root = tmp_path_factory.mktemp("reliability")
    generate_sample(root / "data" / "sample", customers=500, months=2, start="2024-11", seed=11, bad_row_share=0.02)
    cfg = yaml.safe_load((REPO / "segpipe.yaml").read_text())
    for name in ("a", "b"):
        (root / f"segpipe_{name}.yaml").write_text(yaml.safe_dump({**cfg, "lake_dir": f"lake_{name}"}))
    env = {**os.environ, "DAGSTER_HOME": str(root / "home_a")}
    proc = subprocess.run([*SEGPIPE, "--config", str(root / "segpipe_a.yaml"), "run", "--from", "2024-11", "--to", "2024-12"],
                          env=env, capture_output=True, text=True, timeout=600, cwd=root)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return root, proc


def test_killed_run_leaves_complete_files_and_rerun_is_byte_identical(sample_project, monkeypatch):
    """SIGKILL a real `segpipe run` while it writes a partition (a `.tmp-*` file exists): every
    Parquet file stays a complete, readable version; no temp file looks like data; a re-run
    removes the leftovers and reproduces a clean run byte for byte."""
    root, _ = sample_project
    clean = _lake_files(root / "lake_a")
    assert len(clean) >= 2 * 10
    lake = root / "lake_b"
    shutil.rmtree(lake, ignore_errors=True)
    shutil.copytree(root / "lake_a", lake)  # the previous good run
    env = {**os.environ, "DAGSTER_HOME": str(root / "home_b")}
    caught = None
    # kill at a random write: after seeing the n-th temp file (n random), so that runs die in
    # different assets; if the run finishes first, try again killing at the first write seen
    targets = [random.randint(1, 15), 1, 1, 1]
    for target in targets:
        proc = subprocess.Popen([*SEGPIPE, "--config", str(root / "segpipe_b.yaml"), "run", "--from", "2024-11",
                                 "--to", "2024-12"], env=env, cwd=root, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seen: set[str] = set()
        try:
            deadline = time.monotonic() + 600
            while proc.poll() is None and time.monotonic() < deadline:
                tmp = [e.path for d in os.scandir(lake) if d.is_dir() and not d.name.startswith(".")
                       for e in os.scandir(d.path) if e.name.startswith(TMP_PREFIX)]
                seen.update(tmp)
                if tmp and len(seen) >= target:
                    os.killpg(proc.pid, signal.SIGKILL)
                    caught = tmp
                    break
        finally:
            if proc.poll() is None and caught is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if caught:
            break
    assert caught, "never saw a write in progress"
    assert proc.returncode == -signal.SIGKILL
    # every data file is one complete version (here: the same bytes as the clean run)
    after_kill = _lake_files(lake)
    assert after_kill == clean
    for asset_dir in {p.parent for p in lake.rglob("*.parquet")}:
        assert all(not p.name.startswith(".") for p in asset_dir.glob("*.parquet"))
        assert pl.scan_parquet(asset_dir / "*.parquet").select(pl.len()).collect().item() >= 0
    # re-run (in process, the same `segpipe run` code path): leftovers removed, files identical
    monkeypatch.setenv("DAGSTER_HOME", str(root / "home_b"))
    assert main(["--config", str(root / "segpipe_b.yaml"), "run", "--from", "2024-11", "--to", "2024-12"]) == 0
    assert _temp_files(lake) == []
    assert _lake_files(lake) == clean


def test_no_raw_email_in_outputs_metadata_or_logs(sample_project):
    """Lake files (quarantine `raw` and `reason` included), the run's stdout/stderr and every file
    of the Dagster instance (event log with all metadata and log lines) hold no raw email."""
    root, proc = sample_project
    gt = pl.read_parquet(root / "data" / "sample" / "ground_truth" / "customers.parquet")
    emails = {e.lower() for e in gt["email"].drop_nulls()}
    assert emails and all(any(d in e for d in DOMAINS) for e in list(emails)[:20])

    def clean(text: str, where: str) -> None:
        low = text.lower()
        assert not any(d in low for d in DOMAINS), where

    clean(proc.stdout + proc.stderr, "segpipe run stdout/stderr")
    assert "succeeded" in proc.stdout
    quarantined = 0
    for path in (p for p in (root / "lake_a").rglob("*") if p.is_file()):
        if path.suffix != ".parquet":  # reports and other outputs beside the tables
            clean(path.read_bytes().decode("latin-1"), str(path))
            continue
        frame = pl.read_parquet(path)
        quarantined += frame.height if path.parent.name.endswith("_quarantine") else 0
        clean(frame.write_ndjson(), str(path))  # every column, nested ones included
    assert quarantined > 0  # the sample plants bad rows: the quarantine raw column was scanned
    files = [p for p in (root / "home_a").rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in files)
    for p in files:
        clean(p.read_bytes().decode("latin-1"), str(p))
    with dg.DagsterInstance.local_temp(str(root / "home_a")) as instance:  # opens the run's instance
        runs = instance.get_runs()
        assert runs
        for run in runs:
            clean("\n".join(str(e) for e in instance.all_logs(run.run_id)), f"event log of run {run.run_id}")


# -- re-runs --------------------------------------------------------------------------------------
def test_rerun_after_a_source_is_corrected_replaces_the_month_cleanly(orders_project):
    lake = orders_project.parent / "lake"
    assert _run_job(orders_project, "2025-01-01").success
    q_before = pl.read_parquet(asset_path(lake, "orders_quarantine", "2025-01-01"))
    ev_before = pl.read_parquet(asset_path(lake, "orders_ingested", "2025-01-01"))
    assert (ev_before.height, q_before.height) == (2, 5)
    src = orders_project.parent / "src" / "orders.csv"
    fixed = (src.read_text().replace("not-a-date", "2025-01-09 09:00:00").replace(",-5,", ",5,")
             .replace("6,,2025-01-08", "6,C8,2025-01-08"))
    src.write_text(fixed)
    assert _run_job(orders_project, "2025-01-01").success
    q_after = pl.read_parquet(asset_path(lake, "orders_quarantine", "2025-01-01"))
    ev_after = pl.read_parquet(asset_path(lake, "orders_ingested", "2025-01-01"))
    assert q_after.height == 2 and sorted(q_after["source_row"]) == [10, 11]  # future, before first month
    assert sorted(ev_after["event_id"]) == ["1", "3", "5", "6", "7"]
    assert _temp_files(lake) == []
    # byte for byte what a clean run (empty lake) makes of the corrected file
    rerun = lake.rename(orders_project.parent / "lake_rerun")
    assert _run_job(orders_project, "2025-01-01").success
    assert _lake_files(rerun) == _lake_files(lake)


# -- concurrent runs ------------------------------------------------------------------------------
_HOLDER = textwrap.dedent("""
    import sys, time
    from segpipe.locks import partition_lock
    with partition_lock(sys.argv[1], "orders_ingested", "2025-01-01"):
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def test_partition_lock_names_the_holder_and_waits_for_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path), "1.5"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(PartitionLockTimeout) as err:
            with partition_lock(tmp_path, "orders_ingested", "2025-01-01", timeout=0.2):
                pass
        assert str(err.value).startswith(
            f"partition 2025-01-01 of asset orders_ingested is being written by another run (pid {holder.pid}); "
            "waited 0.2s: wait for that run to finish or retry")
        with partition_lock(tmp_path, "orders_ingested", "2025-02-01", timeout=0.2):
            pass  # another partition is free
        t0 = time.monotonic()
        with partition_lock(tmp_path, "orders_ingested", "2025-01-01", timeout=30):
            assert holder.poll() is not None or time.monotonic() - t0 > 0.5
    finally:
        holder.kill()
        holder.wait()
    assert lock_path(tmp_path, "orders_ingested", "2025-01-01") == tmp_path / ".locks" / "orders_ingested" / "2025-01-01.lock"


def test_a_killed_holder_never_leaves_a_lock_behind(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path), "60"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with partition_lock(tmp_path, "orders_ingested", "2025-01-01", timeout=2):
        pass


_WRITER = textwrap.dedent("""
    import os, sys, time
    import dagster as dg, polars as pl
    import assets.io_manager as iom
    lake, label, go, log, rounds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    import segpipe.lake as lk
    real = lk.write_atomic
    def traced(path, write):  # records when this process was inside the write (inside the lock)
        t0 = time.time(); out = real(path, write); t1 = time.time()
        with open(log, "a") as fh:
            fh.write(f"{label} {t0!r} {t1!r}\\n")
        return out
    lk.write_atomic = traced
    monthly = dg.MonthlyPartitionsDefinition(start_date="2025-01-01")
    @dg.asset(partitions_def=monthly)
    def contested(context):
        n = 300_000
        return {context.partition_key: pl.DataFrame({"writer": [label] * n, "i": range(n)})}
    io = iom.ParquetIOManager(lake_dir=lake)
    while not os.path.exists(go):
        time.sleep(0.005)
    for _ in range(rounds):
        assert dg.materialize([contested], partition_key="2025-01-01", resources={"io_manager": io}).success
""")


def test_two_processes_writing_one_partition_never_interleave(tmp_path):
    go, log = tmp_path / "go", tmp_path / "log"
    target = tmp_path / "lake" / "contested" / "2025-01-01.parquet"
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path / "lake"), label, str(go), str(log), "3"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
             for label in ("A", "B")]
    time.sleep(0.5)
    go.touch()
    seen = set()
    try:
        while any(p.poll() is None for p in procs):
            if target.is_file():
                frame = pl.read_parquet(target)  # readers always see one complete version
                assert frame.height == 300_000 and frame["writer"].n_unique() == 1
                seen.add(frame["writer"][0])
            time.sleep(0.01)
        outs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    spans = sorted((float(a), float(b), label) for label, a, b in (ln.split() for ln in log.read_text().splitlines()))
    assert len(spans) == 6 and {s[2] for s in spans} == {"A", "B"}
    for (_, end, _), (start, _, _) in zip(spans, spans[1:]):
        assert end <= start, "two writes of the same partition overlapped"
    final = pl.read_parquet(target)
    assert final.height == 300_000 and final["writer"].n_unique() == 1
    assert _temp_files(tmp_path / "lake") == []


def test_io_manager_fails_clearly_when_the_partition_stays_locked(tmp_path):
    monthly = dg.MonthlyPartitionsDefinition(start_date="2025-01-01")

    @dg.asset(partitions_def=monthly)
    def numbers(context: dg.AssetExecutionContext):
        return {context.partition_key: pl.DataFrame({"x": [1]})}

    with partition_lock(tmp_path, "numbers", "2025-01-01"):
        res = dg.materialize([numbers], partition_key="2025-01-01", raise_on_error=False,
                             resources={"io_manager": ParquetIOManager(lake_dir=str(tmp_path), lock_timeout=0.2)})
    assert not res.success
    failure = next(e for e in res.all_events if e.is_step_failure)
    assert f"partition 2025-01-01 of asset numbers is being written by another run (pid {os.getpid()})" in str(
        failure.event_specific_data.error)
    assert not asset_path(tmp_path, "numbers", "2025-01-01").exists()


def test_io_manager_removes_stale_temp_files_of_the_partition_it_writes(tmp_path):
    monthly = dg.MonthlyPartitionsDefinition(start_date="2025-01-01")

    @dg.asset(partitions_def=monthly)
    def numbers(context: dg.AssetExecutionContext):
        return {context.partition_key: pl.DataFrame({"x": [1]})}

    folder = tmp_path / "numbers"
    folder.mkdir()
    stale = folder / f"{TMP_PREFIX}2025-01-01-abc_1234.part"
    other = folder / f"{TMP_PREFIX}2025-02-01-abc_1234.part"
    for p in (stale, other):
        p.write_bytes(b"PAR1 partial")
        os.utime(p, (time.time() - 60, time.time() - 60))
    res = dg.materialize([numbers], partition_key="2025-01-01", resources={"io_manager": ParquetIOManager(lake_dir=str(tmp_path))})
    assert res.success
    assert not stale.exists() and other.exists()  # only the partition under our lock is touched
    assert sorted(p.name for p in folder.glob("*.parquet")) == ["2025-01-01.parquet"]


# -- retries: transient errors are retried, source errors fail once ------------------------------------
def _step_events(result, step: str) -> list[str]:
    return [e.event_type_value for e in result.all_events if e.step_key == step]


@pytest.mark.parametrize("transient", [OSError(errno.EIO, "Input/output error"),
                                       SourceChangedError("source 'orders': src/orders.csv changed while being read")])
def test_transient_error_is_retried_and_the_run_succeeds(orders_project, monkeypatch, transient):
    real, calls = ingest_mod.read_source_chunks, []

    def flaky(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 1:
            raise transient
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest_mod, "read_source_chunks", flaky)
    with dg.DagsterInstance.ephemeral() as instance:
        result = _run_job(orders_project, "2025-01-01", only=INGEST_ORDERS, instance=instance)
        logged = [e.dagster_event.event_type.name for e in instance.all_logs(result.run_id) if e.dagster_event]
    assert result.success and len(calls) == 2
    events = _step_events(result, "ingest_orders")
    assert events.count("STEP_UP_FOR_RETRY") == 1 and events.count("STEP_RESTARTED") == 1
    assert "STEP_FAILURE" not in events and events[-1] == "STEP_SUCCESS"
    assert logged[-1] == "RUN_SUCCESS" and "STEP_UP_FOR_RETRY" in logged
    lake = orders_project.parent / "lake"
    assert pl.read_parquet(asset_path(lake, "orders_ingested", "2025-01-01")).height == 2


def test_source_error_fails_once_without_retry_naming_the_problem(tmp_path):
    write_text(tmp_path / "src" / "orders.csv", "oid,cust,when,amount,email,cat\n1,C1,2025-01-05,5,a@example.com,x\n")
    result = _run_job(write_project(tmp_path, {"orders": orders_source("src/orders.csv")}), "2025-01-01", only=INGEST_ORDERS)
    assert not result.success
    events = _step_events(result, "ingest_orders")
    assert events.count("STEP_FAILURE") == 1 and "STEP_UP_FOR_RETRY" not in events and "STEP_RESTARTED" not in events
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "orders.csv has no column 'amt' (mapped in the config)" in str(failure.event_specific_data.error)


# -- the command line: one clear line and a non-zero exit ---------------------------------------------
def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith("segpipe: ")
    return err


def test_cli_missing_config(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "nope.yaml"), "run"]) == 2
    assert f"config file not found: {tmp_path / 'nope.yaml'}" in _one_line_error(capsys)


def test_cli_invalid_k_range(orders_project, capsys):
    cfg = yaml.safe_load(orders_project.read_text())
    cfg["segments"] = {"clustering": {"k_min": 6, "k_max": 3}}
    orders_project.write_text(yaml.safe_dump(cfg))
    assert main(["--config", str(orders_project), "run"]) == 2
    assert "segments.clustering: Value error, k_min (6) must be <= k_max (3)" in _one_line_error(capsys)


def test_cli_lake_directory_not_writable(orders_project, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    cfg = yaml.safe_load(orders_project.read_text())
    cfg["lake_dir"] = str(blocker / "lake")
    orders_project.write_text(yaml.safe_dump(cfg))
    assert main(["--config", str(orders_project), "run", "--from", "2025-01", "--to", "2025-01"]) == 2
    err = _one_line_error(capsys)
    assert f"lake directory {blocker / 'lake'} is not writable (Not a directory)" in err
    assert not (tmp_path / "home").exists()  # refused before Dagster started


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to any folder")
def test_cli_lake_directory_without_write_permission(orders_project, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    lake = orders_project.parent / "lake"
    lake.mkdir()
    lake.chmod(0o500)
    try:
        assert main(["--config", str(orders_project), "run", "--from", "2025-01", "--to", "2025-01"]) == 2
    finally:
        lake.chmod(0o700)
    assert f"lake directory {lake} is not writable (Permission denied)" in _one_line_error(capsys)


def test_cli_source_file_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    cfg = write_project(tmp_path, {"orders": orders_source("src/missing_*.csv")})
    assert main(["--config", str(cfg), "run", "--from", "2025-01", "--to", "2025-01"]) == 2
    err = _one_line_error(capsys)
    assert "source 'orders': no file matches" in err and "src/missing_*.csv" in err
    assert not (tmp_path / "home").exists()


# -- the pseudonymization key ---------------------------------------------------------------------
_KEY_RACE = textwrap.dedent("""
    import os, sys, time
    from segpipe.secrets import pseudonymization_key
    while not os.path.exists(sys.argv[2]):
        pass
    print(pseudonymization_key(sys.argv[1]).decode())
""")


def test_key_file_creation_is_race_safe(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _KEY_RACE, str(tmp_path), str(go)], env=env, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(6)]
    time.sleep(0.5)
    go.touch()
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [o[1] for o in outs]
    keys = {o[0].strip() for o in outs}
    assert len(keys) == 1 and len(keys.pop()) == 64
    key_file = tmp_path / KEY_FILE
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [KEY_FILE, "go"]  # no temp file left


def test_key_from_env_wins_and_an_empty_key_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "from-env")
    assert pseudonymization_key(tmp_path) == b"from-env"
    assert not (tmp_path / KEY_FILE).exists()
    monkeypatch.delenv(KEY_ENV)
    (tmp_path / KEY_FILE).write_text("")
    with pytest.raises(Exception, match=r"\.segpipe_key is empty: delete it to create a new key"):
        pseudonymization_key(tmp_path)
