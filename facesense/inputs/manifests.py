"""A scoring job over a manifest: a CSV or JSON Lines file naming each image and the analyst's
own columns (participant, session, variant...), checked line by line once at submission.

The checked copy is stored under the job (facesense.inputs.manifest_source reads it); the
job's source names it, so the planner lists it like any source, and the merge joins each row
with its line's columns.
"""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
from collections.abc import Iterator
from pathlib import PurePosixPath

from facesense.errors import BadRequest, ObjectNotFound, PayloadTooLarge, SourceError
from facesense.inputs.manifest_images import CONTROL, default_group, image_key, local_file
from facesense.inputs.sources import MANIFEST_SCHEME, file_url_path, open_real, overlaps_store
from facesense.settings import Settings
from facesense.storage import Store, TooLarge, layout, open_store, parse_s3_url, read_limited

IMAGE = "image"
MAX_COLUMNS = 100  # meta rides on every result row: kept small and bounded per image
MAX_CELL_CHARS = 1000
MAX_NAME_CHARS = 200  # column names ride on the job record too


def read_manifest(where: str, settings: Settings) -> tuple[bytes, str]:
    """The bytes of a manifest the server reads (a file under the allowed roots, or an s3://
    object) and the folder its relative image paths start from (a file:// or s3:// URL)."""
    if not isinstance(where, str) or not where.strip():
        raise BadRequest("'manifest' must be a non-empty string: an s3:// URL or a server-side file")
    where, limit = where.strip(), settings.manifest_max_bytes
    too_big = PayloadTooLarge(f"manifest {where!r} is larger than {limit} bytes "
                              "(FACESENSE_MANIFEST_MAX_BYTES)")
    if where.startswith("s3://"):
        bucket, key = parse_s3_url(where)
        if not key or overlaps_store(where.rstrip("/"), settings.store_url):
            raise SourceError(f"manifest {where!r} is not a file outside the job store")
        store = open_store(f"s3://{bucket}", endpoint_url=settings.s3_endpoint_url,
                           region=settings.s3_region)
        try:
            data = read_limited(store, key, limit)
        except ObjectNotFound:
            raise SourceError(f"manifest {where!r} does not exist") from None
        except TooLarge:
            raise too_big from None
        return data, f"s3://{bucket}/{posixpath.dirname(key)}".rstrip("/")
    if "://" in where and not where.startswith("file://"):
        raise SourceError(f"unsupported manifest {where!r}: use s3://bucket/key or a server-side file")
    real = local_file(file_url_path(where) if where.startswith("file://") else where,
                       settings, f"manifest {where!r}")
    with os.fdopen(open_real(real), "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise too_big
    return data, real.parent.as_uri()


def parse(data: bytes, name: str = "") -> tuple[list[str], Iterator[tuple[int, dict]]]:
    """(columns, (line number, row) pairs) of a CSV or JSON Lines manifest; JSON Lines when
    the name ends .jsonl / .ndjson / .json or the text starts with '{', else CSV."""
    try:
        text = data.decode("utf-8-sig")  # a spreadsheet's byte-order mark is not a column name
    except UnicodeDecodeError as e:
        raise BadRequest(f"the manifest is not UTF-8 text (byte {e.start})") from None
    jsonl = name.lower().endswith((".jsonl", ".ndjson", ".json")) or text.lstrip().startswith("{")
    return _parse_jsonl(text) if jsonl else _parse_csv(text)


def _parse_csv(text: str) -> tuple[list[str], Iterator[tuple[int, dict]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as e:
        raise BadRequest(f"line 1: {e}") from None
    if not header:
        raise BadRequest("line 1: the manifest is empty (expected a header with an 'image' column)")
    columns = _check_columns([c.strip() for c in header])

    def rows():
        try:
            for cells in reader:
                if not any(c.strip() for c in cells):
                    continue  # a blank line
                if len(cells) != len(columns):
                    raise BadRequest(f"line {reader.line_num}: {len(cells)} cells, but the header "
                                     f"has {len(columns)} columns")
                yield reader.line_num, dict(zip(columns, cells, strict=True))
        except csv.Error as e:
            raise BadRequest(f"line {reader.line_num}: {e}") from None

    return columns, rows()


def _parse_jsonl(text: str) -> tuple[list[str], Iterator[tuple[int, dict]]]:
    parsed, columns = [], {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            raise BadRequest(f"line {number}: not a JSON object") from None
        if not isinstance(row, dict):
            raise BadRequest(f"line {number}: not a JSON object")
        for key, value in row.items():
            if value is not None and not isinstance(value, (str, int, float, bool)):
                raise BadRequest(f"line {number}: column {key!r} holds a {type(value).__name__}; "
                                 "values must be text, numbers, true/false or null")
            columns.setdefault(key.strip(), None)
        parsed.append((number, {k.strip(): v for k, v in row.items()}))
    if not parsed:
        raise BadRequest("line 1: the manifest is empty (expected one JSON object per line)")
    names = _check_columns(list(columns), jsonl=True)
    return names, ((n, {c: row.get(c) for c in names}) for n, row in parsed)


def _check_columns(columns: list[str], jsonl: bool = False) -> list[str]:
    """The header, refused (naming line 1) without an image column, with a blank or repeated
    name, or with more than MAX_COLUMNS columns."""
    where = "the manifest's objects" if jsonl else "line 1"
    if IMAGE not in columns:
        shown = ", ".join(repr(c) for c in columns[:10]) or "none"
        raise BadRequest(f"{where}: no {IMAGE!r} column (columns: {shown})")
    if len(columns) > MAX_COLUMNS:
        raise BadRequest(f"{where}: {len(columns)} columns; at most {MAX_COLUMNS}")
    seen = set()
    for i, name in enumerate(columns, 1):
        if not name or len(name) > MAX_NAME_CHARS or CONTROL.search(name):
            raise BadRequest(f"{where}: column {i} needs a name (1-{MAX_NAME_CHARS} printable "
                             "characters)")
        if name in seen:
            raise BadRequest(f"{where}: column {name!r} appears twice")
        seen.add(name)
    return columns


def normalise(data: bytes, name: str, base: str, group_by: str | None,
              settings: Settings) -> tuple[bytes, dict]:
    """The checked copy of a manifest (JSON Lines) and its description for the job record.

    base is the folder relative image paths start from ('' for an uploaded manifest). Any bad
    line is refused, naming it: a 400 for the manifest's own faults, a 422 for an image outside
    the allowed roots or missing, a 413 past FACESENSE_MANIFEST_MAX_ROWS.
    """
    columns, rows = parse(data, name)
    if group_by is not None and group_by not in columns:
        raise BadRequest(f"group_by {group_by!r} is not a column of the manifest "
                         f"(columns: {', '.join(map(repr, columns[:10]))})")
    meta_columns = [c for c in columns if c != IMAGE]
    cap, seen, lines = settings.manifest_max_rows, {}, []
    for number, row in rows:
        if len(seen) >= cap:
            raise PayloadTooLarge(f"line {number}: the manifest lists more than {cap} images "
                                  "(FACESENSE_MANIFEST_MAX_ROWS)")
        for column, value in row.items():
            if isinstance(value, str) and len(value) > MAX_CELL_CHARS:
                raise BadRequest(f"line {number}: column {column!r} is longer than "
                                 f"{MAX_CELL_CHARS} characters")
        key = image_key(row[IMAGE], number, base, settings)
        if key in seen:
            raise BadRequest(f"line {number}: duplicate row: image {row[IMAGE]!r} is already "
                             f"listed on line {seen[key]}")
        seen[key] = number
        group = default_group(key) if group_by is None else _text(row[group_by])
        lines.append({"image": key, "group": group,
                      "meta": {c: row[c] for c in meta_columns}})
    if not lines:
        raise BadRequest("line 2: the manifest lists no images")
    about = {"name": PurePosixPath(name).name[:200], "base": base, "rows": len(lines),
             "columns": meta_columns, "group_by": group_by}
    body = "".join(json.dumps(x, separators=(",", ":")) + "\n"
                   for x in ({"manifest": about}, *lines))
    return body.encode(), about


def _text(value) -> str:
    """A group cell as text (JSON Lines may hold numbers, booleans or null)."""
    if value is None:
        return ""
    return json.dumps(value) if isinstance(value, bool) else str(value)


def save_manifest(data: bytes, name: str, base: str, group_by, store: Store, job_id: str,
                  settings: Settings) -> tuple[str, dict]:
    """Check a manifest, store its checked copy under the job; (the job's source, its record
    field)."""
    if group_by is not None and (not isinstance(group_by, str) or not group_by.strip()):
        raise BadRequest("group_by must name a column of the manifest")
    body, about = normalise(data, name, base, group_by and group_by.strip(), settings)
    key = layout.manifest(job_id)
    store.put(key, body)
    return MANIFEST_SCHEME + key, about


