"""The capacity calendar of the admin console: reservable hosts x time.

Reads only. A window (a day, a week or 30 days from a UTC midnight) costs
the same few queries whatever the number of leases: the hosts, the
allocations with their leases, the markers, and free capacity and free
hosts through the selectors the allocator itself uses, so "free" here means
what a new lease would be granted (cleaning buffer included).
"""

import zlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from uuid import UUID

from django.urls import reverse
from django.utils import timezone

from config.errors import Invalid
from networking import selectors as net_selectors
from reservations import allocation, properties, selectors
from reservations.models import (
    EventType,
    HostAllocation,
    LeaseEvent,
    LeaseStatus,
    ReservableHost,
)
from reservations.placement import FAULTY_PREFIX

ZOOMS = {"day": timedelta(days=1), "week": timedelta(days=7), "month": timedelta(days=30)}
# Start and end are the bars' own edges; only these events need a marker.
MARKERS = {EventType.HEADS_UP: "heads-up", EventType.BEFORE_END: "before-end"}
# No grey: grey means an ended lease.
PALETTE = [
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#499894",
]


def project_color(project_id: UUID | str) -> str:
    # crc32 rather than hash(): str hashes change from one process to the next.
    return PALETTE[zlib.crc32(str(project_id).encode()) % len(PALETTE)]


def lease_url(lease_id: UUID | str) -> str:
    return reverse("admin:reservations_lease_change", args=[lease_id])


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    zoom: str

    @property
    def day(self) -> date:
        return self.start.date()


@dataclass(frozen=True)
class Bar:
    lease_id: UUID
    lease_name: str
    project_id: UUID
    project: str
    host: str
    start: datetime
    end: datetime
    status: str
    # The host that took over the rest of this hold (a swap: the host went
    # down, was disabled or was reported faulty), or None.
    replaced_by: str | None = None

    @property
    def color(self) -> str:
        return project_color(self.project_id)


@dataclass(frozen=True)
class Marker:
    lease_id: UUID
    kind: str
    at: datetime
    host: str


@dataclass(frozen=True)
class Calendar:
    window: Window
    hosts: list[dict]
    bars: list[Bar]
    free: list[tuple[datetime, int]]
    markers: list[Marker]
    free_hosts: list[str]
    # Per segment, the addresses leases hold during the window.
    addresses: list[dict]


def calendar_window(
    *, start: str | None = None, zoom: str | None = None, today: date | None = None
) -> Window:
    """The window the parameters name (Invalid if they name none): from
    midnight UTC of ``start`` (default today) for one zoom step."""
    zoom = zoom or "week"
    if zoom not in ZOOMS:
        raise Invalid(f"zoom must be one of {', '.join(ZOOMS)}, not {zoom!r}.")
    if start:
        try:
            day = datetime.strptime(start, "%Y-%m-%d").date()
        except ValueError:
            raise Invalid(f"start must be a date as YYYY-MM-DD, not {start!r}.") from None
    else:
        day = today or timezone.now().date()
    begin = datetime.combine(day, time.min, tzinfo=UTC)
    try:
        return Window(begin, begin + ZOOMS[zoom], zoom)
    except OverflowError:
        raise Invalid(f"start {start!r} is too late for a {zoom}.") from None


def window_shifted(*, window: Window, steps: int) -> Window | None:
    """The window ``steps`` zoom steps later (earlier if negative), or None
    past the calendar's ends."""
    try:
        start = window.start + steps * ZOOMS[window.zoom]
        return Window(start, start + ZOOMS[window.zoom], window.zoom)
    except OverflowError:
        return None


def calendar_data(*, window: Window, query: str = "") -> Calendar:
    """Hosts matching ``query`` (the resource property language) and what
    holds them during the window; Invalid for a malformed query."""
    where = properties.resource_filter(properties.parse(query, field="query"))
    hosts = list(
        ReservableHost.objects.filter(where)
        .order_by("host__name")
        .values("id", "host_id", "host__name", "host__enabled", "host__disabled_reason")
    )
    host_ids = [h["host_id"] for h in hosts]
    allocations = (
        HostAllocation.objects.filter(
            host_id__in=host_ids, start_at__lt=window.end, end_at__gt=window.start
        )
        .order_by("host__name", "start_at")
        .values_list(
            "reservation__lease_id",
            "reservation__lease__name",
            "reservation__lease__project_id",
            "reservation__lease__project__name",
            "host__name",
            "start_at",
            "end_at",
            "reservation__lease__status",
            "replaced_by__host__name",
        )
    )
    # A heads-up may fall in the window while its lease starts after it: the
    # marker goes on the rows of the hosts the lease will hold.
    events = (
        LeaseEvent.objects.filter(
            event_type__in=MARKERS,
            time__gte=window.start,
            time__lt=window.end,
            lease__reservations__allocations__host_id__in=host_ids,
        )
        .values_list(
            "lease_id", "event_type", "time", "lease__reservations__allocations__host__name"
        )
        .order_by("time", "lease_id", "lease__reservations__allocations__host__name")
        .distinct()
    )
    free = selectors.free_capacity(
        start=window.start,
        end=window.end,
        resource_properties=query or "",
        hypervisor_properties="",
    )
    free_hosts = allocation.host_candidates(start=window.start, end=window.end, where=where)
    return Calendar(
        window=window,
        hosts=[
            {
                "id": h["id"],
                "name": h["host__name"],
                "enabled": h["host__enabled"],
                "disabled_reason": h["host__disabled_reason"],
                # A member's report (reservations.placement) disables it so.
                "faulty": h["host__disabled_reason"].startswith(FAULTY_PREFIX),
            }
            for h in hosts
        ],
        bars=[Bar(*row) for row in allocations],
        free=free,
        markers=[Marker(lease, MARKERS[kind], at, host) for lease, kind, at, host in events],
        free_hosts=list(free_hosts.values_list("host__name", flat=True)),
        addresses=[
            {"segment_id": str(segment_id), **row}
            for segment_id, row in net_selectors.holds_per_segment(
                start=window.start, end=window.end
            ).items()
        ],
    )


def calendar_json(*, calendar: Calendar) -> dict:
    window = calendar.window
    return {
        "start": window.start.isoformat(),
        "end": window.end.isoformat(),
        "zoom": window.zoom,
        "hosts": [{**h, "id": str(h["id"])} for h in calendar.hosts],
        "bars": [
            {
                "lease_id": str(b.lease_id),
                "lease_name": b.lease_name,
                "project": b.project,
                "project_id": str(b.project_id),
                "host": b.host,
                "start": b.start.isoformat(),
                "end": b.end.isoformat(),
                "status": b.status,
                "color": b.color,
                "replaced_by": b.replaced_by,
                "url": lease_url(b.lease_id),
            }
            for b in calendar.bars
        ],
        "free": [{"at": at.isoformat(), "free": free} for at, free in calendar.free],
        "markers": [
            {"lease_id": str(m.lease_id), "kind": m.kind, "at": m.at.isoformat(), "host": m.host}
            for m in calendar.markers
        ],
        "free_hosts": calendar.free_hosts,
        "addresses": calendar.addresses,
    }


# --- drawing ------------------------------------------------------------------------

LABEL_WIDTH = 150
PLOT_WIDTH = 960
AXIS_HEIGHT = 34
FREE_HEIGHT = 60
ROW_HEIGHT = 22
GAP = 8


def _when(moment: datetime) -> str:
    return f"{moment:%a %d %b %Y %H:%M}"


def _fit(text: str, width: float) -> str:
    """As much of the text as fits in a bar of that width (about 6 px a
    character at the chart's font size)."""
    room = int(width // 6) - 1
    if room < 3:
        return ""
    return text if len(text) <= room else text[: room - 1] + "…"


def _ticks(window: Window) -> list[dict]:
    """Hours for a day, days otherwise; days link to that day's own view."""
    if window.zoom == "day":
        return [
            {"at": window.start + timedelta(hours=h), "label": f"{h:02d}:00" if h % 3 == 0 else ""}
            for h in range(24)
        ]
    days = ZOOMS[window.zoom].days
    ticks = []
    for n in range(days):
        day = window.day + timedelta(days=n)
        label = f"{day:%a %d %b}" if window.zoom == "week" else str(day.day)
        ticks.append(
            {
                "at": window.start + timedelta(days=n),
                "label": label,
                "sublabel": f"{day:%a}"[:2] if window.zoom == "month" else "",
                "day": day.isoformat(),
                "weekend": day.weekday() >= 5,
            }
        )
    return ticks


def calendar_chart(*, calendar: Calendar, now: datetime) -> dict:
    """Coordinates for the SVG template: one row per host under a step line
    of free hosts, the time axis across."""
    window = calendar.window
    span = (window.end - window.start).total_seconds()

    def x(moment: datetime) -> float:
        moment = min(max(moment, window.start), window.end)
        return round(LABEL_WIDTH + (moment - window.start).total_seconds() / span * PLOT_WIDTH, 1)

    free_top = AXIS_HEIGHT
    free_bottom = free_top + FREE_HEIGHT
    enabled = sum(1 for h in calendar.hosts if h["enabled"])

    def y(free: int) -> float:
        return round(free_bottom - free / max(enabled, 1) * FREE_HEIGHT, 1)

    first, *rest = calendar.free
    path = [f"M {x(first[0])} {y(first[1])}"]
    path += [f"H {x(at)} V {y(free)}" for at, free in rest]
    path.append(f"H {x(window.end)}")

    rows_top = free_bottom + GAP
    row_of = {h["name"]: rows_top + n * ROW_HEIGHT for n, h in enumerate(calendar.hosts)}
    bars = []
    for bar in calendar.bars:
        left = x(bar.start)
        width = max(round(x(bar.end) - left, 1), 1)
        bars.append(
            {
                "bar": bar,
                "x": left,
                "y": row_of[bar.host] + 3,
                "width": width,
                "height": ROW_HEIGHT - 6,
                "url": lease_url(bar.lease_id),
                "label": _fit(bar.lease_name, width),
                # White text reads on the solid colours only.
                "light": bar.status not in (LeaseStatus.ACTIVE, LeaseStatus.ERROR),
                "title": f"{bar.lease_name}, project {bar.project}\n"
                f"{_when(bar.start)} to {_when(bar.end)} UTC\n{bar.status}"
                + (f"\nswapped to {bar.replaced_by}" if bar.replaced_by else ""),
            }
        )
    markers = [
        {
            "marker": m,
            "x": x(m.at),
            "y1": row_of[m.host],
            "y2": row_of[m.host] + ROW_HEIGHT,
            "title": f"{m.kind} of {m.lease_id} at {_when(m.at)} UTC",
        }
        for m in calendar.markers
    ]
    ticks = [{**t, "x": x(t["at"])} for t in _ticks(window)]
    step = PLOT_WIDTH / len(ticks)
    rows_bottom = rows_top + len(calendar.hosts) * ROW_HEIGHT
    legend = {bar.project: bar.color for bar in calendar.bars}
    shifted = {n: window_shifted(window=window, steps=n) for n in (-1, 1)}
    return {
        "calendar": calendar,
        "width": LABEL_WIDTH + PLOT_WIDTH + 10,
        "height": rows_bottom + GAP,
        "axis_top": 0,
        "plot_left": LABEL_WIDTH,
        "plot_width": PLOT_WIDTH,
        "row_height": ROW_HEIGHT,
        "grid_height": rows_bottom - free_top,
        "free_top": free_top,
        "free_bottom": free_bottom,
        "free_height": FREE_HEIGHT,
        "free_enabled": enabled,
        "free_min": min(free for _, free in calendar.free),
        "free_path": " ".join(path),
        "rows_top": rows_top,
        "rows_bottom": rows_bottom,
        "rows": [
            {"y": row_of[h["name"]], "text_y": row_of[h["name"]] + ROW_HEIGHT - 7, **h}
            for h in calendar.hosts
        ],
        "ticks": ticks,
        "tick_width": round(step, 1),
        "bars": bars,
        "markers": markers,
        "now_x": x(now) if window.start <= now < window.end else None,
        "legend": sorted(legend.items()),
        "previous": shifted[-1].day.isoformat() if shifted[-1] else None,
        "next": shifted[1].day.isoformat() if shifted[1] else None,
    }
