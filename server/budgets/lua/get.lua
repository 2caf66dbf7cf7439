-- get.lua: the current counters of the budgets given (expired reservations reclaimed first).
-- KEYS[1]  the fleet prefix "proctor:{FLEET}:" (see reserve.lua)
-- ARGV[1]  n, the number of budgets, then n x 9 fields as in reserve.lua
-- Returns {"ok", {status...}} in the order given.
local P = KEYS[1]
local n = tonumber(ARGV[1])
local now = now_ms()
reclaim(P, now)
local out = {}
for i = 1, n do
  out[i] = status(place(P, read_budget(2 + (i - 1) * BUDGET_FIELDS), now), now)
end
return {'ok', out}
