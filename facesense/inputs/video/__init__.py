"""Reaction videos as inputs: limits (no decoding), probe (length, size, rotation) and frames
sampled by presentation time, shard by shard (frames), read from any source (reader).

May import PyAV, Pillow and the core's base modules (no torch); limits imports no PyAV, so the
API checks a job's video fields without it.
"""
