"""Request validation: known fields, right types, clear messages naming what is wrong."""

from __future__ import annotations

from flask import Request

from facesense.errors import BadRequest

CLASSIFY_FIELDS = {"type": str, "source": str, "urls": list, "model": str, "callback_url": str}
TRAIN_FIELDS = {"type": str, "dataset": str, "params": dict, "promote": str, "callback_url": str}
UPLOAD_FIELDS = {"type": str, "model": str, "callback_url": str}


def json_body(request: Request) -> dict:
    """The request's JSON object, or a 400 saying why not."""
    data = request.get_json(silent=True)
    if data is None:
        raise BadRequest("the body is not valid JSON")
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
