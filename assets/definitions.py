"""The code location that ``workspace.yaml`` points at.

``defs`` is built from the config named by ``$SEGPIPE_CONFIG`` (default ``./segpipe.yaml``).
Tests and the ``segpipe`` command call :func:`assets.build.build_definitions` with their own config.
"""

from assets.build import build_definitions

defs = build_definitions()
