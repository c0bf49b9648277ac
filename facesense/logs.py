"""Logging set-up shared by the API, workers and the launcher: text for people, JSON for machines."""

from __future__ import annotations

import ast
import json
import logging
import re
import time
from contextvars import ContextVar

from facesense.errors import ConfigError

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s"

# The job and task this thread is running: set around each task by worker/tasks.py.
_current: ContextVar[tuple[str | None, str] | None] = ContextVar("facesense_job", default=None)


def bind_job(job_id: str | None, task: str) -> None:
    """From now on, lines this thread logs carry job_id and the task name."""
    _current.set((job_id, task))


def unbind_job() -> None:
    """The task ended: this thread's later lines belong to no job."""
    _current.set(None)


def job_of(record: logging.LogRecord) -> tuple[str | None, str | None]:
    """(job_id, task) a line belongs to: the task this thread runs; else a line written the
    project's way, "job %s: ..." (helper threads: leases, thumbnails, the watchdog); else
    Celery's own "Task ... received" line, from the task's arguments (the job id comes first)."""
    bound = _current.get()
    if bound is not None:
        return bound
    if isinstance(record.msg, str) and record.msg.startswith("job %s") and record.args:
        first = record.args[0] if isinstance(record.args, tuple) else None
        if isinstance(first, str):
            return first, None
    data = getattr(record, "data", None)
    if not isinstance(data, dict) or not str(data.get("name", "")).startswith("facesense."):
        return None, None
    try:
        args = ast.literal_eval(data.get("args") or "()")
    except (ValueError, SyntaxError):
        return None, data["name"]
    first = args[0] if isinstance(args, (list, tuple)) and args else None
    return (first if isinstance(first, str) else None), data["name"]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, job_id, task (and exc)."""

    def format(self, record: logging.LogRecord) -> str:
        job_id, task = job_of(record)
        out = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
               + f".{int(record.msecs):03d}Z",
               "level": record.levelname, "logger": record.name,
               "message": record.getMessage(), "job_id": job_id, "task": task,
               "pid": record.process}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.stack_info:
            out["exc"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str)  # json escapes newlines: one line per record


SECRET = re.compile(r"fsk_[A-Za-z0-9_\-]+")  # an API key (facesense.keys.KEY_PREFIX)


class RedactKeys(logging.Filter):
    """Blanks anything shaped like an API key in a line (an access log line with a key in its
    URL, a key pasted into an error): logs never carry keys."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if SECRET.search(message):
            record.msg, record.args = SECRET.sub("fsk_[redacted]", message), None
        return True


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """One format everywhere: FACESENSE_LOG_FORMAT text (default) or json."""
    if fmt not in FORMATS:
        raise ConfigError(f"FACESENSE_LOG_FORMAT={fmt!r}: use text or json")
    logging.basicConfig(level=level.upper(), format=TEXT_FORMAT)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactKeys) for f in handler.filters):
            handler.addFilter(RedactKeys())
    if fmt == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
        logging.captureWarnings(True)  # warnings become JSON lines too, not bare stderr text
    for noisy in ("botocore", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("werkzeug").setLevel(max(logging.getLevelName(level.upper()), logging.INFO))
