"""The commands that start the stack or talk to the API: up, worker, submit, train, retry,
cancel, status, models, promote, demo."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cli import manage
from cli.follow import follow, outcome, queued
from cli.options import EXIT_OK, client
from cli.tables import job_text
from cli.video import video_fields
from facesense import redisconn
from facesense.errors import FacesenseError
from facesense.keys import check_exposure
from facesense.settings import Settings
from facesense.state.status import JobStatus


class Usage(FacesenseError):
    """The command line itself is wrong (exit code 2, like argparse's own errors)."""


def cmd_up(args, settings: Settings) -> int:
    """Run the embedded stack in the foreground."""
    from cli import launcher
    from facesense.logs import setup_logging

    changes = {k: v for k, v in (("api_host", args.host), ("api_port", args.port),
                                 ("data_dir", args.data)) if v is not None}
    settings = settings.replace(**changes)
    check_exposure(settings)  # before anything starts: no open API on a public address
    setup_logging(settings.log_level, settings.log_format)
    launcher.run(settings, workers=args.workers)
    return 0


def cmd_worker(args, settings: Settings) -> int:
    """Replace this process with a Celery worker (solo pool: one process per GPU)."""
    from cli.launcher import worker_command

    if not redisconn.configured(settings):
        raise FacesenseError("set FACESENSE_REDIS_URL (or FACESENSE_REDIS_SENTINELS): "
                             "a worker needs the shared Redis")
    cmd = worker_command(args.queues)
    os.execv(cmd[0], cmd)
    return 0  # not reached


def cmd_submit(args, settings: Settings) -> int:
    """Queue a job and print its id (or follow it with --wait)."""
    api = client(args, settings)
    if args.group_by and not args.manifest:
        raise Usage("--group-by names a column of a manifest: give --manifest FILE")
    if args.manifest:
        if args.source:
            raise Usage("give a source or --manifest FILE, not both")
        job = api.submit_manifest(args.manifest, args.group_by, model=args.model,
                                  priority=args.priority, upload=True if args.upload else None,
                                  faces=args.faces, **manage.labels(args), **video_fields(args))
    elif not args.source:
        raise Usage("give a source (a folder, s3:// prefix or image URLs) or --manifest FILE")
    elif args.upload:
        job = api.upload([Path(s) for s in args.source], model=args.model,
                         priority=args.priority, faces=args.faces, **manage.labels(args),
                         **video_fields(args))
    elif all(s.startswith(("http://", "https://")) for s in args.source):
        job = api.submit(urls=args.source, model=args.model, priority=args.priority,
                         faces=args.faces, **manage.labels(args), **video_fields(args))
    else:
        if len(args.source) != 1:
            raise Usage("give one source (or use --upload for several local files)")
        source = args.source[0]
        if "://" not in source and Path(source).exists():
            source = str(Path(source).resolve())  # the server resolves paths from its own cwd
        job = api.submit(source, model=args.model, priority=args.priority, faces=args.faces,
                         **manage.labels(args), **video_fields(args))
    return queued(api, job, args)


def cmd_train(args, settings: Settings) -> int:
    """Queue a training job and print its id."""
    params = {}
    for item in args.param:
        name, sep, raw = item.partition("=")
        if not sep:
            raise Usage(f"--param needs NAME=VALUE, got {item!r}")
        try:
            params[name] = json.loads(raw)
        except ValueError:
            params[name] = raw  # bare strings: --param optimizer=sgd
    dataset = args.dataset
    if "://" not in dataset and Path(dataset).exists():
        dataset = str(Path(dataset).resolve())
    api = client(args, settings)
    return queued(api, api.train(dataset, params, args.promote, alias=args.alias,
                                        **manage.labels(args)), args)


def cmd_retry(args, settings: Settings) -> int:
    """Queue a new job over a finished job's failed images and print its id."""
    api = client(args, settings)
    return queued(api, api.retry(args.job_id, model=args.model, priority=args.priority), args)


def cmd_cancel(args, settings: Settings) -> int:
    """Cancel a job."""
    record = client(args, settings).cancel(args.job_id)
    print(json.dumps(record, indent=2) if args.json else f"{record['id']} {record['status']}")
    return 0


def cmd_status(args, settings: Settings) -> int:
    """Print a job's state as a table (or JSON), or follow it; the exit code says how it ended
    (a job still running: 0)."""
    api = client(args, settings)
    if args.wait:
        return follow(api, args.job_id, as_json=args.json)
    record = api.job(args.job_id)
    print(json.dumps(record, indent=2) if args.json else job_text(record))
    return outcome(record) if record["status"] in (JobStatus.FAILED, JobStatus.CANCELLED) else EXIT_OK


def cmd_models(args, settings: Settings) -> int:
    """Versions (newest first) with the aliases pointing at them."""
    data = client(args, settings).models()
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    if not data["versions"]:
        print("no model versions yet. Make one:\n"
              "  facesense train FOLDER --promote always --wait   (FOLDER/<class>/<image>)\n"
              "  facesense models import WEIGHTS --classes happy,sad --promote\n"
              "or try everything on synthetic faces: facesense demo")
        return EXIT_OK
    by_version: dict[str, list[str]] = {}
    for name, alias in data["aliases"].items():
        by_version.setdefault(alias["version"], []).append(name)
    for m in data["versions"]:
        acc = (m.get("metrics") or {}).get("accuracy")
        print(f"{m['version']}  classes={','.join(m['classes'])}  "
              f"accuracy={'-' if acc is None else f'{acc:.3f}'}  "
              f"aliases={','.join(by_version.get(m['version'], [])) or '-'}")
    return 0


def cmd_models_promote(args, settings: Settings) -> int:
    """Move an alias through the API."""
    record = client(args, settings).promote(args.version, args.alias, force=args.force)
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    forced = " (forced: it does not beat chance)" if record["history"][-1].get("forced") else ""
    print(f"{record['alias']} -> {record['version']}{forced}")
    return 0


def cmd_demo(args, settings: Settings) -> int:
    """The demo: embedded stack, synthetic training set, promotion, campaign scoring."""
    from cli.demo import run_demo

    return run_demo(Path(args.data), port=args.port)
