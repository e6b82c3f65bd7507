"""Every setting is documented in .env.example, and .env.example names no setting that does not exist."""

from __future__ import annotations

import re
from pathlib import Path

from newsletter.core.config import Settings

EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"


def documented() -> set[str]:
    names = set()
    for line in EXAMPLE.read_text("utf-8").splitlines():
        match = re.match(r"^#?\s?([A-Z][A-Z0-9_]+)=", line)
        if match:
            names.add(match.group(1))
    return names


def test_every_setting_is_in_env_example():
    assert set(Settings.model_fields) - documented() == set()


def test_env_example_has_no_unknown_settings():
    assert documented() - set(Settings.model_fields) == set()
