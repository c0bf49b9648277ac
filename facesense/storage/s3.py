"""A store in an S3 bucket and prefix, through boto3."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import BinaryIO

from facesense.errors import ObjectNotFound, SourceError, TransientError
from facesense.storage.protocol import check_key, join


class S3Store:
    """An S3 bucket and prefix through boto3; credentials come from the standard AWS chain."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str = "", region: str = "",
                 max_pool_connections: int = 32, client=None):
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._opts = dict(endpoint_url=endpoint_url, region=region,
                          max_pool_connections=max_pool_connections)
        self.client = client or _s3_client(**self._opts)

    def _key(self, key: str) -> str:
        return join(self.prefix, check_key(key))

    def get(self, key: str) -> bytes:
        """Whole object as bytes."""
        with self.open(key) as body:
            return body.read()

    def put(self, key: str, data: bytes) -> None:
        """Write an object (S3 PUTs are atomic)."""
        with _s3_errors(self.uri, key):
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def put_stream(self, key: str, stream: BinaryIO) -> None:
        """Write an object from a file-like object (multipart for large ones)."""
        with _s3_errors(self.uri, key):
            self.client.upload_fileobj(stream, self.bucket, self._key(key))

    def open(self, key: str, start: int = 0) -> BinaryIO:
        """A streaming reader over the object's body, from byte start (a ranged GET)."""
        extra = {"Range": f"bytes={start}-"} if start else {}
        with _s3_errors(self.uri, key):
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key), **extra)["Body"]

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under prefix, recursively, in S3's (sorted) order."""
        full = join(self.prefix, prefix)
        full = full + "/" if full else ""
        skip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_objects_v2")
        with _s3_errors(self.uri, prefix):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", ()):
                    if not obj["Key"].endswith("/"):
                        yield obj["Key"][skip:]

    def folders(self, prefix: str = "", max_pages: int | None = None) -> Iterator[str]:
        """Names of the 'folders' directly under prefix (common prefixes), in S3's order; with
        max_pages, from at most that many listing requests (1000 entries each, files included:
        a prefix of a million loose files must not cost a thousand requests to a caller that
        only wants to know whether there are folders)."""
        full = join(self.prefix, prefix)
        full = full + "/" if full else ""
        paginator = self.client.get_paginator("list_objects_v2")
        with _s3_errors(self.uri, prefix):
            pages = paginator.paginate(Bucket=self.bucket, Prefix=full, Delimiter="/")
            for n, page in enumerate(pages, 1):
                for common in page.get("CommonPrefixes", ()):
                    yield common["Prefix"][len(full):].rstrip("/")
                if max_pages and n >= max_pages:
                    return

    def exists(self, key: str) -> bool:
        """True if the object exists."""
        import botocore.exceptions

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except botocore.exceptions.ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            with _s3_errors(self.uri, key):
                raise
        except botocore.exceptions.BotoCoreError:  # the endpoint away: transient, retried
            with _s3_errors(self.uri, key):
                raise

    def delete(self, key: str) -> None:
        """Remove an object; missing is fine."""
        with _s3_errors(self.uri, key):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def child(self, prefix: str) -> S3Store:
        """A store rooted under a deeper prefix, sharing this one's client and pool."""
        return S3Store(self.bucket, join(self.prefix, check_key(prefix)), client=self.client)

    def uri_for(self, key: str) -> str:
        """The s3:// URL of one object."""
        return f"s3://{self.bucket}/{self._key(key)}"


def _s3_client(*, endpoint_url: str, region: str, max_pool_connections: int):
    """A boto3 S3 client with retries on throttling and connection errors."""
    import boto3
    from botocore.config import Config

    # AWS_MAX_ATTEMPTS is boto's own knob; tasks retry with their own backoff on top of it.
    config = Config(retries={"max_attempts": int(os.environ.get("AWS_MAX_ATTEMPTS", "5")),
                             "mode": "standard"},
                    max_pool_connections=max_pool_connections,
                    connect_timeout=5, read_timeout=60,
                    s3={"addressing_style": "path"} if endpoint_url else None)
    return boto3.client("s3", endpoint_url=endpoint_url or None, region_name=region or None,
                        config=config)


class _s3_errors:
    """Translate botocore errors: missing objects to ObjectNotFound, outages to TransientError."""

    def __init__(self, uri: str, key: str):
        self.uri, self.key = uri, key

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None:
            return False
        import botocore.exceptions as bx

        if isinstance(exc, bx.ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise ObjectNotFound(f"no object {self.key!r} in {self.uri}") from None
            if code in ("NoSuchBucket", "AccessDenied", "InvalidAccessKeyId",
                        "SignatureDoesNotMatch", "403"):
                raise SourceError(f"{self.uri}: {code}") from None
            raise TransientError(f"{self.uri}: S3 error {code}") from exc
        if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
            # no retry can find credentials that are not configured: fail now, saying so
            raise SourceError(f"{self.uri}: no S3 credentials are configured ({exc})") from None
        if isinstance(exc, bx.BotoCoreError):
            raise TransientError(f"{self.uri}: {exc}") from exc
        return False


def parse_s3_url(url: str) -> tuple[str, str]:
    """'s3://bucket/some/prefix' -> ('bucket', 'some/prefix')."""
    rest = url[len("s3://"):]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise SourceError(f"S3 URL {url!r} names no bucket")
    return bucket, prefix.strip("/")
