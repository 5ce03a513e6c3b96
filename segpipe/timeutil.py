"""Month arithmetic on partition keys ("YYYY-MM-01") and UTC datetimes."""

from __future__ import annotations

import datetime as dt

UTC = dt.timezone.utc


def month_start(value: str | dt.date | dt.datetime) -> dt.datetime:
    """First instant (UTC) of the month holding ``value`` ("YYYY-MM", "YYYY-MM-DD" or a date)."""
    if isinstance(value, str):
        value = dt.datetime.strptime(value[:7], "%Y-%m")
    return dt.datetime(value.year, value.month, 1, tzinfo=UTC)


def next_month(start: dt.datetime, n: int = 1) -> dt.datetime:
    """The month start ``n`` months after ``start``."""
    idx = start.year * 12 + start.month - 1 + n
    return dt.datetime(idx // 12, idx % 12 + 1, 1, tzinfo=UTC)


def month_key(value: str | dt.date | dt.datetime) -> str:
    """Partition key "YYYY-MM-01" of the month holding ``value``."""
    return month_start(value).strftime("%Y-%m-%d")


def month_range(first: str, last: str) -> list[str]:
    """Partition keys from ``first`` to ``last`` inclusive."""
    cur, end = month_start(first), month_start(last)
    out = []
    while cur <= end:
        out.append(cur.strftime("%Y-%m-%d"))
        cur = next_month(cur)
    return out
