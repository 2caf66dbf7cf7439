-- get.lua: the current counters of the budgets given (expired reservations reclaimed first).
-- KEYS[1]  the fleet prefix "proctor:{FLEET}:" (see reserve.lua)
-- ARGV[1]  the budgets, a JSON array as ARGV[6] of reserve.lua
-- Returns JSON {"k": "ok", "s": [status...]} in the order given (statuses as in reserve.lua).
local P = KEYS[1]
local now = now_ms()
reclaim(P, now)
local slots = read_slots(ARGV[1], now)
return reply({k = 'ok', s = statuses(slots, snapshot(P, slots, now))})
