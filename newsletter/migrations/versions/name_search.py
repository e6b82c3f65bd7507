"""Search any word of a subscriber's name, ignoring case and accents.

SQLite: an FTS5 index over `subscriber.name` (external content, `unicode61 remove_diacritics 2`, prefix
indexes for 2 and 3 characters), kept current by triggers, so that no writer needs to know it exists (a
bulk import feeds it in one statement instead, for speed: `core.dialect.bulk_subscriber_insert`).
PostgreSQL: a generated column `name_words` = `to_tsvector('simple', newsletter_unaccent(name))` with a
GIN index; `newsletter_unaccent` is the `unaccent` extension's function declared IMMUTABLE, which a
generated column requires.
`newsletter.audience.search` is the only code that queries them (names in `newsletter.core.dialect`).

Revision ID: name_search
Revises: engagement
"""

from __future__ import annotations

from alembic import op

from newsletter.core.dialect import NAME_WORDS_INSERT_TRIGGER

revision = "name_search"
down_revision = "engagement"
branch_labels = None
depends_on = None

_SQLITE_UP = [
    "CREATE VIRTUAL TABLE subscriber_name_words USING fts5("
    "name, content='subscriber', content_rowid='id', tokenize='unicode61 remove_diacritics 2', "
    # Prefix indexes: "mu"/"mul" typed so far read one list instead of merging every word's.
    "prefix='2 3')",
    NAME_WORDS_INSERT_TRIGGER,
    "CREATE TRIGGER subscriber_name_words_delete AFTER DELETE ON subscriber BEGIN "
    "INSERT INTO subscriber_name_words(subscriber_name_words, rowid, name) "
    "VALUES ('delete', old.id, old.name); END",
    "CREATE TRIGGER subscriber_name_words_update AFTER UPDATE OF name ON subscriber BEGIN "
    "INSERT INTO subscriber_name_words(subscriber_name_words, rowid, name) "
    "VALUES ('delete', old.id, old.name); "
    "INSERT INTO subscriber_name_words(rowid, name) VALUES (new.id, new.name); END",
    "INSERT INTO subscriber_name_words(subscriber_name_words) VALUES ('rebuild')",
]
_SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS subscriber_name_words_update",
    "DROP TRIGGER IF EXISTS subscriber_name_words_delete",
    "DROP TRIGGER IF EXISTS subscriber_name_words_insert",
    "DROP TABLE IF EXISTS subscriber_name_words",
]
_PG_UNACCENT = (
    # Schema-qualified: an index function must not depend on the search_path (pg_dump empties it).
    "CREATE OR REPLACE FUNCTION newsletter_unaccent(text) RETURNS text "
    "LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT "
    "AS $$ SELECT {schema}.unaccent('{schema}.unaccent'::regdictionary, $1) $$"
)
_PG_UP = [
    # Stored, not an index expression: the search also checks recent rows one by one, and unaccent()
    # costs ~17 µs a name where reading a stored vector costs well under one.
    "ALTER TABLE subscriber ADD COLUMN name_words tsvector "
    "GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, newsletter_unaccent(name))) STORED",
    "CREATE INDEX ix_subscriber_name_words ON subscriber USING gin (name_words)",
]
_PG_DOWN = [
    "DROP INDEX IF EXISTS ix_subscriber_name_words",
    "ALTER TABLE subscriber DROP COLUMN IF EXISTS name_words",
    "DROP FUNCTION IF EXISTS newsletter_unaccent(text)",
]


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        for statement in _SQLITE_UP:
            op.execute(statement)
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS unaccent")
    schema = bind.exec_driver_sql(
        "SELECT quote_ident(extnamespace::regnamespace::text) FROM pg_extension WHERE extname = 'unaccent'"
    ).scalar_one()
    op.execute(_PG_UNACCENT.format(schema=schema))
    for statement in _PG_UP:
        op.execute(statement)


def downgrade() -> None:
    for statement in _PG_DOWN if op.get_bind().dialect.name == "postgresql" else _SQLITE_DOWN:
        op.execute(statement)
