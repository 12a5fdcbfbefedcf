-- The history's epoch (users.stream.history), included by the stream scripts that take its key:
-- stream_epoch(key) returns it. Made with the history when absent (new, flushed, or lost with a
-- Redis that restarted empty), and made anew when this server was promoted from a replica (a
-- failover) since the epoch was last seen here: replication is asynchronous, so the new primary
-- may lack the last events, and ids of the epoch before must not be continued. A restart of the
-- same server keeps the epoch with its data (its replication id changes, but it was never
-- promoted: its second replication id is zeros).
local function stream_epoch(key)
  local info = redis.call('INFO', 'replication')
  local replid = string.match(info, 'master_replid:(%x+)')
  local replid2 = string.match(info, 'master_replid2:(%x+)')
  local stored = redis.call('HMGET', key, 'e', 'r')
  local epoch, seen = stored[1], stored[2]
  if epoch and seen == replid then return epoch end
  if epoch and (not replid2 or string.match(replid2, '^0+$')) then
    redis.call('HSET', key, 'r', replid)
    return epoch
  end
  local now = redis.call('TIME')
  epoch = string.format('%x%05x', tonumber(now[1]), tonumber(now[2]))
  redis.call('HSET', key, 'e', epoch, 'r', replid)
  return epoch
end
