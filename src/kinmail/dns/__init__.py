"""DNS for kinmail: an asyncio resolver on dnspython with a small TTL cache (`kinmail.dns.resolver`)."""

from kinmail.dns.resolver import (
    DnsError,
    DnsNotFound,
    DnsTemporaryError,
    MxRecord,
    Resolver,
    resolver_for,
)

__all__ = ["DnsError", "DnsNotFound", "DnsTemporaryError", "MxRecord", "Resolver", "resolver_for"]
