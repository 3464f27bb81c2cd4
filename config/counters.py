"""Per-minute counters for rate limits (run starts, API keys), kept where the cache lives
(Redis in every deployment), shared by every process."""

from __future__ import annotations

import re
from functools import lru_cache

import redis
from django.conf import settings
from django.core.cache import cache

COUNTER_SECONDS = 120
REDIS_CACHE = "django.core.cache.backends.redis.RedisCache"


def count_up(keys: list[str]) -> list[int]:
    """Increment two-minute counters, where the cache lives. On Redis: one round trip for
    all of them (a pipeline of SET NX EX + INCR per key; the cache API's `add` + `incr`
    would cost three per key, on every run start); elsewhere through the cache API."""
    client = _counter_redis()
    if client is None:
        return [_count_up_portable(key) for key in keys]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        name = f"{settings.CHANNEL_PREFIX}:{key}"
        pipe.set(name, 0, ex=COUNTER_SECONDS, nx=True)  # (not EXPIRE NX: Redis 7 only)
        pipe.incr(name)
    return [int(count) for count in pipe.execute()[1::2]]


def _counter_redis() -> redis.Redis | None:
    """A redis-py client for the default cache's server when that cache is Redis (its
    first LOCATION: the one Django's RedisCache writes to), else None."""
    config = settings.CACHES["default"]
    if config.get("BACKEND") != REDIS_CACHE:
        return None
    location = config["LOCATION"]
    servers = location if isinstance(location, list | tuple) else re.split("[;,]", location)
    return _redis_client(servers[0].strip())


@lru_cache(maxsize=8)
def _redis_client(url: str) -> redis.Redis:
    """One client (a connection pool) per server URL and process."""
    return redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)


def _count_up_portable(key: str) -> int:
    try:
        return cache.incr(key)
    except ValueError:  # the first start this minute
        if cache.add(key, 1, timeout=COUNTER_SECONDS):
            return 1
        return cache.incr(key)  # another process added it meanwhile
