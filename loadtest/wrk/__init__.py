"""wrk, the load generator of the issue-12 benchmark: its Lua script and the Python that runs it."""
