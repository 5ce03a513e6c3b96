"""Identity stitching on hand-made ingested events."""

import datetime as dt

import polars as pl

from segpipe.contract import INGESTED_SCHEMA
from segpipe.identity import accumulate_links, build_identity_map, identity_links, stitch_events


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
