"""A test server started on 127.0.0.1 and a free port, waited for and stopped with its process group."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (it may be taken before the caller binds it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(proc: subprocess.Popen | None, timeout: float = 20) -> None:
    """SIGTERM the process group led by ``proc``, SIGKILL it if it is still there after ``timeout``
    (children, such as celery's own process, may outlive the leader: the group is killed anyway)."""
    if proc is None:
        return
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


class LoopbackServer:
    """Subclasses give ``name`` (for messages and the log file), ``port_taken`` (the log's words when
    the port was taken between ``free_port()`` and the bind), ``command(port)`` and ``probe()`` (one
    request that raises ``OSError`` until the server answers)."""

    name = "server"
    port_taken = "address already in use"
    poll_seconds = 0.1

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.log_path = self.workdir / f"{self.name}.log"
        self.port = 0
        self.proc: subprocess.Popen | None = None

    def command(self, port: int) -> list[str]:
        raise NotImplementedError

    def probe(self) -> None:
        raise NotImplementedError

    def start(self, timeout: float = 60):
        self.workdir.mkdir(parents=True, exist_ok=True)
        for attempt in range(5):  # a free port may be taken between free_port() and the bind
            self.port = free_port()
            with open(self.log_path, "wb") as log:
                # Started from a shell, a server may ignore SIGTERM: restore the default dispositions.
                self.proc = subprocess.Popen(
                    ["env", "--default-signal=TERM,INT,HUP", *self.command(self.port)],
                    cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True)
            try:
                self._wait(timeout)
                return self
            except BaseException:
                self.stop()  # whatever went wrong (a timeout, an interrupt): no server is left behind
                if attempt == 4 or self.port_taken not in self.log():
                    raise
        raise AssertionError("unreachable")

    def _wait(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.time() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n" + self.log())
            try:
                self.probe()
                return
            except OSError:
                pass
            if time.time() > deadline:
                raise TimeoutError(f"{self.name} did not answer in {timeout:.0f} s:\n" + self.log())
            time.sleep(self.poll_seconds)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        stop_group(self.proc)
