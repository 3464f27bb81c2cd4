"""The contract between components, the builder and the run executor.

A component is a class written in this package and registered under a stable key in
`flows.components.registry`. Nothing in a flow graph is ever used as an import path, a
class name, a pickle or a template engine choice: the graph only names a registered key
and gives parameters that the component's pydantic `Params` model validates.

Life of a node:
1. `validate` (flows.builder): `Params.model_validate(params)`, then `check(params, env)`
   for component-specific rules (template placeholders, credentials of this workspace...).
2. `build(params, env)` -> the LangChain object (ChatOpenAI, PromptTemplate, a tool...),
   synchronously, once per run, in the worker.
3. `await execute(built, params, inputs, ctx)` -> `{output_port: value}`.

How inputs reach a node: `inputs` maps the node's input port names to upstream values
(a list for `multi` ports). An `io.chat_input` node has no edges into it: the executor
passes the run's input for that node as `inputs={"value": <text>}` (the run's `inputs` map
node ids to text; `{"input": "<text>"}` is shorthand for a flow with one input node).

Outputs: a port missing from the returned dict was not taken (e.g. a `logic.router`
branch); the executor skips nodes fed only by untaken ports.

Running beside other runs: every node of every run a worker holds executes on one shared
event loop (runs.engine.runloop), so `execute` never blocks it. Blocking I/O goes through
`flows.components.util.run_db` or `asyncio.to_thread`; CPU work whose cost a user controls
through `flows.components.cpu.cpu_bound`. A model's stream goes through
`ctx.model_stream(...)`, which does everything latency needs (fair hand-over of the loop,
cancel checks, `on_token`, getting the first token out, provider errors as NodeError): a
component only reads the chunks.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from accounts.models import Workspace


T = TypeVar("T")


class RunCancelled(Exception):
    """Raised by `RunContext.check_cancelled()` when the run was cancelled or timed out."""


class NodeError(Exception):
    """A clear, user-facing failure of one node (shown in its `error` event).

    The message must never contain secrets (API keys, credential values). `code` classes
    the failure for the node's policy (flows.policy): a provider's `server_error`,
    `rate_limited`, `timeout` or `connection` may be retried; `node_error` (the default:
    the node's own input or params are wrong) never is.
    """

    def __init__(self, message: str, code: str = "node_error") -> None:
        super().__init__(message)
        self.code = code


class RunContext(Protocol):
    """What a running component sees of its run; provided by the executor, one per node
    (runs.engine.executor.NodeContext)."""

    workspace_id: int
    run_id: Any
    session_id: str

    def emit(self, event: str, data: Any) -> None:
        """Queue an event for this node (non-blocking, thread-safe); `data` is made
        storable (runs.events, config.jsontext).

        `event` is one the registry (runs.events) lets components emit: `on_tool_call`
        (data: {tool_name, tool_input, call_id}), `on_tool_result` (data: {call_id,
        tool_name, output}), `on_retrieval` (data: {query, mode, hits: [{id, title, score, document_id,
        document, page, chunk}]}),
        `on_token` (data: text; a model's tokens come from `model_stream`). Any other
        name is refused.
        """

    def check_cancelled(self) -> None:
        """Raise RunCancelled if the run was cancelled or timed out (a flag check: call
        it between steps of long work)."""

    def model_stream(self, chunks: AsyncIterable[T]) -> AsyncIterator[T]:
        """Read a model's stream through the run: `async for chunk in
        ctx.model_stream(model.astream(messages))` yields each chunk as it arrives while
        the context emits its text as `on_token`, checks for a cancel before each chunk
        (RunCancelled), hands the shared loop over to other runs every few ms, gets the
        node's first token written and sent before reading on, and turns a provider
        failure into a NodeError that never echoes the provider's message (which can
        quote the API key). The chunks are the model's own (e.g. AIMessageChunk), so a
        component can still add them up (tool calls)."""


# --- ports ------------------------------------------------------------------------------
# Port types. An edge connects an output to an input of the same type, or either side is
# "any"; "text" also feeds "json" inputs' neighbours only through parser.json.
PORT_TYPES = frozenset({"text", "json", "documents", "tool", "any"})


@dataclass(frozen=True)
class Port:
    """A typed input or output of a component."""

    name: str
    type: str = "text"
    required: bool = True  # inputs only: validation refuses the node if nothing feeds it
    multi: bool = False  # inputs only: accepts several edges; the value is a list
    label: str = ""
    description: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "label": self.label or self.name,
            "required": self.required,
            "multi": self.multi,
        }


def types_compatible(source: str, target: str) -> bool:
    """Whether an output of type `source` may feed an input of type `target`."""
    return source == target or "any" in (source, target)


# --- parameters ---------------------------------------------------------------------------
class ComponentParams(BaseModel):
    """Base of every component's parameters: unknown keys are refused, values are strict."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


P = TypeVar("P", bound=BaseModel)


def credential_field_schema() -> dict[str, Any]:
    """`json_schema_extra` marking a param as a workspace credential reference."""
    return {"format": "credential"}


# --- build environment --------------------------------------------------------------------
@dataclass(frozen=True)
class DecryptedCredential:
    """A credential's usable values, only ever held in memory while building a node."""

    id: int
    provider: str
    base_url: str
    api_key: str = field(repr=False)


class BuildEnv:
    """What `check` and `build` may use: the workspace and its decrypted credentials."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._rows: dict[Any, Any] = {}  # credential id -> its row (still encrypted) or None
        self._credentials: dict[Any, DecryptedCredential | None] = {}
        # How often a provider SDK retries a failed request by itself; 0 for a node whose
        # policy retries it (flows.policy), so that each attempt is in the run's log.
        self.provider_retries = 1

    def with_provider_retries(self, retries: int) -> BuildEnv:
        """This env, sharing its credential lookups, with `provider_retries` set."""
        env = copy.copy(self)
        env.provider_retries = retries
        return env

    @property
    def workspace_id(self) -> int:
        return int(self.workspace.pk)

    def _row(self, credential_id: Any) -> Any:
        """One query per credential, whether `check` asks for its provider, `build` for its
        values, or both."""
        if credential_id not in self._rows:
            # Imported here: flows.selectors imports this module (DecryptedCredential).
            from flows.selectors import credential_row

            self._rows[credential_id] = credential_row(self.workspace, credential_id)
        return self._rows[credential_id]

    def credential_provider(self, credential_id: Any) -> str | None:
        """The provider of this workspace's credential, or None (no decryption needed)."""
        row = self._row(credential_id)
        return row.provider if row is not None else None

    def credential(self, credential_id: int) -> DecryptedCredential | None:
        """This workspace's credential `credential_id`, decrypted; None if not ours/missing."""
        if credential_id not in self._credentials:
            # Imported here: flows.selectors imports this module (DecryptedCredential).
            from flows.selectors import decrypted

            row = self._row(credential_id)
            self._credentials[credential_id] = decrypted(row) if row is not None else None
        return self._credentials[credential_id]


@dataclass(frozen=True)
class ParamProblem:
    """A component-specific problem with a param (the builder adds the node id)."""

    field: str
    code: str
    message: str


# --- the component ------------------------------------------------------------------------
class Component(Generic[P]):
    """One kind of node. Subclasses set the class attributes and implement `execute`.

    `P` is the component's params model: `class Echo(Component["Echo.Params"])` with a
    nested `class Params(ComponentParams)`, so `check`, `build` and `execute` see the
    component's own fields.
    """

    key: ClassVar[str]
    label: ClassVar[str]
    category: ClassVar[str]
    description: ClassVar[str] = ""
    inputs: ClassVar[list[Port]] = []
    outputs: ClassVar[list[Port]] = []
    # Every component sets it as a class attribute (a nested class); not a ClassVar only
    # because a ClassVar may not mention a type variable.
    Params: type[P]
    # Platform default when no ComponentPolicy row exists for the key.
    default_enabled: ClassVar[bool] = True

    # --- declared shape ---------------------------------------------------------------------
    def ports_for(self, params: P | None) -> tuple[list[Port], list[Port]]:
        """(inputs, outputs) for these params; dynamic for prompt.template and logic.router."""
        return list(self.inputs), list(self.outputs)

    def input_ports(self, params: P | None) -> list[Port]:
        return self.ports_for(params)[0]

    def output_ports(self, params: P | None) -> list[Port]:
        return self.ports_for(params)[1]

    @classmethod
    def params_schema(cls) -> dict[str, Any]:
        return cls.Params.model_json_schema()

    def default_params(self) -> P | None:
        """The params a new node starts with, or None when some are required."""
        try:
            return self.Params.model_validate({})
        except ValueError:
            return None

    def catalog_entry(self) -> dict[str, Any]:
        inputs, outputs = self.ports_for(self.default_params())
        return {
            "key": self.key,
            "label": self.label,
            "category": self.category,
            "description": self.description,
            "inputs": [p.as_dict() for p in inputs],
            "outputs": [p.as_dict() for p in outputs],
            "params": self.params_schema(),
        }

    # --- validation, build, execution -------------------------------------------------------
    def check(self, params: P, env: BuildEnv) -> list[ParamProblem]:
        """Component-specific validation beyond the Params model (no side effects)."""
        return []

    def build(self, params: P, env: BuildEnv) -> Any:
        """The LangChain object (or plain helper) this node runs with; None if it needs none."""
        return None

    async def execute(
        self, built: Any, params: P, inputs: dict[str, Any], ctx: RunContext
    ) -> dict[str, Any]:
        raise NotImplementedError
