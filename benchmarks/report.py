"""The printed table and the JSON document."""
from __future__ import annotations

from typing import Any, Iterable

from .common import Figure


def _number(value: float, unit: str) -> str:
    if unit == "ratio":
        return f"{value:.3f}" if value < 0.1 else f"{value:.2f}"
    if unit == "bytes":
        if abs(value) >= 1024 * 1024:
            return f"{value / 2**20:.1f} MiB"
        if abs(value) >= 1024:
            return f"{value / 1024:.1f} KiB"
        return f"{value:.0f} B"
    return f"{value:.3g}"


def _target(figure: Figure) -> str:
    if figure.target is None:
        return ""
    op = "<" if figure.strict else "≤"
    return f"{op} {_number(figure.target, figure.unit)}"


def table(figures: Iterable[Figure]) -> str:
    header = ("#", "figure", "backend", "median", "min–max", "n", "target", "result")
    rows = []
    for f in figures:
        if f.value is None:
            rows.append((f.id, f.title, f.backend, "—", "", "", _target(f), f.note or f.status))
            continue
        v = f.value
        spread = f"{_number(v.min, f.unit)}–{_number(v.max, f.unit)}" if v.n > 1 else ""
        rows.append((f.id, f.title, f.backend, _number(v.median, f.unit), spread, str(v.n), _target(f), f.status))
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    widths[1] = min(widths[1], 78)

    def line(cells) -> str:
        out = []
        for i, cell in enumerate(cells):
            text = str(cell)
            if i == 1 and len(text) > widths[1]:
                text = text[: widths[1] - 1] + "…"
            out.append(text.ljust(widths[i]) if i < len(cells) - 1 else text)
        return "  ".join(out).rstrip()

    lines = [line(header), line(["-" * w for w in widths])]
    lines.extend(line(r) for r in rows)
    notes = [f"  [{f.id} {f.backend}] {f.note}" for f in figures if f.note and f.value is not None]
    if notes:
        lines.append("")
        lines.append("notes:")
        lines.extend(notes)
    return "\n".join(lines)


def growth_table(growth: dict[str, list[dict[str, Any]]]) -> str:
    lines = []
    for backend, rows in growth.items():
        lines.append(f"growth on {backend} (medians over the repetitions):")
        lines.append(f"  {'file':<36} {'tags chg':>8} {'import ms':>10} {'÷ loads':>8} {'size':>10} {'added':>10}")
        for r in rows:
            changed = "" if r["changed_tags"] is None else str(r["changed_tags"])
            lines.append(
                f"  {r['file']:<36} {changed:>8} {r['import_seconds']['median'] * 1000:>10.0f} "
                f"{r['ratio_loads']['median']:>8.2f} {_number(r['size'], 'bytes'):>10} {_number(r['size_added'], 'bytes'):>10}"
            )
    return "\n".join(lines)
