-- GCRA on one bucket, in one round trip. Times in microseconds (Lua numbers
-- are doubles: microseconds since the epoch fit their 53-bit mantissa,
-- nanoseconds would not).
--
-- KEYS[1]  the bucket
-- ARGV[1]  emission interval T (us)
-- ARGV[2]  tolerance B*T (us)
-- ARGV[3]  cost
-- ARGV[4]  max wait (us)
-- ARGV[5]  now (us), or "" to use the server's clock (the default: never
--          the replicas' clocks)
--
-- Returns {allowed, wait_us, ahead_us, impossible}: the same verdict as the
-- in-memory store. The key expires when its bucket has refilled, so Redis
-- memory tracks active keys only.
local t = tonumber(ARGV[1])
local tol = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local max_wait = tonumber(ARGV[4])
local now
if ARGV[5] == "" then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
else
  now = tonumber(ARGV[5])
end
local tat = tonumber(redis.call('GET', KEYS[1]) or "0")
local base = math.max(tat, now)
if cost * t > tol then
  return {0, 0, base - now, 1}
end
local new_tat = base + cost * t
local ahead = new_tat - now
local wait = 0
if ahead > tol then
  wait = ahead - tol
  if wait > max_wait then
    return {0, wait, base - now, 0}
  end
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil(ahead / 1000) + 1)
return {1, wait, ahead, 0}
