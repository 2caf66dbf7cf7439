-- get.lua: one approval, after applying due expiries.
-- KEYS[1]  the prefix (lib.lua)
-- ARGV[1]  approval id ('' : only sweep)
-- Replies one JSON object: {k = "ok", a = record, x = expired} or {k = "not_found", x = expired}.
local now = now_ms()
local x = sweep(now)
if ARGV[1] == '' then return reply({k = 'ok', x = x}) end
local r = load(ARGV[1])
if not r then return reply({k = 'not_found', x = x}) end
return reply({k = 'ok', a = r, x = x})
