"""A model version ready to run, and its forward pass from uint8 pixels to probabilities."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from runtime.device import autocast
from runtime.preprocess import normalize


@dataclass
class LoadedModel:
    """A model version ready to run: the network plus what its manifest says about inputs."""

    version: str
    classes: list[str]
    spec: dict  # preprocessing: input_size, resize_size, mean, std
    model: torch.nn.Module
    device: torch.device
    precision: str  # fp32, bf16 or fp16
    faces: dict | None = None  # the manifest's faces: how its training images were cut, if so


def forward(loaded: LoadedModel, batch: np.ndarray | torch.Tensor) -> np.ndarray:
    """uint8 NHWC batch (CPU array, or tensor already on the device) -> class probabilities."""
    x = normalize(torch.as_tensor(batch), loaded.spec, loaded.device)
    with torch.inference_mode(), autocast(loaded.device, loaded.precision):
        logits = loaded.model(x)
    return torch.softmax(logits.float(), dim=1).cpu().numpy()
