"""Where a command's output goes: a file, or standard output when the path is `-` (the Unix convention).

Every option or argument that names an output file goes through here, so `-` means stdout everywhere
and never a file called "-".
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from newsletter.core.errors import NewsletterError

STDOUT = "-"


def is_stdout(path: Path | None) -> bool:
    return path is not None and str(path) == STDOUT


def check_one_stdout(paths: Sequence[Path | None]) -> None:
    """Refuse two outputs that both say `-`: they would be mixed into one stream."""
    if sum(is_stdout(p) for p in paths) > 1:
        raise NewsletterError("only one output can be '-' (standard output)")


def write_output(path: Path, data: str | bytes) -> None:
    """Write `data` to `path`, or to standard output for `-` (bytes as they are, text as UTF-8)."""
    if is_stdout(path):
        sys.stdout.flush()
        sys.stdout.buffer.write(data if isinstance(data, bytes) else data.encode("utf-8"))
        sys.stdout.buffer.flush()
        return
    try:
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data, encoding="utf-8")
    except OSError as exc:
        raise NewsletterError(f"cannot write {path}: {exc.strerror or exc}") from exc


@contextmanager
def open_output(path: Path | None) -> Iterator[TextIO]:
    """A text stream for CSV and the like: the file at `path`, or stdout for `-` or no path."""
    if path is None or is_stdout(path):
        yield sys.stdout
        sys.stdout.flush()
        return
    try:
        handle = path.open("w", newline="", encoding="utf-8")
    except OSError as exc:
        raise NewsletterError(f"cannot write {path}: {exc.strerror or exc}") from exc
    with handle:
        yield handle
