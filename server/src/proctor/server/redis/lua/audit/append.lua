-- Append one writer's sealed audit events to the stream, exactly once.
--
-- KEYS[1]  the audit stream
-- KEYS[2]  the writer-head hash (field: writer, value: "<seq>:<hash>"), same slot as KEYS[1]
-- ARGV[1]  the writer
-- ARGV[2]  MAXLEN (approximate trimming, once a call)
-- ARGV[3]  the seq of the first event
-- ARGV[4]  the writer's head after the last event: "<seq>:<hash>"
-- ARGV[5..] the stored event lines, their seqs consecutive from ARGV[3]
--
-- Events whose seq is not above the writer's head are already in the stream (a
-- batch whose reply was lost, or a spool replay cut short) and are skipped, so a
-- retry never adds an event twice. Returns the number of events appended.
--
-- One argument an event, and one XTRIM a call rather than MAXLEN on every XADD: with
-- (seq, hash, line) an event and MAXLEN each time, Redis spent 6.4 us of CPU an event
-- (5.1 inside the script); this way, 4.2 (3.4). benchmarks/lua_bench.py, "append".

local head = redis.call('HGET', KEYS[2], ARGV[1])
local last = 0
if head then
  last = tonumber(string.match(head, '^(%d+)')) or 0
end
local skip = last - tonumber(ARGV[3]) + 1
if skip < 0 then
  skip = 0
end
local stream = KEYS[1]
local added = 0
for i = 5 + skip, #ARGV do
  redis.call('XADD', stream, '*', 'event', ARGV[i])
  added = added + 1
end
if added > 0 then
  redis.call('XTRIM', stream, 'MAXLEN', '~', ARGV[2])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
end
return added
