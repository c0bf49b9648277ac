"""CLI commands that run on this machine, without the API: import weights, measure a version's
agreement with fp32 (models.py), score one image locally (classify.py), make API keys (keys.py).

Like all of cli/, it may import every other layer (core, runtime, worker, trainer, api)."""
