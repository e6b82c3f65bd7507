"""`bash scripts/demo.sh` works for a normal user: it never calls apt, sudo or a browser.

The shims below stand in for apt-get, apt, dpkg, sudo and chromium: each records that it was called
and fails, as on a machine without root or Debian. The venv is this test run's own (NEWSLETTER_VENV), so
the install step is a quick re-install; CI (`.ci/run`) runs the same from a fresh venv.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("apt-get", "apt", "dpkg", "sudo", "chromium", "chromium-browser")


@pytest.mark.slow
def test_the_demo_installs_without_apt_and_sends(tmp_path):
    shims = tmp_path / "shims"
    shims.mkdir()
    calls = tmp_path / "calls.log"
    for name in FORBIDDEN:
        shim = shims / name
        shim.write_text(f'#!/bin/sh\necho "{name} $*" >> "{calls}"\nexit 1\n')
        shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "OUTBOX_DIR", "BASE_URL")}
    env.update(PATH=f"{shims}:{os.environ['PATH']}", NEWSLETTER_VENV=sys.prefix)
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo.sh"), "--dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert not calls.exists(), calls.read_text()
    assert "install: installing the package and its runtime dependencies" in done.stderr
    assert "[test]" not in done.stderr
    assert "bulletin 1 sent" in done.stdout
    assert f"OUTBOX_DIR={tmp_path / 'demo' / 'outbox'}" in done.stdout  # one outbox for the links
    assert (tmp_path / "demo" / "newsletter.db").is_file()
