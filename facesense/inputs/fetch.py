"""Reading one image from a path or an http(s) URL, with size and time limits."""

from __future__ import annotations

from pathlib import Path

from facesense.errors import BadRequest, SourceError
from facesense.inputs.netguard import FetchError, Limits, fetch
from facesense.settings import Settings


def fetch_image(where: str, settings: Settings) -> bytes:
    """The bytes of a local image file or an http(s) URL (through the same SSRF guard as
    URL jobs: FACESENSE_URL_*); refuses other schemes and files over max_image_bytes."""
    limits = Limits.from_settings(settings)
    if where.startswith(("http://", "https://")):
        try:
            return fetch(where, limits)
        except FetchError as e:
            raise SourceError(f"cannot fetch {where}: {e}") from None
    if "://" in where:
        raise BadRequest(f"unsupported URL {where!r}: use a file path, http:// or https://")
    path = Path(where)
    if not path.is_file():
        raise SourceError(f"no image file at {where}")
    if path.stat().st_size > limits.max_bytes:
        raise SourceError(f"{where} is larger than {limits.max_bytes} bytes")
    return path.read_bytes()
