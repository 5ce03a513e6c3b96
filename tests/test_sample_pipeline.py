"""The whole pipeline on a small generated sample, checked against the planted ground truth."""

from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from assets.build import build_definitions
from segpipe.identity import build_identity_map
from segpipe.ingest import pseudonymize
from segpipe.lake import asset_path
from segpipe.sample import generate_sample
from segpipe.timeutil import month_range

REPO = Path(__file__).resolve().parent.parent
MONTHS = month_range("2024-11", "2025-04")
KEY = b"test-key-not-secret"


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample_project")
    manifest = generate_sample(root / "data" / "sample", customers=600, months=len(MONTHS), start="2024-11", seed=7,
                               bad_row_share=0.01)
    cfg = yaml.safe_load((REPO / "segpipe.yaml").read_text())
    cfg["lake_dir"] = "lake"
    (root / "segpipe.yaml").write_text(yaml.safe_dump(cfg))
    defs = build_definitions(root / "segpipe.yaml")
    job = defs.resolve_job_def("segpipe_refresh")
    (root / "dagster_home").mkdir()
    with dg.DagsterInstance.local_temp(str(root / "dagster_home")) as instance:
        result = job.execute_in_process(
            instance=instance, raise_on_error=False,
            tags={"dagster/asset_partition_range_start": MONTHS[0], "dagster/asset_partition_range_end": MONTHS[-1]},
        )
    assert result.success
    return root, manifest, result


def _lake(root: Path, asset: str, month: str) -> pl.DataFrame:
    return pl.read_parquet(asset_path(root / "lake", asset, month))


def test_every_row_of_every_file_is_accounted_for(sample_run):
    root, manifest, result = sample_run
    stats = {}
    for m in result.asset_materializations_for_node("ingest_orders") + [
        mm for node in ("ingest_product", "ingest_email", "ingest_web") for mm in result.asset_materializations_for_node(node)
    ]:
        key = m.asset_key.to_user_string()
        if key.endswith("_ingested"):
            src = key.removesuffix("_ingested")
            s = stats.setdefault(src, {"read": 0, "kept": 0, "quarantined": 0, "dups": 0})
            s["read"] += m.metadata["rows_read"].value
            s["kept"] += m.metadata["rows_kept"].value
            s["quarantined"] += m.metadata["rows_quarantined"].value
            s["dups"] += m.metadata["duplicates_removed"].value
    for src, s in stats.items():
        bad = manifest["bad_rows"][src]
        assert s["read"] == manifest["total_rows"][src], src
        assert s["read"] == s["kept"] + s["quarantined"] + s["dups"], src
        assert s["dups"] == bad["duplicate"], src
        assert s["quarantined"] == sum(v for k, v in bad.items() if k != "duplicate"), src
        assert s["kept"] == sum(manifest["clean_row_counts"][src].values()), src
        on_disk = sum(_lake(root, f"{src}_quarantine", m).height for m in MONTHS)
        assert on_disk == s["quarantined"]
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 7
    assert all(c.passed for c in checks if c.check_name == "rows_accounted")
    # drift checks may warn in the first months (windows filling) but never alert in the warm-up
    assert not [c for c in checks if c.check_name == "feature_drift_within_thresholds"
                and c.severity == dg.AssetCheckSeverity.ERROR and not c.passed]


def test_malformed_lines_are_quarantined_with_their_line(sample_run):
    root, manifest, _ = sample_run
    q = pl.concat([_lake(root, "orders_quarantine", m) for m in MONTHS])
    malformed = q.filter(pl.col("reason").str.starts_with("malformed CSV line"))
    assert malformed.height == manifest["bad_rows"]["orders"]["extra_delimiter"] + manifest["bad_rows"]["orders"]["truncated_line"]
    assert (malformed["source_row"] >= 2).all()
    pq = pl.concat([_lake(root, "product_quarantine", m) for m in MONTHS])
    assert pq.filter(pl.col("reason").str.starts_with("invalid JSON")).height == manifest["bad_rows"]["product"]["invalid_json"]


def test_identities_stitch_to_the_planted_customers(sample_run):
    root, manifest, _ = sample_run
    gt = pl.read_parquet(root / "data" / "sample" / "ground_truth" / "customers.parquet")
    imap = _lake(root, "identity_map", MONTHS[-1])
    cid = dict(zip(imap["node"], imap["customer_id"]))
    gt = gt.with_columns(pseudonymize(gt["email"], KEY).alias("email_hash"))
    checked = 0
    for row in gt.filter(pl.col("has_orders")).iter_rows(named=True):
        if f"c:{row['customer_id']}" not in cid:
            continue  # first order after the last month of this small sample
        ids = [f"e:{row['email_hash']}"] + ([f"u:{row['app_user_id']}"] if row["app_user_id"] else [])
        for node in ids:
            if node in cid:
                assert cid[node] == row["customer_id"], (row["archetype"], node)
                checked += 1
    assert checked > 300
    # email-only subscribers are one synthetic customer each, never merged with anyone
    email_only = gt.filter(pl.col("archetype") == "email_only")
    ids = [cid.get(f"e:{h}") for h in email_only["email_hash"]]
    seen = [i for i in ids if i is not None]
    assert seen and all(i.startswith("sp-") for i in seen) and len(set(seen)) == len(seen)


def test_each_months_map_updates_the_previous_one_and_equals_a_build_from_the_graph(sample_run):
    root, _, result = sample_run
    built = {m.partition: m.metadata["built_from"].value for m in result.asset_materializations_for_node("identity_map")}
    assert built == {m: "all links to date" if m == MONTHS[0] else "previous map + the month's new links"
                     for m in MONTHS}
    for m in MONTHS:
        graph = pl.scan_parquet(asset_path(root / "lake", "identity_graph", m))
        assert _lake(root, "identity_map", m).equals(build_identity_map(graph, distinct=True)), m


def test_no_raw_email_anywhere_in_the_lake_or_the_event_log(sample_run):
    root, _, result = sample_run
    gt = pl.read_parquet(root / "data" / "sample" / "ground_truth" / "customers.parquet")
    emails = set(gt["email"].to_list())
    domains = ("@example.com", "@example.org", "@example.net")
    for path in (root / "lake").rglob("*.parquet"):
        text = pl.read_parquet(path).write_ndjson().lower()
        assert not any(d in text for d in domains), path
    log = "\n".join(str(e) for e in result.all_events).lower()
    assert not any(e in log for e in list(emails)[:500])
    assert not any(d in log for d in domains)


def test_segments_cover_every_customer_once(sample_run):
    root, _, result = sample_run
    for month in MONTHS:
        feats = _lake(root, "customer_features", month)
        members = _lake(root, "segment_membership", month)
        assert members["customer_id"].to_list() == feats["customer_id"].to_list()
        profiles = _lake(root, "segment_profiles", month)
        for scheme in ("rfm", "rules", "lifecycle", "cluster"):
            part = profiles.filter(pl.col("scheme") == scheme)
            assert part["customers"].sum() == members.height, scheme
            assert abs(part["share_customers"].sum() - 1) < 1e-9, scheme
    mats = {m.partition: m.metadata for m in result.asset_materializations_for_node("segment_model")}
    assert 3 <= mats[MONTHS[-1]]["k"].value <= 8
    assert mats[MONTHS[-1]]["silhouette"].value > 0.2
    assert mats[MONTHS[0]]["reason"].value == "first model"
    assert mats["2025-03-01"]["reason"].value == "quarterly refit"
    assert mats["2025-02-01"]["reason"].value == "carried forward"


def test_rerunning_a_month_reproduces_its_files(sample_run):
    root, _, _ = sample_run
    month = MONTHS[2]
    files = sorted(p for p in (root / "lake").rglob(f"{month}.parquet"))
    before = {p: p.read_bytes() for p in files}
    job = build_definitions(root / "segpipe.yaml").resolve_job_def("segpipe_refresh")
    assert job.execute_in_process(partition_key=month, instance=dg.DagsterInstance.ephemeral()).success
    after = {p: p.read_bytes() for p in sorted((root / "lake").rglob(f"{month}.parquet"))}
    assert after == before


def test_outcomes_show_the_lapsing_archetype_lapses(sample_run):
    """The segment holding most planted 'lapsing' customers is less active next month than everyone."""
    root, _, _ = sample_run
    month = MONTHS[-2]
    gt = pl.read_parquet(root / "data" / "sample" / "ground_truth" / "customers.parquet")
    mem = _lake(root, "segment_membership", month).join(gt.select("customer_id", "archetype"), on="customer_id")
    out = _lake(root, "segment_outcomes", MONTHS[-1])  # the last month's partition follows the month before
    assert out.height > 0 and _lake(root, "segment_outcomes", MONTHS[0]).height == 0  # first month: nothing to follow
    assert out["snapshot_month"].unique().to_list() == [mem["snapshot_month"][0]]
    assert out["outcome_month"].unique().to_list()[0].isoformat() == MONTHS[-1]
    # (the lifecycle stage of most lapsing customers is still 'retention' this early: they decay slowly)
    for scheme, col in (("cluster", "cluster_name"), ("rfm", "rfm_segment")):
        lapsing = mem.filter(pl.col("archetype") == "lapsing")[col].mode().sort().first()
        row = out.filter((pl.col("scheme") == scheme) & (pl.col("segment") == lapsing)).row(0, named=True)
        assert row["active_lift"] < 1.0, (scheme, lapsing, row)


def test_clusters_recover_the_planted_archetypes(sample_run):
    """Adjusted Rand index of the clusters against the planted archetypes that are behaviorally
    distinct, reported by the pipeline itself in segment_model's metadata (the sample's config names
    the ground truth as validation labels) and recomputed here from the membership.

    The bar is justified in docs/segments.md: on these features a classifier trained *with* the
    true labels reaches only 0.69-0.77, because the generator's per-customer multipliers make the
    archetypes overlap; the clusters reach 0.49-0.54 on the default sample (every quarter-end).
    """
    from sklearn.metrics import adjusted_rand_score

    root, _, result = sample_run
    gt = pl.read_parquet(root / "data" / "sample" / "ground_truth" / "customers.parquet")
    distinct = ["champions", "bargain_hunters", "seasonal_gift_buyers", "power_users", "window_shoppers"]
    reported = {m.partition: m.metadata for m in result.asset_materializations_for_node("segment_model")}
    for month in MONTHS:
        mem = _lake(root, "segment_membership", month).join(gt, on="customer_id").filter(
            pl.col("archetype").is_in(distinct))
        ari = adjusted_rand_score(mem["archetype"].to_list(), mem["cluster_id"].to_list())
        assert reported[month]["adjusted_rand_index"].value == pytest.approx(ari, abs=1e-9), month
        assert reported[month]["adjusted_rand_customers"].value == mem.height
    last = reported[MONTHS[-1]]["adjusted_rand_index"].value
    assert last >= 0.45, last
