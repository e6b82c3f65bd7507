"""The engagement report of one bulletin, for staff: figures, charts and the tables behind them.

    GET /admin/bulletins/{id}/report

The same figures as `newsletter report ID` (`newsletter.sending.report`), drawn as inline SVG charts
(`charts`) whose descriptions and neighbouring tables are their text alternatives. Totals only.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from markupsafe import Markup

from newsletter.core.errors import NotFound
from newsletter.sending.report import METRICS, Figures, Report, build_report
from newsletter.web.admin import charts
from newsletter.web.admin.pages import render
from newsletter.web.auth import StaffUser
from newsletter.web.deps import SessionDep, SettingsDep

router = APIRouter(prefix="/bulletins")

RATE_SERIES = ("Opened", "Clicked")


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _rates(figures: Figures) -> tuple[float | None, float | None]:
    return figures.rate("opened"), figures.rate("clicked")


def _said(rows: list[tuple[str, Figures]]) -> str:
    return "; ".join(
        f"{label}: opened {_pct(f.rate('opened'))}, clicked {_pct(f.rate('clicked'))}" for label, f in rows
    )


def _charts(report: Report) -> dict[str, Markup]:
    regions = [(name, f) for _, name, f in report.regions]
    trend = [(f"#{p.bulletin_id}", p.figures) for p in report.trend]
    found = {
        "regions": charts.bar_chart(
            "Open and click rates by region",
            "Share of delivered emails opened and clicked, per region. " + _said(regions) + ".",
            RATE_SERIES,
            [(label, _rates(f)) for label, f in regions],
        ),
        "trend": charts.line_chart(
            f"Open and click rates over the last {len(trend)} bulletins",
            "Oldest first. " + _said(trend) + ".",
            RATE_SERIES,
            [label for label, _ in trend],
            [[f.rate("opened") for _, f in trend], [f.rate("clicked") for _, f in trend]],
        ),
    }
    if report.links:
        top = max(link.clickers for link in report.links) or 1
        found["links"] = charts.bar_chart(
            "Recipients who clicked each link",
            "; ".join(
                f"{link.url}: {link.clickers} recipients, {link.clicks} clicks" for link in report.links
            )
            + ".",
            ("Recipients who clicked (share of the top link)",),
            [
                (f"{link.region} #{link.item}" if link.region else link.url, (link.clickers / top,))
                for link in report.links[:12]
            ],
        )
    return found


@router.get("/{bulletin_id}/report")
def report_page(
    request: Request, user: StaffUser, session: SessionDep, settings: SettingsDep, bulletin_id: int
) -> Response:
    try:
        report = build_report(session, settings, bulletin_id)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    return render(
        request,
        "report.html",
        {"report": report, "metrics": METRICS, "charts": _charts(report), "pct": _pct},
    )
