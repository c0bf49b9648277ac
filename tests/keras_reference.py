"""An independent reference for Keras HDF5 models: the saved graph interpreted in plain numpy.

It reads the layer graph from the file's own model_config (not the port's hand-written
layout), works in NHWC with TensorFlow's padding rules, and shares no code with runtime/.
"""

from __future__ import annotations

import json

import h5py
import numpy as np


def _same_pads(n: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow 'same' padding of one axis: the odd pixel goes after."""
    total = max((-(-n // s) - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def _pad(x: np.ndarray, k: tuple[int, int], s: tuple[int, int], padding: str, value=0.0):
    if padding == "valid":
        return x
    (top, bottom), (left, right) = _same_pads(x.shape[1], k[0], s[0]), _same_pads(x.shape[2], k[1], s[1])
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)


def _windows(x: np.ndarray, k: tuple[int, int], s: tuple[int, int]) -> np.ndarray:
    """(N, H', W', C, kh, kw) sliding windows of an NHWC array."""
    w = np.lib.stride_tricks.sliding_window_view(x, k, axis=(1, 2))
    return w[:, ::s[0], ::s[1]]


def conv2d(x, kernel, bias, strides, padding):
    """Keras Conv2D: kernel (kh, kw, in, out)."""
    k = kernel.shape[:2]
    w = _windows(_pad(x, k, strides, padding), k, strides)
    out = np.einsum("nhwcij,ijco->nhwo", w, kernel, optimize=True)
    return out + bias if bias is not None else out


def depthwise(x, kernel, strides, padding):
    """Keras depthwise step of SeparableConv2D: kernel (kh, kw, in, 1)."""
    k = kernel.shape[:2]
    w = _windows(_pad(x, k, strides, padding), k, strides)
    return np.einsum("nhwcij,ijc->nhwc", w, kernel[..., 0], optimize=True)


def maxpool(x, pool, strides, padding):
    """Keras MaxPooling2D."""
    w = _windows(_pad(x, pool, strides, padding, value=-np.inf), pool, strides)
    return w.max(axis=(4, 5))


def run(path: str, images: np.ndarray) -> np.ndarray:
    """The model's output for NHWC float images, layer by layer from the saved graph."""
    with h5py.File(path, "r") as f:
        config = json.loads(f.attrs["model_config"])
        group = f["model_weights"]
        weights = {name: {k.rsplit("/", 1)[1].split(":")[0]: np.asarray(v, dtype=np.float64)
                          for k, v in _datasets(group[name])} for name in group}
    values: dict[str, np.ndarray] = {}
    for layer in config["config"]["layers"]:
        kind, name, c = layer["class_name"], layer["name"], layer["config"]
        inputs = [values[node[0]] for node in layer["inbound_nodes"][0]] \
            if layer["inbound_nodes"] else [images.astype(np.float64)]
        x, w = inputs[0], weights.get(name, {})
        if kind == "InputLayer":
            out = x
        elif kind == "Conv2D":
            out = conv2d(x, w["kernel"], w.get("bias"), tuple(c["strides"]), c["padding"])
        elif kind == "SeparableConv2D":
            out = depthwise(x, w["depthwise_kernel"], tuple(c["strides"]), c["padding"])
            out = conv2d(out, w["pointwise_kernel"], w.get("bias"), (1, 1), "valid")
        elif kind == "BatchNormalization":
            out = (x - w["moving_mean"]) / np.sqrt(w["moving_variance"] + c["epsilon"]) \
                * w["gamma"] + w["beta"]
        elif kind == "Activation":
            out = {"relu": lambda v: np.maximum(v, 0), "linear": lambda v: v,
                   "softmax": _softmax}[c["activation"]](x)
        elif kind == "MaxPooling2D":
            out = maxpool(x, tuple(c["pool_size"]), tuple(c["strides"]), c["padding"])
        elif kind == "Add":
            out = sum(inputs)
        elif kind == "GlobalAveragePooling2D":
            out = x.mean(axis=(1, 2))
        else:
            raise NotImplementedError(kind)
        values[name] = out
    return values[config["config"]["output_layers"][0][0]]


def _softmax(v: np.ndarray) -> np.ndarray:
    e = np.exp(v - v.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _datasets(group):
    out = []
    group.visititems(lambda k, v: out.append((k, v)) if isinstance(v, h5py.Dataset) else None)
    return out
