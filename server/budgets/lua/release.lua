-- release.lua: refund a held reservation or free a lease; a no-op when no longer held.
-- KEYS[1]  the fleet prefix "proctor:{FLEET}:" (see reserve.lua)
-- ARGV[1]  reservation_id
-- Returns {"ok", {status...}} (the counters as they are now) or {"not_found", message}.
local P = KEYS[1]
local rid = ARGV[1]
local now = now_ms()
reclaim(P, now)

local rec = load_record(P, rid)
if not rec then return {'not_found', "no reservation '" .. rid .. "'"} end
if rec.s == 'held' then
  local a = tonumber(rec.a)
  for _, b in ipairs(rec.b) do adjust(b, now, 0, -a) end
  redis.call('ZREM', P .. 'exp', rid)
  rec.s = 'released'
  save_record(P, rid, rec, nil)
end
return {'ok', current(rec, now)}
