"""The web app: supporters' pages (token links, no account), the staff/volunteer admin, and webhooks."""
