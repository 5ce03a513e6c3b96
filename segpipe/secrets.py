"""The pseudonymization key: from ``$SEGPIPE_PSEUDONYMIZATION_KEY`` or a git-ignored key file.

The key never lives in code. When neither is set, a random key is created once in
``.segpipe_key`` (mode 0600) beside the config file, so hashes stay stable across runs.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

KEY_ENV = "SEGPIPE_PSEUDONYMIZATION_KEY"
KEY_FILE = ".segpipe_key"


def pseudonymization_key(base_dir: str | Path) -> bytes:
    """The key bytes; creates the key file on first use."""
    env = os.environ.get(KEY_ENV)
    if env:
        return env.encode("utf-8")
    path = Path(base_dir) / KEY_FILE
    if not path.is_file():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    return path.read_text(encoding="utf-8").strip().encode("utf-8")
