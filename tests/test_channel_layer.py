"""config.layers.FlowdeckChannelLayer against the real Redis: pub/sub delivery, the bounded
per-channel buffer, pipelined multi-group sends, and receiving through a Redis restart."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from django.conf import settings

from config.layers import FlowdeckChannelLayer
from tests.conftest import require_services
from tests.live import PrivateRedis


def _layer(url: str, capacity: int = 100) -> FlowdeckChannelLayer:
    return FlowdeckChannelLayer(
        hosts=[url], prefix=f"layertest{uuid.uuid4().hex[:8]}", capacity=capacity
    )


class Inbox:
    """Receives from a channel in the background (a pub/sub receive must not be cancelled
    while the channel is in use: that unsubscribes it)."""

    def __init__(self, layer: FlowdeckChannelLayer, channel: str) -> None:
        self.messages: list[dict] = []
        self.task = asyncio.ensure_future(self._run(layer, channel))

    async def _run(self, layer: FlowdeckChannelLayer, channel: str) -> None:
        while True:
            self.messages.append(await layer.receive(channel))

    async def settle(self, quiet: float = 0.3) -> list[int]:
        """The numbers received once nothing has arrived for `quiet` seconds."""
        while True:
            count = len(self.messages)
            await asyncio.sleep(quiet)
            if len(self.messages) == count:
                return [m["n"] for m in self.messages]


def test_group_send_many_reaches_each_group_in_order_and_nobody_else():
    require_services()

    async def scenario() -> tuple[list, list, list]:
        layer = _layer(settings.REDIS_URL)
        a, b, outsider = [await layer.new_channel() for _ in range(3)]
        await layer.group_add("ga", a)
        await layer.group_add("gb", b)
        await layer.group_add("ga", b)  # b is in both groups
        inboxes = [Inbox(layer, channel) for channel in (a, b, outsider)]
        await layer.group_send_many(
            [("ga", {"type": "x", "n": 1}), ("gb", {"type": "x", "n": 2})]
            + [("ga", {"type": "x", "n": n}) for n in range(3, 8)]
        )
        result = tuple([await inbox.settle() for inbox in inboxes])
        await layer.flush()
        return result

    at_a, at_b, at_outsider = asyncio.run(scenario())
    assert at_a == [1, 3, 4, 5, 6, 7]
    assert at_b == [1, 2, 3, 4, 5, 6, 7]
    assert at_outsider == []


def test_a_full_channel_drops_what_it_cannot_hold_and_keeps_receiving():
    require_services()

    async def scenario() -> tuple[list[int], list[int]]:
        layer = _layer(settings.REDIS_URL, capacity=3)
        channel = await layer.new_channel()
        await layer.group_add("g", channel)
        # Nobody receives while ten messages arrive: the buffer keeps the first three.
        await layer.group_send_many([("g", {"type": "x", "n": n}) for n in range(10)])
        await asyncio.sleep(0.3)
        inbox = Inbox(layer, channel)
        first = await inbox.settle()
        await layer.group_send("g", {"type": "x", "n": 99})
        later = await inbox.settle()
        await layer.flush()
        return first, later

    first, later = asyncio.run(scenario())
    assert first == [0, 1, 2]
    assert later == [0, 1, 2, 99]


def test_receiving_survives_a_redis_restart():
    redis = PrivateRedis()
    redis.start()
    try:

        async def scenario() -> list:
            layer = _layer(redis.url)
            channel = await layer.new_channel()
            await layer.group_add("g", channel)
            waiting = asyncio.ensure_future(layer.receive(channel))
            await asyncio.sleep(0.2)
            redis.stop()
            await asyncio.sleep(0.5)
            assert not waiting.done()  # the outage does not reach the receiver
            redis.start()
            for _ in range(50):  # the subscriber reconnects and subscribes again
                with contextlib.suppress(Exception):  # Redis may still be starting
                    await layer.group_send("g", {"type": "x", "n": 1})
                await asyncio.sleep(0.1)
                if waiting.done():
                    break
            message = await asyncio.wait_for(waiting, 5)
            await layer.flush()
            return [message]

        assert [m["n"] for m in asyncio.run(scenario())] == [1]
    finally:
        redis.stop()


class _SlowIdlePoll:
    """`asyncio` as channels-redis's pub/sub module sees it, except that its 100 ms idle
    poll (`asyncio.sleep(0.1)` while nothing is subscribed) lasts a minute."""

    def __getattr__(self, name: str) -> object:
        return getattr(asyncio, name)

    @staticmethod
    async def sleep(delay: float, result: object = None) -> object:
        return await asyncio.sleep(60 if delay == 0.1 else delay, result)


def test_an_idle_layer_delivers_at_once_to_its_next_subscriber(monkeypatch):
    """With nothing subscribed, channels-redis's reader polls every 100 ms, so the first
    messages of a client connecting to an idle Daphne waited for the poll. Our reader waits
    for the subscription instead: stretched to a minute, the poll must not matter."""
    require_services()
    import channels_redis.pubsub

    monkeypatch.setattr(channels_redis.pubsub, "asyncio", _SlowIdlePoll())

    async def scenario() -> dict:
        layer = _layer(settings.REDIS_URL)
        first = await layer.new_channel()
        inbox = Inbox(layer, first)
        await layer.send(first, {"type": "x", "n": 0})
        assert await inbox.settle(0.1) == [0]
        inbox.task.cancel()  # the process's only subscription goes: the reader is idle
        with contextlib.suppress(asyncio.CancelledError):
            await inbox.task
        await asyncio.sleep(0.5)
        second = await layer.new_channel()
        await layer.send(second, {"type": "x", "n": 1})
        try:
            return await asyncio.wait_for(layer.receive(second), 5)
        finally:
            await layer.flush()

    assert asyncio.run(scenario())["n"] == 1
