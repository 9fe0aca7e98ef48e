"""Message authentication: DKIM keys, signing and verification (later SPF, DMARC, ARC)."""
