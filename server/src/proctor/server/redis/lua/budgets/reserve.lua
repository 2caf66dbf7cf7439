-- reserve.lua: reserve ARGV amount against every budget given, all or nothing.
-- KEYS[1]  the fleet prefix "proctor:{FLEET}:" (names no key itself; routes the call to the
--          fleet's slot; every key touched is derived from it, so all share its hash tag)
-- ARGV[1]  reservation_id      ARGV[2] amount      ARGV[3] ttl (ms)
-- ARGV[4]  record margin (ms): how long the record outlives the reservation (idempotency)
-- ARGV[5]  the request: #tenant:tenant #agent:agent #run:run #unit:unit (one string; an id
--          seen before answers only a request with the same one and the same amount)
-- ARGV[6]  the same as a JSON string (written into the record)
-- ARGV[7]  N, the number of budgets; then 10 arguments per budget, in policy order
--          (budget i's first is ARGV[8 + 10 * (i - 1)]):
--   +0 counter key head "c:SCOPE:WINDOW_SPEC:"   +1 counter key tail ":#ID:ID:COUNTER"
--      (the key is P .. head .. window start ms .. tail; lib.lua has the layout)
--   +2 kind (spend|concurrency)   +3 limit   +4 window (none|minute|hour|day|month|fixed)
--   +5 fixed span (s)   +6 the status as JSON up to its counts:
--      ["ID","UNIT","SCOPE","SCOPE_KEY","KIND","LIMIT","WINDOW_SPEC",   +7 ID as JSON
--   +8, +9 the counter key head and tail escaped for a JSON string
-- The budgets come flat and the record is written as text because this script runs for
-- every reservation: reading the budgets as JSON and writing the record with cjson cost
-- a sixth of its time in Redis.
-- Replies one JSON object, of one of three kinds:
--   {"k": "ok", "g": granted, "r": refused_by, "e": expires_at ms, "s": [status...]}
--      a new reservation (granted or refused), or the first answer again for the same
--      request while the reservation is held (a lease is renewed first) or was refused;
--      statuses as lib.lua describes them, in budget order
--   {"k": "exists"}  the id answered another request (tenant, agent, run, unit or amount)
--   {"k": "ended", "st": state}  the id's reservation was committed, released or expired:
--      it is never granted again
-- Integers are decimal strings throughout.
local P = KEYS[1]
local rid, amount, ttl, margin = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local request = ARGV[5]
local n = tonumber(ARGV[7])
local now = now_ms()
reclaim(P, now)

local rec = load_record(P, rid)
if rec then
  if rec.q ~= request or tonumber(rec.a) ~= amount then
    return reply({k = 'exists'})
  end
  if rec.s == 'held' and tonumber(rec.e) <= now then rec.s = 'expired' end
  if rec.s ~= 'held' and rec.s ~= 'refused' then
    return reply({k = 'ended', st = rec.s})
  end
  if rec.l and rec.s == 'held' then
    rec.e = I(now + ttl)
    redis.call('ZADD', P .. 'exp', now + ttl, rid)
    save_record(P, rid, rec, nil)
  end
  return reply({k = 'ok', g = rec.g, r = rec.r, e = rec.e, s = statuses(rec.b, rec.u)})
end

-- Every counter is read once: the counts decide, and (plus the amount when granted) they
-- are the answer, since nothing else runs between here and the end of the script. The
-- counters are of the window holding now, so adjust()'s window check is passed and left out.
local refused, lease, keys, used, reserved, fresh, starts, ends = 0, false, {}, {}, {}, {}, {}, {}
for i = 1, n do
  local o = 8 + 10 * (i - 1)
  local kind = ARGV[o + 2]
  local start, wend = window_bounds(ARGV[o + 4], tonumber(ARGV[o + 5]), now)
  starts[i], ends[i] = I(start), wend
  keys[i] = P .. ARGV[o] .. starts[i] .. ARGV[o + 1]
  local v = redis.call('HMGET', keys[i], 'used', 'reserved')
  used[i], reserved[i] = tonumber(v[1] or '0'), tonumber(v[2] or '0')
  -- a counter that exists already got its expiry (window end + 1 s) when it was created
  fresh[i] = v[1] == false and v[2] == false
  if kind == 'concurrency' then lease = true end
  if refused == 0 then
    local base = reserved[i]
    if kind ~= 'concurrency' then base = base + used[i] end
    if base + amount > tonumber(ARGV[o + 3]) then refused = i end
  end
end
local granted = refused == 0

local expires = I(now + ttl)
local answer, slots, uses = {}, {}, {}
for i = 1, n do
  local o = 8 + 10 * (i - 1)
  local u, r, e = I(used[i]), I(granted and reserved[i] + amount or reserved[i]), I(ends[i])
  answer[i] = ARGV[o + 6] .. '"' .. u .. '","' .. r .. '","' .. e .. '"]'
  slots[i] = ARGV[o + 6] .. '"' .. starts[i] .. '","' .. e .. '","' .. ARGV[o + 8] .. starts[i]
    .. ARGV[o + 9] .. '"]'
  uses[i] = '["' .. u .. '","' .. r .. '"]'
end
local refused_by = granted and '""' or ARGV[8 + 10 * (refused - 1) + 7]
-- the record as lib.lua describes it (cjson reads it back as if it had written it)
local record = '{"s":"' .. (granted and 'held' or 'refused') .. '","q":' .. ARGV[6]
  .. ',"a":"' .. I(amount) .. '","l":' .. tostring(lease) .. ',"e":"' .. expires
  .. '","g":' .. tostring(granted) .. ',"r":' .. refused_by
  .. ',"b":[' .. table.concat(slots, ',') .. '],"u":[' .. table.concat(uses, ',')
  .. '],"m":"' .. margin .. '"}'

if granted then
  redis.call('SET', P .. 'r:' .. rid, record)
  for i = 1, n do
    redis.call('HINCRBY', keys[i], 'reserved', amount)
    if ends[i] > 0 and fresh[i] then redis.call('PEXPIREAT', keys[i], ends[i] + 1000) end
  end
  redis.call('ZADD', P .. 'exp', now + ttl, rid)
else
  redis.call('SET', P .. 'r:' .. rid, record, 'PX', ttl + tonumber(margin))
end
return '{"k":"ok","g":' .. tostring(granted) .. ',"r":' .. refused_by .. ',"e":"' .. expires
  .. '","s":[' .. table.concat(answer, ',') .. ']}'
