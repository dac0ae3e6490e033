"""Inventory owners: the pure inventory core and the Ray shard actor that wraps it."""

from cluster.native import activate_core

# The shell, not the core, picks the core's build: this package is imported before any of its
# subpackages in every process, so the mypyc-compiled modules (when current) are on the core's
# search path before `actors.inventory` is first imported (cluster/native.py explains how).
activate_core()
