"""The segment report HTML, built from hand-made frames: sections, migration counts, determinism."""

import json
import re

import altair as alt
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from segpipe.report import (
    Section,
    build_segment_report,
    chart_count,
    membership_long,
    migration_matrix,
    migration_table,
    profile_column_descriptions,
    segment_sizes,
)

SCHEMES = {"rfm": "rfm_segment", "cluster": "cluster_name"}


def profiles(month: str, rows: list[tuple[str, str, int, float]]) -> pl.DataFrame:
    """Long profiles like segment_profiles: (scheme, segment, customers, revenue) rows."""
    frame = pl.DataFrame(
        {"scheme": [r[0] for r in rows], "segment": [r[1] for r in rows], "customers": [r[2] for r in rows],
         "revenue_365d": [r[3] for r in rows]},
        schema={"scheme": pl.String, "segment": pl.String, "customers": pl.Int64, "revenue_365d": pl.Float64},
    )
    return frame.with_columns(
        pl.lit(month).str.to_date().alias("snapshot_month"),
        (pl.col("customers") / pl.col("customers").sum().over("scheme")).alias("share_customers"),
        (pl.col("revenue_365d") / pl.col("revenue_365d").sum().over("scheme")).alias("share_revenue"),
        pl.lit(14.5).alias("median_recency_days"),
        ("action for " + pl.col("segment")).alias("playbook_action"),
    )


def membership(month: str, assign: dict[str, tuple[str, str]]) -> pl.DataFrame:
    """Wide membership like segment_membership: one label column per scheme."""
    ids = sorted(assign)
    return pl.DataFrame({
        "customer_id": ids,
        "snapshot_month": [month] * len(ids),
        "rfm_segment": [assign[i][0] for i in ids],
        "rfm_reason": ["hand-made"] * len(ids),
        "cluster_id": ["C?"] * len(ids),
        "cluster_name": [assign[i][1] for i in ids],
    }).with_columns(pl.col("snapshot_month").str.to_date())


# January: a, b loyal; c, d new; e dormant.  February: a loyal; b dormant; c, d loyal; f, g new; e left.
# The cluster scheme puts everyone in "Big spenders" except the new ones ("Newcomers").
JAN = membership("2025-01-01", {"a": ("Loyal", "Big spenders"), "b": ("Loyal", "Big spenders"),
                                "c": ("New", "Newcomers"), "d": ("New", "Newcomers"), "e": ("Dormant", "Big spenders")})
FEB = membership("2025-02-01", {"a": ("Loyal", "Big spenders"), "b": ("Dormant", "Big spenders"),
                                "c": ("Loyal", "Big spenders"), "d": ("Loyal", "Big spenders"),
                                "f": ("New", "Newcomers"), "g": ("New", "Newcomers")})
PROFILES = {
    "2025-01-01": profiles("2025-01-01", [("rfm", "Loyal", 2, 300.0), ("rfm", "New", 2, 50.0), ("rfm", "Dormant", 1, 10.0),
                                          ("cluster", "Big spenders", 3, 310.0), ("cluster", "Newcomers", 2, 50.0)]),
    "2025-02-01": profiles("2025-02-01", [("rfm", "Loyal", 3, 500.0), ("rfm", "New", 2, 40.0), ("rfm", "Dormant", 1, 5.0),
                                          ("cluster", "Big spenders", 4, 505.0), ("cluster", "Newcomers", 2, 40.0)]),
}


def report(**kw) -> str:
    args = {"month": "2025-02-01", "profiles_by_month": PROFILES, "membership_prev": JAN, "membership_cur": FEB,
            "schemes": SCHEMES}
    return build_segment_report(**{**args, **kw})


def specs(page: str) -> dict:
    raw = re.search(r'<script type="application/json" id="segpipe-specs">(.*?)</script>', page, re.S).group(1)
    return json.loads(raw)


def chart_values(spec: dict) -> list[dict]:
    (values,) = spec["datasets"].values()
    return values


def section_ids(page: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)">', page)


def rfm(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select("customer_id", pl.col("rfm_segment").alias("segment"))


def test_migration_counts_on_a_hand_made_pair_of_months():
    got = migration_matrix(rfm(JAN), rfm(FEB))
    expected = pl.DataFrame(
        {
            "from_segment": ["Dormant", "Loyal", "Loyal", "New", "entered"],
            "to_segment": ["exited", "Dormant", "Loyal", "Loyal", "New"],
            "customers": [1, 1, 1, 2, 2],
        }
    )
    assert_frame_equal(got, expected)
    assert got["customers"].sum() == len(set(JAN["customer_id"]) | set(FEB["customer_id"]))
    table = migration_table(got)
    assert table.columns == ["from / to", "Dormant", "Loyal", "New", "exited"]
    assert table["from / to"].to_list() == ["Dormant", "Loyal", "New", "entered"]
    assert table.row(1) == ("Loyal", 1, 1, 0, 0)
    assert table.row(3) == ("entered", 0, 0, 2, 0)


def test_wide_membership_becomes_one_row_per_customer_and_scheme():
    long = membership_long(FEB, SCHEMES).sort("scheme", "customer_id")
    assert long.height == 2 * FEB.height
    assert long.filter(pl.col("customer_id") == "b").rows() == [("b", "cluster", "Big spenders"), ("b", "rfm", "Dormant")]


def test_report_has_every_section_and_the_migration_charts_hold_the_counts():
    page = report()
    assert section_ids(page) == ["segment-sizes", "migration", "profiles"]
    assert page.startswith("<!DOCTYPE html>") and "<title>Segment report 2025-02</title>" in page
    assert "6 customers; rfm (3 segments), cluster (2 segments)." in page
    s = specs(page)
    # one chart per scheme in the schemes' order
    assert sorted(s) == ["chart-migration-1", "chart-migration-2", "chart-segment-sizes-1", "chart-segment-sizes-2"]
    assert chart_count(page) == 4
    assert s["chart-migration-1"]["title"] == "Migration (rfm)"
    cells = {(v["from_segment"], v["to_segment"]): v["customers"] for v in chart_values(s["chart-migration-1"])}
    assert cells == {("Dormant", "exited"): 1, ("Loyal", "Dormant"): 1, ("Loyal", "Loyal"): 1,
                     ("New", "Loyal"): 2, ("entered", "New"): 2}
    cluster = {(v["from_segment"], v["to_segment"]): v["customers"] for v in chart_values(s["chart-migration-2"])}
    assert cluster == {("Big spenders", "Big spenders"): 2, ("Big spenders", "exited"): 1,
                       ("Newcomers", "Big spenders"): 2, ("entered", "Newcomers"): 2}
    sizes = {(v["month"], v["segment"]): v["customers"] for v in chart_values(s["chart-segment-sizes-1"])}
    assert sizes == {("2025-01", "Dormant"): 1, ("2025-01", "Loyal"): 2, ("2025-01", "New"): 2,
                     ("2025-02", "Dormant"): 1, ("2025-02", "Loyal"): 3, ("2025-02", "New"): 2}
    # the profile and playbook table of February: rfm first, then cluster; largest segment first
    profile_html = page.split('<section id="profiles">')[1]
    assert profile_html.count("<tr>") == 1 + 5
    assert re.findall(r"<tr><td class=\"txt\">(\w+)</td><td class=\"txt\">([\w ]+)</td>", profile_html) == [
        ("rfm", "Loyal"), ("rfm", "New"), ("rfm", "Dormant"), ("cluster", "Big spenders"), ("cluster", "Newcomers")]
    assert "action for Loyal" in profile_html and ">50.0%<" in profile_html  # 3 of 6 customers
    assert "snapshot_month" not in profile_html


def test_report_is_deterministic_and_ignores_input_order():
    first = report()
    shuffled = report(
        profiles_by_month={k: PROFILES[k].sample(fraction=1.0, shuffle=True, seed=1) for k in reversed(PROFILES)},
        membership_prev=JAN.reverse(), membership_cur=FEB.sample(fraction=1.0, shuffle=True, seed=3),
    )
    assert first == shuffled == report()


def test_report_from_parquet_scans_is_the_report_from_frames(tmp_path):
    """The report asset passes scans of the two membership months (read a scheme column at a time)."""
    JAN.write_parquet(tmp_path / "jan.parquet")
    FEB.write_parquet(tmp_path / "feb.parquet")
    scanned = report(membership_prev=pl.scan_parquet(tmp_path / "jan.parquet"),
                     membership_cur=pl.scan_parquet(tmp_path / "feb.parquet"))
    assert scanned == report()
    assert "6 customers" in scanned and "rfm (3 segments)" in scanned


def test_report_is_self_contained():
    page = report()
    markup = re.sub(r"<script>.*?</script>", "", page, flags=re.S)  # the inlined libraries mention tags
    tags = re.findall(r"<(?:script|link|img|iframe)\b[^>]*>", markup)
    assert not [t for t in tags if "src=" in t or "href=" in t]  # nothing fetched: JS inlined, no CDN
    assert page.count("<script>") == 4  # vega, vega-lite, vega-embed, the embedding code
    assert "vegaEmbed" in page and "sourceMappingURL" not in page


def test_first_month_has_no_migration_section():
    page = report(month="2025-01-01", membership_prev=None, membership_cur=JAN)
    assert section_ids(page) == ["segment-sizes", "profiles"]
    assert "no migration section" in page and chart_count(page) == 2
    # later months of history are not shown in an earlier month's report
    assert {v["month"] for v in chart_values(specs(page)["chart-segment-sizes-1"])} == {"2025-01"}
    assert segment_sizes(PROFILES, month="2025-01")["month"].unique().to_list() == ["2025-01"]


def test_a_long_single_scheme_contract_works_too():
    prof = {k: v.filter(pl.col("scheme") == "rfm").drop("scheme").rename({"segment": "segment_name"})
            .with_columns(("S" + pl.col("customers").cast(pl.String)).alias("segment_id")) for k, v in PROFILES.items()}
    page = report(profiles_by_month=prof, schemes=None,
                  membership_prev=rfm(JAN).rename({"segment": "segment_name"}), membership_cur=rfm(FEB))
    assert section_ids(page) == ["segment-sizes", "migration", "profiles"] and chart_count(page) == 2
    assert specs(page)["chart-migration-1"]["title"] == "Migration"
    assert "6 customers; 3 segments." in page
    assert "<th>segment_id</th><th>segment_name</th><th>customers</th>" in page


def test_extra_sections_render_only_when_given():
    drift = pl.DataFrame({"feature": ["recency_days", "orders_365d"], "psi": [0.31, 0.02], "threshold": [0.2, 0.2]})
    chart = alt.Chart(drift).mark_bar().encode(x="feature:N", y="psi:Q")
    section = Section(key="feature-drift", title="Feature drift", intro="PSI per feature.", charts=(chart,),
                      tables=(("PSI against thresholds", drift),))
    page = report(extra_sections=[section, None])
    assert section_ids(page) == ["segment-sizes", "migration", "profiles", "feature-drift"]
    assert chart_count(page) == 5 and "PSI against thresholds" in page and ">0.31<" in page
    assert section_ids(report(extra_sections=[None])) == ["segment-sizes", "migration", "profiles"]
    with pytest.raises(ValueError, match="unique"):
        report(extra_sections=[Section(key="profiles", title="again")])


def test_user_text_is_escaped():
    evil = "<script>alert(1)</script>"
    prof = {k: v.with_columns(pl.lit(evil).alias("playbook_action")) for k, v in PROFILES.items()}
    cur = FEB.with_columns(pl.when(pl.col("rfm_segment") == "New").then(pl.lit(evil)).otherwise("rfm_segment")
                           .alias("rfm_segment"))
    page = report(profiles_by_month=prof, membership_cur=cur)
    assert evil not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_an_empty_month_still_gives_a_page():
    page = report(month="2025-01-01", profiles_by_month={"2025-01-01": PROFILES["2025-01-01"].clear()},
                  membership_prev=JAN.clear(), membership_cur=JAN.clear())
    assert section_ids(page) == ["migration", "profiles"] and "0 customers" in page


def test_clear_errors():
    with pytest.raises(ValueError, match="2025-03: no segment_profiles"):
        report(month="2025-03-01")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['customer_id'\]"):
        report(membership_cur=FEB.drop("customer_id"))
    with pytest.raises(ValueError, match=r"missing column\(s\) \['cluster_name'\]"):
        report(membership_cur=FEB.drop("cluster_name"))


def test_every_profile_column_gets_a_description():
    desc = profile_column_descriptions(["scheme", "segment", "median_recency_days", "revenue_365d"])
    assert desc["median_recency_days"] == "Median recency_days of the segment's customers."
    assert all(desc.values())


def test_docstring_examples():
    import doctest

    import segpipe.report

    assert doctest.testmod(segpipe.report).failed == 0


def test_outcome_section_renders_only_with_outcomes():
    import polars as pl

    from segpipe.report import outcome_section

    assert outcome_section(None, month="2025-01") is None
    assert outcome_section(pl.DataFrame(schema={"scheme": pl.String}), month="2025-01") is None
    out = pl.DataFrame({
        "scheme": ["rfm", "rfm", "lifecycle"], "segment": ["At Risk", "Champions", "lapsed"],
        "customers": [10, 5, 7], "ordered_next": [0.1, 0.8, 0.0], "active_next": [0.2, 0.9, 0.1],
        "revenue_next_per_customer": [1.0, 50.0, 0.0], "ordered_lift": [0.5, 4.0, 0.0],
        "active_lift": [0.4, 1.8, 0.2], "revenue_lift": [0.1, 5.0, 0.0],
    })
    section = outcome_section(out, month="2025-01", schemes=["rfm", "lifecycle"])
    assert section.key == "outcomes" and len(section.charts) == 2
    caption, table = section.tables[0]
    assert table.filter(pl.col("segment") == "At Risk")["active_lift"].item() == 0.4
