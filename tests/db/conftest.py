"""Database tests: the data layer and the send path against real SQLite and PostgreSQL.

Every test here that takes `settings`, `engine` or `session` runs on both databases (see the root
conftest). Send-path tests talk real HTTP to the fake SendGrid (`fake_esp`, from tests/fixtures_esp.py);
the factories (`make_subscriber`, `make_bulletin`, `planned_bulletin`…) come from tests/factories.py.
"""
