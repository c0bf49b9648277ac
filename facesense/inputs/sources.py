"""A job's source: normalised at submission to its canonical URL, opened by scheme when its
images are read (an S3 prefix, a local folder under the allowed roots, uploads, a URL list, a
manifest).

Key rules and groups live in facesense.inputs.keys, the local path guards in
facesense.inputs.paths.
"""

from __future__ import annotations

from collections.abc import Iterator

from facesense.errors import BadRequest, SourceError
from facesense.inputs.keys import is_scored_key, valid_key
from facesense.inputs.manifest_source import ManifestSource
from facesense.inputs.paths import (
    LocalSource,
    file_url_path,
    overlaps_store,
    resolve_local,
    system_folders,
)
from facesense.inputs.urls import URLS_SCHEME, UrlSource
from facesense.settings import Settings
from facesense.storage import LocalStore, Store, open_store, parse_s3_url

UPLOAD_SCHEME = "store:"
MANIFEST_SCHEME = "manifest:"  # a manifest job's checked copy (facesense.inputs.manifest_source)


def list_images(store: Store) -> Iterator[str]:
    """Image and video keys under a source store, recursively, in a stable sorted order."""
    if isinstance(store, (UrlSource, ManifestSource)):  # every item listed is an image to score
        return iter(store.list())
    return (key for key in store.list() if is_scored_key(key))


def normalize_source(source: str, settings: Settings) -> str:
    """Validate a job's source and return its canonical URL (s3://... or file:///real/path)."""
    if not isinstance(source, str) or not source.strip():
        raise BadRequest("'source' must be a non-empty string: an s3:// URL or a local folder")
    source = source.strip()
    if source.startswith("s3://"):
        open_store(source)  # validates the URL's shape
        prefix = parse_s3_url(source)[1]
        if prefix and not valid_key(prefix):  # a server may normalise '..' where S3 would not
            raise BadRequest(f"source {source!r}: {prefix!r} is not a valid S3 prefix (no empty, "
                             "'.' or '..' parts, no backslash)")
        canonical = source.rstrip("/")
    elif "://" in source and not source.startswith("file://"):
        raise SourceError(f"unsupported source {source!r}: use s3://bucket/prefix or a local folder")
    else:
        local = file_url_path(source) if source.startswith("file://") else source
        canonical = resolve_local(local, settings).as_uri()
    if overlaps_store(canonical, settings.store_url):
        raise SourceError(f"source {source!r} overlaps the store that holds every job's files")
    return canonical


def upload_source(prefix: str) -> str:
    """The source URL of files uploaded into the main store under prefix."""
    return UPLOAD_SCHEME + prefix


def open_source(url: str, settings: Settings, store: Store) -> Store:
    """The store to read a job's images from; a local folder is checked against the roots
    here, and every file in it again when opened."""
    if url.startswith(URLS_SCHEME):
        return UrlSource(store, url[len(URLS_SCHEME):], settings)
    if url.startswith(MANIFEST_SCHEME):
        return ManifestSource(store, url[len(MANIFEST_SCHEME):], settings)
    if url.startswith(UPLOAD_SCHEME):
        return store.child(url[len(UPLOAD_SCHEME):])
    if url.startswith("file://"):  # a local main store is never read through a link into it
        own = store.root if isinstance(store, LocalStore) else None
        return LocalSource(resolve_local(file_url_path(url), settings), settings.roots, own,
                           system_folders(settings))
    return open_store(url, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region)
