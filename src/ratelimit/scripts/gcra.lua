-- Token bucket as GCRA, as algo::token_bucket, on Redis's clock.
-- Times are kept in units of 1/r us, where the emission interval is the whole number T:
-- exact at any rate, a million per second included.
-- KEYS[1]: hash {ts = us when written, x = tat - ts (units), r = the unit of x}
-- ARGV: T (period us / g), r (rate / g), burst, cost; g = gcd(period us, rate)
-- Reply: {allowed (1/0), remaining, reset (us), retry-after (us, -1 when allowed)}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local r = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local tolerance = interval * burst

-- held = max(tat, now) - now
local held = 0
local st = redis.call('HMGET', KEYS[1], 'ts', 'x', 'r')
local ts = tonumber(st[1])
if ts then
  local x = tonumber(st[2]) or 0
  local unit = tonumber(st[3]) or r
  if unit ~= r then
    -- The rate or period changed with a reload: convert to the new unit.
    x = math.floor(x * r / unit)
  end
  held = math.max(x - (now - ts) * r, 0)
end

local ahead = held + interval * cost
if ahead <= tolerance then
  redis.call('HSET', KEYS[1], 'ts', string.format('%d', now),
    'x', string.format('%d', ahead), 'r', string.format('%d', r))
  -- Once tat has passed, the bucket is full again and the key says nothing.
  redis.call('PEXPIRE', KEYS[1], string.format('%d', math.max(math.ceil(ahead / (r * 1000)), 1)))
  return {1, math.floor((tolerance - ahead) / interval), math.ceil(ahead / r), -1}
end
return {0, math.floor(math.max(tolerance - held, 0) / interval), math.ceil(held / r),
  math.ceil((ahead - tolerance) / r)}
