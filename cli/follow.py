"""Following a job from the command line: its id once queued, a progress bar until it ends,
then its report, and the exit code of how it ended."""

from __future__ import annotations

import json
import sys

from cli import manage
from cli.options import EXIT_CANCELLED, EXIT_FAILED, EXIT_OK
from cli.tables import job_text
from cli.video import print_curves
from facesense.client import Client
from facesense.state.status import JobStatus


def queued(api: Client, job: dict, args) -> int:
    """After a submission: the id (or with --json the record), or with --wait the outcome."""
    if args.wait:
        if not args.json:
            print(job["id"], flush=True)
        return follow(api, job["id"], as_json=args.json)
    print(json.dumps(job, indent=2) if args.json else job["id"])
    return 0


def follow(api: Client, job_id: str, as_json: bool = False) -> int:
    """Draw a progress bar (on stderr) until the job finishes, then print its report (a table,
    or the record as JSON); returns the exit code of how it ended."""
    def draw(record: dict):
        p = record["progress"]
        total, done = p["total"], p["done"]
        width = 30
        filled = int(width * done / total) if total else 0
        bar = "#" * filled + "-" * (width - filled)
        queue = record.get("queue") or {}  # while it waits: what starts before it, or why held
        waiting = (f", {queue['held']}" if queue.get("held") else
                   f", {queue['shards_ahead']} shards ahead" if queue.get("shards_waiting") else "")
        print(f"\r{record['status']:<9} [{bar}] {done}/{total or '?'} "
              f"({p['failed']} failed){manage.pace_text(record)}{waiting}\033[K", end="",
              file=sys.stderr, flush=True)

    record = api.wait(job_id, on_update=draw)
    print(file=sys.stderr)
    if record["status"] != JobStatus.SUCCEEDED:
        print(f"job {job_id} {record['status']}: {record.get('error') or ''}", file=sys.stderr)
    print(json.dumps(record, indent=2) if as_json else job_text(record))
    if not as_json:  # a video job: its curves per variant
        print_curves(api, record)
    return outcome(record)


def outcome(record: dict) -> int:
    """The exit code of a finished job: 0 succeeded, 3 cancelled, 1 failed."""
    codes = {JobStatus.SUCCEEDED: EXIT_OK, JobStatus.CANCELLED: EXIT_CANCELLED}
    return codes.get(record["status"], EXIT_FAILED)
