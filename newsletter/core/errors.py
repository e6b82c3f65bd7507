"""Exceptions a user can cause, and what they mean.

    NewsletterError            anything the CLI reports as one line, without a traceback
    ├── ConfigError            a setting is missing or malformed (preflight failures too)
    ├── NotInitialised         the database does not exist or has no schema: run `newsletter init`
    ├── NotFound               a bulletin, subscriber or region that does not exist
    ├── InvalidTransition      a status change the lifecycle does not allow
    └── ImportFailed           a file could not be imported; nothing was stored
          .problems: list[Problem] (line number and reason)

ESP errors live in `newsletter.esp.base`, token errors in `newsletter.mail.tokens`: they are handled where
they happen and never reach a user as exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass


class NewsletterError(Exception):
    """An error with a message meant for the person at the keyboard."""


class ConfigError(NewsletterError):
    pass


class NotInitialised(NewsletterError):
    pass


class NotFound(NewsletterError):
    pass


class InvalidTransition(NewsletterError):
    pass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file, at a 1-based line number (0 when it concerns the whole file)."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


class ImportFailed(NewsletterError):
    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        first = problems[0] if problems else Problem(0, "unknown problem")
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{source}: {first}{more}; nothing was stored")
