"""The AUTH exchange of the submission ports (RFC 4954): PLAIN (RFC 4616) and LOGIN, from the initial response
or from 334 challenges, to a user name and password. Sans-I/O but for `challenge`, which the session gives: it
sends a 334 line and returns the client's answer. Called by `kinmail.smtpserver.session`; the password check
itself is `kinmail.auth`'s. Keeps nothing on disk.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from kinmail.auth import sasl
from kinmail.proto import smtp
from kinmail.proto.smtp import Reply


class Cancelled(Exception):
    """The client answered an AUTH challenge with "*" (RFC 4954 §4)."""


async def credentials(
    mechanism: str, initial: str, challenge: Callable[[str], Awaitable[str]]
) -> tuple[str, str] | Reply:
    """(user name, password), or the reply that ends the exchange (unknown mechanism, bad encoding, a
    cancelled exchange, an authorization identity other than the user)."""
    try:
        if mechanism == "PLAIN":
            response = initial.strip() if initial.strip() else await challenge("")
            authzid, username, password = sasl.decode_plain(sasl.decode_b64(response))
            if authzid and authzid.lower() != username.lower():
                return smtp.AUTH_FAILED.with_text("Authorization identity must match the user")
        elif mechanism == "LOGIN":
            first = initial.strip() if initial.strip() else await challenge(sasl.LOGIN_USERNAME_CHALLENGE)
            username = sasl.decode_login_field(first)
            password = sasl.decode_login_field(await challenge(sasl.LOGIN_PASSWORD_CHALLENGE), "password")
        else:
            return smtp.BAD_MECHANISM
    except ValueError as exc:
        return smtp.PARAM_SYNTAX.with_text(f"Bad AUTH response: {exc}")
    except Cancelled:
        return smtp.AUTH_CANCELLED
    return username, password
