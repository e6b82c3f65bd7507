"""The web app: supporters' pages (token links, no account), the staff/volunteer admin, and webhooks.

Routes parse the request, call one service function and present its result; they hold no SQL.
May import: every group below it (`core` … `sending`, `accounts`); never `cli`.
"""
