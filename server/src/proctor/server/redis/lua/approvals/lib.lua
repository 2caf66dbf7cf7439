-- lib.lua: helpers shared by the approval scripts. Not a script of its own: the Redis layer
-- prepends it to each script (scripts.Script.load).
-- KEYS[1] (every script): the prefix P = "proctor:{apv:FLEET}:"; every key below starts
-- with P, so all of one fleet's approval keys share the hash tag and slot (Cluster-safe).
--   P.."a:"..id      hash, one approval: st status, exp deadline ms, cr created ms,
--                    res resolved ms, rv reviewer, rr resolution reason, cat consumed ms,
--                    cby consuming decision id, h action hash, t tenant, rq request_id,
--                    ap approvers (JSON array), ttl seconds, body (the immutable request
--                    JSON, written by the store and never parsed here).
--                    PEXPIREAT its deadline + the retention.
--   P.."rq:"..#tenant..":"..tenant..":"..request_id
--                    string: the id of the approval that request created; PEXPIREAT its
--                    deadline (idempotent retries).
--   P.."open"        sorted set: pending and approved ids scored by deadline (ms).
--   P.."pend:"..#tenant..":"..tenant
--                    sorted set: the tenant's pending ids scored by deadline (ms), for the
--                    limit on pending approvals per tenant.
--   P.."marker"      the durability watch's (lua/watch/marker.lua).
--   P.."all"         sorted set: every id scored by creation (ms * 1000 + P.."seq" % 1000),
--                    for listing newest first.
--   P.."seq"         counter of creations.
-- Replies are cjson objects: k (kind), a (one record), l (records), x (records that this
-- call expired, for the caller to report). Integers travel as decimal strings.

local P = KEYS[1]
local SWEEP_MAX = 200

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function I(x)
  return string.format('%d', x)
end

local function akey(id)
  return P .. 'a:' .. id
end

local function load(id)
  local h = redis.call('HGETALL', akey(id))
  if #h == 0 then return nil end
  local r = {id = id}
  for i = 1, #h, 2 do r[h[i]] = h[i + 1] end
  return r
end

local function is_open(st)
  return st == 'pending' or st == 'approved'
end

local function pending_key(tenant)
  return P .. 'pend:' .. #tenant .. ':' .. tenant
end

-- Expire open approvals whose deadline has passed; return their records.
local function sweep(now)
  local due = redis.call('ZRANGEBYSCORE', P .. 'open', '-inf', now, 'LIMIT', 0, SWEEP_MAX)
  local out = {}
  for _, id in ipairs(due) do
    redis.call('ZREM', P .. 'open', id)
    local st = redis.call('HGET', akey(id), 'st')
    if st and is_open(st) then
      redis.call('HSET', akey(id), 'st', 'expired')
      local r = load(id)
      redis.call('ZREM', pending_key(r.t), id)
      out[#out + 1] = r
    end
  end
  return out
end

local function reply(t)
  return cjson.encode(t)
end
