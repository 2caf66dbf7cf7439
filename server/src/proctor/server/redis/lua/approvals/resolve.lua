-- resolve.lua: approve or deny a pending approval.
-- KEYS[1]  the prefix (lib.lua)
-- ARGV[1]  approval id   ARGV[2] "1" approve | "0" deny   ARGV[3] reviewer   ARGV[4] reason
-- ARGV[5]  retention ms
-- Replies one JSON object: {k = "ok" | "not_found" | "precondition", a = record, x = expired}.
-- Approving moves the deadline to now + ttl (the time the agent has to use the grant).
local id, approve, reviewer, reason = ARGV[1], ARGV[2] == '1', ARGV[3], ARGV[4]
local retention = tonumber(ARGV[5])
local now = now_ms()
local x = sweep(now)
local r = load(id)
if not r then return reply({k = 'not_found', x = x}) end
if r.st ~= 'pending' then return reply({k = 'precondition', a = r, x = x}) end
local key = akey(id)
redis.call('HSET', key, 'res', I(now), 'rv', reviewer, 'rr', reason)
redis.call('ZREM', pending_key(r.t), id)
if approve then
  local exp = now + tonumber(r.ttl) * 1000
  redis.call('HSET', key, 'st', 'approved', 'exp', I(exp))
  redis.call('ZADD', P .. 'open', exp, id)
  redis.call('PEXPIREAT', key, exp + retention)
  local idx = P .. 'rq:' .. #r.t .. ':' .. r.t .. ':' .. r.rq
  if r.rq ~= '' and redis.call('GET', idx) == id then
    redis.call('PEXPIREAT', idx, exp)
  end
else
  redis.call('HSET', key, 'st', 'denied')
  redis.call('ZREM', P .. 'open', id)
end
return reply({k = 'ok', a = load(id), x = x})
