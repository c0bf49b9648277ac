"""Image keys: which keys are images, which are valid storage keys, and the group (ad variant)
each image falls in, for a folder, a URL list or a manifest line."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from facesense.inputs.urls import is_url_key, split_url_key
from facesense.inputs.video.limits import VIDEO_EXTENSIONS
from facesense.storage import check_key

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
SCORED_VIDEOS = frozenset(VIDEO_EXTENSIONS)  # a scoring job's videos (facesense.inputs.video)
URL = re.compile(r"^https?://\S+$", re.IGNORECASE)


def is_image_key(key: str) -> bool:
    """True for keys with an image extension (any case), skipping hidden files and folders."""
    return _visible(key) and PurePosixPath(key).suffix.lower() in IMAGE_EXTENSIONS


def is_scored_key(key: str) -> bool:
    """True for the keys a scoring job scores: images and videos (hidden files skipped)."""
    return _visible(key) and PurePosixPath(key).suffix.lower() in IMAGE_EXTENSIONS | SCORED_VIDEOS


def _visible(key: str) -> bool:
    """False for a hidden file or folder (a dot name, a macOS __MACOSX folder) on the way."""
    return not any(p.startswith(".") or p == "__MACOSX" for p in key.split("/"))


def valid_key(key: str) -> bool:
    """True for a storage key (or prefix) without empty, '.' or '..' parts or a backslash."""
    try:
        check_key(key)
    except ValueError:
        return False
    return True


def group_of(key: str) -> str:
    """An image's group (ad variant) is its first-level sub-folder; '' for top-level images.

    A URL item's group is the one its caller gave, else the URL's host (see facesense.inputs.urls).
    """
    if is_url_key(key):
        return split_url_key(key)[0]
    head, sep, _ = key.partition("/")
    return head if sep else ""


def url_host(url: str) -> str:
    """A URL's host, lower-cased, without brackets, port or credentials ('' if malformed)."""
    try:
        return urlsplit(url).hostname or ""
    except ValueError:  # e.g. an unclosed '[' of an IPv6 address
        return ""


def default_group(key: str) -> str:
    """A manifest line's group when the job names no group_by column: a relative image's
    first-level folder (as for a folder job), an absolute or s3:// image's folder, a URL's host."""
    if URL.match(key):  # as a URL-list job's: an IPv6 host is its address, not '['
        return url_host(key)
    if key.startswith(("s3://", "/")):
        return PurePosixPath(key).parent.name
    head, sep, _ = key.partition("/")
    return head if sep else ""
