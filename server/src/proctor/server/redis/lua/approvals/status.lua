-- status.lua: the status of several approvals at once, after applying due expiries (the
-- poll of every WaitApproval waiting on one server).
-- KEYS[1]  the prefix (lib.lua)
-- ARGV     the approval ids (at least one)
-- Replies one JSON object: {k = "ok", st = [status per id, in order; "" for an unknown
-- id], x = expired}.
local now = now_ms()
local x = sweep(now)
local st = {}
for i, id in ipairs(ARGV) do
  st[i] = redis.call('HGET', akey(id), 'st') or ''
end
return reply({k = 'ok', st = st, x = x})
