"""Window bounds: Python (embedded store) and Lua (Redis scripts) agree, months included."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import redis

from proctor.server.budgets.windows import window_bounds
from proctor.server.redis.scripts import LUA_DIR

PROBE = """
local out = {}
for i = 2, #ARGV do
  local s, e = window_bounds(ARGV[1], 30, tonumber(ARGV[i]))
  out[#out + 1] = {s, e}
end
return out
"""


def _samples() -> list[int]:
    rng = random.Random(4)
    edges = []
    for year in (1970, 1999, 2000, 2024, 2026, 2100, 2400):
        for month in (1, 2, 3, 12):
            t = int(dt.datetime(year, month, 1, tzinfo=dt.UTC).timestamp() * 1000)
            edges += [t - 1, t, t + 1]
    return edges + [rng.randrange(0, 4_102_444_800_000) for _ in range(300)]


def test_month_and_day_bounds_match_the_calendar() -> None:
    for ms in _samples():
        d = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
        start = dt.datetime(d.year, d.month, 1, tzinfo=dt.UTC)
        end = dt.datetime(d.year + d.month // 12, d.month % 12 + 1, 1, tzinfo=dt.UTC)
        assert window_bounds("month", 0, ms) == (int(start.timestamp()) * 1000,
                                                 int(end.timestamp()) * 1000)
        s, e = window_bounds("day", 0, ms)
        assert s <= ms < e and e - s == 86_400_000 and s % 86_400_000 == 0
    assert window_bounds("fixed", 30, 65_000) == (60_000, 90_000)
    assert window_bounds("none", 0, 65_000) == (0, 0)


def test_lua_and_python_windows_agree(store_redis: Any) -> None:
    r = redis.Redis(port=store_redis.port)
    try:
        script = (LUA_DIR / "budgets" / "lib.lua").read_text() + PROBE
        samples = _samples()
        for window in ("month", "day", "hour", "minute", "fixed", "none"):
            got = r.eval(script, 0, window, *samples)
            want = [list(window_bounds(window, 30, ms)) for ms in samples]
            assert got == want, window
    finally:
        r.close()
