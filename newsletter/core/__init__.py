"""The foundation every other group stands on: settings, the database engine and its dialect
differences, errors, the data model, the status vocabularies and transitions, and the audit log.

May import: nothing else in `newsletter`.
"""
