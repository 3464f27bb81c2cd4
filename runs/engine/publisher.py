"""Sending committed run events to the session groups that watch them.

One way to send, two callers: the sink's `Publisher` (every event a worker writes) and
`publish_committed` (the few events written outside the sink, when a run that no writer
holds is ended: a cancelled queued run, a reaped one). Both send only what is committed
(guarantee 1: persist, then publish), as `{"type": "run.events", "events": [...]}` layer
messages, best effort: the channel layer is at-most-once, the log is the truth, and
watchers fill any gap from it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from runs.engine.runloop import RunLoop
from runs.engine.writer import PendingEvent, RunWriter

log = logging.getLogger(__name__)

# The consumers' handler for a batch of a run's events (runs.consumers.run_events).
RUN_EVENTS = "run.events"


async def send_to_groups(sends: list[tuple[str, list[dict[str, Any]]]]) -> None:
    """Send each (group, messages) as one layer message; on Flowdeck's Redis layer all of
    them in one pipelined round trip (config.layers)."""
    layer = get_channel_layer()
    if layer is None or not sends:
        return
    messages = [(group, {"type": RUN_EVENTS, "events": events}) for group, events in sends]
    if hasattr(layer, "group_send_many"):  # config.layers: one round trip
        await layer.group_send_many(messages)
    else:
        await asyncio.gather(*(layer.group_send(g, m) for g, m in messages))


def publish_committed(group: str, messages: list[dict[str, Any]]) -> None:
    """Send events already committed outside the sink (call it from `on_commit`), from
    synchronous code; best effort."""
    try:
        async_to_sync(send_to_groups)([(group, messages)])
    except Exception as exc:  # Redis away: watchers catch up from the log
        log.warning("publishing run events failed: %r", exc)


class Publisher:
    """Sends the sink's committed batches to the channel layer, from an event loop of its
    own.

    The sink thread only hands a batch over (it never waits on Redis, so the next write
    starts at once). Batches go out in the order they were committed; when several are
    waiting, each run's events are merged into one layer message. Not on the run loop:
    while dozens of runs start at once that loop is crowded, and events waited there
    50-100 ms before going out.
    """

    def __init__(self) -> None:
        self._queue: asyncio.Queue[list[tuple[RunWriter, list[PendingEvent]]]] | None = None
        self._thread: RunLoop | None = None

    def _loop(self) -> RunLoop:
        if self._thread is None or not self._thread.alive:
            self._thread = RunLoop(name="publisher")
            self._queue = None
        return self._thread

    def submit(self, sends: list[tuple[RunWriter, list[PendingEvent]]]) -> None:
        """Queue committed events for publishing (from the sink thread)."""
        if sends:
            self._loop().call_soon(self._put, sends)

    def _put(self, sends: list[tuple[RunWriter, list[PendingEvent]]]) -> None:  # on the loop
        if self._queue is None:
            self._queue = asyncio.Queue()
            asyncio.ensure_future(self._drain())
        self._queue.put_nowait(sends)

    async def _drain(self) -> None:
        assert self._queue is not None
        while True:
            merged: dict[RunWriter, list[dict[str, Any]]] = {}
            sends = await self._queue.get()
            while True:
                for writer, events in sends:
                    merged.setdefault(writer, []).extend(
                        event.as_message(writer.run_id) for event in events
                    )
                if self._queue.empty():
                    break
                sends = self._queue.get_nowait()
            try:
                await send_to_groups([(w.group, messages) for w, messages in merged.items()])
            except Exception as exc:  # Redis away: watchers catch up from the log
                log.warning("publishing run events failed: %r", exc)
            finally:
                for writer in merged:
                    writer.published()
