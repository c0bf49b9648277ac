"""The scoring worker's Celery app: `celery -A worker.celery_app worker -Q inference -P solo`."""

from __future__ import annotations

from facesense.logs import setup_logging
from facesense.queue import make_celery
from facesense.settings import Settings
from worker.context import check_settings
from worker.models import check_device

settings = Settings.from_env()
setup_logging(settings.log_level, settings.log_format)
check_settings(settings)  # a bad setting stops the worker at start, not every task later
check_device(settings)
app = make_celery(settings)

import worker.tasks  # noqa: E402,F401  (registers the tasks on app)
