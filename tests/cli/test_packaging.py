"""A non-editable install finds its templates, demo data and migrations inside the package."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        timeout=300,
    )
    return next(out.glob("newsletter-*.whl"))


def test_the_wheel_ships_templates_demo_data_and_migrations(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "newsletter/templates/web/base.html",
        "newsletter/subscribers/sample.csv",
        "newsletter/subscribers/sample-bulletin.txt",
        "newsletter/migrations/env.py",
        "newsletter/migrations/versions/0001_initial_schema.py",
    ):
        assert expected in names
    assert any(n.startswith("newsletter/templates/email/") for n in names)


def test_an_installed_wheel_uses_its_own_templates(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        timeout=300,
    )
    probe = "from newsletter.core.config import default_templates_dir as d; print(d())"
    found = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    ).stdout.strip()
    assert Path(found) == target / "newsletter" / "templates"
