"""GPU workers: the Celery app, thin task shells and the batched inference engine."""
