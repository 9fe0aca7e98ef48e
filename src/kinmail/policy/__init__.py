"""Staged checks on an SMTP transaction (connect, HELO, MAIL, RCPT, DATA), each returning one `Decision`."""
