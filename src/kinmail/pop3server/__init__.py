"""The POP3 server (RFC 1939, RFC 2449, RFC 2595, RFC 5034) over the store's INBOX."""
