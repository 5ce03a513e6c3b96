"""Identity stitching on hand-made ingested events."""

import datetime as dt

import polars as pl
import pytest

from segpipe.contract import INGESTED_SCHEMA
from segpipe.identity import (
    LINK_SCHEMA,
    accumulate_links,
    build_identity_map,
    customer_identity,
    identity_links,
    stitch_events,
    update_identity_map,
)


def _events(rows: list[dict]) -> pl.LazyFrame:
    base = {c: None for c in INGESTED_SCHEMA}
    out = []
    for i, r in enumerate(rows):
        t = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(days=r.pop("day"))
        out.append({**base, "event_id": f"e{i}", "event_time": t, "source": r.pop("source", "web"),
                    "event_type": "x", **r})
    return pl.DataFrame(out, schema=INGESTED_SCHEMA).lazy()


EVENTS = [
    # C1 orders with email E1; app user U1 signs up with E1; cookie A1 seen anonymous, then logged in as C1
    {"day": 0, "source": "orders", "customer_ref": "C1", "email_hash": "E1"},
    {"day": 1, "source": "product", "user_id": "U1", "email_hash": "E1"},
    {"day": 2, "source": "product", "user_id": "U1"},
    {"day": 0, "anonymous_id": "A1"},
    {"day": 3, "anonymous_id": "A1", "customer_ref": "C1"},
    {"day": 4, "source": "email", "email_hash": "E1"},
    # household cookie A9 used by C1 and C2: must not merge the two customers
    {"day": 5, "source": "orders", "customer_ref": "C2", "email_hash": "E2"},
    {"day": 6, "anonymous_id": "A9", "customer_ref": "C2"},
    {"day": 7, "anonymous_id": "A9", "customer_ref": "C1"},
    # email-only subscriber E3 with an app account U3: one synthetic customer
    {"day": 2, "source": "email", "email_hash": "E3"},
    {"day": 8, "source": "product", "user_id": "U3", "email_hash": "E3"},
    # a cookie never identified
    {"day": 9, "anonymous_id": "A7"},
]


def test_identifiers_stitch_to_the_users_customer_id():
    imap = build_identity_map(identity_links(_events([dict(e) for e in EVENTS])))
    cid = dict(zip(imap["node"], imap["customer_id"]))
    assert cid["c:C1"] == cid["e:E1"] == cid["u:U1"] == cid["a:A1"] == "C1"
    assert cid["c:C2"] == cid["e:E2"] == "C2"
    # the shared cookie goes to the customer it was first seen with; C1 and C2 stay apart
    assert cid["a:A9"] == "C2" and cid["c:C1"] == "C1"
    # email-only person: one synthetic id for the email and the app user
    assert cid["e:E3"] == cid["u:U3"] and cid["e:E3"].startswith("sp-")
    assert cid["a:A7"].startswith("sp-") and cid["a:A7"] != cid["e:E3"]
    assert imap["node"].is_sorted() and imap["node"].n_unique() == imap.height


def _kinds_by_definition(imap: pl.DataFrame) -> pl.DataFrame:
    """Each customer id's kind from all of its identifiers: any customer id, else any email, phone
    or app account, else cookies only."""
    node = pl.col("node")
    return (imap.group_by("customer_id").agg(node.str.starts_with("c:").any().alias("c"),
                                             node.str.contains("^[epu]:").any().alias("k"))
            .select("customer_id", pl.when("c").then(pl.lit("customer")).when("k").then(pl.lit("contact"))
                    .otherwise(pl.lit("anonymous")).alias("identity"))
            .sort("customer_id"))


def test_customer_identity_says_how_well_each_customer_is_known():
    imap = build_identity_map(identity_links(_events([dict(e) for e in EVENTS])))
    kinds = customer_identity(imap.lazy()).collect()
    kind = dict(zip(kinds["customer_id"], kinds["identity"]))
    cid = dict(zip(imap["node"], imap["customer_id"]))
    assert kind == {"C1": "customer", "C2": "customer", cid["e:E3"]: "contact", cid["a:A7"]: "anonymous"}
    assert kinds["customer_id"].is_unique().all() and kinds.height == imap["customer_id"].n_unique()


def test_stitching_is_deterministic_and_order_independent():
    a = build_identity_map(identity_links(_events([dict(e) for e in EVENTS])))
    b = build_identity_map(identity_links(_events([dict(e) for e in reversed(EVENTS)])))
    assert a.equals(b)


def test_synthetic_id_becomes_the_real_id_once_linked():
    before = build_identity_map(identity_links(_events([{"day": 0, "source": "email", "email_hash": "E5"}])))
    after = build_identity_map(identity_links(_events([
        {"day": 0, "source": "email", "email_hash": "E5"},
        {"day": 30, "source": "orders", "customer_ref": "C5", "email_hash": "E5"},
    ])))
    assert before["customer_id"].item().startswith("sp-")
    assert dict(zip(after["node"], after["customer_id"]))["e:E5"] == "C5"


def test_every_event_gets_a_customer_and_own_ids_win():
    ev = _events([dict(e) for e in EVENTS])
    imap = build_identity_map(identity_links(ev))
    out = stitch_events(ev, imap.lazy()).collect()
    assert out["customer_id"].null_count() == 0 and out.height == len(EVENTS)
    by_id = dict(zip(out["event_id"], out["customer_id"]))
    assert by_id["e2"] == "C1"  # app event with only the user id
    assert by_id["e3"] == "C1"  # anonymous page view before login, stitched
    assert by_id["e8"] == "C1"  # shared cookie logged in as C1: the row's own customer id wins
    assert by_id["e5"] == "C1"  # email engagement


def test_the_graph_accumulated_month_by_month_gives_the_map_of_all_links():
    """identity_graph adds each month's links to the previous month's graph: the same graph (and so
    the same map) as all links at once, whatever the order, with each link's earliest time."""
    months = [[e for e in EVENTS if lo <= e["day"] < hi] for lo, hi in ((0, 2), (2, 5), (5, 10))]
    links = [identity_links(_events([dict(e) for e in m])).collect() for m in months]
    graph = pl.DataFrame(schema=links[0].schema)
    for month in links:
        graph = accumulate_links(graph.lazy(), month.lazy()).collect()
    every = identity_links(_events([dict(e) for e in EVENTS])).collect()
    assert graph.equals(every)
    assert graph.height < sum(m.height for m in links)  # links repeat across months, the graph keeps them once
    assert build_identity_map(graph.lazy()).equals(build_identity_map(every.lazy()))
    assert build_identity_map(graph.lazy(), distinct=True).equals(build_identity_map(every.lazy()))
    # a later sighting never moves first_seen
    again = accumulate_links(graph.lazy(), identity_links(_events([{"day": 20, "source": "orders", "customer_ref": "C1",
                                                                     "email_hash": "E1"}]))).collect()
    assert again.equals(graph)


def _random_months(seed: int, months: int = 5) -> list[list[dict]]:
    """Events of ``months`` 30-day months linking identifiers of small pools at random, so that
    customers share cookies, anonymous groups grow, merge and meet customer ids, and long chains
    (more hops than the map follows) appear and are cut short later."""
    import random

    rng = random.Random(seed)
    kinds = {"customer_ref": "C", "email_hash": "E", "user_id": "U", "anonymous_id": "A", "phone_hash": "P"}
    pool = {k: rng.randint(3, 9) for k in kinds}
    chain = [f"Z{i}" for i in range(rng.randint(7, 10))]  # cookies linked one after the other
    out = []
    for m in range(months):
        rows = []
        for _ in range(rng.randint(4, 14)):
            picked = rng.sample(list(kinds), rng.randint(1, 3))
            row = {k: f"{kinds[k]}{rng.randint(0, pool[k] + 2 * m)}" for k in picked}
            rows.append({"day": 30 * m + rng.randint(0, 29), "source": rng.choice(["web", "orders", "email"]), **row})
        # the chain is laid out link by link, and a customer id sometimes appears at one end or in it
        for i in range(m * 3, min(len(chain) - 1, m * 3 + 3)):
            rows.append({"day": 30 * m + rng.randint(0, 29), "anonymous_id": chain[i], "email_hash": f"Q{chain[i + 1]}"})
            rows.append({"day": 30 * m + rng.randint(0, 29), "anonymous_id": chain[i + 1], "email_hash": f"Q{chain[i + 1]}"})
        if rng.random() < 0.5:
            rows.append({"day": 30 * m + rng.randint(0, 29), "anonymous_id": rng.choice(chain),
                         "customer_ref": f"C{rng.randint(0, pool['customer_ref'])}"})
        out.append(rows)
    return out


@pytest.mark.parametrize("seed", range(60))
def test_the_map_updated_month_by_month_equals_the_map_built_from_scratch(seed):
    """identity_map updates the previous month's map with the month's new links: the same map as a
    build from the whole graph, month after month (each update starting from the last update)."""
    months = _random_months(seed)
    graph = pl.DataFrame(schema=LINK_SCHEMA)
    imap = None
    for m, rows in enumerate(months):
        graph = accumulate_links(graph.lazy(), identity_links(_events([dict(r) for r in rows]))).collect()
        scratch = build_identity_map(graph.lazy(), distinct=True)
        if imap is not None:
            since = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(days=30 * m)
            plan = update_identity_map(imap.lazy(), graph.lazy(), since=since)
            assert plan is not None
            imap = plan.collect()
            assert imap.equals(scratch), f"month {m}"
        else:
            imap = scratch
        # the kinds read from the map's invariants (c: rows, synthetic groups) match all identifiers'
        assert customer_identity(imap.lazy()).collect().sort("customer_id").equals(_kinds_by_definition(imap)), f"month {m}"


def test_the_update_cuts_an_anonymous_group_that_a_customer_id_reaches():
    """Cookies Z0..Z8 in a chain are one anonymous person; a customer id linked to Z0 reaches Z0..Z5
    (Q2 at 6 hops) and the rest, out of reach, is a smaller anonymous group with a new id."""
    chain = [{"day": i, "anonymous_id": f"Z{i}", "email_hash": f"Q{i}"} for i in range(9)]
    chain += [{"day": i, "anonymous_id": f"Z{i + 1}", "email_hash": f"Q{i}"} for i in range(8)]
    before = accumulate_links(pl.LazyFrame(schema=LINK_SCHEMA), identity_links(_events(chain))).collect()
    old = build_identity_map(before.lazy(), distinct=True)
    assert old["customer_id"].n_unique() == 1 and old["customer_id"][0].startswith("sp-")
    after = accumulate_links(before.lazy(), identity_links(_events([
        {"day": 40, "anonymous_id": "Z0", "customer_ref": "C1"}]))).collect()
    new = update_identity_map(old.lazy(), after.lazy(), since=dt.datetime(2025, 2, 1, tzinfo=dt.timezone.utc)).collect()
    assert new.equals(build_identity_map(after.lazy(), distinct=True))
    cid = dict(zip(new["node"], new["customer_id"]))
    hops = dict(zip(new["node"], new["hops"]))
    assert cid["a:Z0"] == cid["e:Q2"] == "C1" and hops["a:Z0"] == 1 and hops["e:Q2"] == 6
    assert cid["a:Z3"].startswith("sp-") and cid["a:Z3"] == cid["a:Z8"] != old["customer_id"][0]


def test_the_update_refuses_a_previous_map_of_another_graph():
    """A previous map that is not the map of the graph's older links (a stale or foreign partition),
    or not sorted by identifier, is refused (None): the asset then builds the month from scratch."""
    graph = identity_links(_events([dict(e) for e in EVENTS])).collect()
    wrong = build_identity_map(identity_links(_events([dict(e) for e in EVENTS[:4]])))
    since = dt.datetime(2025, 1, 6, tzinfo=dt.timezone.utc)
    assert update_identity_map(wrong.lazy(), graph.lazy(), since=since) is None
    right = build_identity_map(graph.filter(pl.col("first_seen") < since).lazy(), distinct=True)
    assert update_identity_map(right.reverse().lazy(), graph.lazy(), since=since) is None  # not sorted by node
    assert update_identity_map(right.lazy(), graph.lazy(), since=since).collect().equals(build_identity_map(graph.lazy()))
