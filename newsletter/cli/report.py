"""`newsletter report ID [--json]`: a bulletin's engagement figures, the same as the admin's report page.

`newsletter report --rebuild` recounts every engagement rollup from the stored ESP events (once, after
upgrading an installation that stored events before the rollups existed)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from newsletter.cli import context
from newsletter.cli.context import JsonFlag
from newsletter.core.errors import NewsletterError
from newsletter.sending import engagement
from newsletter.sending.report import METRICS, Figures, Report, build_report


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _row(label: str, figures: Figures) -> list[str]:
    cells = [label, str(figures.counts["delivered"])]
    for metric in METRICS[1:]:
        cells.append(f"{figures.counts[metric]} ({_percent(figures.rate(metric))})")
    return cells


def _print(report: Report) -> None:
    console = context.console
    console.print(f"bulletin {report.bulletin_id}: {report.title} ({report.status})")
    table = Table("", *METRICS, title="Recipients (share of delivered)")
    table.add_row(*_row("all", report.totals))
    for code, _name, figures in report.regions:
        table.add_row(*_row(code, figures))
    console.print(table)
    variants = Table("variant", *METRICS, title="By variant (the exact regions received)")
    for variant, figures in report.variants:
        variants.add_row(*_row(variant, figures))
    console.print(variants)
    if report.links:
        links = Table("clickers", "clicks", "item", "link", title="Clicks per link")
        for link in report.links:
            item = f"{link.region} #{link.item}" if link.region else "—"
            links.add_row(str(link.clickers), str(link.clicks), item, link.url)
        console.print(links)
    trend = Table("bulletin", "delivered", "opened", "clicked", title="Last bulletins")
    for point in report.trend:
        f = point.figures
        trend.add_row(
            f"{point.bulletin_id} {point.title}",
            str(f.counts["delivered"]),
            _percent(f.rate("opened")),
            _percent(f.rate("clicked")),
        )
    console.print(trend)
    tracking = f"open tracking {'on' if report.track_opens else 'off'}, click tracking {'on' if report.track_clicks else 'off'}"
    console.print(f"{tracking}. {report.note}")


def report_command(
    bulletin_id: Annotated[int | None, typer.Argument(help="The bulletin's id.")] = None,
    as_json: JsonFlag = False,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Recount every bulletin's figures from the stored ESP events.")
    ] = False,
) -> None:
    """Engagement of a bulletin: delivered, opened, clicked, bounced, complained, unsubscribed (totals only)."""
    if rebuild:
        with context.session() as session:
            counted = engagement.rebuild(session)
        context.err_console.print(f"engagement recounted from the stored events: {counted} recipient figures")
        if bulletin_id is None:
            return
    if bulletin_id is None:
        raise NewsletterError("give a bulletin id (see `newsletter bulletins list`)")
    with context.session() as session:
        report = build_report(session, context.settings(), bulletin_id)
    if as_json:
        typer.echo(json.dumps(report.as_json(), ensure_ascii=False, indent=2))
        return
    _print(report)
