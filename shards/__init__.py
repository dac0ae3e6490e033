"""PostgreSQL: the slot → shard map, migrations, pools, the batch writer, loaders and the lease.

Nothing here knows about HTTP.
"""
