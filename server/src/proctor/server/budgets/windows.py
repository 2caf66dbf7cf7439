"""Budget windows in UTC, in integer milliseconds: the Python twin of lib.lua's window_bounds.

`none` has no window (start and end 0). `minute`, `hour`, `day` and fixed spans
start at floor(now / span) * span from the epoch; `month` is the UTC calendar
month. The Redis scripts compute the same bounds from Redis TIME.
"""

from __future__ import annotations

import datetime as _dt

_SPANS_MS = {"minute": 60_000, "hour": 3_600_000, "day": 86_400_000}


def window_bounds(window: str, window_seconds: int, now_ms: int) -> tuple[int, int]:
    """(start_ms, end_ms) of the window holding now_ms; (0, 0) for window none."""
    if window == "none":
        return 0, 0
    if window == "month":
        day = _dt.date(1970, 1, 1) + _dt.timedelta(days=now_ms // 86_400_000)
        first = _dt.date(day.year, day.month, 1)
        nxt = _dt.date(day.year + (day.month == 12), day.month % 12 + 1, 1)
        epoch = _dt.date(1970, 1, 1)
        return (first - epoch).days * 86_400_000, (nxt - epoch).days * 86_400_000
    span = window_seconds * 1000 if window == "fixed" else _SPANS_MS[window]
    start = now_ms // span * span
    return start, start + span


def counter_key_parts(scope: str, window_spec: str, budget_id: str,
                      counter: str) -> tuple[str, str]:
    """A counter's name before and after its window start (reserve.lua joins them around
    the start it computes). The id is length-prefixed, in UTF-8 bytes as Lua's # counts,
    and the counter (plans.counter_of) last, so names cannot collide whatever characters
    ids and keys hold."""
    return (f"c:{scope}:{window_spec}:",
            f":{len(budget_id.encode())}:{budget_id}:{counter}")


def counter_key(prefix: str, scope: str, window_spec: str, start_ms: int, budget_id: str,
                counter: str) -> str:
    """The name of one counter (see counter_key_parts)."""
    head, tail = counter_key_parts(scope, window_spec, budget_id, counter)
    return f"{prefix}{head}{start_ms}{tail}"
