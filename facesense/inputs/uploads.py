"""Uploaded files and .zip archives, checked and written into the store before a job is queued."""

from __future__ import annotations

import stat
import zipfile
from typing import BinaryIO

from facesense.errors import BadRequest, PayloadTooLarge, SourceError
from facesense.inputs.sources import IMAGE_EXTENSIONS, is_image_key
from facesense.settings import Settings
from facesense.storage import Store, check_key


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
