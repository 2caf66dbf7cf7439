-- reserve.lua: reserve ARGV amount against every budget given, all or nothing.
-- KEYS[1]  the fleet prefix "proctor:{FLEET}:" (names no key itself; routes the call to the
--          fleet's slot; every key touched is derived from it, so all share its hash tag)
-- ARGV[1]  reservation_id      ARGV[2] unit       ARGV[3] amount      ARGV[4] ttl (ms)
-- ARGV[5]  record margin (ms): how long the record outlives the expiry (idempotency)
-- ARGV[6]  n, the number of budgets, then n x 9 fields in policy order:
--          id, unit, scope, scope_key, kind (spend|concurrency), limit,
--          window (none|minute|hour|day|month|fixed), fixed span (s), window spec
-- Returns {"ok", granted (0|1), refused_by, expires_at_ms, {status...}} where a status is
-- {id, unit, scope, scope_key, kind, limit, used, reserved, window spec, window end ms (0: none)}.
-- The same id again returns the first answer; a held lease is renewed (new expiry) instead.
local P = KEYS[1]
local rid, amount, ttl, margin = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local n = tonumber(ARGV[6])
local now = now_ms()
reclaim(P, now)

local rec = load_record(P, rid)
if rec then
  if rec.l and rec.s == 'held' then
    rec.e = I(now + ttl)
    redis.call('ZADD', P .. 'exp', now + ttl, rid)
    save_record(P, rid, rec, ttl + margin)
  end
  return {'ok', rec.g and 1 or 0, rec.r, tonumber(rec.e), rec.ans}
end

local budgets, lease, refused_by = {}, false, ''
for i = 1, n do
  local b = place(P, read_budget(7 + (i - 1) * BUDGET_FIELDS), now)
  budgets[i] = b
  if b.kind == 'concurrency' then lease = true end
  if refused_by == '' then
    local used, reserved = counts(b)
    local base = reserved
    if b.kind ~= 'concurrency' then base = used + reserved end
    if base + amount > tonumber(b.limit) then refused_by = b.id end
  end
end

if refused_by == '' then
  for _, b in ipairs(budgets) do adjust(b, now, 0, amount) end
  redis.call('ZADD', P .. 'exp', now + ttl, rid)
end
local ans = {}
for i, b in ipairs(budgets) do ans[i] = status(b, now) end
rec = {
  s = (refused_by == '') and 'held' or 'refused', a = I(amount), l = lease, e = I(now + ttl),
  g = (refused_by == ''), r = refused_by, b = budgets, ans = ans,
}
save_record(P, rid, rec, ttl + margin)
return {'ok', rec.g and 1 or 0, refused_by, now + ttl, ans}
