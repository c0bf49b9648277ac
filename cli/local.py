"""CLI commands that run on this machine, without the API: import weights, score one image
locally, make API keys."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from facesense.errors import FacesenseError
from facesense.keys import hash_key, new_key, parse_keys
from facesense.settings import Settings


def cmd_models_import(args, settings: Settings) -> int:
    """Register weights into the configured store (needs torch: run where workers run)."""
    from facesense.registry import Registry
    from facesense.storage import store_from_settings
    from runtime.network import read_state_file, register_state

    registry = Registry(store_from_settings(settings))
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    state = read_state_file(args.weights)
    manifest = register_state(registry, state, classes, version=args.version,
                              source=f"imported from {Path(args.weights).name}")
    print(manifest["version"])
    if args.promote:
        registry.promote(manifest["version"], args.promote, by="facesense models import")
        print(f"{args.promote} -> {manifest['version']}", file=sys.stderr)
    return 0


def cmd_classify(args, settings: Settings) -> int:
    """Load the model here (needs torch) and print label and confidence for one image."""
    from facesense.inputs.fetch import fetch_image
    from facesense.registry import Registry
    from facesense.storage import store_from_settings

    data = fetch_image(args.image, settings)  # a bad path or URL fails before torch loads
    registry = Registry(store_from_settings(settings))
    manifest = registry.resolve(args.model or settings.default_model)

    from runtime.device import resolve_device, resolve_precision
    from runtime.faces import FaceOptions
    from worker.inference import score
    from worker.models import FaceCache, ModelCache

    device = resolve_device(settings.device)
    loaded = ModelCache(registry, device, resolve_precision(settings.precision, device)).get(
        manifest["version"])
    faces = bool(manifest.get("faces")) if args.faces is None else args.faces
    cut = FaceCache(device, FaceOptions.from_settings(settings)).cutter(loaded) if faces else None
    rows = list(score([args.image], loaded, lambda _key, _limit: data, batch_size=1, threads=1,
                      max_pixels=settings.max_image_pixels, max_bytes=settings.max_image_bytes,
                      faces=cut))
    row = rows[0]
    if args.json:
        for r in rows:
            print(json.dumps({**r, "model_version": manifest["version"]}))
    elif row["error"]:
        print(f"error: {row['error']}", file=sys.stderr)
    elif faces and row["face"] is None:
        print("no face")
    else:  # one line per face (largest first) with its box, or the whole image's one
        for r in rows:
            where = f"face {r['face'] + 1} [{', '.join(map(str, r['box']))}] " if faces else ""
            print(f"{where}{r['label']} {r['confidence']:.4f}")
    return 1 if row["error"] else 0


def cmd_keys_new(args, settings: Settings) -> int:
    """Print a new key (shown once, stored nowhere) and the line that configures its hash."""
    key = new_key()
    line = config_line(args, hash_key(key))
    print(key)  # stdout holds the key alone, for scripts: KEY=$(facesense keys new NAME)
    print(f"# give the key above to its holder; only its hash goes in the API's environment "
          f"(','-separate several keys):\n{line}", file=sys.stderr)
    return 0


def cmd_keys_hash(args, settings: Settings) -> int:
    """Print the configuration line for a key read from stdin (kept out of shell history)."""
    key = sys.stdin.readline().strip()
    if not key:
        raise FacesenseError("give the key on stdin, e.g. `facesense keys hash NAME < keyfile`")
    print(config_line(args, hash_key(key)))
    return 0


def config_line(args, digest: str) -> str:
    """FACESENSE_API_KEYS=name:hash (or ADMIN_KEYS), checked as the server will parse it."""
    variable = "FACESENSE_ADMIN_KEYS" if args.admin else "FACESENSE_API_KEYS"
    parse_keys(f"{args.name}:{digest}", variable)  # a bad name fails here, not at start-up
    return f"{variable}={args.name}:{digest}"
