-- One step of a replay after ARGV[1] (users.stream.history): as many events as fit in ARGV[3]
-- bytes (at least one, at most ARGV[2]), chosen from the sizes list before any event is loaded;
-- with ARGV[4] = '1' also the size of the whole backlog. Returns {current_id, status, backlog
-- events, backlog bytes, entries, tombstones newer than the first entry}: status 0 = ok, 1 = up
-- to date, 2 = id from the future or of another epoch (history lost: Redis flushed, or a
-- failover), 3 = expired (trimmed out of the history). The history's epoch (KEYS[5]) comes
-- third: {current_id, status, epoch, ...}; ARGV[5] is the epoch of ARGV[1] ('*': the history's).
--#include stream_epoch
local epoch = stream_epoch(KEYS[5])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local last = tonumber(ARGV[1])
if ARGV[5] ~= '*' and ARGV[5] ~= epoch then return {current, 2, epoch} end
if last == current then return {current, 1, epoch} end
if last > current then return {current, 2, epoch} end
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
local oldest = current + 1
if #first > 0 then oldest = tonumber(string.match(first[1][1], '^(%d+)')) end
if last < oldest - 1 then return {current, 3, epoch} end
local start = last - current + redis.call('LLEN', KEYS[3])
if start < 0 then start = 0 end
local backlog = 0
if ARGV[4] == '1' then
  for _, size in ipairs(redis.call('LRANGE', KEYS[3], start, -1)) do
    backlog = backlog + tonumber(size)
  end
end
local budget, used, want = tonumber(ARGV[3]), 0, 0
for _, size in ipairs(redis.call('LRANGE', KEYS[3], start, start + tonumber(ARGV[2]) - 1)) do
  size = tonumber(size)
  if want > 0 and used + size > budget then break end
  used = used + size
  want = want + 1
end
if want == 0 then want = 1 end
local entries = redis.call('XRANGE', KEYS[2], '(' .. last .. '-0', '+', 'COUNT', want)
local tombstones = {}
if #entries > 0 then
  local first_id = string.match(entries[1][1], '^(%d+)')
  tombstones = redis.call('ZRANGEBYSCORE', KEYS[4], '(' .. first_id, '+inf', 'WITHSCORES')
end
return {current, 0, epoch, current - last, backlog, entries, tombstones}
