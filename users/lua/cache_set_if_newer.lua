-- Set each user only if the cached version is not newer (users.cache.cache_users_if_newer).
-- ARGV: ttl in ms (0 = none), key prefix, then an id and its stored value ("<version>|<json>")
-- per user. One argument per value rather than values joined into one string: splitting that
-- string in Lua cost Redis more than the SETs. Keys are built here: a single Redis node.
local ttl, prefix = tonumber(ARGV[1]), ARGV[2]
local find, sub, match, call = string.find, string.sub, string.match, redis.call
local count = 0
for i = 3, #ARGV, 2 do
  local key, value = prefix .. ARGV[i], ARGV[i + 1]
  local current = match(call('GETRANGE', key, 0, 20), '^(%d+)|')
  local version = sub(value, 1, find(value, "|", 1, true) - 1)
  if (not current) or tonumber(current) <= tonumber(version) then
    if ttl > 0 then call('SET', key, value, 'PX', ttl) else call('SET', key, value) end
    count = count + 1
  end
end
return count
