"""The storage protocol every store implements, key checks, and bounded reads."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, Protocol

COPY_CHUNK = 1 << 20


class Store(Protocol):
    """Keys are '/'-separated relative paths; every method is safe to call from many threads."""

    uri: str

    def get(self, key: str) -> bytes: ...
    def put(self, key: str, data: bytes) -> None: ...
    def put_stream(self, key: str, stream: BinaryIO) -> None: ...
    def open(self, key: str, start: int = 0) -> BinaryIO: ...  # from byte start
    def list(self, prefix: str = "") -> Iterator[str]: ...
    def folders(self, prefix: str = "") -> Iterator[str]: ...  # names directly under prefix
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def child(self, prefix: str) -> Store: ...
    def uri_for(self, key: str) -> str: ...


def check_key(key: str) -> str:
    """Reject keys that could escape the store's root ('..', absolute, empty parts)."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in key:
        raise ValueError(f"invalid storage key: {key!r}")
    return key


def join(*parts: str) -> str:
    """Join key parts with '/', ignoring empty ones."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


class TooLarge(ValueError):
    """An object is larger than the caller's limit (checked while streaming, not after)."""


def read_limited(store: Store, key: str, max_bytes: int) -> bytes:
    """An object's bytes, refusing (TooLarge) as soon as more than max_bytes arrive."""
    with store.open(key) as stream:
        data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise TooLarge(f"file is larger than the {max_bytes}-byte limit")
    return data
