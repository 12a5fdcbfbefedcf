-- The hot read in one round trip (users.cache.afast_read): the user's cached entry, the
-- token's cached principal (KEYS[2]; '' for an anonymous client) and a hit on the client's
-- rate-limit window. An account's window key needs the account id, which only the cached
-- principal holds, hence a script rather than a pipeline. ARGV: anonymous window key ('' = no
-- limit), account window prefix and suffix ('' = no limit), anonymous and account window lengths
-- in seconds.
local user = redis.call('GET', KEYS[1])
local principal, counter, ttl = false, ARGV[1], ARGV[4]
if KEYS[2] ~= '' then
  principal = redis.call('GET', KEYS[2])
  counter, ttl = '', ARGV[5]
  if principal and ARGV[2] ~= '' then
    counter = ARGV[2] .. string.match(principal, '^(%d+)') .. ARGV[3]
  end
end
local count = false
if counter ~= '' then
  count = redis.call('INCR', counter)
  if count == 1 then redis.call('EXPIRE', counter, tonumber(ttl)) end
end
return {user, principal, count}
