-- list.lua: approvals newest first, filtered.
-- KEYS[1]  the prefix (lib.lua)
-- ARGV[1]  status ('' : any)   ARGV[2] approver group ('' : any)   ARGV[3] tenant ('' : any)
-- ARGV[4]  limit               ARGV[5] how many ids to scan at most
-- An approver filter keeps approvals that group may resolve: those naming it, and those
-- with no approvers (a default require_approval: anyone may resolve it).
-- Replies one JSON object: {k = "ok", l = records, x = expired}.
local status, approver, tenant = ARGV[1], ARGV[2], ARGV[3]
local limit, scan_max = tonumber(ARGV[4]), tonumber(ARGV[5])
local now = now_ms()
local x = sweep(now)
local out = {}
local gone = {}
local start = 0
local CHUNK = 200
while #out < limit and start < scan_max do
  local ids = redis.call('ZREVRANGE', P .. 'all', start, start + CHUNK - 1)
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    local r = load(id)
    if not r then
      gone[#gone + 1] = id
    elseif (status == '' or r.st == status) and (tenant == '' or r.t == tenant) then
      local ok = approver == ''
      if not ok then
        local ap = cjson.decode(r.ap)
        ok = #ap == 0
        for _, g in ipairs(ap) do
          if g == approver then ok = true end
        end
      end
      if ok then
        out[#out + 1] = r
        if #out >= limit then break end
      end
    end
  end
  start = start + CHUNK
end
for _, id in ipairs(gone) do redis.call('ZREM', P .. 'all', id) end
return reply({k = 'ok', l = out, x = x})
