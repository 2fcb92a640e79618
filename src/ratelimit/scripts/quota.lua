-- Quota over a UTC calendar period, as algo::quota. The caller computes the period with
-- spec::quota_window on its own clock, so the calendar maths lives in one place.
-- KEYS[1]: hash {e = end of the counted period (us), c = count}
-- ARGV: now (us), end of the period holding now (us), limit, cost
-- Reply: {allowed (1/0), remaining, reset (us), retry-after (us, -1 when allowed)}
local now = tonumber(ARGV[1])
local period_end = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
-- Outlives the period by this much so an instance whose clock lags still sees that another
-- one has moved on to the next period, and counts there instead of starting over.
local GRACE_MS = 60000

local count = 0
local st = redis.call('HMGET', KEYS[1], 'e', 'c')
local stored = tonumber(st[1])
if stored and now < stored then
  period_end = stored
  count = tonumber(st[2]) or 0
end
local to_end = math.max(period_end - now, 0)

if count + cost <= limit then
  count = count + cost
  redis.call('HSET', KEYS[1], 'e', string.format('%d', period_end), 'c', string.format('%d', count))
  redis.call('PEXPIRE', KEYS[1], string.format('%d', math.ceil(to_end / 1000) + GRACE_MS))
  return {1, limit - count, to_end, -1}
end
return {0, math.max(limit - count, 0), to_end, to_end}
