"""What each setting may hold (type, range, allowed values), checked as the environment is read."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Range:
    """A number from low to high, either end open when None."""

    low: float | None = 0
    high: float | None = None

    def problem(self, value) -> str | None:
        """Why value is out of range, or None."""
        inside = value == value and (self.low is None or value >= self.low) and (
            self.high is None or value <= self.high)  # value == value: NaN is never inside
        return None if inside else "out of range"

    def allowed(self, kind: str) -> str:
        """The range in words."""
        noun = NOUNS.get(kind, kind)
        if self.low is not None and self.high is not None:
            return f"{noun} from {_num(self.low)} to {_num(self.high)}"
        if self.low is not None:
            return f"{noun} >= {_num(self.low)}"
        return f"{noun} <= {_num(self.high)}" if self.high is not None else noun


@dataclass(frozen=True)
class OneOf:
    """One of a few words (any case when fold), or a value matching an extra pattern."""

    choices: tuple[str, ...]
    pattern: str = ""  # e.g. cuda:N
    label: str = ""  # how the pattern reads in the message
    fold: bool = False

    def problem(self, value) -> str | None:
        """Why value is not allowed, or None."""
        word = value.upper() if self.fold else value
        if word in self.choices or (self.pattern and re.fullmatch(self.pattern, value)):
            return None
        return "not a known value"

    def allowed(self, kind: str) -> str:
        """The choices in words."""
        words = [*self.choices, *([self.label] if self.label else [])]
        return "one of " + ", ".join(words)


@dataclass(frozen=True)
class Form:
    """A string of a given form (empty allowed when optional)."""

    pattern: str
    label: str
    optional: bool = True

    def problem(self, value) -> str | None:
        """Why value has the wrong form, or None."""
        if (self.optional and value == "") or re.fullmatch(self.pattern, value, re.S):
            return None
        return "not of a known form"

    def allowed(self, kind: str) -> str:
        """The form in words."""
        return self.label + (" (or empty)" if self.optional else "")


NOUNS = {"int": "a whole number", "float": "a number"}
SWITCH = OneOf(("0", "1"))  # ints that are switches: told apart by their rule, not their type
PORT = Range(1, 65535)
AT_LEAST_1 = Range(1)
SHARE = Range(0, 1)
URL = Form(r"https?://\S+", "an http:// or https:// URL")

# Every int and float setting not named here must be >= 0 (counts, sizes, seconds); strings not
# named here are free text (their own parsers check them: keys, networks, sentinels).
RULES: dict[str, Range | OneOf | Form] = {
    "redis_url": Form(r"(redis|rediss|unix)://\S*", "a redis://, rediss:// or unix:// URL"),
    "redis_sentinel_master": Form(r"\S+", "a name", optional=False),
    "store": Form(r"(s3://[^/\s]+(/\S*)?|file://\S+|(?![A-Za-z][\w+.-]*://).+)",
                  "a folder, file://PATH or s3://BUCKET[/PREFIX]"),
    "data_dir": Form(r".+", "a folder", optional=False),
    "s3_endpoint_url": URL,
    "shard_size": AT_LEAST_1,
    "decode_threads": Range(0, 256),
    "device": OneOf(("auto", "cpu", "cuda"), r"cuda:\d+", "cuda:N"),
    "decoder": OneOf(("auto", "cpu", "gpu")),
    "precision": OneOf(("auto", "fp32", "bf16", "bf16-full", "fp16", "int8")),
    "face_margin": SHARE,
    "face_min_size": AT_LEAST_1,
    "face_threshold": SHARE,
    "face_max_per_image": AT_LEAST_1,
    "face_detect_side": Range(32),
    "default_model": Form(r"\S+", "a version or alias", optional=False),
    "api_host": Form(r"\S+", "an address", optional=False),
    "api_port": PORT,
    "api_url": URL,
    "allow_open_api": SWITCH,
    "max_upload_bytes": AT_LEAST_1,
    "max_form_parts": AT_LEAST_1,
    "max_json_bytes": AT_LEAST_1,
    "max_zip_members": AT_LEAST_1,
    "max_zip_bytes": AT_LEAST_1,
    "max_zip_ratio": AT_LEAST_1,
    "max_image_bytes": AT_LEAST_1,
    "max_image_pixels": AT_LEAST_1,
    "video_fps": Range(0.01, 240),
    "video_max_fps": Range(0.01, 240),
    "video_max_seconds": Range(0.01),
    "video_max_side": Range(16),
    "video_max_frames": AT_LEAST_1,
    "video_shard_seconds": Range(0.1),
    "video_face_detect_seconds": Range(0, 3600),
    "url_max_per_job": AT_LEAST_1,
    "url_connect_timeout_s": AT_LEAST_1,
    "url_timeout_s": AT_LEAST_1,
    "pretrained_timeout_s": AT_LEAST_1,
    "manifest_max_rows": AT_LEAST_1,
    "manifest_max_bytes": AT_LEAST_1,
    "webhook_max_attempts": AT_LEAST_1,
    "shard_max_attempts": AT_LEAST_1,
    "visibility_timeout": AT_LEAST_1,
    "lease_ttl_s": AT_LEAST_1,
    "queue_depth": AT_LEAST_1,
    "control_sidecar": SWITCH,
    "log_level": OneOf(("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), fold=True),
    "log_format": OneOf(("text", "json")),
    "api_metrics": OneOf(("public", "key", "off")),
    "worker_metrics_port": Range(0, 65535),
    "job_ttl_s": AT_LEAST_1,
    "summary_max_groups": AT_LEAST_1,
    "thumbnails": SWITCH,
}


def rule(name: str, kind: str) -> Range | OneOf | Form | None:
    """The rule of one setting: its own, else >= 0 for numbers, else none."""
    if name in RULES:
        return RULES[name]
    return Range(0) if kind in NOUNS else None


def problem(name: str, kind: str, value, raw: str) -> str | None:
    """What is wrong with a setting's value (None: a value of the wrong type), in words naming
    what is allowed; None when nothing is."""
    check = rule(name, kind)
    if isinstance(check, OneOf) and kind in NOUNS:  # a switch: compare the text
        value = raw.strip()
    if value is None:
        return f"not {NOUNS.get(kind, kind)} (allowed: {(check or Range(None)).allowed(kind)})"
    why = check.problem(value) if check else None
    return f"{why} (allowed: {check.allowed(kind)})" if why else None


def _num(x: float) -> str:
    """1.0 -> '1', 0.5 -> '0.5'."""
    return str(int(x)) if float(x).is_integer() else str(x)
