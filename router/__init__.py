"""The FastAPI router: routes, schemas, auth, problem+json errors and the shard client.

The router is stateless: it holds no inventory state of its own.
"""
