"""Uploaded files and .zip archives, checked and written into the store before a job is queued."""

from __future__ import annotations

import contextlib
import logging
import shutil
import stat
import zipfile
from collections.abc import Iterator
from typing import BinaryIO

from facesense.errors import BadRequest, PayloadTooLarge, SourceError
from facesense.inputs.keys import IMAGE_EXTENSIONS, SCORED_VIDEOS, is_scored_key
from facesense.settings import Settings
from facesense.storage import LocalStore, Store, check_key

log = logging.getLogger(__name__)

# Names must fit every store: a file name (one component) in Linux's NAME_MAX, the whole key,
# with the store's own prefix in front, in S3's 1,024-byte keys and far below PATH_MAX.
MAX_NAME_PART_BYTES = 255
MAX_NAME_BYTES = 512
MAX_NAME_DEPTH = 32  # folders: the group is the first one, more is only a way to break mkdir


def shown(name: str, limit: int = 80) -> str:
    """A file name for an error message: quoted, escapes visible, cut if long."""
    return repr(name) if len(name) <= limit else f"{name[:limit]!r}... ({len(name)} characters)"


def upload_key(filename: str) -> str:
    """A safe relative key for an uploaded file name (folders kept: they are the groups)."""
    name = (filename or "").replace("\\", "/").strip("/")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or ":" in parts[0]:
        raise BadRequest(f"unsafe upload file name {shown(filename or '')}")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise BadRequest(f"unsafe upload file name {shown(filename)}: control characters")
    key = "/".join(parts)
    if (len(key.encode()) > MAX_NAME_BYTES
            or max(len(p.encode()) for p in parts) > MAX_NAME_PART_BYTES):
        raise BadRequest(f"upload file name {shown(filename)} is too long (at most "
                         f"{MAX_NAME_BYTES} bytes, {MAX_NAME_PART_BYTES} per folder or file)")
    if len(parts) > MAX_NAME_DEPTH + 1:
        raise BadRequest(f"upload file name {shown(filename)} is nested too deep (at most "
                         f"{MAX_NAME_DEPTH} folders)")
    return check_key(key)


def check_unique(named: list[tuple[str, str]], what: str) -> None:
    """Refuse two files stored under one key (one would replace the other: one row for two
    images), and a key that is also another's folder: the same rule for files and .zip
    members. named holds (name as sent, key)."""
    seen: dict[str, str] = {}
    for name, key in named:
        if key in seen:
            raise BadRequest(f"{what} {shown(name)} appears more than once (as {shown(seen[key])}"
                             " too): give each file its own name")
        seen[key] = name
    for name, key in named:
        parts = key.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if folder in seen:
                raise BadRequest(f"{what} {shown(seen[folder])} is also a folder in the upload "
                                 f"(of {shown(name)}): give each file its own name")


def save_uploads(files: list[tuple[str, BinaryIO]], target: Store, settings: Settings,
                 skipped: list[dict] | None = None) -> int:
    """Store uploaded images (or one .zip, unpacked) under target; returns how many images.

    Every name is checked before anything is written, and a failure while writing removes
    what was written. A .zip's non-image members are left out and appended to skipped."""
    if len(files) == 1 and files[0][0].lower().endswith(".zip"):
        return save_zip(files[0][1], target, settings, skipped)
    keys = [upload_key(filename) for filename, _ in files]  # all names checked before any write
    bad = [name for (name, _), key in zip(files, keys, strict=True) if not is_scored_key(key)]
    if bad:
        raise BadRequest(f"not image file(s): {', '.join(map(shown, bad[:5]))} "
                         f"(extensions: {', '.join(sorted(IMAGE_EXTENSIONS | SCORED_VIDEOS))})")
    if not files:
        raise SourceError("the upload holds no files")
    check_unique([(name, key) for (name, _), key in zip(files, keys, strict=True)],
                 "upload file name")
    with _all_or_nothing(target) as written:
        for key, (_, stream) in zip(keys, files, strict=True):
            target.put_stream(key, stream)
            written.append(key)
    return len(files)


@contextlib.contextmanager
def _all_or_nothing(target: Store) -> Iterator[list[str]]:
    """The keys written so far; if the block fails, they are deleted (a job is never queued
    on part of an upload, and no part of one is left behind)."""
    written: list[str] = []
    try:
        yield written
    except BaseException:
        for key in written:
            try:
                target.delete(key)
            except Exception as e:  # the store is failing: the original error matters more
                log.warning("could not remove %s of a failed upload: %s", key, e)
        raise


@contextlib.contextmanager
def upload_or_nothing(store: Store, prefix: str) -> Iterator[Store]:
    """The store to write an upload into under prefix; if the block fails (bad input, a store
    error, a job that can't be recorded or queued), nothing stays under prefix."""
    try:
        yield store.child(prefix)
    except BaseException:
        discard(store, prefix)
        raise


def discard(store: Store, prefix: str) -> None:
    """Remove everything under prefix: objects, and on a local store its folders and any temp
    file, and its parent folder when that is left empty (a job's folder made for the upload)."""
    try:
        if isinstance(store, LocalStore):
            folder = store.root / check_key(prefix)
            shutil.rmtree(folder, ignore_errors=True)
            if "/" in prefix:
                with contextlib.suppress(OSError):
                    folder.parent.rmdir()
            return
        target = store.child(prefix)
        for key in list(target.list()):
            target.delete(key)
    except Exception as e:  # the store is failing: the original error matters more
        log.warning("could not remove the failed upload under %s: %s", prefix, e)


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
    images = []
    for member in members:
        key = _zip_member_key(member, settings)
        if not is_scored_key(key):
            if skipped is not None:
                hidden = any(p.startswith(".") or p == "__MACOSX" for p in key.split("/"))
                skipped.append({"name": member.filename,
                                "reason": "hidden or system file" if hidden else "not an image"})
            continue
        images.append((member, key))
    if not images:
        raise SourceError("the uploaded .zip holds no images")
    # zipfile reads whatever member comes last: ambiguous, refused as for multipart files
    check_unique([(m.filename, key) for m, key in images], ".zip member")
    _check_ratio(sum(m.file_size for m, _ in images), stream, settings)
    try:
        with _all_or_nothing(target) as written:
            for member, key in images:
                with archive.open(member) as src:  # zipfile stops at the declared size
                    target.put_stream(key, src)
                written.append(key)
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError, EOFError) as e:
        raise SourceError(f"the uploaded .zip can't be unpacked: {e}") from None
    return len(images)


def _check_ratio(total: int, stream: BinaryIO, settings: Settings) -> None:
    """Refuse an archive whose images (total bytes) expand more than the ratio limit over the
    whole upload: many members under the per-member floor (1,000 x 1 MiB of zeros) are a bomb
    too."""
    size = max(stream.seek(0, 2), 1)
    stream.seek(0)
    if total > ZIP_RATIO_FLOOR and total > settings.max_zip_ratio * size:
        raise PayloadTooLarge(f"the .zip expands {total // size}x in all ({total} bytes from "
                              f"{size}; limit {settings.max_zip_ratio}x, "
                              "FACESENSE_MAX_ZIP_RATIO): refused as a zip bomb")


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
