"""Object storage behind one small protocol: a local folder or S3 (boto3), chosen by URL."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from facesense.errors import ObjectNotFound, SourceError, TransientError

COPY_CHUNK = 1 << 20


class Store(Protocol):
    """Keys are '/'-separated relative paths; every method is safe to call from many threads."""

    uri: str

    def get(self, key: str) -> bytes: ...
    def put(self, key: str, data: bytes) -> None: ...
    def put_stream(self, key: str, stream: BinaryIO) -> None: ...
    def open(self, key: str) -> BinaryIO: ...
    def list(self, prefix: str = "") -> Iterator[str]: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def child(self, prefix: str) -> Store: ...
    def uri_for(self, key: str) -> str: ...


def check_key(key: str) -> str:
    """Reject keys that could escape the store's root ('..', absolute, empty parts)."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in key:
        raise ValueError(f"invalid storage key: {key!r}")
    return key


def join(*parts: str) -> str:
    """Join key parts with '/', ignoring empty ones."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


class LocalStore:
    """A folder on disk; writes are atomic (temp file + rename) and private to the owner."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.uri = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def get(self, key: str) -> bytes:
        """Whole object as bytes."""
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"no object {key!r} in {self.uri}") from None

    def put(self, key: str, data: bytes) -> None:
        """Write an object atomically: readers see the old object or the new one, never half."""
        with self._writer(key) as f:
            f.write(data)

    def put_stream(self, key: str, stream: BinaryIO) -> None:
        """Write an object from a file-like object without holding it in memory."""
        with self._writer(key) as f:
            shutil.copyfileobj(stream, f, COPY_CHUNK)

    def _writer(self, key: str):
        path = self._path(key)
        path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        # mkstemp creates the file 0600: results hold people's faces' scores.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        return _AtomicFile(os.fdopen(fd, "wb"), tmp, path)

    def open(self, key: str) -> BinaryIO:
        """A streaming reader."""
        try:
            return self._path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"no object {key!r} in {self.uri}") from None

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under prefix, recursively, in sorted order; temp files are skipped."""
        base = self.root / prefix if prefix else self.root
        if base.is_dir():
            yield from self._walk(base)

    def _walk(self, folder: Path) -> Iterator[str]:
        # Sort each folder's entries as their keys sort (a sub-folder as 'name/'), so keys come
        # out in S3's order, not files-then-folders; symlinked folders are not followed.
        try:
            with os.scandir(folder) as it:
                entries = sorted((e.name + "/" if e.is_dir() else e.name, e) for e in it)
        except OSError:  # unreadable folder: skipped, as os.walk did
            return
        for name, entry in entries:
            if name.endswith("/"):
                if not entry.is_symlink():
                    yield from self._walk(Path(entry.path))
            elif not name.startswith(".tmp-"):
                yield Path(entry.path).relative_to(self.root).as_posix()

    def exists(self, key: str) -> bool:
        """True if the object exists."""
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        """Remove an object; missing is fine."""
        self._path(key).unlink(missing_ok=True)

    def child(self, prefix: str) -> LocalStore:
        """A store rooted at a sub-folder."""
        return LocalStore(self._path(prefix))

    def uri_for(self, key: str) -> str:
        """A URL naming one object."""
        return self._path(key).as_uri()


class _AtomicFile:
    """A file written under a temp name and renamed into place only on success."""

    def __init__(self, f, tmp: str, path: Path):
        self.f, self.tmp, self.path = f, tmp, path

    def __enter__(self):
        return self.f

    def __exit__(self, exc_type, *_):
        self.f.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            os.unlink(self.tmp)


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

    def open(self, key: str) -> BinaryIO:
        """A streaming reader over the object's body."""
        with _s3_errors(self.uri, key):
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]

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
        if isinstance(exc, bx.BotoCoreError):
            raise TransientError(f"{self.uri}: {exc}") from exc
        return False


class TooLarge(ValueError):
    """An object is larger than the caller's limit (checked while streaming, not after)."""


def read_limited(store: Store, key: str, max_bytes: int) -> bytes:
    """An object's bytes, refusing (TooLarge) as soon as more than max_bytes arrive."""
    with store.open(key) as stream:
        data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise TooLarge(f"file is larger than the {max_bytes}-byte limit")
    return data


def parse_s3_url(url: str) -> tuple[str, str]:
    """'s3://bucket/some/prefix' -> ('bucket', 'some/prefix')."""
    rest = url[len("s3://"):]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise SourceError(f"S3 URL {url!r} names no bucket")
    return bucket, prefix.strip("/")


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
