-- Take one of a client's stream slots (users.stream.slots): returns 1 when the stream got a
-- place. Server time, so web hosts' clocks need not agree. KEYS[1]: the client's slots. ARGV:
-- the stream's id, the client's limit, the slot's lifetime in seconds.
local now = tonumber(redis.call('TIME')[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
