"""GPU workers: the Celery app, thin task shells made from the table of job steps (steps/),
the one step runner (runner.py), the plain steps (plan, shard, finalize, train, webhook), the
watchdog and the batched inference engine.

May import the core, the model runtime and trainer (a training task runs its pipeline);
never api or cli.
"""
