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
        self.layer = layer
        self.channel = channel
        self.messages: list[dict] = []
        self.marks = 0
        self.task = asyncio.ensure_future(self._run(layer, channel))

    async def _run(self, layer: FlowdeckChannelLayer, channel: str) -> None:
        while True:
            self.messages.append(await layer.receive(channel))

    async def until(self, count: int, timeout: float = 20) -> list:
        """The numbers received, once there are at least `count` (the deadline is a safety
        net that fails the test)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.messages) < count:
            assert loop.time() < deadline, f"{len(self.messages)} of {count} messages arrived"
            await asyncio.sleep(0.01)
        return [m["n"] for m in self.messages]

    async def settle(self) -> list[int]:
        """Everything sent to this channel so far, known to have arrived: a marker is sent
        to the channel and awaited. One process publishes on one connection and receives on
        one subscription, and Redis keeps the order of a connection's PUBLISHes, so what
        was published before the marker is in the channel's buffer (or was dropped) before
        the marker is. No quiet period is waited for."""
        self.marks += 1
        mark = f"mark{self.marks}"
        await self.layer.send(self.channel, {"type": "x", "n": mark})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while not any(m["n"] == mark for m in self.messages):
            assert loop.time() < deadline, f"the marker never arrived: {self.messages}"
            await asyncio.sleep(0.01)
        return [m["n"] for m in self.messages if not str(m["n"]).startswith("mark")]


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
        probe = await layer.new_channel()
        # Nobody receives while ten messages arrive: the buffer keeps the first three.
        await layer.group_send_many([("g", {"type": "x", "n": n}) for n in range(10)])
        # Published after them on the same connection: once the probe has it, the reader
        # has handled all ten (instead of sleeping a while and hoping it had).
        await layer.send(probe, {"type": "x", "n": "probe"})
        assert (await asyncio.wait_for(layer.receive(probe), 20))["n"] == "probe"
        inbox = Inbox(layer, channel)
        await inbox.until(3)  # drained, so the marker below has room
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
            # The reader is up and subscribed: a first message makes the round trip.
            await layer.group_send("g", {"type": "x", "n": 0})
            assert (await asyncio.wait_for(layer.receive(channel), 20))["n"] == 0
            waiting = asyncio.ensure_future(layer.receive(channel))
            redis.stop()
            # The outage is real for the layer (a send fails), and does not reach the
            # receiver (instead of sleeping half a second and looking).
            try:
                await layer.group_send("g", {"type": "x", "n": -1})
            except Exception:  # noqa: BLE001 (whatever the client raises for a lost server)
                pass
            else:
                raise AssertionError("a send succeeded while Redis was stopped")
            assert not waiting.done()  # the outage does not reach the receiver
            redis.start()
            for _ in range(200):  # the subscriber reconnects and subscribes again
                with contextlib.suppress(Exception):  # Redis may still be starting
                    await layer.group_send("g", {"type": "x", "n": 1})
                await asyncio.sleep(0.1)
                if waiting.done():
                    break
            message = await asyncio.wait_for(waiting, 20)
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
        assert await inbox.until(1) == [0]
        inbox.task.cancel()  # the process's only subscription goes: the reader is idle
        with contextlib.suppress(asyncio.CancelledError):
            await inbox.task
        # Wait until the reader has gone idle (it clears this when it has nothing to read),
        # instead of sleeping a while and hoping it had.
        (shard,) = layer._get_layer()._shards
        deadline = asyncio.get_running_loop().time() + 20
        while shard._subscribed.is_set():
            assert asyncio.get_running_loop().time() < deadline, "the reader never went idle"
            await asyncio.sleep(0.01)
        second = await layer.new_channel()
        await layer.send(second, {"type": "x", "n": 1})
        try:
            # A safety net only, far below the stretched minute-long poll.
            return await asyncio.wait_for(layer.receive(second), 20)
        finally:
            await layer.flush()

    assert asyncio.run(scenario())["n"] == 1
