"""The HTTP API: a thin Flask app that validates, records jobs, queues tasks. No torch here."""

from __future__ import annotations

from dataclasses import dataclass

import redis as redis_lib
from celery import Celery
from flask import Flask

from facesense.jobs import JobRecords
from facesense.queue import make_celery
from facesense.registry import Registry
from facesense.settings import Settings
from facesense.store import Store, store_from_settings


@dataclass
class Services:
    """What the views use; built once per app."""

    settings: Settings
    store: Store
    jobs: JobRecords
    registry: Registry
    celery: Celery


def create_app(settings: Settings | None = None) -> Flask:
    """The Flask app for these settings (from the environment when none are given)."""
    from api import errors, health, jobs, models

    settings = settings or Settings.from_env()
    app = Flask(__name__, static_folder=None)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_upload_bytes)
    app.json.sort_keys = False  # records read in their natural order
    store = store_from_settings(settings)
    redis = redis_lib.Redis.from_url(settings.redis_url, health_check_interval=30,
                                     socket_connect_timeout=5, retry_on_timeout=True)
    app.extensions["facesense"] = Services(settings, store, JobRecords(redis, store,
                                                                        settings.job_ttl_s),
                                           Registry(store), make_celery(settings))
    errors.register(app)
    for module in (jobs, models, health):
        app.register_blueprint(module.bp)
    return app
