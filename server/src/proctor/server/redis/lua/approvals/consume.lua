-- consume.lua: use an approved grant for the action it is bound to, once.
-- KEYS[1]  the prefix (lib.lua)
-- ARGV[1]  approval id   ARGV[2] the presented action's hash   ARGV[3] the consuming decision id
-- Replies one JSON object: {k = "consumed" | "not_found" | "mismatch" | "refused", a = record, x = expired}
-- ("refused": not approved; the record's status says what it is).
local id, hash, decision = ARGV[1], ARGV[2], ARGV[3]
local now = now_ms()
local x = sweep(now)
local r = load(id)
if not r then return reply({k = 'not_found', x = x}) end
if r.h ~= hash then return reply({k = 'mismatch', a = r, x = x}) end
if r.st ~= 'approved' then return reply({k = 'refused', a = r, x = x}) end
redis.call('HSET', akey(id), 'st', 'consumed', 'cat', I(now), 'cby', decision)
redis.call('ZREM', P .. 'open', id)
if r.rq ~= '' then
  local idx = P .. 'rq:' .. #r.t .. ':' .. r.t .. ':' .. r.rq
  if redis.call('GET', idx) == id then redis.call('DEL', idx) end
end
return reply({k = 'consumed', a = load(id), x = x})
