"""Servers for the Celery executor test: Debian's ``redis-server`` as the broker and result
backend, and ``dagster-celery worker start`` workers, each started on loopback by the test and
stopped (process group: SIGTERM, then SIGKILL) afterwards."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from .browser_support import BIN, REPO
from .server_support import LoopbackServer, stop_group

REDIS_SERVER = "redis-server"


def redis_server_binary() -> str | None:
    """Path of Debian's ``redis-server`` (package ``redis-server``), or None."""
    return shutil.which(REDIS_SERVER) or next(
        (p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server") if os.access(p, os.X_OK)), None)


class RedisServer(LoopbackServer):
    """``redis-server`` in the foreground on 127.0.0.1 and a free port, no persistence."""

    name = "redis"
    port_taken = "Address already in use"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self, port: int) -> list[str]:
        binary = redis_server_binary()
        assert binary, "redis-server is not installed"
        return [binary, "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "no",
                "--save", "", "--appendonly", "no", "--dir", str(self.workdir)]

    def probe(self) -> None:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)
        try:
            client.ping()
        except redis.exceptions.ConnectionError as exc:
            raise OSError(str(exc)) from exc
        finally:
            client.close()


def write_worker_config(path: Path, broker: str, backend: str) -> Path:
    """The ``-y`` file of ``dagster-celery worker start``: the executor's config block."""
    path.write_text(f"execution:\n  config:\n    broker: {broker!r}\n    backend: {backend!r}\n")
    return path


class CeleryWorker:
    """``dagster-celery worker start -n NAME -y CONFIG -A dagster_celery.app -- --pool=solo
    --concurrency=1``: one task at a time, executed in the worker's own process (``celery``, a
    child of ``dagster-celery``). ``env`` is the whole environment (DAGSTER_HOME, SEGPIPE_*)."""

    def __init__(self, name: str, config_yaml: Path, env: dict[str, str], log_dir: Path):
        self.name, self.config_yaml, self.env = name, Path(config_yaml), env
        self.log_path = Path(log_dir) / f"worker-{name}.log"
        self.proc: subprocess.Popen | None = None
        self.nodename: str | None = None  # NAME@host, as celery reports it once ready

    def start(self) -> CeleryWorker:
        # dagster-celery runs `celery` from PATH: the venv's bin first.
        env = {**self.env, "PATH": f"{BIN}{os.pathsep}{self.env.get('PATH', os.defpath)}"}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "dagster-celery"), "worker", "start", "-n", self.name, "-y", str(self.config_yaml),
                 "-A", "dagster_celery.app", "--", "--pool=solo", "--concurrency=1", "--without-gossip",
                 "--without-mingle", "--without-heartbeat"],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        return self

    def wait(self, timeout: float = 90) -> str:
        """Block until celery logs ``NAME@host ready.``; returns that node name."""
        assert self.proc is not None, "start() first"
        pattern = re.compile(rf"\b({re.escape(self.name)}@\S+) ready\.")
        deadline = time.time() + timeout
        while True:
            found = pattern.search(self.log())
            if found:
                self.nodename = found.group(1)
                return self.nodename
            if self.proc.poll() is not None:
                raise RuntimeError(f"celery worker {self.name} exited:\n" + self.log()[-3000:])
            if time.time() > deadline:
                raise TimeoutError(f"celery worker {self.name} not ready in {timeout:.0f} s:\n" + self.log()[-3000:])
            time.sleep(0.2)

    def pids(self) -> set[int]:
        """The ``dagster-celery`` process and every process in its group (``celery`` itself)."""
        assert self.proc is not None
        pids = {self.proc.pid}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == self.proc.pid:  # field 5 of /proc/PID/stat: process group
                    pids.add(int(stat.parent.name))
        return pids

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        stop_group(self.proc)
