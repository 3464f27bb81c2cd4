"""Graph validation and the builder: a JSON flow graph -> an execution plan of built nodes.

Pure (reads the workspace's policy and credentials, writes nothing) and unit-testable.
Nothing in the graph is ever used as an import path, a class name, a pickle or a template
engine choice, and LangChain's `load()`/`loads()` (or any reviver) is never called on it:
a stored `{"lc": 1, "type": "secret", ...}` dict stays plain data. A component must be
registered *and* enabled for the workspace; `build_plan` re-checks that in the worker.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from django.conf import settings
from pydantic import BaseModel, ValidationError

from flows.components.base import BuildEnv, Component, NodeError, Port, types_compatible
from flows.components.registry import get_component
from flows.messages import param_message
from flows.pinning import Pinned, pin_problems
from flows.policy import DEFAULT_POLICY, NodePolicy, error_port, policy_problems
from flows.selectors import enabled_keys

if TYPE_CHECKING:
    from accounts.models import Workspace

NODE_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
COMPONENT_KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,40}(\.[a-z][a-z0-9_]{0,40}){1,3}$")
PORT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
NODE_KEYS = {"id", "component", "params", "position", "label", "policy", "pinned"}
EDGE_KEYS = {"source", "source_port", "target", "target_port", "id"}
MAX_DEPTH = 24  # JSON nesting of the whole graph
MAX_ITEMS = 200_000  # JSON values in the whole graph
MAX_EDGES = 2_000
MAX_NODE_PARAMS_BYTES = 256 * 1024
MAX_PROBLEMS = 200
# Canvas annotations (`graph["annotations"]`): notes and group frames. They are layout
# only: validated here for shape and size, never read by the executor.
ANNOTATION_KINDS = {"note": "text", "group": "title"}
ANNOTATION_KEYS = {"id", "kind", "text", "title", "position", "size", "color"}
ANNOTATION_COLORS = {"yellow", "blue", "green", "pink", "grey"}
MAX_ANNOTATIONS = 100
MAX_NOTE_CHARS = 5_000
MAX_TITLE_CHARS = 200
MIN_ANNOTATION_SIZE, MAX_ANNOTATION_SIZE = 40, 10_000


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a graph: where (node id, field) and what (code, message)."""

    node_id: str | None
    field: str
    code: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class GraphInvalid(Exception):
    """The graph cannot be built; `problems` lists every reason at once."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(p.message for p in problems[:5]))
        self.problems = problems


@dataclass(frozen=True)
class Edge:
    source: str
    source_port: str
    target: str
    target_port: str


@dataclass
class PlannedNode:
    id: str
    component: Component
    params: BaseModel
    built: Any = None
    policy: NodePolicy = DEFAULT_POLICY  # retries, timeout, on failure (flows.policy)
    pinned: Pinned | None = None  # its output, recorded by an earlier run (flows.pinning)


@dataclass
class ExecutionPlan:
    """What the executor runs: nodes in topological `order`; `levels` groups nodes whose
    inputs are all in earlier levels (each level's nodes can run in parallel)."""

    nodes: dict[str, PlannedNode]
    order: list[str]
    levels: list[list[str]]
    incoming: dict[str, list[Edge]]
    outgoing: dict[str, list[Edge]] = field(default_factory=dict)
    input_node_ids: list[str] = field(default_factory=list)
    output_node_ids: list[str] = field(default_factory=list)


# --- validation ---------------------------------------------------------------------------
NUL_PROBLEM = Problem(None, "", "not_text", "Text in a graph may not contain NUL characters.")


def shape_problems(graph: Any) -> list[Problem]:
    """Depth, size and JSON-ness, checked without recursion before anything else (an
    editor's draft is checked only this far: it is kept, not run)."""
    if not isinstance(graph, dict):
        return [Problem(None, "", "invalid_graph", "A flow graph is a JSON object.")]
    stack: list[tuple[Any, int]] = [(graph, 1)]
    items = 0
    while stack:
        value, depth = stack.pop()
        items += 1
        if items > MAX_ITEMS:
            return [Problem(None, "", "too_large", f"The graph has more than {MAX_ITEMS} values.")]
        if depth > MAX_DEPTH:
            return [
                Problem(
                    None, "", "too_deep", f"The graph is nested deeper than {MAX_DEPTH} levels."
                )
            ]
        if isinstance(value, dict):
            for key, child in value.items():
                if not isinstance(key, str):
                    return [Problem(None, "", "not_json", "Object keys must be strings.")]
                if "\x00" in key:
                    return [NUL_PROBLEM]
                stack.append((child, depth + 1))
        elif isinstance(value, list):
            stack.extend((child, depth + 1) for child in value)
        elif isinstance(value, str):
            if "\x00" in value:
                return [NUL_PROBLEM]
        elif isinstance(value, float) and not math.isfinite(value):
            return [Problem(None, "", "not_json", "Numbers must be finite (no NaN or Infinity).")]
        elif value is None or isinstance(value, bool | int | float):
            continue
        else:
            return [Problem(None, "", "not_json", "The graph may contain only JSON values.")]
    size = len(json.dumps(graph, ensure_ascii=False).encode())
    limit = settings.FLOWDECK["GRAPH_MAX_BYTES"]
    if size > limit:
        return [Problem(None, "", "too_large", f"The graph is larger than {limit} bytes.")]
    return []


@lru_cache(maxsize=128)
def _param_titles(component_key: str) -> dict[str, str]:
    """Param name -> the label the editor shows (its JSON Schema title); built once per
    component, since a JSON Schema takes a while to generate."""
    component = get_component(component_key)
    properties = component.params_schema().get("properties", {}) if component else {}
    return {name: str(prop.get("title") or name) for name, prop in properties.items()}


def _pydantic_problems(node_id: str, exc: ValidationError, component: Component) -> list[Problem]:
    titles = _param_titles(component.key)
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(part) for part in error.get("loc", ())) or "params"
        code = "unknown_param" if error.get("type") == "extra_forbidden" else "invalid_param"
        message = param_message(dict(error), titles)[:300]
        problems.append(Problem(node_id, f"params.{loc}"[:120], code, message))
    return problems


def _port_name(port: Port) -> str:
    return f"“{port.label or port.name}”"


def _annotation_problems(annotations: Any, node_ids: set[str]) -> list[Problem]:
    """Notes and group frames: their shape only (see ANNOTATION_KINDS)."""
    if not isinstance(annotations, list):
        return [Problem(None, "annotations", "invalid_annotation", "Annotations are a list.")]
    if len(annotations) > MAX_ANNOTATIONS:
        return [
            Problem(
                None,
                "annotations",
                "invalid_annotation",
                f"A flow may have at most {MAX_ANNOTATIONS} notes and groups.",
            )
        ]
    problems: list[Problem] = []
    seen: set[str] = set()
    for index, item in enumerate(annotations):
        where = f"annotations[{index}]"

        def bad(message: str, where: str = where) -> None:
            problems.append(Problem(None, where, "invalid_annotation", message))

        if not isinstance(item, dict) or set(item) - ANNOTATION_KEYS:
            bad(
                "A note or group is {id, kind, text or title, position, size, color}; "
                "it has other fields."
            )
            continue
        ident = item.get("id")
        if not isinstance(ident, str) or not NODE_ID_RE.match(ident):
            bad("A note's or group's id is 1-64 ASCII letters, digits, '_', '-', '.' or ':'.")
            continue
        if ident in seen or ident in node_ids:
            bad(f"Two items of the canvas share the id {_short(ident)}.")
            continue
        seen.add(ident)
        kind = item.get("kind")
        if kind not in ANNOTATION_KINDS:
            bad("A canvas annotation is a note or a group.")
            continue
        text_key = ANNOTATION_KINDS[kind]
        limit = MAX_NOTE_CHARS if kind == "note" else MAX_TITLE_CHARS
        text = item.get(text_key, "")
        other = "title" if text_key == "text" else "text"
        if other in item:
            bad(f"A {kind} has a `{text_key}`, not a `{other}`.")
        if not isinstance(text, str) or len(text) > limit:
            bad(f"A {kind}'s {text_key} is text of at most {limit} characters.")
        position = item.get("position")
        if not (
            isinstance(position, dict)
            and set(position) == {"x", "y"}
            and all(_finite(v) for v in position.values())
        ):
            bad(f"A {kind}'s `position` is {{x, y}} numbers.")
        size = item.get("size")
        if not (
            isinstance(size, dict)
            and set(size) == {"width", "height"}
            and all(
                _finite(v) and MIN_ANNOTATION_SIZE <= v <= MAX_ANNOTATION_SIZE
                for v in size.values()
            )
        ):
            bad(
                f"A {kind}'s `size` is {{width, height}}, each {MIN_ANNOTATION_SIZE} to "
                f"{MAX_ANNOTATION_SIZE}."
            )
        color = item.get("color")
        if color is not None and color not in ANNOTATION_COLORS:
            bad(f"A {kind}'s color is one of: {', '.join(sorted(ANNOTATION_COLORS))}.")
    return problems


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)[:limit]
    text = text.encode("ascii", "backslashreplace").decode()
    return text[:limit] + ("…" if len(text) > limit else "")


class _Validated:
    """The intermediate result of validation, reused by build_plan."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.nodes: dict[str, tuple[Component, BaseModel, NodePolicy, Pinned | None]] = {}
        self.edges: list[Edge] = []
        self.order: list[str] = []
        self.levels: list[list[str]] = []


def _validate(graph: Any, workspace: Workspace, env: BuildEnv) -> _Validated:
    result = _Validated()
    problems = result.problems
    problems.extend(shape_problems(graph))
    if problems:
        return result
    nodes = graph.get("nodes", [])
    edges = graph.get("edges", [])
    if not isinstance(nodes, list):
        problems.append(Problem(None, "nodes", "invalid_graph", "`nodes` must be a list."))
        return result
    if not isinstance(edges, list):
        problems.append(Problem(None, "edges", "invalid_graph", "`edges` must be a list."))
        return result
    if not nodes:
        # Nothing would run, yet the run would "succeed": refused at every door (save,
        # run from the editor, the API, the socket) because they all validate here.
        problems.append(
            Problem(
                None,
                "nodes",
                "empty_graph",
                "The flow is empty: add at least an input, a model and an output, and "
                "connect them.",
            )
        )
        return result
    max_nodes = settings.FLOWDECK["GRAPH_MAX_NODES"]
    if len(nodes) > max_nodes:
        problems.append(
            Problem(None, "nodes", "too_many_nodes", f"A flow may have at most {max_nodes} nodes.")
        )
        return result
    if len(edges) > MAX_EDGES:
        problems.append(
            Problem(None, "edges", "too_many_edges", f"A flow may have at most {MAX_EDGES} edges.")
        )
        return result

    enabled = enabled_keys(workspace)
    ports: dict[str, tuple[dict[str, Port], dict[str, Port]]] = {}
    seen_ids: set[str] = set()
    for index, node in enumerate(nodes):
        where = f"nodes[{index}]"
        if not isinstance(node, dict):
            problems.append(Problem(None, where, "invalid_node", "A node is a JSON object."))
            continue
        node_id = node.get("id")
        if not isinstance(node_id, str) or not NODE_ID_RE.match(node_id):
            problems.append(
                Problem(
                    None,
                    f"{where}.id",
                    "invalid_node_id",
                    "A node id is 1-64 ASCII letters, digits, '_', '-', '.' or ':'.",
                )
            )
            continue
        if node_id in seen_ids:
            problems.append(Problem(node_id, "id", "duplicate_node_id", "Two nodes share this id."))
            continue
        seen_ids.add(node_id)
        extra = set(node) - NODE_KEYS
        if extra:
            problems.append(
                Problem(
                    node_id,
                    sorted(extra)[0][:60],
                    "unknown_field",
                    f"Unknown node field(s): {', '.join(_short(k) for k in sorted(extra)[:5])}.",
                )
            )
        position = node.get("position")
        if position is not None and not (
            isinstance(position, dict)
            and set(position) <= {"x", "y"}
            and all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in position.values()
            )
        ):
            problems.append(
                Problem(node_id, "position", "invalid_position", "`position` is {x, y} numbers.")
            )
        label = node.get("label")
        if label is not None and not (isinstance(label, str) and len(label) <= 200):
            problems.append(Problem(node_id, "label", "invalid_label", "`label` is short text."))
        key = node.get("component")
        if not isinstance(key, str) or not COMPONENT_KEY_RE.match(key):
            problems.append(
                Problem(
                    node_id,
                    "component",
                    "unknown_component",
                    f"{_short(key)} is not a component key.",
                )
            )
            continue
        component = get_component(key)
        if component is None:
            problems.append(
                Problem(node_id, "component", "unknown_component", f"No component `{key}` exists.")
            )
            continue
        if key not in enabled:
            problems.append(
                Problem(
                    node_id,
                    "component",
                    "component_disabled",
                    f"`{key}` is disabled for this workspace.",
                )
            )
            continue
        raw = node.get("params", {})
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            problems.append(Problem(node_id, "params", "invalid_param", "`params` is an object."))
            continue
        if len(json.dumps(raw).encode()) > MAX_NODE_PARAMS_BYTES:
            problems.append(
                Problem(node_id, "params", "too_large", "This node's parameters are too large.")
            )
            continue
        try:
            params = component.Params.model_validate(raw)
        except ValidationError as exc:
            problems.extend(_pydantic_problems(node_id, exc, component))
            continue
        node_problems = component.check(params, env)
        if node_problems:
            problems.extend(
                Problem(node_id, f"params.{p.field}", p.code, p.message) for p in node_problems
            )
            continue
        ins, outs = component.ports_for(params)
        policy, policy_issues = policy_problems(node.get("policy"), outs)
        if policy is None:
            problems.extend(Problem(node_id, *issue) for issue in policy_issues)
            continue
        pinned, pin_issues = pin_problems(node.get("pinned"), workspace, node_id, key)
        if pin_issues:
            problems.extend(Problem(node_id, *issue) for issue in pin_issues)
            continue
        if policy.has_error_port:
            outs = [*outs, error_port()]
        result.nodes[node_id] = (component, params, policy, pinned)
        ports[node_id] = ({p.name: p for p in ins}, {p.name: p for p in outs})

    fed: dict[tuple[str, str], int] = defaultdict(int)
    fed_by_invalid: set[tuple[str, str]] = set()
    seen_edges: set[Edge] = set()
    for index, raw_edge in enumerate(edges):
        where = f"edges[{index}]"
        if not isinstance(raw_edge, dict) or set(raw_edge) - EDGE_KEYS:
            problems.append(
                Problem(
                    None,
                    where,
                    "invalid_edge",
                    "An edge is {source, source_port, target, target_port}.",
                )
            )
            continue
        keys = ("source", "source_port", "target", "target_port")
        values = [v for v in (raw_edge.get(k) for k in keys) if isinstance(v, str)]
        if len(values) != len(keys):
            problems.append(
                Problem(None, where, "invalid_edge", "Edge ends and ports must be strings.")
            )
            continue
        edge = Edge(*values)
        bad = False
        for end, port_name, side in (
            (edge.source, edge.source_port, 1),
            (edge.target, edge.target_port, 0),
        ):
            if end not in seen_ids:
                problems.append(
                    Problem(None, where, "unknown_node", f"The edge names no node {_short(end)}.")
                )
                bad = True
            elif end in ports and port_name not in ports[end][side]:
                kind = "output" if side else "input"
                problems.append(
                    Problem(
                        end,
                        f"ports.{_short(port_name, 40)}",
                        "unknown_port",
                        f"This node has no {kind} port {_short(port_name)}.",
                    )
                )
                bad = True
        if bad or edge.source not in ports or edge.target not in ports:
            if not bad:  # an end node is invalid: already reported, don't cascade
                fed_by_invalid.add((edge.target, edge.target_port))
            continue
        if edge in seen_edges:
            problems.append(Problem(edge.target, where, "duplicate_edge", "Duplicate edge."))
            continue
        seen_edges.add(edge)
        out_port = ports[edge.source][1][edge.source_port]
        in_port = ports[edge.target][0][edge.target_port]
        if not types_compatible(out_port.type, in_port.type):
            problems.append(
                Problem(
                    edge.target,
                    f"ports.{in_port.name}",
                    "type_mismatch",
                    f"Can't connect {_port_name(out_port)} ({out_port.type}) of {edge.source} "
                    f"to {_port_name(in_port)} ({in_port.type}): the types differ.",
                )
            )
            continue
        fed[(edge.target, edge.target_port)] += 1
        if fed[(edge.target, edge.target_port)] > 1 and not in_port.multi:
            problems.append(
                Problem(
                    edge.target,
                    f"ports.{in_port.name}",
                    "multiple_inputs",
                    f"Input {_port_name(in_port)} takes one connection; remove the others.",
                )
            )
            continue
        result.edges.append(edge)

    for node_id, (in_ports, _outs) in ports.items():
        for port in in_ports.values():
            slot = (node_id, port.name)
            if port.required and not fed.get(slot) and slot not in fed_by_invalid:
                problems.append(
                    Problem(
                        node_id,
                        f"ports.{port.name}",
                        "missing_input",
                        f"Input {_port_name(port)} is not connected.",
                    )
                )

    if graph.get("annotations") is not None:
        problems.extend(_annotation_problems(graph["annotations"], seen_ids))

    order, levels, cyclic = _topological(list(result.nodes), result.edges)
    for node_id in cyclic:
        problems.append(
            Problem(
                node_id, "", "cycle", "This node is part of a loop: a flow must not cycle back."
            )
        )
    result.order, result.levels = order, levels
    if len(problems) > MAX_PROBLEMS:
        del problems[MAX_PROBLEMS:]
    return result


def _topological(
    node_ids: list[str], edges: list[Edge]
) -> tuple[list[str], list[list[str]], list[str]]:
    """(order, levels, nodes on or behind a cycle) by Kahn's algorithm, stable by node order."""
    indegree = dict.fromkeys(node_ids, 0)
    successors: dict[str, list[str]] = defaultdict(list)
    for edge in edges:
        successors[edge.source].append(edge.target)
        indegree[edge.target] += 1
    level = [n for n in node_ids if indegree[n] == 0]
    order: list[str] = []
    levels: list[list[str]] = []
    while level:
        levels.append(level)
        order.extend(level)
        following: list[str] = []
        for node_id in level:
            for target in successors[node_id]:
                indegree[target] -= 1
                if indegree[target] == 0:
                    following.append(target)
        level = following
    placed = set(order)
    return order, levels, [n for n in node_ids if n not in placed]


def validate_graph(graph: Any, workspace: Workspace) -> list[Problem]:
    """Every problem of `graph` for `workspace`, at once; an empty list means valid."""
    return _validate(graph, workspace, BuildEnv(workspace)).problems


def build_plan(graph: Any, workspace: Workspace, *, build_objects: bool = True) -> ExecutionPlan:
    """Validate (again: policy and credentials as they are now) and build the plan.

    With `build_objects=False` the components' LangChain objects are not built (the plan
    is still fully validated). Raises GraphInvalid with every problem.
    """
    env = BuildEnv(workspace)
    checked = _validate(graph, workspace, env)
    if checked.problems:
        raise GraphInvalid(checked.problems)
    planned: dict[str, PlannedNode] = {}
    problems: list[Problem] = []
    for node_id in checked.order:
        component, params, policy, pinned = checked.nodes[node_id]
        built = None
        if build_objects and pinned is None:  # a pinned node is not executed
            try:
                # A node that retries by policy makes each request once: every attempt
                # is then a `node_retry` in its log, none hidden inside a provider SDK.
                node_env = env.with_provider_retries(0) if policy.retries else env
                built = component.build(params, node_env)
            except NodeError as exc:
                problems.append(Problem(node_id, "", "build_failed", str(exc)))
            except Exception as exc:  # a component bug must not leak details (or secrets)
                problems.append(
                    Problem(
                        node_id,
                        "",
                        "build_failed",
                        f"The node could not be built ({type(exc).__name__}).",
                    )
                )
        planned[node_id] = PlannedNode(node_id, component, params, built, policy, pinned)
    if problems:
        raise GraphInvalid(problems)
    incoming: dict[str, list[Edge]] = {node_id: [] for node_id in checked.order}
    outgoing: dict[str, list[Edge]] = {node_id: [] for node_id in checked.order}
    for edge in checked.edges:
        incoming[edge.target].append(edge)
        outgoing[edge.source].append(edge)
    return ExecutionPlan(
        nodes=planned,
        order=checked.order,
        levels=checked.levels,
        incoming=incoming,
        outgoing=outgoing,
        input_node_ids=[n for n in checked.order if planned[n].component.key == "io.chat_input"],
        output_node_ids=[n for n in checked.order if planned[n].component.key == "io.text_output"],
    )
