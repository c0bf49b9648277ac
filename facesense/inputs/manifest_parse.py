"""A manifest's rows, parsed as they stream in: CSV or JSON Lines read one line at a time, so
a request's memory does not grow with the file, and the first bad line ends the read.

Refusals name the line and the problem, never a cell: a file named as a manifest may be anyone's.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from typing import BinaryIO

from facesense.errors import BadRequest, PayloadTooLarge
from facesense.inputs.manifest_images import CONTROL

IMAGE = "image"
MAX_COLUMNS = 100  # meta rides on every result row: kept small and bounded per image
MAX_CELL_CHARS = 1000
MAX_NAME_CHARS = 200  # column names ride on the job record too
# Longer than any line the cell and column caps allow (100 x 1000 characters, 4 bytes each):
# a line is read whole, so this bounds a request's memory however the file is written.
MAX_LINE_BYTES = 1 << 20
CHUNK = 1 << 16
NOT_FINITE = ("line {}: a number is not finite (NaN, Infinity or too large for a double): give "
              "it as text, or leave it out")


class NonFinite(ValueError):
    """A JSON number that is not finite (NaN, Infinity): no JSON parser of a browser takes it."""


def _no_constant(name: str):
    raise NonFinite(name)


def lines(stream: BinaryIO, max_bytes: int) -> Iterator[tuple[int, str]]:
    """(number, text) of each line of a stream, decoded as UTF-8 (a byte-order mark dropped);
    400 for a line over MAX_LINE_BYTES or not UTF-8, 413 past max_bytes in all."""
    rest, total, number = b"", 0, 0
    while True:
        chunk = stream.read(CHUNK)
        total += len(chunk)
        if total > max_bytes:
            raise PayloadTooLarge(f"the manifest is larger than {max_bytes} bytes "
                                  "(FACESENSE_MANIFEST_MAX_BYTES)")
        rest += chunk
        *done, rest = rest.split(b"\n")
        if not chunk and rest:
            done, rest = [rest], b""
        for raw in done:
            number += 1
            yield number, _decode(raw + b"\n", number)
        if len(rest) > MAX_LINE_BYTES:
            raise BadRequest(f"line {number + 1}: longer than {MAX_LINE_BYTES} bytes")
        if not chunk:
            return


def _decode(raw: bytes, number: int) -> str:
    if len(raw) > MAX_LINE_BYTES + 1:
        raise BadRequest(f"line {number}: longer than {MAX_LINE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(f"line {number}: not UTF-8 text (byte {e.start} of the line)") from None
    return text.removeprefix("\ufeff") if number == 1 else text  # a spreadsheet's mark


def is_jsonl(name: str, first: str) -> bool:
    """JSON Lines when the name ends .jsonl / .ndjson / .json or the text starts with '{'."""
    return name.lower().endswith((".jsonl", ".ndjson", ".json")) or first.lstrip().startswith("{")


def csv_rows(source: Iterator[tuple[int, str]], first: tuple[int, str] | None,
             columns: list[str]) -> Iterator[tuple[int, dict]]:
    """(line number, row) of a CSV manifest whose first line was read into first; columns
    receives the checked header as soon as it is read."""
    reader = csv.reader(text for _, text in _chain(first, source))
    try:
        header = next(reader, None)
        if not header:
            raise BadRequest("line 1: the manifest is empty (expected a header with an 'image' "
                             "column)")
        columns.extend(check_header([c.strip() for c in header]))
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue  # a blank line
            if len(cells) != len(columns):
                raise BadRequest(f"line {reader.line_num}: {len(cells)} cells, but the header "
                                 f"has {len(columns)} columns")
            yield reader.line_num, dict(zip(columns, cells, strict=True))
    except csv.Error as e:
        raise BadRequest(f"line {reader.line_num}: {e}") from None


def jsonl_rows(source: Iterator[tuple[int, str]], first: tuple[int, str] | None,
               columns: dict[str, None]) -> Iterator[tuple[int, dict]]:
    """(line number, row) of a JSON Lines manifest; columns gathers every key seen, in order."""
    for number, text in _chain(first, source):
        if not text.strip():
            continue
        try:
            row = json.loads(text, parse_constant=_no_constant)
        except NonFinite:
            raise BadRequest(NOT_FINITE.format(number)) from None
        except (ValueError, RecursionError):
            raise BadRequest(f"line {number}: not a JSON object") from None
        if not isinstance(row, dict):
            raise BadRequest(f"line {number}: not a JSON object")
        out = {}
        for i, (key, value) in enumerate(row.items(), 1):
            if isinstance(value, float) and not math.isfinite(value):  # 1e400 parses as inf
                raise BadRequest(NOT_FINITE.format(number))
            if value is not None and not isinstance(value, (str, int, float, bool)):
                raise BadRequest(f"line {number}: value {i} is a {type(value).__name__}; values "
                                 "must be text, numbers, true/false or null")
            name = key.strip()
            if name not in columns:
                _check_name(name, f"line {number}: key {i}")
                columns[name] = None
                if len(columns) > MAX_COLUMNS:
                    raise BadRequest(f"line {number}: more than {MAX_COLUMNS} keys in all")
            out[name] = value
        if IMAGE not in out:
            raise BadRequest(f"line {number}: no {IMAGE!r} key")
        yield number, out


def _chain(first, rest):
    if first is not None:
        yield first
    yield from rest


def check_header(columns: list[str]) -> list[str]:
    """A CSV header, refused (naming line 1, never its cells) without an image column, with a
    blank, long or repeated name, or with more than MAX_COLUMNS columns."""
    if IMAGE not in columns:
        raise BadRequest(f"line 1: no {IMAGE!r} column (the first line must be a header naming "
                         "the columns)")
    if len(columns) > MAX_COLUMNS:
        raise BadRequest(f"line 1: {len(columns)} columns; at most {MAX_COLUMNS}")
    seen = set()
    for i, name in enumerate(columns, 1):
        _check_name(name, f"line 1: column {i}")
        if name in seen:
            raise BadRequest(f"line 1: column {i} repeats an earlier column's name")
        seen.add(name)
    return columns


def _check_name(name: str, where: str) -> None:
    if not name or len(name) > MAX_NAME_CHARS or CONTROL.search(name):
        raise BadRequest(f"{where} needs a name (1-{MAX_NAME_CHARS} printable characters)")


def check_cells(row: dict, number: int) -> None:
    """Refuse a text cell longer than MAX_CELL_CHARS, naming the line and the column's place."""
    for i, value in enumerate(row.values(), 1):
        if isinstance(value, str) and len(value) > MAX_CELL_CHARS:
            raise BadRequest(f"line {number}: value {i} is longer than {MAX_CELL_CHARS} "
                             "characters")
