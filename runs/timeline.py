"""The run timeline as an inline SVG, drawn on the server from `selectors.run_timeline`.

One bar per node from its `node_started` to its `node_finished`/`error`; tool calls are
ticks on their node's bar. Plain SVG with <title> tooltips: no script, no external assets.
"""

from __future__ import annotations

import json
from typing import Any

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from runs.models import Run
from runs.selectors import Timeline, run_timeline

LABEL_W = 170
CHART_W = 680
ROW_H = 24
BAR_H = 14
AXIS_H = 22
TICKS = 5


def _fmt(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def timeline_svg(timeline: Timeline) -> SafeString:
    """The picture, or an empty string for a run that has no node events yet."""
    if not timeline.spans:
        return mark_safe("")
    total = timeline.total or 1e-9
    height = AXIS_H + ROW_H * len(timeline.spans) + 6
    width = LABEL_W + CHART_W + 30  # room for the last tick label

    def x(seconds: float) -> float:
        return LABEL_W + CHART_W * max(0.0, min(seconds, total)) / total

    parts: list[str] = []
    for i in range(TICKS + 1):
        at = total * i / TICKS
        parts.append(
            format_html(
                '<line class="tick" x1="{x}" y1="{y1}" x2="{x}" y2="{y2}" stroke="#ddd"/>'
                '<text x="{x}" y="12" font-size="10" text-anchor="middle" fill="#666">{t}</text>',
                x=f"{x(at):.1f}",
                y1=AXIS_H - 6,
                y2=height,
                t=_fmt(at) if timeline.total else "0",
            )
        )
    row_of = {span.node_id: row for row, span in enumerate(timeline.spans)}
    for row, span in enumerate(timeline.spans):
        y = AXIS_H + row * ROW_H
        colour = "#c0392b" if span.failed else ("#2e86c1" if span.finished else "#aab7b8")
        state = "error" if span.failed else ("finished" if span.finished else "unfinished")
        x0, x1 = x(span.start), x(span.end)
        parts.append(
            format_html(
                '<text x="{lx}" y="{ty}" font-size="12" text-anchor="end" fill="#333">{label}'
                "</text>"
                '<rect class="bar bar-{state}" data-node="{node}" x="{x}" y="{y}" width="{w}" '
                'height="{h}" rx="2" fill="{colour}"><title>{node}: {start} → {end} ({dur}, '
                "{state}{tools})</title></rect>",
                lx=LABEL_W - 8,
                ty=y + BAR_H - 2,
                label=span.node_id[:24],
                state=state,
                node=span.node_id,
                x=f"{x0:.1f}",
                y=y + 2,
                w=f"{max(2.0, x1 - x0):.1f}",
                h=BAR_H,
                colour=colour,
                start=_fmt(span.start),
                end=_fmt(span.end),
                dur=_fmt(span.end - span.start),
                tools=f", {span.tool_calls} tool calls" if span.tool_calls else "",
            )
        )
    marks = format_html_join(
        "",
        '<path class="tool-mark" data-seq="{}" d="M{} {} l-4 -6 h8 z" fill="#e67e22">'
        "<title>tool call #{}: {} at {}</title></path>",
        (
            (
                mark.seq,
                f"{x(mark.at):.1f}",
                AXIS_H + row_of[mark.node_id] * ROW_H + 2,
                mark.seq,
                mark.tool_name or "tool",
                _fmt(mark.at),
            )
            for mark in timeline.marks
            if mark.node_id in row_of
        ),
    )
    return format_html(
        '<svg class="run-timeline" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        'viewBox="0 0 {w} {h}" role="img" aria-label="{label}">{body}{marks}</svg>',
        w=width,
        h=height,
        label=f"Timeline of {len(timeline.spans)} nodes over {_fmt(timeline.total)}",
        body=format_html_join("", "{}", ((part,) for part in parts)),
        marks=marks,
    )


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def run_summary(run: Run) -> dict[str, Any]:
    """What `templates/runs/_run_summary.html` shows of a run: inputs, outputs, timeline
    (the workspace's run page and the admin's)."""
    timeline = run_timeline(run)
    return {
        "inputs": pretty(run.inputs),
        "outputs": pretty(run.outputs),
        "timeline": timeline,
        "timeline_svg": timeline_svg(timeline),
    }
