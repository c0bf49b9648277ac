"""The CLI's housekeeping: the filtered job list, deleting jobs and model versions, and a
running job's pace on the progress line."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import datetime

from facesense.client import ApiError, Client
from facesense.settings import Settings
from facesense.state.status import JobStatus

AGO = re.compile(r"^(\d+(?:\.\d+)?)([mhdw])$")  # 30m, 12h, 7d, 2w
UNIT_S = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def add_job_list_options(jobs: argparse.ArgumentParser) -> None:
    """`facesense jobs`: filters, and `jobs delete ID...`."""
    jobs.add_argument("--name", help="only jobs whose name starts with this (any case)")
    jobs.add_argument("--tag", help="only jobs carrying this tag")
    jobs.add_argument("--status", action="append", choices=[s.value for s in JobStatus],
                      help="only jobs in this state (repeatable)")
    jobs.add_argument("--since", type=when, metavar="WHEN", help="only jobs created since WHEN: "
                      "a date or time (2026-12-01, 2026-12-01T09:30) or an age (30m, 12h, 7d, 2w)")
    jobs.add_argument("--until", type=when, metavar="WHEN", help="only jobs created before WHEN")
    jobs.set_defaults(func=cmd_jobs)
    actions = jobs.add_subparsers(metavar="ACTION")
    delete = actions.add_parser("delete", help="delete finished jobs: results, thumbnails, "
                                "uploads and record (a running one: cancel it first)")
    delete.add_argument("job_ids", nargs="+", metavar="JOB_ID", help="the jobs to delete")
    delete.set_defaults(func=cmd_jobs_delete)


def add_model_delete(models: argparse._SubParsersAction) -> None:
    """`facesense models delete VERSION`."""
    delete = models.add_parser("delete", help="delete a model version (an admin key; refused "
                               "while an alias or a queued or running job names it)")
    delete.add_argument("version", help="the version to delete (not an alias)")
    delete.set_defaults(func=cmd_models_delete)


def when(raw: str) -> str:
    """A --since / --until value as the API takes it: an age becomes unix seconds; a date or
    time is checked here and sent as it is (UTC unless it names a zone)."""
    ago = AGO.match(raw.strip())
    if ago:
        return f"{time.time() - float(ago[1]) * UNIT_S[ago[2]]:.3f}"
    try:
        datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a date, a time or an age like 7d "
                                         "(2026-12-01, 2026-12-01T09:30, 30m, 12h, 7d, 2w)") from None
    return raw


def client(args, settings: Settings) -> Client:
    """An API client for --api / --key or the settings."""
    return Client(getattr(args, "api", None) or settings.client_api_url,
                  api_key=getattr(args, "api_key", None) or settings.api_key)


def cmd_jobs(args, settings: Settings) -> int:
    """One line per job, newest first: id, type, status, progress, name, tags, source."""
    filters = {k: v for k, v in (("name", args.name), ("tag", args.tag),
                                 ("status", args.status), ("since", args.since),
                                 ("until", args.until)) if v}
    jobs = client(args, settings).jobs(args.limit, **filters)
    if getattr(args, "json", False):
        print(json.dumps(jobs, indent=2))
        return 0
    for job in jobs:
        print(job_line(job))
    return 0


def job_line(job: dict) -> str:
    """A job as one line; its name and tags are printed with control characters escaped."""
    p = job["progress"]
    name = json.dumps(job["name"], ensure_ascii=False) if job.get("name") else "-"
    tags = ",".join(job.get("tags") or []) or "-"
    tags = json.dumps(tags, ensure_ascii=False)[1:-1]  # a tag's text, escaped the same way
    source = job.get("source") or job.get("dataset") or ""
    return (f"{job['id']}  {job['type']:<8} {job['status']:<9} {p['done']}/{p['total']} "
            f"({p['failed']} failed)  {name}  [{tags}]  {source}")


def cmd_jobs_delete(args, settings: Settings) -> int:
    """Delete each job named; a refusal names the job and why (exit 1 if any was refused)."""
    api, failed = client(args, settings), 0
    for job_id in args.job_ids:
        try:
            done = api.delete_job(job_id)
        except ApiError as e:  # the next id still goes: say which one failed and why
            print(f"{job_id}: not deleted: {e}", file=sys.stderr)
            failed += 1
            continue
        print(json.dumps(done) if getattr(args, "json", False) else
              f"{job_id} deleted ({done['objects']} objects, {done['keys']} Redis keys)")
    return 1 if failed else 0


def cmd_models_delete(args, settings: Settings) -> int:
    """Delete a model version through the API."""
    done = client(args, settings).delete_model(args.version)
    print(json.dumps(done) if getattr(args, "json", False) else
          f"{done['version']} deleted ({done['objects']} objects)")
    return 0


def pace_text(record: dict) -> str:
    """A running job's rate and time left for the progress line ('' while unknown)."""
    t = record.get("timing") or {}
    if record.get("status") != JobStatus.RUNNING or not t.get("rate"):
        return ""
    rate = f"{t['rate']:.1f} {t['unit']}/s" if t["rate"] >= 0.1 else \
        f"{t['rate'] * 60:.2f} {t['unit']}/min"
    return f", {rate}" + (f", {duration(t['eta_s'])} left" if t.get("eta_s") is not None else "")


def duration(seconds: float) -> str:
    """Seconds as 45s, 12m 30s or 3h 05m."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def add_label_options(cmd: argparse.ArgumentParser) -> None:
    """--name and --tag for a command that queues a job."""
    cmd.add_argument("--name", help="a name for the job, to find it by (at most 120 characters)")
    cmd.add_argument("--tag", action="append", dest="tags", metavar="TAG",
                     help="a tag for the job (repeatable; at most 16, 40 characters each)")


def labels(args) -> dict:
    """The --name and --tag given, as Client keyword arguments."""
    return {k: v for k, v in (("name", args.name), ("tags", args.tags)) if v}
