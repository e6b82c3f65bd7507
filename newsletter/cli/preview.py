"""`newsletter preview ID --regions a,b`: the email a subscriber of those regions would get.

Rendered and personalised exactly as a send does, for a sample recipient whose links are harmless
examples (`/unsubscribe/example`, refused by the web app), so a preview never needs a real subscriber
or the signing key.
"""

from __future__ import annotations

import tempfile
import webbrowser
from pathlib import Path
from typing import Annotated

import typer

from newsletter.cli import context
from newsletter.cli.output import check_one_stdout, is_stdout, write_output
from newsletter.content.bulletins import load_content
from newsletter.content.regions import RegionIndex
from newsletter.content.render import Renderer, personalize
from newsletter.content.types import Recipient
from newsletter.core.errors import NotFound
from newsletter.mail.links import Links
from newsletter.mail.message import build_message

SAMPLE_EMAIL = "supporter@example.org"
SAMPLE_NAME = "Sample Supporter"


def register(app: typer.Typer) -> None:
    app.command("preview")(preview)


def preview(
    bulletin_id: Annotated[int, typer.Argument(metavar="ID", help="The bulletin to preview.")],
    regions: Annotated[
        str | None,
        typer.Option("--regions", "-r", help="Comma-separated region codes or names (default: all of them)."),
    ] = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="Write the HTML part to this file ('-': standard output).")
    ] = None,
    text: Annotated[
        Path | None, typer.Option("--text", help="Write the text part to this file ('-': standard output).")
    ] = None,
    eml: Annotated[
        Path | None,
        typer.Option("--eml", help="Write the whole message (RFC 5322) to this file ('-': standard output)."),
    ] = None,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the HTML part in a web browser.")
    ] = False,
    test: Annotated[
        bool, typer.Option("--test", help="As a staff test send: [TEST] subject and banner.")
    ] = False,
) -> None:
    """Show the email a subscriber of REGIONS gets of bulletin ID (the text part, unless told to write files)."""
    settings = context.settings()
    with context.session() as session:
        content = load_content(session, bulletin_id)
        index = RegionIndex.from_db(session, settings)
    codes = index.parse_list(regions) if regions else content.region_codes
    try:
        variant = Renderer(settings).variant(content, codes, test=test)
    except ValueError:
        names = ", ".join(codes) or "no region"
        raise NotFound(
            f"bulletin {bulletin_id} has nothing for {names} (it has: {', '.join(content.region_codes)})"
        ) from None
    recipient = Recipient(SAMPLE_EMAIL, SAMPLE_NAME, None, bulletin_id=bulletin_id)
    values = Links(settings).values(recipient)
    html_part, text_part = personalize(variant, values)

    check_one_stdout([html, text, eml])
    written = []
    for path, label, data in (
        (html, "html", html_part),
        (text, "text", text_part),
        (eml, "message", build_message(settings, variant, recipient, values).as_bytes() if eml else b""),
    ):
        if path is not None:
            write_output(path, data)
            written.append(f"{label} {'to standard output' if is_stdout(path) else path}")
    if written:
        context.err_console.print(f"variant {variant.key}: " + ", ".join(written))
    else:
        typer.echo(f"Subject: {variant.subject}\n")
        typer.echo(text_part, nl=False)
    if open_browser:
        _open(html_part, html, bulletin_id)


def _open(html_part: str, written: Path | None, bulletin_id: int) -> None:
    """Open the HTML part in a browser: the file written, or a temporary one."""
    page = written
    if page is None or is_stdout(page):
        with tempfile.NamedTemporaryFile(
            "w", suffix=".html", prefix=f"bulletin-{bulletin_id}-", delete=False, encoding="utf-8"
        ) as handle:
            handle.write(html_part)
        page = Path(handle.name)
    webbrowser.open(page.resolve().as_uri())
