-- Renew a stream's slot (users.stream.slots), on server time. KEYS[1]: the client's slots.
-- ARGV: the stream's id, the slot's lifetime in seconds.
local now = tonumber(redis.call('TIME')[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
