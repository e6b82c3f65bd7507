"""`newsletter subscribers export` writes the import format: exporting, importing and exporting again
gives the same file, and importing an export into the same database changes nothing."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from newsletter.core.models import SUBSCRIBER, SUPPRESSION

ROWS = '''email,name,regions,status,timezone
ada@example.org,Ada Lovelace,africa;global,active,Asia/Kathmandu
"o'brien+tag@example.org","O'Brien, Seán ""Bud""",south-asia,active,America/Santiago
zoë@example.org,Zoë Ångström,latin-america;southeast-asia,pending,
left@example.org,,africa;latin-america;south-asia;southeast-asia;global,unsubscribed,
gone@example.org,Gone,africa,bounced,
spam@example.org,Spam,global,complained,Etc/GMT+12
eve@example.org,"=HYPERLINK(""http://evil.example/"",""Click"")",africa,active,
-minus@example.org,+1 @home,global,active,
quoted@example.org,''=typed with a quote,global,active,
'''


def test_export_then_import_round_trips(cli, engine: Engine, tmp_path: Path) -> None:
    source = tmp_path / "source.csv"
    source.write_text(ROWS, encoding="utf-8")
    assert "9 new" in cli("subscribers", "import", str(source)).output

    first = tmp_path / "first.csv"
    cli("subscribers", "export", str(first))
    exported = first.read_text(encoding="utf-8")
    # A BOM, so that Excel reads UTF-8; no cell a spreadsheet would run as a formula (OWASP).
    assert exported.startswith("\ufeffemail,name,regions,status,timezone\n")
    assert len(exported.splitlines()) == 10
    cells = [cell for row in csv.reader(io.StringIO(exported.lstrip("\ufeff"))) for cell in row]
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r"))]
    assert "'=HYPERLINK" in exported and "''=typed with a quote" in exported
    assert "ada@example.org,Ada Lovelace,africa;global,active,Asia/Kathmandu" in exported.splitlines()

    # Into the same database: nothing changes.
    assert "0 new, 0 updated, 9 unchanged" in cli("subscribers", "import", str(first)).output

    # Into an empty database: the same subscribers, the same export. (The first import suppressed the
    # unsubscribed, bounced and complained rows; an empty database has no suppressions either.)
    with engine.begin() as conn:
        conn.execute(sa.delete(SUBSCRIBER))
        conn.execute(sa.delete(SUPPRESSION))
    assert "9 new" in cli("subscribers", "import", str(first)).output
    with engine.connect() as conn:
        names = set(conn.execute(sa.select(SUBSCRIBER.c.name)).scalars())
    assert {'=HYPERLINK("http://evil.example/","Click")', "+1 @home", "'=typed with a quote"} <= names
    second = tmp_path / "second.csv"
    cli("subscribers", "export", str(second))
    assert second.read_text(encoding="utf-8") == exported


def test_export_to_standard_output_filters_like_list(cli) -> None:
    cli("init")
    out = cli("subscribers", "export", "--status", "active").stdout
    assert out.splitlines() == ["email,name,regions,status,timezone"]
