"""Outbound SMTP: routes (MX, relayhost), sessions with opportunistic TLS, a connection cache, the remote transport."""
