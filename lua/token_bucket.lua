-- Token buckets for rate limiting: a batch of requests checked and charged in one round trip
-- (DESIGN §7, router/ratelimit.py).
--
-- KEYS       m buckets per request, request after request: request j (from 1) owns
--            KEYS[(j-1)*m + 1 .. j*m]; bucket i of every request has the same limits. Each key is
--            a hash {tokens, at_ms}. A key may occur in several requests of the batch.
-- ARGV[1]    now, in milliseconds (the caller's clock, so every key ages on one timeline)
-- ARGV[2]    m, buckets per request (>= 1; #KEYS must be a multiple of it)
-- ARGV[2i+1] refill rate of bucket i, tokens per second (> 0)
-- ARGV[2i+2] capacity (burst) of bucket i
--
-- Returns one integer per request, in order: 0 when admitted, else the wait in milliseconds
-- (>= 1) until it would be: the longest wait among its empty buckets.
--
-- Each request is all or nothing: admitted only if every one of its buckets holds a token, and
-- then one token is taken from each; a refused request takes nothing. The requests are charged
-- in order, each exactly as if it were its own call of the one-request script at the same `now`:
-- a bucket is read from Redis once, carried in a Lua table from request to request (the same
-- refill, clamp and charge arithmetic on the same doubles; Redis stores a number with "%.17g",
-- which reads back as the same double), and written once at the end with the TTL of its last use.
-- So several requests of one buyer in a batch are each charged; batching changes no answer.
-- Idle buckets expire after they would have refilled completely (plus a second): the number of
-- keys is bounded by the buyers and addresses seen in the last few seconds.

local now_ms = tonumber(ARGV[1])
local per_request = tonumber(ARGV[2])
if per_request == nil or per_request < 1 or #KEYS % per_request ~= 0 then
  return redis.error_reply('token_bucket: #KEYS must be a multiple of ARGV[2] >= 1')
end
local rates, bursts, ttls_ms = {}, {}, {}
for i = 1, per_request do
  rates[i] = tonumber(ARGV[2 * i + 1])
  bursts[i] = tonumber(ARGV[2 * i + 2])
  ttls_ms[i] = math.ceil(bursts[i] * 1000 / rates[i]) + 1000
end

local buckets = {}  -- key -> {tokens, at_ms, ttl_ms}: the bucket as the previous request left it
local touched = {}  -- keys in order of first use, written back at the end
local function load(key, i)
  local bucket = buckets[key]
  if bucket == nil then
    local state = redis.call('HMGET', key, 'tokens', 'at_ms')
    bucket = {tokens = tonumber(state[1]) or bursts[i], at_ms = tonumber(state[2]) or now_ms}
    buckets[key] = bucket
    touched[#touched + 1] = key
  end
  return bucket
end

local answers = {}
for first = 0, #KEYS - per_request, per_request do
  local levels = {}
  local retry_after_ms = 0
  for i = 1, per_request do
    local bucket = load(KEYS[first + i], i)
    local tokens = math.min(bursts[i], bucket.tokens + math.max(0, now_ms - bucket.at_ms) * rates[i] / 1000)
    levels[i] = tokens
    if tokens < 1 then
      retry_after_ms = math.max(retry_after_ms, math.ceil((1 - tokens) * 1000 / rates[i]))
    end
  end
  for i = 1, per_request do
    local bucket = buckets[KEYS[first + i]]
    bucket.tokens = levels[i]
    if retry_after_ms == 0 then
      bucket.tokens = levels[i] - 1
    end
    bucket.at_ms = now_ms
    bucket.ttl_ms = ttls_ms[i]
  end
  answers[#answers + 1] = retry_after_ms
end

for _, key in ipairs(touched) do
  local bucket = buckets[key]
  redis.call('HSET', key, 'tokens', bucket.tokens, 'at_ms', bucket.at_ms)
  redis.call('PEXPIRE', key, bucket.ttl_ms)
end
return answers
