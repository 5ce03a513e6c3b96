"""Identity stitching: emails, app user ids and web cookies → one ``customer_id``.

Every identifier seen on an event is a node ("c:" customer id, "e:" email hash, "p:" phone hash,
"u:" app user id, "a:" anonymous id); identifiers on the same row are linked. The user's own
customer ids are authoritative and kept as they are. Other identifiers take the customer id of the
nearest customer node (fewest links; then earliest link; then smallest id), so a cookie shared by two
logged-in customers never merges the two. Identifiers with no path to a customer id form groups of
their own and get a synthetic, stable id ``sp-<hash>`` of the group's earliest identifier.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl

from segpipe.contract import EVENT_SCHEMA
from segpipe.slices import write_slices

_NODE_COLUMNS = {"customer_ref": "c:", "email_hash": "e:", "phone_hash": "p:", "user_id": "u:", "anonymous_id": "a:"}
#: Order in which a row's identifiers decide its customer when it carries no customer id.
_ROW_PRIORITY = ("user_id", "email_hash", "phone_hash", "anonymous_id")
LINK_SCHEMA = {"node": pl.String, "other": pl.String, "first_seen": pl.Datetime("us", "UTC")}
MAP_SCHEMA = {"node": pl.String, "customer_id": pl.String, "hops": pl.Int32, "first_seen": pl.Datetime("us", "UTC")}
_MAX_HOPS = 6


def _node(col: str) -> pl.Expr:
    return pl.when(pl.col(col).is_not_null()).then(pl.lit(_NODE_COLUMNS[col]) + pl.col(col))


def _pairs(events: pl.LazyFrame) -> pl.LazyFrame:
    """Every identifier pair of every event (``node, other, first_seen``), repeats included."""
    present = [c for c in _NODE_COLUMNS if c in events.collect_schema().names()]
    nodes = events.select(*[_node(c).alias(c) for c in present], "event_time")
    pairs = [
        nodes.select(pl.col(a).alias("node"), pl.col(b).alias("other"), pl.col("event_time").alias("first_seen"))
        for a in present for b in present
    ]
    return pl.concat(pairs).filter(pl.col("node").is_not_null() & pl.col("other").is_not_null())


def identity_links(events: pl.LazyFrame) -> pl.LazyFrame:
    """Distinct identifier links of ingested events, both directions, with first time seen.

    A row with a single identifier yields a self link, so every identifier is a node.
    """
    return _distinct_links(_pairs(events))


def write_links(events: pl.LazyFrame, folder: Path, *, slice_rows: int) -> pl.LazyFrame:
    """:func:`identity_links` written to Parquet parts in ``folder``: the events' identifier pairs
    are computed once and scattered by ranges of identifiers (about ``slice_rows`` pairs each,
    :func:`segpipe.slices.write_slices`), then each range is grouped and sorted alone. Returns a
    scan of the parts."""
    pairs = _pairs(events)
    rows = pairs.select(pl.len()).collect().item()
    return pl.scan_parquet(write_slices(pairs, folder, key="node", rows=rows, slice_rows=slice_rows,
                                        arrange=_distinct_links, name="links", scatter=True))


def _distinct_links(links: pl.LazyFrame) -> pl.LazyFrame:
    return links.group_by("node", "other").agg(pl.col("first_seen").min()).sort("node", "other")


def accumulate_links(previous: pl.LazyFrame, links: pl.LazyFrame) -> pl.LazyFrame:
    """The identity graph to date: the distinct links of ``previous`` (a graph, or any links) and
    ``links`` (the month's), each with the earliest time seen; sorted. Feeding it to
    :func:`build_identity_map` gives the map of all links at once, at the cost of the distinct links
    instead of every month's."""
    return _distinct_links(pl.concat([previous.select(list(LINK_SCHEMA)), links.select(list(LINK_SCHEMA))]))


def write_graph(previous: pl.LazyFrame, links: pl.LazyFrame, folder: Path, *, slice_rows: int) -> pl.LazyFrame:
    """:func:`accumulate_links` written to Parquet parts in ``folder``, a range of identifiers at a
    time (about ``slice_rows`` input links each, :func:`segpipe.slices.write_slices`): memory
    follows one range, not the graph. Returns a scan of the parts."""
    both = pl.concat([previous.select(list(LINK_SCHEMA)), links.select(list(LINK_SCHEMA))])
    rows = both.select(pl.len()).collect().item()
    return pl.scan_parquet(write_slices(both, folder, key="node", rows=rows, slice_rows=slice_rows,
                                        arrange=_distinct_links, name="graph"))


def _synthetic_id(label: str) -> str:
    return "sp-" + hashlib.blake2b(label.encode(), digest_size=8).hexdigest()


def build_identity_map(links: pl.LazyFrame, *, distinct: bool = False) -> pl.DataFrame:
    """Map every identifier node to a customer id (see the module docstring).

    Parameters
    ----------
    links : LazyFrame
        Output of :func:`identity_links`, possibly over many months (duplicates allowed).
    distinct : bool
        The links are already distinct with their earliest time (a graph of
        :func:`accumulate_links`): they are used as they are instead of grouped again.

    Returns
    -------
    DataFrame
        ``node, customer_id, hops, first_seen`` sorted by node; ``hops`` is 0 for customer ids,
        the number of links to the customer id otherwise, -1 for synthetic ids.
    """
    # The links stay lazy (with ``distinct``, a scan of the graph's files): each pass below streams
    # them, so the process holds the nodes and labels, not the links (2.3 -> see docs/scale.md).
    edges = (links.select(list(LINK_SCHEMA)) if distinct
             else links.group_by("node", "other").agg(pl.col("first_seen").min()).collect().lazy())
    nodes = edges.group_by("node").agg(pl.col("first_seen").min()).collect().sort("node")
    labels = nodes.filter(pl.col("node").str.starts_with("c:")).select(
        "node", pl.col("node").str.slice(2).alias("customer_id"), pl.lit(0, pl.Int32).alias("hops"),
        pl.col("first_seen").alias("via_time"),
    )
    real_edges = edges.filter(pl.col("node") != pl.col("other"))
    frontier = labels
    for hop in range(1, _MAX_HOPS + 1):
        cand = (
            real_edges.join(frontier.lazy().select(pl.col("node").alias("other"), "customer_id"), on="other")
            .join(labels.lazy().select("node"), on="node", how="anti")
            .collect()
            .sort("node", "first_seen", "customer_id")
            .unique("node", keep="first", maintain_order=True)
            .select("node", "customer_id", pl.lit(hop, pl.Int32).alias("hops"), pl.col("first_seen").alias("via_time"))
        )
        if cand.height == 0:
            break
        labels = pl.concat([labels, cand])
        frontier = cand

    # Groups with no customer id: connected components by min-label propagation.
    rest = nodes.join(labels.select("node"), on="node", how="anti")
    if rest.height:
        rest_edges = real_edges.join(rest.lazy().select("node"), on="node", how="semi").collect()
        # label = earliest identifier of the group: sortable "time|node" string
        lab = rest.select("node", (pl.col("first_seen").dt.strftime("%Y%m%d%H%M%S%6f") + "|" + pl.col("node")).alias("label"))
        # An identifier never seen with another keeps its own label: only the linked ones propagate.
        alone = lab.join(rest_edges.lazy().select("node").unique().collect(), on="node", how="anti")
        lab = lab.join(alone.select("node"), on="node", how="anti")
        while lab.height:
            nb = (
                rest_edges.join(lab.rename({"node": "other", "label": "nl"}), on="other")
                .group_by("node").agg(pl.col("nl").min())
            )
            new = lab.join(nb, on="node", how="left").select(
                "node", pl.min_horizontal("label", "nl").alias("label")
            )
            changed = new.join(lab, on="node").filter(pl.col("label") != pl.col("label_right")).height
            lab = new
            if changed == 0:
                break
        lab = pl.concat([lab, alone])
        uniq = lab.select(pl.col("label").unique().sort())
        # hashed 100k at a time: a Python string per label of millions would double the step's peak
        uniq = uniq.with_columns(pl.concat([
            pl.Series("customer_id", [_synthetic_id(v.split("|", 1)[1]) for v in part.to_list()], dtype=pl.String)
            for part in (uniq["label"].slice(i, 100_000) for i in range(0, uniq.height, 100_000))
        ] or [pl.Series("customer_id", [], dtype=pl.String)]))
        synth = lab.join(uniq, on="label").select(
            "node", "customer_id", pl.lit(-1, pl.Int32).alias("hops"), pl.lit(None, pl.Datetime("us", "UTC")).alias("via_time")
        )
        labels = pl.concat([labels, synth])
    # Every node has exactly one label: the labels sorted by node line up with the (sorted) nodes,
    # which costs less memory than a join of millions of identifiers.
    labels = labels.select("node", "customer_id", "hops").sort("node")
    if not labels["node"].equals(nodes["node"]):
        raise AssertionError("identity map: labels do not cover the nodes one to one")
    return nodes.select("node", labels["customer_id"], labels["hops"], "first_seen").cast(MAP_SCHEMA)


def stitch_events(events: pl.LazyFrame, identity_map: pl.LazyFrame) -> pl.LazyFrame:
    """Give each ingested event its ``customer_id``: its own customer id when it has one, else the
    identity map's customer of its first identifier in the order user id, email, phone, cookie.

    Each kind of identifier is looked up among the map's nodes of that kind only (a smaller hash
    table per join: 3.4 -> 2.8 GiB peak for a month at 1M customers)."""
    cols = events.collect_schema().names()
    out = events
    looked_up = []
    for c in _ROW_PRIORITY:
        if c not in cols:
            continue
        m = identity_map.filter(pl.col("node").str.starts_with(_NODE_COLUMNS[c])).select(
            pl.col("node").alias(f"__n_{c}"), pl.col("customer_id").alias(f"__cid_{c}"))
        out = out.with_columns(_node(c).alias(f"__n_{c}")).join(m, on=f"__n_{c}", how="left", maintain_order="left")
        looked_up.append(f"__cid_{c}")
    out = out.with_columns(customer_id=pl.coalesce("customer_ref", *looked_up))
    return out.drop([c for c in out.collect_schema().names() if c.startswith("__")])


EVENT_ORDER = ("event_time", "source", "event_id")


def stitch_month(events: pl.LazyFrame, identity_map: pl.LazyFrame, folder: Path, *, slice_rows: int) -> pl.LazyFrame:
    """A month's events stitched (:func:`stitch_events`) in the canonical contract, sorted by time,
    source and event id, written to Parquet parts in ``folder``; returns a scan of the parts.

    The join streams into one unsorted file; it is then sorted a range of event times at a time
    (about ``slice_rows`` events each, :func:`segpipe.slices.write_slices`), so memory follows the
    identity map and one slice, not the month's events."""
    folder.mkdir(parents=True, exist_ok=True)
    joined = folder / "stitched-unsorted.parquet"
    stitch_events(events, identity_map).select(list(EVENT_SCHEMA)).sink_parquet(joined, compression="lz4")
    unsorted = pl.scan_parquet(joined)
    rows = unsorted.select(pl.len()).collect().item()
    parts = write_slices(unsorted, folder, key="event_time", rows=rows, slice_rows=slice_rows,
                         arrange=lambda lf: lf.sort(*EVENT_ORDER), name="events")
    joined.unlink()
    return pl.scan_parquet(parts)


IDENTITY_KINDS = ("customer", "contact", "anonymous")


def customer_identity(identity_map: pl.LazyFrame) -> pl.LazyFrame:
    """Per customer id, how well it is known: ``customer`` (one of your own customer ids),
    ``contact`` (an email, phone or app account, but no customer id) or ``anonymous`` (web
    cookies only)."""
    node = pl.col("node")
    return (
        identity_map.group_by("customer_id")
        .agg(
            node.str.starts_with("c:").any().alias("__c"),
            (node.str.starts_with("e:") | node.str.starts_with("p:") | node.str.starts_with("u:")).any().alias("__k"),
        )
        .select(
            "customer_id",
            pl.when("__c").then(pl.lit("customer")).when("__k").then(pl.lit("contact"))
            .otherwise(pl.lit("anonymous")).alias("identity"),
        )
        .sort("customer_id")
    )
