"""Local paths a job may read: inside the allowed roots, outside the store and the folders the
system writes (one guard, for a folder or a file), and read without following any link."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import unquote

from facesense.errors import ObjectNotFound, SourceError
from facesense.settings import Settings
from facesense.storage import LocalStore, parse_s3_url


def file_url_path(url: str) -> str:
    """The path of a file:// URL (percent-escapes decoded: Path.as_uri writes them)."""
    return unquote(url[len("file://"):])


def inside_roots(real: Path, roots: tuple[Path, ...]) -> bool:
    """True if a real (resolved) path is one of the roots or lies under one."""
    return any(real == root or real.is_relative_to(root) for root in roots)


def system_folders(settings: Settings) -> tuple[Path, ...]:
    """The folders the system writes (the data dir: the embedded Redis and its password, the
    training caches; a local store): never an input, whatever the roots say."""
    store = settings.store_url
    folders = [Path(settings.data_dir).expanduser().resolve()]
    if not store.startswith("s3://"):
        folders.append(Path(file_url_path(store) if store.startswith("file://") else store)
                       .expanduser().resolve())
    return tuple(folders)


def outside_roots(what: str, settings: Settings) -> SourceError:
    """The refusal of a path outside the allowed roots (saying so when there are none)."""
    why = ("FACESENSE_ALLOWED_ROOTS is empty: the server reads no local folder"
           if not settings.roots else "FACESENSE_ALLOWED_ROOTS")
    return SourceError(f"{what} is outside the allowed roots ({why})")


def private_path(real: Path, settings: Settings, what: str) -> None:
    """Refuse a real path inside a folder the system writes (422, the same for every path
    there, existing or not)."""
    if inside_roots(real, system_folders(settings)):
        raise SourceError(f"{what} lies in a folder the server writes (its data dir or store), "
                          "which is never an input")


KINDS = {"folder": Path.is_dir, "file": Path.is_file}


def checked_path(path: str, settings: Settings, what: str, kind: str) -> Path:
    """The real path of a local folder or file (kind), refused unless it lies inside an allowed
    root and outside the folders the system writes (the store among them).

    The roots are checked first, on the path as far as it exists: nothing else is said about a
    path outside them (whether it exists is not for a caller to learn).
    """
    outside = outside_roots(what, settings)
    try:
        if not inside_roots(Path(path).expanduser().resolve(strict=False), settings.roots):
            raise outside
        real = Path(path).expanduser().resolve(strict=True)
    except (RuntimeError, OSError, ValueError):  # missing, a link loop, a NUL byte
        raise SourceError(f"{what} does not exist") from None
    if not inside_roots(real, settings.roots):
        raise outside
    private_path(real, settings, what)
    if not KINDS[kind](real):
        raise SourceError(f"{what} is not a {kind}")
    return real


def resolve_local(path: str, settings: Settings) -> Path:
    """The real path of a job's local source folder, under checked_path's guard."""
    return checked_path(path, settings, f"local folder {path!r}", "folder")


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


class LocalSource(LocalStore):
    """A local source folder whose files are listed and read only if their real path (a file
    may be a symlink) lies inside the allowed roots and outside the main store (another job's
    uploads, results and thumbnails) and the other folders the system writes (private); others
    are not inputs at all."""

    def __init__(self, root: Path, roots: tuple[Path, ...], store: Path | None = None,
                 private: tuple[Path, ...] = ()):
        super().__init__(root)
        self.roots, self.store = roots, store
        self.private = private + ((store,) if store is not None else ())

    def _allowed(self, real: Path) -> bool:
        return inside_roots(real, self.roots) and not inside_roots(real, self.private)

    def _real(self, key: str) -> Path | None:
        """The file's real path if it may be read, else None."""
        try:
            real = self._path(key).resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        return real if self._allowed(real) else None

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under prefix whose files stay inside the allowed roots and out of the store."""
        return (key for key in super().list(prefix) if self._real(key))

    def exists(self, key: str) -> bool:
        """True if the object exists and may be read."""
        return self._real(key) is not None and super().exists(key)

    def open(self, key: str, start: int = 0) -> BinaryIO:
        """A streaming reader of the checked real path, opened without following any link: a
        link swapped after the check (the name, or a folder on the way) can't lead elsewhere."""
        real = self._real(key)
        if real is None:
            raise ObjectNotFound(f"no object {key!r} inside the allowed roots")
        try:
            f = os.fdopen(open_real(real), "rb")
        except OSError:  # ELOOP / ENOTDIR: a component became a link since it was checked
            raise ObjectNotFound(f"no object {key!r} inside the allowed roots "
                                 "(it changed while being opened)") from None
        if start:
            f.seek(start)
        return f

    def get(self, key: str) -> bytes:
        """Whole object as bytes, under the same rule as open."""
        with self.open(key) as f:
            return f.read()

    def child(self, prefix: str) -> LocalSource:
        """A sub-folder, under the same roots and store."""
        return LocalSource(self._path(prefix), self.roots, self.store, self.private)


# O_PATH walks folders the server may cross but not list (0711 homes); O_NONBLOCK: a FIFO
# named face.jpg must not hang a worker's open (it is then refused as not a regular file).
_WALK = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_NOFOLLOW
_LEAF = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK


def open_real(real: Path) -> int:
    """A descriptor of the regular file at a real (link-free, absolute) path, opened one
    component at a time from '/' with O_NOFOLLOW: nothing on the way can be a link."""
    fd = os.open("/", _WALK)
    try:
        for part in real.parts[1:-1]:
            parent, fd = fd, -1
            try:
                fd = os.open(part, _WALK, dir_fd=parent)
            finally:
                os.close(parent)
        leaf = os.open(real.name, _LEAF, dir_fd=fd)
    finally:
        if fd >= 0:
            os.close(fd)
    if not stat.S_ISREG(os.fstat(leaf).st_mode):
        os.close(leaf)
        raise OSError(errno.EINVAL, f"{real} is not a regular file")
    os.set_blocking(leaf, True)
    return leaf
