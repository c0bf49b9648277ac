"""The `facesense` command: run the stack, submit and follow jobs, manage model versions."""

from __future__ import annotations

import argparse
import sys

from cli import config_view, manage, options
from cli.commands import (
    Usage,
    cmd_cancel,
    cmd_demo,
    cmd_models,
    cmd_models_promote,
    cmd_retry,
    cmd_status,
    cmd_submit,
    cmd_train,
    cmd_up,
    cmd_worker,
)
from cli.local.classify import cmd_classify
from cli.local.keys import cmd_keys_hash, cmd_keys_new
from cli.local.models import add_model_parsers
from cli.options import EXIT_FAILED, EXIT_USAGE
from cli.results import cmd_results
from cli.video import add_video_options
from facesense.client import ApiError
from facesense.errors import ConfigError, FacesenseError
from facesense.settings import Settings
from facesense.state.scheduler import PRIORITIES


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code: 0 succeeded, 1 failed, 2 usage or a bad
    setting, 3 cancelled, 141 stdout closed early."""
    args = options.finish(parser().parse_args(argv))
    try:
        settings = Settings.from_env()  # every setting checked: one line naming a bad one
        code = args.func(args, settings) or 0
        sys.stdout.flush()  # a reader gone shows here, inside the try, not at exit
        return code
    except BrokenPipeError:
        return options.pipe_closed()
    except Usage as e:
        print(f"usage error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (ApiError, FacesenseError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def parser() -> argparse.ArgumentParser:
    """The argument parser, one sub-command per action (listed in this order in --help)."""
    p = argparse.ArgumentParser(prog="facesense", description=__doc__)
    sub = p.add_subparsers(required=True, metavar="COMMAND")
    for add in (_add_stack, _add_submit, _add_train, _add_job_commands, _add_models, _add_keys):
        add(sub)
    demo = sub.add_parser("demo", help="train on synthetic faces, score a campaign, compare")
    demo.add_argument("--data", default="var/demo", help="folder for the demo (default var/demo)")
    demo.add_argument("--port", type=int, help="API port for the demo stack (default: free)")
    demo.set_defaults(func=cmd_demo)
    config_view.add_parser(sub)
    options.add_global_options(p)  # --api, --key, --json before or after any command
    return p


def _add_stack(sub) -> None:
    """up and worker: start the embedded stack, or one worker."""
    up = sub.add_parser("up", help="start the embedded stack: private Redis, workers, API")
    up.add_argument("--host", help="API address (default 127.0.0.1)")
    up.add_argument("--port", type=int, help="API port (default 8000)")
    up.add_argument("--data", help="data folder for Redis and the local store (default ./var)")
    up.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    up.set_defaults(func=cmd_up)

    worker = sub.add_parser("worker", help="start one worker against the configured Redis")
    worker.add_argument("--queues", default="inference,training",
                        help="queues to serve (default inference,training)")
    worker.set_defaults(func=cmd_worker)


def _add_submit(sub) -> None:
    """submit: queue a scoring job on a source, URLs, uploads or a manifest."""
    submit = sub.add_parser("submit", help="queue a scoring job; prints its id")
    submit.add_argument("source", nargs="*",
                        help="s3://bucket/prefix or a folder the server may read; or image "
                             "URLs (http/https); with --upload, local files or folders")
    submit.add_argument("--manifest", metavar="FILE",
                        help="a CSV or JSON Lines manifest instead of a source: an 'image' column "
                             "(paths relative to the manifest, absolute paths, s3:// or http(s)) "
                             "and any others, carried into each row; a local file is sent by "
                             "path if the server can read it, else uploaded")
    submit.add_argument("--group-by", metavar="COLUMN",
                        help="the manifest column the summary groups by (default: each "
                             "image's first-level folder)")
    submit.add_argument("--model", help="model version or alias (default: production)")
    submit.add_argument("--priority", choices=PRIORITIES, default="normal",
                        help="high jobs go before queued normal shards; low ones run when "
                             "nothing else waits (default normal)")
    submit.add_argument("--faces", action=argparse.BooleanOptionalAction, default=None,
                        help="find each face and score it, a row per face (default: as the "
                             "model was trained)")
    submit.add_argument("--upload", action="store_true", help="upload local files to the API")
    submit.add_argument("--wait", action="store_true",
                        help="follow progress, then print the shares per group with their 95%% "
                             "intervals and the significant differences")
    submit.add_argument("--json", action="store_true",
                        help="print the job record as JSON instead (for scripts)")
    submit.set_defaults(func=cmd_submit)
    manage.add_label_options(submit)
    add_video_options(submit)


def _add_train(sub) -> None:
    """train: queue a training job on a labelled folder."""
    train = sub.add_parser("train", help="queue a training job on a labelled folder")
    train.add_argument("dataset", help="s3://bucket/prefix or a server-side folder "
                                       "(root/<class>/<image>, or root/train + root/val)")
    train.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                       help="a training param, e.g. --param epochs=8 (repeatable; JSON values)")
    train.add_argument("--promote", choices=("never", "if_better", "always", "force"),
                       default="never", help="move the alias to the new version: never "
                       "(default); if_better or always, only if it beats chance; force, even if "
                       "not (the alias history says so)")
    train.add_argument("--alias", help="the alias --promote moves (default production)")
    train.add_argument("--wait", action="store_true",
                       help="follow progress, then print each epoch, the metrics and the "
                            "confusion matrix")
    train.add_argument("--json", action="store_true",
                       help="print the job record as JSON instead (for scripts)")
    train.set_defaults(func=cmd_train)
    manage.add_label_options(train)


def _add_job_commands(sub) -> None:
    """retry, cancel, status, results and jobs: what follows a job once it is queued."""
    retry = sub.add_parser("retry", help="score again the images that failed in a job")
    retry.add_argument("job_id", help="the finished job whose failed images are scored again")
    retry.add_argument("--model", help="model version or alias (default: the job's version)")
    retry.add_argument("--priority", choices=PRIORITIES,
                       help="high, normal or low (default: the job's)")
    retry.add_argument("--wait", action="store_true", help="follow progress until done")
    retry.add_argument("--json", action="store_true",
                       help="print the job record as JSON instead (for scripts)")
    retry.set_defaults(func=cmd_retry)

    cancel = sub.add_parser("cancel", help="cancel a job")
    cancel.add_argument("job_id", help="the job to cancel")
    cancel.set_defaults(func=cmd_cancel)

    status = sub.add_parser("status", help="show a job's state and progress")
    status.add_argument("job_id", help="the job to show")
    status.add_argument("--wait", action="store_true", help="follow with a progress bar")
    status.add_argument("--json", action="store_true", help="print the raw record as JSON")
    status.set_defaults(func=cmd_status)

    results = sub.add_parser("results", help="print a job's results (JSON lines) or save CSV")
    results.add_argument("job_id", help="the job whose results are printed")
    results.add_argument("--csv", metavar="FILE", help="write the CSV to FILE ('-' for stdout)")
    results.add_argument("--summary-csv", metavar="FILE",
                         help="write summary.csv (group,label,count,share,ci95_low,ci95_high) "
                              "to FILE ('-' for stdout)")
    results.add_argument("--timeline-csv", metavar="FILE", help="write a video job's timeline.csv "
                         "(group,t0,t1,viewers,label,share,ci95_low,ci95_high) to FILE ('-' for stdout)")
    results.set_defaults(func=cmd_results)

    jobs = sub.add_parser("jobs", help="list recent jobs")
    jobs.add_argument("--limit", type=int, default=20, help="most jobs listed, newest first "
                      "(default 20)")
    manage.add_job_list_options(jobs)  # --name, --tag, --status, --since, --until; delete


def _add_models(sub) -> None:
    """models (list, promote, delete; import, starter, measure run here) and classify."""
    models = sub.add_parser("models", help="list model versions and aliases")
    models.set_defaults(func=cmd_models)
    msub = models.add_subparsers(metavar="ACTION")
    add_model_parsers(msub)  # import, starter, measure: run here, not through the API
    prom = msub.add_parser("promote", help="point an alias at a version")
    prom.add_argument("version", help="the version the alias will point at")
    prom.add_argument("--alias", default="production", help="the alias to move (default "
                      "production)")
    prom.add_argument("--force", action="store_true", help="promote even a version that does "
                      "not beat chance on its validation images (the alias history says so)")
    prom.set_defaults(func=cmd_models_promote)
    manage.add_model_delete(msub)
    classify = sub.add_parser("classify", help="score one image locally (path or http(s) URL)")
    classify.add_argument("image", help="an image file or an http(s) URL")
    classify.add_argument("--model", help="model version or alias (default: production)")
    classify.add_argument("--json", action="store_true", help="print all probabilities as JSON "
                          "(a line per face with --faces)")
    classify.add_argument("--faces", action=argparse.BooleanOptionalAction, default=None,
                          help="find each face and score it, a line each with its box "
                          "(default: as the model was trained)")
    classify.set_defaults(func=cmd_classify)


def _add_keys(sub) -> None:
    """keys new / hash: API keys and their configuration lines."""
    keys = sub.add_parser("keys", help="make API keys and their configuration lines")
    ksub = keys.add_subparsers(required=True, metavar="ACTION")
    knew = ksub.add_parser("new", help="print a new random key and its configuration line")
    khash = ksub.add_parser("hash", help="read a key on stdin, print its configuration line")
    for action, func in ((knew, cmd_keys_new), (khash, cmd_keys_hash)):
        action.add_argument("name", help="a name for the key (shown as the owner of its jobs)")
        action.add_argument("--admin", action="store_true",
                            help="an admin key: sees every job, may promote models")
        action.set_defaults(func=func)


if __name__ == "__main__":
    sys.exit(main())
