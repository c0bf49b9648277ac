"""Stand-alone training, like the original script: `python -m trainer DATA_DIR --epochs N`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from facesense.errors import FacesenseError
from facesense.logs import setup_logging
from facesense.registry import Registry
from facesense.settings import Settings
from facesense.sources import open_source
from facesense.store import open_store
from facesense.trainparams import TrainParams


def parser() -> argparse.ArgumentParser:
    """Flags mirror the job params (epochs, val split, ...), plus where to register."""
    p = argparse.ArgumentParser(prog="python -m trainer", description=__doc__)
    p.add_argument("data", help="ImageFolder dataset: a local folder or s3://bucket/prefix")
    p.add_argument("--store", help="where to register the version (default: FACESENSE_STORE)")
    p.add_argument("--promote", nargs="?", const="production", metavar="ALIAS",
                   help="point ALIAS (default production) at the new version")
    for f in dataclasses.fields(TrainParams):
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                           help=f.metadata["help"])
        else:
            kind = {"int": int, "float": float}.get(f.type, str)
            p.add_argument(flag, type=kind, default=None, help=f.metadata["help"])
    return p


def main(argv: list[str] | None = None) -> int:
    """Train, register, print the metrics; exit 1 with a message on bad input."""

    from trainer.data import load_data
    from trainer.presets import spec_for
    from trainer.train import fit, initial_state, manifest_for, register
    from worker.inference import resolve_device, resolve_precision

    args = parser().parse_args(argv)
    settings = Settings.from_env()
    setup_logging(settings.log_level, settings.log_format)
    try:
        params = TrainParams.parse({f.name: getattr(args, f.name)
                                    for f in dataclasses.fields(TrainParams)
                                    if getattr(args, f.name) is not None})
        store = open_store(args.store or settings.store_url,
                           endpoint_url=settings.s3_endpoint_url, region=settings.s3_region)
        registry = Registry(store)
        data_url = args.data if "://" in args.data else Path(args.data).resolve().as_uri()
        roots = settings.replace(allowed_roots=(str(Path(args.data).resolve()),)) \
            if "://" not in args.data else settings
        spec = spec_for(params.image_size, params.resize_size)
        data = load_data(open_source(data_url, roots, store), val_split=params.val_split,
                         seed=params.seed, spec=spec, cache_dir=Path(settings.data_dir) / "cache",
                         max_pixels=settings.max_image_pixels)
        device = resolve_device(settings.device)
        precision = resolve_precision(settings.precision, device)
        init, parent = initial_state(params, data.classes, registry)

        def show(row: dict) -> None:
            print(json.dumps(row), file=sys.stderr, flush=True)

        result = fit(data, params, spec, device=device, precision=precision, init_state=init,
                     on_epoch=show)
        manifest = register(registry, result, manifest_for(result, data, params, spec,
                                                           parent=parent, job_id=None,
                                                           source=data_url))
        if args.promote:
            registry.promote(manifest["version"], args.promote, by="python -m trainer")
    except FacesenseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"version": manifest["version"], "accuracy": manifest["metrics"]["accuracy"],
                      "skipped": len(data.skipped), "promoted": args.promote}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
