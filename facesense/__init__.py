"""FaceSense core, torch-free: the lowest layer, imported by every other one.

Here: settings, errors, logs, the image-safety guards (imaging), keys, the registry, training
params, task names (queue), the HTTP client and the synthetic image generator; in sub-packages,
storage/ (stores and the key layout), state/ (job state in Redis), inputs/ (sources, uploads,
URL lists, netguard) and outputs/ (results, thumbnails, webhooks). May import the standard
library, redis, boto3, celery (to send tasks by name), Pillow and requests; never runtime,
worker, trainer, api or cli.
"""

__version__ = "0.1.0"
