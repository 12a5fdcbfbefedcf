-- Drop the lease of a read that found no row (users.cache.user_fill_lease_release).
-- KEYS[1]: the user's key. ARGV[1]: the lease.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
