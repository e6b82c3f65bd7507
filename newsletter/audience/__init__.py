"""Who receives what: subscribers and their regions, CSV import and export, search, double opt-in,
the preference centre, staff edits of one subscriber (`staff`), suppressions, and the per-address and
per-client limits on public forms. Statements shared by these services live in `queries`.

May import: `core`, `content`, `mail`, `esp`.
"""
