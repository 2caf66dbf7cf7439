-- lib.lua: helpers shared by the budget scripts. Not a script of its own: the store
-- prepends it to reserve.lua, commit.lua, release.lua and get.lua before SCRIPT LOAD.
-- KEYS/ARGV: none (each script documents its own).
--
-- Key layout (P = KEYS[1], the fleet prefix "proctor:{FLEET}:"; every name below
-- starts with P, so all of one fleet's keys share the hash tag and slot):
--   P.."c:"..scope..":"..window_spec..":"..window_start_ms..":"..#id..":"..id..":"..scope_key
--        hash {used, reserved}; PEXPIREAT window end + 1 s (no expiry for window none)
--   P.."r:"..reservation_id   string, cjson record (state, amount, lease, expiry, the
--        counters it holds and the first answer); kept until expiry + 24 h
--   P.."exp"                  sorted set: reservation ids held, scored by expiry (ms)
-- Integers are kept as decimal strings inside records (cjson keeps 14 digits only).

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

-- a budget definition from ARGV, BUDGET_FIELDS (9) fields from position i
local function read_budget(i)
  return {
    id = ARGV[i], unit = ARGV[i + 1], scope = ARGV[i + 2], key = ARGV[i + 3],
    kind = ARGV[i + 4], limit = ARGV[i + 5], win = ARGV[i + 6], span = tonumber(ARGV[i + 7]),
    spec = ARGV[i + 8],
  }
end
local BUDGET_FIELDS = 9

-- resolve a budget to its counter for now: sets b.ck (key) and b.we (window end, string)
local function place(P, b, now)
  local start, wend = window_bounds(b.win, b.span, now)
  b.ck = P .. 'c:' .. b.scope .. ':' .. b.spec .. ':' .. I(start) .. ':' .. #b.id .. ':'
    .. b.id .. ':' .. b.key
  b.we = I(wend)
  return b
end

local function counts(b)
  local v = redis.call('HMGET', b.ck, 'used', 'reserved')
  return tonumber(v[1] or '0'), tonumber(v[2] or '0')
end

-- change a counter while its window is current; a past window is left alone
local function adjust(b, now, used, reserved)
  local wend = tonumber(b.we)
  if wend > 0 and now >= wend then return end
  if used ~= 0 then redis.call('HINCRBY', b.ck, 'used', used) end
  if reserved ~= 0 then redis.call('HINCRBY', b.ck, 'reserved', reserved) end
  if wend > 0 then redis.call('PEXPIREAT', b.ck, wend + 1000) end
end

-- a status as returned to the store: {id, unit, scope, key, kind, limit, used, reserved, spec, wend}
local function status(b, now)
  local used, reserved = 0, 0
  local wend = tonumber(b.we)
  if wend == 0 or now < wend + 1000 then used, reserved = counts(b) end
  return {b.id, b.unit, b.scope, b.key, b.kind, b.limit, I(used), I(reserved), b.spec, b.we}
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
        for _, b in ipairs(rec.b) do adjust(b, now, 0, -a) end
        rec.s = 'expired'
        redis.call('SET', rkey, cjson.encode(rec), 'KEEPTTL')
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

local function save_record(P, rid, rec, ttl_ms)
  if ttl_ms then
    redis.call('SET', P .. 'r:' .. rid, cjson.encode(rec), 'PX', ttl_ms)
  else
    redis.call('SET', P .. 'r:' .. rid, cjson.encode(rec), 'KEEPTTL')
  end
end

local function current(rec, now)
  local out = {}
  for i, b in ipairs(rec.b) do out[i] = status(b, now) end
  return out
end

-- END lib.lua
