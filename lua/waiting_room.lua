-- The waiting room of one event (API.md "Waiting room"; router/waiting_room.py): one atomic step
-- per join or poll. Every call first runs the admitter — so admission needs no process of its
-- own and no leader: whichever router worker calls, the event's token bucket lives here, in Redis,
-- and several workers or routers cannot multiply the rate — then answers for the caller.
--
-- KEYS (one event; the {event} hash tag keeps them in one slot):
--   1 line      ZSET  user digest -> ticket (FIFO order: INCR of meta.seq)
--   2 seen      ZSET  user digest -> last join/poll, ms
--   3 admitted  ZSET  one entry per ticket an admission may take -> admitted at, ms: the user
--                     digest, and for a waiting-list admission of q tickets also "<digest>:2" ..
--                     "<digest>:q", so that ZCARD counts tickets, not people
--   4 expired   ZSET  user digest -> dropped from the line at, ms (for the "expired" answer)
--   5 meta      HASH  seq (last ticket), tokens (admission bucket), at (bucket time, ms),
--                     shuffle_seed and shuffled (once the line has opened)
--   6 spent     ZSET  admitted entry -> used at, ms: admissions already used for a hold
--   7 early     SET   user digests that joined before the sale opened (shuffled into the line
--                     at the opening)
--   8 waitlist  ZSET  user digest -> ticket: the waiting list after a sell-out, in arrival order
--                     (a user who was in the line keeps the line's ticket)
--   9 wants     HASH  user digest -> tickets wanted: while on the waiting list, and then while its
--                     admission is remembered (the admission is for that many tickets)
--  10 eta       HASH  user digest -> "<placed at ms>:<eta s>": when the first answer that gave the
--                     user a position was made and the ETA it gave; read (and deleted) at the
--                     user's first "admitted" answer, for the ETA-error metric
-- ARGV:
--   1 now_ms           the router's clock (ms since the epoch)
--   2 user             the caller's user digest (fixed length; never the raw id)
--   3 join             1: join if not in line (POST); 0: poll only (GET)
--   4 rate             admissions per second (the event's admit_per_second)
--   5 burst            most admissions one step may make after an idle time (bucket size)
--   6 idle_ms          a waiting user not seen for this long loses the place when reached (users
--                      on the waiting list are never dropped: they asked to be offered tickets)
--   7 admitted_ms      an admission is remembered this long (the token's lifetime)
--   8 scan_max         most waiting-list and line entries one step may look at (bounds the
--                      script's time)
--   9 waiting_max      most users in the line, and most on the waiting list (a join beyond is
--                      refused)
--  10 key_ttl_ms       every key expires this long after the last write
--  11 cap              most tickets admissions may have outstanding (admitted, not yet used for a
--                      hold) after this step: what the stock can serve; -1 = no limit
--  12 settle_ms        an admission used less than this long ago still counts as outstanding:
--                      the stock the cap was computed from may not show its hold yet
--  13 opens_ms         when the sale opens (0: open). Before: joins go to `early`, unplaced, and
--                      nobody is admitted. The first step at or after it shuffles `early` into the
--                      line ahead of any later join.
--  14 seed             the shuffle's seed, 1..2147483646 (only the first one used counts; it is
--                      kept in meta.shuffle_seed: the order can be recomputed from it)
--  15 waitlist_qty     0: an ordinary step. n > 0 (a join asking for the waiting list): a caller
--                      already on it keeps the place and now wants n; otherwise, only when
--                      sold_out, the caller moves from the line (keeping its ticket), or from
--                      nowhere, to the waiting list for n tickets (not sold out: an ordinary join)
--  16 sold_out         1: the event has nothing available now; a user in the line is answered
--                      "sold_out" (keeping the place) and gets no ETA
-- Returns {status, value, admitted_now, expired_now, line_length, shuffled_now, waitlist_length,
--          waitlist_admitted_now, quantity, placed_ms, eta_s}:
--   status "admitted": value = admitted at (ms), quantity = the tickets the admission is for (0:
--     admitted from the line, no limit), placed_ms / eta_s = when the user was first given a
--     position and the ETA then given (0, 0: none recorded, or already returned once);
--   "waiting": value = position in the line (1 = next); "sold_out": the same, nothing available;
--   "waiting_list": value = position on the waiting list; "early": joined before the opening, no
--   position yet (value 0); "expired": value = 0 (nowhere: never joined, dropped for not
--   polling, or the admission aged out); "full": the line (or waiting list) is at waiting_max.
--   admitted_now / expired_now / waitlist_admitted_now / shuffled_now: what this step's admitter
--   did (admitted_now includes the waiting-list admissions).

local line, seen, admitted, expired, meta, spent = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local early, waitlist, wants, eta = KEYS[7], KEYS[8], KEYS[9], KEYS[10]
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
local wanted = tonumber(ARGV[15])
local sold_out = ARGV[16] == "1"

local admitted_now, expired_now, shuffled_now, waitlist_admitted_now = 0, 0, 0, 0

local function touch()
  for _, key in ipairs(KEYS) do redis.call("PEXPIRE", key, key_ttl_ms) end
end

local function answer(status, value, quantity, placed_ms, eta_s)
  return {status, value, admitted_now, expired_now, redis.call("ZCARD", line), shuffled_now,
          redis.call("ZCARD", waitlist), waitlist_admitted_now, quantity or 0, placed_ms or 0, eta_s or 0}
end

-- Before the opening: a join waits unplaced; nobody is admitted. (Once the line has opened it
-- stays open, even if the sale's start is moved later.)
local opened = redis.call("HEXISTS", meta, "shuffle_seed") == 1
if not opened and now < opens_ms then
  local placed = redis.call("ZSCORE", line, user) or redis.call("ZSCORE", admitted, user)
  if not placed and (join or redis.call("SISMEMBER", early, user) == 1) then
    if redis.call("SISMEMBER", early, user) == 0 and redis.call("SCARD", early) >= waiting_max then
      return answer("full", 0)
    end
    redis.call("SADD", early, user)
    redis.call("ZADD", seen, now, user)
    touch()
    return answer("early", 0)
  end
end

-- The opening: those who joined early are placed in a random order (Fisher-Yates over their
-- sorted digests, driven by the Park-Miller generator from `seed`: router/waiting_room.py
-- `opening_order` computes the same order), ahead of everyone who joins from now on.
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
-- caller as still there; a join asking for the waiting list moves the caller there.
local full = false
if redis.call("ZSCORE", admitted, user) == false then
  if redis.call("ZSCORE", waitlist, user) then
    if wanted > 0 then redis.call("HSET", wants, user, wanted) end  -- the place is kept
  elseif wanted > 0 and sold_out then
    local ticket = redis.call("ZSCORE", line, user)  -- arrival order: the line's ticket is kept
    if not ticket and redis.call("ZCARD", waitlist) >= waiting_max then
      full = true
    else
      ticket = ticket or redis.call("HINCRBY", meta, "seq", 1)
      redis.call("ZREM", line, user)
      redis.call("ZREM", seen, user)
      redis.call("ZREM", expired, user)
      redis.call("HDEL", eta, user)  -- the ETA the line gave no longer applies
      redis.call("ZADD", waitlist, ticket, user)
      redis.call("HSET", wants, user, wanted)
    end
  elseif redis.call("ZSCORE", line, user) then
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
  redis.call("HDEL", wants, member)
  redis.call("HDEL", eta, member)
end
redis.call("ZREMRANGEBYSCORE", expired, "-inf", now - admitted_ms)

-- The admitter: refill the bucket, then admit while tokens last and the stock can serve more
-- outstanding tickets: first the waiting list, in order, each entry whose quantity fits (one
-- that does not is passed over, not waited for), then the line from its head. A line head not
-- seen for idle_ms is dropped without using a token, so people who left do not stall the line.
local state = redis.call("HMGET", meta, "tokens", "at")
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
if now > at then
  tokens = math.min(burst, tokens + (now - at) * rate / 1000)
  at = now
end
local scanned = 0
local outstanding = redis.call("ZCARD", admitted) - redis.call("ZCOUNT", spent, "-inf", now - settle_ms)
if tokens >= 1 and (cap < 0 or outstanding < cap) and redis.call("ZCARD", waitlist) > 0 then
  for _, member in ipairs(redis.call("ZRANGE", waitlist, 0, scan_max - 1)) do
    if tokens < 1 or (cap >= 0 and outstanding >= cap) then break end
    scanned = scanned + 1
    local quantity = tonumber(redis.call("HGET", wants, member)) or 1
    if cap < 0 or outstanding + quantity <= cap then
      redis.call("ZREM", waitlist, member)
      redis.call("ZADD", admitted, now, member)
      for extra = 2, quantity do redis.call("ZADD", admitted, now, member .. ":" .. extra) end
      tokens = tokens - 1
      admitted_now = admitted_now + 1
      waitlist_admitted_now = waitlist_admitted_now + 1
      outstanding = outstanding + quantity
    end
  end
end
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
    redis.call("HDEL", eta, member)
    expired_now = expired_now + 1
  else
    redis.call("ZADD", admitted, now, member)
    tokens = tokens - 1
    admitted_now = admitted_now + 1
    outstanding = outstanding + 1
  end
end
redis.call("HSET", meta, "tokens", tostring(tokens), "at", tostring(at))

-- The answer. A user's first answer with a position in the line records the ETA it gives
-- (position / rate, rounded up, as the router shows it); the first "admitted" answer hands it back.
local result
local admitted_at = redis.call("ZSCORE", admitted, user)
local waitlist_rank = redis.call("ZRANK", waitlist, user)
local line_rank = redis.call("ZRANK", line, user)
if admitted_at then
  local quantity = tonumber(redis.call("HGET", wants, user)) or 0
  local record = redis.call("HGET", eta, user)
  if record then
    redis.call("HDEL", eta, user)
    local separator = string.find(record, ":", 1, true)
    result = answer("admitted", tonumber(admitted_at), quantity, tonumber(string.sub(record, 1, separator - 1)),
                    tonumber(string.sub(record, separator + 1)))
  else
    result = answer("admitted", tonumber(admitted_at), quantity)
  end
elseif waitlist_rank then
  result = answer("waiting_list", waitlist_rank + 1)
elseif line_rank and sold_out then
  result = answer("sold_out", line_rank + 1)
elseif line_rank then
  if redis.call("HEXISTS", eta, user) == 0 then
    redis.call("HSET", eta, user, string.format("%d:%d", now, math.ceil((line_rank + 1) / rate)))
  end
  result = answer("waiting", line_rank + 1)
elseif full then
  result = answer("full", 0)
else
  result = answer("expired", 0)
end
touch()
return result
