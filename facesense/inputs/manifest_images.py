"""Where a manifest line's image lies: its key in the job (an http(s) URL, an s3:// URI, an
absolute path, or a path relative to the manifest's folder), checked at submission as today's
sources are: the allowed roots, the folders the system writes kept out, and the line named in
every refusal."""

from __future__ import annotations

import os
import posixpath
import re

from facesense.errors import BadRequest, SourceError
from facesense.inputs.keys import URL
from facesense.inputs.paths import checked_path, file_url_path, overlaps_store
from facesense.inputs.urls import MAX_URL_CHARS
from facesense.settings import Settings
from facesense.storage import check_key, parse_s3_url

CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# Refusals name the line and the problem, never a cell: a file named as a manifest may be
# anyone's (a password file's first line must not come back in an error).
def image_key(value, line: int, base: str, settings: Settings) -> tuple[str, str]:
    """An image's key in the job and its identity (what two lines naming the same file share):
    an http(s) URL or s3:// URI as given, an absolute path normalised, a relative path
    normalised against the manifest's folder (one that leaves a local folder becomes
    absolute); a local file's identity is its real path, links followed."""
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"line {line}: the 'image' cell is empty")
    value = value.strip()
    if len(value) > MAX_URL_CHARS or CONTROL.search(value):
        raise BadRequest(f"line {line}: the image is longer than {MAX_URL_CHARS} characters or "
                         "holds control characters")
    if value.lower().startswith(("http://", "https://")):
        if not URL.match(value):
            raise BadRequest(f"line {line}: the image is not a URL")
        return value, value
    if "\\" in value:  # never a separator here: every later read of it would fail
        raise BadRequest(f"line {line}: the image's path holds a backslash; separate folders "
                         "with '/'")
    if value.startswith("s3://"):
        key = _s3_key(value, line, settings)
        return key, key
    if value.startswith("file://"):
        value = file_url_path(value)
    elif "://" in value:
        raise BadRequest(f"line {line}: unsupported image: use a path, an s3:// URI or an "
                         "http(s) URL")
    if value.startswith("/"):
        return _local_key(os.path.normpath(value), line, settings)
    if not base:
        raise BadRequest(f"line {line}: the image is a relative path, but an uploaded manifest "
                         "has no folder: give absolute paths under the allowed roots, s3:// URIs "
                         "or http(s) URLs")
    rel = posixpath.normpath(value)
    if base.startswith("s3://"):
        if rel == ".." or rel.startswith("../"):
            raise BadRequest(f"line {line}: the image leaves the manifest's folder; give an "
                             "s3:// URI")
        _checked(rel, line)
        bucket, prefix = parse_s3_url(base)
        full = f"s3://{bucket}/{posixpath.join(prefix, rel) if prefix else rel}"
        if overlaps_store(full, settings.store_url):
            raise SourceError(f"line {line}: the image lies in the store that holds every "
                              "job's files")
        return rel, full
    folder = file_url_path(base)
    if rel == ".." or rel.startswith("../"):  # beside the manifest's folder: kept absolute
        return _local_key(os.path.normpath(os.path.join(folder, rel)), line, settings)
    return rel, _local_key(os.path.join(folder, rel), line, settings)[1]


def _s3_key(value: str, line: int, settings: Settings) -> str:
    try:
        bucket, key = parse_s3_url(value)
        _checked(key, line)
    except (SourceError, BadRequest):
        raise BadRequest(f"line {line}: the image is not an s3://bucket/key URI") from None
    if overlaps_store(f"s3://{bucket}/{key}", settings.store_url):
        raise SourceError(f"line {line}: the image lies in the store that holds every job's "
                          "files")
    return f"s3://{bucket}/{key}"


def _checked(key: str, line: int) -> str:
    try:
        return check_key(key)
    except ValueError:
        raise BadRequest(f"line {line}: the image is not a file's path") from None


def _local_key(path: str, line: int, settings: Settings) -> tuple[str, str]:
    """A local image's absolute path and real path, refused (422, naming the line) outside the
    roots, missing, or in a folder the system writes."""
    return path, str(checked_path(path, settings, f"line {line}: the image", "file"))
