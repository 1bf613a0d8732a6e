"""The dashboard's charts, drawn as inline SVG here (no chart library, no script):
throughput (stacked bars of tasks finished per interval) and latency (lines of run and
wait time), with a ``<title>`` on every bar and point; and the formats they share with
the pages (``fmt_time``, ``fmt_seconds``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from markupsafe import Markup

from ...admin import Bucket


# -- formatting ---------------------------------------------------------------------------
def to_json(value: Any, *, indent: int | None = 2) -> str:
    """JSON for people: indented (or on one line with ``indent=None``), keys sorted."""
    return json.dumps(value, indent=indent, ensure_ascii=False, sort_keys=True, default=str)


def fmt_time(value: datetime | None) -> Markup:
    """A time in UTC, as ``<time datetime="…">2026-06-01 08:00:00 UTC</time>``: the
    dashboard's script gives it the reader's local time as its tooltip."""
    if value is None:
        return Markup("—")
    utc = value.astimezone(UTC)
    return Markup('<time datetime="{}">{}</time>').format(
        utc.isoformat(), utc.strftime("%Y-%m-%d %H:%M:%S UTC")
    )


def fmt_seconds(value: float | None) -> str:
    """A duration for people: ``0``, ``350 ms``, ``4.2 s``, ``12 min``, ``3.5 h``."""
    if value is None:
        return "—"
    if value == 0:
        return "0"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 10:
        return f"{value:.1f}".removesuffix(".0") + " s"
    if value < 120:
        return f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"


# -- charts -------------------------------------------------------------------------------
WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 62, 14, 30, 40
#: The plot's size, and the y of its time axis.
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
AXIS_Y = TOP + PLOT_H
FONT = "system-ui, -apple-system, 'Segoe UI', sans-serif"
AXIS_COLOR = "#868e96"
GRID_COLOR = "#e9ecef"
TEXT_COLOR = "#495057"
BAR_COLORS = {"succeeded": "#2f9e44", "failed": "#e03131", "cancelled": "#adb5bd"}
#: (label, CSS class, Bucket attribute, colour, dashed)
LINE_SERIES = (
    ("run p50", "line-p50", "run_p50", "#1c7ed6", False),
    ("run p95", "line-p95", "run_p95", "#f08c00", False),
    ("wait p50", "line-wait", "wait_p50", "#7048e8", True),
)
EMPTY_NOTE = "No task finished in the last hour"


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _fill(color: str) -> str:
    """The colour as an attribute; ``dashboard.css`` gives each series' class the same
    colour, so that no other rule repaints it. No ``style=`` attribute: the host's
    Content-Security-Policy may (and the demo's does) refuse inline styles."""
    return f'fill="{color}"'


def _stroke(color: str) -> str:
    return f'fill="none" stroke="{color}"'


def _n(value: float) -> str:
    """A coordinate: short, and the same on every platform."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _line(head: str, x1: float, x2: float, y1: float, y2: float, color: str) -> str:
    """A one-pixel line; ``head`` is what comes before its coordinates (a class)."""
    return (
        f'<line{head} x1="{_n(x1)}" x2="{_n(x2)}" y1="{_n(y1)}" y2="{_n(y2)}" '
        f'stroke="{color}" stroke-width="1"/>'
    )


def _text(head: str, x: float, y: float, text: str, anchor: str = "middle", tail: str = "") -> str:
    """A label; ``head`` comes before its position (a class), ``tail`` after its colour."""
    return (
        f'<text{head} x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}" fill="{TEXT_COLOR}"'
        f"{tail}>{_e(text)}</text>"
    )


def _ticks(peak: float, *, integer: bool, count: int = 4) -> list[float]:
    """Round gridline values from 0 to at least ``peak``."""
    if not peak > 0:
        peak = 1.0
    raw = peak / count
    magnitude = 10 ** math.floor(math.log10(raw))
    steps = (1, 2, 5, 10) if integer else (1, 2, 2.5, 5, 10)
    step = next(m * magnitude for m in steps if m * magnitude >= raw * (1 - 1e-9))
    if integer:
        step = max(1.0, float(math.ceil(step)))
    n = max(1, math.ceil(peak / step - 1e-9))
    return [round(i * step, 10) for i in range(n + 1)]


def _slot_seconds(buckets: Sequence[Bucket]) -> float:
    if len(buckets) >= 2:
        return max(1.0, (buckets[1].start - buckets[0].start).total_seconds())
    return 60.0


def _span(bucket: Bucket, seconds: float) -> str:
    start = bucket.start.astimezone(UTC)
    end = datetime.fromtimestamp(start.timestamp() + seconds, UTC)
    return f"{start:%H:%M}–{end:%H:%M} UTC"


def _frame(
    title: str,
    buckets: Sequence[Bucket],
    ticks: list[float],
    label: Callable[[float], str],
    y_title: str,
    legend: list[tuple[str, str, str, bool]],
) -> list[str]:
    """The SVG's opening, gridlines, both axes with their labels, and the legend."""
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{_e(title)}" '
        f'font-family="{_e(FONT)}" font-size="11">',
        f"<title>{_e(title)}</title>",
        '<g class="grid">',
    ]
    for value in ticks:
        y = AXIS_Y - value / (ticks[-1] or 1.0) * PLOT_H
        out.append(_line("", LEFT, WIDTH - RIGHT, y, y, GRID_COLOR))
        out.append(_text(' class="tick"', LEFT - 6, y + 3.5, label(value), "end"))
    out.append("</g>")
    # The time axis: a label every k slots, on round times.
    n = max(1, len(buckets))
    slot = PLOT_W / n
    seconds = _slot_seconds(buckets)
    every = next((k for k in (1, 2, 5, 10, 15, 20, 30, 60, 120, 240) if n / k <= 7), n)
    out.append(_line(' class="axis"', LEFT, WIDTH - RIGHT, AXIS_Y, AXIS_Y, AXIS_COLOR))
    for i, bucket in enumerate(buckets):
        if int(bucket.start.timestamp() // seconds) % every:
            continue
        x = LEFT + (i + 0.5) * slot
        out.append(_line("", x, x, AXIS_Y, AXIS_Y + 4, AXIS_COLOR))
        out.append(_text(' class="tick"', x, AXIS_Y + 15, f"{bucket.start.astimezone(UTC):%H:%M}"))
    per = "minute" if seconds == 60 else f"{seconds:g} s"
    out.append(
        _text(' class="axis-title"', LEFT + PLOT_W / 2, HEIGHT - 6, f"time (UTC), per {per}")
    )
    middle = TOP + PLOT_H / 2
    rotate = f' transform="rotate(-90 12 {_n(middle)})"'
    out.append(_text(' class="axis-title"', 12, middle, y_title, tail=rotate))
    # The legend, right-aligned above the plot.
    x = WIDTH - RIGHT
    items: list[str] = []
    for text, cls, color, is_line in reversed(legend):
        x -= 7 * len(text) + 24
        swatch = (
            f'<line class="{cls}" x1="{x}" x2="{x + 14}" y1="12" y2="12" '
            f'{_stroke(color)} stroke-width="2.5"/>'
            if is_line
            else f'<rect class="{cls}" x="{x + 2}" y="6" width="11" height="11" rx="2" '
            f"{_fill(color)}/>"
        )
        items.append(f'{swatch}<text x="{x + 18}" y="16" fill="{TEXT_COLOR}">{_e(text)}</text>')
    out.append('<g class="legend">' + "".join(reversed(items)) + "</g>")
    return out


def _end(out: list[str], empty: bool) -> str:
    """The SVG's text, with a note across an empty plot."""
    if empty:
        out.append(
            f'<text class="chart-empty" x="{_n(LEFT + PLOT_W / 2)}" y="{_n(TOP + PLOT_H / 2)}" '
            f'text-anchor="middle" fill="{AXIS_COLOR}" font-size="13">{_e(EMPTY_NOTE)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


def throughput_svg(buckets: Sequence[Bucket]) -> str:
    """Stacked bars of tasks finished per bucket — succeeded, failed, cancelled — with a
    ``<title>`` on every bar."""
    peak = max((b.finished for b in buckets), default=0)
    ticks = _ticks(peak, integer=True)
    legend = [(status, f"bar-{status}", color, False) for status, color in BAR_COLORS.items()]
    title = "Tasks finished per minute, last hour"
    out = _frame(title, buckets, ticks, lambda v: f"{v:g}", "tasks finished", legend)
    slot = PLOT_W / max(1, len(buckets))
    width = max(1.0, slot * 0.76)
    seconds = _slot_seconds(buckets)
    out.append('<g class="bars">')
    for i, bucket in enumerate(buckets):
        if not bucket.finished:
            continue
        x = LEFT + i * slot + (slot - width) / 2
        y = float(AXIS_Y)
        when = _span(bucket, seconds)
        out.append(f"<g><title>{_e(f'{when}: {bucket.finished} finished')}</title>")
        for status, color in BAR_COLORS.items():
            count: int = getattr(bucket, status)
            if not count:
                continue
            h = count / ticks[-1] * PLOT_H
            y -= h
            out.append(
                f'<rect class="bar bar-{status} {status}" x="{_n(x)}" y="{_n(y)}" '
                f'width="{_n(width)}" height="{_n(h)}" {_fill(color)}>'
                f"<title>{_e(f'{when}: {count} {status}')}"
                "</title></rect>"
            )
        out.append("</g>")
    out.append("</g>")
    return _end(out, not peak)


def latency_svg(buckets: Sequence[Bucket]) -> str:
    """Lines of run time (p50, p95) and wait time (p50) per bucket; a point, with its
    ``<title>``, for every bucket that has a value (lines break over empty buckets)."""
    values = [
        v
        for b in buckets
        for _, _, attr, _, _ in LINE_SERIES
        if (v := getattr(b, attr)) is not None
    ]
    ticks = _ticks(max(values, default=0.0), integer=False)
    legend = [(text, cls, color, True) for text, cls, _, color, _ in LINE_SERIES]
    out = _frame(
        "Run and wait time per minute, last hour", buckets, ticks, fmt_seconds, "duration", legend
    )
    slot = PLOT_W / max(1, len(buckets))
    seconds = _slot_seconds(buckets)
    top_value = ticks[-1] or 1.0
    for text, cls, attr, color, dashed in LINE_SERIES:
        path: list[str] = []
        points: list[str] = []
        gap = True
        for i, bucket in enumerate(buckets):
            value: float | None = getattr(bucket, attr)
            if value is None:
                gap = True
                continue
            x = LEFT + (i + 0.5) * slot
            y = AXIS_Y - value / top_value * PLOT_H
            path.append(f"{'M' if gap else 'L'}{_n(x)} {_n(y)}")
            gap = False
            tip = f"{_span(bucket, seconds)}: {text} {fmt_seconds(value)}"
            points.append(
                f'<circle class="point point-{cls[5:]}" cx="{_n(x)}" cy="{_n(y)}" r="2.5" '
                f"{_fill(color)}><title>{_e(tip)}</title></circle>"
            )
        out.append(f'<g class="series series-{cls[5:]}">')
        if path:
            dash = ' stroke-dasharray="5 3"' if dashed else ""
            out.append(
                f'<path class="{cls}" d="{" ".join(path)}" {_stroke(color)} '
                f'stroke-width="2" stroke-linejoin="round" stroke-linecap="round"{dash}/>'
            )
        out.extend(points)
        out.append("</g>")
    return _end(out, not values)
