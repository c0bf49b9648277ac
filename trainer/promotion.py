"""Promotion after training: move an alias to the new version when the policy says so."""

from __future__ import annotations

import numpy as np
import torch

from facesense.registry import Registry
from facesense.storage import Store
from runtime.faces import FaceDetector, FaceOptions, largest_face
from runtime.network import load_model
from runtime.preprocess import decode, fit, preprocess
from trainer.chance import plain_reason
from trainer.data import Dataset
from trainer.engine import metrics_from, predict


def promote(registry: Registry, manifest: dict, data: Dataset, policy: str, *, by: str,
            source: Store, device: torch.device, precision: str,
            alias: str = "production") -> dict:
    """Apply the promotion policy; if_better compares with the alias holder on the same images."""
    out = {"policy": policy, "alias": alias, "promoted": False,
           "candidate_accuracy": manifest["metrics"]["accuracy"]}
    if policy == "never":
        return out
    chance = manifest.get("chance") or {}
    if policy == "force":  # the one way a version no better than chance gets an alias
        registry.promote(manifest["version"], alias, by=by, force=True)
        forced = chance and not chance["beats_chance"]
        return {**out, "promoted": True, **({"forced": True, "reason": "forced: "
                                             + plain_reason(chance)} if forced else {})}
    holder = registry.alias(alias)
    if policy == "if_better" and holder:
        incumbent = registry.manifest(holder["version"])
        if incumbent["classes"] != data.classes:
            return {**out, "reason": f"{holder['version']} has other classes; not comparable"}
        accuracy = incumbent_accuracy(registry, incumbent, data, source, device, precision)
        out["incumbent"], out["incumbent_accuracy"] = holder["version"], accuracy
        if manifest["metrics"]["accuracy"] <= accuracy:
            return {**out, "reason": "not better than the alias holder on the validation images"}
    if chance and not chance["beats_chance"]:
        return {**out, "reason": plain_reason(chance)}
    registry.promote(manifest["version"], alias, by=by)
    return {**out, "promoted": True}


def incumbent_accuracy(registry: Registry, manifest: dict, data: Dataset, source: Store,
                       device: torch.device, precision: str) -> float:
    """The alias holder's accuracy on this job's validation images, prepared its own way: its
    input size, and its faces (a version trained on faces sees its faces, another whole
    images), as it would be served."""
    model = load_model(manifest, registry.weights(manifest), device)
    spec = manifest["preprocess"]
    if spec["input_size"] == data.val_x.shape[1] and manifest.get("faces") == data.faces:
        x = data.val_x
    else:  # re-decode the incumbent's way
        prepare = inputs_for(manifest, device)
        x = torch.from_numpy(np.stack([prepare(source.get(k)) for k in data.val_keys]))
    logits = predict(model, x, spec=spec, device=device, precision=precision)
    return metrics_from(logits, data.val_y, data.classes)["accuracy"]


def inputs_for(manifest: dict, device: torch.device):
    """Image bytes -> a version's model input, as scoring with it prepares them by default (a
    photo in which a version trained on faces finds none is given whole)."""
    spec = manifest["preprocess"]
    if not manifest.get("faces"):
        return lambda data: preprocess(data, spec)
    detector, options = FaceDetector(device), FaceOptions().for_version(manifest)

    def prepare(data: bytes) -> np.ndarray:
        img = decode(data, max_pixels=1 << 30)
        face = largest_face(img, detector=detector, options=options)
        return fit(img if face is None else face, spec)

    return prepare
