"""runs.sse.follow_run, the reader behind `GET runs/<id>/stream`, the one-call run API's
stream and the OpenAI-compatible stream: events the channel layer brings in seq order are
passed on as they come, and a gap (a dropped layer message) is filled from the log, so the
reader gets every event once, in order, whatever the layer drops."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.utils import timezone

from runs.events import session_group
from runs.models import Run, RunEvent, RunStatus
from runs.sse import _continuing, follow_run
from tests import flowgraphs
from tests.wsclient import stored_log

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def _events(run: Run, seqs: range, *, last: bool = False) -> list[RunEvent]:
    """Events `seqs` of the run, unsaved (the last one `completed` when `last`)."""
    rows = []
    for seq in seqs:
        done = last and seq == seqs[-1]
        rows.append(
            RunEvent(
                workspace=run.workspace,
                run=run,
                seq=seq,
                event="completed" if done else "on_token",
                node_id="" if done else "model",
                payload={"status": "success"} if done else {"data": f" t{seq}"},
                ts=timezone.now(),
            )
        )
    return rows


def _log(run: Run, seqs: range, *, last: bool = False) -> list[dict[str, Any]]:
    """Append events `seqs` to the run's log; their wire form."""
    rows = _events(run, seqs, last=last)
    RunEvent.objects.bulk_create(rows)
    update: dict[str, Any] = {"last_seq": seqs[-1]}
    if last:
        update.update(status=RunStatus.SUCCEEDED, finished_at=timezone.now())
    Run.objects.filter(pk=run.pk).update(**update)
    return [row.as_message() for row in rows]


async def test_layer_events_pass_on_and_a_dropped_message_is_filled_from_the_log(
    workspace_a, erin_editor
):
    run = await sync_to_async(flowgraphs.queued_run)(
        workspace_a, erin_editor, flowgraphs.demo_graph(reply="x", delay_ms=0), {"input": "x"}
    )
    await sync_to_async(_log)(run, range(1, 3))
    layer = get_channel_layer()
    group = session_group(run.workspace_id, run.session_id)
    reader = follow_run(workspace_a, run, 0)
    got = [await anext(reader), await anext(reader)]  # from the log; subscribed by now

    # Seq 3 comes through the layer alone (it is not in the log yet, so it cannot have
    # come from there): passed on as it came.
    three = _events(run, range(3, 4))
    await layer.group_send(group, {"type": "run.events", "events": [three[0].as_message()]})
    got.append(await asyncio.wait_for(anext(reader), 10))
    assert got[-1]["seq"] == 3
    await sync_to_async(RunEvent.objects.bulk_create)(three)

    later = await sync_to_async(_log)(run, range(4, 7), last=True)
    # The message with seq 4 is lost; 5 and 6 arrive: the reader goes back to the log.
    await layer.group_send(group, {"type": "run.events", "events": later[1:]})
    got += [message async for message in reader]

    assert got == await sync_to_async(stored_log)(str(run.pk))
    assert [m["seq"] for m in got] == [1, 2, 3, 4, 5, 6] and got[-1]["event"] == "completed"
    await sync_to_async(lambda: connection.close())()  # the reader's database thread lets go


def test_continuing_takes_only_the_next_seqs_of_this_run():
    def event(run: str, seq: int) -> dict[str, Any]:
        return {"event": "on_token", "run_id": run, "seq": seq}

    message = {"type": "run.events", "events": [event("a", 4), event("b", 9), event("a", 5)]}
    assert _continuing(message, "a", 3) == [event("a", 4), event("a", 5)]
    assert _continuing(message, "a", 4) == [event("a", 5)]
    assert _continuing(message, "a", 5) == []  # nothing new: no need to read the log
    assert _continuing(message, "a", 2) is None  # seq 3 is missing: read the log
    assert _continuing(message, "c", 0) == []
    assert _continuing({"type": "other"}, "a", 0) is None
    assert _continuing(None, "a", 0) is None
