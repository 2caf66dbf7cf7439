-- get.lua: the current counters of the budgets given (expired reservations reclaimed first).
-- KEYS[1]  the fleet prefix "proctor:{FLEET}:" (see reserve.lua)
-- ARGV[1]  the budgets, a JSON array of [id, unit, scope, scope_key, kind, limit, window,
--          fixed span (s), window spec, counter key head, counter key tail] (read_slots)
-- Replies one JSON object: {"k": "ok", "s": [status...]} in the order given (statuses as
-- lib.lua describes them).
local P = KEYS[1]
local now = now_ms()
reclaim(P, now)
local slots = read_slots(ARGV[1], now)
return reply({k = 'ok', s = statuses(slots, snapshot(P, slots, now))})
