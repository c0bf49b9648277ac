"""A video in any source opened as a seekable file for the decoder, read only where it is needed.

A local file is seekable as it is. An S3 object is read by ranged GETs: a seek drops the current
body and the next read opens the object again at the new offset, so a shard of a long video
reads its header, its index and its own range, never the whole object. A source whose reader
is neither (a URL fetched whole, already in memory as BytesIO) is used as it is.
"""

from __future__ import annotations

import io
import os
from typing import BinaryIO

from facesense.storage import Store


def open_video(source: Store, key: str) -> BinaryIO:
    """A seekable binary reader of one video in a source (close it when done)."""
    body = source.open(key)
    if _seekable(body):
        return body
    size = getattr(body, "_content_length", None)  # botocore's StreamingBody knows its length
    if size is None:
        return _spooled(body)
    return RangedReader(source, key, int(size), body)


def _seekable(body) -> bool:
    try:
        return bool(body.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _spooled(body) -> BinaryIO:
    """A body of unknown length copied to an anonymous temporary file (deleted on close)."""
    import tempfile

    out = tempfile.TemporaryFile()  # noqa: SIM115 - the caller closes it (open_video returns it)
    with body:
        while chunk := body.read(1 << 20):
            out.write(chunk)
    out.seek(0)
    return out


class RangedReader(io.RawIOBase):
    """Reads an object from a store by ranges: a seek reopens the object at the new offset."""

    def __init__(self, store: Store, key: str, size: int, body=None):
        super().__init__()
        self.store, self.key, self.size = store, key, size
        self.pos, self.body = 0, body
        self.opens = 1 if body is not None else 0  # GETs made, and bytes read: what a shard cost
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Move to an offset; the next read opens the object there (if it moved)."""
        target = {os.SEEK_SET: 0, os.SEEK_CUR: self.pos, os.SEEK_END: self.size}[whence] + offset
        target = max(0, target)
        if target != self.pos:
            self._drop()
            self.pos = target
        return self.pos

    def readinto(self, buffer) -> int:
        """Fill buffer from the current offset (0 at the end of the object)."""
        if self.pos >= self.size:
            return 0
        if self.body is None:
            self.body = self.store.open(self.key, self.pos)
            self.opens += 1
        data = self.body.read(min(len(buffer), self.size - self.pos))
        buffer[:len(data)] = data
        self.pos += len(data)
        self.read_bytes += len(data)
        return len(data)

    def close(self) -> None:
        self._drop()
        super().close()

    def _drop(self) -> None:
        if self.body is not None:
            self.body.close()
            self.body = None
