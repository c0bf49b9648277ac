"""Every Redis client and the Celery broker URL, built in one place: from FACESENSE_REDIS_URL, or
through Redis Sentinel (FACESENSE_REDIS_SENTINELS), which then replaces the URL everywhere.

`python -m facesense.redisconn` pings the configured Redis (exit 0) or says why not (exit 1):
the probe of workers that serve no HTTP port.
"""

from __future__ import annotations

import sys

import redis as redis_lib
from redis.sentinel import Sentinel

from facesense.errors import ConfigError
from facesense.settings import URL_PASSWORD, Settings

# Sentinels answer from memory: a second is long; a dead one is skipped for the next.
SENTINEL_TIMEOUTS = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}


def configured(settings: Settings) -> bool:
    """True when a shared Redis is configured (a URL or sentinels)."""
    return bool(settings.redis_url or settings.redis_sentinels)


def sentinel_addresses(settings: Settings) -> list[tuple[str, int]]:
    """FACESENSE_REDIS_SENTINELS as (host, port) pairs; ConfigError naming a malformed entry."""
    out = []
    for entry in filter(None, (e.strip() for e in settings.redis_sentinels.split(","))):
        host, sep, port = entry.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(f"FACESENSE_REDIS_SENTINELS: {entry!r} is not host:port")
        out.append((host.strip("[]"), int(port)))
    if not out:
        raise ConfigError("FACESENSE_REDIS_SENTINELS names no sentinel")
    return out


def connect(settings: Settings, **kwargs) -> redis_lib.Redis:
    """A client of the shared Redis: the URL's server, or the primary the sentinels name now
    (asked again at each new connection, so a client follows a failover by itself)."""
    if settings.redis_sentinels:
        sentinel = Sentinel(sentinel_addresses(settings), sentinel_kwargs=SENTINEL_TIMEOUTS)
        return sentinel.master_for(settings.redis_sentinel_master,
                                   password=settings.redis_password or None, **kwargs)
    if not settings.redis_url:
        raise ConfigError("set FACESENSE_REDIS_URL or FACESENSE_REDIS_SENTINELS")
    return redis_lib.Redis.from_url(settings.redis_url, **kwargs)


def broker(settings: Settings) -> tuple[str, dict]:
    """(Celery broker URL, transport options to add): Celery's sentinel:// transport, one URL
    per sentinel, with master_name, under Sentinel; else the Redis URL itself."""
    if not settings.redis_sentinels:
        return settings.redis_url, {}
    auth = f":{settings.redis_password}@" if settings.redis_password else ""
    url = ";".join(f"sentinel://{auth}{host}:{port}/0"
                   for host, port in sentinel_addresses(settings))
    return url, {"master_name": settings.redis_sentinel_master,
                 "sentinel_kwargs": dict(SENTINEL_TIMEOUTS)}


def describe(settings: Settings) -> str:
    """Where Redis is, for logs (no password)."""
    if settings.redis_sentinels:
        return f"sentinels {settings.redis_sentinels} (master {settings.redis_sentinel_master})"
    return URL_PASSWORD.sub(r"\1***@", settings.redis_url)


def main() -> int:
    """Ping the configured Redis once; the exit code says whether it answered."""
    settings = Settings.from_env()
    try:
        connect(settings, socket_timeout=5, socket_connect_timeout=5).ping()
    except (ConfigError, redis_lib.RedisError) as e:
        print(f"Redis at {describe(settings)}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
