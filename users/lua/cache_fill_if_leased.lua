-- Fill a missing user's entry if the reader's lease is still there (users.cache.cache_user_fill).
-- KEYS[1]: the user's key. ARGV: the lease, the entry to store, its ttl in ms (0 = none).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[3] ~= '0' then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return 1
