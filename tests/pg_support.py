"""A throwaway PostgreSQL cluster for the instance-storage tests.

Debian's server binaries (``/usr/lib/postgresql/<version>/bin``, package ``postgresql``; ``.ci/run``
installs it) run a fresh cluster in a temporary folder on a free 127.0.0.1 port, with
password (SCRAM) authentication over TCP and a Unix socket only inside that folder. ``initdb``
refuses to run as root, so as root the server runs as the ``postgres`` user (``runuser``); any
other user runs it as itself. :func:`postgres_cluster` yields a :class:`PgServer` and stops and
removes the cluster on exit, whatever happened in between.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.server_support import free_port

SERVER_USER = "postgres"


def find_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` that has ``initdb``, ``pg_ctl`` and
    ``postgres``; else the folder of ``initdb`` on PATH if the others are beside it; else None."""
    def complete(folder: Path) -> bool:
        return all((folder / b).is_file() for b in ("initdb", "pg_ctl", "postgres"))

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path)) or (0,)

    for initdb in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version, reverse=True):
        if complete(Path(initdb).parent):
            return Path(initdb).parent
    on_path = shutil.which("initdb")
    if on_path and complete(Path(on_path).resolve().parent):
        return Path(on_path).resolve().parent
    return None


def missing_reason() -> str | None:
    """Why no cluster can be started here, or None if it can."""
    if find_bin_dir() is None:
        return ("PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/initdb); "
                "install Debian's `postgresql` package (.ci/run does)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return f"running as root and there is no `{SERVER_USER}` user to run the server as"
        if shutil.which("runuser") is None:
            return "running as root and `runuser` (util-linux) is missing"
    return None


@dataclass(frozen=True)
class PgServer:
    """A running cluster: the superuser ``postgres`` and an application role and database."""

    host: str
    port: int
    superuser_password: str
    db_name: str
    username: str
    password: str
    data_dir: Path

    @property
    def url(self) -> str:
        return f"postgresql://{self.username}:{self.password}@{self.host}:{self.port}/{self.db_name}"

    def connect(self, *, superuser: bool = False, db_name: str | None = None):
        """A psycopg2 connection (autocommit) as the application role, or as ``postgres``."""
        import psycopg2

        conn = psycopg2.connect(
            host=self.host, port=self.port, dbname=db_name or self.db_name,
            user="postgres" if superuser else self.username,
            password=self.superuser_password if superuser else self.password, connect_timeout=10)
        conn.autocommit = True
        return conn

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Rows of one statement run as the application role."""
        with contextlib.closing(self.connect()) as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()


def _as_server_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", SERVER_USER, "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str], cwd: Path, timeout: float = 120) -> None:
    proc = subprocess.run(_as_server_user(cmd), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"})
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


@contextlib.contextmanager
def postgres_cluster(*, db_name: str = "dagster", username: str = "segpipe") -> Iterator[PgServer]:
    """initdb a new cluster in a temporary folder, start it on a free 127.0.0.1 port, create
    ``username`` (with a random password) and its database ``db_name``; yield the server. On exit
    the server is stopped and the folder removed."""
    reason = missing_reason()
    if reason:
        raise RuntimeError(reason)
    bin_dir = find_bin_dir()
    assert bin_dir is not None
    # As root, in /tmp (whatever TMPDIR says): the server user must reach the folder.
    root = Path(tempfile.mkdtemp(prefix="segpipe-pg-", dir="/tmp" if os.geteuid() == 0 else None))
    data, log = root / "data", root / "server.log"
    superuser_password, password = secrets.token_hex(16), secrets.token_hex(16)
    (root / "pwfile").write_text(superuser_password + "\n")
    if os.geteuid() == 0:
        user = pwd.getpwnam(SERVER_USER)
        os.chown(root, user.pw_uid, user.pw_gid)
        os.chown(root / "pwfile", user.pw_uid, user.pw_gid)
    os.chmod(root / "pwfile", 0o600)
    ready = False
    try:
        _run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--pwfile", str(root / "pwfile"),
              "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-locale",
              "--no-sync"], cwd=root)
        (root / "pwfile").unlink()
        # A test cluster: no fsync, loopback TCP only, the socket in our own folder.
        options = (f"-h 127.0.0.1 -k {root} -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=200")
        for attempt in range(5):  # a free port may be taken between free_port() and the bind
            port = free_port()
            try:
                _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                      "-o", f"{options} -p {port}", "start"], cwd=root)
                break
            except RuntimeError:
                if attempt == 4 or "could not bind" not in (log.read_text(errors="replace") if log.exists() else ""):
                    raise
        server = PgServer("127.0.0.1", port, superuser_password, db_name, username, password, data)
        with contextlib.closing(server.connect(superuser=True, db_name="postgres")) as conn, conn.cursor() as cur:
            cur.execute(f'CREATE ROLE "{username}" LOGIN PASSWORD %s', (password,))
            cur.execute(f'CREATE DATABASE "{db_name}" OWNER "{username}"')
        ready = True
        yield server
    except BaseException as exc:
        if not ready and log.exists():
            exc.add_note("PostgreSQL server log:\n" + log.read_text(errors="replace")[-3000:])
        raise
    finally:
        if (data / "postmaster.pid").exists():  # started, or starting
            with contextlib.suppress(Exception):
                _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop"], cwd=root)
        shutil.rmtree(root, ignore_errors=True)

