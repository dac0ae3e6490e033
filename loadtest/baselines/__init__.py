"""The servers `loadtest/bench.py` measures the product against (issue 12).

Each is a small ASGI app served by uvicorn exactly as the product's router is (2 workers, uvloop,
httptools, the router's backlog, connection and keep-alive bounds: `serve.py`), answering
``POST /v1/holds`` with the request shape and the 201 body of API.md:

- ``ceiling-asgi`` and ``ceiling-fastapi`` (`ceiling.py`): framework ceilings. They parse the body
  with orjson, read the Authorization header and answer a constant 201; no database.
- ``rowlock`` (`rowlock.py`): the seeds' design. One transaction per hold: ``SELECT … FOR UPDATE``
  on the GA pool row (for seats: on the best free seat rows), the update, the insert of the hold,
  ``COMMIT`` with synchronous commit.
- ``conditional`` (`conditional.py`): the strongest plain-Postgres design we could write. One
  statement, one round trip, one implicit transaction: a conditional ``UPDATE … WHERE held + sold +
  n <= capacity RETURNING`` (for seats: ``FOR UPDATE SKIP LOCKED`` picks the free seats) feeding
  the insert of the hold through a CTE.
- ``redis-lua`` (`redis_lua.py`): the seeds' Redis design. A Lua script takes the inventory in
  Redis (GA counter; for seats, a sorted set of free seats) and records the hold's expiry, then
  the hold row is inserted in Postgres; a failed insert gives the inventory back.

The database ones verify the bearer token with the router's own `router.auth.TokenVerifier`,
honour ``Idempotency-Key`` through a unique key on the holds table, and use an asyncpg pool of
the size the product's router uses per worker (`db_pool_size_max`). `schema.py` creates each
one's tables in a database of its own and checks afterwards that nothing was oversold.
"""
