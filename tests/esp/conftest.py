"""ESP backend tests: each backend against a real peer on loopback (the fake SendGrid over HTTP, an
aiosmtpd server for SMTP, files for the outbox). The fixtures live in tests/fixtures_esp.py because the
send-path tests in tests/db use the same servers."""
