"""`facesense classify`: score one image on this machine (needs torch)."""

from __future__ import annotations

import json
import sys

from facesense.settings import Settings


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
    from worker.model_cache import FaceCache, ModelCache

    device = resolve_device(settings.device)
    loaded = ModelCache(registry, device, resolve_precision(settings.precision, device),
                        setting=settings.precision, batch_size=1).get(manifest["version"])
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
