"""Customer-hash buckets: the per-customer assets as one Dagster step per bucket, same tables."""

from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from assets.buckets import bucket_count, in_bucket
from assets.build import build_definitions
from segpipe.lake import asset_path
from segpipe.sample import generate_sample
from segpipe.timeutil import month_range

REPO = Path(__file__).resolve().parent.parent
MONTHS = month_range("2024-11", "2025-02")
BUCKETED = ("customer_activity_daily", "customer_activity_monthly", "customer_state", "customer_features",
            "segment_membership")


def _project(root: Path, sample: Path, scale: dict | None) -> Path:
    cfg = yaml.safe_load((REPO / "segpipe.yaml").read_text())
    cfg["lake_dir"] = "lake"
    for src in cfg["sources"].values():
        src["path"] = str(sample / Path(src["path"]).relative_to("data/sample"))
    if scale is not None:
        cfg["scale"] = scale
    root.mkdir(parents=True)
    (root / "segpipe.yaml").write_text(yaml.safe_dump(cfg))
    return root / "segpipe.yaml"


def _run(config: Path, months: list[str]):
    job = build_definitions(config).resolve_job_def("segpipe_refresh")
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(
            instance=instance, raise_on_error=False,
            tags={"dagster/asset_partition_range_start": months[0], "dagster/asset_partition_range_end": months[-1]})
    assert result.success
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same sample through the refresh job with the default (one bucket at this size) and with
    three buckets (and slices of 1,000 rows in the merges, ingestion, identity and stitching): all
    months in one run, then the last month again on its own."""
    root = tmp_path_factory.mktemp("buckets")
    sample = root / "sample"
    generate_sample(sample, customers=400, months=len(MONTHS), start=MONTHS[0][:7], seed=11)
    out = {}
    for name, scale in (("auto", None), ("three", {"buckets": 3, "slice_rows": 1_000}), ("sized", {"bucket_events": 1_000})):
        config = _project(root / name, sample, scale)
        out[name] = (config.parent / "lake", _run(config, MONTHS), _run(config, MONTHS[-1:]))
    return out


def _steps(result) -> set[str]:
    return {e.step_key for e in result.all_events if e.event_type_value == "STEP_SUCCESS"}


def test_every_id_falls_in_exactly_one_bucket():
    ids = pl.DataFrame({"customer_id": [f"C{i:07d}" for i in range(5000)] + [f"sp-{i:016x}" for i in range(5000)]})
    hits = pl.concat([ids.filter(in_bucket(b, 7)).with_columns(pl.lit(b).alias("b")) for b in range(7)])
    assert hits.height == ids.height and hits["customer_id"].n_unique() == ids.height
    sizes = hits.group_by("b").len()["len"]
    assert sizes.min() > 0.8 * ids.height / 7 and sizes.max() < 1.2 * ids.height / 7  # spread evenly
    assert ids.filter(in_bucket(0, 1)).height == ids.height


def test_bucket_count_follows_the_setting_or_the_data_size():
    assert bucket_count(10, buckets=None, per_bucket=1000) == 1
    assert bucket_count(0, buckets=None, per_bucket=1000) == 1
    assert bucket_count(2_000_001, buckets=None, per_bucket=1_000_000) == 3
    assert bucket_count(10, buckets=4, per_bucket=1000) == 4


def test_each_bucket_is_its_own_step(runs):
    for name, n in (("auto", 1), ("three", 3)):
        for result in runs[name][1:]:
            steps = _steps(result)
            for asset in BUCKETED:
                assert {s for s in steps if s.startswith(f"{asset}.{asset}__bucket[")} == {
                    f"{asset}.{asset}__bucket[b{b}]" for b in range(n)}, (name, asset)
                assert f"{asset}.{asset}__plan" in steps and f"{asset}.{asset}__merge" in steps
    # the merge records how many parts made each month
    result = runs["three"][1]
    for asset in BUCKETED:
        mats = result.asset_materializations_for_node(asset)
        assert sorted(m.partition for m in mats) == MONTHS
        assert {m.metadata["buckets"].value for m in mats} == {3}


def test_without_a_setting_the_bucket_count_follows_the_month_size(runs):
    lake, result, _ = runs["sized"]
    for asset in ("customer_activity_daily", "customer_activity_monthly"):
        got = {m.partition: m.metadata["buckets"].value for m in result.asset_materializations_for_node(asset)}
        events = {m: pl.scan_parquet(asset_path(lake, "behavioral_events", m)).select(pl.len()).collect().item()
                  for m in MONTHS}
        assert got == {m: -(-events[m] // 1_000) for m in MONTHS}, (asset, events)
        assert min(got.values()) >= 2
    # the state and the snapshot (a few hundred customers) stay in one bucket
    for asset in ("customer_state", "customer_features"):
        assert {m.metadata["buckets"].value for m in result.asset_materializations_for_node(asset)} == {1}


def test_buckets_give_the_same_tables_sorted_by_customer(runs):
    one = runs["auto"][0]
    for other in ("three", "sized"):
        for asset in (*BUCKETED, "segment_membership"):
            for month in MONTHS:
                a = pl.read_parquet(asset_path(one, asset, month))
                b = pl.read_parquet(asset_path(runs[other][0], asset, month))
                assert a.height > 0, (asset, month)
                assert b.equals(a), (other, asset, month)
                assert b["customer_id"].is_sorted(), (other, asset, month)
    three = runs["three"][0]
    # usage tiers are quantiles over all customers, not per bucket
    feats = pl.read_parquet(asset_path(three, "customer_features", MONTHS[-1]))
    assert set(feats["usage_tier"]) >= {"heavy", "medium", "light", "non-user"}


def test_no_part_or_step_file_is_left_behind(runs):
    for name in runs:
        lake = runs[name][0]
        assert not (lake / "_buckets").exists() or not any((lake / "_buckets").iterdir())
        assert not (lake / "_steps").exists() or not any((lake / "_steps").iterdir())


def test_a_model_without_rfm_thresholds_scores_buckets_on_the_whole_month(runs):
    """A cluster model written before models stored their RFM thresholds: every bucket scores RFM by
    the quintiles of the whole month, so three buckets still equal one."""
    month = MONTHS[-1]
    out = {}
    for name in ("auto", "three"):
        lake = runs[name][0]
        model_path = asset_path(lake, "segment_model", month)
        pl.read_parquet(model_path).drop("rfm_thresholds").write_parquet(model_path)
        defs = build_definitions(lake.parent / "segpipe.yaml")
        result = dg.materialize(
            [*defs.assets], selection=["segment_membership"], partition_key=month,
            resources=defs.resources, instance=dg.DagsterInstance.ephemeral())
        assert result.success
        out[name] = pl.read_parquet(asset_path(lake, "segment_membership", month))
    assert out["three"].equals(out["auto"])
    assert out["auto"]["r_score"].drop_nulls().n_unique() == 5
