-- Settles a weight admitted on an estimate: adds a signed delta to what a fixed window
-- (mode 'f', as fixed.lua) or a quota (mode 'q', as quota.lua) counted in the current
-- window, whatever the limit; a count never goes below 0.
-- KEYS[1]: the policy's hash for the key (fixed: {w, c}; quota: {e, c})
-- ARGV: mode, window (us; fixed) or end of the period holding now (us; quota), now (us;
-- quota), delta
-- Reply: the count after the change.
local mode = ARGV[1]
local delta = tonumber(ARGV[4])
local GRACE_MS = 60000
local st
if mode == 'f' then
  st = redis.call('HMGET', KEYS[1], 'w', 'c')
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local len = tonumber(ARGV[2])
  local index = math.floor(now / len)
  local count = 0
  local stored = tonumber(st[1])
  if stored and stored >= index then
    index = stored
    count = tonumber(st[2]) or 0
  end
  count = math.max(count + delta, 0)
  local to_end = (index + 1) * len - now
  redis.call('HSET', KEYS[1], 'w', string.format('%d', index), 'c', string.format('%d', count))
  redis.call('PEXPIRE', KEYS[1], string.format('%d', math.ceil(to_end / 1000)))
  return count
end
local period_end = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
st = redis.call('HMGET', KEYS[1], 'e', 'c')
local count = 0
local stored = tonumber(st[1])
if stored and now < stored then
  period_end = stored
  count = tonumber(st[2]) or 0
end
count = math.max(count + delta, 0)
local to_end = math.max(period_end - now, 0)
redis.call('HSET', KEYS[1], 'e', string.format('%d', period_end), 'c', string.format('%d', count))
redis.call('PEXPIRE', KEYS[1], string.format('%d', math.ceil(to_end / 1000) + GRACE_MS))
return count
