"""How the system starts: settings, embedded services, Ray bootstrap and the `ticketing` CLI.

Nothing here decides business rules; it only wires the pieces together.
"""
