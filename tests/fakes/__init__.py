"""Test doubles that are real code: a recording RunContext, a small plan runner mirroring the
executor's semantics, and the import/execution sentinel for the hostile-payload corpus."""
