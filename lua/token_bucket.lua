-- Token buckets for rate limiting, checked and charged in one round trip (DESIGN §7).
--
-- KEYS[i]    one bucket per key (e.g. a user's, a client address's); a hash {tokens, at_ms}
-- ARGV[1]    now, in milliseconds (the caller's clock, so every key ages on one timeline)
-- ARGV[2i]   refill rate of bucket i, tokens per second
-- ARGV[2i+1] capacity (burst) of bucket i
--
-- All or nothing: a request is admitted only if every bucket holds a token, and then one token
-- is taken from each; a refused request takes nothing.
-- Returns {1, 0} when admitted, {0, retry_after_ms} when refused (the longest wait among the
-- empty buckets). Idle buckets expire after they would have refilled completely.

local now_ms = tonumber(ARGV[1])
local levels = {}
local retry_after_ms = 0
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[2 * i])
  local burst = tonumber(ARGV[2 * i + 1])
  local state = redis.call('HMGET', key, 'tokens', 'at_ms')
  local tokens = tonumber(state[1]) or burst
  local at_ms = tonumber(state[2]) or now_ms
  tokens = math.min(burst, tokens + math.max(0, now_ms - at_ms) * rate / 1000)
  levels[i] = tokens
  if tokens < 1 then
    retry_after_ms = math.max(retry_after_ms, math.ceil((1 - tokens) * 1000 / rate))
  end
end
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[2 * i])
  local burst = tonumber(ARGV[2 * i + 1])
  local tokens = levels[i]
  if retry_after_ms == 0 then
    tokens = tokens - 1
  end
  redis.call('HSET', key, 'tokens', tokens, 'at_ms', now_ms)
  redis.call('PEXPIRE', key, math.ceil(burst * 1000 / rate) + 1000)
end
if retry_after_ms > 0 then
  return {0, retry_after_ms}
end
return {1, 0}
