"""`newsletter subscribers export` writes the import format: exporting, importing and exporting again
gives the same file, and importing an export into the same database changes nothing."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from newsletter.core.models import SUBSCRIBER

ROWS = '''email,name,regions,status,timezone
ada@example.org,Ada Lovelace,africa;global,active,Asia/Kathmandu
"o'brien+tag@example.org","O'Brien, Seán ""Bud""",south-asia,active,America/Santiago
zoë@example.org,Zoë Ångström,latin-america;southeast-asia,pending,
left@example.org,,africa;latin-america;south-asia;southeast-asia;global,unsubscribed,
gone@example.org,Gone,africa,bounced,
spam@example.org,Spam,global,complained,Etc/GMT+12
'''


def test_export_then_import_round_trips(cli, engine: Engine, tmp_path: Path) -> None:
    source = tmp_path / "source.csv"
    source.write_text(ROWS, encoding="utf-8")
    assert "6 new" in cli("subscribers", "import", str(source)).output

    first = tmp_path / "first.csv"
    cli("subscribers", "export", str(first))
    exported = first.read_text(encoding="utf-8")
    assert exported.splitlines()[0] == "email,name,regions,status,timezone"
    assert len(exported.splitlines()) == 7
    assert "ada@example.org,Ada Lovelace,africa;global,active,Asia/Kathmandu" in exported.splitlines()

    # Into the same database: nothing changes.
    assert "0 new, 0 updated, 6 unchanged" in cli("subscribers", "import", str(first)).output

    # Into an empty database: the same subscribers, the same export.
    with engine.begin() as conn:
        conn.execute(sa.delete(SUBSCRIBER))
    assert "6 new" in cli("subscribers", "import", str(first)).output
    second = tmp_path / "second.csv"
    cli("subscribers", "export", str(second))
    assert second.read_text(encoding="utf-8") == exported


def test_export_to_standard_output_filters_like_list(cli) -> None:
    cli("init")
    out = cli("subscribers", "export", "--status", "active").stdout
    assert out.splitlines() == ["email,name,regions,status,timezone"]
