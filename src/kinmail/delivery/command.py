"""`[delivery] mailbox_command`: an external program (procmail, maildrop, a script) as the local transport.

Run by `kinmail.delivery.local` from a worker thread, once per local recipient, through `/bin/sh -c` with the
message on standard input and the environment Postfix local(8) gives it: SENDER, RECIPIENT, USER, EXTENSION,
DOMAIN, LOCAL, ORIGINAL_RECIPIENT, HOME, LOGNAME, SHELL, PATH. The exit status follows sysexits.h as Postfix
reads it: 0 delivered, 75 (EX_TEMPFAIL) and 71 (EX_OSERR) retry later, other codes bounce; a command killed by
a signal or running past the time limit is retried. Keeps nothing on disk.
"""

from __future__ import annotations

import os
import subprocess
from typing import TYPE_CHECKING

from kinmail.core.log import get_logger
from kinmail.delivery.local import DELIVERED, PERMANENT, TEMPORARY, Outcome, maildir_of

if TYPE_CHECKING:
    from kinmail.config.directory import Recipient
    from kinmail.runtime import Runtime

log = get_logger(__name__)

COMMAND_TIMEOUT = 600.0

# sysexits.h → (enhanced status, text), as Postfix's sys_exits table.
_SYSEXITS: dict[int, tuple[str, str]] = {
    64: ("5.3.0", "command line usage error"),
    65: ("5.6.0", "data format error"),
    66: ("5.3.0", "cannot open input"),
    67: ("5.1.1", "user unknown"),
    68: ("5.1.2", "host name unknown"),
    69: ("5.3.0", "service unavailable"),
    70: ("5.3.0", "internal software error"),
    71: ("4.3.0", "system resource problem"),
    72: ("5.3.0", "critical OS file missing"),
    73: ("5.2.0", "cannot create output file"),
    74: ("5.3.0", "input/output error"),
    75: ("4.3.0", "temporary failure"),
    76: ("5.5.0", "remote error in protocol"),
    77: ("5.7.0", "permission denied"),
    78: ("5.3.5", "local configuration error"),
}


def command_environment(sender: str, target: Recipient, home: str, delimiter: str) -> dict[str, str]:
    """The environment of local(8)'s mailbox_command for one recipient."""
    local, _, domain = target.address.rpartition("@")
    extension = target.tag or ""
    full_local = f"{local}{delimiter}{extension}" if extension else local
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "SHELL": "/bin/sh",
        "SENDER": sender,
        "RECIPIENT": f"{full_local}@{domain}",
        "USER": local,
        "LOGNAME": local,
        "EXTENSION": extension,
        "DOMAIN": domain,
        "LOCAL": full_local,
        "ORIGINAL_RECIPIENT": target.original or target.address,
        "HOME": home,
    }


def run_mailbox_command(
    rt: Runtime, *, sender: str, target: Recipient, message: bytes, delivered_to: str
) -> Outcome:
    """Pipe `message` into the configured command for `target`; map its exit status to an Outcome."""
    command = rt.config.delivery.mailbox_command
    home = maildir_of(rt, target.address)
    home.mkdir(parents=True, exist_ok=True)
    env = command_environment(sender, target, str(home), rt.config.delivery.recipient_delimiter or "+")
    try:
        proc = subprocess.run(
            ["/bin/sh", "-c", command],
            input=message,
            env=env,
            cwd=home,
            capture_output=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Outcome(TEMPORARY, 451, "4.3.0", "mailbox_command timed out")
    except OSError as exc:
        return Outcome(TEMPORARY, 451, "4.3.0", f"cannot run mailbox_command: {exc}")
    detail = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    note = detail[-1][:200] if detail else ""
    log.info("delivery.command", rcpt=delivered_to, status=proc.returncode, reason=note or None)
    if proc.returncode == 0:
        return Outcome(DELIVERED, text="delivered to command")
    if proc.returncode < 0:
        return Outcome(TEMPORARY, 451, "4.3.0", f"command killed by signal {-proc.returncode}")
    enhanced, text = _SYSEXITS.get(
        proc.returncode, ("5.3.0", f"command failed with status {proc.returncode}")
    )
    text = f"{text}: {note}" if note else text
    if enhanced.startswith("4"):
        return Outcome(TEMPORARY, 451, enhanced, text)
    return Outcome(PERMANENT, 550, enhanced, text)
