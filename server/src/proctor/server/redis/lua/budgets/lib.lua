-- lib.lua: helpers shared by the budget scripts. Not a script of its own: the Redis layer
-- prepends it to reserve.lua, commit.lua, release.lua and get.lua (scripts.Script.load).
-- KEYS/ARGV: none (each script documents its own).
--
-- Key layout (P = KEYS[1], the fleet prefix "proctor:{FLEET}:"; every name below
-- starts with P, so all of one fleet's keys share the hash tag and slot):
--   P.."c:"..scope..":"..window_spec..":"..window_start_ms..":"..#id..":"..id..":"..counter
--        hash {used, reserved}; PEXPIREAT window end + 1 s (no expiry for window none).
--        counter: "" (fleet), the tenant (tenant), or #tenant..":"..tenant..":"..the agent
--        or run id (agent, run: an agent's or a run's counter is its tenant's own).
--   P.."r:"..reservation_id   string, cjson record: s state (held|committed|released|expired|
--        refused), q the request it answered (tenant, agent, run and unit, see reserve.lua),
--        a amount, l lease, e expiry ms, g granted, r refused_by, b the slots it holds, u the
--        first answer's [used, reserved] per slot, ca/cu the commit's actual and answer, m
--        the record margin; kept without expiry while held (so an expired hold is always
--        found and refunded, however long the fleet stays idle), then for the margin
--        (default 24 h) after it ends (idempotent retries)
--   P.."exp"                  sorted set: reservation ids held, scored by expiry (ms)
--   P.."marker"               the durability watch's (lua/watch/marker.lua)
-- A slot is one budget's counter for one request, an array of strings:
--   [id, unit, scope, scope_key, kind, limit, window spec, window start ms, window end ms,
--    counter key without P] (window start and end "0" for no window). Integers are kept as
-- decimal strings inside records and replies (cjson keeps 14 significant digits only).
-- A status, as every script replies it (key "s" of the reply):
--   [id, unit, scope, scope_key, kind, limit, window spec, used, reserved, window end ms]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function I(x)
  return string.format('%d', x)
end

-- days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm)
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function civil_from_days(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp + 3
  if m > 12 then m = m - 12 end
  if m <= 2 then y = y + 1 end
  return y, m
end

local SPANS = {minute = 60000, hour = 3600000, day = 86400000}

-- start and end (ms) of the window holding now; 0, 0 for none
local function window_bounds(window, span_s, now)
  if window == 'none' then return 0, 0 end
  if window == 'month' then
    local y, m = civil_from_days(math.floor(now / 86400000))
    local ny, nm = y, m + 1
    if nm == 13 then ny, nm = y + 1, 1 end
    return days_from_civil(y, m, 1) * 86400000, days_from_civil(ny, nm, 1) * 86400000
  end
  local span = SPANS[window]
  if window == 'fixed' then span = span_s * 1000 end
  local start = math.floor(now / span) * span
  return start, start + span
end

-- the slots for now of the budgets in ARGV: a JSON array of [id, unit, scope, scope_key, kind,
-- limit (string), window (none|minute|hour|day|month|fixed), fixed span (s), window spec,
-- counter key head, counter key tail] (the key: head .. window start .. tail)
local function read_slots(arg, now)
  local out = {}
  for i, d in ipairs(cjson.decode(arg)) do
    local start, wend = window_bounds(d[7], d[8], now)
    out[i] = {d[1], d[2], d[3], d[4], d[5], d[6], d[9], I(start), I(wend), d[10] .. I(start) .. d[11]}
  end
  return out
end

local function counter_key(P, s)
  if s[10] then return P .. s[10] end
  -- a record written before counters were per tenant (its slots have 9 fields)
  return P .. 'c:' .. s[3] .. ':' .. s[7] .. ':' .. s[8] .. ':' .. #s[1] .. ':' .. s[1] .. ':'
    .. s[4]
end

-- used and reserved of a slot's counter (0, 0 once its window is over)
local function counts(P, s, now)
  local wend = tonumber(s[9])
  if wend > 0 and now >= wend + 1000 then return 0, 0 end
  local v = redis.call('HMGET', counter_key(P, s), 'used', 'reserved')
  return tonumber(v[1] or '0'), tonumber(v[2] or '0')
end

-- change a counter while its window is current; a past window is left alone
local function adjust(P, s, now, used, reserved)
  local wend = tonumber(s[9])
  if wend > 0 and now >= wend then return end
  local ck = counter_key(P, s)
  if used ~= 0 then redis.call('HINCRBY', ck, 'used', used) end
  if reserved ~= 0 then redis.call('HINCRBY', ck, 'reserved', reserved) end
  if wend > 0 then redis.call('PEXPIREAT', ck, wend + 1000) end
end

-- [used, reserved] of every slot, now
local function snapshot(P, slots, now)
  local out = {}
  for i, s in ipairs(slots) do
    local used, reserved = counts(P, s, now)
    out[i] = {I(used), I(reserved)}
  end
  return out
end

-- statuses as replied (see the top of this file)
local function statuses(slots, uses)
  local out = {}
  for i, s in ipairs(slots) do
    out[i] = {s[1], s[2], s[3], s[4], s[5], s[6], s[7], uses[i][1], uses[i][2], s[9]}
  end
  return out
end

-- give back what expired reservations hold (at most 1000 per call; the rest on the next)
local function reclaim(P, now)
  local ids = redis.call('ZRANGEBYSCORE', P .. 'exp', '-inf', now, 'LIMIT', 0, 1000)
  for _, rid in ipairs(ids) do
    local rkey = P .. 'r:' .. rid
    local raw = redis.call('GET', rkey)
    if raw then
      local rec = cjson.decode(raw)
      if rec.s == 'held' and tonumber(rec.e) <= now then
        local a = tonumber(rec.a)
        for _, s in ipairs(rec.b) do adjust(P, s, now, 0, -a) end
        rec.s = 'expired'
        redis.call('SET', rkey, cjson.encode(rec), 'PX', tonumber(rec.m))
      end
    end
    redis.call('ZREM', P .. 'exp', rid)
  end
end

local function load_record(P, rid)
  local raw = redis.call('GET', P .. 'r:' .. rid)
  if not raw then return nil end
  return cjson.decode(raw)
end

-- ttl_ms nil: no expiry (a held reservation)
local function save_record(P, rid, rec, ttl_ms)
  if ttl_ms then
    redis.call('SET', P .. 'r:' .. rid, cjson.encode(rec), 'PX', ttl_ms)
  else
    redis.call('SET', P .. 'r:' .. rid, cjson.encode(rec))
  end
end

-- every script replies one JSON object {"k": kind, ...} (cheaper for the client to read
-- than nested arrays); each script's header lists its kinds and fields
local function reply(t)
  return cjson.encode(t)
end

-- END lib.lua
