"""`facesense results`: a job's rows as JSON lines, or its CSV, summary CSV or (a video job's)
timeline CSV to a file."""

from __future__ import annotations

import json
import sys

from cli.options import client
from facesense.settings import Settings


def cmd_results(args, settings: Settings) -> int:
    """Print result rows as JSON lines, or write the CSV."""
    api = client(args, settings)
    if args.summary_csv:
        return save(args.summary_csv, lambda out: api.save_summary_csv(args.job_id, out))
    if args.timeline_csv:
        return save(args.timeline_csv, lambda out: api.save_timeline_csv(args.job_id, out))
    if args.csv == "-":
        api.save_csv(args.job_id, sys.stdout.buffer)
        return 0
    if args.csv:
        with open(args.csv, "wb") as out:
            api.save_csv(args.job_id, out)
        print(f"wrote {args.csv}", file=sys.stderr)
        return 0
    for row in api.rows(args.job_id):
        print(json.dumps(row))
    return 0


def save(path: str, write) -> int:
    """write(binary file) to path, or to stdout for '-'."""
    if path == "-":
        write(sys.stdout.buffer)
        return 0
    with open(path, "wb") as out:
        write(out)
    print(f"wrote {path}", file=sys.stderr)
    return 0
