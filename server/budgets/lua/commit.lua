-- commit.lua: settle a spend reservation at its actual amount (refunding what it held).
-- KEYS[1]  the fleet prefix "proctor:{FLEET}:" (see reserve.lua)
-- ARGV[1]  reservation_id      ARGV[2] actual (>= 0)
-- Returns {"ok", {status...}} (the first commit's answer on a retry with the same actual),
-- {"not_found", message} or {"precondition", message}.
local P = KEYS[1]
local rid, actual = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
reclaim(P, now)

local rec = load_record(P, rid)
if not rec then return {'not_found', "no reservation '" .. rid .. "'"} end
if rec.s == 'refused' then return {'precondition', "reservation '" .. rid .. "' was refused"} end
if rec.l then
  return {'precondition', "reservation '" .. rid .. "' is a concurrency lease: release it"}
end
if rec.s == 'released' then
  return {'precondition', "reservation '" .. rid .. "' was released"}
end
if rec.s == 'committed' then
  if tonumber(rec.ca) ~= actual then
    return {'precondition',
      "reservation '" .. rid .. "' was already committed with actual " .. rec.ca}
  end
  return {'ok', rec.cans}
end
local refund = 0
if rec.s == 'held' then refund = tonumber(rec.a) end
for _, b in ipairs(rec.b) do adjust(b, now, actual, -refund) end
redis.call('ZREM', P .. 'exp', rid)
rec.s = 'committed'
rec.ca = I(actual)
rec.cans = current(rec, now)
save_record(P, rid, rec, nil)
return {'ok', rec.cans}
