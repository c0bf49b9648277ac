"""A store in a local folder: atomic writes (temp file + rename), private to the owner."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from facesense.errors import ObjectNotFound
from facesense.storage.protocol import COPY_CHUNK, check_key


class LocalStore:
    """A folder on disk; writes are atomic (temp file + rename) and private to the owner."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.uri = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def get(self, key: str) -> bytes:
        """Whole object as bytes."""
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"no object {key!r} in {self.uri}") from None

    def put(self, key: str, data: bytes) -> None:
        """Write an object atomically: readers see the old object or the new one, never half."""
        with self._writer(key) as f:
            f.write(data)

    def put_stream(self, key: str, stream: BinaryIO) -> None:
        """Write an object from a file-like object without holding it in memory."""
        with self._writer(key) as f:
            shutil.copyfileobj(stream, f, COPY_CHUNK)

    def _writer(self, key: str):
        path = self._path(key)
        _make_folders(path.parent)
        # mkstemp creates the file 0600: results hold people's faces' scores.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        return _AtomicFile(os.fdopen(fd, "wb"), tmp, path)

    def open(self, key: str, start: int = 0) -> BinaryIO:
        """A streaming reader, from byte start."""
        try:
            f = self._path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"no object {key!r} in {self.uri}") from None
        if start:
            f.seek(start)
        return f

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under prefix, recursively, in sorted order; temp files are skipped."""
        base = self.root / prefix if prefix else self.root
        if base.is_dir():
            yield from self._walk(base)

    def folders(self, prefix: str = "") -> Iterator[str]:
        """Names of the sub-folders directly under prefix, sorted (links not followed)."""
        base = self.root / check_key(prefix) if prefix else self.root
        try:
            with os.scandir(base) as it:
                yield from sorted(e.name for e in it if e.is_dir(follow_symlinks=False))
        except OSError:  # no such folder: nothing under it
            return

    def _walk(self, folder: Path) -> Iterator[str]:
        # Sort each folder's entries as their keys sort (a sub-folder as 'name/'), so keys come
        # out in S3's order, not files-then-folders; symlinked folders are not followed.
        try:
            with os.scandir(folder) as it:
                entries = sorted((e.name + "/" if e.is_dir() else e.name, e) for e in it)
        except OSError:  # unreadable folder: skipped, as os.walk did
            return
        for name, entry in entries:
            if name.endswith("/"):
                if not entry.is_symlink():
                    yield from self._walk(Path(entry.path))
            elif not name.startswith(".tmp-"):
                yield Path(entry.path).relative_to(self.root).as_posix()

    def exists(self, key: str) -> bool:
        """True if the object exists."""
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        """Remove an object; missing is fine. Folders it leaves empty go too (as on S3, where
        a folder is only its keys), except the top-level ones (jobs/, models/)."""
        path = self._path(key)
        path.unlink(missing_ok=True)
        for folder in path.parents:
            if folder.parent == self.root or self.root not in folder.parents:
                break
            try:
                folder.rmdir()
            except OSError:  # not empty (or a writer just made it): keep it
                break

    def child(self, prefix: str) -> LocalStore:
        """A store rooted at a sub-folder."""
        return LocalStore(self._path(prefix))

    def uri_for(self, key: str) -> str:
        """A URL naming one object."""
        return self._path(key).as_uri()


def _make_folders(folder: Path) -> None:
    """Create folder and its missing parents, each 0750 (mkdir(parents=True) gives the parents
    the default mode, which left jobs/<id> 0755: readable by every local user)."""
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for f in reversed(missing):
        # another writer may make it first; a file there fails mkstemp below
        with contextlib.suppress(FileExistsError):
            f.mkdir(mode=0o750)


class _AtomicFile:
    """A file written under a temp name and renamed into place only on success."""

    def __init__(self, f, tmp: str, path: Path):
        self.f, self.tmp, self.path = f, tmp, path

    def __enter__(self):
        return self.f

    def __exit__(self, exc_type, *_):
        try:
            self.f.close()
            if exc_type is None:
                os.replace(self.tmp, self.path)  # may fail too (a name too long, a folder there)
                return
        except BaseException:
            os.unlink(self.tmp)  # no temp file outlives a failed write
            raise
        os.unlink(self.tmp)
