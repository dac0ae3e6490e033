-- A hold made with a waiting-room admission (router/holds_api.py): the admission is used, so it no
-- longer counts against what the stock can serve (lua/waiting_room.lua's cap). The token keeps
-- working until it expires (a buyer may hold again after releasing).
--
-- KEYS: 1 admitted (ZSET user digest -> admitted at, ms), 2 spent (ZSET user digest -> used at, ms)
-- ARGV: 1 user digest, 2 now (ms)
-- Returns 1 when the admission was marked used now, 0 when it was already or is unknown.
local at = redis.call("ZSCORE", KEYS[1], ARGV[1])
if not at then return 0 end
local ttl = redis.call("PTTL", KEYS[1])
local added = redis.call("ZADD", KEYS[2], "NX", ARGV[2], ARGV[1])
if ttl > 0 then redis.call("PEXPIRE", KEYS[2], ttl) end
return added
