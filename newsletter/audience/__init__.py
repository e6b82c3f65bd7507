"""Who receives what: subscribers and their regions, CSV import and export, search, double opt-in,
the preference centre, suppressions, and the per-address and per-client limits on public forms.

May import: `core`, `content`, `mail`, `esp`.
"""
