"""A manifest job's checked manifest in the store (jobs/<id>/inputs/manifest.jsonl: a header
line, then one {image, group, meta} line per image in the manifest's order): read as the job's
source, and joined into its rows when they are merged."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from facesense.errors import ObjectNotFound
from facesense.inputs.keys import URL
from facesense.inputs.netguard import Limits, fetch
from facesense.inputs.paths import LocalSource, file_url_path, overlaps_store, system_folders
from facesense.settings import Settings
from facesense.storage import LocalStore, Store, layout, open_store, parse_s3_url


def _lines(store: Store, key: str) -> Iterator[dict]:
    """The stored copy's lines, read in chunks (an S3 body is not a full io object)."""
    with store.open(key) as stream:
        rest = b""
        while chunk := stream.read(1 << 16):
            *lines, rest = (rest + chunk).split(b"\n")
            yield from map(json.loads, lines)
        if rest.strip():
            yield json.loads(rest)


def entries(store: Store, key: str) -> Iterator[dict]:
    """The stored copy's image lines, streamed in order (the header line skipped)."""
    return (line for line in _lines(store, key) if "manifest" not in line)


def header(store: Store, key: str) -> dict:
    """The stored copy's description (its first line)."""
    lines = _lines(store, key)
    try:
        return next(lines)["manifest"]
    finally:
        lines.close()


def with_meta(store: Store, job_id: str, rows: Iterable[dict]) -> tuple[Iterable[dict], list[str]]:
    """Rows joined with their manifest lines (group and meta), and the meta columns; other
    jobs' rows unchanged (and no columns). Rows come in manifest order (a cancelled or retry
    job's are a subset, still in order), so one pass over the manifest joins them: memory
    stays flat whatever the job's size."""
    key = layout.manifest(job_id)
    if not store.exists(key):
        return rows, []
    columns = header(store, key)["columns"]

    def joined():
        lines, line = entries(store, key), None
        for row in rows:
            if line is None or line["image"] != row["image"]:  # else: another face, same line
                for line in lines:
                    if line["image"] == row["image"]:
                        break
                else:  # not found ahead: out of order (never expected); search from the top
                    lines = entries(store, key)
                    line = next((x for x in lines if x["image"] == row["image"]),
                                {"image": row["image"], "group": row["group"],
                                 "meta": dict.fromkeys(columns)})
            yield {**row, "group": line["group"], "meta": line["meta"]}

    return joined(), columns


class ManifestSource:
    """A job's stored manifest read like a store: list() gives its image keys in order, open()
    reads one where it lies, under the guards of folder, S3 and URL sources (a local file is
    re-checked against the roots when opened; a URL goes through the SSRF guard)."""

    def __init__(self, store: Store, key: str, settings: Settings):
        self.store, self.key, self.settings = store, key, settings
        self.limits = Limits.from_settings(settings)
        self._stores: dict[str, Store] = {}
        self._base: str | None = None
        self._own = store.root if isinstance(store, LocalStore) else None

    def list(self) -> Iterator[str]:
        """The image keys, in the manifest's order."""
        return (line["image"] for line in entries(self.store, self.key))

    def open(self, key: str, start: int = 0):
        """A reader of one listed image; ObjectNotFound / FetchError become its error row."""
        if URL.match(key):
            return io.BytesIO(fetch(key, self.limits)[start:])
        if key.startswith("s3://"):
            if overlaps_store(key, self.settings.store_url):
                raise ObjectNotFound(f"no object {key!r} outside the job store")
            bucket, name = parse_s3_url(key)
            return self._store(f"s3://{bucket}").open(name, start)
        if key.startswith("/"):
            return LocalSource(Path("/"), self.settings.roots, self._own,
                               system_folders(self.settings)).open(key[1:], start)
        return self._store(self.base).open(key, start)

    @property
    def base(self) -> str:
        """The folder relative image paths start from."""
        if self._base is None:
            self._base = header(self.store, self.key)["base"]
        return self._base

    def _store(self, url: str) -> Store:
        if url not in self._stores:  # a race builds one twice: harmless
            if url.startswith("file://"):
                self._stores[url] = LocalSource(Path(file_url_path(url)), self.settings.roots,
                                                self._own, system_folders(self.settings))
            else:
                self._stores[url] = open_store(url, endpoint_url=self.settings.s3_endpoint_url,
                                               region=self.settings.s3_region)
        return self._stores[url]
