-- release.lua: refund a held reservation or free a lease; a no-op when no longer held.
-- KEYS[1]  the fleet prefix "proctor:{FLEET}:" (see reserve.lua)
-- ARGV[1]  reservation_id
-- Replies one JSON object: {"k": "ok", "s": [status...]} (the counters as they are now;
-- statuses as lib.lua describes them) or {"k": "not_found", "m": message}.
-- ARGV[2..]  the caller's tenants, each as #tenant..":"..tenant (none: any tenant): a
--          reservation of another tenant answers not_found, as if it did not exist
local function owned(rec)
  if #ARGV < 2 then return true end
  for i = 2, #ARGV do
    local p = ARGV[i]
    if string.sub(rec.q, 1, #p) == p then return true end
  end
  return false
end
local P = KEYS[1]
local rid = ARGV[1]
local now = now_ms()
reclaim(P, now)

local rec = load_record(P, rid)
if not rec or not owned(rec) then return reply({k = 'not_found', m = "no reservation '" .. rid .. "'"}) end
if rec.s == 'held' then
  local a = tonumber(rec.a)
  for _, s in ipairs(rec.b) do adjust(P, s, now, 0, -a) end
  redis.call('ZREM', P .. 'exp', rid)
  rec.s = 'released'
  save_record(P, rid, rec, tonumber(rec.m))
end
return reply({k = 'ok', s = statuses(rec.b, snapshot(P, rec.b, now))})
