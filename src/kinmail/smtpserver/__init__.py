"""The SMTP server: MX (port 25) and submission (587 with STARTTLS, 465 with implicit TLS)."""
