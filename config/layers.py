"""The channel layer: channels-redis, made to wait out Redis outages on receive.

channels-redis raises from `receive()` when Redis goes away, which ends every consumer's
dispatch loop and drops every WebSocket on the server. Delivery does not depend on the
layer (the event log is the truth and consumers catch up from it), so a consumer should
simply keep its socket and wait for Redis to come back.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels_redis.core import RedisChannelLayer
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


class ResilientRedisChannelLayer(RedisChannelLayer):
    async def receive(self, channel: str) -> Any:
        delay = 0.1
        while True:
            try:
                return await super().receive(channel)
            except (RedisError, OSError) as exc:
                log.warning("channel layer receive failed (%r); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
