"""`newsletter users add|list|disable|enable|remove`: admin accounts.

`users add` asks for the password twice (hidden). Scripts pass it in `NEWSLETTER_USER_PASSWORD` or on
standard input with `--password-stdin`, never on the command line, where other users of the machine
could read it in the process list.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.table import Table

from newsletter import accounts
from newsletter.cli import context
from newsletter.core.errors import NewsletterError
from newsletter.core.status import Role

PASSWORD_ENV = "NEWSLETTER_USER_PASSWORD"

users_app = typer.Typer(help="Manage staff and volunteer accounts of the web admin.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(users_app, name="users")


def _password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise NewsletterError("--password-stdin: no password on standard input")
        return line
    from_env = os.environ.get(PASSWORD_ENV)
    if from_env:
        return from_env
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


@users_app.command("add")
def add_command(
    email: Annotated[str, typer.Argument(help="The account's email address (its login).")],
    role: Annotated[
        str, context.choice(Role, "staff: everything; volunteer: subscribers only.")
    ] = Role.VOLUNTEER.value,
    password_stdin: Annotated[
        bool,
        typer.Option("--password-stdin", help="Read the password from the first line of standard input."),
    ] = False,
) -> None:
    """Add an account; asks for the password twice (or reads NEWSLETTER_USER_PASSWORD / --password-stdin)."""
    password = _password(password_stdin)
    accounts.check_password_strength(password)
    with context.session() as session:
        user = accounts.create_user(session, email, password, Role(role))
        address, role_name = user.email, user.role
    context.console.print(f"added {role_name} {address}")


@users_app.command("list")
def list_command() -> None:
    """List accounts with role and state."""
    with context.session() as session:
        users = accounts.list_users(session)
        table = Table("email", "role", "state", "last login")
        for user in users:
            state = "active" if user.is_active else "disabled"
            last = (
                user.last_login_at.astimezone(context.settings().tz).strftime("%Y-%m-%d %H:%M %Z")
                if user.last_login_at
                else ""
            )
            table.add_row(user.email, user.role, state, last)
    context.console.print(table)


@users_app.command("disable")
def disable_command(email: Annotated[str, typer.Argument()]) -> None:
    """Disable an account (it can no longer log in; its history stays)."""
    with context.session() as session:
        accounts.set_active(session, accounts.get_user(session, email), False)
    context.console.print(f"disabled {email}")


@users_app.command("enable")
def enable_command(email: Annotated[str, typer.Argument()]) -> None:
    """Enable a disabled account again. (Failed logins never lock an account: they slow down the one
    client that made them, until their window passes.)"""
    with context.session() as session:
        accounts.set_active(session, accounts.get_user(session, email), True)
    context.console.print(f"enabled {email}")


@users_app.command("remove")
def remove_command(
    email: Annotated[str, typer.Argument()],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete an account (the audit log keeps what it did)."""
    if not yes:
        typer.confirm(f"Remove the account {email}?", abort=True)
    with context.session() as session:
        accounts.remove_user(session, accounts.get_user(session, email))
    context.console.print(f"removed {email}")
