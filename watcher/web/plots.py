"""A tag's history as numbers per publication, and its plots (SVG written here, on the server).

``tag_series`` is pure: given the publications and the tag's versions (each
with its prefixes), the prefix count and address space per family at every
publication. IPv6 space is counted in /64 networks (whole addresses would dwarf
everything). ``plot_svg`` is pure too: a line chart as a standalone SVG document
written as text (axes, ticks, labels, one line and, while they stay apart, one
dot per publication for each family, a legend, an accessible title and
description). It carries no script and loads nothing (its style is inline), so
the page works offline and under the plot's Content-Security-Policy
(``default-src 'none'; style-src 'unsafe-inline'``). pygal drew these until
2026-12: ~13 ms per 260-week plot in a new process, against well under 1 ms here.
"""
from __future__ import annotations

import bisect
import datetime as dt
import math
from dataclasses import dataclass
from typing import Callable, Sequence
from xml.sax.saxutils import escape

from ..address_space import family_sizes  # noqa: F401  (the pages and their tests count with it)

PLOT_KINDS = ("prefixes", "space")
#: Over this many publications a plot is its lines alone: its dots would be under 12 px apart on the 900 px
#: chart, one smear along the line. The versions table beside it lists every change.
MAX_POINTS_WITH_DOTS = 60
WIDTH, HEIGHT = 900, 360
COLOURS = ("#1f6fb2", "#d9822b")
#: The dots of the "changed" series (past ``MAX_POINTS_WITH_DOTS`` publications).
CHANGED = "#2b8a3e"
#: The plot area inside the 900 x 360 picture: room for the title above, the y labels on both sides, the dates
#: (turned 30°) and the legend below.
LEFT, RIGHT, TOP, BOTTOM = 96, WIDTH - 96, 44, HEIGHT - 92
#: Dates written under the x axis at most (all of them up to 20 publications).
MAX_X_LABELS = 12
Y_TICKS = 6
STYLE = ("text{font-family:sans-serif;fill:#333}.title{font-size:16px}.tick{font-size:11px}"
         ".legend{font-size:13px}.axis{stroke:#333;stroke-width:1}.guide{stroke:#ccc;stroke-width:1;"
         "stroke-dasharray:4 3}.line{fill:none;stroke-width:1.5;stroke-linejoin:round}")


@dataclass(frozen=True)
class VersionPoint:
    """A version of the tag: from ``since`` on, prefixes of these ``family_sizes`` (zeros when withdrawn)."""

    since: dt.date
    sizes: tuple[int, int, int, int]
    added: int
    removed: int


@dataclass(frozen=True)
class SeriesPoint:
    date: dt.date
    v4_prefixes: int
    v6_prefixes: int
    v4_addresses: int
    v6_networks_64: int
    changed: bool          # a new version starts at this publication

    def to_json(self) -> dict[str, object]:
        return {"date": self.date.isoformat(), "v4_prefixes": self.v4_prefixes, "v6_prefixes": self.v6_prefixes,
                "v4_addresses": self.v4_addresses, "v6_networks_64": self.v6_networks_64, "changed": self.changed}


def tag_series(publication_dates: Sequence[dt.date], versions: Sequence[VersionPoint]) -> list[SeriesPoint]:
    """One point per publication: the version in force on its date (nothing before the tag's first version)."""
    ordered = sorted(versions, key=lambda v: v.since)
    starts = [v.since for v in ordered]
    points = []
    for day in sorted(publication_dates):
        at = bisect.bisect_right(starts, day) - 1  # the last version that started on or before the day
        current = ordered[at] if at >= 0 else None
        numbers = current.sizes if current else (0, 0, 0, 0)
        points.append(SeriesPoint(day, *numbers, changed=current is not None and current.since == day))
    return points


def nice_ticks(low: float, high: float, count: int = Y_TICKS) -> list[float]:
    """About ``count`` round values (steps of 1, 2, 2.5 or 5 times a power of ten, at least 1) from at or below
    ``low`` to at or above ``high``; a flat series gets a span around its value (not below zero if it is not)."""
    low, high = min(low, high), max(low, high)
    # Flat, or apart by less than a float tells from the values (IPv6 space: 2**64 /64 networks and up).
    if high - low <= abs(high) * 1e-9:
        pad = max(abs(high) * 0.05, 1.0)
        low, high = (max(0.0, low - pad) if low >= 0 else low - pad), high + pad
    raw = (high - low) / max(1, count - 1)
    power = 10.0 ** math.floor(math.log10(raw))
    # Counts are whole numbers: no step below one.
    step = max(1.0, next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw * (1 - 1e-9)))
    first = math.floor(low / step + 1e-9) * step
    ticks = [first]
    while ticks[-1] < high - step * 1e-9:
        ticks.append(first + len(ticks) * step)
    return ticks


def tick_labels(ticks: Sequence[float]) -> list[str]:
    """An axis's ticks as people read them, in one unit for the axis: 18,200 below a million, else M, G or T
    with as many decimals as the step needs (1.09955 T)."""
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    top = max(abs(t) for t in ticks)
    scale, unit = next(((s, u) for s, u in ((1e12, " T"), (1e9, " G"), (1e6, " M")) if top >= s), (1.0, ""))
    scaled = step / scale
    decimals = next(d for d in range(7) if d == 6 or abs(round(scaled, d) - scaled) <= scaled * 1e-6)
    return [f"{t / scale:,.{decimals}f}{unit}" for t in ticks]


def _x_positions(count: int) -> list[float]:
    if count == 1:
        return [(LEFT + RIGHT) / 2]
    span = (RIGHT - LEFT) / (count - 1)
    return [LEFT + i * span for i in range(count)]


def _x_label_indexes(count: int) -> list[int]:
    """Which publications get their date under the axis: all up to 20, else ``MAX_X_LABELS`` spread evenly."""
    if count <= 20:
        return list(range(count))
    return sorted({round(i * (count - 1) / (MAX_X_LABELS - 1)) for i in range(MAX_X_LABELS)})


def _axis(values: Sequence[int]) -> tuple[list[float], Callable[[float], float]]:
    """The ticks of an axis for ``values`` and the function placing a value on it (its y in the picture)."""
    ticks = nice_ticks(min(values, default=0), max(values, default=0))
    span = ticks[-1] - ticks[0]
    low, ratio = ticks[0], (BOTTOM - TOP) / span if span > 0 else 0.0
    return ticks, lambda v: BOTTOM - (v - low) * ratio


def plot_svg(tag: str, points: Sequence[SeriesPoint], kind: str) -> str:
    """The plot of ``kind`` (prefixes or space) as a standalone SVG document: a line per family, a dot per
    publication, larger where the tag changed (past ``MAX_POINTS_WITH_DOTS`` points, lines without dots and a
    series "changed" of dots at the changes alone, or, past as many changes, their count in the title).
    IPv6 space gets an axis of its own, on the right (its units dwarf IPv4's), when both families have some."""
    if kind not in PLOT_KINDS:
        raise ValueError(f"unknown plot {kind!r} (known: {', '.join(PLOT_KINDS)})")
    title = f"{tag}: prefixes per family" if kind == "prefixes" else f"{tag}: address space per family"
    families = (("IPv4 prefixes", "v4_prefixes"), ("IPv6 prefixes", "v6_prefixes")) if kind == "prefixes" \
        else (("IPv4 addresses", "v4_addresses"), ("IPv6 /64 networks", "v6_networks_64"))
    values = [[getattr(p, field) for p in points] for _label, field in families]
    secondary = kind == "space" and all(any(v) for v in values)  # the second family on the right-hand axis
    dots = len(points) <= MAX_POINTS_WITH_DOTS
    changes = sum(p.changed for p in points)
    mark_changes = not dots and changes <= MAX_POINTS_WITH_DOTS
    if not dots and not mark_changes:  # a tag that changes nearly every week: dots would smear as well; say it
        title = f"{title} ({changes} of {len(points)} publications changed it)"
    xs = _x_positions(len(points))
    if secondary:
        (left_ticks, left_y), (right_ticks, right_y) = _axis(values[0]), _axis(values[1])
    else:
        (left_ticks, left_y), right_ticks = _axis(values[0] + values[1]), []
        right_y = left_y

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
           f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="plot-title plot-desc">'
           f'<title id="plot-title">{escape(title)}</title>'
           f'<desc id="plot-desc">{escape(_description(points, families, values, changes))}</desc>'
           f'<style>{STYLE}</style><rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>'
           f'<text class="title" x="{WIDTH // 2}" y="24" text-anchor="middle">{escape(title)}</text><g class="axes">']
    for tick, label in zip(left_ticks, tick_labels(left_ticks)):
        y = left_y(tick)
        out.append(f'<line class="guide" x1="{LEFT}" x2="{RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
                   f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
    for tick, label in zip(right_ticks, tick_labels(right_ticks) if right_ticks else []):
        y = right_y(tick)
        out.append(f'<line class="axis" x1="{RIGHT}" x2="{RIGHT + 4}" y1="{y:.1f}" y2="{y:.1f}"/>'
                   f'<text class="tick" x="{RIGHT + 7}" y="{y + 4:.1f}" fill="{COLOURS[1]}">{label}</text>')
    if right_ticks:
        out.append(f'<line class="axis" x1="{RIGHT}" x2="{RIGHT}" y1="{TOP}" y2="{BOTTOM}"/>')
    out.append(f'<line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{BOTTOM}"/>'
               f'<line class="axis" x1="{LEFT}" x2="{RIGHT}" y1="{BOTTOM}" y2="{BOTTOM}"/>')
    for i in _x_label_indexes(len(points)):
        x, y = xs[i], BOTTOM + 16
        out.append(f'<line class="axis" x1="{x:.1f}" x2="{x:.1f}" y1="{BOTTOM}" y2="{BOTTOM + 4}"/>'
                   f'<text class="tick" x="{x:.1f}" y="{y}" transform="rotate(30 {x:.1f} {y})">'
                   f"{points[i].date.isoformat()}</text>")
    out.append("</g>")
    for index, ((label, _field), series, y_of) in enumerate(zip(families, values, (left_y, right_y))):
        colour, placed = COLOURS[index], [(f"{x:.1f}", f"{y_of(v):.1f}") for x, v in zip(xs, series)]
        out.append(f'<g class="series serie-{index}" aria-label="{escape(label)}">'
                   f'<polyline class="line" stroke="{colour}" points="{" ".join(f"{x},{y}" for x, y in placed)}"/>')
        if dots:
            out.extend(f'<circle class="dot{" changed" if p.changed else ""}" cx="{x}" cy="{y}" '
                       f'r="{6 if p.changed else 3}" fill="{colour}"/>' for p, (x, y) in zip(points, placed))
        out.append("</g>")
    legend = [(label + (" (right axis)" if secondary and index == 1 else ""), COLOURS[index])
              for index, (label, _field) in enumerate(families)]
    if mark_changes:
        # The changes stay marked: one series of dots alone, on the first family's line, at the publications
        # that started a version (the unchanged weeks draw nothing).
        out.append('<g class="series serie-2" aria-label="changed">')
        out.extend(f'<circle class="dot changed" cx="{x:.1f}" cy="{left_y(v):.1f}" r="4" fill="{CHANGED}"/>'
                   for x, v, p in zip(xs, values[0], points) if p.changed)
        out.append("</g>")
        legend.append(("changed", CHANGED))
    out.append('<g class="legend">')
    for index, (label, colour) in enumerate(legend):
        x = LEFT + index * 260
        out.append(f'<rect x="{x}" y="{HEIGHT - 22}" width="12" height="12" fill="{colour}"/>'
                   f'<text class="legend" x="{x + 18}" y="{HEIGHT - 12}">{escape(label)}</text>')
    out.append("</g></svg>\n")
    return "".join(out)


def _description(points: Sequence[SeriesPoint], families: tuple[tuple[str, str], ...], values: list[list[int]],
                 changes: int) -> str:
    """What the plot shows, in words (for a screen reader, and for the record)."""
    if not points:
        return "No publications."
    ranges = "; ".join(f"{label} from {series[0]:,} to {series[-1]:,}"
                       for (label, _field), series in zip(families, values))
    return (f"{len(points)} publications from {points[0].date.isoformat()} to {points[-1].date.isoformat()}, "
            f"{changes} of them changed the tag; {ranges}.")
