-- Take the inventory of one hold (the seeds' reserve_tickets.lua, kept to what a hold needs):
-- check what is left, take it, and index the hold by its expiry time.
--
-- KEYS[1]  inventory: a GA counter (string, tickets left) or a section's free seats
--          (sorted set, member = score = seat number)
-- KEYS[2]  the section (hash: price_cents, seats_per_row); absent means no such event or section
-- KEYS[3]  the event's hold expiry index (sorted set: hold id scored by expiry, ms)
-- ARGV[1]  "ga" or "seats"
-- ARGV[2]  quantity
-- ARGV[3]  hold id
-- ARGV[4]  expiry time, ms since the epoch
-- Returns  {1, price_cents, seats_per_row, seat_no, ...}, with no seat numbers for GA (seats:
--          the lowest numbers first); {0, left} when fewer than quantity are left (nothing taken); {-1} when the
--          section does not exist.
local section = redis.call('HMGET', KEYS[2], 'price_cents', 'seats_per_row')
if not section[1] then
    return {-1}
end
local taken = {1, tonumber(section[1]), tonumber(section[2])}
local quantity = tonumber(ARGV[2])
if ARGV[1] == 'ga' then
    local left = tonumber(redis.call('GET', KEYS[1]) or '0')
    if left < quantity then
        return {0, left}
    end
    redis.call('DECRBY', KEYS[1], quantity)
    redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
    return taken
end
local free = redis.call('ZCARD', KEYS[1])
if free < quantity then
    return {0, free}
end
local popped = redis.call('ZPOPMIN', KEYS[1], quantity)
for index = 1, #popped, 2 do
    taken[#taken + 1] = tonumber(popped[index])
end
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
return taken
