"""The package is a stack of groups, each importing only the groups below it (docs/architecture.md):

    cli, web     the two doors: parse input, call one service, present the result
    sending      dispatcher, queries, scheduler, throttle, events
    accounts     admin users
    audience     subscribers, search, opt-in, preferences, suppressions
    esp          backends; everything about SendGrid in esp.sendgrid
    mail         tokens, links, the RFC 5322 message
    content      bulletin types, parsing, Markdown, rendering, regions
    core         config, db, dialect, errors, models, status, audit

The doors hold no SQL: a statement in a route or a command is a rule the other door skips.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "newsletter"
STACK = ["core", "content", "mail", "esp", "audience", "accounts", "sending", "web", "cli"]
DOORS = {"web", "cli"}
SQL_NAMES = {"select", "insert", "update", "delete", "text"}
"""Names that build SQL, whether imported (`from sqlmodel import select`) or reached (`sa.text`)."""
SQL_MODULES = {"sqlalchemy", "sqlmodel"}


def group_of(module: str) -> str | None:
    """`newsletter.audience.optin` → `audience`; None for anything outside the stack."""
    parts = module.split(".")
    if parts[0] != "newsletter" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in STACK else None


def modules() -> list[tuple[str, Path, ast.Module]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        group = relative.parts[0].removesuffix(".py")
        if group in STACK:
            found.append((group, path, ast.parse(path.read_text(), str(path))))
    return found


def imported(tree: ast.Module) -> list[tuple[int, str]]:
    """Every module an `import` or `from … import` names, with `from newsletter import x` as `newsletter.x`."""
    names: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append((node.lineno, node.module))
            names += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return names


def test_the_stack_is_the_whole_package():
    """Every module belongs to a group of the stack (or to migrations/testing, which sit outside it)."""
    outside = {
        path.relative_to(PACKAGE).parts[0]
        for path in PACKAGE.rglob("*.py")
        if path.relative_to(PACKAGE).parts[0].removesuffix(".py") not in STACK
    }
    assert outside <= {"__init__.py", "__main__.py", "migrations", "testing"}


@pytest.mark.parametrize("group", STACK)
def test_a_group_imports_only_the_groups_below_it(group):
    below = set(STACK[: STACK.index(group) + 1])
    if group in DOORS:
        below |= {"web"}  # the CLI serves the web app; web never imports the CLI (checked below)
    upward = [
        f"{path.relative_to(PACKAGE)}:{line} imports {name}"
        for g, path, tree in modules()
        if g == group
        for line, name in imported(tree)
        if (target := group_of(name)) is not None and target not in below
    ]
    assert upward == []


def test_web_never_imports_the_cli():
    offenders = [
        f"{path.relative_to(PACKAGE)}:{line}"
        for g, path, tree in modules()
        if g == "web"
        for line, name in imported(tree)
        if group_of(name) == "cli"
    ]
    assert offenders == []


def sql_uses(tree: ast.Module) -> list[str]:
    """SQL builders a module imports from SQLAlchemy/SQLModel or reaches as attributes of them."""
    sql_aliases = set()
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in SQL_MODULES:
            uses += [f"{node.lineno}: imports {a.name}" for a in node.names if a.name in SQL_NAMES]
        elif isinstance(node, ast.Import):
            sql_aliases |= {a.asname or a.name for a in node.names if a.name.split(".")[0] in SQL_MODULES}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in SQL_NAMES
            and isinstance(node.value, ast.Name)
            and node.value.id in sql_aliases
        ):
            uses.append(f"{node.lineno}: {node.value.id}.{node.attr}")
        if isinstance(node, ast.Attribute) and node.attr in {"exec", "execute"}:
            uses.append(f"{node.lineno}: .{node.attr}()")
    return uses


@pytest.mark.parametrize("door", sorted(DOORS))
def test_the_doors_hold_no_sql(door):
    found = [
        f"{path.relative_to(PACKAGE)}:{use}"
        for g, path, tree in modules()
        if g == door
        for use in sql_uses(tree)
    ]
    assert found == []


def test_the_checker_sees_an_upward_import_and_a_statement():
    """The checks above would catch what they are for (a layering test that cannot fail is no test)."""
    tree = ast.parse("from newsletter.web.app import create_app\nimport sqlalchemy as sa\nsa.text('x')\n")
    assert [group_of(name) for _, name in imported(tree)][:1] == ["web"]
    assert any("sa.text" in use for use in sql_uses(tree))
