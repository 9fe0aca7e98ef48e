"""The ManageSieve server (RFC 5804): users edit their Sieve scripts from their mail clients."""
