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

import polars as pl

_NODE_COLUMNS = {"customer_ref": "c:", "email_hash": "e:", "phone_hash": "p:", "user_id": "u:", "anonymous_id": "a:"}
#: Order in which a row's identifiers decide its customer when it carries no customer id.
_ROW_PRIORITY = ("user_id", "email_hash", "phone_hash", "anonymous_id")
LINK_SCHEMA = {"node": pl.String, "other": pl.String, "first_seen": pl.Datetime("us", "UTC")}
MAP_SCHEMA = {"node": pl.String, "customer_id": pl.String, "hops": pl.Int32, "first_seen": pl.Datetime("us", "UTC")}
_MAX_HOPS = 6


def _node(col: str) -> pl.Expr:
    return pl.when(pl.col(col).is_not_null()).then(pl.lit(_NODE_COLUMNS[col]) + pl.col(col))


def identity_links(events: pl.LazyFrame) -> pl.LazyFrame:
    """Distinct identifier links of ingested events, both directions, with first time seen.

    A row with a single identifier yields a self link, so every identifier is a node.
    """
    present = [c for c in _NODE_COLUMNS if c in events.collect_schema().names()]
    nodes = events.select(*[_node(c).alias(c) for c in present], "event_time")
    pairs = [
        nodes.select(pl.col(a).alias("node"), pl.col(b).alias("other"), "event_time")
        for a in present for b in present
    ]
    return (
        pl.concat(pairs)
        .filter(pl.col("node").is_not_null() & pl.col("other").is_not_null())
        .group_by("node", "other")
        .agg(pl.col("event_time").min().alias("first_seen"))
        .sort("node", "other")
    )


def accumulate_links(previous: pl.LazyFrame, links: pl.LazyFrame) -> pl.LazyFrame:
    """The identity graph to date: the distinct links of ``previous`` (a graph, or any links) and
    ``links`` (the month's), each with the earliest time seen; sorted. Feeding it to
    :func:`build_identity_map` gives the map of all links at once, at the cost of the distinct links
    instead of every month's."""
    return (
        pl.concat([previous.select(list(LINK_SCHEMA)), links.select(list(LINK_SCHEMA))])
        .group_by("node", "other")
        .agg(pl.col("first_seen").min())
        .sort("node", "other")
    )


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
    edges = (links.select(list(LINK_SCHEMA)) if distinct
             else links.group_by("node", "other").agg(pl.col("first_seen").min())).collect()
    nodes = (
        edges.group_by("node").agg(pl.col("first_seen").min()).sort("node")
    )
    labels = nodes.filter(pl.col("node").str.starts_with("c:")).select(
        "node", pl.col("node").str.slice(2).alias("customer_id"), pl.lit(0, pl.Int32).alias("hops"),
        pl.col("first_seen").alias("via_time"),
    )
    real_edges = edges.filter(pl.col("node") != pl.col("other"))
    frontier = labels
    for hop in range(1, _MAX_HOPS + 1):
        cand = (
            real_edges.join(frontier.select(pl.col("node").alias("other"), "customer_id"), on="other")
            .join(labels.select("node"), on="node", how="anti")
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
        rest_edges = real_edges.join(rest.select("node"), on="node", how="semi")
        # label = earliest identifier of the group: sortable "time|node" string
        lab = rest.select("node", (pl.col("first_seen").dt.strftime("%Y%m%d%H%M%S%6f") + "|" + pl.col("node")).alias("label"))
        while True:
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
        uniq = lab.select(pl.col("label").unique().sort())
        uniq = uniq.with_columns(
            pl.Series("customer_id", [_synthetic_id(v.split("|", 1)[1]) for v in uniq["label"].to_list()])
        )
        synth = lab.join(uniq, on="label").select(
            "node", "customer_id", pl.lit(-1, pl.Int32).alias("hops"), pl.lit(None, pl.Datetime("us", "UTC")).alias("via_time")
        )
        labels = pl.concat([labels, synth])
    return (
        labels.join(nodes, on="node")
        .select("node", "customer_id", "hops", "first_seen")
        .sort("node")
        .cast(MAP_SCHEMA)
    )


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
