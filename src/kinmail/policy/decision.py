"""`Decision`: the one result of a policy check, with the reply to send and a reason for the log.

Access-map results follow Postfix's access(5): OK, REJECT [text], DEFER [text], DISCARD [text], HOLD [text],
DUNNO, and `NNN text` / `NNN X.Y.Z text` for a custom reply (4xx defers, 5xx rejects). Used by
`kinmail.policy.checks` and the SMTP server. Keeps nothing on disk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from kinmail.proto.smtp import Reply


class Action(StrEnum):
    DUNNO = "dunno"  # no opinion: the next check decides
    OK = "ok"  # accept, skip the remaining checks of this stage
    REJECT = "reject"
    DEFER = "defer"
    DISCARD = "discard"  # accept and drop
    HOLD = "hold"  # accept and keep on hold in the queue


class Reason(StrEnum):
    NONE = "none"
    CLIENT_ACCESS = "client_access"
    HELO_REQUIRED = "helo_required"
    HELO_FORGED = "helo_forged"
    SENDER_ACCESS = "sender_access"
    RECIPIENT_ACCESS = "recipient_access"
    UNKNOWN_USER = "unknown_user"
    RELAY_DENIED = "relay_denied"
    MESSAGE_TOO_BIG = "message_too_big"
    SENDER_LOGIN_MISMATCH = "sender_login_mismatch"
    RATE_LIMIT = "rate_limit"
    MAP_ERROR = "map_error"


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: Reason = Reason.NONE
    reply: Reply | None = None

    @property
    def refuses(self) -> bool:
        return self.action in (Action.REJECT, Action.DEFER)


DUNNO = Decision(Action.DUNNO)
_CUSTOM = re.compile(r"([245]\d\d)(?:\s+([245]\.\d{1,3}\.\d{1,3}))?(?:\s+(.*))?\Z", re.S)


def from_access(value: str, reason: Reason, default_reject: Reply, default_defer: Reply) -> Decision:
    """Turn an access-map result into a Decision (access(5) ACCEPT/REJECT ACTIONS)."""
    word, _, text = value.strip().partition(" ")
    text = text.strip()
    upper = word.upper()
    if upper == "OK" or (word.isdigit() and not text and not upper.startswith(("4", "5"))):
        return Decision(Action.OK, reason)
    if upper in ("DUNNO", ""):
        return DUNNO
    if upper == "REJECT":
        return Decision(Action.REJECT, reason, default_reject.with_text(text) if text else default_reject)
    if upper in ("DEFER", "DEFER_IF_PERMIT", "DEFER_IF_REJECT"):
        return Decision(Action.DEFER, reason, default_defer.with_text(text) if text else default_defer)
    if upper == "DISCARD":
        return Decision(Action.DISCARD, reason)
    if upper == "HOLD":
        return Decision(Action.HOLD, reason)
    match = _CUSTOM.match(value.strip())
    if match:
        code = int(match.group(1))
        enhanced = match.group(2) or f"{code // 100}.7.1"
        reply = Reply(code, enhanced, match.group(3) or ("Access denied" if code >= 400 else "Ok"))
        if code >= 500:
            return Decision(Action.REJECT, reason, reply)
        if code >= 400:
            return Decision(Action.DEFER, reason, reply)
        return Decision(Action.OK, reason)
    return DUNNO  # unknown result (e.g. a restriction name we do not have): no opinion
