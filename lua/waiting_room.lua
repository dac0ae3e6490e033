-- The waiting room of one event (API.md "Waiting room"; router/waiting_room.py): one atomic step
-- per join or poll. Every call first runs the admitter — so admission needs no process of its
-- own and no leader: whichever router worker calls, the event's token bucket lives here, in Redis,
-- and several workers or routers cannot multiply the rate — then answers for the caller.
--
-- KEYS (one event; the {event} hash tag keeps them in one slot):
--   1 line      ZSET  user digest -> ticket (FIFO order: INCR of meta.seq)
--   2 seen      ZSET  user digest -> last join/poll, ms
--   3 admitted  ZSET  user digest -> admitted at, ms
--   4 expired   ZSET  user digest -> dropped from the line at, ms (for the "expired" answer)
--   5 meta      HASH  seq (last ticket), tokens (admission bucket), at (bucket time, ms)
--   6 spent     ZSET  user digest -> used at, ms: admissions already used for a hold
--   7 early     SET   user digests that joined before the sale opened (shuffled into the line
--                     at the opening)
-- ARGV:
--   1 now_ms           the router's clock (ms since the epoch)
--   2 user             the caller's user digest (fixed length; never the raw id)
--   3 join             1: join if not in line (POST); 0: poll only (GET)
--   4 rate             admissions per second (the event's admit_per_second)
--   5 burst            most admissions one step may make after an idle time (bucket size)
--   6 idle_ms          a waiting user not seen for this long loses the place when reached
--   7 admitted_ms      an admission is remembered this long (the token's lifetime)
--   8 scan_max         most line entries one step may look at (bounds the script's time)
--   9 waiting_max      most users in the line (a join beyond it is refused)
--  10 key_ttl_ms       every key expires this long after the last write
--  11 cap              most admissions outstanding (admitted, not yet used for a hold) after this
--                      step: what the stock can serve; -1 = no limit
--  12 settle_ms        an admission used less than this long ago still counts as outstanding:
--                      the stock the cap was computed from may not show its hold yet
--  13 opens_ms         when the sale opens (0: open). Before: joins go to `early`, unplaced, and
--                      nobody is admitted. The first step at or after it shuffles `early` into the
--                      line ahead of any later join.
--  14 seed             the shuffle's seed, 1..2147483646 (only the first one used counts; it is
--                      kept in meta.shuffle_seed: the order can be recomputed from it)
-- Returns {status, value, admitted_now, expired_now, line_length, shuffled_now}; status "early":
-- joined before the opening, no position yet.
-- Returns {status, value, admitted_now, expired_now, line_length, shuffled_now}:
--   status "admitted": value = admitted at (ms); "waiting": value = position (1 = next);
--   "expired": value = 0 (not in line: never joined, or dropped for not polling); "full": the
--   line is at waiting_max. admitted_now / expired_now: what this step's admitter did.

local line, seen, admitted, expired, meta, spent = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local now = tonumber(ARGV[1])
local user = ARGV[2]
local join = ARGV[3] == "1"
local rate = tonumber(ARGV[4])
local burst = tonumber(ARGV[5])
local idle_ms = tonumber(ARGV[6])
local admitted_ms = tonumber(ARGV[7])
local scan_max = tonumber(ARGV[8])
local waiting_max = tonumber(ARGV[9])
local key_ttl_ms = tonumber(ARGV[10])
local cap = tonumber(ARGV[11])
local settle_ms = tonumber(ARGV[12])
local opens_ms = tonumber(ARGV[13])
local seed = tonumber(ARGV[14])
local early = KEYS[7]

local function touch()
  for _, key in ipairs(KEYS) do redis.call("PEXPIRE", key, key_ttl_ms) end
end

-- Before the opening: a join waits unplaced; nobody is admitted. (Once the line has opened it
-- stays open, even if the sale's start is moved later.)
local opened = redis.call("HEXISTS", meta, "shuffle_seed") == 1
if not opened and now < opens_ms then
  local placed = redis.call("ZSCORE", line, user) or redis.call("ZSCORE", admitted, user)
  if not placed and (join or redis.call("SISMEMBER", early, user) == 1) then
    if redis.call("SISMEMBER", early, user) == 0 and redis.call("SCARD", early) >= waiting_max then
      return {"full", 0, 0, 0, redis.call("ZCARD", line), 0}
    end
    redis.call("SADD", early, user)
    redis.call("ZADD", seen, now, user)
    touch()
    return {"early", 0, 0, 0, redis.call("ZCARD", line), 0}
  end
end

-- The opening: those who joined early are placed in a random order (Fisher-Yates over their
-- sorted digests, driven by the Park-Miller generator from `seed`: router/waiting_room.py
-- `opening_order` computes the same order), ahead of everyone who joins from now on.
local shuffled_now = 0
if not opened then
  local members = redis.call("SMEMBERS", early)
  table.sort(members)
  local state = seed
  for i = #members, 2, -1 do
    state = (state * 48271) % 2147483647
    local j = (state % i) + 1
    members[i], members[j] = members[j], members[i]
  end
  for _, member in ipairs(members) do
    local ticket = redis.call("HINCRBY", meta, "seq", 1)
    redis.call("ZADD", line, ticket, member)
    redis.call("ZADD", seen, now, member)
  end
  redis.call("DEL", early)
  redis.call("HSET", meta, "shuffle_seed", tostring(seed), "shuffled", tostring(#members))
  shuffled_now = #members
end

-- The caller first: a join takes the next ticket (or keeps the place it has), a poll marks the
-- caller as still there.
local full = false
if redis.call("ZSCORE", admitted, user) == false then
  if redis.call("ZSCORE", line, user) then
    redis.call("ZADD", seen, now, user)
  elseif join then
    if redis.call("ZCARD", line) >= waiting_max then
      full = true
    else
      local ticket = redis.call("HINCRBY", meta, "seq", 1)
      redis.call("ZADD", line, ticket, user)
      redis.call("ZADD", seen, now, user)
      redis.call("ZREM", expired, user)
    end
  end
end

-- Forget admissions and drops older than what they are remembered for.
local aged = redis.call("ZRANGEBYSCORE", admitted, "-inf", now - admitted_ms, "LIMIT", 0, scan_max)
for _, member in ipairs(aged) do
  redis.call("ZREM", admitted, member)
  redis.call("ZREM", spent, member)  -- spent stays a subset of admitted
end
redis.call("ZREMRANGEBYSCORE", expired, "-inf", now - admitted_ms)

-- The admitter: refill the bucket, then admit from the head while tokens last and the stock can
-- serve one more outstanding admission. A head entry not seen for idle_ms is dropped without using
-- a token, so people who left do not stall the line.
local state = redis.call("HMGET", meta, "tokens", "at")
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
if now > at then
  tokens = math.min(burst, tokens + (now - at) * rate / 1000)
  at = now
end
local admitted_now, expired_now, scanned = 0, 0, 0
local outstanding = redis.call("ZCARD", admitted) - redis.call("ZCOUNT", spent, "-inf", now - settle_ms)
while tokens >= 1 and scanned < scan_max and (cap < 0 or outstanding < cap) do
  local head = redis.call("ZRANGE", line, 0, 0)
  if #head == 0 then break end
  local member = head[1]
  scanned = scanned + 1
  redis.call("ZREM", line, member)
  local last = tonumber(redis.call("ZSCORE", seen, member)) or 0
  redis.call("ZREM", seen, member)
  if now - last > idle_ms then
    redis.call("ZADD", expired, now, member)
    expired_now = expired_now + 1
  else
    redis.call("ZADD", admitted, now, member)
    tokens = tokens - 1
    admitted_now = admitted_now + 1
    outstanding = outstanding + 1
  end
end
redis.call("HSET", meta, "tokens", tostring(tokens), "at", tostring(at))
touch()

-- The answer.
local function answer(status, value)
  return {status, value, admitted_now, expired_now, redis.call("ZCARD", line), shuffled_now}
end
local admitted_at = redis.call("ZSCORE", admitted, user)
if admitted_at then
  return answer("admitted", tonumber(admitted_at))
end
local rank = redis.call("ZRANK", line, user)
if rank then
  return answer("waiting", rank + 1)
end
if full then
  return answer("full", 0)
end
return answer("expired", 0)
