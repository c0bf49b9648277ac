"""Job state in Redis: records and the status machine, shard accounting, leases, key names.

May import the rest of the core (errors, storage); never torch, the worker or the API.
"""
