"""Dagster assets of segpipe (thin wrappers around the ``segpipe`` library)."""

import warnings

from dagster import BetaWarning, PreviewWarning

# segpipe deliberately uses BackfillPolicy and allow_nonexistent_upstream_partitions (beta in
# Dagster 1.13, both pinned); their warnings would drown every run's output.
warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)
