-- The size of the history after ARGV[1] (what a resume would replay; users.stream.history):
-- {events, bytes}; {0, 0} when there is nothing to replay or the id is not in the history (the
-- client gets stream-reset). ARGV[2] is the epoch of ARGV[1]; of another epoch (KEYS[4]), {0, 0}.
--#include stream_epoch
if ARGV[2] ~= stream_epoch(KEYS[4]) then return {0, 0} end
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local last = tonumber(ARGV[1])
if last >= current then return {0, 0} end
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #first == 0 or last < tonumber(string.match(first[1][1], '^(%d+)')) - 1 then return {0, 0} end
local start = last - current + redis.call('LLEN', KEYS[3])
if start < 0 then start = 0 end
local bytes = 0
for _, size in ipairs(redis.call('LRANGE', KEYS[3], start, -1)) do
  bytes = bytes + tonumber(size)
end
return {current - last, bytes}
