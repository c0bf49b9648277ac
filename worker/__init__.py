"""GPU workers: the Celery app, thin task shells, and the plain scoring and scheduling steps
(plan, shard, finalize, watchdog) with the batched inference engine.

May import the core, the model runtime and trainer (a training task runs its pipeline);
never api or cli.
"""
