"""One settings object, built once from FACESENSE_* environment variables and passed down."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from facesense.errors import ConfigError
from facesense.settings_rules import problem as rule_problem

PREFIX = "FACESENSE_"
URL_PASSWORD = re.compile(r"(://[^/@:]*:)[^/@]*@")  # redis://user:password@host -> masked


def _setting(default, help: str):
    """A dataclass field carrying its help text (for the README table and `facesense config`)."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Settings:
    """Everything configurable; every field maps to FACESENSE_<FIELD NAME IN CAPITALS>."""

    redis_url: str = _setting("", "Redis URL (broker + job records); empty: `facesense up` starts a private one")
    redis_sentinels: str = _setting("", "Redis Sentinel addresses as host:port, ','-separated; when set they replace FACESENSE_REDIS_URL everywhere (broker, job records, scheduler, leases, `facesense up`): clients ask them for the current primary and follow a failover")
    redis_sentinel_master: str = _setting("facesense", "The name the sentinels monitor the Redis primary under")
    redis_wait_ms: int = _setting(1000, "With sentinels: the API answers a job's submission or cancel only once a replica holds it (Redis WAIT), waiting at most this many ms, else 503 (a failover could lose it: retry); 0: answer at once")
    redis_password: str = _setting("", "Password of the Redis primary and replicas found through the sentinels (a FACESENSE_REDIS_URL carries its own); the sentinels themselves take none")
    store: str = _setting("", "Object storage URL: a folder, file://..., or s3://bucket/prefix; empty: <data_dir>/store")
    data_dir: str = _setting("./var", "Folder for the embedded Redis, local store and caches")
    allowed_roots: tuple[str, ...] = _setting((), "Local folders a job may read (source, dataset, manifest, manifest line), ':'-separated; empty: none (only S3, uploads and URLs); the data dir and a local store are never read, whatever the roots")
    s3_endpoint_url: str = _setting("", "S3 endpoint for MinIO / SeaweedFS; empty: AWS (or AWS_ENDPOINT_URL)")
    s3_region: str = _setting("", "S3 region; empty: the AWS default chain")
    shard_size: int = _setting(256, "Images per shard task: the unit of work shared among workers")
    batch_size: int = _setting(0, "Images per forward pass; 0: 64 on CPU, 256 on CUDA")
    decode_threads: int = _setting(0, "Fetch + decode threads per worker; 0: cores + 2")
    device: str = _setting("auto", "auto, cpu, cuda or cuda:N")
    decoder: str = _setting("auto", "JPEG decoding: auto (GPU nvJPEG when on CUDA and measured faster), cpu or gpu")
    precision: str = _setting("auto", "auto, fp32, bf16 (autocast), bf16-full (bf16 weights), fp16 or int8 (CPU); auto scores each model version at the fastest precision its manifest says agrees with fp32 and a start-up measurement finds 1.2x faster than fp32, else fp32 (bf16 only on CUDA or CPUs with AVX-512 BF16 / AMX); training runs bf16-full as bf16 and int8 as fp32")
    face_margin: float = _setting(0.2, "Margin added around each detected face on every side, as a share of its longer side, before the square crop is scored (a version trained on faces keeps its own)")
    face_min_size: int = _setting(32, "Smallest face scored, in the photo's pixels (its box's shorter side); in a photo longer than FACESENSE_FACE_DETECT_SIDE the smallest face found is also at least 20 px on the detection copy (50 px in a 1600-px photo): raise that side to find smaller faces in big photos")
    face_threshold: float = _setting(0.7, "Least detection score a face needs (MTCNN's own last-stage bar is 0.7; a lower value lowers that bar too)")
    face_max_per_image: int = _setting(20, "Most faces scored per photo, the largest first: a crowd stays bounded")
    face_detect_side: int = _setting(640, "Faces are found on a copy of each photo at most this many pixels on its longer side (boxes are given in the photo's own pixels)")
    default_model: str = _setting("production", "Model alias (or version) used when a job names none")
    api_host: str = _setting("127.0.0.1", "Address the API listens on")
    api_port: int = _setting(8000, "Port the API listens on")
    api_url: str = _setting("", "API URL the CLI talks to; empty: http://<api_host>:<api_port>")
    api_keys: str = _setting("", "API keys as NAME:SHA256HEX[:GRANT;GRANT...] entries, ','-separated (`facesense keys new NAME`); a grant is `high` (may queue priority high) or an absolute folder or s3://bucket/prefix the key alone reads, in place of the allowed roots and any prefix; with none here or in admin_keys, no authentication")
    admin_keys: str = _setting("", "Admin API keys, same format: they see every job, may promote models and queue priority high")
    keys_file: str = _setting("", "A file of FACESENSE_API_KEYS=... / FACESENSE_ADMIN_KEYS=... lines (as `facesense keys new` prints them; grants as in the variables), re-read within a second of a change: keys and their scopes change without a restart; while it is set, keys are always required")
    allow_open_api: int = _setting(0, "1: let the API listen on a non-loopback address with no API keys configured")
    api_key: str = _setting("", "The key the CLI and Client send as a bearer token (masked when settings are printed)")
    max_upload_bytes: int = _setting(2 << 30, "Largest request body (uploads) in bytes; larger: 413")
    max_form_parts: int = _setting(1000, "Most parts (files and fields) in one multipart upload; more: 413 naming this limit (send many files as one .zip: `facesense submit --upload` does)")
    max_json_bytes: int = _setting(4 << 20, "Largest JSON request body in bytes (a URL list included), refused before it is parsed; larger: 413")
    max_zip_members: int = _setting(100_000, "Most members accepted in an uploaded .zip")
    max_zip_bytes: int = _setting(20 << 30, "Most uncompressed bytes accepted from an uploaded .zip")
    max_zip_ratio: int = _setting(200, "Largest compression ratio of an uploaded .zip (its images' bytes over the upload's, once they pass 1 MiB) and of any member over 1 MiB (a zip bomb); larger: 413")
    max_image_bytes: int = _setting(64 << 20, "Largest image file scored; larger ones become error rows")
    max_image_pixels: int = _setting(100_000_000, "Largest image (width x height) decoded; larger: error row")
    video_fps: float = _setting(5.0, "Frames a second sampled from a video when its job names no video_fps (by presentation time: a variable-frame-rate recording gives evenly spaced samples)")
    video_max_fps: float = _setting(30.0, "Largest video_fps a job may ask for; more: 400")
    video_max_seconds: float = _setting(3600.0, "Longest video scored, in seconds (as its container declares); longer: error row")
    video_max_side: int = _setting(4096, "Largest video frame side in pixels (as declared, checked before decoding); larger: error row")
    video_max_frames: int = _setting(1_000_000, "Most video frames one job may sample (all its videos' lengths times video_fps); more: the job fails, naming this limit")
    video_shard_seconds: float = _setting(30.0, "Seconds of video per shard: a longer video is cut into time ranges that workers score at once, each seeking to its own range")
    video_face_detect_seconds: float = _setting(1.0, "With faces on, seconds of video between full face detections: in between, each face is followed from the frame before at a fraction of the cost, so a face coming into the picture is found at most this late; 0: full detection on every frame")
    url_max_per_job: int = _setting(10_000, "Most image URLs one scoring job may list; more: 413")
    url_connect_timeout_s: int = _setting(5, "Seconds to connect to an image or callback URL's server")
    url_timeout_s: int = _setting(30, "Seconds one URL fetch may take in all (connect, redirects, body); longer: error row")
    url_allow_networks: str = _setting("", "Comma-separated CIDRs image and callback URLs may reach despite the address rules (loopback, private, link-local...); empty: none")
    pretrained_url: str = _setting("https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", "Where `pretrained: true` training downloads ImageNet AlexNet weights on first use: a URL whose path ends in .pth names the file; any other URL is a mirror folder holding alexnet-owt-7be5be79.pth; empty: never download (only the store copy is used). The file name must carry the first 8 or more hex digits of the file's SHA-256 (torchvision's convention), checked before use; the checked file is kept once in the store at pretrained/<file name> for every worker")
    pretrained_timeout_s: int = _setting(900, "Seconds the first download of pretrained weights (233 MiB for AlexNet) may take in all")
    manifest_max_rows: int = _setting(100_000, "Most images one manifest may list; more: 413 naming the first line past the cap")
    manifest_max_bytes: int = _setting(64 << 20, "Largest manifest file (CSV or JSON Lines) read or uploaded, in bytes; larger: 413")
    webhook_secret: str = _setting("", "HMAC-SHA256 key signing webhook deliveries; empty: jobs can't carry a callback_url")
    webhook_max_attempts: int = _setting(8, "Deliveries of a webhook before giving up")
    webhook_backoff_s: int = _setting(5, "Seconds before the first webhook retry; doubled for each later one (at most 600)")
    task_max_retries: int = _setting(5, "Retries of a task on transient errors (storage, Redis)")
    shard_max_attempts: int = _setting(3, "Deliveries of one shard before its images are scored one at a time, so that an input that kills its worker fails alone")
    visibility_timeout: int = _setting(3600, "Seconds before an unacked task is redelivered to another worker")
    checkpoint_interval_s: int = _setting(300, "Least seconds between a training run's checkpoints (model, optimiser and best weights, ~900 MB for AlexNet), written at an epoch's end; a killed run resumes from the last, losing at most this plus an epoch; 0: every epoch")
    lease_ttl_s: int = _setting(60, "Seconds a lease (a training run, a shard, a plan) outlives its worker's last heartbeat; the watchdog requeues work whose lease lapsed")
    queue_depth: int = _setting(64, "Most shard tokens kept waiting in the inference queue (the scheduler picks which job's shard a token runs when a worker takes it); make it at least your largest worker count, since autoscalers read this queue")
    key_max_running_jobs: int = _setting(0, "Most jobs of one API key running at once, scoring or training (a scoring job counts from its first shard, a training run from its start, until it ends); later ones wait, held; 0: no limit")
    key_max_shards: int = _setting(0, "Most shards of one API key in flight at once: its share of the workers; 0: no limit")
    control_sidecar: int = _setting(1, "1: each scoring worker starts a light control worker beside it (plans, finalisers, webhooks on the control queue); 0: run `celery -A worker.control worker -Q control -P threads` yourself")
    up_max_restarts: int = _setting(5, "Restarts of one dead child of `facesense up` (its Redis, a worker, the API server) allowed within a minute, each after a backoff (0.5 s, doubled each time, at most 8 s); one more death stops the whole stack, exit code 1; 0: stop at the first death")
    log_level: str = _setting("INFO", "Log level: DEBUG, INFO, WARNING, ERROR")
    log_format: str = _setting("text", "Log lines: text (for people) or json (one object per line: ts, level, logger, message, job_id, task)")
    api_metrics: str = _setting("public", "The API's Prometheus /metrics: public (no key needed), key (an API key, when keys are configured) or off (not served)")
    worker_metrics_port: int = _setting(0, "Port each worker serves Prometheus metrics on; 0: none; `facesense up --workers N` gives worker i this port + i")
    job_ttl_s: int = _setting(30 * 86400, "Seconds a job record stays in Redis (the store keeps it until the job is deleted)")
    job_retention_days: int = _setting(0, "Days a finished job is kept; older ones (results, thumbnails, uploads, record, Redis keys) are deleted by the elected watchdog, at most job_retention_batch a minute; 0: kept until deleted by hand")
    job_retention_batch: int = _setting(50, "Most jobs one retention run deletes (one run a minute at most: a backlog goes down over several)")
    summary_max_groups: int = _setting(50, "Most groups in the summary on a job's record and webhook (the largest by images; the rest add up under other_groups); summary.json keeps them all")
    compare_max_groups: int = _setting(10, "Most groups compared pairwise in a summary (Fisher exact tests, Holm-adjusted, per label; the largest groups by images); the others are named under comparisons_left_out")
    thumbnails: int = _setting(1, "1: the dashboard's gallery shows a 128 px JPEG thumbnail of each scored image, made by the API from the job's source on demand (a URL-list job: of a 1-in-16 sample its workers store); 0: none")
    thumb_cache_bytes: int = _setting(32 << 20, "Bytes of gallery thumbnails each API process keeps in memory (least recently used dropped first)")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> Settings:
        """Build settings from FACESENSE_* variables; keyword overrides win."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(PREFIX + f.name.upper())
            if raw is not None and f.name not in overrides:
                values[f.name] = _parse(f, raw)
        values.update(overrides)
        return cls(**values)

    def __repr__(self) -> str:
        """The settings with secrets masked (keys, secrets, passwords in URLs): safe to log."""
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value and is_secret(f.name):
                value = "***"
            elif isinstance(value, str):
                value = URL_PASSWORD.sub(r"\1***@", value)
            parts.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(parts)})"

    def replace(self, **changes) -> Settings:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @property
    def store_url(self) -> str:
        """The store URL, defaulting to a folder under the data dir."""
        return self.store or str(Path(self.data_dir) / "store")

    @property
    def roots(self) -> tuple[Path, ...]:
        """Allowed local roots, resolved (symlinks followed); none when unset: the working
        directory holds the data dir and often secrets, so reading it must be asked for."""
        return tuple(Path(r).resolve() for r in self.allowed_roots)

    @property
    def client_api_url(self) -> str:
        """Where the CLI finds the API."""
        return (self.api_url or f"http://{self.api_host}:{self.api_port}").rstrip("/")

    def env(self) -> dict[str, str]:
        """These settings as FACESENSE_* variables, to hand to a child process."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[PREFIX + f.name.upper()] = ":".join(value) if isinstance(value, tuple) else str(value)
        return out


def is_secret(name: str) -> bool:
    """True for settings never to be printed: the CLI's key, secrets, passwords."""
    return name == "api_key" or name.endswith("_secret") or "password" in name


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, help) for each setting."""
    rows = []
    for f in dataclasses.fields(Settings):
        default = ":".join(f.default) if isinstance(f.default, tuple) else f.default
        rows.append((PREFIX + f.name.upper(), str(default), f.metadata["help"]))
    return rows


def _parse(f: dataclasses.Field, raw: str):
    """Convert one environment string to the field's type and check its range and allowed values
    (facesense.settings_rules); else one ConfigError line naming the variable, the value (masked
    if secret) and what is allowed."""
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    try:
        if kind == "int":
            value = int(raw.replace("_", ""))
        elif kind == "float":
            value = float(raw)
        elif kind.startswith("tuple"):
            value = tuple(p for p in raw.split(":") if p)
        else:
            value = raw
    except ValueError:
        value = None
    problem = rule_problem(f.name, kind, value, raw)
    if problem:
        shown = "***" if is_secret(f.name) and raw else URL_PASSWORD.sub(r"\1***@", raw)
        raise ConfigError(f"{PREFIX}{f.name.upper()}={shown!r} is {problem}")
    return value
