"""Training parameters: defaults, types and ranges, checked in the API before anything is queued."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from facesense.errors import BadRequest
from facesense.registry import resize_for

# always and if_better promote only a version that beats chance; force promotes any, and says so.
PROMOTE_POLICIES = ("never", "if_better", "always", "force")


def _p(default, help: str, **limits):
    return field(default=default, metadata={"help": help, **limits})


@dataclass(frozen=True)
class TrainParams:
    """Sound defaults for training AlexNet from scratch on a small labelled folder."""

    epochs: int = _p(15, "Most passes over the training images", lo=1, hi=1000)
    batch_size: int = _p(32, "Images per optimisation step", lo=1, hi=4096)
    lr: float = _p(3e-4, "Learning rate (peak; cosine decay over the epochs)", lo=1e-7, hi=10.0)
    optimizer: str = _p("adamw", "adamw or sgd (momentum 0.9, nesterov)",
                        choices=("adamw", "sgd"))
    weight_decay: float = _p(1e-4, "Weight decay", lo=0.0, hi=1.0)
    val_split: float = _p(0.2, "Share of each class held out for validation (stratified, seeded); "
                          "ignored with a train/ + val/ layout", lo=0.05, hi=0.5)
    image_size: int = _p(112, "Model input side in pixels (>= 63); images are resized to "
                         "8/7 of it, then cropped", lo=63, hi=512)
    augment: bool = _p(True, "Random crops, flips and colour jitter on training images")
    seed: int = _p(0, "Seed for the split, the initial weights and the batch order", lo=0,
                   hi=2**31 - 1)
    patience: int = _p(5, "Stop after this many epochs without a better validation loss "
                       "(0: never stop early)", lo=0, hi=1000)
    base: str | None = _p(None, "A model version or alias to fine-tune from (the starter model "
                          "included): its architecture and preprocessing are kept (image_size is "
                          "then ignored) and its head is replaced when classes differ")
    pretrained: bool = _p(False, "Start from torchvision's ImageNet AlexNet weights (ignored "
                          "with base): downloaded on first use from FACESENSE_PRETRAINED_URL, "
                          "hash-checked and kept once in the store; refused at submission when "
                          "neither the store copy nor the URL is there")
    faces: bool | None = _p(None, "Train on each image's largest face (found and cut as scoring "
                            "does); images without a face are skipped and counted; the version "
                            "then scores faces by default. null: as the base version was "
                            "trained (off without a base)")
    backbone_lr: float = _p(0.1, "When fine-tuning (base or pretrained): the backbone's learning "
                            "rate as a share of lr, while the new head learns at lr; 0 freezes "
                            "the backbone", lo=0.0, hi=1.0)
    min_steps: int = _p(300, "Fewest optimisation steps: a small set gets more epochs (at most "
                        "1000; the job says so) so it does not stop in the first plateau; 0: "
                        "epochs as given", lo=0, hi=100_000)

    @classmethod
    def parse(cls, raw: dict | None) -> TrainParams:
        """Params from a request's dict: unknown names, wrong types and bad values are named."""
        raw = raw or {}
        if not isinstance(raw, dict):
            raise BadRequest("'params' must be a JSON object")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - set(fields))
        if unknown:
            raise BadRequest(f"unknown param(s): {', '.join(unknown)}; known: "
                             f"{', '.join(fields)}")
        problems = [p for name, value in raw.items() if (p := _check(fields[name], value))]
        if problems:
            raise BadRequest("bad param(s): " + "; ".join(problems))
        values = {k: float(v) if fields[k].type == "float" else v for k, v in raw.items()}
        return cls(**values)

    def to_dict(self) -> dict:
        """The params as plain JSON."""
        return dataclasses.asdict(self)

    @property
    def resize_size(self) -> int:
        """The shorter side images are resized to before cropping (224 -> 256, as ImageNet)."""
        return resize_for(self.image_size)


def _check(f: dataclasses.Field, value) -> str | None:
    """A message if value does not fit the field, else None."""
    kind, meta = f.type, f.metadata
    ok_type = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "bool | None": value is None or isinstance(value, bool),
        "str": isinstance(value, str),
        "str | None": value is None or isinstance(value, str),
    }[kind]
    if not ok_type:
        return f"{f.name} must be {kind.replace(' | None', ' or null')}, got {value!r}"
    if "lo" in meta and not meta["lo"] <= value <= meta["hi"]:
        return f"{f.name} must be between {meta['lo']} and {meta['hi']}, got {value!r}"
    if "choices" in meta and value not in meta["choices"]:
        return f"{f.name} must be one of {', '.join(meta['choices'])}, got {value!r}"
    return None


def describe() -> list[tuple[str, str, str]]:
    """(name, default, help) per param, for the README."""
    return [(f.name, json.dumps(f.default), f.metadata["help"]) for f in dataclasses.fields(TrainParams)]
