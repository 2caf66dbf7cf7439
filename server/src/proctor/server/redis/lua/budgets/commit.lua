-- commit.lua: settle a spend reservation at its actual amount (refunding what it held).
-- KEYS[1]  the fleet prefix "proctor:{FLEET}:" (see reserve.lua)
-- ARGV[1]  reservation_id      ARGV[2] actual (>= 0)
-- Replies one JSON object: {"k": "ok", "s": [status...]} (statuses as lib.lua describes
-- them; the first commit's answer on a retry with the same actual), or
-- {"k": "not_found"|"precondition", "m": message}.
-- ARGV[3..]  the caller's tenants, each as #tenant..":"..tenant (none: any tenant): a
--          reservation of another tenant answers not_found, as if it did not exist
local function owned(rec)
  if #ARGV < 3 then return true end
  for i = 3, #ARGV do
    local p = ARGV[i]
    if string.sub(rec.q, 1, #p) == p then return true end
  end
  return false
end
local P = KEYS[1]
local rid, actual = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
reclaim(P, now)

local rec = load_record(P, rid)
if not rec or not owned(rec) then return reply({k = 'not_found', m = "no reservation '" .. rid .. "'"}) end
local function refuse(why)
  return reply({k = 'precondition', m = "reservation '" .. rid .. "' " .. why})
end
if rec.s == 'refused' then return refuse('was refused') end
if rec.l then return refuse('is a concurrency lease: release it') end
if rec.s == 'released' then return refuse('was released') end
if rec.s == 'committed' then
  if tonumber(rec.ca) ~= actual then
    return refuse('was already committed with actual ' .. rec.ca)
  end
  return reply({k = 'ok', s = statuses(rec.b, rec.cu)})
end
local refund = 0
if rec.s == 'held' then refund = tonumber(rec.a) end
for _, s in ipairs(rec.b) do adjust(P, s, now, actual, -refund) end
redis.call('ZREM', P .. 'exp', rid)
rec.s = 'committed'
rec.ca = I(actual)
rec.cu = snapshot(P, rec.b, now)
save_record(P, rid, rec, tonumber(rec.m))
return reply({k = 'ok', s = statuses(rec.b, rec.cu)})
