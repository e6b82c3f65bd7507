"""`newsletter regions list`."""

from __future__ import annotations

import typer
from rich.table import Table
from sqlmodel import col, func, select

from newsletter.cli import context
from newsletter.core.models import Region, Subscriber, Subscription
from newsletter.core.status import SubscriberStatus

regions_app = typer.Typer(help="The regions a bulletin is grouped by.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(regions_app, name="regions")


@regions_app.command("list")
def list_regions() -> None:
    """List regions in display order, with how many active subscribers receive each."""
    with context.session() as session:
        active = (
            select(Subscription.region_id, func.count().label("n"))
            .join(Subscriber, col(Subscriber.id) == col(Subscription.subscriber_id))
            .where(Subscriber.status == SubscriberStatus.ACTIVE)
            .group_by(col(Subscription.region_id))
            .subquery()
        )
        rows = session.exec(
            select(Region, func.coalesce(active.c.n, 0))
            .outerjoin(active, active.c.region_id == Region.id)
            .order_by(col(Region.position))
        ).all()
    table = Table("code", "name", "active subscribers")
    for region, n in rows:
        table.add_row(region.code, region.name, str(n))
    context.console.print(table)
