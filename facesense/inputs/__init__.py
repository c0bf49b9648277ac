"""Where a job's images come from: folders, S3 prefixes, uploads and zips, URL lists.

netguard guards every outbound fetch (SSRF, sizes, time). May import the core's settings,
errors and storage; never state or outputs.
"""
