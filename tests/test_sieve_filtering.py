"""`kinmail.delivery.filtering.decide` on a real runtime (config, directory, maps, state) without a server:
order of scripts, implicit keep, fallbacks for broken scripts, loops, vacation rules and once-per-period,
and the two policy examples of docs/sieve.md run exactly as written there."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from kinmail.config.directory import Recipient
from kinmail.delivery.actions import Discard, FileInto, Keep, Redirect, Reject, SendMessage
from kinmail.delivery.filtering import decide
from kinmail.runtime import Runtime
from kinmail.sieve.storage import ScriptStore
from tests.serverctl import KinmailServer

DOCS = Path(__file__).resolve().parents[1] / "docs" / "sieve.md"
USERS = {
    "alice@example.test": "a-secret-1",
    "bob@example.test": "b-secret-2",
    "kid@example.test": "k-secret-3",
    "parent@example.test": "p-secret-4",
}


def policy(name: str) -> str:
    """A policy script exactly as docs/sieve.md shows it, with the example domain of the tests."""
    text = DOCS.read_text(encoding="utf-8")
    blocks = dict(re.findall(r"<!-- policy: ([\w-]+) -->\n```sieve\n(.*?)```", text, re.S))
    return blocks[name].replace("example.org", "example.test")


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    server = KinmailServer(
        tmp_path,
        users=USERS,
        sections={"sieve": {"max_redirects": 2}},
    )
    (tmp_path / "sieve").mkdir()
    yield Runtime.load(server.config_path)


def message(
    subject: str = "Hello", frm: str = "friend@example.org", to: str = "alice@example.test", **extra: str
) -> bytes:
    head = f"From: {frm}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <m1@example.org>\r\n"
    for key, value in extra.items():
        head += f"{key.replace('_', '-')}: {value}\r\n"
    return (head + "\r\nHello there.\r\n").encode()


def user_script(rt: Runtime, address: str, text: str) -> None:
    store = ScriptStore(rt.data_dir, address)
    store.put("main", text)
    store.set_active("main")


def global_script(rt: Runtime, text: str) -> None:
    rt.loaded.resolve(rt.config.sieve.global_script).write_text(text)


ALICE = Recipient("alice@example.test", True, None, "alice@example.test")


def test_no_script_keeps_in_inbox(rt: Runtime) -> None:
    result = decide(rt, ALICE, "friend@example.org", message())
    assert result.actions == [Keep()]


def test_user_script_files_into_a_folder(rt: Runtime) -> None:
    user_script(
        rt,
        "alice@example.test",
        'require "fileinto"; if header :contains "subject" "club" { fileinto "Club"; }',
    )
    assert decide(rt, ALICE, "f@example.org", message("club news")).actions == [FileInto("Club")]
    assert decide(rt, ALICE, "f@example.org", message("other")).actions == [Keep()]


def test_global_stop_ends_filtering_before_the_user_script(rt: Runtime) -> None:
    global_script(rt, 'require "fileinto"; if header :contains "subject" "spam" { fileinto "Junk"; stop; }')
    user_script(rt, "alice@example.test", 'require "fileinto"; fileinto "Everything";')
    assert decide(rt, ALICE, "f@example.org", message("spam offer")).actions == [FileInto("Junk")]
    assert decide(rt, ALICE, "f@example.org", message("letter")).actions == [FileInto("Everything")]


def test_after_script_runs_last(rt: Runtime, tmp_path: Path) -> None:
    (tmp_path / "after.sieve").write_text('require "imap4flags"; addflag "$Filtered"; keep;')
    rt.config.sieve.after_script = "after.sieve"
    user_script(rt, "alice@example.test", 'require "fileinto"; fileinto "A";')
    assert decide(rt, ALICE, "f@example.org", message()).actions == [FileInto("A"), Keep(("$Filtered",))]


def test_script_that_does_not_compile_keeps_and_tells_the_user(rt: Runtime) -> None:
    user_script(rt, "alice@example.test", "if header :contains {")
    result = decide(rt, ALICE, "f@example.org", message("important"))
    assert result.actions[0] == Keep()
    notice = result.actions[1]
    assert isinstance(notice, SendMessage)
    assert notice.recipients == ("alice@example.test",)
    text = email.message_from_bytes(notice.data, policy=email.policy.default)
    assert "main" in str(text["subject"])
    assert "does not compile" in text.get_content()
    assert result.errors
    again = decide(rt, ALICE, "f@example.org", message("second"))
    assert again.actions == [Keep()]  # one notice a day for the same script is enough


def test_runtime_error_discards_the_scripts_actions_and_keeps(rt: Runtime) -> None:
    user_script(
        rt,
        "alice@example.test",
        'require ["fileinto", "variables"]; fileinto "A"; set "x" "no address"; redirect "${x}";',
    )
    result = decide(rt, ALICE, "f@example.org", message())
    assert result.actions[0] == Keep()
    assert isinstance(result.actions[1], SendMessage)
    assert not any(isinstance(a, FileInto) for a in result.actions)


def test_redirect_limit(rt: Runtime) -> None:
    user_script(
        rt,
        "alice@example.test",
        'redirect "a@example.org"; redirect "b@example.org"; redirect "c@example.org";',
    )
    result = decide(rt, ALICE, "f@example.org", message())
    assert result.actions[0] == Keep()
    assert "redirect" in result.errors[0]


def test_redirect_and_loop(rt: Runtime) -> None:
    user_script(rt, "alice@example.test", 'redirect "elsewhere@example.org";')
    once = b"Delivered-To: alice@example.test\r\n" + message()
    assert decide(rt, ALICE, "f@example.org", once).actions == [Redirect("elsewhere@example.org")]
    looped = b"Delivered-To: alice@example.test\r\n" + once
    assert decide(rt, ALICE, "f@example.org", looped).actions == [Keep()]


def test_reject_and_discard(rt: Runtime) -> None:
    user_script(
        rt,
        "alice@example.test",
        'require "reject"; if header :is "subject" "x" { reject "go away"; } else { discard; }',
    )
    assert decide(rt, ALICE, "f@example.org", message("x")).actions == [Reject("go away")]
    assert decide(rt, ALICE, "f@example.org", message("y")).actions == [Discard()]


VACATION = 'require "vacation"; vacation :days 2 :subject "Out" "Back on Monday.";'


def test_vacation_reply_once_per_period(rt: Runtime) -> None:
    user_script(rt, "alice@example.test", VACATION)
    first = decide(rt, ALICE, "friend@example.org", message())
    replies = [a for a in first.actions if isinstance(a, SendMessage)]
    assert Keep() in first.actions
    assert len(replies) == 1
    reply = replies[0]
    assert reply.sender == "" and reply.recipients == ("friend@example.org",)
    parsed = email.message_from_bytes(reply.data, policy=email.policy.default)
    assert parsed["Auto-Submitted"] == "auto-replied"
    assert parsed["In-Reply-To"] == "<m1@example.org>"
    assert parsed["Subject"] == "Out"
    assert "Back on Monday." in parsed.get_content()
    again = decide(rt, ALICE, "friend@example.org", message())
    assert not [a for a in again.actions if isinstance(a, SendMessage)]
    other = decide(rt, ALICE, "someone.else@example.org", message(frm="someone.else@example.org"))
    assert len([a for a in other.actions if isinstance(a, SendMessage)]) == 1


@pytest.mark.parametrize(
    ("sender", "extra", "to"),
    [
        ("", {}, "alice@example.test"),
        ("MAILER-DAEMON@example.org", {}, "alice@example.test"),
        ("owner-club@example.org", {}, "alice@example.test"),
        ("club-request@example.org", {}, "alice@example.test"),
        ("news@example.org", {"List_Id": "<club.example.org>"}, "alice@example.test"),
        ("news@example.org", {"Precedence": "bulk"}, "alice@example.test"),
        ("robot@example.org", {"Auto_Submitted": "auto-generated"}, "alice@example.test"),
        ("friend@example.org", {}, "somebody@example.org"),
    ],
)
def test_vacation_does_not_answer(rt: Runtime, sender: str, extra: dict[str, str], to: str) -> None:
    user_script(rt, "alice@example.test", VACATION)
    result = decide(rt, ALICE, sender, message(frm=sender or "x@example.org", to=to, **extra))
    assert result.actions == [Keep()]


def test_child_account_policy_from_the_docs(rt: Runtime, tmp_path: Path) -> None:
    (tmp_path / "approved-senders").write_text(
        "# people our child may get mail from\ngrandma@example.net ok\n@school.example.org ok\n"
    )
    rt.config.sieve.lists = {"approved": "texthash:approved-senders"}
    global_script(rt, policy("child-account"))
    kid = Recipient("kid@example.test", True, None, "kid@example.test")
    ok = decide(
        rt, kid, "grandma@example.net", message(frm="Grandma <grandma@example.net>", to="kid@example.test")
    )
    assert ok.actions == [Keep()]
    school = decide(
        rt, kid, "t@school.example.org", message(frm="teacher@school.example.org", to="kid@example.test")
    )
    assert school.actions == [Keep()]
    held = decide(rt, kid, "stranger@example.com", message(frm="stranger@example.com", to="kid@example.test"))
    assert held.actions == [Redirect("parent+held@example.test")]
    parent = Recipient("parent@example.test", True, "held", "parent+held@example.test")
    filed = decide(
        rt, parent, "stranger@example.com", message(frm="stranger@example.com", to="kid@example.test")
    )
    assert filed.actions == [FileInto("Held for Kid", (), True)]
    plain = Recipient("parent@example.test", True, None, "parent@example.test")
    assert decide(rt, plain, "x@example.com", message(to="parent@example.test")).actions == [Keep()]


EXE = (
    b"From: sender@example.org\r\nTo: alice@example.test\r\nSubject: game\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
    b"--b1\r\nContent-Type: text/plain\r\n\r\nTry this!\r\n"
    b'--b1\r\nContent-Type: application/octet-stream; name="GAME.EXE"\r\n'
    b'Content-Disposition: attachment; filename="GAME.EXE"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
    b"TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAgAAAAA==\r\n--b1--\r\n"
)


def test_executable_attachment_policy_from_the_docs(rt: Runtime) -> None:
    global_script(rt, policy("no-executables"))
    result = decide(rt, ALICE, "sender@example.org", EXE)
    assert len(result.actions) == 1
    reject = result.actions[0]
    assert isinstance(reject, Reject)
    assert 'the attachment "GAME.EXE"' in reject.reason
    assert "executable attachments" in reject.reason
    harmless = EXE.replace(b"GAME.EXE", b"notes.pdf")
    assert decide(rt, ALICE, "sender@example.org", harmless).actions == [Keep()]


def test_check_scripts_locates_problems_in_the_group_scripts(rt: Runtime) -> None:
    from kinmail.delivery.filtering import check_scripts

    assert check_scripts(rt.loaded) == []
    global_script(rt, 'require "fileinto";\nif header :contains "subject" {\n  fileinto "X";\n}\n')
    problems = check_scripts(rt.loaded)
    assert [p.location for p in problems] == ["sieve/global.sieve:2"]
    assert "header test requires 2 positional argument" in problems[0].message


def test_duplicate_history_runs_from_the_first_delivery_unless_last(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 7352 §3.3: the :seconds period counts from the first time an ID was seen; with :last from the
    latest time. The history is kept in data_dir/state/sieve.sqlite between deliveries."""
    from types import SimpleNamespace

    from kinmail.delivery import vacation

    clock = SimpleNamespace(now=1_000_000.0)
    monkeypatch.setattr(vacation, "time", SimpleNamespace(time=lambda: clock.now))
    for tag, at_120 in (("", Keep()), (":last", FileInto("Dups"))):
        user_script(
            rt,
            "alice@example.test",
            f'require ["duplicate", "fileinto"]; if duplicate :seconds 100 {tag} :handle "h{tag}" '
            '{ fileinto "Dups"; }',
        )
        start = clock.now
        seen = []
        for offset in (0, 50, 120):
            clock.now = start + offset
            seen.append(decide(rt, ALICE, "f@example.org", message()).actions)
        assert seen == [[Keep()], [FileInto("Dups")], [at_120]], tag
        clock.now += 1000
