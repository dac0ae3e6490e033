-- Give back what take_inventory.lua took for a hold whose Postgres row was not written.
--
-- KEYS[1]  inventory: the GA counter or the section's free seats (as in take_inventory.lua)
-- KEYS[2]  the event's hold expiry index
-- ARGV[1]  "ga" or "seats"
-- ARGV[2]  quantity
-- ARGV[3]  hold id
-- ARGV[4…] the seat numbers taken (seats only)
-- Returns  1
if ARGV[1] == 'ga' then
    redis.call('INCRBY', KEYS[1], ARGV[2])
else
    for index = 4, #ARGV do
        redis.call('ZADD', KEYS[1], ARGV[index], ARGV[index])
    end
end
redis.call('ZREM', KEYS[2], ARGV[3])
return 1
