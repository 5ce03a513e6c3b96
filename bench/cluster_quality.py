"""How well the behavioral clusters recover the sample's planted archetypes, against what the
features allow at best. Not a test: it prints a table.

For each quarter-end snapshot of the lake built from the sample (``make run``), it fits the cluster
model with the project's ``segments.clustering`` config and reports

* the adjusted Rand index (ARI) of the clusters against the planted archetypes, on the customers
  of the archetypes named in ``segments.clustering.validation_labels.only``;
* the **supervised ceiling**: the ARI of a gradient-boosting classifier trained *with* the true
  labels on every numeric feature (3-fold cross-validated predictions), on the same customers.
  No unsupervised method on these features can be expected to beat it.

Usage::

    .venv/bin/python bench/cluster_quality.py [--config segpipe.yaml] [--months 2025-03,2025-06]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402
from sklearn.model_selection import cross_val_predict  # noqa: E402

from segpipe.clustering import adjusted_rand_against, feature_matrix, fit_cluster_model  # noqa: E402
from segpipe.config import load_config, resolve  # noqa: E402
from segpipe.lake import asset_path  # noqa: E402
from segpipe.segments import clusterable  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "segpipe.yaml"))
    ap.add_argument("--months", default="2025-03,2025-06,2025-09,2025-12,2026-03,2026-06,2026-09")
    a = ap.parse_args(argv)
    config = load_config(a.config)
    cfg = config.segments.clustering
    labels_cfg = cfg.validation_labels
    if labels_cfg is None:
        print("segments.clustering.validation_labels is not configured: nothing to score against")
        return 2
    labels = pl.read_parquet(resolve(config.base_dir, labels_cfg.path))
    print(f"clustering features: {cfg.features}; k {cfg.k_min}-{cfg.k_max}; scored archetypes: {labels_cfg.only}")
    print(f"{'month':8} {'k':>3} {'ARI':>6} {'ceiling':>8} {'ratio':>6} {'scored':>7} {'fit s':>6}")
    for month in a.months.split(","):
        path = asset_path(config.lake_path, "customer_features", f"{month}-01")
        if not path.is_file():
            print(f"{month}: {path} missing (run: make run)")
            continue
        feats = clusterable(pl.read_parquet(path))
        t0 = time.perf_counter()
        model = fit_cluster_model(feats, cfg)
        fit_s = time.perf_counter() - t0
        ari, n = adjusted_rand_against(model, feats, labels, labels_cfg.column, labels_cfg.only)
        known = feats.join(labels.select("customer_id", pl.col(labels_cfg.column).alias("__label")), on="customer_id")
        if labels_cfg.only is not None:
            known = known.filter(pl.col("__label").is_in(labels_cfg.only))
        numeric = [c for c, t in known.schema.items() if t.is_numeric()]
        x = feature_matrix(known, numeric)
        y = np.asarray(known["__label"].to_list())
        pred = cross_val_predict(HistGradientBoostingClassifier(max_iter=100, random_state=0), x, y, cv=3)
        ceiling = adjusted_rand_score(y, pred)
        print(f"{month:8} {model.frame.height:>3} {ari:6.3f} {ceiling:8.3f} {ari / ceiling:6.2f} {n:>7,} {fit_s:6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
