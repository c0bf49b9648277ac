"""Input sources for scoring jobs: an S3 prefix, a local folder under the allowed roots, uploads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import unquote

from facesense.errors import BadRequest, ObjectNotFound, SourceError
from facesense.inputs.urls import URLS_SCHEME, UrlSource, is_url_key, split_url_key
from facesense.settings import Settings
from facesense.storage import LocalStore, Store, open_store, parse_s3_url

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


def is_image_key(key: str) -> bool:
    """True for keys with an image extension (any case), skipping hidden files and folders."""
    parts = key.split("/")
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return False
    return PurePosixPath(key).suffix.lower() in IMAGE_EXTENSIONS


def group_of(key: str) -> str:
    """An image's group (ad variant) is its first-level sub-folder; '' for top-level images.

    A URL item's group is the one its caller gave, else the URL's host (see facesense.inputs.urls).
    """
    if is_url_key(key):
        return split_url_key(key)[0]
    head, sep, _ = key.partition("/")
    return head if sep else ""


def list_images(store: Store) -> Iterator[str]:
    """Image keys under a source store, recursively, in a stable sorted order."""
    if isinstance(store, UrlSource):  # every URL is an item, whatever its path looks like
        return iter(store.list())
    return (key for key in store.list() if is_image_key(key))


def inside_roots(real: Path, roots: tuple[Path, ...]) -> bool:
    """True if a real (resolved) path is one of the roots or lies under one."""
    return any(real == root or real.is_relative_to(root) for root in roots)


def resolve_local(path: str, settings: Settings) -> Path:
    """The real path of a local folder, refused unless it lies inside an allowed root.

    The roots are checked first, on the path as far as it exists: nothing else is said about a
    path outside them (whether it exists is not for a caller to learn).
    """
    outside = SourceError(f"local folder {path!r} is outside the allowed roots "
                          "(FACESENSE_ALLOWED_ROOTS)")
    try:
        if not inside_roots(Path(path).expanduser().resolve(strict=False), settings.roots):
            raise outside
        real = Path(path).expanduser().resolve(strict=True)
    except (RuntimeError, OSError, ValueError):  # missing, a link loop, a NUL byte
        raise SourceError(f"local folder {path!r} does not exist") from None
    if not inside_roots(real, settings.roots):
        raise outside
    if not real.is_dir():
        raise SourceError(f"{path!r} is not a folder")
    return real


def file_url_path(url: str) -> str:
    """The path of a file:// URL (percent-escapes decoded: Path.as_uri writes them)."""
    return unquote(url[len("file://"):])


class LocalSource(LocalStore):
    """A local source folder whose files are listed and read only if their real path (a file
    may be a symlink) lies inside the allowed roots; others are not inputs at all."""

    def __init__(self, root: Path, roots: tuple[Path, ...]):
        super().__init__(root)
        self.roots = roots

    def _inside(self, key: str) -> bool:
        try:
            return inside_roots(self._path(key).resolve(strict=True), self.roots)
        except (OSError, RuntimeError):
            return False

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under prefix whose files stay inside the allowed roots."""
        return (key for key in super().list(prefix) if self._inside(key))

    def open(self, key: str, start: int = 0) -> BinaryIO:
        """A streaming reader; a file that links out of the roots is not there (checked again
        here, as a link may change between listing and reading)."""
        if not self._inside(key):
            raise ObjectNotFound(f"no object {key!r} inside the allowed roots")
        return super().open(key, start)

    def get(self, key: str) -> bytes:
        """Whole object as bytes, under the same rule as open."""
        with self.open(key) as f:
            return f.read()

    def child(self, prefix: str) -> LocalSource:
        """A sub-folder, under the same roots."""
        return LocalSource(self._path(prefix), self.roots)


def normalize_source(source: str, settings: Settings) -> str:
    """Validate a job's source and return its canonical URL (s3://... or file:///real/path)."""
    if not isinstance(source, str) or not source.strip():
        raise BadRequest("'source' must be a non-empty string: an s3:// URL or a local folder")
    source = source.strip()
    if source.startswith("s3://"):
        open_store(source)  # validates the URL's shape
        canonical = source.rstrip("/")
    elif "://" in source and not source.startswith("file://"):
        raise SourceError(f"unsupported source {source!r}: use s3://bucket/prefix or a local folder")
    else:
        local = file_url_path(source) if source.startswith("file://") else source
        canonical = resolve_local(local, settings).as_uri()
    if overlaps_store(canonical, settings.store_url):
        raise SourceError(f"source {source!r} overlaps the store that holds every job's files")
    return canonical


def overlaps_store(source: str, store: str) -> bool:
    """True if a canonical source and the main store contain one another (or are the same):
    a job on it could list other callers' uploads, results and thumbnails."""
    if source.startswith("s3://") != store.startswith("s3://"):
        return False
    if source.startswith("s3://"):
        (bucket, prefix), (store_bucket, store_prefix) = parse_s3_url(source), parse_s3_url(store)
        a, b = PurePosixPath("/", prefix), PurePosixPath("/", store_prefix)
        return bucket == store_bucket and (a == b or a in b.parents or b in a.parents)
    a = Path(file_url_path(source))
    b = Path(file_url_path(store) if store.startswith("file://") else store).resolve()
    return a == b or a in b.parents or b in a.parents


UPLOAD_SCHEME = "store:"


def upload_source(prefix: str) -> str:
    """The source URL of files uploaded into the main store under prefix."""
    return UPLOAD_SCHEME + prefix


def open_source(url: str, settings: Settings, store: Store) -> Store:
    """The store to read a job's images from; a local folder is checked against the roots
    here, and every file in it again when opened."""
    if url.startswith(URLS_SCHEME):
        return UrlSource(store, url[len(URLS_SCHEME):], settings)
    if url.startswith(UPLOAD_SCHEME):
        return store.child(url[len(UPLOAD_SCHEME):])
    if url.startswith("file://"):
        return LocalSource(resolve_local(file_url_path(url), settings), settings.roots)
    return open_store(url, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region)
