"""The pseudonymization key: from ``$SEGPIPE_PSEUDONYMIZATION_KEY`` or a git-ignored key file.

The key never lives in code. When neither is set, a random key is created once in
``.segpipe_key`` (mode 0600) beside the config file, so hashes stay stable across runs.

Creation is race-safe: the key is written to a private temp file, then hard-linked to its name,
which fails if the name exists. Of several processes starting at once exactly one key wins, and
nobody ever reads a half-written key file.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from pathlib import Path

from segpipe.config import ConfigError

KEY_ENV = "SEGPIPE_PSEUDONYMIZATION_KEY"
KEY_FILE = ".segpipe_key"


def pseudonymization_key(base_dir: str | Path) -> bytes:
    """The key bytes; creates the key file on first use."""
    env = os.environ.get(KEY_ENV)
    if env:
        return env.encode("utf-8")
    path = Path(base_dir) / KEY_FILE
    if not path.exists():
        _create_key_file(path)
    key = path.read_text(encoding="utf-8").strip()
    for _ in range(20):  # only without hard links can a reader see the winner's file before its key
        if key:
            break
        time.sleep(0.05)
        key = path.read_text(encoding="utf-8").strip()
    if not key:
        raise ConfigError(
            f"{path} is empty: delete it to create a new key (hashes will change), "
            f"or set {KEY_ENV}"
        )
    return key.encode("utf-8")


def _create_key_file(path: Path) -> None:
    """Create ``path`` with a fresh key unless another process got there first."""
    fd, tmp = tempfile.mkstemp(prefix=".segpipe_key-", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(secrets.token_hex(32))
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # atomic: fails with FileExistsError when another process won
        except FileExistsError:
            pass
        except OSError:
            # A file system without hard links: O_EXCL still makes creation exclusive.
            try:
                fd2 = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return
            with os.fdopen(fd2, "w", encoding="utf-8") as fh:
                fh.write(Path(tmp).read_text(encoding="utf-8"))
    finally:
        Path(tmp).unlink(missing_ok=True)
