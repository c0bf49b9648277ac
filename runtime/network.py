"""Model versions as tensors only: build by architecture, serialise (safetensors), load with checks."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from facesense.errors import ModelError
from facesense.registry import Registry
from runtime.architectures import DEFAULT_ARCH, architecture


def build(arch: str | None, num_classes: int) -> torch.nn.Module:
    """A freshly initialised network of the table's architecture with num_classes outputs."""
    return architecture(arch).build(num_classes)


def build_alexnet(num_classes: int) -> torch.nn.Module:
    """A freshly initialised torchvision AlexNet with num_classes outputs."""
    return build("alexnet", num_classes)


def new_head(state: dict, arch: str | None, num_classes: int) -> dict:
    """The state with its class head replaced by a fresh one for num_classes."""
    head = architecture(arch).head + "."
    fresh = build(arch, num_classes).state_dict()
    return {**{k: v for k, v in state.items() if not k.startswith(head)},
            **{k: v for k, v in fresh.items() if k.startswith(head)}}


def to_bytes(model_or_state: torch.nn.Module | dict) -> bytes:
    """Weights as safetensors bytes (no pickle, so loading can't run code)."""
    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) \
        else model_or_state
    return save_safetensors({k: v.detach().cpu().contiguous() for k, v in state.items()})


def check_state(state: dict, num_classes: int | None = None, arch: str | None = None) -> int:
    """Check a state dict fits the architecture; returns its number of classes."""
    spec = architecture(arch)
    expected = build(spec.name, 2).state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ModelError(f"not a {spec.name} state dict: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    head = spec.head
    n = state[f"{head}.weight"].shape[0]
    if num_classes is not None and n != num_classes:
        raise ModelError(f"the weights have {n} outputs but {num_classes} classes were given")
    for key, ref in expected.items():
        if not key.startswith(head) and state[key].shape != ref.shape:
            raise ModelError(f"tensor {key} has shape {tuple(state[key].shape)}, "
                             f"expected {tuple(ref.shape)}")
    return n


def read_state_file(path: str | Path) -> dict:
    """A state dict from .safetensors or a torch file, loaded with weights_only=True."""
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            return load_safetensors(path.read_bytes())
        except Exception as e:  # safetensors holds tensors only: this is just a bad file
            raise ModelError(f"{path.name}: not a valid safetensors file ({e})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickled code, corrupt file: never executed, always refused
        raise ModelError(f"{path.name}: refused, not a plain tensor state dict "
                         f"({unpickle_reason(e)})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path.name}: expected a dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def unpickle_reason(e: Exception) -> str:
    """The one useful line of torch.load's error (it runs to a page of advice)."""
    match = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
    if match:
        return f"it carries pickled code: {match.group(1)}"
    return f"corrupt or not a torch file: {type(e).__name__}"


def load_model(manifest: dict, weights: bytes, device: torch.device) -> torch.nn.Module:
    """An eval-mode network on device (in its arch's memory format) from verified safetensors."""
    try:
        state = load_safetensors(weights)
    except Exception as e:
        raise ModelError(f"model {manifest.get('version')}: unreadable weights ({e})") from None
    arch = manifest.get("arch")
    check_state(state, len(manifest["classes"]), arch)
    with torch.device("meta"):  # no random initialisation (~0.5 s): the state replaces it all
        model = build(arch, len(manifest["classes"]))
    # fp32 copies: an imported state may be fp16, and tensors must not share the bytes' buffer
    model.load_state_dict({k: v.to(torch.float32, copy=True) for k, v in state.items()},
                          assign=True)
    return model.eval().to(device, memory_format=architecture(arch).memory_format)


def register_state(registry: Registry, state: dict, classes: list[str],
                   version: str | None = None, files: dict[str, bytes] | None = None,
                   arch: str = DEFAULT_ARCH, **manifest) -> dict:
    """Register a state dict as a new immutable version; returns its manifest."""
    check_state(state, len(classes), arch)
    return registry.register(to_bytes(state), {"classes": list(classes), "arch": arch,
                                               **manifest}, version=version, files=files)
