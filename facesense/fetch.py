"""Reading one image from a path or an http(s) URL, with size and time limits."""

from __future__ import annotations

from pathlib import Path

import requests

from facesense.errors import BadRequest, SourceError


def fetch_image(where: str, *, max_bytes: int, timeout: float = 20) -> bytes:
    """The bytes of a local image file or an http(s) URL; refuses other schemes and big files."""
    if where.startswith(("http://", "https://")):
        try:
            with requests.get(where, stream=True, timeout=timeout) as resp:
                resp.raise_for_status()
                data = bytearray()
                for chunk in resp.iter_content(1 << 16):
                    data += chunk
                    if len(data) > max_bytes:
                        raise SourceError(f"{where} is larger than {max_bytes} bytes")
                return bytes(data)
        except requests.RequestException as e:
            raise SourceError(f"cannot fetch {where}: {e}") from None
    if "://" in where:
        raise BadRequest(f"unsupported URL {where!r}: use a file path, http:// or https://")
    path = Path(where)
    if not path.is_file():
        raise SourceError(f"no image file at {where}")
    if path.stat().st_size > max_bytes:
        raise SourceError(f"{where} is larger than {max_bytes} bytes")
    return path.read_bytes()
