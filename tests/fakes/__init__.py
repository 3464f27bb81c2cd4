"""Test doubles that are real code: the engine's own executor over an in-memory sink
(runner), and the import/execution sentinel for the hostile-payload corpus."""
