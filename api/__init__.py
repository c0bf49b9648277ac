"""The HTTP API: a thin Flask app that validates, records jobs, queues tasks.

May import the core only (never torch, runtime, worker, trainer or cli): its container and
its start-up stay small.
"""

from __future__ import annotations

from flask import Flask

from api.services import EXTENSION, Services
from facesense.keys import Keyring, check_exposure
from facesense.queue import make_celery, sender, wire
from facesense.settings import Settings


def create_app(settings: Settings | None = None) -> Flask:
    """The Flask app for these settings (from the environment when none are given)."""
    from api import (
        auth,
        dashboard,
        errors,
        health,
        jobs,
        manage,
        metrics,
        models,
        openapi,
        summaries,
    )

    settings = settings or Settings.from_env()
    keyring = Keyring.from_settings(settings)
    # Under gunicorn the app can't see --bind: FACESENSE_API_HOST must name it (compose sets it).
    check_exposure(settings, keyring)
    app = Flask(__name__, static_folder=None)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_upload_bytes,
                      MAX_FORM_PARTS=settings.max_form_parts)
    app.json = errors.StrictJSON(app)
    app.json.sort_keys = False  # records read in their natural order
    celery = make_celery(settings)
    # the API's cancel ends jobs too: its records queue their webhooks as a worker's do
    core = wire(settings, sender(celery),
                health_check_interval=30, socket_connect_timeout=5, retry_on_timeout=True)
    app.extensions[EXTENSION] = Services(settings, core.store, core.jobs, core.registry, celery,
                                         core.sched)
    errors.register(app)
    metrics.install(app)  # before auth: requests it refuses are counted and timed too
    auth.install(app, keyring)
    for module in (jobs, manage, summaries, models, health, openapi, dashboard):
        app.register_blueprint(module.bp)
    return app
