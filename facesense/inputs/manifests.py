"""A scoring job over a manifest: a CSV or JSON Lines file naming each image and the analyst's
own columns (participant, session, variant...), checked line by line once at submission.

The manifest streams in and its checked copy streams out through a temporary file: a request's
memory stays flat whatever the manifest's size. The checked copy is stored under the job
(facesense.inputs.manifest_source reads it); the job's source names it, so the planner lists it
like any source, and the merge joins each row with its line's columns.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import tempfile
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import BinaryIO

from facesense.errors import BadRequest, ObjectNotFound, PayloadTooLarge, SourceError
from facesense.inputs.keys import URL, default_group
from facesense.inputs.manifest_images import image_key
from facesense.inputs.manifest_parse import (
    IMAGE,
    check_cells,
    csv_rows,
    is_jsonl,
    jsonl_rows,
    lines,
)
from facesense.inputs.paths import checked_path, file_url_path, open_real, overlaps_store
from facesense.inputs.sources import MANIFEST_SCHEME
from facesense.settings import Settings
from facesense.storage import Store, check_key, layout, open_store, parse_s3_url

SPOOL_BYTES = 1 << 20  # a checked copy larger than this goes to a temporary file
LineCheck = Callable[[object, int], None]  # (a line's image cell, its number): raises to refuse


def read_manifest(where: str, settings: Settings) -> tuple[BinaryIO, str]:
    """An open stream of a manifest the server reads (a file under the allowed roots, or an
    s3:// object; the caller closes it) and the folder its relative image paths start from
    (a file:// or s3:// URL). Its size is checked as it is read."""
    if not isinstance(where, str) or not where.strip():
        raise BadRequest("'manifest' must be a non-empty string: an s3:// URL or a server-side file")
    where = where.strip()
    if where.startswith("s3://"):
        bucket, key = parse_s3_url(where)
        if not key or overlaps_store(where.rstrip("/"), settings.store_url):
            raise SourceError(f"manifest {where!r} is not a file outside the job store")
        try:
            check_key(key)
        except ValueError:  # S3 keeps '..' literally, but a gateway may not
            raise BadRequest(f"manifest {where!r}: {key!r} is not a valid S3 key (no empty, '.' "
                             "or '..' parts, no backslash)") from None
        store = open_store(f"s3://{bucket}", endpoint_url=settings.s3_endpoint_url,
                           region=settings.s3_region)
        try:
            stream = store.open(key)
        except ObjectNotFound:
            raise SourceError(f"manifest {where!r} does not exist") from None
        return stream, f"s3://{bucket}/{posixpath.dirname(key)}".rstrip("/")
    if "://" in where and not where.startswith("file://"):
        raise SourceError(f"unsupported manifest {where!r}: use s3://bucket/key or a server-side file")
    real = checked_path(file_url_path(where) if where.startswith("file://") else where,
                        settings, f"manifest {where!r}", "file")
    return os.fdopen(open_real(real), "rb"), real.parent.as_uri()


def normalise(stream: BinaryIO, name: str, base: str, group_by: str | None,
              settings: Settings, out: BinaryIO, check: LineCheck | None = None) -> dict:
    """Write the checked copy of a manifest (JSON Lines) to out; its description for the job
    record.

    base is the folder relative image paths start from ('' for an uploaded manifest). The first
    bad line ends the read, named in the refusal: a 400 for the manifest's own faults, a 422
    for an image outside the allowed roots or missing, a 413 past FACESENSE_MANIFEST_MAX_ROWS,
    FACESENSE_URL_MAX_PER_JOB image URLs or FACESENSE_MANIFEST_MAX_BYTES. check, if given,
    sees each line's image cell first (the caller's scopes).
    """
    source = lines(stream, settings.manifest_max_bytes)
    first = next(source, None)
    jsonl = is_jsonl(name, first[1] if first else "")
    header: list[str] = []
    keys: dict[str, None] = {}
    rows = jsonl_rows(source, first, keys) if jsonl else csv_rows(source, first, header)
    cap, url_cap = settings.manifest_max_rows, settings.url_max_per_job
    seen: dict[str, int] = {}  # an image's identity -> its line (bounded by the row cap)
    urls = 0
    with tempfile.SpooledTemporaryFile(SPOOL_BYTES) as body:
        for number, row in rows:
            if group_by is not None and header and group_by not in header:
                raise BadRequest(f"group_by {group_by!r} is not a column of the manifest")
            if len(seen) >= cap:
                raise PayloadTooLarge(f"line {number}: the manifest lists more than {cap} images "
                                      "(FACESENSE_MANIFEST_MAX_ROWS)")
            check_cells(row, number)
            if check is not None:
                check(row[IMAGE], number)
            key, identity = image_key(row[IMAGE], number, base, settings)
            if identity in seen:
                raise BadRequest(f"line {number}: duplicate row: its image is already listed on "
                                 f"line {seen[identity]}")
            seen[identity] = number
            if URL.match(key):
                urls += 1
                if urls > url_cap:  # one limit for a job's URL fetches, whatever the form
                    raise PayloadTooLarge(f"line {number}: the manifest lists more than {url_cap} "
                                          "image URLs (FACESENSE_URL_MAX_PER_JOB)")
            group = default_group(key) if group_by is None else _text(row.get(group_by))
            meta = {c: v for c, v in row.items() if c != IMAGE}
            body.write(_line({"image": key, "group": group, "meta": meta}))
        columns = header or list(keys)
        if not seen:
            raise BadRequest("line 2: the manifest lists no images")
        if group_by is not None and group_by not in columns:
            raise BadRequest(f"group_by {group_by!r} is not a column of the manifest")
        meta_columns = [c for c in columns if c != IMAGE]
        about = {"name": PurePosixPath(name).name[:200], "base": base, "rows": len(seen),
                 "columns": meta_columns, "group_by": group_by}
        out.write(_line({"manifest": about}))
        body.seek(0)
        for raw in body:  # every line's meta in the columns' order (JSON Lines: null if absent)
            line = json.loads(raw)
            line["meta"] = {c: line["meta"].get(c) for c in meta_columns}
            out.write(_line(line))
    return about


def _line(value: dict) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def _text(value) -> str:
    """A group cell as text (JSON Lines may hold numbers, booleans or null)."""
    if value is None:
        return ""
    return json.dumps(value) if isinstance(value, bool) else str(value)


def save_manifest(data: bytes | BinaryIO, name: str, base: str, group_by, store: Store,
                  job_id: str, settings: Settings,
                  check: LineCheck | None = None) -> tuple[str, dict]:
    """Check a manifest (bytes or a stream), store its checked copy under the job; (the job's
    source, its record field)."""
    if group_by is not None and (not isinstance(group_by, str) or not group_by.strip()):
        raise BadRequest("group_by must name a column of the manifest")
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    with tempfile.SpooledTemporaryFile(SPOOL_BYTES) as out:
        about = normalise(stream, name, base, group_by and group_by.strip(), settings, out,
                          check)
        out.seek(0)
        key = layout.manifest(job_id)
        store.put_stream(key, out)
    return MANIFEST_SCHEME + key, about
