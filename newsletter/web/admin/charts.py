"""Charts as inline SVG, drawn on the server: no JavaScript, no build step, no request of their own.

    bar_chart(title, description, series, rows)     horizontal bars, one group per row
    line_chart(title, description, series, labels, values)   a trend, one line per series

Each chart is `<svg role="img">` with a `<title>` and a `<desc>` that say in words what it shows (the
page puts the same figures in a table next to it: the text alternative screen readers and printouts
use). Colours come from CSS classes (`admin.css`), so the charts follow the light and dark themes, and
series also differ by pattern of dashes, never by colour alone. Every text is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape as _html_escape
from itertools import count

from markupsafe import Markup

from newsletter.content.feeds import xml_text

WIDTH = 640
LABEL_WIDTH = 190
BAR_HEIGHT = 14
ROW_GAP = 10
_ids = count(1)


def escape(text: str) -> str:
    """Text for SVG: escaped, without the characters XML cannot hold."""
    return _html_escape(xml_text(text))


def _percent(value: float | None) -> str:
    return "no data" if value is None else f"{100 * value:.1f}%"


def _frame(title: str, description: str, width: int, height: int, body: list[str]) -> Markup:
    n = next(_ids)
    return Markup(
        f'<svg class="chart" role="img" aria-labelledby="chart-t{n} chart-d{n}" viewBox="0 0 {width} {height}" '
        f'width="100%" preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="chart-t{n}">{escape(title)}</title><desc id="chart-d{n}">{escape(description)}</desc>'
        + "".join(body)
        + "</svg>"
    )


def _legend(series: Sequence[str], y: int) -> list[str]:
    parts = []
    for i, name in enumerate(series):
        x = LABEL_WIDTH + i * 150
        parts.append(f'<rect class="series-{i}" x="{x}" y="{y}" width="12" height="12"/>')
        parts.append(f'<text class="chart-text" x="{x + 18}" y="{y + 11}">{escape(name)}</text>')
    return parts


def bar_chart(
    title: str, description: str, series: Sequence[str], rows: Sequence[tuple[str, Sequence[float | None]]]
) -> Markup:
    """Rates (0..1) as horizontal bars: a group per row, a bar per series, labelled with the percentage."""
    span = WIDTH - LABEL_WIDTH - 70
    top = max((v for _, values in rows for v in values if v is not None), default=0.0) or 1.0
    group = len(series) * (BAR_HEIGHT + 2) + ROW_GAP
    body = _legend(series, 0)
    y = 24
    for label, values in rows:
        body.append(f'<text class="chart-text" x="0" y="{y + BAR_HEIGHT}">{escape(label[:28])}</text>')
        for i, value in enumerate(values):
            width = 0 if value is None else max(1, round(span * value / top))
            bar_y = y + i * (BAR_HEIGHT + 2)
            body.append(
                f'<rect class="series-{i}" x="{LABEL_WIDTH}" y="{bar_y}" width="{width}" height="{BAR_HEIGHT}"/>'
            )
            body.append(
                f'<text class="chart-value" x="{LABEL_WIDTH + width + 4}" y="{bar_y + BAR_HEIGHT - 3}">'
                f"{_percent(value)}</text>"
            )
        y += group
    return _frame(title, description, WIDTH, y + 4, body)


def line_chart(
    title: str,
    description: str,
    series: Sequence[str],
    labels: Sequence[str],
    values: Sequence[Sequence[float | None]],
) -> Markup:
    """Rates (0..1) over time: one line per series across `labels` (oldest first), points marked."""
    left, right, top_y, height = 48, WIDTH - 16, 28, 180
    top = max((v for line in values for v in line if v is not None), default=0.0) or 1.0
    step = (right - left) / max(1, len(labels) - 1)
    body = _legend(series, 0)
    for fraction in (0.0, 0.5, 1.0):
        y = top_y + height - round(height * fraction)
        body.append(f'<line class="chart-grid" x1="{left}" x2="{right}" y1="{y}" y2="{y}"/>')
        body.append(f'<text class="chart-value" x="0" y="{y + 4}">{_percent(top * fraction)}</text>')
    for i, line in enumerate(values):
        points = [
            (round(left + j * step), top_y + height - round(height * v / top))
            for j, v in enumerate(line)
            if v is not None
        ]
        if len(points) > 1:
            path = " ".join(f"{x},{y}" for x, y in points)
            body.append(f'<polyline class="line-{i}" fill="none" points="{path}"/>')
        body += [f'<circle class="series-{i}" cx="{x}" cy="{y}" r="3.5"/>' for x, y in points]
    for j, label in enumerate(labels):
        x = round(left + j * step)
        body.append(
            f'<text class="chart-text chart-axis" x="{x}" y="{top_y + height + 18}" text-anchor="middle">{escape(label[:10])}</text>'
        )
    return _frame(title, description, WIDTH, top_y + height + 28, body)
