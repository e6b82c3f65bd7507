"""Getting a bulletin to everyone exactly once: planning deliveries, claiming batches (the only SQL that
differs per database on the send path lives in `queries`), the dispatcher and its retries, the
throttle, the schedule, and applying the ESP's events to the ledger.

May import: `core`, `content`, `mail`, `esp`, `audience`, `accounts`.
"""
