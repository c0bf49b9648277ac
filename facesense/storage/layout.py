"""Every key the system writes in object storage, named in one place.

jobs/<id>/job.json                 a finished job's record (history outlives Redis)
jobs/<id>/inputs/...               uploaded files and unpacked zips; inputs/urls.json for URL lists;
                                   inputs/manifest.jsonl: a manifest job's checked manifest
jobs/<id>/retry-images.json        a retry job's list of image keys to score again
jobs/<id>/plan/<shard>.json        the image keys one shard scores
jobs/<id>/shards/<shard>.jsonl     one shard's result rows (deterministic: redelivery overwrites)
jobs/<id>/results.jsonl|.csv       the merged rows, and results.index.json (row offsets for pages);
                                   summary.json is written last, once they are
jobs/<id>/thumbs/<hash>.jpg        gallery thumbnails
jobs/<id>/checkpoint.pt            a training job's last-epoch checkpoint
models/<version>/manifest.json     a model version (immutable), beside weights.safetensors
models/<version>/<file>            files registered with it (history.json)
models/aliases/<alias>.json        an alias: the version it names and every move
pretrained/<file>                  downloaded pretrained weights (e.g. alexnet-owt-7be5be79.pth),
                                   hash-checked, one copy shared by every worker
"""

from __future__ import annotations

JOBS, MODELS = "jobs", "models"
ALIASES = f"{MODELS}/aliases"
WEIGHTS, MANIFEST = "weights.safetensors", "manifest.json"
RESULTS_JSONL, RESULTS_CSV, SUMMARY = "results.jsonl", "results.csv", "summary.json"
RESULTS_INDEX = "results.index.json"  # byte offsets of every 256th row per view: fast pages
RESULT_FILES = (RESULTS_JSONL, RESULTS_CSV, SUMMARY)
RETRY_KEYS = "retry-images.json"
HISTORY = "history.json"  # a trained version's per-epoch rows


def job_key(job_id: str, name: str) -> str:
    """Where a job's file lives in the store."""
    return f"{JOBS}/{job_id}/{name}"


def job_record(job_id: str) -> str:
    """A finished job's record."""
    return job_key(job_id, "job.json")


def inputs(job_id: str) -> str:
    """The prefix of a job's uploaded inputs."""
    return job_key(job_id, "inputs")


def url_list(job_id: str) -> str:
    """A URL job's list of items."""
    return job_key(job_id, "inputs/urls.json")


def manifest(job_id: str) -> str:
    """A manifest job's checked copy of its manifest (its rows' groups and meta)."""
    return job_key(job_id, "inputs/manifest.jsonl")


def plan_key(job_id: str, index: int) -> str:
    """The list of image keys one shard scores."""
    return job_key(job_id, f"plan/{index:06d}.json")


def shard_key(job_id: str, index: int) -> str:
    """The deterministic output key of one shard: a redelivered shard overwrites, never adds."""
    return job_key(job_id, f"shards/{index:06d}.jsonl")


def thumb_key(job_id: str, name: str) -> str:
    """Where a thumbnail (named by outputs.thumbnails.thumb_name) lives."""
    return job_key(job_id, f"thumbs/{name}")


def checkpoint_key(job_id: str) -> str:
    """Where a training job's last-epoch checkpoint lives."""
    return job_key(job_id, "checkpoint.pt")


def version_key(version: str, name: str = MANIFEST) -> str:
    """A file of a model version: its manifest, its weights, or a file registered with it."""
    return f"{MODELS}/{version}/{name}"


def alias_key(alias: str) -> str:
    """An alias record."""
    return f"{ALIASES}/{alias}.json"


def pretrained_key(file_name: str) -> str:
    """Where downloaded pretrained weights live, under the file name their hash is checked by."""
    return f"pretrained/{file_name}"
