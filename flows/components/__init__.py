"""The component registry: every node a flow may contain is a class written here.

To add a component: subclass `base.Component` in a module of this package (key, label,
category, description, ports, a strict pydantic `Params`), implement `check` for rules
beyond the schema, `build` for the LangChain object and `execute` (async; stream with
`ctx.emit`, call `ctx.check_cancelled()` between chunks, raise `NodeError` for user-facing
failures), list it in `registry._CLASSES`, and add it to the tests. Platform staff then
control it through the whitelist (`Component.default_enabled` applies until they do).
"""
