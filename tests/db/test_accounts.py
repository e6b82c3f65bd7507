"""Admin accounts: argon2 hashes, the lock-out after repeated failures, roles, and the `users` CLI."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlmodel import Session, select
from typer.testing import CliRunner

from newsletter import accounts
from newsletter.accounts import FIRST_WAIT_SECONDS, LoginRefused, authenticate, create_user, may
from newsletter.cli import app
from newsletter.core.errors import NewsletterError
from newsletter.core.models import User, utcnow
from newsletter.core.status import Role

PASSWORD = "correct horse battery"


def test_passwords_are_stored_as_argon2_hashes(session):
    user = create_user(session, "Ada@Example.org", PASSWORD, Role.STAFF)
    session.commit()
    assert user.email == "ada@example.org"
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash
    assert accounts.password_matches(user.password_hash, PASSWORD)


@hsettings(max_examples=15, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_only_the_exact_password_matches(other):
    stored = accounts.hash_password(PASSWORD)
    assert accounts.password_matches(stored, other) == (other == PASSWORD)


def test_short_passwords_duplicate_accounts_and_unknown_roles_are_refused(session):
    with pytest.raises(NewsletterError, match="at least"):
        create_user(session, "a@example.org", "short", Role.STAFF)
    with pytest.raises(NewsletterError, match="unknown role"):
        create_user(session, "a@example.org", PASSWORD, "admin")
    create_user(session, "a@example.org", PASSWORD, Role.VOLUNTEER)
    with pytest.raises(NewsletterError, match="already"):
        create_user(session, "A@example.org", PASSWORD, Role.STAFF)


def test_login_succeeds_with_the_right_password_and_any_case_of_address(session, settings):
    create_user(session, "ada@example.org", PASSWORD, Role.STAFF)
    user = authenticate(session, "ADA@example.org ", PASSWORD, settings)
    assert user.last_login_at is not None and user.failed_logins == 0


def test_wrong_password_unknown_address_and_disabled_account_get_the_same_answer(session, settings):
    user = create_user(session, "ada@example.org", PASSWORD, Role.STAFF)
    messages = set()
    for email, password in [("ada@example.org", "wrong password!"), ("nobody@example.org", PASSWORD)]:
        with pytest.raises(LoginRefused) as refused:
            authenticate(session, email, password, settings)
        messages.add(str(refused.value))
    accounts.set_active(session, user, False)
    with pytest.raises(LoginRefused) as refused:
        authenticate(session, "ada@example.org", PASSWORD, settings)
    messages.add(str(refused.value))
    assert len(messages) == 1


def test_repeated_failures_slow_down_that_client_only_and_say_nothing_more(session, settings):
    create_user(session, "ada@example.org", PASSWORD, Role.STAFF)
    now = utcnow()
    messages = set()
    for _ in range(settings.LOGIN_MAX_FAILURES):
        with pytest.raises(LoginRefused) as refused:
            authenticate(
                session, "ada@example.org", "guess guess guess", settings, client="10.0.0.9", now=now
            )
        messages.add(str(refused.value))
    # That client must now wait, even with the right password; the refusal reads like any other.
    with pytest.raises(LoginRefused) as throttled:
        authenticate(session, "ada@example.org", PASSWORD, settings, client="10.0.0.9", now=now)
    messages.add(str(throttled.value))
    with pytest.raises(LoginRefused) as unknown:
        authenticate(session, "nobody@example.org", PASSWORD, settings, client="10.0.0.9", now=now)
    messages.add(str(unknown.value))
    assert len(messages) == 1
    # Anyone else logs in as usual: the account is not locked.
    assert authenticate(session, "ada@example.org", PASSWORD, settings, client="10.0.0.1", now=now).id
    # After the wait (doubling per further failure), the same client may try again.
    later = now + timedelta(seconds=FIRST_WAIT_SECONDS + 1)
    assert authenticate(session, "ada@example.org", PASSWORD, settings, client="10.0.0.9", now=later).id


def test_a_burst_of_concurrent_guesses_gets_no_more_checks_than_one_guess_after_another(
    session, settings, engine
):
    """Each try is counted before its password is checked: twelve guesses at once from one client are
    checked at most `LOGIN_MAX_FAILURES` times, as twelve in a row would be."""
    create_user(session, "ada@example.org", PASSWORD, Role.STAFF)
    session.commit()
    checked: list[str] = []
    real_check = accounts.password_matches

    def counting_check(password_hash: str, password: str) -> bool:
        if password_hash != accounts._dummy_hash():
            checked.append(password)
        return real_check(password_hash, password)

    start = threading.Barrier(12)

    def guess(n: int) -> str:
        start.wait()
        with Session(engine) as own:
            try:
                authenticate(own, "ada@example.org", f"guess number {n}", settings, client="10.0.0.9")
            except LoginRefused:
                return "refused"
            finally:
                own.commit()
        return "in"

    with mock.patch.object(accounts, "password_matches", counting_check), ThreadPoolExecutor(12) as pool:
        outcomes = list(pool.map(guess, range(12)))
    assert outcomes == ["refused"] * 12
    assert 0 < len(checked) <= settings.LOGIN_MAX_FAILURES
    with pytest.raises(LoginRefused):  # still throttled for that client, even with the right password
        authenticate(session, "ada@example.org", PASSWORD, settings, client="10.0.0.9")


def test_a_success_resets_the_failure_count(session, settings):
    create_user(session, "ada@example.org", PASSWORD, Role.STAFF)
    for _ in range(settings.LOGIN_MAX_FAILURES - 1):
        with pytest.raises(LoginRefused):
            authenticate(session, "ada@example.org", "guess guess guess", settings)
    authenticate(session, "ada@example.org", PASSWORD, settings)
    with pytest.raises(LoginRefused, match="Wrong"):
        authenticate(session, "ada@example.org", "guess guess guess", settings)


def test_volunteers_may_manage_subscribers_only_staff_everything():
    assert may(Role.VOLUNTEER, "subscribers") and may(Role.STAFF, "subscribers")
    assert not may(Role.VOLUNTEER, "bulletins") and may(Role.STAFF, "bulletins")
    assert not may("someone", "subscribers")


def test_cli_adds_lists_disables_and_removes_accounts(settings, session, monkeypatch):
    runner = CliRunner()
    result = runner.invoke(
        app, ["users", "add", "staff@example.org", "--role", "staff"], input=f"{PASSWORD}\n{PASSWORD}\n"
    )
    assert result.exit_code == 0, result.output
    monkeypatch.setenv("NEWSLETTER_USER_PASSWORD", PASSWORD)
    assert runner.invoke(app, ["users", "add", "vol@example.org"]).exit_code == 0
    monkeypatch.delenv("NEWSLETTER_USER_PASSWORD")
    result = runner.invoke(
        app, ["users", "add", "pipe@example.org", "--password-stdin"], input=f"{PASSWORD}\n"
    )
    assert result.exit_code == 0, result.output
    listing = runner.invoke(app, ["users", "list"])
    assert "staff@example.org" in listing.output and "volunteer" in listing.output
    assert runner.invoke(app, ["users", "disable", "vol@example.org"]).exit_code == 0
    assert runner.invoke(app, ["users", "remove", "pipe@example.org", "--yes"]).exit_code == 0
    session.expire_all()
    users = {u.email: u for u in session.exec(select(User)).all()}
    assert set(users) == {"staff@example.org", "vol@example.org"}
    assert users["staff@example.org"].role == "staff" and not users["vol@example.org"].is_active
    assert accounts.password_matches(users["staff@example.org"].password_hash, PASSWORD)


def test_cli_refuses_mismatched_confirmation(settings):
    result = CliRunner().invoke(app, ["users", "add", "x@example.org"], input=f"{PASSWORD}\nother password\n")
    assert result.exit_code != 0
