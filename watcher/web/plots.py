"""A tag's history as numbers per publication, and its plots.

``tag_series`` is pure: given the publications and the tag's versions (each
with its prefixes), the prefix count and address space per family at every
publication. IPv6 space is counted in /64 networks (whole addresses would dwarf
everything).

The page carries the series as numbers (``plot_data``), which the browser draws
with uPlot (vendored under ``static/vendor``, see ``static/tagplot.js``); a
browser without JavaScript gets the same plots drawn here by pygal as SVG
(``plot_svg``). The SVG carries no script and no link out (pygal's tooltip
script comes from a CDN by default: switched off), so the page works offline.
"""
from __future__ import annotations

import datetime as dt
from operator import attrgetter
from typing import NamedTuple, Sequence

import jinja2
import pygal
from markupsafe import Markup
from pygal.style import Style

from ..address_space import family_sizes  # noqa: F401  (the pages and their tests count with it)

PLOT_KINDS = ("prefixes", "space")
PLOT_FIELDS = ("v4_prefixes", "v6_prefixes", "v4_addresses", "v6_networks_64")
#: Over this many publications a plot is its lines alone: its dots would be under 12 px apart on the 900 px
#: chart, one smear along the line, and each costs pygal ~0.3 ms to draw (a 260-week plot's 520 dots were
#: three quarters of its ~75 ms). The versions table beside it lists every change.
MAX_POINTS_WITH_DOTS = 60
STYLE = Style(background="white", plot_background="white", colors=("#1f6fb2", "#d9822b"),
              font_family="sans-serif")


# Named tuples, not frozen dataclasses: a five-year tag page makes ~500 of them at its first view, and a frozen
# dataclass sets each field through object.__setattr__ (with the walk in ``tag_series`` instead of a bisect per
# publication: 0.28 -> 0.10 ms of a served first view for 260 publications).
class VersionPoint(NamedTuple):
    """A version of the tag: from ``since`` on, prefixes of these ``family_sizes`` (zeros when withdrawn)."""

    since: dt.date
    sizes: tuple[int, int, int, int]
    added: int
    removed: int


class SeriesPoint(NamedTuple):
    date: dt.date
    v4_prefixes: int
    v6_prefixes: int
    v4_addresses: int
    v6_networks_64: int
    changed: bool          # a new version starts at this publication

    def to_json(self) -> dict[str, object]:
        return {"date": self.date.isoformat(), "v4_prefixes": self.v4_prefixes, "v6_prefixes": self.v6_prefixes,
                "v4_addresses": self.v4_addresses, "v6_networks_64": self.v6_networks_64, "changed": self.changed}


_NOTHING = (0, 0, 0, 0)


def tag_series(publication_dates: Sequence[dt.date], versions: Sequence[VersionPoint]) -> list[SeriesPoint]:
    """One point per publication: the version in force on its date (nothing before the tag's first version).
    Both in date order, walked together."""
    ordered = sorted(versions, key=attrgetter("since"))
    points = []
    at, current = -1, None
    for day in sorted(publication_dates):
        while at + 1 < len(ordered) and ordered[at + 1].since <= day:  # the last version started on or before it
            at += 1
            current = ordered[at]
        if current is None:
            points.append(SeriesPoint(day, *_NOTHING, False))
        else:
            points.append(SeriesPoint(day, *current.sizes, current.since == day))
    return points


def plot_data(tag: str, points: Sequence[SeriesPoint]) -> dict[str, object]:
    """The series as the page's plots read it (``static/tagplot.js``): a column per number, one entry per
    publication, and the indices of the publications that started a version."""
    return {"tag": tag, "dates": [p.date.isoformat() for p in points],
            **{field: [getattr(p, field) for p in points] for field in PLOT_FIELDS},
            "changed": [i for i, p in enumerate(points) if p.changed]}


def plot_data_markup(tag: str, points: Sequence[SeriesPoint]) -> Markup:
    """``plot_data`` as JSON for a ``<script type="application/json">``: ``<``, ``>``, ``&`` and ``'`` written as
    ``\\u`` escapes, so no text in it (a tag's name comes from the downloaded file) can end the element."""
    return Markup(jinja2.utils.htmlsafe_json_dumps(plot_data(tag, points)))


def plot_svg(tag: str, points: Sequence[SeriesPoint], kind: str) -> str:
    """The plot of ``kind`` (prefixes or space) as a standalone SVG document; changes are the larger dots (past
    ``MAX_POINTS_WITH_DOTS`` points, lines without dots and a series of dots at the changes alone, or, past as
    many changes, their count in the title)."""
    if kind not in PLOT_KINDS:
        raise ValueError(f"unknown plot {kind!r} (known: {', '.join(PLOT_KINDS)})")
    title = f"{tag}: prefixes per family" if kind == "prefixes" else f"{tag}: address space per family"
    chart = pygal.Line(js=[], css=["file://style.css", "file://graph.css"], style=STYLE, width=900, height=360,
                       title=title, x_label_rotation=30, show_minor_x_labels=len(points) <= 20,
                       x_labels_major_count=12, truncate_label=12, legend_at_bottom=True,
                       explicit_size=True, dots_size=3, show_x_guides=False,
                       show_dots=len(points) <= MAX_POINTS_WITH_DOTS)
    chart.x_labels = [p.date.isoformat() for p in points]
    first, second = (("IPv4 prefixes", "v4_prefixes"), ("IPv6 prefixes", "v6_prefixes")) if kind == "prefixes" \
        else (("IPv4 addresses", "v4_addresses"), ("IPv6 /64 networks", "v6_networks_64"))
    # IPv6 space gets its own axis (its units dwarf IPv4's), but only when both families have some.
    both = all(any(getattr(p, field) for p in points) for _label, field in (first, second))
    dots = len(points) <= MAX_POINTS_WITH_DOTS
    for label, field in (first, second):
        # Without dots, plain numbers: pygal reads each value's dict (node size, label) for nothing otherwise.
        values = [{"value": getattr(p, field), "node": {"r": 6 if p.changed else 3},
                   "label": "changed" if p.changed else ""} for p in points] if dots \
            else [getattr(p, field) for p in points]
        chart.add(label, values, secondary=kind == "space" and both and field == "v6_networks_64")
    changes = sum(p.changed for p in points)
    if not dots and changes <= MAX_POINTS_WITH_DOTS:
        # The changes stay marked: one series of dots alone, on the first family's line, at the publications
        # that started a version (the unchanged weeks draw nothing).
        chart.add("changed", [getattr(p, first[1]) if p.changed else None for p in points], show_dots=True,
                  stroke=False, dots_size=4)
    elif not dots:  # a tag that changes nearly every week: dots at the changes would smear as well; say it
        chart.title = f"{title} ({changes} of {len(points)} publications changed it)"
    return chart.render(is_unicode=True)
