-- marker.lua: which run of Redis holds Proctor's data, and whether that data survived.
-- KEYS[1]  the marker of one store's keys: "PREFIX marker", in the same hash tag (so on a
--          Redis Cluster the script runs on the node that holds that store's data)
-- ARGV     none
-- The marker holds the run id of the Redis it was first written under and is never
-- rewritten while it exists. A restart that kept the data keeps the marker (its run id
-- then differs from the node's new one); a restart that lost it loses the marker too.
-- Returns one text: "RUN_ID,MARKED_UNDER,WRITTEN" where RUN_ID is the node's run id now,
-- MARKED_UNDER the run id the marker holds, WRITTEN "1" when this call wrote the marker
-- (it was missing) and "0" otherwise.
local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)') or ''
local marked = redis.call('GET', KEYS[1])
if marked then
  return run_id .. ',' .. marked .. ',0'
end
redis.call('SET', KEYS[1], run_id)
return run_id .. ',' .. run_id .. ',1'
