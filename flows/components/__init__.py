"""The component registry: every node a flow may contain is a class written here.

To add a component: subclass `base.Component` in a module of this package (key, label,
category, description, ports, a nested strict `class Params(ComponentParams)`, named in the
base, `class Echo(Component["Echo.Params"])`, so mypy types its params), implement `check` for rules
beyond the schema, `build` for the LangChain object and `execute` (async, never blocking
the loop; read a model's stream with `ctx.model_stream(...)`, report tool calls and
retrievals with `ctx.emit`, call `ctx.check_cancelled()` between long steps, raise
`NodeError` for user-facing failures; see `base.py`), list it in `registry._CLASSES`, and
add it to the tests. Platform staff then
control it through the whitelist (`Component.default_enabled` applies until they do).
"""
