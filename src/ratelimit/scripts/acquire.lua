-- Concurrency: takes a lease if fewer than max are held, on Redis's clock.
-- KEYS[1]: sorted set of lease ids scored by their expiry (us); a lease that was never
-- released (crashed gateway) stops counting when it expires.
-- ARGV: max, lease ttl (us), lease id ('' only asks whether a lease is free)
-- Reply: {taken or free (1/0), leases left after it}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local max = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now))
local held = redis.call('ZCARD', KEYS[1])
if held >= max then
  return {0, 0}
end
if ARGV[3] == '' then
  return {1, max - held}
end
redis.call('ZADD', KEYS[1], string.format('%d', now + ttl), ARGV[3])
-- Every lease in the set expires within ttl of the newest one.
redis.call('PEXPIRE', KEYS[1], string.format('%d', math.ceil(ttl / 1000)))
return {1, max - held - 1}
