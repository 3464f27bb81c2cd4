"""The run engine: executes a claimed run and turns what it produces into the event log.

One worker process holds many runs. Its parts, each in a module of its own:

- `runloop`: one asyncio loop per process on which every run's nodes execute, and
  `fairly`, which keeps one fast stream from starving the others;
- `executor`: `execute_queued_run` / `execute_claimed_run` (a Celery pool thread claims,
  plans, then waits), `PlanRunner` (the nodes as tasks, in dependency order) and
  `NodeContext` (what a component sees of its run, model streams included);
- `writer`: `RunWriter`, the in-memory head of one run's log (seq numbers, token
  coalescing, the final event), fed by the executor and drained by the sink;
- `sink`: `EventSink`, the process's writer thread (batches, heartbeat, fencing, wake-ups);
- `persistence`: `persist_batch`, one batch in one database write, by a named strategy;
- `publisher`: sends committed events to session groups (the sink's `Publisher` thread,
  and `publish_committed` for events written outside the sink);
- `rerun`: which nodes of a re-run reuse the original run's recorded outputs.

The event vocabulary is `runs.events`; what may be stored is `config.jsontext`.
This package's `__init__` imports nothing, so `runs.services` can use `publisher` and
`rerun` while `executor` uses `runs.services`.
"""
