-- Append one writer's sealed audit events to the stream, exactly once.
--
-- KEYS[1]  the audit stream
-- KEYS[2]  the writer-head hash (field: writer, value: "<seq>:<hash>"), same slot as KEYS[1]
-- ARGV[1]  the writer
-- ARGV[2]  MAXLEN for XADD (approximate trimming)
-- ARGV[3..] triples in ascending seq: seq, hash, the stored event line
--
-- Events whose seq is not above the writer's head are already in the stream (a
-- batch whose reply was lost, or a spool replay cut short) and are skipped, so a
-- retry never adds an event twice. Returns the number of events appended.

local head = redis.call('HGET', KEYS[2], ARGV[1])
local last = 0
if head then
  last = tonumber(string.match(head, '^(%d+)')) or 0
end
local added = 0
local top = nil
for i = 3, #ARGV, 3 do
  local seq = tonumber(ARGV[i])
  if seq > last then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'event', ARGV[i + 2])
    last = seq
    top = i
    added = added + 1
  end
end
if top then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[top] .. ':' .. ARGV[top + 1])
end
return added
