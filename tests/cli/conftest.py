"""CLI tests: the `newsletter` commands through Typer's runner (`cli`, from the root conftest) or in a
subprocess where the exit status and stderr themselves are the contract."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from newsletter.cli import app


@pytest.fixture
def preview(settings, make_bulletin):
    """`newsletter preview <a stored bulletin> …args`, asserting the exit status (`code`)."""
    bulletin = make_bulletin()
    runner = CliRunner()

    def run(*args: str, code: int = 0):
        result = runner.invoke(app, ["preview", str(bulletin.id), *args])
        assert result.exit_code == code, (result.output, result.exception)
        return result

    return run
