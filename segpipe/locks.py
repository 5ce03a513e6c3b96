"""Per-partition write locks: two runs can never write the same asset partition at the same time.

A lock is an ``fcntl.flock`` on ``{lake_dir}/.locks/{asset}/{partition}.lock``. The kernel releases
it when its holder exits, however it exits (SIGKILL included), so a crashed run never leaves a lock
behind; the file itself stays (deleting lock files races with other waiters) and holds the pid of
the last holder, for the message a waiting run prints when it gives up.

Object-store lakes (``s3://``, ``gs://``, ``az://``) have no file locks: a lock file on one machine
means nothing to a run on another. There, every object write is atomic on its own (see
:func:`segpipe.lake.put_object`) and the run that owns the partition in Dagster is the lock: two
runs writing the same partition at the same time must be prevented by the Dagster instance (run
queue concurrency limits, one backfill at a time), see ``docs/object-store.md``.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCKS_DIR = ".locks"
UNPARTITIONED = "__unpartitioned__"


class PartitionLockTimeout(TimeoutError):
    """Another run holds the partition's lock for longer than the timeout allows."""


def lock_path(lake_dir: str | Path, asset_name: str, partition_key: str | None = None) -> Path:
    """``{lake_dir}/.locks/{asset}/{partition}.lock`` (``__unpartitioned__`` for unpartitioned assets)."""
    from segpipe.lake import is_remote

    if is_remote(lake_dir):
        raise ValueError(f"{lake_dir} is an object store: partition locks are local files only "
                         "(object-store writes rely on Dagster's partition ownership)")
    return Path(lake_dir) / LOCKS_DIR / asset_name / f"{partition_key or UNPARTITIONED}.lock"


def _holder(fd: int) -> str:
    try:
        return os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
    except OSError:
        return "unknown"


@contextmanager
def partition_lock(
    lake_dir: str | Path, asset_name: str, partition_key: str | None = None, *,
    timeout: float = 120.0, poll: float = 0.05,
) -> Iterator[Path]:
    """Hold the exclusive write lock of one asset partition for the ``with`` block.

    Parameters
    ----------
    lake_dir : str or Path
        The lake; locks live under its hidden ``.locks`` folder.
    asset_name, partition_key : str
        What is being written (``partition_key`` None for an unpartitioned asset).
    timeout : float
        Seconds to wait for another holder; then :class:`PartitionLockTimeout` naming its pid.

    Examples
    --------
    >>> with partition_lock("data/lake", "orders_ingested", "2025-01-01"):  # doctest: +SKIP
    ...     write_parquet_atomic(frame, asset_path("data/lake", "orders_ingested", "2025-01-01"))
    """
    path = lock_path(lake_dir, asset_name, partition_key)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    what = f"partition {partition_key}" if partition_key else "the unpartitioned file"
                    raise PartitionLockTimeout(
                        f"{what} of asset {asset_name} is being written by another run (pid {_holder(fd)}); "
                        f"waited {timeout:g}s: wait for that run to finish or retry (lock file {path})"
                    ) from None
                time.sleep(poll)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        try:
            yield path
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def write_partition_file(
    lake_dir: str | Path, asset_name: str, partition_key: str | None, path: str | Path,
    write, *, timeout: float = 120.0,
) -> list[str | Path]:
    """Write one file of an asset partition the safe way: hold the partition's lock, remove temp
    files an interrupted writer left for this target, then write atomically
    (:func:`segpipe.lake.write_atomic` with ``write(fh)``). Returns the stale files removed.

    In an object-store lake there is no lock file (see the module docstring): the temp objects of
    the target are removed and the object is written atomically."""
    from segpipe.lake import is_remote, remove_stale_temp_files, split_location, write_atomic

    if is_remote(path):
        folder, name = split_location(path)
        stale = remove_stale_temp_files(folder, Path(name).stem, older_than=time.time())
        write_atomic(path, write)
        return stale
    path = Path(path)
    with partition_lock(lake_dir, asset_name, partition_key, timeout=timeout):
        stale = remove_stale_temp_files(path.parent, path.stem, older_than=time.time())
        write_atomic(path, write)
    return stale
