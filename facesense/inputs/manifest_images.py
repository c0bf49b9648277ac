"""Where a manifest line's image lies: its key in the job (an http(s) URL, an s3:// URI, an
absolute path, or a path relative to the manifest's folder), checked at submission as today's
sources are: the allowed roots, the job store kept out, and the line named in every refusal."""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path, PurePosixPath

from facesense.errors import BadRequest, SourceError
from facesense.inputs.sources import file_url_path, inside_roots, overlaps_store
from facesense.inputs.urls import MAX_URL_CHARS
from facesense.settings import Settings
from facesense.storage import check_key, parse_s3_url

URL = re.compile(r"^https?://\S+$", re.IGNORECASE)
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def local_file(path: str, settings: Settings, what: str) -> Path:
    """The real path of a regular file under the allowed roots and outside a local store; the
    roots are checked first, so nothing is said about a path outside them."""
    outside = SourceError(f"{what} is outside the allowed roots (FACESENSE_ALLOWED_ROOTS)")
    try:
        if not inside_roots(Path(path).resolve(strict=False), settings.roots):
            raise outside
        real = Path(path).resolve(strict=True)
    except (RuntimeError, OSError, ValueError):  # missing, a link loop, a NUL byte
        raise SourceError(f"{what} does not exist") from None
    if not inside_roots(real, settings.roots):
        raise outside
    if overlaps_store(real.as_uri(), settings.store_url):
        raise SourceError(f"{what} lies in the store that holds every job's files")
    if not real.is_file():
        raise SourceError(f"{what} is not a file")
    return real


def image_key(value, line: int, base: str, settings: Settings) -> str:
    """An image's key in the job: an http(s) URL or s3:// URI as given, an absolute path
    normalised, a relative path normalised against the manifest's folder (one that leaves
    a local folder becomes absolute); each checked as today's sources are."""
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"line {line}: the 'image' cell is empty")
    value = value.strip()
    if len(value) > MAX_URL_CHARS or CONTROL.search(value):
        raise BadRequest(f"line {line}: image {value[:80]!r} is longer than {MAX_URL_CHARS} "
                         "characters or holds control characters")
    if value.lower().startswith(("http://", "https://")):
        if not URL.match(value):
            raise BadRequest(f"line {line}: image {value!r} is not a URL")
        return value
    if value.startswith("s3://"):
        return _s3_key(value, line, settings)
    if value.startswith("file://"):
        value = file_url_path(value)
    elif "://" in value:
        raise BadRequest(f"line {line}: unsupported image {value!r}: use a path, an s3:// URI "
                         "or an http(s) URL")
    if value.startswith("/"):
        return _local_key(os.path.normpath(value), value, line, settings)
    if not base:
        raise BadRequest(f"line {line}: image {value!r} is a relative path, but an uploaded "
                         "manifest has no folder: give absolute paths under the allowed roots, "
                         "s3:// URIs or http(s) URLs")
    rel = posixpath.normpath(value)
    if base.startswith("s3://"):
        if rel == ".." or rel.startswith("../"):
            raise BadRequest(f"line {line}: image {value!r} leaves the manifest's folder; "
                             "give an s3:// URI")
        _checked(rel, value, line)
        bucket, prefix = parse_s3_url(base)
        full = f"s3://{bucket}/{posixpath.join(prefix, rel) if prefix else rel}"
        if overlaps_store(full, settings.store_url):
            raise SourceError(f"line {line}: image {value!r} lies in the store that holds "
                              "every job's files")
        return rel
    folder = file_url_path(base)
    if rel == ".." or rel.startswith("../"):  # beside the manifest's folder: kept absolute
        return _local_key(os.path.normpath(os.path.join(folder, rel)), value, line, settings)
    _local_key(os.path.join(folder, rel), value, line, settings)
    return rel


def _s3_key(value: str, line: int, settings: Settings) -> str:
    try:
        bucket, key = parse_s3_url(value)
        _checked(key, value, line)
    except SourceError:
        raise BadRequest(f"line {line}: image {value!r} is not an s3://bucket/key URI") from None
    if overlaps_store(f"s3://{bucket}/{key}", settings.store_url):
        raise SourceError(f"line {line}: image {value!r} lies in the store that holds every "
                          "job's files")
    return f"s3://{bucket}/{key}"


def _checked(key: str, value: str, line: int) -> str:
    try:
        return check_key(key)
    except ValueError:
        raise BadRequest(f"line {line}: image {value!r} is not a file's path") from None


def _local_key(path: str, value: str, line: int, settings: Settings) -> str:
    """A local image's absolute path, refused (422, naming the line) outside the roots,
    missing, or in the store."""
    try:
        local_file(path, settings, f"image {value!r}")
    except SourceError as e:
        raise SourceError(f"line {line}: {e}") from None
    return path


def default_group(key: str) -> str:
    """A line's group when the job names no group_by column: a relative image's first-level
    folder (as for a folder job), an absolute or s3:// image's folder, a URL's host."""
    if URL.match(key):
        return key.split("/")[2].split("@")[-1].split(":")[0].lower()
    if key.startswith(("s3://", "/")):
        return PurePosixPath(key).parent.name
    head, sep, _ = key.partition("/")
    return head if sep else ""
