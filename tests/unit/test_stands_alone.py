"""The repository stands alone: no file points a reader at something outside it.

A path outside the repository or a tracker number cannot be followed from a clone, so code, tests,
scripts and documents describe what they refer to instead (the schema SendGrid publishes, the bulletin
in `tests/data/`, the target a benchmark measures against).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEXT_SUFFIXES = {".py", ".md", ".toml", ".sh", ".txt", ".html", ".css", ".example", ".cfg", ".ini", ".yml"}
SKIPPED_DIRS = {"node_modules", "__pycache__", "build", "dist", "demo", "var"}
OUTSIDE = re.compile(
    r"\.\./shared|(?<![\w.-])shared/|\bDESIGN\.md\b|\bLAYOUT\.md\b|\b[Ii]ssues? #?\d+",
)
"""A pointer to the project's old outside documents or to a numbered tracker entry."""


def _skipped(directory: str) -> bool:
    """Installed packages, caches and generated output: not the project's own text."""
    hidden = directory.startswith(".") and directory != ".ci"
    return hidden or directory in SKIPPED_DIRS or directory.endswith(".egg-info")


def text_files() -> list[Path]:
    found = []
    for top, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not _skipped(d)]
        here = Path(top)
        in_ci = here.relative_to(ROOT).parts[:1] == (".ci",)
        found += [here / f for f in files if in_ci or Path(f).suffix in TEXT_SUFFIXES]
    return found


def test_no_file_points_outside_the_repository():
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in text_files()
        if path != Path(__file__).resolve()
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert offenders == []


def test_the_architecture_document_is_there_and_linked():
    assert (ROOT / "docs" / "architecture.md").is_file()
    assert "docs/architecture.md" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_check_sees_each_kind_of_pointer_and_spares_ordinary_words():
    """The pattern would catch what it is for, and not the words tokens and caches use."""
    # Built from parts, so that this file is no pointer itself.
    shared, design = "shared" + "/", "DESIGN" + ".md"
    for pointer in (
        f"see ../{shared}x",
        f"`{shared}specs/a.json`",
        f"as {design} says",
        "LAYOUT" + ".md",
        "issue 4",
    ):
        assert OUTSIDE.search(pointer), pointer
    for ordinary in ("issued at", "issue time", "the shared lock", "tests/data/x.txt", "an issue with it"):
        assert not OUTSIDE.search(ordinary), ordinary
    assert (ROOT / "newsletter").is_dir() and text_files()
