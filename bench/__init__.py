"""Benchmarks: scripts that print their figures; bench.common is what they share.

May import every layer (it measures them all); nothing imports bench.
"""
