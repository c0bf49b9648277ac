"""Per-key read scopes: the local folders and S3 prefixes one API key may read.

A key granted folders or prefixes (NAME:SHA256HEX:/srv/ads/alice;s3://ads/alice) reads only
those: its jobs' sources, datasets, manifests and manifest lines are checked against them
before anything else, and what lies outside is refused as not found, whether it exists or
not. A key granted none reads what every key may (FACESENSE_ALLOWED_ROOTS, any S3 prefix
outside the job store). The job records its key's scope, so workers and thumbnails read its
local files under the same roots, checked again as each file is opened.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from facesense.errors import NotFound, SourceError
from facesense.inputs.paths import file_url_path, inside_roots
from facesense.settings import Settings
from facesense.storage import parse_s3_url


class Grants(Protocol):
    """What a key may read (facesense.keys.Grants, which this layer does not import)."""

    roots: tuple[str, ...]
    s3: tuple[str, ...]

    @property
    def scoped(self) -> bool: ...

NO_FOLDERS = "no-local-folders"  # under the data dir, never created: a key without roots


def scope_of(grants: Grants) -> dict | None:
    """A scoped key's grants as a job record field (None for a key that reads the global roots)."""
    return {"roots": list(grants.roots), "s3": list(grants.s3)} if grants.scoped else None


def scoped_settings(settings: Settings, scope: dict | None) -> Settings:
    """The settings a job's local files are read under: its key's roots in place of the global
    ones (a key granted only S3 prefixes: a folder nothing lies in)."""
    if not scope:
        return settings
    roots = tuple(scope.get("roots") or ()) or (str(Path(settings.data_dir).resolve() / NO_FOLDERS),)
    return settings.replace(allowed_roots=roots)


def _s3_inside(url: str, prefixes: tuple[str, ...]) -> bool:
    bucket, key = parse_s3_url(url)
    parts = key.strip("/").split("/")
    if any(p in (".", "..") for p in parts):  # a server that normalises them could leave the prefix
        return False
    key = key.strip("/")
    for prefix in prefixes:
        theirs, start = parse_s3_url(prefix)
        start = start.strip("/")
        if bucket == theirs and (not start or key == start or key.startswith(start + "/")):
            return True
    return False


def _local_inside(path: str, roots: tuple[str, ...]) -> bool:
    try:  # links that exist are followed: one inside a root that leads out of it is outside
        real = Path(path).expanduser().resolve(strict=False)
        return inside_roots(real, tuple(Path(r).resolve() for r in roots))
    except (RuntimeError, OSError, ValueError):  # a link loop, a NUL byte
        return False


def inside(where: str, grants: Grants) -> bool:
    """True if a key with these grants may read this s3:// URL, file:// URL or local path (a
    malformed one is left to the usual checks, which refuse it with a 400)."""
    if not grants.scoped:
        return True
    where = where.strip()
    try:
        if where.startswith("s3://"):
            return _s3_inside(where, grants.s3)
    except (SourceError, ValueError):
        return True
    if "://" in where and not where.startswith("file://"):
        return True  # not a storage location: refused as unsupported, or a URL to fetch
    return _local_inside(file_url_path(where) if where.startswith("file://") else where, grants.roots)


def check(where, grants: Grants, what: str) -> None:
    """Refuse a source, dataset or manifest outside the key's scope, saying nothing of whether
    it exists (the same 404 for a missing folder and for another key's)."""
    if isinstance(where, str) and not inside(where, grants):
        raise NotFound(f"no {what} {where.strip()!r} among the folders and S3 prefixes this "
                       "API key may read")


def line_check(grants: Grants, base: str) -> Callable[[object, int], None] | None:
    """A check of each manifest line's image before it is looked at (None for a key that reads
    the global roots); base is the folder relative paths start from ('' for an upload)."""
    if not grants.scoped:
        return None

    def check_line(value, line: int) -> None:
        if not isinstance(value, str) or not value.strip():
            return  # an empty cell: the usual checks name it
        value = where = value.strip()
        relative = "://" not in value and not value.startswith("/")
        if relative and not base:
            return  # an uploaded manifest's relative path: refused with a 400 naming the line
        # relative to base (a URL to fetch is no storage: inside() passes it to the SSRF guard)
        if relative:
            if base.startswith("s3://"):
                bucket, prefix = parse_s3_url(base)
                where = f"s3://{bucket}/{posixpath.normpath(posixpath.join(prefix, value))}"
            else:
                where = os.path.join(file_url_path(base), value)
        if not inside(where, grants):
            raise NotFound(f"line {line}: no image {value!r} among the folders and S3 prefixes "
                           "this API key may read")

    return check_line
