"""The services the API and the workers both build from settings, wired in one place.

Both sides must agree on them: the records queue a finished job's webhook whoever ends the job
(a worker, or the API's cancel), and the scheduler's quotas and tokens read the same in-flight
and depth settings wherever they are asked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import redis as redis_lib

from facesense import redisconn
from facesense.outputs.webhooks import DELIVER as WEBHOOK
from facesense.registry import Registry
from facesense.settings import Settings
from facesense.state.leases import Leases
from facesense.state.records import JobRecords
from facesense.state.scheduler import Scheduler
from facesense.state.shards import ShardBook
from facesense.storage import Store, store_from_settings

Send = Callable[[str, list], None]  # send a task by name with positional args


@dataclass
class CoreServices:
    """The store, Redis and the job state on it: what the API and every worker share."""

    settings: Settings
    store: Store
    redis: redis_lib.Redis
    jobs: JobRecords
    registry: Registry
    sched: Scheduler
    leases: Leases
    shards: ShardBook


def wire(settings: Settings, send: Send, **redis_options) -> CoreServices:
    """Build the shared services; send queues tasks (every final status queues its webhook
    through it). redis_options go to the connection (timeouts, health checks)."""
    store = store_from_settings(settings)
    redis = redisconn.connect(settings, **redis_options)
    jobs = JobRecords(redis, store, settings.job_ttl_s,
                      on_finished=lambda job_id: send(WEBHOOK, [job_id]))
    # a picked shard counts for its key for four leases, then for as long as its lease is held
    sched = Scheduler(redis, settings.job_ttl_s, 4 * settings.lease_ttl_s, settings.queue_depth)
    return CoreServices(settings, store, redis, jobs, Registry(store), sched, Leases(redis),
                    ShardBook(redis, settings.job_ttl_s))
