"""Object storage behind one small protocol: a local folder or S3 (boto3), chosen by URL.

protocol (the Store protocol, key checks, bounded reads), local, s3, and layout (every key the
system writes). May import errors only: the store knows nothing of jobs or models.
"""

from __future__ import annotations

from facesense.errors import SourceError
from facesense.storage.local import LocalStore
from facesense.storage.protocol import Store, TooLarge, check_key, join, read_limited
from facesense.storage.s3 import S3Store, parse_s3_url

__all__ = ["LocalStore", "S3Store", "Store", "TooLarge", "check_key", "join", "open_store",
           "parse_s3_url", "read_limited", "store_from_settings"]


def open_store(url: str, *, endpoint_url: str = "", region: str = "",
               max_pool_connections: int = 32) -> Store:
    """The store a URL names: s3://bucket/prefix, file:///path, or a plain path."""
    if url.startswith("s3://"):
        bucket, prefix = parse_s3_url(url)
        return S3Store(bucket, prefix, endpoint_url=endpoint_url, region=region,
                       max_pool_connections=max_pool_connections)
    if url.startswith("file://"):
        url = url[len("file://"):]
    if "://" in url:
        raise SourceError(f"unsupported storage URL {url!r}: use a path, file:// or s3://")
    return LocalStore(url)


def store_from_settings(settings) -> Store:
    """The configured main store (results, uploads, models)."""
    return open_store(settings.store_url, endpoint_url=settings.s3_endpoint_url,
                      region=settings.s3_region)
