"""The scoring worker's Celery app: `celery -A worker.celery_app worker -Q inference -P solo`."""

from __future__ import annotations

from worker.context import boot
from worker.model_cache import check_device

settings, app = boot(check_device)  # a bad setting stops the worker at start
# The worker imports its tasks (which import this app), so this module never imports them back.
app.conf.include = ["worker.tasks"]
