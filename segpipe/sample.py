"""Deterministic generator of realistic behavioural raw data (sample data set).

The generator plants customer archetypes (champions, bargain hunters, power
users, ...) and writes the raw files of four sources, one file per source per
calendar month, the way the shop's systems would export them:

* ``orders/orders_YYYY-MM.csv``       -- shop orders (CSV)
* ``product/events_YYYY-MM.jsonl``    -- app / product analytics events (JSON Lines)
* ``email/email_YYYY-MM.csv``         -- email engagement events (CSV)
* ``web/pageviews_YYYY-MM.parquet``   -- web page views (Parquet)

plus ``ground_truth/customers.parquet`` (the planted truth, never read by the
pipeline) and ``manifest.json`` (parameters, row counts, drift event, bad rows).

Everything is vectorised with numpy / polars and generated month by month, so
memory stays bounded by one month of one source even at millions of customers.
The same arguments always produce byte-identical files.  See
``docs/sample-data.md`` for the full description of the data set.

This module must never import dagster.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl

__all__ = [
    "generate_sample",
    "ARCHETYPES",
    "ARCHETYPE_SHARES",
    "DRIFT_MONTH_INDEX",
    "COHORT_MONTH_INDEX",
    "COHORT_ARCHETYPE",
    "COHORT_SHARE",
    "BAD_ROW_KINDS",
    "ORDER_CATEGORIES",
    "ORDER_CHANNELS",
    "PRODUCT_EVENTS",
    "PLATFORMS",
    "EMAIL_EVENTS",
    "DEVICES",
    "FEATURES",
]

GENERATOR_VERSION = 1

# --------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------
ARCHETYPES: tuple[str, ...] = (
    "champions",
    "loyal_regulars",
    "bargain_hunters",
    "seasonal_gift_buyers",
    "power_users",
    "window_shoppers",
    "lapsing",
    "new_customers",
    "email_only",
    "casual",
    "mobile_app_newcomers",  # drift cohort, added on top of `customers`
)
(CHAMP, LOYAL, BARGAIN, SEASONAL, POWER, WINDOW, LAPSING, NEW, EMAIL_ONLY, CASUAL,
 NEWCOMER) = range(11)
ANON = 11  # row index of the parameter tables used for purely anonymous web visitors

#: Target shares of the base population (``customers``); casual takes the rest.
ARCHETYPE_SHARES: dict[str, float] = {
    "champions": 0.08,
    "loyal_regulars": 0.12,
    "bargain_hunters": 0.12,
    "seasonal_gift_buyers": 0.10,
    "power_users": 0.10,
    "window_shoppers": 0.12,
    "lapsing": 0.10,
    "new_customers": 0.08,
    "email_only": 0.10,
    "casual": 0.08,
}
DRIFT_MONTH_INDEX = 18   # price rise: bargain hunters stop ordering, everyone else orders less
DRIFT_ORDER_FACTOR = 0.25  # other archetypes' order rate from the drift month on
DRIFT_VIEW_FACTOR = 0.5    # everyone's page-view rate from the drift month on
COHORT_MONTH_INDEX = 19  # mobile_app_newcomers arrive in this month
COHORT_ARCHETYPE = "mobile_app_newcomers"
COHORT_SHARE = 0.06      # of `customers`, extra
STRAY_DELIMITER_MONTH_INDEX = 5   # orders file holding the line with an extra field
INVALID_JSON_MONTH_INDEX = 11     # product file holding the line that is not JSON

ORDER_CATEGORIES = ("electronics", "home", "fashion", "beauty", "toys", "grocery", "books",
                    "sports")
ORDER_CHANNELS = ("web", "app", "store")
PRODUCT_EVENTS = ("signup", "login", "feature_used", "invite_sent", "upgrade")
PLATFORMS = ("ios", "android", "web")
EMAIL_EVENTS = ("sent", "open", "click", "unsubscribe")
DEVICES = ("desktop", "mobile", "tablet")
FEATURES = ("search", "wishlist", "reorder", "price_alert", "dashboard", "share_list",
            "gift_registry", "loyalty_points", "ar_try_on", "scan_barcode", "chat_support",
            "export_report")
PAGE_TYPES = ("/", "/pricing", "product", "/cart", "/checkout", "blog")
BLOG_SLUGS = ("gift-guide", "how-to-choose-headphones", "spring-cleaning-tips",
              "summer-style-2025", "best-board-games", "healthy-pantry", "reading-list",
              "home-office-setup", "running-shoes-guide", "skincare-basics",
              "black-friday-deals", "sustainability-report")
DOMAINS = ("example.com", "example.org", "example.net")
FIRST_NAMES = ("anna", "ben", "carla", "david", "emma", "felix", "greta", "hugo", "ines",
               "jonas", "katrin", "lukas", "mia", "noah", "olga", "paul", "rosa", "samuel",
               "tina", "umar", "vera", "william", "xenia", "yusuf", "zoe", "amir", "bella",
               "chen", "diana", "elias", "fatima", "george", "hannah", "ivan", "julia",
               "kenji", "laura", "marco", "nina", "oscar", "priya", "quentin", "ruth",
               "sofia", "tom", "ulla", "victor", "wen", "yara", "leon")
LAST_NAMES = ("smith", "mueller", "garcia", "rossi", "novak", "kim", "nguyen", "silva",
              "johnson", "schmidt", "martin", "bernard", "kowalski", "jensen", "larsen",
              "okafor", "mensah", "tanaka", "sato", "khan", "patel", "singh", "cohen",
              "fischer", "weber", "wagner", "becker", "hoffmann", "lopez", "perez",
              "brown", "taylor", "wilson", "moore", "clark", "lewis", "walker", "young",
              "king", "wright", "scott", "green", "baker", "adams", "nelson", "hill",
              "campbell", "mitchell", "roberts", "carter")

#: Bad-row kinds per source (the kinds drawn from ``bad_row_share``), then the
#: structural one-off kinds.
BAD_ROW_KINDS: dict[str, tuple[str, ...]] = {
    "orders": ("bad_timestamp", "negative_total", "null_key", "future_timestamp",
               "past_timestamp", "duplicate", "extra_delimiter", "truncated_line"),
    "product": ("bad_timestamp", "null_key", "future_timestamp", "past_timestamp",
                "unknown_enum", "duplicate", "invalid_json"),
    "email": ("bad_timestamp", "null_key", "future_timestamp", "past_timestamp",
              "unknown_enum", "duplicate"),
    "web": ("null_timestamp", "future_timestamp", "past_timestamp", "duplicate"),
}
_STRUCTURAL = ("extra_delimiter", "truncated_line", "invalid_json")
SOURCES = ("orders", "product", "email", "web")

# --------------------------------------------------------------------------------------
# Behaviour parameters, indexed by archetype code (0..10) and ANON (11) where relevant.
#   CHAMP LOYAL BARG  SEAS  POWER WIND  LAPS  NEW   EMAIL CAS   NEWC
# --------------------------------------------------------------------------------------
_A = np.array
ORDER_RATE = _A([2.2, 1.0, 1.3, 1.0, 0.12, 0.06, 1.1, 0.8, 0.0, 0.25, 0.45])  # orders/month
UNIT_PRICE = _A([55., 35., 14., 35., 30., 30., 30., 30., 30., 25., 18.])      # EUR / item
ITEMS_LAM = _A([1.6, 1.0, 1.2, 1.3, 0.5, 0.4, 0.8, 0.8, 0.0, 0.5, 0.6])        # items-1
DISCOUNT_P = _A([0.05, 0.08, 0.80, 0.15, 0.05, 0.10, 0.08, 0.12, 0.0, 0.10, 0.10])
APP_P = _A([0.85, 0.50, 0.30, 0.15, 1.00, 0.30, 0.50, 0.50, 0.0, 0.20, 1.00])
SESS_RATE = _A([4.0, 2.0, 1.5, 0.6, 9.0, 1.5, 3.0, 2.5, 0.0, 0.8, 8.0])        # logins/month
FEAT_RATE = _A([1.0, 0.8, 0.6, 0.6, 1.3, 0.7, 0.8, 1.0, 0.0, 0.5, 1.2])        # per session
INVITE_P = _A([0.03, 0.01, 0.01, 0.01, 0.12, 0.005, 0.01, 0.02, 0.0, 0.005, 0.06])
UPGRADE_P = _A([0.25, 0.10, 0.02, 0.02, 0.45, 0.03, 0.05, 0.10, 0.0, 0.02, 0.30])
WEB_P = _A([0.95, 0.90, 0.90, 0.85, 0.80, 1.00, 0.90, 0.90, 0.0, 0.70, 0.95])
VIEW_RATE = _A([3.0, 2.0, 2.0, 0.6, 1.5, 7.0, 3.0, 2.5, 0.0, 0.8, 3.0])        # views/month
SUBSCRIBED_P = _A([0.90, 0.85, 0.95, 0.70, 0.60, 0.70, 0.80, 0.85, 1.00, 0.60, 0.60])
OPEN_P = _A([0.60, 0.40, 0.35, 0.20, 0.25, 0.25, 0.35, 0.40, 0.45, 0.12, 0.20])
CLICK_P = _A([0.30, 0.15, 0.20, 0.15, 0.10, 0.15, 0.10, 0.15, 0.20, 0.08, 0.10])
UNSUB_P = _A([0.002, 0.004, 0.006, 0.01, 0.01, 0.01, 0.04, 0.008, 0.005, 0.02, 0.01])
PROMO_SEGMENT_P = _A([0.5, 0.4, 1.0, 0.4, 0.3, 0.5, 0.4, 0.5, 0.5, 0.3, 0.4])

CATEGORY_P = _A([
    [.22, .16, .16, .10, .06, .10, .10, .10],  # champions
    [.10, .18, .14, .12, .06, .22, .10, .08],  # loyal
    [.06, .18, .22, .18, .04, .26, .03, .03],  # bargain
    [.30, .04, .04, .03, .35, .01, .20, .03],  # seasonal: toys / electronics / books
    [.30, .10, .10, .08, .06, .10, .14, .12],  # power
    [.25, .15, .20, .12, .08, .04, .08, .08],  # window
    [.14, .16, .16, .12, .08, .14, .10, .10],  # lapsing
    [.14, .14, .16, .14, .10, .12, .10, .10],  # new
    [.125] * 8,                                # email_only (unused)
    [.12, .14, .14, .12, .10, .14, .12, .12],  # casual
    [.20, .08, .22, .20, .06, .10, .04, .10],  # newcomers
    [.16, .12, .16, .12, .12, .10, .12, .10],  # anonymous visitors
])
CATEGORY_PRICE = _A([2.2, 1.2, 0.9, 0.7, 0.8, 0.5, 0.45, 1.1])
CHANNEL_P = _A([
    [.40, .40, .20], [.45, .25, .30], [.60, .25, .15], [.55, .10, .35], [.20, .75, .05],
    [.70, .20, .10], [.50, .20, .30], [.50, .30, .20], [.60, .20, .20], [.45, .15, .40],
    [.10, .85, .05],
])
PLATFORM_P = _A([
    [.45, .35, .20], [.45, .35, .20], [.45, .35, .20], [.45, .35, .20], [.40, .30, .30],
    [.45, .35, .20], [.45, .35, .20], [.45, .35, .20], [.45, .35, .20], [.45, .35, .20],
    [.55, .45, .00],
])
DEVICE_P = _A([
    [.55, .35, .10], [.50, .40, .10], [.45, .45, .10], [.55, .35, .10], [.60, .30, .10],
    [.45, .45, .10], [.50, .40, .10], [.45, .45, .10], [.50, .40, .10], [.50, .40, .10],
    [.05, .90, .05], [.40, .50, .10],
])
PAGE_P = _A([  # "/", "/pricing", product, "/cart", "/checkout", blog
    [.15, .03, .50, .15, .12, .05],
    [.20, .03, .50, .12, .10, .05],
    [.15, .10, .50, .12, .08, .05],
    [.15, .05, .55, .12, .08, .05],
    [.30, .15, .30, .05, .05, .15],
    [.08, .17, .50, .22, .01, .02],  # window shoppers: product / pricing / cart
    [.20, .05, .50, .10, .07, .08],
    [.20, .08, .45, .12, .08, .07],
    [.20, .05, .40, .10, .05, .20],
    [.30, .05, .40, .08, .05, .12],
    [.30, .10, .40, .10, .05, .05],
    [.40, .10, .30, .03, .00, .17],  # anonymous visitors
])
_FEAT_GENERAL = _A([.28, .18, .14, .10, .08, .06, .05, .04, .03, .02, .01, .01])
FEATURE_P = np.vstack([_FEAT_GENERAL] * 11)
FEATURE_P[POWER] = np.full(12, 1 / 12)                                   # many features
FEATURE_P[SEASONAL] = _A([.2, .25, .05, .1, .05, .1, .15, .04, .02, .02, .01, .01])
FEATURE_P[NEWCOMER] = _A([.2, .1, .03, .05, .05, .1, .02, .1, .2, .12, .02, .01])

HOUR_W = _A([1, .6, .4, .3, .3, .5, 1, 2, 3, 3.5, 4, 4.5, 5, 5, 4.5, 4.5, 4.5, 5, 5.5, 6, 6, 5,
             3.5, 2], dtype=np.float64)
HOUR_P = HOUR_W / HOUR_W.sum()
ORDER_MOY = {1: .85, 2: .9, 3: 1.0, 4: 1.0, 5: 1.0, 6: .95, 7: .95, 8: .95, 9: 1.0, 10: 1.05,
             11: 1.25, 12: 1.4}
SEASONAL_ORDER_MOY = {11: 1.2, 12: 1.8, 1: 0.1}  # every other month: 0.04
DISCOUNT_CODES = ("SAVE10", "SAVE15", "SAVE20", "FREESHIP", "FLASH25")
DISCOUNT_PCT = {"SAVE10": .10, "SAVE15": .15, "SAVE20": .20, "FREESHIP": .05, "FLASH25": .25,
                "WELCOME5": .05}
SECS_DAY = 86_400
_KEY_MASK = (1 << 64) - 1


# --------------------------------------------------------------------------------------
# Small vectorised helpers
# --------------------------------------------------------------------------------------
def _scramble(x: np.ndarray, bits: int, key: int) -> np.ndarray:
    """Bijective integer mixer on ``bits`` bits (distinct inputs -> distinct outputs)."""
    mask = np.uint64((1 << bits) - 1)
    half = np.uint64(bits // 2)
    x = (np.asarray(x, dtype=np.uint64) ^ np.uint64(key & int(mask))) & mask
    x = (x * np.uint64((0x9E3779B97F4A7C15 & int(mask)) | 1)) & mask
    x ^= x >> half
    x = (x * np.uint64((0xBF58476D1CE4E5B9 & int(mask)) | 1)) & mask
    x ^= x >> np.uint64(bits // 2 + 1)
    return x


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _hex_ascii(x: np.ndarray, width: int) -> np.ndarray:
    """(n,) uint64 -> (n, width) ascii hex digits (lower case, zero padded)."""
    b = np.asarray(x, dtype=np.uint64).astype(">u8").view(np.uint8).reshape(-1, 8)
    out = np.empty((b.shape[0], 16), dtype=np.uint8)
    out[:, 0::2] = _HEX[b >> 4]
    out[:, 1::2] = _HEX[b & 15]
    return out[:, 16 - width:]


def _ascii_series(arr: np.ndarray, name: str) -> pl.Series:
    """(n, w) uint8 ascii matrix -> polars String series."""
    if arr.shape[0] == 0:
        return pl.Series(name, [], dtype=pl.String)
    arr = np.ascontiguousarray(arr)
    return pl.Series(name, arr.view(f"S{arr.shape[1]}").ravel()).cast(pl.String)


def _prefixed_hex(name: str, prefix: str, x: np.ndarray, width: int) -> pl.Series:
    p = np.frombuffer(prefix.encode(), dtype=np.uint8)
    arr = np.empty((len(x), len(p) + width), dtype=np.uint8)
    arr[:, :len(p)] = p
    arr[:, len(p):] = _hex_ascii(x, width)
    return _ascii_series(arr, name)


def _uuids(rng: np.random.Generator, start: int, n: int, key: int) -> pl.Series:
    """Version-4 looking UUID strings, unique: the last 48 bits encode a counter."""
    rb = rng.integers(0, 256, size=(n, 10), dtype=np.uint8)
    rb[:, 6] = (rb[:, 6] & 0x0F) | 0x40
    rb[:, 8] = (rb[:, 8] & 0x3F) | 0x80
    cnt = _scramble(np.arange(start, start + n, dtype=np.uint64), 48, key)
    cb = cnt.astype(">u8").view(np.uint8).reshape(-1, 8)[:, 2:]
    allb = np.concatenate([rb, cb], axis=1)
    hexd = np.empty((n, 32), dtype=np.uint8)
    hexd[:, 0::2] = _HEX[allb >> 4]
    hexd[:, 1::2] = _HEX[allb & 15]
    out = np.full((n, 36), ord("-"), dtype=np.uint8)
    out[:, 0:8] = hexd[:, 0:8]
    out[:, 9:13] = hexd[:, 8:12]
    out[:, 14:18] = hexd[:, 12:16]
    out[:, 19:23] = hexd[:, 16:20]
    out[:, 24:36] = hexd[:, 20:32]
    return _ascii_series(out, "event_uuid")


def _sample_rows(rng: np.random.Generator, groups: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Draw one category per element; the distribution is ``probs[group]``."""
    out = np.zeros(len(groups), dtype=np.int64)
    for g in np.unique(groups):
        sel = np.flatnonzero(groups == g)
        p = probs[g] / probs[g].sum()
        out[sel] = rng.choice(len(p), size=len(sel), p=p)
    return out


def _segment_positions(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For counts per segment return (segment index, position in segment) per element."""
    seg = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    pos = np.arange(len(seg)) - starts[seg]
    return seg, pos


def _segmented_cumsum(values: np.ndarray, seg: np.ndarray, nseg: int) -> np.ndarray:
    cs = np.cumsum(values)
    counts = np.bincount(seg, minlength=nseg)
    ends_prev = np.cumsum(counts) - counts
    before = np.zeros(nseg, dtype=cs.dtype)
    nz = ends_prev > 0
    before[nz] = cs[ends_prev[nz] - 1]
    return cs - before[seg]


def _ts_strings(sec: np.ndarray, fmt: str, name: str) -> pl.Series:
    return pl.from_epoch(pl.Series(name, sec, dtype=pl.Int64), time_unit="s").dt.strftime(fmt)


@dataclass
class _Calendar:
    labels: list[str]          # "YYYY-MM" per month index
    starts: np.ndarray         # epoch seconds of month starts, len months + 1
    years: list[int]
    moys: list[int]            # month of year 1..12

    @classmethod
    def build(cls, start: str, months: int) -> "_Calendar":
        m0 = np.datetime64(start, "M")
        ms = m0 + np.arange(months + 1)
        starts = ms.astype("datetime64[s]").astype(np.int64)
        labels = [str(x) for x in ms[:months]]
        years = [int(lbl[:4]) for lbl in labels]
        moys = [int(lbl[5:7]) for lbl in labels]
        return cls(labels, starts, years, moys)

    def bounds(self, m: int) -> tuple[int, int]:
        return int(self.starts[m]), int(self.starts[m + 1])


def _black_friday_day(year: int) -> int:
    """0-based day of November of Black Friday (day after the 4th Thursday)."""
    wd = date(year, 11, 1).weekday()
    first_thu = (3 - wd) % 7
    return first_thu + 21 + 1


def _times_in_month(rng: np.random.Generator, n: int, m_start: int, m_end: int,
                    lo: np.ndarray | None = None, hi_margin: int = 0,
                    black_friday: int | None = None, bf_share: float = 0.0) -> np.ndarray:
    """Epoch seconds in [max(lo, m_start), m_end - hi_margin) with a diurnal profile."""
    days = (m_end - m_start) // SECS_DAY
    day = rng.integers(0, days, size=n)
    if black_friday is not None and bf_share > 0:
        bf = rng.random(n) < bf_share
        span = max(1, min(3, days - black_friday))
        day[bf] = black_friday + rng.integers(0, span, size=int(bf.sum()))
    hour = rng.choice(24, size=n, p=HOUR_P)
    t = m_start + day * SECS_DAY + hour * 3600 + rng.integers(0, 3600, size=n)
    hi = m_end - hi_margin - 1
    t = np.minimum(t, hi)
    if lo is not None:
        low = np.maximum(lo, m_start)
        bad = t < low
        if bad.any():
            lb = low[bad]
            t[bad] = lb + (rng.random(int(bad.sum())) * np.maximum(hi - lb, 1)).astype(np.int64)
    return np.minimum(t, hi).astype(np.int64)


def _random_year_times(rng: np.random.Generator, n: int, year: int) -> np.ndarray:
    a = int(np.datetime64(f"{year}-01-01", "s").astype(np.int64))
    b = int(np.datetime64(f"{year + 1}-01-01", "s").astype(np.int64))
    return rng.integers(a, b, size=n)


def _bad_ts_strings(rng: np.random.Generator, n: int, year: int, sep: str, z: str) -> list[str]:
    choices = (f"{year}-13-45{sep}99:00:00{z}", "not-a-date", f"{year}-02-30{sep}25:61:00{z}")
    return [choices[i] for i in rng.integers(0, len(choices), size=n)]


# --------------------------------------------------------------------------------------
# Population
# --------------------------------------------------------------------------------------
@dataclass
class _Population:
    n: int
    n_base: int
    arch: np.ndarray
    first: np.ndarray
    last: np.ndarray
    acq: np.ndarray
    ord_mult: np.ndarray
    app_mult: np.ndarray
    web_mult: np.ndarray
    price_mult: np.ndarray
    open_mult: np.ndarray
    fav_cat: np.ndarray
    has_app: np.ndarray
    app_start: np.ndarray
    signup: np.ndarray
    upgrade: np.ndarray
    platform: np.ndarray
    has_web: np.ndarray
    cookie_start: np.ndarray   # (n, 3), BIG where the cookie does not exist
    cookie_mode: np.ndarray    # (n, 3): 0 immediate, 1 late-identified, 2 never
    cookie_ident: np.ndarray   # (n, 3): month from which the cookie is identified
    cookie_device: np.ndarray  # (n, 3)
    subscribed: np.ndarray
    unsub: np.ndarray          # mutable state: unsubscribed so far
    customer_id: pl.Series
    email: pl.Series
    n_orders: np.ndarray       # mutable: clean orders written per customer


BIG = 1 << 15
MODE_IMMEDIATE, MODE_LATE, MODE_NEVER = 0, 1, 2


def _archetype_counts(customers: int) -> dict[str, int]:
    counts = {a: int(round(s * customers)) for a, s in ARCHETYPE_SHARES.items() if a != "casual"}
    counts["casual"] = customers - sum(counts.values())
    if counts["casual"] < 0:  # only possible for absurdly small populations
        counts["email_only"] += counts["casual"]
        counts["casual"] = 0
    return counts


def _build_population(rng: np.random.Generator, cal: _Calendar, customers: int,
                      months: int) -> _Population:
    counts = _archetype_counts(customers)
    n_cohort = int(round(COHORT_SHARE * customers)) if months > COHORT_MONTH_INDEX else 0
    arch = np.concatenate([np.full(counts[a], i, dtype=np.int8)
                           for i, a in enumerate(ARCHETYPES[:10])])
    arch = rng.permutation(arch)
    arch = np.concatenate([arch, np.full(n_cohort, NEWCOMER, dtype=np.int8)])
    n = len(arch)

    # acquisition month ---------------------------------------------------------------
    first = np.zeros(n, dtype=np.int64)
    u = rng.random(n)
    late_hi = months - 7  # steady archetypes are acquired before the last 6 months
    later = rng.integers(1, max(late_hi, 1) + 1, size=n) if late_hi >= 1 else np.zeros(n, int)
    steady = ~np.isin(arch, [LAPSING, NEW, NEWCOMER])
    first[steady] = np.where(u[steady] < 0.65, 0, later[steady])
    lap = arch == LAPSING
    first[lap] = np.where(u[lap] < 0.7, 0, rng.integers(0, min(3, months - 1) + 1, size=n)[lap])
    newc = arch == NEW
    first[newc] = rng.integers(max(0, months - 6), months, size=int(newc.sum()))
    first[arch == NEWCOMER] = COHORT_MONTH_INDEX
    last = np.full(n, months - 1, dtype=np.int64)
    last[lap] = np.minimum(first[lap] + rng.integers(3, 9, size=int(lap.sum())), months - 1)
    days = (cal.starts[first + 1] - cal.starts[first]) // SECS_DAY
    acq = cal.starts[first] + (rng.random(n) * np.minimum(days, 20) * SECS_DAY).astype(np.int64)
    # customers active from month 0 (except the "new" ones) were acquired before the
    # history starts: no welcome email, no acquisition bound on their month-0 activity
    pre = (first == 0) & ~np.isin(arch, [NEW, NEWCOMER])
    acq[pre] = cal.starts[0] - rng.integers(SECS_DAY, 730 * SECS_DAY, size=int(pre.sum()))

    # customer ids follow acquisition order ---------------------------------------------
    order = np.argsort(acq, kind="stable")
    arch, first, last, acq = arch[order], first[order], last[order], acq[order]

    engage = rng.gamma(4.0, 0.25, size=n)
    ord_mult = engage * rng.gamma(3.0, 1 / 3, size=n)
    app_mult = engage * rng.gamma(3.0, 1 / 3, size=n)
    web_mult = engage * rng.gamma(3.0, 1 / 3, size=n)
    price_mult = rng.lognormal(0.0, 0.3, size=n)
    open_mult = np.clip(rng.normal(1.0, 0.25, size=n), 0.3, 1.8)
    fav_cat = _sample_rows(rng, arch, CATEGORY_P)

    # app --------------------------------------------------------------------------
    has_app = rng.random(n) < APP_P[arch]
    delay = rng.geometric(0.5, size=n) - 1
    delay[np.isin(arch, [POWER, NEWCOMER])] = 0
    app_start = first + delay
    has_app &= app_start <= last
    app_start = np.where(has_app, app_start, BIG)
    sfirst = np.minimum(app_start, months - 1)
    s0, s1 = cal.starts[sfirst], cal.starts[sfirst + 1]
    lo = np.where(app_start == first, np.maximum(acq, s0), s0)
    signup = lo + (rng.random(n) * np.maximum(s1 - 2 * SECS_DAY - lo, 3600)).astype(np.int64)
    upgrade = app_start + rng.geometric(0.25, size=n)
    upgrade = np.where(has_app & (rng.random(n) < UPGRADE_P[arch]) & (upgrade <= last),
                       upgrade, -1)
    platform = _sample_rows(rng, arch, PLATFORM_P)

    # web cookies ------------------------------------------------------------------
    has_web = rng.random(n) < WEB_P[arch]
    n_ck = rng.choice(3, size=n, p=[0.55, 0.30, 0.15]) + 1
    span = last - first
    cookie_start = np.full((n, 3), BIG, dtype=np.int64)
    cookie_start[:, 0] = first
    for j in (1, 2):
        ok = has_web & (n_ck > j) & (span > 0)
        st = first + 1 + (rng.random(n) * np.maximum(span, 1)).astype(np.int64)
        cookie_start[ok, j] = st[ok]
    cookie_start = np.sort(cookie_start, axis=1)
    cookie_start[~has_web] = BIG
    um = rng.random((n, 3))
    cookie_mode = np.where(um < 0.45, MODE_LATE, np.where(um < 0.90, MODE_IMMEDIATE, MODE_NEVER))
    cookie_mode[:, 1:] = np.where(um[:, 1:] < 0.30, MODE_LATE,
                                  np.where(um[:, 1:] < 0.90, MODE_IMMEDIATE, MODE_NEVER))
    cookie_ident = cookie_start + rng.integers(1, 5, size=(n, 3))
    too_late = (cookie_mode == MODE_LATE) & (cookie_ident > last[:, None])
    cookie_mode[too_late] = MODE_IMMEDIATE
    cookie_ident = np.where(cookie_mode == MODE_LATE, cookie_ident,
                            np.where(cookie_mode == MODE_IMMEDIATE, cookie_start, BIG))
    cookie_device = np.stack([_sample_rows(rng, arch, DEVICE_P) for _ in range(3)], axis=1)

    subscribed = rng.random(n) < SUBSCRIBED_P[arch]

    # identity strings ------------------------------------------------------------------
    width = max(7, len(str(n)))
    customer_id = ("C" + pl.Series(np.arange(1, n + 1)).cast(pl.String).str.zfill(width))
    fn = pl.Series(FIRST_NAMES).gather(rng.integers(0, len(FIRST_NAMES), size=n))
    ln = pl.Series(LAST_NAMES).gather(rng.integers(0, len(LAST_NAMES), size=n))
    num = pl.Series(rng.permutation(n) + 1).cast(pl.String)
    dom = pl.Series(DOMAINS).gather(rng.choice(3, size=n, p=[0.5, 0.3, 0.2]))
    email = pl.DataFrame({"f": fn, "l": ln, "n": num, "d": dom}).select(
        pl.concat_str([pl.col("f"), pl.lit("."), pl.col("l"), pl.col("n"), pl.lit("@"),
                       pl.col("d")]).alias("email"))["email"]

    return _Population(
        n=n, n_base=customers, arch=arch, first=first, last=last, acq=acq,
        ord_mult=ord_mult, app_mult=app_mult, web_mult=web_mult, price_mult=price_mult,
        open_mult=open_mult, fav_cat=fav_cat, has_app=has_app, app_start=app_start,
        signup=signup, upgrade=upgrade, platform=platform, has_web=has_web,
        cookie_start=cookie_start, cookie_mode=cookie_mode, cookie_ident=cookie_ident,
        cookie_device=cookie_device, subscribed=subscribed,
        unsub=np.zeros(n, dtype=bool), customer_id=customer_id.alias("customer_id"),
        email=email, n_orders=np.zeros(n, dtype=np.int64))


def _user_ids(idx: np.ndarray, key: int) -> pl.Series:
    return _prefixed_hex("user_id", "u_", _scramble(idx, 32, key), 8)


def _cookie_ids(cookie_index: np.ndarray, key: int) -> pl.Series:
    return _prefixed_hex("anonymous_id", "a_", _scramble(cookie_index, 48, key), 12)


def _activity(pop: _Population, m: int) -> np.ndarray:
    """Activity multiplier per customer for month m (0 outside the active span)."""
    act = ((pop.first <= m) & (m <= pop.last)).astype(np.float64)
    lap = pop.arch == LAPSING
    act[lap] *= np.exp(-np.maximum(m - pop.first[lap], 0) / 2.0)
    return act


# --------------------------------------------------------------------------------------
# Bad rows
# --------------------------------------------------------------------------------------
@dataclass
class _Counters:
    order: int = 0
    event: int = 0
    message: int = 0
    send: int = 0
    view: int = 0
    anon_cookie: int = 0


def _inject(rng: np.random.Generator, df: pl.DataFrame, source: str, share: float,
            make_bad: Callable[[str, pl.DataFrame], pl.DataFrame],
            eligible: np.ndarray | None = None) -> tuple[pl.DataFrame, dict[str, int]]:
    """Add derived bad rows (about ``share`` of the rows) at random positions."""
    kinds = [k for k in BAD_ROW_KINDS[source] if k not in _STRUCTURAL]
    counts = {k: 0 for k in BAD_ROW_KINDS[source]}
    k = df.height
    pool = np.arange(k) if eligible is None else eligible
    if k == 0 or share <= 0 or len(pool) == 0:
        return df, counts
    n_bad = min(int(rng.binomial(k, share)), len(pool))
    per_kind = rng.multinomial(n_bad, [1 / len(kinds)] * len(kinds))
    src = rng.choice(pool, size=n_bad, replace=False)
    parts, off = [], 0
    for kind, c in zip(kinds, per_kind):
        c = int(c)
        counts[kind] = c
        if c:
            parts.append(make_bad(kind, df[src[off:off + c]]))
        off += c
    if not parts:
        return df, counts
    bad = pl.concat(parts, how="vertical")
    pos = rng.integers(0, k + 1, size=bad.height)
    keys = np.concatenate([2 * np.arange(k) + 1, 2 * pos])
    order = np.argsort(keys, kind="stable")
    return pl.concat([df, bad], how="vertical")[order], counts


# --------------------------------------------------------------------------------------
# File writing
# --------------------------------------------------------------------------------------
def _atomic_write(path: Path, writer: Callable) -> str:
    """Write through ``writer(fh)`` to a temp file in the same dir, fsync, os.replace.

    Returns the sha256 hex digest of the final file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            writer(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; raw files are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------
def _gen_orders(rng, pop: _Population, cal: _Calendar, m: int, ctr: _Counters,
                share: float, keys: dict[str, int]):
    m_start, m_end = cal.bounds(m)
    moy, year = cal.moys[m], cal.years[m]
    act = _activity(pop, m)
    rate = ORDER_RATE[pop.arch] * pop.ord_mult * act
    season = np.where(pop.arch == SEASONAL, SEASONAL_ORDER_MOY.get(moy, 0.04), ORDER_MOY[moy])
    rate *= season
    if m >= DRIFT_MONTH_INDEX:
        rate *= DRIFT_ORDER_FACTOR  # a price rise: everyone orders less often
        rate[pop.arch == BARGAIN] = 0.0  # and the discount programme ended
    n = rng.poisson(rate)
    cust = np.repeat(np.arange(pop.n), n)
    k = len(cust)
    arch = pop.arch[cust]
    lo = np.where(pop.first[cust] == m, pop.acq[cust], m_start)
    bf = _black_friday_day(year) if moy == 11 else None
    t = _times_in_month(rng, k, m_start, m_end, lo=lo, black_friday=bf, bf_share=0.25)
    srt = np.lexsort((cust, t))
    cust, arch, t = cust[srt], arch[srt], t[srt]

    cat = _sample_rows(rng, arch, CATEGORY_P)
    use_fav = (rng.random(k) < 0.4) & (arch != SEASONAL)
    cat = np.where(use_fav, pop.fav_cat[cust], cat)
    items = 1 + rng.poisson(ITEMS_LAM[arch])
    unit = (UNIT_PRICE[arch] * CATEGORY_PRICE[cat] * pop.price_mult[cust]
            * rng.lognormal(0.0, 0.35, size=k))
    total = items * unit
    # discount codes
    p_disc = DISCOUNT_P[arch].copy()
    if moy == 11:
        p_disc = np.maximum(p_disc, 0.3)
    has_code = rng.random(k) < p_disc
    code_idx = rng.integers(0, len(DISCOUNT_CODES), size=k)
    pct = np.array([DISCOUNT_PCT[c] for c in DISCOUNT_CODES])[code_idx]
    code_names = list(DISCOUNT_CODES) + ["WELCOME5", f"BLACKFRIDAY{year % 100:02d}", None]
    if moy == 11:
        bfc = rng.random(k) < 0.5
        code_idx = np.where(bfc, 6, code_idx)
        pct = np.where(bfc, 0.30, pct)
    welcome = (pop.first[cust] == m) & (pop.acq[cust] >= m_start) & (rng.random(k) < 0.5) & ~has_code
    code_idx = np.where(welcome, 5, code_idx)
    pct = np.where(welcome, DISCOUNT_PCT["WELCOME5"], pct)
    has_code |= welcome
    code_idx = np.where(has_code, code_idx, 7)
    total = np.where(has_code, total * (1 - pct), total)
    cents = np.maximum(np.round(total * 100), 199).astype(np.int64)
    # channel (app only once the customer uses the app)
    cp = CHANNEL_P[arch].copy()
    no_app = ~(pop.has_app[cust] & (pop.app_start[cust] <= m))
    cp[no_app, 0] += cp[no_app, 1]
    cp[no_app, 1] = 0.0
    ch = (rng.random(k)[:, None] > np.cumsum(cp, axis=1)[:, :2]).sum(axis=1)

    np.add.at(pop.n_orders, cust, 1)
    oid_width = 8
    ids = np.arange(ctr.order + 1, ctr.order + k + 1)
    ctr.order += k
    df = pl.DataFrame({
        "order_id": "O" + pl.Series(ids).cast(pl.String).str.zfill(oid_width),
        "customer_id": pop.customer_id.gather(cust),
        "email": pop.email.gather(cust),
        "ordered_at": _ts_strings(t, "%Y-%m-%d %H:%M:%S", "ordered_at"),
        "order_total": pl.Series(cents / 100.0, dtype=pl.Float64),
        "items": pl.Series(items, dtype=pl.Int64),
        "category": pl.Series(ORDER_CATEGORIES).gather(cat),
        "channel": pl.Series(ORDER_CHANNELS).gather(ch),
        "discount_code": pl.Series(code_names, dtype=pl.String).gather(code_idx),
    })
    clean = df.height

    def fresh(c: int) -> pl.Series:
        ids = np.arange(ctr.order + 1, ctr.order + c + 1)
        ctr.order += c
        return "O" + pl.Series(ids).cast(pl.String).str.zfill(oid_width)

    def make_bad(kind: str, rows: pl.DataFrame) -> pl.DataFrame:
        c = rows.height
        if kind == "duplicate":
            return rows
        rows = rows.with_columns(fresh(c).alias("order_id"))
        if kind == "bad_timestamp":
            return rows.with_columns(ordered_at=pl.Series(_bad_ts_strings(rng, c, year, " ", "")))
        if kind == "negative_total":
            return rows.with_columns(order_total=-pl.col("order_total"))
        if kind == "null_key":
            return rows.with_columns(customer_id=pl.lit(None, dtype=pl.String))
        yr = 2031 if kind == "future_timestamp" else 2019
        return rows.with_columns(
            ordered_at=_ts_strings(_random_year_times(rng, c, yr), "%Y-%m-%d %H:%M:%S", "x"))

    df, counts = _inject(rng, df, "orders", share, make_bad)
    return df, clean, counts


def _order_line(oid: str, row: dict, total_text: str) -> str:
    return ",".join([oid, row["customer_id"] or "", row["email"], row["ordered_at"], total_text,
                     str(row["items"]), row["category"], row["channel"],
                     row["discount_code"] or ""])


def _write_orders(path: Path, rng, df: pl.DataFrame, m: int, months: int, share: float,
                  ctr: _Counters, counts: dict[str, int], label: str) -> str:
    stray: tuple[int, str] | None = None
    trunc: str | None = None
    # the one-off malformed lines are built from clean-looking rows of this file
    cand = df.filter(pl.col("customer_id").is_not_null() & (pl.col("order_total") > 0)
                     & pl.col("ordered_at").str.starts_with(label))
    if share > 0 and cand.height > 0:
        if m == min(STRAY_DELIMITER_MONTH_INDEX, months - 1):
            # an order_total written with an (unquoted) thousands separator
            row = cand.row(int(rng.integers(0, cand.height)), named=True)
            ctr.order += 1
            cents = int(rng.integers(100_000, 300_000))
            txt = f"{cents // 100_000},{(cents // 100) % 1000:03d}.{cents % 100:02d}"
            stray = (int(rng.integers(0, df.height + 1)),
                     _order_line(f"O{ctr.order:08d}", row, txt) + "\n")
            counts["extra_delimiter"] = 1
        if m == months - 1:
            # export cut off mid-row: the last line stops inside ordered_at, no newline
            row = cand.row(int(rng.integers(0, cand.height)), named=True)
            ctr.order += 1
            full = _order_line(f"O{ctr.order:08d}", row, f"{row['order_total']:.2f}")
            cut = len(f"O{ctr.order:08d},{row['customer_id'] or ''},{row['email']},")
            trunc = full[:cut + int(rng.integers(4, 15))]
            counts["truncated_line"] = 1

    def writer(fh):
        if stray is None:
            df.write_csv(fh, float_precision=2)
        else:
            k, line = stray
            df[:k].write_csv(fh, float_precision=2)
            fh.flush()
            fh.write(line.encode())
            fh.flush()
            df[k:].write_csv(fh, float_precision=2, include_header=False)
        fh.flush()
        if trunc is not None:
            fh.write(trunc.encode())

    return _atomic_write(path, writer)


def _gen_product(rng, pop: _Population, cal: _Calendar, m: int, ctr: _Counters,
                 share: float, keys: dict[str, int]):
    m_start, m_end = cal.bounds(m)
    moy, year = cal.moys[m], cal.years[m]
    act = _activity(pop, m)
    users = pop.has_app & (pop.app_start <= m) & (m <= pop.last)
    rate = np.where(users, SESS_RATE[pop.arch] * pop.app_mult * act, 0.0)
    rate[(pop.arch == SEASONAL)] *= 2.0 if moy in (11, 12) else 1.0
    n_sess = rng.poisson(rate)
    starting = users & (pop.app_start == m)
    n_sess[starting] = np.maximum(n_sess[starting], 1)
    scust = np.repeat(np.arange(pop.n), n_sess)
    S = len(scust)
    sarch = pop.arch[scust]
    lo = np.where(pop.app_start[scust] == m, pop.signup[scust] + 60, m_start)
    st = _times_in_month(rng, S, m_start, m_end, lo=lo, hi_margin=3 * 3600)
    n_feat = rng.poisson(FEAT_RATE[sarch])
    n_inv = (rng.random(S) < INVITE_P[sarch]).astype(np.int64)
    per = 1 + n_feat + n_inv
    seg, pos = _segment_positions(per)
    ecust = scust[seg]
    earch = sarch[seg]
    gaps = np.where(pos == 0, 0, 1 + rng.exponential(75.0, size=len(seg)).astype(np.int64))
    ets = st[seg] + _segmented_cumsum(gaps, seg, S)
    etype = np.where(pos == 0, 1, np.where(pos <= n_feat[seg], 2, 3))
    feature = np.where(etype == 2, _sample_rows(rng, earch, FEATURE_P), -1)

    su = np.flatnonzero(starting)                                          # signups
    up = np.flatnonzero(users & (pop.upgrade == m))                        # upgrades
    up_ts = _times_in_month(rng, len(up), m_start, m_end)
    cust = np.concatenate([ecust, su, up])
    ts = np.concatenate([ets, pop.signup[su], up_ts])
    ev = np.concatenate([etype, np.zeros(len(su), np.int64), np.full(len(up), 4)])
    feature = np.concatenate([feature, np.full(len(su) + len(up), -1)])
    ts = np.minimum(ts, m_end - 1)
    srt = np.lexsort((ev, cust, ts))
    cust, ts, ev, feature = cust[srt], ts[srt], ev[srt], feature[srt]
    k = len(cust)
    prim = pop.platform[cust]
    other = rng.integers(0, 3, size=k)
    other = np.where(pop.arch[cust] == NEWCOMER, other % 2, other)
    plat = np.where(rng.random(k) < 0.85, prim, other)

    uuids = _uuids(rng, ctr.event, k, keys["event"])
    ctr.event += k
    is_signup = ev == 0
    email = pop.email.gather(cust)
    df = pl.DataFrame({
        "event_uuid": uuids,
        "user_id": _user_ids(cust, keys["user"]),
        "ts": _ts_strings(ts, "%Y-%m-%dT%H:%M:%SZ", "ts"),
        "event_name": pl.Series(PRODUCT_EVENTS).gather(ev),
        "feature": pl.Series(FEATURES + (None,)).gather(np.where(feature < 0, len(FEATURES),
                                                                 feature)),
        "platform": pl.Series(PLATFORMS).gather(plat),
        "account_email": pl.DataFrame({"e": email, "s": is_signup}).select(
            pl.when(pl.col("s")).then(pl.col("e")).otherwise(None))["e"],
    })
    clean = df.height

    def make_bad(kind: str, rows: pl.DataFrame) -> pl.DataFrame:
        c = rows.height
        if kind == "duplicate":
            return rows
        rows = rows.with_columns(_uuids(rng, ctr.event, c, keys["event"]))
        ctr.event += c
        if kind == "bad_timestamp":
            return rows.with_columns(ts=pl.Series(_bad_ts_strings(rng, c, year, "T", "Z")))
        if kind == "null_key":  # alternate JSON null and empty string
            return rows.with_columns(user_id=pl.Series(
                [None if i % 2 == 0 else "" for i in range(c)], dtype=pl.String))
        if kind == "unknown_enum":
            return rows.with_columns(event_name=pl.lit("teleport"),
                                     feature=pl.lit(None, dtype=pl.String))
        yr = 2031 if kind == "future_timestamp" else 2019
        return rows.with_columns(
            ts=_ts_strings(_random_year_times(rng, c, yr), "%Y-%m-%dT%H:%M:%SZ", "x"))

    eligible = np.flatnonzero(~is_signup)  # keep "one signup per app user" true in raw data
    df, counts = _inject(rng, df, "product", share, make_bad, eligible)
    return df, clean, counts


def _write_product(path: Path, rng, df: pl.DataFrame, m: int, months: int, share: float,
                   ctr: _Counters, counts: dict[str, int], keys: dict[str, int]) -> str:
    bad_line: tuple[int, str] | None = None
    if share > 0 and df.height > 0 and m == min(INVALID_JSON_MONTH_INDEX, months - 1):
        row = df.row(int(rng.integers(0, df.height)), named=True)
        uid = _uuids(rng, ctr.event, 1, keys["event"])[0]
        ctr.event += 1
        # a record cut off by a crashed exporter: no closing brace
        line = (f'{{"event_uuid":"{uid}","user_id":"{row["user_id"]}","ts":"{row["ts"]}",'
                f'"event_name":"{row["event_name"]}","feature":nul\n')
        bad_line = (int(rng.integers(0, df.height + 1)), line)
        counts["invalid_json"] = 1

    def writer(fh):
        if bad_line is None:
            df.write_ndjson(fh)
        else:
            k, line = bad_line
            df[:k].write_ndjson(fh)
            fh.flush()
            fh.write(line.encode())
            fh.flush()
            df[k:].write_ndjson(fh)

    return _atomic_write(path, writer)


def _campaigns(cal: _Calendar, m: int) -> list[tuple[str, bool, int]]:
    """(campaign name, is_promo, send time) in send order for month m."""
    m_start, _ = cal.bounds(m)
    lbl, moy, year = cal.labels[m], cal.moys[m], cal.years[m]
    out = [(f"{lbl}-newsletter", False, m_start + 3 * SECS_DAY + 9 * 3600)]
    if moy == 12:
        out.append((f"{lbl}-holiday-gifts", True, m_start + 9 * SECS_DAY + 10 * 3600))
    if moy == 11:
        out.append((f"{lbl}-black-friday", True,
                    m_start + (_black_friday_day(year) - 2) * SECS_DAY + 8 * 3600))
    else:
        out.append((f"{lbl}-promo", True, m_start + 16 * SECS_DAY + 15 * 3600))
    return out


def _email_block(rng, pop: _Population, rec: np.ndarray, send: np.ndarray, window_end: int,
                 act: np.ndarray, boost: np.ndarray, allow_unsub: bool, ctr: _Counters):
    """Sends + engagement for one campaign. Returns (cust, send index, event, time)."""
    R = len(rec)
    msg = np.arange(ctr.send, ctr.send + R)  # internal send index, for ordering only
    ctr.send += R
    arch = pop.arch[rec]
    p_open = np.clip(OPEN_P[arch] * pop.open_mult[rec] * act[rec] * boost, 0, 0.95)
    opened = rng.random(R) < p_open
    n_open = np.where(opened, 1 + rng.poisson(0.4, size=R), 0)
    oseg, opos = _segment_positions(n_open)
    first_gap = rng.lognormal(np.log(2 * 3600), 1.0, size=len(oseg))
    later_gap = rng.exponential(6 * 3600, size=len(oseg))
    gaps = (1 + np.where(opos == 0, first_gap, later_gap)).astype(np.int64)
    ot = send[oseg] + _segmented_cumsum(gaps, oseg, R)
    keep = ot < window_end
    oseg, opos, ot = oseg[keep], opos[keep], ot[keep]
    kept = np.bincount(oseg, minlength=R)
    has_open = kept > 0
    first_open = np.zeros(R, np.int64)
    first_open[oseg[opos == 0]] = ot[opos == 0]
    last_open = np.zeros(R, np.int64)
    last_open[oseg] = ot  # increasing within a recipient -> last write wins
    clicked = has_open & (rng.random(R) < CLICK_P[arch] * np.where(boost > 1, 1.3, 1.0))
    ct = first_open + rng.integers(5, 600, size=R)
    clicked &= ct < window_end
    after = np.maximum(last_open, np.where(clicked, ct, 0))
    unsub = has_open & (rng.random(R) < UNSUB_P[arch]) if allow_unsub else np.zeros(R, bool)
    ut = after + rng.integers(10, 300, size=R)
    unsub &= ut < window_end
    pop.unsub[rec[unsub]] = True
    cust = np.concatenate([rec, rec[oseg], rec[clicked], rec[unsub]])
    msgs = np.concatenate([msg, msg[oseg], msg[clicked], msg[unsub]])
    ev = np.concatenate([np.zeros(R, np.int64), np.ones(len(oseg), np.int64),
                         np.full(int(clicked.sum()), 2), np.full(int(unsub.sum()), 3)])
    tt = np.concatenate([send, ot, ct[clicked], ut[unsub]])
    return cust, msgs, ev, tt


def _gen_email(rng, pop: _Population, cal: _Calendar, m: int, ctr: _Counters,
               share: float, keys: dict[str, int]):
    m_start, m_end = cal.bounds(m)
    moy, year = cal.moys[m], cal.years[m]
    act = _activity(pop, m)
    blocks: list[tuple] = []
    # welcome (transactional) email to every customer acquired this month
    new = np.flatnonzero((pop.acq >= m_start) & (pop.acq < m_end))
    send = pop.acq[new] + rng.integers(60, 600, size=len(new))
    boost = np.full(len(new), 1.5)
    blocks.append(("welcome",) + _email_block(rng, pop, new, send, m_end - 1, act, boost,
                                              False, ctr))
    camps = _campaigns(cal, m)
    for i, (name, promo, s) in enumerate(camps):
        window_end = camps[i + 1][2] - 3600 if i + 1 < len(camps) else m_end - 1
        elig = pop.subscribed & ~pop.unsub & (pop.acq < s)
        if promo:
            p_seg = PROMO_SEGMENT_P[pop.arch].copy()
            if moy in (11, 12):
                p_seg[pop.arch == SEASONAL] = 1.0
            elig &= rng.random(pop.n) < p_seg
        rec = np.flatnonzero(elig)
        send = s + rng.integers(0, 7200, size=len(rec))
        arch = pop.arch[rec]
        boost = np.ones(len(rec))
        if promo:
            boost[arch == BARGAIN] = 1.6
        if moy in (11, 12):
            boost[arch == SEASONAL] = 2.2
        blocks.append((name,) + _email_block(rng, pop, rec, send, window_end, act, boost,
                                             True, ctr))
    names = [b[0] for b in blocks]
    camp_names = [f"{cal.labels[m]}-welcome" if nme == "welcome" else nme for nme in names]
    camp = np.concatenate([np.full(len(b[1]), j) for j, b in enumerate(blocks)])
    cust = np.concatenate([b[1] for b in blocks])
    msg = np.concatenate([b[2] for b in blocks])
    ev = np.concatenate([b[3] for b in blocks])
    tt = np.concatenate([b[4] for b in blocks])
    srt = np.lexsort((ev, msg, tt))
    camp, cust, msg, ev, tt = camp[srt], cust[srt], msg[srt], ev[srt], tt[srt]

    # one message_id per email event row (the pipeline uses it as the event id); a
    # send's engagement is linked to it through (recipient, campaign)
    rid = np.arange(ctr.message, ctr.message + len(tt))
    ctr.message += len(tt)
    df = pl.DataFrame({
        "message_id": _prefixed_hex("message_id", "m_", _scramble(rid, 64, keys["message"]), 16),
        "recipient": pop.email.gather(cust),
        "event": pl.Series(EMAIL_EVENTS).gather(ev),
        "occurred_at": _ts_strings(tt, "%Y-%m-%dT%H:%M:%S", "occurred_at"),
        "campaign": pl.Series(camp_names).gather(camp),
    })
    clean = df.height

    def make_bad(kind: str, rows: pl.DataFrame) -> pl.DataFrame:
        c = rows.height
        if kind == "duplicate":
            return rows
        ids = np.arange(ctr.message, ctr.message + c)
        ctr.message += c
        rows = rows.with_columns(
            _prefixed_hex("message_id", "m_", _scramble(ids, 64, keys["message"]), 16))
        if kind == "bad_timestamp":
            return rows.with_columns(
                occurred_at=pl.Series(_bad_ts_strings(rng, c, year, "T", "")))
        if kind == "null_key":
            return rows.with_columns(recipient=pl.lit(None, dtype=pl.String))
        if kind == "unknown_enum":
            return rows.with_columns(event=pl.lit("bounced"))
        yr = 2031 if kind == "future_timestamp" else 2019
        return rows.with_columns(
            occurred_at=_ts_strings(_random_year_times(rng, c, yr), "%Y-%m-%dT%H:%M:%S", "x"))

    df, counts = _inject(rng, df, "email", share, make_bad)
    return df, clean, counts


def _gen_web(rng, pop: _Population, cal: _Calendar, m: int, ctr: _Counters,
             share: float, keys: dict[str, int]):
    m_start, m_end = cal.bounds(m)
    moy = cal.moys[m]
    act = _activity(pop, m)
    active = pop.has_web & (act > 0)
    rate = np.where(active, VIEW_RATE[pop.arch] * pop.web_mult * act, 0.0)
    seas = pop.arch == SEASONAL
    rate[seas] *= 5.0 if moy in (11, 12) else 0.6
    if m >= DRIFT_MONTH_INDEX:
        rate *= DRIFT_VIEW_FACTOR  # after the price rise, shoppers browse less too
    n = rng.poisson(rate)
    cust = np.repeat(np.arange(pop.n), n)
    k_started = (pop.cookie_start[cust] <= m).sum(axis=1)
    u = rng.random(len(cust))
    slot = np.where(u < 0.8, k_started - 1, (rng.random(len(cust)) * k_started).astype(np.int64))
    slot = np.clip(slot, 0, 2)
    ident = pop.cookie_ident[cust, slot]
    logged = (m >= ident) & (rng.random(len(cust)) < 0.85)
    # forced views: the first visit of a new cookie, the first identified visit of a
    # late-identified cookie
    f_c, f_s = np.nonzero(pop.cookie_start == m)
    f_logged = (pop.cookie_mode[f_c, f_s] == MODE_IMMEDIATE) & (rng.random(len(f_c)) < 0.85)
    g_c, g_s = np.nonzero((pop.cookie_mode == MODE_LATE) & (pop.cookie_ident == m))
    cust = np.concatenate([cust, f_c, g_c])
    slot = np.concatenate([slot, f_s, g_s])
    logged = np.concatenate([logged, f_logged, np.ones(len(g_c), bool)])
    arch = pop.arch[cust]
    cookie = cust.astype(np.int64) * 3 + slot
    device = pop.cookie_device[cust, slot]
    lo = np.where(pop.first[cust] == m, pop.acq[cust], m_start)
    t = _times_in_month(rng, len(cust), m_start, m_end, lo=lo)

    # purely anonymous visitors (never identified)
    n_anon = int(rng.poisson(0.05 * pop.n_base))
    a_views = 1 + rng.poisson(1.2, size=n_anon)
    a_cookie = 3 * pop.n + ctr.anon_cookie + np.repeat(np.arange(n_anon), a_views)
    ctr.anon_cookie += n_anon
    na = len(a_cookie)
    cust = np.concatenate([cust, np.full(na, -1)])
    cookie = np.concatenate([cookie, a_cookie])
    logged = np.concatenate([logged, np.zeros(na, bool)])
    arch = np.concatenate([arch, np.full(na, ANON)])
    device = np.concatenate([device, _sample_rows(rng, np.full(na, ANON), DEVICE_P)])
    t = np.concatenate([t, _times_in_month(rng, na, m_start, m_end)])
    us = t * 1_000_000 + rng.integers(0, 1_000_000, size=len(t))
    srt = np.lexsort((cookie, us))
    cust, cookie, logged, arch, device, us = (cust[srt], cookie[srt], logged[srt], arch[srt],
                                              device[srt], us[srt])
    k = len(cust)
    ptype = _sample_rows(rng, arch, PAGE_P)
    pcat = _sample_rows(rng, arch, CATEGORY_P)
    pid = 1 + (4999 * rng.random(k) ** 2.2).astype(np.int64)
    slug = rng.integers(0, len(BLOG_SLUGS), size=k)

    vid = np.arange(ctr.view, ctr.view + k)
    ctr.view += k
    cid = pop.customer_id.gather(np.where(cust < 0, 0, cust))
    df = pl.DataFrame({
        "view_id": _prefixed_hex("view_id", "pv_", _scramble(vid, 64, keys["view"]), 16),
        "anonymous_id": _cookie_ids(cookie, keys["cookie"]),
        "customer_id": cid,
        "logged": logged,
        "viewed_at": pl.Series(us, dtype=pl.Int64),
        "ptype": ptype, "cat": pl.Series(ORDER_CATEGORIES).gather(pcat), "pid": pid,
        "slug": pl.Series(BLOG_SLUGS).gather(slug),
        "device": pl.Series(DEVICES).gather(device),
    }).select(
        "view_id", "anonymous_id",
        pl.when(pl.col("logged")).then(pl.col("customer_id")).otherwise(None)
        .alias("customer_id"),
        pl.col("viewed_at").cast(pl.Datetime("us", "UTC")),
        pl.when(pl.col("ptype") == 2)
        .then(pl.concat_str([pl.lit("/product/"), pl.col("cat"), pl.lit("/"),
                             pl.col("pid").cast(pl.String)]))
        .when(pl.col("ptype") == 5).then(pl.concat_str([pl.lit("/blog/"), pl.col("slug")]))
        .otherwise(pl.col("ptype").replace_strict(
            {0: "/", 1: "/pricing", 3: "/cart", 4: "/checkout"}, default="/",
            return_dtype=pl.String))
        .alias("page_path"),
        "device",
    )
    clean = df.height

    def make_bad(kind: str, rows: pl.DataFrame) -> pl.DataFrame:
        c = rows.height
        if kind == "duplicate":
            return rows
        ids = np.arange(ctr.view, ctr.view + c)
        ctr.view += c
        rows = rows.with_columns(
            _prefixed_hex("view_id", "pv_", _scramble(ids, 64, keys["view"]), 16))
        if kind == "null_timestamp":
            return rows.with_columns(viewed_at=pl.lit(None, dtype=pl.Datetime("us", "UTC")))
        yr = 2031 if kind == "future_timestamp" else 2019
        us_bad = _random_year_times(rng, c, yr) * 1_000_000
        return rows.with_columns(viewed_at=pl.Series(us_bad, dtype=pl.Int64)
                                 .cast(pl.Datetime("us", "UTC")))

    df, counts = _inject(rng, df, "web", share, make_bad)
    return df, clean, counts


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------
def generate_sample(out_dir: str | Path, *, customers: int = 20_000, months: int = 24,
                    start: str = "2024-11", seed: int = 42,
                    bad_row_share: float = 0.005) -> dict:
    """Generate a deterministic, realistic raw behavioural data set.

    Customers of planted archetypes (see ``ARCHETYPE_SHARES``) produce orders,
    app events, email engagement and web page views, written month by month as
    the raw files of four sources.  A drift event happens at month index 18
    (a price rise: bargain hunters stop ordering, everyone else orders a quarter as often) and a new cohort of ``mobile_app_newcomers``
    (6 % of ``customers``, extra) arrives at month index 19.  About
    ``bad_row_share`` of the rows of every source are bad rows of documented
    kinds.  The layout is described in ``docs/sample-data.md``.

    Parameters
    ----------
    out_dir : str or pathlib.Path
        Output directory; created if missing.  Existing files of the same names
        are replaced atomically (temp file in the same directory + ``os.replace``).
    customers : int, default 20_000
        Size of the base population.  The drift cohort is added on top of it
        when ``months > 19``.
    months : int, default 24
        Number of calendar months of history (one file per source per month).
    start : str, default "2024-11"
        First month, ``"YYYY-MM"``.
    seed : int, default 42
        Seed of every random draw; equal arguments give byte-identical files.
    bad_row_share : float, default 0.005
        Expected share of bad rows per source (``0`` disables all bad rows,
        including the one-off malformed lines).

    Returns
    -------
    dict
        The manifest, also written as ``out_dir/manifest.json``: parameters,
        months, archetype counts, per-file and per-source per-month row counts,
        drift event, bad-row counts per kind per source, sha256 of every file.

    Raises
    ------
    ValueError
        On non-positive ``customers`` / ``months`` or ``bad_row_share`` outside
        ``[0, 0.5]``.

    Examples
    --------
    >>> manifest = generate_sample("/tmp/sample", customers=500, months=6)  # doctest: +SKIP
    >>> manifest["total_rows"]["orders"]  # doctest: +SKIP
    """
    if customers < 1 or months < 1:
        raise ValueError("customers and months must be >= 1")
    if not 0.0 <= bad_row_share <= 0.5:
        raise ValueError("bad_row_share must be within [0, 0.5]")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cal = _Calendar.build(start, months)

    root = np.random.default_rng(seed)
    keys = {name: int(v) for name, v in zip(
        ("user", "cookie", "event", "message", "view"),
        root.integers(0, 2**63 - 1, size=5, dtype=np.int64))}
    pop = _build_population(root, cal, customers, months)
    ctr = _Counters()

    files: dict[str, dict] = {}
    row_counts: dict[str, dict[str, int]] = {s: {} for s in SOURCES}
    clean_counts: dict[str, dict[str, int]] = {s: {} for s in SOURCES}
    bad_totals: dict[str, dict[str, int]] = {s: {k: 0 for k in BAD_ROW_KINDS[s]}
                                             for s in SOURCES}

    def record(source: str, rel: str, label: str, rows: int, clean: int,
               counts: dict[str, int], sha: str) -> None:
        files[rel] = {"source": source, "month": label, "rows": rows, "clean_rows": clean,
                      "bad_rows": counts, "sha256": sha}
        row_counts[source][label] = rows
        clean_counts[source][label] = clean
        for kname, v in counts.items():
            bad_totals[source][kname] += v

    for m in range(months):
        label = cal.labels[m]
        rng = np.random.default_rng([seed, 1, m])  # per month stream

        df, clean, counts = _gen_orders(rng, pop, cal, m, ctr, bad_row_share, keys)
        rel = f"orders/orders_{label}.csv"
        sha = _write_orders(out / rel, rng, df, m, months, bad_row_share, ctr, counts, label)
        record("orders", rel, label, df.height + counts["extra_delimiter"]
               + counts["truncated_line"], clean, counts, sha)
        del df

        df, clean, counts = _gen_product(rng, pop, cal, m, ctr, bad_row_share, keys)
        rel = f"product/events_{label}.jsonl"
        sha = _write_product(out / rel, rng, df, m, months, bad_row_share, ctr, counts, keys)
        record("product", rel, label, df.height + counts["invalid_json"], clean, counts, sha)
        del df

        df, clean, counts = _gen_email(rng, pop, cal, m, ctr, bad_row_share, keys)
        rel = f"email/email_{label}.csv"
        sha = _atomic_write(out / rel, lambda fh, d=df: d.write_csv(fh))
        record("email", rel, label, df.height, clean, counts, sha)
        del df

        df, clean, counts = _gen_web(rng, pop, cal, m, ctr, bad_row_share, keys)
        rel = f"web/pageviews_{label}.parquet"
        sha = _atomic_write(out / rel, lambda fh, d=df: d.write_parquet(
            fh, compression="zstd", statistics=True))
        record("web", rel, label, df.height, clean, counts, sha)
        del df

    # ground truth -----------------------------------------------------------------------
    has_web = pop.has_web
    cc, cs = np.nonzero((pop.cookie_start < months) & has_web[:, None])
    cookies = pl.DataFrame({"i": cc, "s": cs,
                            "a": _cookie_ids(cc.astype(np.int64) * 3 + cs, keys["cookie"])})
    cookies = cookies.sort("i", "s").group_by("i", maintain_order=True).agg(
        pl.col("a").alias("anonymous_ids"))
    idx = np.arange(pop.n)
    gt = pl.DataFrame({
        "i": idx,
        "customer_id": pop.customer_id,
        "archetype": pl.Series(ARCHETYPES).gather(pop.arch.astype(np.int64)),
        "email": pop.email,
        "app_user_id": _user_ids(idx, keys["user"]),
        "has_app": pop.has_app,
        "first_active_month": pl.Series(cal.labels).gather(pop.first),
        "has_orders": pop.n_orders > 0,
    }).join(cookies, on="i", how="left").sort("i").select(
        "customer_id", "archetype", "email",
        pl.when(pl.col("has_app")).then(pl.col("app_user_id")).otherwise(None)
        .alias("app_user_id"),
        pl.col("anonymous_ids").fill_null(pl.lit([], dtype=pl.List(pl.String))),
        "first_active_month", "has_orders",
    )
    rel = "ground_truth/customers.parquet"
    sha = _atomic_write(out / rel, lambda fh: gt.write_parquet(fh, compression="zstd"))
    gt_sha = sha

    arch_counts = {a: int((pop.arch == i).sum()) for i, a in enumerate(ARCHETYPES)}
    drift_label = cal.labels[DRIFT_MONTH_INDEX] if months > DRIFT_MONTH_INDEX else None
    cohort_label = cal.labels[COHORT_MONTH_INDEX] if months > COHORT_MONTH_INDEX else None
    manifest = {
        "generator": "segpipe.sample",
        "generator_version": GENERATOR_VERSION,
        "parameters": {"customers": customers, "months": months, "start": start,
                       "seed": seed, "bad_row_share": bad_row_share},
        "months": cal.labels,
        "timezone": "UTC",
        "customers_total": pop.n,
        "archetypes": {a: {"target_share": ARCHETYPE_SHARES.get(a, COHORT_SHARE),
                           "customers": arch_counts[a]} for a in ARCHETYPES},
        "anonymous_visitors": ctr.anon_cookie,
        "drift": {
            "applied": months > DRIFT_MONTH_INDEX,
            "month_index": DRIFT_MONTH_INDEX,
            "month": drift_label,
            "description": ("a price rise: bargain_hunters stop ordering entirely from this "
                            "month on (the discount programme ended) and every other archetype "
                            f"orders at {DRIFT_ORDER_FACTOR:.0%} of its former rate; page views "
                            f"fall to {DRIFT_VIEW_FACTOR:.0%}; email and app activity continue"),
            "order_rate_factor": DRIFT_ORDER_FACTOR,
            "page_view_rate_factor": DRIFT_VIEW_FACTOR,
            "new_cohort": {
                "applied": months > COHORT_MONTH_INDEX,
                "archetype": COHORT_ARCHETYPE,
                "month_index": COHORT_MONTH_INDEX,
                "month": cohort_label,
                "customers": arch_counts[COHORT_ARCHETYPE],
                "description": ("a new cohort (~6% extra customers) is acquired in this "
                                "month: heavy app use (ios/android), mobile web"),
            },
        },
        "files": files,
        "row_counts": row_counts,
        "clean_row_counts": clean_counts,
        "total_rows": {s: int(sum(row_counts[s].values())) for s in SOURCES},
        "bad_rows": bad_totals,
        "ground_truth": {"path": rel, "rows": gt.height, "sha256": gt_sha},
    }
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    _atomic_write(out / "manifest.json", lambda fh: fh.write(text.encode()))
    return manifest
