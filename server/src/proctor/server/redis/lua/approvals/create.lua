-- create.lua: create a pending approval, or return the live one of an idempotent retry.
-- KEYS[1]  the prefix (lib.lua)
-- ARGV[1]  new approval id      ARGV[2] body JSON        ARGV[3] ttl seconds
-- ARGV[4]  tenant               ARGV[5] request_id ('' : always new)
-- ARGV[6]  action hash          ARGV[7] approvers JSON   ARGV[8] retention ms
-- ARGV[9]  the most approvals that may be open (pending or approved) at once
-- ARGV[10] the most approvals one tenant may have pending at once
-- Replies one JSON object: {k = "created" | "existing", a = record, x = expired}, or
-- {k = "full", x = expired} (the fleet's limit) or {k = "tenant_full", x = expired}.
local id, body, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local tenant, rq, hash, approvers = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local retention = tonumber(ARGV[8])
local max_open = tonumber(ARGV[9])
local max_pending = tonumber(ARGV[10])
local now = now_ms()
local x = sweep(now)

local idx = nil
if rq ~= '' then
  idx = P .. 'rq:' .. #tenant .. ':' .. tenant .. ':' .. rq
  local prior = redis.call('GET', idx)
  if prior then
    local r = load(prior)
    if r and (is_open(r.st) or r.st == 'denied') and now < tonumber(r.exp) and r.h == hash then
      return reply({k = 'existing', a = r, x = x})
    end
  end
end

-- Pending ids past their deadline are expired (by sweep, in bounded steps): not counted.
local pend = pending_key(tenant)
redis.call('ZREMRANGEBYSCORE', pend, '-inf', now)
if redis.call('ZCARD', pend) >= max_pending then
  return reply({k = 'tenant_full', x = x})
end
if redis.call('ZCARD', P .. 'open') >= max_open then
  return reply({k = 'full', x = x})
end

local exp = now + ttl * 1000
local key = akey(id)
redis.call('HSET', key, 'st', 'pending', 'exp', I(exp), 'cr', I(now), 'res', '0', 'rv', '',
  'rr', '', 'cat', '0', 'cby', '', 'h', hash, 't', tenant, 'rq', rq, 'ap', approvers,
  'ttl', I(ttl), 'body', body)
redis.call('PEXPIREAT', key, exp + retention)
redis.call('ZADD', P .. 'open', exp, id)
redis.call('ZADD', pend, exp, id)  -- emptied by resolve and sweep: Redis drops it then
-- Score: creation ms * 1000 + a per-fleet counter, so creations within one ms list in order.
local seq = redis.call('INCR', P .. 'seq') % 1000
redis.call('ZADD', P .. 'all', now * 1000 + seq, id)
if idx then
  redis.call('SET', idx, id, 'PXAT', exp)
end
-- Forget listing entries older than any record can be (their hashes have expired).
redis.call('ZREMRANGEBYSCORE', P .. 'all', '-inf',
  (now - retention - 2 * ttl * 1000 - 86400000) * 1000)
return reply({k = 'created', a = load(id), x = x})
