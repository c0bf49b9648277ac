"""Input sources for scoring jobs: an S3 prefix, a local folder under the allowed roots, uploads."""

from __future__ import annotations

import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import unquote

from facesense.errors import BadRequest, ObjectNotFound, PayloadTooLarge, SourceError
from facesense.settings import Settings
from facesense.store import LocalStore, Store, check_key, open_store, parse_s3_url
from facesense.urls import URLS_SCHEME, UrlSource, is_url_key, split_url_key

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


def is_image_key(key: str) -> bool:
    """True for keys with an image extension (any case), skipping hidden files and folders."""
    parts = key.split("/")
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return False
    return PurePosixPath(key).suffix.lower() in IMAGE_EXTENSIONS


def group_of(key: str) -> str:
    """An image's group (ad variant) is its first-level sub-folder; '' for top-level images.

    A URL item's group is the one its caller gave, else the URL's host (see facesense.urls).
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
    """The real path of a local folder, refused unless it lies inside an allowed root."""
    try:
        real = Path(path).expanduser().resolve(strict=True)
    except (RuntimeError, OSError, ValueError):  # missing, a link loop, a NUL byte
        raise SourceError(f"local folder {path!r} does not exist") from None
    if not inside_roots(real, settings.roots):
        raise SourceError(f"local folder {path!r} is outside the allowed roots "
                          "(FACESENSE_ALLOWED_ROOTS)")
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

    def open(self, key: str) -> BinaryIO:
        """A streaming reader; a file that links out of the roots is not there (checked again
        here, as a link may change between listing and reading)."""
        if not self._inside(key):
            raise ObjectNotFound(f"no object {key!r} inside the allowed roots")
        return super().open(key)

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
    """The store to read a job's images from; local folders are re-checked against the roots."""
    if url.startswith(URLS_SCHEME):
        return UrlSource(store, url[len(URLS_SCHEME):], settings)
    if url.startswith(UPLOAD_SCHEME):
        return store.child(url[len(UPLOAD_SCHEME):])
    if url.startswith("file://"):
        return LocalSource(resolve_local(file_url_path(url), settings), settings.roots)
    return open_store(url, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region)


def upload_key(filename: str) -> str:
    """A safe relative key for an uploaded file name (folders kept: they are the groups)."""
    name = (filename or "").replace("\\", "/").strip("/")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or ":" in parts[0]:
        raise BadRequest(f"unsafe upload file name {filename!r}")
    return check_key("/".join(parts))


def save_uploads(files: list[tuple[str, BinaryIO]], target: Store, settings: Settings,
                 skipped: list[dict] | None = None) -> int:
    """Store uploaded images (or one .zip, unpacked) under target; returns how many images.

    A .zip's non-image members are left out and appended to skipped ({name, reason})."""
    if len(files) == 1 and files[0][0].lower().endswith(".zip"):
        return save_zip(files[0][1], target, settings, skipped)
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


ZIP_RATIO_FLOOR = 1 << 20  # members below 1 MiB can't be bombs worth refusing
ZIP_ENTRY_BYTES = 1024  # generous central-directory bytes per member, to bound its parsing


def save_zip(stream: BinaryIO, target: Store, settings: Settings,
             skipped: list[dict] | None = None) -> int:
    """Unpack a .zip's images into target; returns how many.

    Every member is checked before anything is written: unsafe names (.., absolute), links,
    encryption and bombs (members, bytes, ratio) refuse the whole archive; non-image members
    are left out and appended to skipped. A failure while writing removes what was written.
    """
    _check_zip_directory(stream, settings)
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError):
        raise SourceError("the uploaded .zip is not a valid zip archive") from None
    members = [m for m in archive.infolist() if not m.is_dir()]
    if len(members) > settings.max_zip_members:
        raise PayloadTooLarge(f"the .zip has {len(members)} members; the limit is "
                              f"{settings.max_zip_members}")
    if sum(m.file_size for m in members) > settings.max_zip_bytes:
        raise PayloadTooLarge(f"the .zip unpacks to more than {settings.max_zip_bytes} bytes")
    images, keys = [], set()
    for member in members:
        key = _zip_member_key(member, settings)
        if not is_image_key(key):
            if skipped is not None:
                hidden = any(p.startswith(".") or p == "__MACOSX" for p in key.split("/"))
                skipped.append({"name": member.filename,
                                "reason": "hidden or system file" if hidden else "not an image"})
            continue
        if key in keys:  # zipfile reads whatever member comes last: ambiguous, refuse
            raise BadRequest(f".zip member {member.filename!r} appears more than once")
        keys.add(key)
        images.append((member, key))
    if not images:
        raise SourceError("the uploaded .zip holds no images")
    written = []
    try:
        for member, key in images:
            with archive.open(member) as src:  # zipfile stops at the declared size
                target.put_stream(key, src)
            written.append(key)
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError, EOFError) as e:
        for key in written:  # a job is never queued on half an archive: leave no debris
            target.delete(key)
        raise SourceError(f"the uploaded .zip can't be unpacked: {e}") from None
    return len(images)


def _check_zip_directory(stream: BinaryIO, settings: Settings) -> None:
    """Refuse a member count or central directory over the caps before zipfile parses it all
    (each parsed member costs memory; the end record's figures bound what zipfile reads)."""
    try:
        end = zipfile._EndRecData(stream)  # the end-of-central-directory record (zip64 too)
    except (OSError, ValueError, EOFError):
        end = None
    if not end:
        raise SourceError("the uploaded .zip is not a valid zip archive")
    entries, size = end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]
    if entries > settings.max_zip_members or size > settings.max_zip_members * ZIP_ENTRY_BYTES:
        raise PayloadTooLarge(f"the .zip has {entries} members; the limit is "
                              f"{settings.max_zip_members}")
    stream.seek(0)


def _zip_member_key(member: zipfile.ZipInfo, settings: Settings) -> str:
    """The store key of a .zip member, refusing names, links and sizes that are unsafe."""
    name = member.filename
    if stat.S_ISLNK(member.external_attr >> 16):
        raise BadRequest(f"unsafe .zip member {name!r}: a symbolic link")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise BadRequest(f"unsafe .zip member {name!r}: an absolute path")
    if ".." in name.replace("\\", "/").split("/"):
        raise BadRequest(f"unsafe .zip member {name!r}: '..' climbs out of the upload")
    if member.flag_bits & 0x1:
        raise SourceError(f".zip member {name!r} is encrypted")
    if (member.file_size > ZIP_RATIO_FLOOR
            and member.file_size > settings.max_zip_ratio * max(member.compress_size, 1)):
        ratio = member.file_size // max(member.compress_size, 1)
        raise PayloadTooLarge(f".zip member {name!r} expands {ratio}x (limit "
                              f"{settings.max_zip_ratio}x): refused as a zip bomb")
    return upload_key(name)
