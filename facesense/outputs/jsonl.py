"""JSON lines read in chunks from any stream (S3 bodies are not full io objects)."""

from __future__ import annotations

import json
from collections.abc import Iterator


def iter_lines(stream, chunk_size: int = 1 << 16) -> Iterator[bytes]:
    """Lines of a binary stream read in chunks (S3 bodies are not full io objects)."""
    rest = b""
    while chunk := stream.read(chunk_size):
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        yield from lines
    if rest:
        yield rest


def iter_jsonl(stream) -> Iterator[dict]:
    """Rows of a JSON-lines stream, read line by line."""
    for line in iter_lines(stream):
        if line.strip():
            yield json.loads(line)
