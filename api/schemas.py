"""Request validation: known fields, right types, clear messages naming what is wrong."""

from __future__ import annotations

import json
from numbers import Real

from flask import Request

from api.services import services
from facesense.errors import BadRequest, PayloadTooLarge

CLASSIFY_FIELDS = {"type": str, "source": str, "urls": list, "manifest": str, "group_by": str,
                   "model": str, "callback_url": str, "priority": str, "faces": bool,
                   "name": str, "tags": list,
                   "timeline_bin_s": Real, "baseline": bool,  # videos: facesense.outputs.timeline
                   "video_fps": Real}  # facesense.inputs.video.limits
TRAIN_FIELDS = {"type": str, "dataset": str, "params": dict, "promote": str, "alias": str,
                "callback_url": str, "name": str, "tags": list}
UPLOAD_FIELDS = {"type": str, "model": str, "callback_url": str, "priority": str, "group_by": str,
                 "faces": str, "name": str, "tags": str,  # tags: comma-separated
                 "timeline_bin_s": str, "baseline": str, "video_fps": str}


def json_body(request: Request, allow_empty: bool = False) -> dict:
    """The request's JSON object, or a 400 saying why not; a body over FACESENSE_MAX_JSON_BYTES
    is a 413 before any of it is parsed (uploads have their own, larger limit)."""
    limit = services().settings.max_json_bytes
    if (request.content_length or 0) > limit:
        raise PayloadTooLarge(f"a JSON body may hold at most {limit} bytes (FACESENSE_MAX_JSON_BYTES)")
    raw = request.stream.read(limit + 1)  # a body without a length is cut off here too
    if len(raw) > limit:
        raise PayloadTooLarge(f"a JSON body may hold at most {limit} bytes (FACESENSE_MAX_JSON_BYTES)")
    if not raw.strip() and allow_empty:
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python recurses
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


def check_fields(data: dict, fields: dict[str, type], required: tuple[str, ...]) -> dict:
    """Refuse unknown fields and wrong types, naming them; require some fields."""
    unknown = sorted(str(k) for k in set(data) - set(fields))  # a multipart name may be None
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}")
    wrong = [f"{k} (expected {fields[k].__name__})" for k, v in data.items()
             if not isinstance(v, fields[k]) or (isinstance(v, bool) and fields[k] is not bool)]
    if wrong:
        raise BadRequest(f"wrong type for: {', '.join(wrong)}")
    missing = [k for k in required if k not in data]
    if missing:
        raise BadRequest(f"missing field(s): {', '.join(missing)}")
    return data


def int_arg(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    """An integer query argument, clamped to [lo, hi]."""
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"query argument {name!r} must be an integer") from None
    return max(lo, min(hi, value))
