-- Sliding window (weighted two-window counter), as algo::sliding_window, on Redis's clock.
-- KEYS[1]: hash {w = current window number, c = its count, p = the previous window's count}
-- ARGV: window (us), limit, cost
-- Reply: {allowed (1/0), remaining, reset (us), retry-after (us, -1 when allowed)}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local len = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])

local index = math.floor(now / len)
local current, previous = 0, 0
local st = redis.call('HMGET', KEYS[1], 'w', 'c', 'p')
local stored = tonumber(st[1])
if stored then
  if stored >= index then
    index = stored
    current = tonumber(st[2]) or 0
    previous = tonumber(st[3]) or 0
  elseif stored == index - 1 then
    previous = tonumber(st[2]) or 0
  end
end
-- After a clock step back, now is before this window: count it as its start.
local elapsed = math.min(math.max(now - index * len, 0), len - 1)
local reset = len - elapsed

-- Below 2^52, products and quotients of whole numbers are exact in Lua's doubles, so
-- floor(count * rest / len) matches the integer maths of the local store.
local EXACT = 4503599627370496
local function weighted(count, rest)
  local product = count * rest
  if product < EXACT then
    return math.floor(product / len)
  end
  return math.floor(count * (rest / len))
end

-- The earliest offset into a window at which floor(count * (len - offset) / len) <= room.
local function decay_point(count, room)
  if count == 0 then
    return 0
  end
  local max_rest = math.floor(((room + 1) * len - 1) / count)
  return math.max(len - max_rest, 0)
end

local estimate = weighted(previous, len - elapsed) + current
if estimate + cost <= limit then
  current = current + cost
  redis.call('HSET', KEYS[1], 'w', string.format('%d', index),
    'c', string.format('%d', current), 'p', string.format('%d', previous))
  -- The current count still weighs on the next window.
  redis.call('PEXPIRE', KEYS[1], string.format('%d', math.ceil((reset + len) / 1000)))
  return {1, limit - estimate - cost, reset, -1}
end

local wait
if cost > limit then
  -- Never passes; point past the next window rather than at a time that will not help.
  wait = reset + len
elseif limit - cost >= current then
  wait = math.max(decay_point(previous, limit - cost - current) - elapsed, 1)
else
  -- The current count alone is too much: from the next window on it is the previous one.
  wait = reset + decay_point(current, limit - cost)
end
return {0, 0, reset, wait}
