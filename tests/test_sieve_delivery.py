"""Sieve in delivery, end to end: mail in over SMTP (smtplib) to a real `kinmail serve`, read back from the
recipient's Maildir. The user's filter files into a folder, the group's policy script runs first, a vacation reply
reaches the sender once, and a broken or failing script still delivers (with a notice to the user)."""

from __future__ import annotations

import email
import email.policy
import smtplib
import time
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import make_msgid

import pytest

from kinmail.sieve.storage import ScriptStore
from tests.serverctl import USERS, KinmailServer

PASSWORDS = {
    **USERS,
    "carol@example.test": "carol-secret-3",
    "dave@example.test": "dave-secret-4",
}

GLOBAL = """\
require ["fileinto", "mailbox"];
# the group's policy: anything marked for quarantine goes there, whatever the user's own filter says
if header :contains "subject" "[quarantine]" {
    fileinto :create "Quarantine";
    stop;
}
"""

ALICE = """\
require ["fileinto", "mailbox"];
if anyof (header :contains "subject" "[club]", header :contains "subject" "[quarantine]") {
    fileinto :create "Club";
}
"""

BOB = """\
require "vacation";
vacation :days 3 :subject "Away until Monday" "I am away until Monday; I will answer then.";
"""

CAROL_BROKEN = """\
require "fileinto";
if header :contains "subject" {
    fileinto "Never";
"""

DAVE_FAILING = """\
require ["variables"];
set "where" "not an address";
redirect "${where}";
"""


def install(server: KinmailServer, address: str, script: str) -> None:
    store = ScriptStore(server.data_dir, address)
    store.put("main", script)
    store.set_active("main")


@pytest.fixture(scope="module")
def mx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KinmailServer]:
    root = tmp_path_factory.mktemp("sieve")
    server = KinmailServer(root, users=PASSWORDS, services=("smtp",))
    (root / "sieve").mkdir()
    (root / "sieve" / "global.sieve").write_text(GLOBAL)
    install(server, "alice@example.test", ALICE)
    install(server, "bob@example.test", BOB)
    install(server, "carol@example.test", CAROL_BROKEN)
    install(server, "dave@example.test", DAVE_FAILING)
    with server:
        yield server


def send(server: KinmailServer, sender: str, rcpt: str, subject: str, body: str = "Hello.\n") -> str:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = rcpt
    msg["Subject"] = subject
    msg["Message-ID"] = msgid = make_msgid(domain="client.example")
    msg.set_content(body)
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=15) as client:
        client.ehlo("client.example")
        assert client.sendmail(sender, [rcpt], msg.as_bytes(policy=SMTP)) == {}
    return msgid


def subjects(server: KinmailServer, user: str, folder: str = "INBOX") -> list[str]:
    """The Subject of every message in `folder` of `user`, read from its Maildir (folders are `.Name`)."""
    root = server.maildir(user)
    if folder != "INBOX":
        root = root / ("." + folder.replace("/", "."))
    out = []
    for sub in ("new", "cur"):
        for path in sorted((root / sub).glob("*")) if (root / sub).is_dir() else []:
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            out.append(str(message["subject"] or ""))
    return out


def wait_for(
    server: KinmailServer, user: str, needle: str, folder: str = "INBOX", count: int = 1
) -> list[str]:
    deadline = time.monotonic() + 30
    found: list[str] = []
    while time.monotonic() < deadline:
        found = [s for s in subjects(server, user, folder) if needle in s]
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(
        f"{user} {folder}: {len(found)} of {count} messages with {needle!r}\n{server.log()[-3000:]}"
    )


def queue_empty(server: KinmailServer) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not list((server.data_dir / "queue").glob("*.json")):
            return
        time.sleep(0.1)
    raise AssertionError("the queue did not empty")


def test_message_lands_in_the_folder_the_filter_names(mx: KinmailServer) -> None:
    send(mx, "friend@example.org", "alice@example.test", "[club] meeting on Friday")
    assert wait_for(mx, "alice@example.test", "meeting on Friday", folder="Club")
    assert not [s for s in subjects(mx, "alice@example.test") if "meeting on Friday" in s]


def test_message_the_filter_does_not_name_goes_to_inbox(mx: KinmailServer) -> None:
    send(mx, "friend@example.org", "alice@example.test", "plain news")
    assert wait_for(mx, "alice@example.test", "plain news")


def test_group_policy_runs_before_the_users_filter(mx: KinmailServer) -> None:
    send(mx, "friend@example.org", "alice@example.test", "[quarantine] suspicious offer")
    assert wait_for(mx, "alice@example.test", "suspicious offer", folder="Quarantine")
    queue_empty(mx)
    assert not [s for s in subjects(mx, "alice@example.test", "Club") if "suspicious offer" in s]


def test_vacation_reply_reaches_the_sender_once(mx: KinmailServer) -> None:
    send(mx, "alice@example.test", "bob@example.test", "lunch tomorrow?")
    replies = wait_for(mx, "alice@example.test", "Away until Monday")
    assert replies == ["Away until Monday"]
    send(mx, "alice@example.test", "bob@example.test", "lunch tomorrow? (again)")
    wait_for(mx, "bob@example.test", "lunch tomorrow? (again)")
    queue_empty(mx)
    assert [s for s in subjects(mx, "alice@example.test") if "Away until Monday" in s] == [
        "Away until Monday"
    ]


def test_vacation_does_not_answer_mailing_lists(mx: KinmailServer) -> None:
    msg = EmailMessage()
    msg["From"] = "list@example.org"
    msg["To"] = "bob@example.test"
    msg["Subject"] = "weekly digest"
    msg["List-Id"] = "<club.example.org>"
    msg.set_content("news")
    with smtplib.SMTP("127.0.0.1", mx.port("smtp"), timeout=15) as client:
        client.ehlo("client.example")
        client.sendmail("carol@example.test", ["bob@example.test"], msg.as_bytes(policy=SMTP))
    wait_for(mx, "bob@example.test", "weekly digest")
    queue_empty(mx)
    assert not [s for s in subjects(mx, "carol@example.test") if "Away until Monday" in s]


def test_a_script_that_does_not_compile_still_delivers_and_tells_the_user(mx: KinmailServer) -> None:
    send(mx, "friend@example.org", "carol@example.test", "for carol")
    assert wait_for(mx, "carol@example.test", "for carol")
    notices = wait_for(mx, "carol@example.test", "Your mail filter failed")
    assert notices


def test_a_script_that_fails_while_running_still_delivers(mx: KinmailServer) -> None:
    send(mx, "friend@example.org", "dave@example.test", "for dave")
    assert wait_for(mx, "dave@example.test", "for dave")
    assert wait_for(mx, "dave@example.test", "Your mail filter failed")
