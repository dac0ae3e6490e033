-- A hold made with a waiting-room admission (router/holds_api.py): the admission is used, so it no
-- longer counts against what the stock can serve (lua/waiting_room.lua's cap). The token keeps
-- working until it expires (a buyer may hold again after releasing).
--
-- KEYS: 1 admitted (ZSET admitted entry -> admitted at, ms), 2 spent (ZSET admitted entry -> used
--       at, ms), 3 wants (HASH user digest -> the tickets a waiting-list admission is for)
-- ARGV: 1 user digest, 2 now (ms)
-- A waiting-list admission for q tickets has q entries in `admitted` (the digest, "<digest>:2" ..
-- "<digest>:q"): all of them are marked, since one hold may take them all.
-- Returns 1 when the admission was marked used now, 0 when it was already or is unknown.
local user = ARGV[1]
local at = redis.call("ZSCORE", KEYS[1], user)
if not at then return 0 end
local ttl = redis.call("PTTL", KEYS[1])
local added = redis.call("ZADD", KEYS[2], "NX", ARGV[2], user)
local quantity = tonumber(redis.call("HGET", KEYS[3], user)) or 1
for extra = 2, quantity do
  local entry = user .. ":" .. extra
  if redis.call("ZSCORE", KEYS[1], entry) then redis.call("ZADD", KEYS[2], "NX", ARGV[2], entry) end
end
if ttl > 0 then redis.call("PEXPIRE", KEYS[2], ttl) end
return added
