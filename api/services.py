"""What the views use, built once per app, and how a view finds it."""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery
from flask import current_app

from facesense.registry import Registry
from facesense.settings import Settings
from facesense.state.records import JobRecords
from facesense.state.scheduler import Scheduler
from facesense.storage import Store

EXTENSION = "facesense"  # the key of the app's Services in app.extensions


@dataclass
class Services:
    """What the views use; built once per app."""

    settings: Settings
    store: Store
    jobs: JobRecords
    registry: Registry
    celery: Celery
    sched: Scheduler


def services() -> Services:
    """The current app's Services."""
    return current_app.extensions[EXTENSION]
