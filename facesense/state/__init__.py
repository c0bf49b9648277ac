"""Job state in Redis: records and the status machine, shard accounting, leases, key names.

May import the core's base modules (errors, settings, logs) and storage; never inputs, outputs,
torch, the worker or the API.
"""
