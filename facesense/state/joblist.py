"""Job names and tags (bounded, checked), the indexes they join, and the filtered job list."""

from __future__ import annotations

import json
import math
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime

import redis as redis_lib

from facesense.errors import BadRequest
from facesense.state import redis_keys
from facesense.state.status import JobStatus

NAME_MAX, TAG_MAX, TAGS_MAX = 120, 40, 16  # characters of a name, of a tag; tags per job
SCAN_MAX = 1000  # records one list request reads at most: a sparse filter answers a short page
BATCH = 200  # and a cursor, so a request's cost never grows with how far back it reads


def _text(value, what: str, most: int) -> str:
    """A one-line label: stripped, 1..most characters, no control or format characters."""
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be a string")
    value = value.strip()
    if not 0 < len(value) <= most:
        raise BadRequest(f"{what} must hold 1 to {most} characters (got {len(value)})")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in value):
        raise BadRequest(f"{what} may not hold control characters or line breaks")
    return value


def check_name(value) -> str:
    """A job's name, checked (shown escaped everywhere; it is the user's own text)."""
    return _text(value, "name", NAME_MAX)


def check_tags(value) -> list[str]:
    """A job's tags: a list (or, from a form, one comma-separated string), deduplicated."""
    if isinstance(value, str):
        value = [t for t in value.split(",") if t.strip()]
    if not isinstance(value, list):
        raise BadRequest("tags must be a list of strings")
    tags = list(dict.fromkeys(_text(t, "a tag", TAG_MAX) for t in value))
    if any("," in t for t in tags):  # a form sends tags comma-separated: a comma can't be one
        raise BadRequest("a tag may not hold a comma")
    if len(tags) > TAGS_MAX:
        raise BadRequest(f"a job may carry at most {TAGS_MAX} tags (got {len(tags)})")
    return tags


def labels(body: dict) -> dict:
    """The checked name and tags a submission gives, as record fields (none if not given)."""
    out = {}
    if body.get("name") not in (None, ""):
        out["name"] = check_name(body["name"])
    if body.get("tags") not in (None, "", []):
        out["tags"] = check_tags(body["tags"])
    return out


def indexes(record: dict) -> list[str]:
    """Every sorted set a new job joins, scored by its creation time (each trimmed as it grows)."""
    owner, tags = record.get("owner"), record.get("tags") or []
    keys = [redis_keys.RECENT, *(redis_keys.tagged(t) for t in tags)]
    if owner:  # the API key's name (never the key): its own jobs, listable
        keys += [redis_keys.owned(owner), *(redis_keys.tagged(t, owner) for t in tags)]
    return keys


def parse_time(raw: str, what: str) -> float:
    """Unix seconds from a number or an ISO 8601 date or time (UTC unless it names a zone)."""
    try:
        value = float(raw)
    except ValueError:
        try:
            when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise BadRequest(f"{what} must be unix seconds or an ISO 8601 date or time, like "
                             f"2026-12-01 or 2026-12-01T09:30:00Z (got {raw[:40]!r})") from None
        value = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    if not math.isfinite(value):
        raise BadRequest(f"{what} must be a finite time")
    return value


@dataclass
class JobQuery:
    """What a job list asks for; cursor is a previous answer's next_cursor."""

    owner: str | None = None  # only this API key's jobs; None: every job (an admin)
    name: str = ""  # a prefix of the name, case-insensitive
    tag: str = ""
    statuses: tuple[str, ...] = ()
    since: float | None = None  # created at or after
    until: float | None = None  # created before
    limit: int = 20
    cursor: str | None = None

    def check(self) -> JobQuery:
        """Refuse an unknown status or a malformed cursor, naming it."""
        bad = [s for s in self.statuses if s not in JobStatus.__members__.values()]
        if bad:
            raise BadRequest(f"unknown status {bad[0]!r}: use {', '.join(JobStatus)}")
        if self.cursor:
            _cursor(self.cursor)
        return self


def _cursor(raw: str) -> tuple[float, str]:
    """(score, job id) from a cursor 'score_id'."""
    score, _, job_id = raw.partition("_")
    try:
        value = float(score)
    except ValueError:
        value = math.nan
    if not job_id or not math.isfinite(value):
        raise BadRequest("cursor is not one a job list gave (pass next_cursor back as it is)")
    return value, job_id


def find(redis: redis_lib.Redis, q: JobQuery) -> tuple[list[dict], str | None]:
    """Jobs matching q, newest first, and the cursor of the next page (None at the end).

    Walks the narrowest index (a tag's, the owner's, or all jobs) back in time from the cursor
    by score (never by offset), reading at most SCAN_MAX records per call."""
    index = (redis_keys.tagged(q.tag, q.owner) if q.tag else
             redis_keys.owned(q.owner) if q.owner else redis_keys.RECENT)
    top, after = (_cursor(q.cursor) if q.cursor else (None, None))
    high = repr(top) if top is not None else ("(" + repr(q.until) if q.until else "+inf")
    low = repr(q.since) if q.since is not None else "-inf"
    prefix = q.name.casefold()
    found: list[dict] = []
    last, skip, read = None, 0, 0
    while len(found) < q.limit and read < SCAN_MAX:
        batch = redis.zrevrangebyscore(index, high, low, start=skip, num=BATCH, withscores=True)
        if not batch:
            return found, None
        skip += len(batch)
        batch = [(m.decode(), s) for m, s in batch]
        batch = [(m, s) for m, s in batch if not (s == top and m >= after)]  # seen already
        with redis.pipeline(transaction=False) as pipe:  # two fields first: a record may
            for job_id, _ in batch:                        # hold a summary, read only if kept
                pipe.hmget(redis_keys.job(job_id), "status", "name")
            heads = pipe.execute()
        gone, kept = [], []
        for (job_id, score), (status, name) in zip(batch, heads, strict=True):
            read += 1
            last = (score, job_id)
            if status is None:  # expired before the index was trimmed past it
                gone.append(job_id)
            elif ((not q.statuses or json.loads(status) in q.statuses)
                    and str(json.loads(name or "null") or "").casefold().startswith(prefix)):
                kept.append(job_id)
                if len(found) + len(kept) == q.limit:
                    break
        if gone:
            redis.zrem(index, *gone)
        with redis.pipeline(transaction=False) as pipe:
            for job_id in kept:
                pipe.hgetall(redis_keys.job(job_id))
            found += [{k.decode(): json.loads(v) for k, v in raw.items()}
                      for raw in pipe.execute() if raw]
    return found, (f"{last[0]!r}_{last[1]}" if last else None)
