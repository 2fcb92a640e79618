-- Fixed window, as algo::fixed_window, on Redis's clock.
-- KEYS[1]: hash {w = window number (now / window), c = count in it}
-- ARGV: window (us), limit, cost
-- Reply: {allowed (1/0), remaining, reset (us), retry-after (us, -1 when allowed)}
-- Numbers written back go through '%d': Lua's default conversion keeps only 14 digits.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local len = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])

local index = math.floor(now / len)
local count = 0
local st = redis.call('HMGET', KEYS[1], 'w', 'c')
local stored = tonumber(st[1])
if stored and stored >= index then
  -- A window already counted is never reopened, even if the clock stepped back.
  index = stored
  count = tonumber(st[2]) or 0
end
local to_end = (index + 1) * len - now

if count + cost <= limit then
  count = count + cost
  redis.call('HSET', KEYS[1], 'w', string.format('%d', index), 'c', string.format('%d', count))
  redis.call('PEXPIRE', KEYS[1], string.format('%d', math.ceil(to_end / 1000)))
  return {1, limit - count, to_end, -1}
end
return {0, math.max(limit - count, 0), to_end, to_end}
