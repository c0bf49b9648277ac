"""Input sources for scoring jobs: an S3 prefix, a local folder under the allowed roots, uploads."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from facesense.errors import BadRequest, PayloadTooLarge, SourceError
from facesense.settings import Settings
from facesense.store import LocalStore, Store, check_key, open_store

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


def is_image_key(key: str) -> bool:
    """True for keys with an image extension (any case), skipping hidden files and folders."""
    parts = key.split("/")
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return False
    return PurePosixPath(key).suffix.lower() in IMAGE_EXTENSIONS


def group_of(key: str) -> str:
    """An image's group (ad variant) is its first-level sub-folder; '' for top-level images."""
    head, sep, _ = key.partition("/")
    return head if sep else ""


def list_images(store: Store) -> Iterator[str]:
    """Image keys under a source store, recursively, in a stable sorted order."""
    return (key for key in store.list() if is_image_key(key))


def resolve_local(path: str, settings: Settings) -> Path:
    """The real path of a local folder, refused unless it lies inside an allowed root."""
    try:
        real = Path(path).expanduser().resolve(strict=True)
    except (FileNotFoundError, RuntimeError, OSError):
        raise SourceError(f"local folder {path!r} does not exist") from None
    if not any(real == root or real.is_relative_to(root) for root in settings.roots):
        raise SourceError(f"local folder {path!r} is outside the allowed roots "
                          "(FACESENSE_ALLOWED_ROOTS)")
    if not real.is_dir():
        raise SourceError(f"{path!r} is not a folder")
    return real


def normalize_source(source: str, settings: Settings) -> str:
    """Validate a job's source and return its canonical URL (s3://... or file:///real/path)."""
    if not isinstance(source, str) or not source.strip():
        raise BadRequest("'source' must be a non-empty string: an s3:// URL or a local folder")
    source = source.strip()
    if source.startswith("s3://"):
        open_store(source)  # validates the URL's shape
        return source.rstrip("/")
    if "://" in source and not source.startswith("file://"):
        raise SourceError(f"unsupported source {source!r}: use s3://bucket/prefix or a local folder")
    local = source[len("file://"):] if source.startswith("file://") else source
    return resolve_local(local, settings).as_uri()


UPLOAD_SCHEME = "store:"


def upload_source(prefix: str) -> str:
    """The source URL of files uploaded into the main store under prefix."""
    return UPLOAD_SCHEME + prefix


def open_source(url: str, settings: Settings, store: Store) -> Store:
    """The store to read a job's images from; local folders are re-checked against the roots."""
    if url.startswith(UPLOAD_SCHEME):
        return store.child(url[len(UPLOAD_SCHEME):])
    if url.startswith("file://"):
        return LocalStore(resolve_local(url[len("file://"):], settings))
    return open_store(url, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region)


def upload_key(filename: str) -> str:
    """A safe relative key for an uploaded file name (folders kept: they are the groups)."""
    name = (filename or "").replace("\\", "/").strip("/")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or ":" in parts[0]:
        raise BadRequest(f"unsafe upload file name {filename!r}")
    return check_key("/".join(parts))


def save_uploads(files: list[tuple[str, BinaryIO]], target: Store, settings: Settings) -> int:
    """Store uploaded images (or one .zip, unpacked) under target; returns how many images."""
    if len(files) == 1 and files[0][0].lower().endswith(".zip"):
        return save_zip(files[0][1], target, settings)
    keys = [upload_key(filename) for filename, _ in files]  # all names checked before any write
    bad = [name for (name, _), key in zip(files, keys, strict=True) if not is_image_key(key)]
    if bad:
        raise BadRequest(f"not image file(s): {', '.join(map(repr, bad[:5]))} "
                         f"(extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
    if not files:
        raise SourceError("the upload holds no files")
    for key, (_, stream) in zip(keys, files, strict=True):
        target.put_stream(key, stream)
    return len(files)


def save_zip(stream: BinaryIO, target: Store, settings: Settings) -> int:
    """Unpack a .zip's images into target, enforcing member-count and size caps."""
    try:
        archive = zipfile.ZipFile(stream)
    except zipfile.BadZipFile:
        raise SourceError("the uploaded .zip is not a valid zip archive") from None
    members = [m for m in archive.infolist() if not m.is_dir()]
    if len(members) > settings.max_zip_members:
        raise PayloadTooLarge(f"the .zip has {len(members)} members; the limit is "
                              f"{settings.max_zip_members}")
    if sum(m.file_size for m in members) > settings.max_zip_bytes:
        raise PayloadTooLarge(f"the .zip unpacks to more than {settings.max_zip_bytes} bytes")
    images = [(m, key) for m in members if is_image_key(key := upload_key(m.filename))]
    if not images:  # every name was checked above, before anything was written
        raise SourceError("the uploaded .zip holds no images")
    try:
        for member, key in images:
            with archive.open(member) as src:
                target.put_stream(key, src)
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError, EOFError) as e:
        # corrupt member (CRC), encrypted, unsupported compression: the archive is unusable
        raise SourceError(f"the uploaded .zip can't be unpacked: {e}") from None
    return len(images)
