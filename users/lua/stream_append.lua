-- Append an event to the stream's history (users.stream.history): id allocation, append and
-- trimming in one atomic step. Ids are consecutive, and an event with a smaller id is always
-- already in the history when a larger one is published. The history keeps at most ARGV[3]
-- events and ARGV[4] bytes of data (an ingest batch event is ~1 MB), always at least the newest
-- event; KEYS[3] lists the sizes of the kept events, KEYS[4] holds their sum. ARGV[5], for a
-- user.deleted event, is the user's id: its tombstone (KEYS[5]) is scored by this event's id;
-- tombstones no kept event is older than are trimmed with the history. KEYS[6] holds the
-- history's epoch, stored with each event: returns {id, epoch}.
--#include stream_epoch
local epoch = stream_epoch(KEYS[6])
local id = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], id .. '-0', 't', ARGV[1], 'd', ARGV[2], 'e', epoch)
local kept = redis.call('RPUSH', KEYS[3], #ARGV[2])
local bytes = redis.call('INCRBY', KEYS[4], #ARGV[2])
if ARGV[5] ~= '' then redis.call('ZADD', KEYS[5], id, ARGV[5]) end
local max_events, max_bytes = tonumber(ARGV[3]), tonumber(ARGV[4])
local drop = 0
while kept - drop > 1 and (kept - drop > max_events or bytes > max_bytes) do
  bytes = bytes - tonumber(redis.call('LINDEX', KEYS[3], drop))
  drop = drop + 1
end
if drop > 0 then
  local oldest = id - (kept - drop) + 1
  redis.call('LTRIM', KEYS[3], drop, -1)
  redis.call('SET', KEYS[4], bytes)
  redis.call('XTRIM', KEYS[2], 'MINID', oldest .. '-0')
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', oldest)
end
return {id, epoch}
