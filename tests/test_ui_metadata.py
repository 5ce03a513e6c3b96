"""What the Dagster UI shows for every asset and check of the sample config's graph: group,
description, kinds, owner, column schema; a description on every check."""

from pathlib import Path

import dagster as dg
import pytest

from assets.build import build_definitions

REPO = Path(__file__).resolve().parent.parent
GRAPH = build_definitions(REPO / "segpipe.yaml").resolve_asset_graph()
ASSETS = sorted(GRAPH.get_all_asset_keys(), key=lambda k: k.to_user_string())

#: Gaps in asset files owned by other work streams, reported to the lead rather than fixed here.
#: Non-strict xfail: the test starts passing (XPASS) as soon as the owner fills the gap; then
#: delete the entry.
KNOWN_GAPS: dict[str, dict[str, str]] = {"schema": {}, "column_descriptions": {}}


def _params(gaps: dict[str, str]) -> list:
    return [pytest.param(k, id=k.to_user_string(),
                         marks=[pytest.mark.xfail(reason=gaps[k.to_user_string()])] if k.to_user_string() in gaps else [])
            for k in ASSETS]


@pytest.mark.parametrize("key", _params(KNOWN_GAPS["schema"]))
def test_asset_shows_group_description_kinds_owner_and_column_schema(key):
    node = GRAPH.get(key)
    assert node.group_name and node.group_name != "default", f"{key.to_user_string()}: no group"
    assert node.description and len(node.description) > 20, f"{key.to_user_string()}: no description"
    assert node.kinds, f"{key.to_user_string()}: no kinds"
    assert node.owners, f"{key.to_user_string()}: no owner"
    schema = node.metadata.get("dagster/column_schema")
    assert isinstance(schema, dg.TableSchema) and schema.columns, f"{key.to_user_string()}: no dagster/column_schema"


@pytest.mark.parametrize("key", _params({**KNOWN_GAPS["schema"], **KNOWN_GAPS["column_descriptions"]}))
def test_every_column_has_a_description(key):
    schema = GRAPH.get(key).metadata.get("dagster/column_schema")
    assert schema is not None, f"{key.to_user_string()}: no dagster/column_schema"
    undocumented = [c.name for c in schema.columns if not c.description]
    assert not undocumented, f"{key.to_user_string()}: columns without a description: {undocumented}"


@pytest.mark.parametrize("check", sorted(GRAPH.asset_check_keys, key=str), ids=lambda c: c.to_user_string())
def test_check_has_a_description(check):
    assert GRAPH.get_check_spec(check).description, f"{check.to_user_string()}: no description"


def test_report_asset_is_wired_like_the_others():
    node = GRAPH.get(dg.AssetKey("segment_report"))
    assert node.group_name == "exports" and node.kinds == {"altair", "html"}
    assert node.backfill_policy == dg.BackfillPolicy.single_run()
    assert sorted(p.to_user_string() for p in node.parent_keys) == [
        "feature_drift", "segment_membership", "segment_outcomes", "segment_profiles"]
    owners = {GRAPH.get(k).owners[0] for k in ASSETS}
    assert owners == {node.owners[0]}
