"""The channel layer: channels-redis over Redis pub/sub, with a bounded buffer per channel.

Why pub/sub: every token event crosses the layer, so its cost per message decides the
token latency of a busy server. With channels-redis's list-based layer each message costs
the sender a Lua script and the receiver a BRPOP round trip; with pub/sub a send is one
PUBLISH and receivers get messages pushed on one connection per process. The layer stays
at-most-once (a message published while a subscriber reconnects is lost): delivery never
depends on it, because consumers fill every gap from the event log (runs/consumers.py).

Added here:
- `capacity`: each channel's in-process buffer holds at most this many messages; beyond
  it a message is dropped (as channels-redis's own layer does) instead of letting a stuck
  consumer grow the server's memory without bound;
- `group_send_many`: several groups' messages in one pipelined round trip (the event sink
  publishes a batch of runs at once);
- an idle subscriber wakes on its first subscription: channels-redis's reader polls every
  100 ms while the process subscribes to nothing, so the first messages of a client that
  connects to an idle Daphne waited up to 100 ms in the socket (measured: the first token
  of a run 10-40 ms late, in one run in three).

A Redis outage never reaches consumers: receiving waits on the in-process buffer while
the subscriber connection reconnects (redis-py subscribes again on reconnect), and a
subscription asked for while Redis is away (a socket connecting, a group joined) is taken
by the reader once Redis is back instead of failing the handshake.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any

from channels_redis.pubsub import (
    RedisPubSubChannelLayer,
    RedisPubSubLoopLayer,
    RedisSingleShardConnection,
)
from channels_redis.utils import _wrap_close
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

DEFAULT_CAPACITY = 100


class _BoundedShard(RedisSingleShardConnection):
    channel_layer: _BoundedLoopLayer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._subscribed = asyncio.Event()  # set while the reader has something to read
        self._pending: set[str] = set()  # asked for while Redis was away

    async def subscribe(self, channel: str) -> None:
        try:
            await super().subscribe(channel)
        except (RedisConnectionError, RedisTimeoutError, OSError):
            log.warning("Redis is away: channel %s is subscribed once it is back", channel)
            self._pending.add(channel)
        self._subscribed.set()

    async def unsubscribe(self, channel: str) -> None:
        self._pending.discard(channel)
        await super().unsubscribe(channel)

    async def _subscribe_pending(self) -> None:
        for channel in list(self._pending):
            await super().subscribe(channel)  # raises while Redis is still away
            self._pending.discard(channel)

    async def _do_receiving(self) -> None:
        """channels-redis's reader, except that with no subscriptions it waits for the next
        one instead of polling."""
        while True:
            try:
                if self._pending:
                    await self._subscribe_pending()
                if self._pubsub and self._pubsub.subscribed:
                    message = await self._pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=0.1
                    )
                    self._receive_message(message)
                else:
                    self._subscribed.clear()
                    await self._subscribed.wait()
            except (asyncio.CancelledError, GeneratorExit):
                raise
            except Exception:  # as channels-redis: log, back off, go on reading
                log.exception("unexpected error in the channel layer's reader")
                await asyncio.sleep(1)

    def _receive_message(self, message: dict | None) -> None:
        if message is None:
            return
        name = message["channel"]
        if isinstance(name, bytes):
            name = name.decode()
        layer = self.channel_layer
        targets = [name] if name in layer.channels else list(layer.groups.get(name, ()))
        for channel in targets:
            queue = layer.channels.get(channel)
            if queue is None:
                continue
            try:
                queue.put_nowait(message["data"])
            except asyncio.QueueFull:
                log.debug("channel %s is full; message dropped", channel)

    async def publish_many(self, items: list[tuple[str, bytes]]) -> None:
        async with self._lock:
            self._ensure_redis()
            async with self._redis.pipeline(transaction=False) as pipe:
                for channel, payload in items:
                    pipe.publish(channel, payload)
                await pipe.execute()


class _BoundedLoopLayer(RedisPubSubLoopLayer):
    def __init__(self, *args: Any, capacity: int = DEFAULT_CAPACITY, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.capacity = capacity
        self._shards: list[_BoundedShard] = [
            _BoundedShard(shard.host, self) for shard in self._shards
        ]

    async def _subscribe_to_channel(self, channel: str) -> None:
        self.channels[channel] = asyncio.Queue(maxsize=self.capacity)
        await self._get_shard(channel).subscribe(channel)

    async def group_send_many(self, sends: list[tuple[str, dict]]) -> None:
        by_shard: dict[_BoundedShard, list[tuple[str, bytes]]] = defaultdict(list)
        for group, message in sends:
            name = self._get_group_channel_name(group)
            by_shard[self._get_shard(name)].append((name, self.channel_layer.serialize(message)))
        for shard, items in by_shard.items():
            await shard.publish_many(items)


class FlowdeckChannelLayer(RedisPubSubChannelLayer):
    def _get_layer(self) -> _BoundedLoopLayer:
        loop = asyncio.get_running_loop()
        layer = self._layers.get(loop)
        if layer is None:
            layer = _BoundedLoopLayer(*self._args, **self._kwargs, channel_layer=self)
            self._layers[loop] = layer
            _wrap_close(self, loop)
        return layer

    async def group_send_many(self, sends: list[tuple[str, dict]]) -> None:
        """Send each (group, message); one round trip per Redis host."""
        await self._get_layer().group_send_many(sends)
