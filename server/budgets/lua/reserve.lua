-- reserve.lua: reserve ARGV amount against every budget given, all or nothing.
-- KEYS[1]  the fleet prefix "proctor:{FLEET}:" (names no key itself; routes the call to the
--          fleet's slot; every key touched is derived from it, so all share its hash tag)
-- ARGV[1]  reservation_id      ARGV[2] unit       ARGV[3] amount      ARGV[4] ttl (ms)
-- ARGV[5]  record margin (ms): how long the record outlives the reservation (idempotency)
-- ARGV[6]  the budgets in policy order, a JSON array of
--          [id, unit, scope, scope_key, kind (spend|concurrency), limit (string),
--           window (none|minute|hour|day|month|fixed), fixed span (s), window spec]
-- Returns, for a new reservation (granted or refused), a compact text the store reads in
-- the order of ARGV[6]: "F,GRANTED(1|0),REFUSING(index in ARGV[6], 1-based; 0: none),
-- EXPIRES_AT_MS" then "USED,RESERVED,WINDOW_END_MS" per budget ("0": no window).
-- For an id seen before: the first answer as JSON {"g": granted, "r": refused_by,
-- "e": expires_at ms, "s": [status...]} where a status is [id, unit, scope, scope_key, kind,
-- limit, used, reserved, window spec, window end ms ("0": none)]; a held lease is renewed
-- (new expiry) first. Integers are decimal strings throughout.
local P = KEYS[1]
local rid, amount, ttl, margin = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local now = now_ms()
reclaim(P, now)

local rec = load_record(P, rid)
if rec then
  if rec.l and rec.s == 'held' then
    rec.e = I(now + ttl)
    redis.call('ZADD', P .. 'exp', now + ttl, rid)
    save_record(P, rid, rec, nil)
  end
  return reply({g = rec.g, r = rec.r, e = rec.e, s = statuses(rec.b, rec.u)})
end

-- Every slot's counter is read once: the counts decide, and (plus the amount when granted)
-- they are the answer, since nothing else runs between here and the end of the script. The
-- slots are of the window holding now, so the window checks of counts() and adjust() are
-- always passed here and are left out.
local slots, lease, refused, uses, keys = read_slots(ARGV[6], now), false, 0, {}, {}
for i, s in ipairs(slots) do
  if s[5] == 'concurrency' then lease = true end
  local ck = counter_key(P, s)
  local v = redis.call('HMGET', ck, 'used', 'reserved')
  local used, reserved = tonumber(v[1] or '0'), tonumber(v[2] or '0')
  keys[i] = ck
  -- a counter that exists already got its expiry (window end + 1 s) when it was created
  uses[i] = {used, reserved, v[1] == false and v[2] == false}
  if refused == 0 then
    local base = reserved
    if s[5] ~= 'concurrency' then base = used + reserved end
    if base + amount > tonumber(s[6]) then refused = i end
  end
end

local granted = refused == 0
if granted then
  for i, s in ipairs(slots) do
    local wend = tonumber(s[9])
    redis.call('HINCRBY', keys[i], 'reserved', amount)
    if wend > 0 and uses[i][3] then redis.call('PEXPIREAT', keys[i], wend + 1000) end
    uses[i][2] = uses[i][2] + amount
  end
  redis.call('ZADD', P .. 'exp', now + ttl, rid)
end
local answer = {}
for i, u in ipairs(uses) do
  uses[i] = {I(u[1]), I(u[2])}
  answer[i] = uses[i][1] .. ',' .. uses[i][2] .. ',' .. slots[i][9]
end
rec = {
  s = granted and 'held' or 'refused', a = I(amount), l = lease, e = I(now + ttl),
  g = granted, r = granted and '' or slots[refused][1], b = slots, u = uses, m = I(margin),
}
if granted then
  save_record(P, rid, rec, nil)
else
  save_record(P, rid, rec, ttl + margin)
end
-- a new reservation's answer as text: the store knows the budgets it sent (ARGV[6])
return 'F,' .. (granted and '1,' or '0,') .. refused .. ',' .. rec.e .. ',' .. table.concat(answer, ',')
