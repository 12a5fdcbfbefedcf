"""The stream's Lua scripts, run by Redis so each step is atomic: the history's append, read and
sizing (users.stream.history), and the per-client stream slots (users.stream.slots)."""

# Id allocation, append and trimming in one atomic step: ids are consecutive, and an event with a
# smaller id is always already in the history when a larger one is published. The history keeps
# at most ARGV[3] events and ARGV[4] bytes of data (an ingest batch event is ~1 MB), always at
# least the newest event; KEYS[3] lists the sizes of the kept events, KEYS[4] holds their sum.
# ARGV[5], for a user.deleted event, is the user's id: its tombstone (KEYS[5]) is scored by this
# event's id; tombstones no kept event is older than are trimmed with the history.
APPEND = """
local id = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], id .. '-0', 't', ARGV[1], 'd', ARGV[2])
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
return id
"""
# One step of a replay after ARGV[1]: as many events as fit in ARGV[3] bytes (at least one, at
# most ARGV[2]), chosen from the sizes list before any event is loaded; with ARGV[4] = '1' also
# the size of the whole backlog. Returns {current_id, status, backlog events, backlog bytes,
# entries, tombstones newer than the first entry}: status 0 = ok, 1 = up to date, 2 = id from
# the future (history lost, e.g. Redis flushed), 3 = expired (trimmed out of the history).
READ = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local last = tonumber(ARGV[1])
if last == current then return {current, 1} end
if last > current then return {current, 2} end
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
local oldest = current + 1
if #first > 0 then oldest = tonumber(string.match(first[1][1], '^(%d+)')) end
if last < oldest - 1 then return {current, 3} end
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
return {current, 0, current - last, backlog, entries, tombstones}
"""

# The size of the history after ARGV[1] (what a resume would replay): {events, bytes}; {0, 0}
# when there is nothing to replay or the id is not in the history (the client gets stream-reset).
BACKLOG = """
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
"""

# Per-client stream slots: server time, so web hosts' clocks need not agree. SLOT_TAKE returns 1
# when the stream got a place.
SLOT_TAKE = """
local now = tonumber(redis.call('TIME')[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""
SLOT_RENEW = """
local now = tonumber(redis.call('TIME')[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""
