"""Authentication: password hashes (Dovecot schemes), SASL decoding, login checks with throttling."""
