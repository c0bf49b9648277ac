"""Stand-alone training, like the original script: `python -m trainer DATA_DIR --epochs N`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from facesense.errors import FacesenseError
from facesense.inputs.sources import open_source
from facesense.logs import setup_logging
from facesense.registry import Registry
from facesense.settings import Settings
from facesense.storage import open_store
from facesense.trainparams import TrainParams


def parser() -> argparse.ArgumentParser:
    """Flags mirror the job params (epochs, val split, ...), plus where to register."""
    p = argparse.ArgumentParser(prog="python -m trainer", description=__doc__)
    p.add_argument("data", help="ImageFolder dataset: a local folder or s3://bucket/prefix")
    p.add_argument("--store", help="where to register the version (default: FACESENSE_STORE)")
    p.add_argument("--promote", nargs="?", const="production", metavar="ALIAS",
                   help="point ALIAS (default production) at the new version if it beats chance")
    p.add_argument("--force", action="store_true", help="with --promote: even if it does not "
                   "beat chance (the alias history says so)")
    for f in dataclasses.fields(TrainParams):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", "bool | None"):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                           help=f.metadata["help"])
        else:
            kind = {"int": int, "float": float}.get(f.type, str)
            p.add_argument(flag, type=kind, default=None, help=f.metadata["help"])
    return p


def main(argv: list[str] | None = None) -> int:
    """Train, register, print the metrics; exit 1 with a message on bad input."""
    args = parser().parse_args(argv)  # --help and bad flags answer before torch loads
    from runtime.device import default_threads, resolve_device, resolve_precision
    from trainer.pipeline import train_version

    settings = Settings.from_env()
    setup_logging(settings.log_level, settings.log_format)
    try:
        params = TrainParams.parse({f.name: getattr(args, f.name)
                                    for f in dataclasses.fields(TrainParams)
                                    if getattr(args, f.name) is not None})
        store = open_store(args.store or settings.store_url,
                           endpoint_url=settings.s3_endpoint_url, region=settings.s3_region)
        data_url = args.data if "://" in args.data else Path(args.data).resolve().as_uri()
        # The folder named on the command line is this run's allowed root.
        roots = settings.replace(allowed_roots=(str(Path(args.data).resolve()),)) \
            if "://" not in args.data else settings
        device = resolve_device(settings.device)

        def show(row: dict) -> None:
            print(json.dumps(row), file=sys.stderr, flush=True)

        trained = train_version(
            open_source(data_url, roots, store), data_url, params, settings=settings,
            registry=Registry(store), device=device,
            precision=resolve_precision(settings.precision, device),
            threads=settings.decode_threads or default_threads(), on_epoch=show,
            promote_policy=("force" if args.force else "always") if args.promote else "never",
            alias=args.promote or "production", promoted_by="python -m trainer")
    except FacesenseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"version": trained.manifest["version"],
                      "accuracy": trained.manifest["metrics"]["accuracy"],
                      "skipped": len(trained.data.skipped),
                      "chance": trained.manifest["chance"], "promotion": trained.promotion},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
