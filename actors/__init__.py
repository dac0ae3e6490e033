"""Inventory owners: the pure inventory core and the Ray shard actor that wraps it."""
