"""The monthly segment report: one self-contained static HTML page per snapshot month.

Sections (each rendered only when its data is given):

* **Segment sizes over time**, one chart per scheme: stacked bars of customers per segment for
  every month of history so far (from ``segment_profiles``).
* **Migration** between the previous and this month, one heatmap per scheme: customers moving
  from segment to segment, with an ``entered`` row (new this month) and an ``exited`` column (no
  longer in the snapshot) (from ``segment_membership`` of both months).
* **Profiles and playbook**: this month's profile table with the playbook action per segment.
* **Extra sections** (:class:`Section`): later work (feature drift against thresholds, next-month
  outcome lift per segment) builds a ``Section`` from its own frames with a small function like
  :func:`migration_section` and passes it in ``extra_sections``; nothing else changes.

Inputs follow the segment contract loosely so the report survives new schemes and columns:
profiles need ``customers`` and a segment label (``segment`` or ``segment_name``), optionally
``scheme``, ``segment_id``, ``share_*``, ``median_*`` and ``playbook_action``; membership is long
(``customer_id``, optional ``scheme``, ``segment``/``segment_name``) or wide with one label column
per scheme, named by ``schemes`` (e.g. ``{"rfm": "rfm_segment", "cluster": "cluster_name"}``).

Charts are Vega-Lite specs made with altair and rendered in the browser by vega-embed. The three
JavaScript libraries are vendored in ``segpipe/static/`` (from the npm packages, versions in
:data:`VEGA_JS`) and inlined, so the page works offline and from ``file://``. The page is
deterministic: the same inputs give byte-identical HTML (no timestamps, sorted keys, explicit
sort orders, no auto-numbered altair names).

This module is pure: no Dagster, no I/O except reading the vendored JavaScript once.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import altair as alt
import polars as pl

from segpipe.segments import rows_of, transitions

STATIC_DIR = Path(__file__).resolve().parent / "static"

#: Vendored JavaScript (file in ``segpipe/static``, npm package and version). Altair 6 writes
#: Vega-Lite 6.4.1 specs; vega 6.2 is the release matched to that vega-lite.
VEGA_JS: tuple[tuple[str, str], ...] = (
    ("vega.min.js", "vega@6.2.0"),
    ("vega-lite.min.js", "vega-lite@6.4.1"),
    ("vega-embed.min.js", "vega-embed@7.1.0"),
)

ENTERED = "entered"
EXITED = "exited"
#: Scheme name used when the inputs have no ``scheme`` column.
DEFAULT_SCHEME = "segments"
_LABELS = ("segment", "segment_name")

#: One-line definitions of the profile table's columns (``median_<feature>`` are generated).
PROFILE_COLUMN_DESCRIPTIONS = {
    "scheme": "Segment scheme (rfm, rules, lifecycle, cluster ...).",
    "segment": "Segment name within the scheme.",
    "segment_id": "Segment id within the scheme.",
    "segment_name": "Segment name.",
    "customers": "Customers in the segment this month.",
    "share_customers": "Share of the month's customers.",
    "share_revenue": "Share of the month's revenue.",
    "playbook_action": "What to do with the segment (from the config's playbook).",
}

_CHART_WIDTH = 640
_EMBED_OPTIONS = {"actions": False, "renderer": "svg"}


def profile_column_descriptions(columns: Sequence[str]) -> dict[str, str]:
    """A one-line definition for each profile table column in ``columns``."""
    out = {}
    for c in columns:
        if c in PROFILE_COLUMN_DESCRIPTIONS:
            out[c] = PROFILE_COLUMN_DESCRIPTIONS[c]
        elif c.startswith("median_"):
            out[c] = f"Median {c.removeprefix('median_')} of the segment's customers."
        elif c.startswith("share_"):
            out[c] = f"Share of the month's {c.removeprefix('share_')}."
        else:
            out[c] = f"{c.replace('_', ' ').capitalize()} of the segment."
    return out


@dataclass(frozen=True)
class Section:
    """One section of the report.

    Parameters
    ----------
    key : str
        Anchor id (letters, digits, ``-``), unique in the report.
    title : str
        Heading.
    intro : str
        One or two sentences saying what the section shows (plain text, escaped).
    charts : tuple
        Altair charts or Vega-Lite spec dicts, rendered in order.
    tables : tuple
        ``(caption, frame)`` pairs rendered as HTML tables after the charts.
    fold_tables : bool
        Render each table folded (``<details>``, the caption as its summary): for tables that
        repeat a chart's numbers.
    """

    key: str
    title: str
    intro: str = ""
    charts: tuple[Any, ...] = ()
    tables: tuple[tuple[str, pl.DataFrame], ...] = field(default=())
    fold_tables: bool = False


def _require(frame: pl.DataFrame | pl.LazyFrame, columns: Sequence[str], what: str) -> None:
    have = frame.collect_schema().names()
    missing = [c for c in columns if c not in have]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing}; has {have}")


def _label(frame: pl.DataFrame | pl.LazyFrame, what: str) -> str:
    """The segment label column of ``frame`` ("segment" or "segment_name")."""
    have = frame.collect_schema().names()
    for c in _LABELS:
        if c in have:
            return c
    raise ValueError(f"{what}: missing column(s) ['segment'] (or 'segment_name'); has {have}")


def _month(key: str) -> str:
    return key[:7]


def _scheme_order(present: Sequence[str], schemes: Sequence[str] | None) -> list[str]:
    """Schemes in ``schemes`` order (when given), the others sorted after them."""
    known = [s for s in (schemes or []) if s in set(present)]
    return known + sorted(set(present) - set(known))


def _chart_suffix(scheme: str) -> str:
    return "" if scheme == DEFAULT_SCHEME else f" ({scheme})"


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

def segment_sizes(profiles_by_month: Mapping[str, pl.DataFrame], *, month: str) -> pl.DataFrame:
    """Customers and shares per month, scheme and segment for every month up to ``month``.

    Columns: ``scheme, month ("YYYY-MM"), segment, customers, share_customers``, sorted by
    scheme, month and segment. Months after ``month`` are ignored.
    """
    frames = []
    for key in sorted(k for k in profiles_by_month if _month(k) <= _month(month)):
        prof = profiles_by_month[key]
        what = f"segment_profiles {_month(key)}"
        label = _label(prof, what)
        _require(prof, ["customers"], what)
        frame = prof.select(
            (pl.col("scheme").cast(pl.String) if "scheme" in prof.columns else pl.lit(DEFAULT_SCHEME)).alias("scheme"),
            pl.lit(_month(key)).alias("month"),
            pl.col(label).cast(pl.String).alias("segment"),
            pl.col("customers").cast(pl.Int64),
        )
        frames.append(frame.with_columns(
            (pl.col("customers") / pl.col("customers").sum().over("scheme")).fill_nan(0.0).alias("share_customers")))
    schema = {"scheme": pl.String, "month": pl.String, "segment": pl.String, "customers": pl.Int64,
              "share_customers": pl.Float64}
    if not frames:
        return pl.DataFrame(schema=schema)
    return pl.concat(frames).cast(schema).sort("scheme", "month", "segment")


def membership_long(membership: pl.DataFrame, schemes: Mapping[str, str] | None = None, *,
                    what: str = "segment_membership") -> pl.DataFrame:
    """``(customer_id, scheme, segment)`` rows from a long or a wide membership table.

    With ``schemes`` (scheme → label column), a wide table gives one row per customer and scheme;
    without, the table must already be long (optional ``scheme``, ``segment``/``segment_name``).
    """
    _require(membership, ["customer_id"], what)
    if schemes:
        _require(membership, list(schemes.values()), what)
        frames = [membership.select("customer_id", pl.lit(scheme).alias("scheme"), pl.col(col).cast(pl.String).alias("segment"))
                  for scheme, col in schemes.items()]
        return pl.concat(frames) if frames else pl.DataFrame(schema={"customer_id": pl.String, "scheme": pl.String,
                                                                      "segment": pl.String})
    label = _label(membership, what)
    return membership.select(
        "customer_id",
        (pl.col("scheme").cast(pl.String) if "scheme" in membership.columns else pl.lit(DEFAULT_SCHEME)).alias("scheme"),
        pl.col(label).cast(pl.String).alias("segment"),
    )


def migration_matrix(prev: pl.DataFrame, cur: pl.DataFrame) -> pl.DataFrame:
    """Customers moving between segments of one scheme from ``prev`` to ``cur``.

    ``prev`` and ``cur`` hold ``customer_id`` and a segment label (``segment`` or
    ``segment_name``). One row per (from, to) pair that occurs: ``from_segment`` is the previous
    segment or ``"entered"`` for customers not in ``prev``; ``to_segment`` is this month's segment
    or ``"exited"`` for customers not in ``cur``. Sorted by from, then to, with ``entered`` and
    ``exited`` last.

    Examples
    --------
    >>> prev = pl.DataFrame({"customer_id": ["a", "b"], "segment": ["Loyal", "New"]})
    >>> cur = pl.DataFrame({"customer_id": ["b", "c"], "segment": ["Loyal", "New"]})
    >>> migration_matrix(prev, cur).rows()
    [('Loyal', 'exited', 1), ('New', 'Loyal', 1), ('entered', 'New', 1)]
    """
    _require(prev, ["customer_id"], "previous segment_membership")
    _require(cur, ["customer_id"], "current segment_membership")
    a = prev.select("customer_id", pl.col(_label(prev, "previous segment_membership")).alias("segment"))
    b = cur.select("customer_id", pl.col(_label(cur, "current segment_membership")).alias("segment"))
    return transitions(a, b, entered=ENTERED, exited=EXITED).sort(
        pl.col("from_segment") == ENTERED, "from_segment", pl.col("to_segment") == EXITED, "to_segment")


def migration_table(migration: pl.DataFrame) -> pl.DataFrame:
    """:func:`migration_matrix` as a cross table: one row per previous segment (``entered`` last),
    one column per current segment (``exited`` last), zeros where nobody moved."""
    rows = _segment_order(migration["from_segment"].to_list(), last=ENTERED)
    cols = _segment_order(migration["to_segment"].to_list(), last=EXITED)
    counts = {(r["from_segment"], r["to_segment"]): r["customers"] for r in migration.iter_rows(named=True)}
    return pl.DataFrame(
        {"from / to": rows, **{c: [counts.get((r, c), 0) for r in rows] for c in cols}},
        schema={"from / to": pl.String, **{c: pl.Int64 for c in cols}},
    )


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------

def _segment_order(names: Sequence[str], *, last: str) -> list[str]:
    """Segment names sorted, then ``last`` ("entered" or "exited") when it occurs."""
    return sorted(set(names) - {ENTERED, EXITED}) + ([last] if last in names else [])


def segment_sizes_section(profiles_by_month: Mapping[str, pl.DataFrame], *, month: str,
                          schemes: Sequence[str] | None = None) -> Section | None:
    """Stacked bars of customers per segment and month, one chart per scheme."""
    sizes = segment_sizes(profiles_by_month, month=month)
    if sizes.is_empty():
        return None
    charts = []
    for scheme in _scheme_order(sizes["scheme"].unique().to_list(), schemes):
        rows = sizes.filter(pl.col("scheme") == scheme).drop("scheme")
        charts.append(
            alt.Chart(rows, title="Customers per segment" + _chart_suffix(scheme))
            .mark_bar()
            .encode(
                x=alt.X("month:O", title="month", sort="ascending", axis=alt.Axis(labelAngle=0)),
                y=alt.Y("customers:Q", title="customers", stack="zero"),
                color=alt.Color("segment:N", title="segment", sort=sorted(set(rows["segment"].to_list())),
                                scale=alt.Scale(scheme="tableau20"),
                                legend=alt.Legend(orient="right", labelLimit=320)),
                order=alt.Order("segment:N", sort="ascending"),
                tooltip=["month:O", "segment:N", "customers:Q", alt.Tooltip("share_customers:Q", format=".1%")],
            )
            .properties(width=_CHART_WIDTH, height=240)
        )
    months = sizes["month"].unique().sort().to_list()
    return Section(
        key="segment-sizes",
        title="Segment sizes over time",
        intro=f"Customers per segment at the end of each month, {months[0]} to {months[-1]}"
              + (", one chart per scheme." if len(charts) > 1 else "."),
        charts=tuple(charts),
    )


def migration_section(prev: pl.DataFrame | pl.LazyFrame | None, cur: pl.DataFrame | pl.LazyFrame, *, month: str,
                      prev_month: str | None = None, schemes: Mapping[str, str] | None = None) -> Section | None:
    """Heatmaps of customers moving from last month's segment (rows) to this month's (columns),
    one per scheme (``schemes`` as in :func:`membership_long`)."""
    if prev is None:
        return None
    if schemes:  # a wide table: one scheme's column at a time, not a long table of all of them
        _require(prev, ["customer_id", *schemes.values()], "previous segment_membership")
        _require(cur, ["customer_id", *schemes.values()], "current segment_membership")
        present = list(schemes) if rows_of(prev) or rows_of(cur) else []

        def pair(scheme: str) -> tuple[pl.DataFrame, pl.DataFrame]:
            one = {scheme: schemes[scheme]}
            return membership_long(prev, one), membership_long(cur, one)
    else:
        before = membership_long(prev, what="previous segment_membership")
        after = membership_long(cur, what="current segment_membership")
        present = list(set(before["scheme"].to_list()) | set(after["scheme"].to_list()))

        def pair(scheme: str) -> tuple[pl.DataFrame, pl.DataFrame]:
            return before.filter(pl.col("scheme") == scheme), after.filter(pl.col("scheme") == scheme)
    charts, tables = [], []
    for scheme in _scheme_order(present, list(schemes or [])):
        mig = migration_matrix(*pair(scheme))
        rows_order = _segment_order(mig["from_segment"].to_list(), last=ENTERED)
        cols_order = _segment_order(mig["to_segment"].to_list(), last=EXITED)
        top = max(mig["customers"].max() or 1, 1)
        base = alt.Chart(mig.with_columns((pl.col("customers") > top / 2).alias("dark"))).encode(
            x=alt.X("to_segment:N", title=f"segment in {_month(month)}", sort=cols_order,
                    axis=alt.Axis(labelAngle=-30, labelLimit=260, orient="top")),
            y=alt.Y("from_segment:N", title=f"segment in {prev_month or 'previous month'}", sort=rows_order,
                    axis=alt.Axis(labelLimit=260)),
        )
        heat = base.mark_rect().encode(
            color=alt.Color("customers:Q", title="customers", scale=alt.Scale(scheme="blues")),
            tooltip=["from_segment:N", "to_segment:N", "customers:Q"],
        )
        text = base.mark_text(baseline="middle", fontSize=12).encode(
            text="customers:Q",
            color=alt.when(alt.datum.dark).then(alt.value("white")).otherwise(alt.value("black")),
        )
        title = "Migration" + _chart_suffix(scheme)
        charts.append(alt.layer(heat, text, title=title).properties(
            width=max(70 * len(cols_order), 240), height=max(34 * len(rows_order), 120)))
        tables.append((title + ": customers by previous (rows) and current segment (columns)", migration_table(mig)))
    return Section(
        key="migration",
        title="Migration from the previous month",
        intro=(f"Customers by segment in {prev_month or 'the previous month'} (rows) and in {_month(month)} "
               f"(columns). '{ENTERED}': not in the previous snapshot; '{EXITED}': not in this one."),
        charts=tuple(charts),
        tables=tuple(tables),
        fold_tables=True,
    )


def profile_table(profiles: pl.DataFrame, *, schemes: Sequence[str] | None = None) -> pl.DataFrame:
    """The profile and playbook table: scheme (when several), id, segment, size and shares,
    medians, then the playbook action; sorted by scheme, then size (largest first), then name."""
    label = _label(profiles, "segment_profiles")
    _require(profiles, ["customers"], "segment_profiles")
    lead = [c for c in ("scheme", "segment_id", label, "customers", "share_customers", "share_revenue")
            if c in profiles.columns]
    rest = [c for c in profiles.columns if c not in lead and c not in ("snapshot_month", "playbook_action")
            and not c.startswith("__")]
    cols = lead + rest + (["playbook_action"] if "playbook_action" in profiles.columns else [])
    table = profiles.select(cols)
    if "scheme" in cols:
        order = {s: i for i, s in enumerate(_scheme_order(table["scheme"].unique().to_list(), schemes))}
        table = (table.with_columns(pl.col("scheme").replace_strict(order, return_dtype=pl.Int32).alias("__o"))
                 .sort("__o", "customers", label, descending=[False, True, False]).drop("__o"))
    else:
        table = table.sort("customers", label, descending=[True, False])
    return table


def profile_section(profiles: pl.DataFrame, *, month: str, schemes: Sequence[str] | None = None) -> Section:
    """This month's profile table: size, shares, medians and the playbook action per segment."""
    return Section(
        key="profiles",
        title="Profiles and playbook",
        intro=f"Segments at the end of {_month(month)} with their median profile and the playbook action.",
        tables=(("", profile_table(profiles, schemes=schemes)),),
    )


def outcome_section(outcomes: pl.DataFrame | None, *, month: str,
                    schemes: Sequence[str] | None = None) -> Section | None:
    """Next-month outcome lift per segment: how the segments of ``month`` behaved the month after,
    against all known customers (1.0 = like everyone). None when no outcomes exist yet."""
    if outcomes is None or outcomes.height == 0:
        return None
    _require(outcomes, ["scheme", "segment", "customers", "active_lift", "ordered_lift"], "segment_outcomes")
    charts = []
    for scheme in _scheme_order(outcomes["scheme"].unique().to_list(), schemes):
        rows = (
            outcomes.filter(pl.col("scheme") == scheme)
            .select("segment", "customers", pl.col("active_lift").fill_null(0.0).round(3),
                    pl.col("ordered_lift").fill_null(0.0).round(3))
            .sort("segment")
        )
        bars = alt.Chart(rows, title="Next-month activity lift" + _chart_suffix(scheme)).mark_bar().encode(
            x=alt.X("active_lift:Q", title="active next month / all known customers"),
            y=alt.Y("segment:N", sort="-x", title=None),
            tooltip=["segment", "customers", "active_lift", "ordered_lift"],
        )
        rule = alt.Chart(pl.DataFrame({"x": [1.0]})).mark_rule(strokeDash=[4, 3]).encode(x="x:Q")
        charts.append(alt.layer(bars, rule).properties(width=420))
    table = outcomes.select(
        "scheme", "segment", "customers",
        *[pl.col(c).round(3) for c in ("ordered_next", "active_next", "revenue_next_per_customer",
                                       "ordered_lift", "active_lift", "revenue_lift") if c in outcomes.columns],
    ).sort("scheme", "segment")
    return Section(
        key="outcomes",
        title="Next-month outcomes",
        intro=(f"What the customers of each segment at the end of {_month(month)} did the month after: the "
               "share active, relative to all known customers (the dashed line is 1.0)."),
        charts=tuple(charts),
        tables=(("Outcomes per segment", table),),
        fold_tables=True,
    )


def drift_section(drift: pl.DataFrame | None, *, month: str, psi_warn: float, psi_alert: float,
                  distance: float, status: str = "", reason: str = "") -> Section | None:
    """Feature drift of ``month``: PSI per watched feature against the previous month and the
    model's reference snapshot, with the warn and alert bands as rules, and the table of every
    statistic. None when there is no drift table (the first month)."""
    if drift is None or drift.height == 0:
        return None
    _require(drift, ["comparison", "feature", "psi", "drifted"], "feature_drift")
    shown = drift.filter(pl.col("comparison") != "last_year_change").with_columns(
        pl.col("psi").fill_nan(None).fill_null(0.0).round(4),
        pl.when(pl.col("drifted")).then(pl.lit("drifted")).otherwise(pl.lit("stable")).alias("state"))
    bars = alt.Chart(shown, title="PSI per feature (bands: warn / alert)").mark_bar().encode(
        x=alt.X("psi:Q", title="population stability index"),
        y=alt.Y("feature:N", title=None),
        yOffset="comparison:N",
        color=alt.Color("comparison:N", title="against"),
        opacity=alt.condition(alt.datum.state == "drifted", alt.value(1.0), alt.value(0.55)),
        tooltip=["feature", "comparison", "psi", "wasserstein", "js", "p_value", "drifted"],
    )
    bands = alt.Chart(pl.DataFrame({"x": [psi_warn, psi_alert], "band": ["warn", "alert"]})).mark_rule(
        strokeDash=[4, 3]).encode(x="x:Q", color=alt.value("#b45309"), tooltip=["band", "x"])
    table = drift.select(
        "comparison", pl.col("reference_month").cast(pl.String).str.slice(0, 7).alias("reference"), "feature", "kind",
        pl.col("psi").round(3), "psi_band", pl.col("wasserstein").round(3), pl.col("js").round(3),
        pl.col("p_value").round(4), "drifted",
    )
    head = f"Status: {status} ({reason}). " if status else ""
    return Section(
        key="drift",
        title="Feature drift",
        intro=(f"{head}How the watched features of {_month(month)} compare with the previous month and with the "
               f"snapshot the cluster model was fitted on. A feature has drifted when its normalised Wasserstein "
               f"(numeric) or Jensen-Shannon (categorical) distance reaches {distance} and the shift is "
               f"significant; the dashed rules are the PSI bands {psi_warn} (warn) and {psi_alert} (alert)."),
        charts=(alt.layer(bars, bands).properties(width=420),),
        tables=(("Drift statistics per feature", table),),
        fold_tables=True,
    )


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

def _spec(chart: Any) -> dict:
    spec = chart.to_dict() if hasattr(chart, "to_dict") else dict(chart)
    # Stable output: altair's auto-numbered names (params, views) would differ between calls.
    text = json.dumps(spec, sort_keys=True)
    if '"name": "param_' in text or '"name": "view_' in text:
        raise ValueError("report charts must not use auto-named params or views (non-deterministic HTML)")
    return spec


def _format(value: Any, column: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if value != value:
            return "–"
        if column.startswith("share_"):
            return f"{value:.1%}"
        digits = 0 if abs(value) >= 100 else (1 if abs(value) >= 10 else 2)
        text = f"{value:,.{digits}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _table(caption: str, frame: pl.DataFrame, *, folded: bool = False) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    numeric = {c for c, t in frame.schema.items() if t.is_numeric()}
    body = []
    for row in frame.iter_rows(named=True):
        cells = "".join(
            f'<td class="{"num" if c in numeric else "txt"}">{html.escape(_format(v, c))}</td>' for c, v in row.items()
        )
        body.append(f"<tr>{cells}</tr>")
    cap = f"<caption>{html.escape(caption)}</caption>" if caption and not folded else ""
    table = (f'<div class="table-wrap"><table class="frame">{cap}<thead><tr>{head}</tr></thead>'
             f'<tbody>{"".join(body)}</tbody></table></div>')
    if folded:
        return f"<details><summary>{html.escape(caption or 'table')}</summary>{table}</details>"
    return table


def _json_for_script(obj: Any) -> str:
    # "<" escaped so neither "</script>" nor "<!--" in data can end or confuse the script element.
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).replace("<", "\\u003c")


@cache
def _vega_js() -> str:
    parts = []
    for name, package in VEGA_JS:
        path = STATIC_DIR / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: vendored JavaScript of {package} is missing (see segpipe/static/README.md)")
        lines = path.read_text(encoding="utf-8").splitlines()
        code = "\n".join(line for line in lines if not line.startswith("//# sourceMappingURL="))
        parts.append(f"<script>/* {package} (BSD-3-Clause) */\n{code}\n</script>")
    return "\n".join(parts)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#1f2328;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2.2rem;border-bottom:1px solid #d0d7de;
padding-bottom:.3rem}.meta{color:#57606a;margin-top:0}nav a{margin-right:1rem}
.chart{margin:1rem 1.5rem 1rem 0}.chart-error{color:#cf222e;font-weight:600}
.table-wrap{overflow-x:auto;max-width:100%}details{margin:.4rem 0}summary{cursor:pointer;color:#0969da}
table.frame{border-collapse:collapse;margin:1rem 0;font-size:.85rem}
table.frame caption{text-align:left;font-weight:600;padding:.3rem 0}
table.frame th,table.frame td{border:1px solid #d0d7de;padding:.3rem .6rem}
table.frame th{background:#f6f8fa;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
"""

_SCRIPT = """
(function () {
  var specs = JSON.parse(document.getElementById("segpipe-specs").textContent);
  var ids = Object.keys(specs).sort();
  Promise.all(ids.map(function (id) {
    var el = document.getElementById(id);
    return vegaEmbed(el, specs[id], %s).then(function () {
      el.setAttribute("data-rendered", "true");
    }).catch(function (err) {
      el.setAttribute("data-rendered", "error");
      el.innerHTML = '<p class="chart-error"></p>';
      el.firstChild.textContent = "chart failed to render: " + err;
      console.error(err);
    });
  })).then(function () { document.body.setAttribute("data-charts-done", String(ids.length)); });
})();
"""


def render_report(*, title: str, subtitle: str, sections: Sequence[Section], notes: Sequence[str] = ()) -> str:
    """The HTML page of ``sections`` (charts embedded with vega-embed, JavaScript inlined)."""
    keys = [s.key for s in sections]
    if len(set(keys)) != len(keys):
        raise ValueError(f"report section keys must be unique, got {keys}")
    specs: dict[str, dict] = {}
    body = []
    for s in sections:
        parts = [f'<section id="{html.escape(s.key)}"><h2>{html.escape(s.title)}</h2>']
        if s.intro:
            parts.append(f"<p>{html.escape(s.intro)}</p>")
        for i, chart in enumerate(s.charts):
            div_id = f"chart-{s.key}-{i + 1}"
            specs[div_id] = _spec(chart)
            parts.append(f'<div class="chart vega-chart" id="{div_id}"></div>')
        parts.extend(_table(cap, frame, folded=s.fold_tables) for cap, frame in s.tables)
        parts.append("</section>")
        body.append("\n".join(parts))
    nav = " ".join(f'<a href="#{html.escape(s.key)}">{html.escape(s.title)}</a>' for s in sections)
    notes_html = "".join(f'<p class="meta">{html.escape(n)}</p>' for n in notes)
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style>",
        _vega_js(),
        f'</head><body data-charts="{len(specs)}">',
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">{html.escape(subtitle)}</p>',
        notes_html,
        f"<nav>{nav}</nav>",
        *body,
        f'<script type="application/json" id="segpipe-specs">{_json_for_script(specs)}</script>',
        f"<script>{_SCRIPT % json.dumps(_EMBED_OPTIONS, sort_keys=True)}</script>",
        "</body></html>",
        "",
    ])


def build_segment_report(
    *,
    month: str,
    profiles_by_month: Mapping[str, pl.DataFrame],
    membership_prev: pl.DataFrame | pl.LazyFrame | None,
    membership_cur: pl.DataFrame | pl.LazyFrame,
    schemes: Mapping[str, str] | None = None,
    extra_sections: Sequence[Section | None] = (),
    prev_month: str | None = None,
) -> str:
    """The segment report of ``month`` as a self-contained HTML page.

    Parameters
    ----------
    month : str
        Snapshot month, "YYYY-MM" or a partition key "YYYY-MM-01".
    profiles_by_month : mapping of month to DataFrame
        ``segment_profiles`` of every month so far (keys as ``month``; later months are ignored).
        Must hold ``month``.
    membership_prev, membership_cur : DataFrame or LazyFrame
        ``segment_membership`` of the previous month (None for the first month: no migration
        section) and of ``month``. With ``schemes``, they may be scans: the report then reads
        ids and one scheme column at a time, streaming, instead of holding two months.
    schemes : mapping of scheme to column, optional
        For a wide membership table: the label column of each scheme, in display order.
    extra_sections : sequence of Section
        More sections appended in order (None entries are skipped, so a caller can pass
        ``drift_section(frame) if frame is not None else None``).
    prev_month : str, optional
        Label of the previous month (default: the month before ``month``).

    Returns
    -------
    str
        The HTML page; identical inputs give identical output.
    """
    cur_key = next((k for k in sorted(profiles_by_month) if _month(k) == _month(month)), None)
    if cur_key is None:
        raise ValueError(f"segment report {_month(month)}: no segment_profiles for the month "
                         f"(have {sorted(_month(k) for k in profiles_by_month)})")
    if prev_month is None:
        y, m = int(month[:4]), int(month[5:7])
        prev_month = f"{y - (m == 1)}-{12 if m == 1 else m - 1:02d}"
    order = list(schemes or [])
    sections = [
        segment_sizes_section(profiles_by_month, month=month, schemes=order),
        migration_section(membership_prev, membership_cur, month=month, prev_month=_month(prev_month), schemes=schemes),
        profile_section(profiles_by_month[cur_key], month=month, schemes=order),
        *extra_sections,
    ]
    present = [s for s in sections if s is not None]
    if schemes:  # segments per scheme, straight from the wide table's columns
        _require(membership_cur, ["customer_id", *schemes.values()], "current segment_membership")
        counts = (membership_cur.lazy().select(pl.col(col).n_unique().alias(s) for s, col in schemes.items())
                  .collect().row(0, named=True) if rows_of(membership_cur) else {})
    else:
        cur = membership_long(membership_cur, what="current segment_membership")
        per_scheme = cur.group_by("scheme").agg(pl.col("segment").n_unique().alias("n"))
        counts = dict(zip(per_scheme["scheme"].to_list(), per_scheme["n"].to_list()))
    scheme_names = _scheme_order(list(counts), order)
    customers = membership_cur.lazy().select(pl.col("customer_id").n_unique()).collect().item()
    if scheme_names == [DEFAULT_SCHEME] or not scheme_names:
        segments = f"{counts.get(DEFAULT_SCHEME, 0)} segments"
    else:
        segments = ", ".join(f"{s} ({counts[s]} segments)" for s in scheme_names)
    notes = [] if membership_prev is not None else [
        "First month of history: no previous snapshot, so no migration section."]
    return render_report(
        title=f"Segment report {_month(month)}",
        subtitle=f"Snapshot as of the end of {_month(month)} (UTC): {customers:,} customers; {segments}.",
        sections=present,
        notes=notes,
    )


def chart_count(report_html: str) -> int:
    """Number of charts a report page embeds."""
    marker = 'data-charts="'
    start = report_html.index(marker) + len(marker)
    return int(report_html[start:report_html.index('"', start)])
