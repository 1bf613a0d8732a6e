"""The demo's admin pages: every user's tasks, the queue, throughput and latency over
the last hour (inline SVG drawn here, no chart library), the live workers, and one task
in full — traceback included — with Retry and Cancel.

Only administrators see them. Anyone else, signed in or not, gets the ordinary 404
page: the pages do not announce that they exist.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any, Protocol
from urllib.parse import urlencode

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Router

from .. import (
    ANY_OWNER,
    DatabaseUnavailable,
    Errands,
    ErrandsError,
    Page,
    Status,
    StorageFull,
    TaskNotFound,
    TaskRecord,
)
from ..admin import Bucket
from ..records import ACTIVE
from . import store
from .store import User
from .tasks import task_title


class Site(Protocol):
    """What the admin pages use of the demo site (``demo.web.Demo``)."""

    errands: Errands

    def render(
        self, request: Request, template: str, status_code: int = 200, **context: Any
    ) -> Response: ...

    def not_found(self, request: Request) -> Response: ...

    def csrf_refused(self, request: Request) -> Response: ...

    async def signed_in(self, request: Request) -> User | None: ...

    async def form(self, request: Request) -> dict[str, str] | None: ...


PAGE_SIZE = 20
OUTPUTS_SHOWN = 20
STATUS_VALUES = frozenset(s.value for s in Status)
RETRYABLE = frozenset({Status.FAILED, Status.CANCELLED})
Endpoint = Callable[[Request], Awaitable[Response]]


# -- the pages ----------------------------------------------------------------------------
def add_admin_routes(pages: Router, demo: Site) -> None:
    """``/admin`` and ``/admin/tasks/{task_id}`` (with ``…/retry`` and ``…/cancel``)."""
    app = demo.errands

    async def admin_user(request: Request) -> User | None:
        user = await demo.signed_in(request)
        return user if user is not None and user.is_admin else None

    async def emails_of(owners: set[str]) -> dict[str, str]:
        if not owners:
            return {}
        return await app.db.aread(store.users_by_owner, sorted(owners))

    async def owner_for(text: str) -> tuple[Any, str | None]:
        """The owner a filter names (an e-mail address, an owner id or a user number):
        ANY_OWNER for no filter, None for nobody, and a note for the page."""
        if not text:
            return ANY_OWNER, None
        if "@" in text:
            user = await app.db.aread(store.user_by_email, text.lower())
            if user is None:
                return None, f"No user has the e-mail address {text}."
            return user.owner, None
        if text.isdigit():
            return f"user:{text}", None
        return text, None

    async def admin_home(request: Request) -> Response:
        query = request.query_params
        status = query.get("status") or None
        if status not in STATUS_VALUES:
            status = None
        name = (query.get("name") or "").strip()[:200]
        owner_text = (query.get("owner") or "").strip()[:320]
        cursor = query.get("cursor") or None
        owner, owner_note = await owner_for(owner_text)
        if owner is None:
            page = Page([], None)
        else:
            try:
                page = await app.list(
                    owner=owner, status=status, name=name or None, limit=PAGE_SIZE, cursor=cursor
                )
            except ValueError:
                cursor = None
                page = await app.list(
                    owner=owner, status=status, name=name or None, limit=PAGE_SIZE
                )

        counts = await app.admin.status_counts()
        queue = await app.admin.queue()
        buckets = await app.admin.activity(hours=1, bucket_seconds=60)
        workers = await app.admin.workers()
        owners = {t.owner for t in page.items}
        owners.update(r["owner"] for w in workers for r in w.running)
        emails = await emails_of(owners)

        filters = {"status": status or "", "name": name, "owner": owner_text}
        kept = {k: v for k, v in filters.items() if v}
        next_url = (
            "/admin?" + urlencode({**kept, "cursor": page.next_cursor})
            if page.next_cursor
            else None
        )
        first_url = ("/admin?" + urlencode(kept)) if kept else "/admin"
        finished = {
            "succeeded": sum(b.succeeded for b in buckets),
            "failed": sum(b.failed for b in buckets),
            "cancelled": sum(b.cancelled for b in buckets),
        }
        return demo.render(
            request,
            "admin.html",
            tasks=page.items,
            next_url=next_url,
            first_url=first_url if cursor else None,
            filters=filters,
            filtered=bool(kept),
            owner_note=owner_note,
            counts=counts,
            total=sum(counts.values()),
            queue=queue,
            finished=finished,
            throughput_chart=Markup(throughput_svg(buckets)),
            latency_chart=Markup(latency_svg(buckets)),
            workers=workers,
            emails=emails,
            task_names=app.registry.names(),
            title_of=task_title,
            fmt_time=fmt_time,
            fmt_seconds=fmt_seconds,
            now=datetime.now(UTC),
        )

    async def show_task(
        request: Request, record: TaskRecord, status_code: int = 200, error: str | None = None
    ) -> Response:
        emails = await emails_of({record.owner})
        outputs = await app.outputs(record.id, owner=ANY_OWNER, limit=OUTPUTS_SHOWN)
        return demo.render(
            request,
            "admin_task.html",
            status_code=status_code,
            task=record,
            title=task_title(record),
            owner_email=emails.get(record.owner),
            payload_json=to_json(record.payload),
            result_json=None if record.result is None else to_json(record.result),
            outputs=[(seq, to_json(item)) for seq, item in outputs],
            outputs_cap=OUTPUTS_SHOWN,
            can_retry=record.status in RETRYABLE,
            can_cancel=record.status in ACTIVE,
            error=error,
            fmt_time=fmt_time,
            fmt_seconds=fmt_seconds,
        )

    async def admin_task(request: Request) -> Response:
        try:
            record = await app.get(request.path_params["task_id"], owner=ANY_OWNER)
        except TaskNotFound:
            return demo.not_found(request)
        return await show_task(request, record)

    async def retry(request: Request) -> Response:
        if await demo.form(request) is None:
            return demo.csrf_refused(request)
        task_id = request.path_params["task_id"]
        try:
            new = await app.retry(task_id, owner=ANY_OWNER)
        except TaskNotFound:
            return demo.not_found(request)
        except (DatabaseUnavailable, StorageFull):
            raise  # the site's error page
        except ErrandsError as exc:  # not failed/cancelled, task no longer registered, …
            try:
                record = await app.get(task_id, owner=ANY_OWNER)
            except TaskNotFound:
                return demo.not_found(request)
            return await show_task(request, record, status_code=409, error=exc.message)
        return _redirect(f"/admin/tasks/{new.id}")

    async def cancel(request: Request) -> Response:
        if await demo.form(request) is None:
            return demo.csrf_refused(request)
        task_id = request.path_params["task_id"]
        try:
            await app.cancel(task_id, owner=ANY_OWNER)
        except TaskNotFound:
            return demo.not_found(request)
        return _redirect(f"/admin/tasks/{task_id}")

    def admins_only(handler: Endpoint, *methods: str) -> Endpoint:
        """Anyone but an administrator gets the 404 page, whatever the method (a 405
        would tell that the path exists)."""
        allowed = frozenset(methods) | ({"HEAD"} if "GET" in methods else set())

        async def endpoint(request: Request) -> Response:
            if await admin_user(request) is None:
                return demo.not_found(request)
            if request.method not in allowed:
                return Response(status_code=405, headers={"Allow": ", ".join(sorted(allowed))})
            return await handler(request)

        return endpoint

    every = ["GET", "POST"]
    pages.add_route("/admin", admins_only(admin_home, "GET"), methods=every)
    pages.add_route("/admin/tasks/{task_id}", admins_only(admin_task, "GET"), methods=every)
    pages.add_route("/admin/tasks/{task_id}/retry", admins_only(retry, "POST"), methods=every)
    pages.add_route("/admin/tasks/{task_id}/cancel", admins_only(cancel, "POST"), methods=every)


def _redirect(url: str) -> Response:
    return RedirectResponse(url, status_code=303)


# -- formatting ---------------------------------------------------------------------------
def to_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def fmt_time(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


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


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _fill(color: str) -> str:
    """The attribute, and the same as an inline style: a page's stylesheet that paints
    every ``rect`` one colour must not repaint the series (a style beats its rules)."""
    return f'fill="{color}" style="fill:{color}"'


def _stroke(color: str) -> str:
    return f'fill="none" stroke="{color}" style="fill:none;stroke:{color}"'


def _n(value: float) -> str:
    """A coordinate: short, and the same on every platform."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


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
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    bottom = TOP + plot_h
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{_e(title)}" '
        f'font-family="{_e(FONT)}" font-size="11" style="max-width:100%;height:auto">',
        f"<title>{_e(title)}</title>",
        '<g class="grid">',
    ]
    top_value = ticks[-1] or 1.0
    for value in ticks:
        y = bottom - value / top_value * plot_h
        out.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_n(y)}" y2="{_n(y)}" '
            f'stroke="{GRID_COLOR}" stroke-width="1"/>'
        )
        out.append(
            f'<text class="tick" x="{LEFT - 6}" y="{_n(y + 3.5)}" text-anchor="end" '
            f'fill="{TEXT_COLOR}">{_e(label(value))}</text>'
        )
    out.append("</g>")
    # The time axis: a label every k slots, on round times.
    n = max(1, len(buckets))
    slot = plot_w / n
    seconds = _slot_seconds(buckets)
    every = next((k for k in (1, 2, 5, 10, 15, 20, 30, 60, 120, 240) if n / k <= 7), n)
    out.append(
        f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{bottom}" y2="{bottom}" '
        f'stroke="{AXIS_COLOR}" stroke-width="1"/>'
    )
    for i, bucket in enumerate(buckets):
        if int(bucket.start.timestamp() // seconds) % every:
            continue
        x = LEFT + (i + 0.5) * slot
        out.append(
            f'<line x1="{_n(x)}" x2="{_n(x)}" y1="{bottom}" y2="{bottom + 4}" '
            f'stroke="{AXIS_COLOR}" stroke-width="1"/>'
        )
        out.append(
            f'<text class="tick" x="{_n(x)}" y="{bottom + 15}" text-anchor="middle" '
            f'fill="{TEXT_COLOR}">{_e(f"{bucket.start.astimezone(UTC):%H:%M}")}</text>'
        )
    per = "minute" if seconds == 60 else f"{seconds:g} s"
    out.append(
        f'<text class="axis-title" x="{LEFT + plot_w / 2:.0f}" y="{HEIGHT - 6}" '
        f'text-anchor="middle" fill="{TEXT_COLOR}">time (UTC), per {_e(per)}</text>'
    )
    out.append(
        f'<text class="axis-title" x="12" y="{TOP + plot_h / 2:.0f}" text-anchor="middle" '
        f'fill="{TEXT_COLOR}" transform="rotate(-90 12 {TOP + plot_h / 2:.0f})">'
        f"{_e(y_title)}</text>"
    )
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


def _empty_note(out: list[str], text: str) -> None:
    plot_h = HEIGHT - TOP - BOTTOM
    out.append(
        f'<text class="chart-empty" x="{LEFT + (WIDTH - LEFT - RIGHT) / 2:.0f}" '
        f'y="{TOP + plot_h / 2:.0f}" text-anchor="middle" fill="{AXIS_COLOR}" '
        f'font-size="13">{_e(text)}</text>'
    )


def throughput_svg(buckets: Sequence[Bucket]) -> str:
    """Stacked bars of tasks finished per bucket — succeeded, failed, cancelled — with a
    ``<title>`` on every bar."""
    peak = max((b.finished for b in buckets), default=0)
    ticks = _ticks(peak, integer=True)
    legend = [(status, f"bar-{status}", color, False) for status, color in BAR_COLORS.items()]
    out = _frame(
        "Tasks finished per minute, last hour",
        buckets,
        ticks,
        lambda v: f"{v:g}",
        "tasks finished",
        legend,
    )
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    bottom = TOP + plot_h
    slot = plot_w / max(1, len(buckets))
    width = max(1.0, slot * 0.76)
    seconds = _slot_seconds(buckets)
    out.append('<g class="bars">')
    for i, bucket in enumerate(buckets):
        if not bucket.finished:
            continue
        x = LEFT + i * slot + (slot - width) / 2
        y = float(bottom)
        when = _span(bucket, seconds)
        out.append(f"<g><title>{_e(f'{when}: {bucket.finished} finished')}</title>")
        for status, color in BAR_COLORS.items():
            count: int = getattr(bucket, status)
            if not count:
                continue
            h = count / ticks[-1] * plot_h
            y -= h
            out.append(
                f'<rect class="bar bar-{status} {status}" x="{_n(x)}" y="{_n(y)}" '
                f'width="{_n(width)}" height="{_n(h)}" {_fill(color)}>'
                f"<title>{_e(f'{when}: {count} {status}')}"
                "</title></rect>"
            )
        out.append("</g>")
    out.append("</g>")
    if not peak:
        _empty_note(out, "No task finished in the last hour")
    out.append("</svg>")
    return "\n".join(out)


def latency_svg(buckets: Sequence[Bucket]) -> str:
    """Lines of run time (p50, p95) and wait time (p50) per bucket; a point, with its
    ``<title>``, for every bucket that has a value (lines break over empty buckets)."""
    values = [
        v
        for b in buckets
        for _, _, attr, _, _ in LINE_SERIES
        if (v := getattr(b, attr)) is not None
    ]
    peak = max(values, default=0.0)
    ticks = _ticks(peak, integer=False)
    legend = [(text, cls, color, True) for text, cls, _, color, _ in LINE_SERIES]
    out = _frame(
        "Run and wait time per minute, last hour", buckets, ticks, fmt_seconds, "duration", legend
    )
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    bottom = TOP + plot_h
    slot = plot_w / max(1, len(buckets))
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
            y = bottom - value / top_value * plot_h
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
    if not values:
        _empty_note(out, "No task finished in the last hour")
    out.append("</svg>")
    return "\n".join(out)
