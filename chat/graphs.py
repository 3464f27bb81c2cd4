"""What a caller from outside needs to know about a flow's graph: its chat input and which
node gives the answer (the same choice as the editor's answer-first run panel,
frontend/src/run/RunPanel.tsx: each text output, streamed meanwhile by the node feeding it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flows.components.util import as_text

CHAT_INPUT = "io.chat_input"
TEXT_OUTPUT = "io.text_output"


@dataclass(frozen=True)
class AnswerSource:
    """A text output node and the node feeding it (whose tokens are its answer, streaming)."""

    output: str
    feeder: str | None


def _nodes(graph: Any) -> list[dict[str, Any]]:
    nodes = graph.get("nodes") if isinstance(graph, dict) else None
    return [n for n in nodes or [] if isinstance(n, dict)]


def chat_inputs(graph: Any) -> list[str]:
    """The ids of the graph's chat input nodes, in the graph's order."""
    return [str(n.get("id")) for n in _nodes(graph) if n.get("component") == CHAT_INPUT]


def answer_sources(graph: Any) -> list[AnswerSource]:
    """Each text output with the node that feeds it, in the graph's order."""
    edges = graph.get("edges") if isinstance(graph, dict) else None
    feeders: dict[str, str] = {}
    for edge in edges or []:
        if isinstance(edge, dict) and edge.get("target") is not None:
            feeders.setdefault(str(edge["target"]), str(edge.get("source")))
    return [
        AnswerSource(str(n.get("id")), feeders.get(str(n.get("id"))))
        for n in _nodes(graph)
        if n.get("component") == TEXT_OUTPUT
    ]


def answer_text(
    sources: list[AnswerSource], outputs: dict[str, Any], prefer: str | None = None
) -> str:
    """The run's answer from its final outputs: the output fed by `prefer` (the node whose
    tokens were streamed) if it has one, else the first output that has a value (outputs of
    branches not taken have none)."""
    ordered = sorted(sources, key=lambda s: s.feeder != prefer) if prefer else sources
    for source in ordered:
        if outputs.get(source.output) is not None:
            return as_text(outputs[source.output])
    return ""
