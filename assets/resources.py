"""Resources: the project config and the pseudonymization key."""

from __future__ import annotations

import dagster as dg

from segpipe.config import SegpipeConfig, load_config
from segpipe.secrets import pseudonymization_key


class SegpipeResource(dg.ConfigurableResource):
    """The validated ``segpipe.yaml`` the code location was built from."""

    config_path: str

    def config(self) -> SegpipeConfig:
        return load_config(self.config_path)

    def key(self) -> bytes:
        """Pseudonymization key (env var or git-ignored key file; never in code)."""
        return pseudonymization_key(self.config().base_dir)
