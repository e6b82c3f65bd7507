"""Every signing key, current or old, is held to the same minimum strength."""

from __future__ import annotations

import pytest

from newsletter.core.config import Settings
from newsletter.core.errors import ConfigError


@pytest.mark.parametrize(
    ("current", "old"),
    [
        ("x", ""),
        ("a" * 40, ""),
        ("good-key-0123456789abcdef", "x"),
        ("good-key-0123456789abcdef", "good-key-0123456789abcdef,aaaaaaaaaaaaaaaaaaaa"),
    ],
)
def test_every_signing_key_must_be_strong(current: str, old: str) -> None:
    """An old key still verifies links and sessions, so it must be as strong as the current one."""
    with pytest.raises(ConfigError):
        _ = Settings(SECRET_KEY=current, SECRET_KEYS_OLD=old).secret_keys
    assert Settings(
        SECRET_KEY="good-key-0123456789abcdef", SECRET_KEYS_OLD="older-key-0123456789abcdef"
    ).secret_keys
