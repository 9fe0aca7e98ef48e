"""The Sieve compiler and interpreter as units: errors with line:column, the core commands and the main
extensions, match types and comparators, variables, and `kinmail sieve check`. Hypothesis checks that any
input either compiles or raises SieveError (never anything else)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kinmail.sieve import SieveError, compile_script
from kinmail.sieve.interp import Interpreter
from kinmail.sieve.result import (
    DiscardAction,
    Envelope,
    FileIntoAction,
    Host,
    KeepAction,
    RedirectAction,
    SieveAction,
)
from kinmail.sieve.storage import ActiveScript, NoSuchScript, ScriptStore, ScriptStoreError

MESSAGE = (
    b"From: Alice Example <alice+lists@example.org>\r\n"
    b'To: bob@example.net, "Carol" <carol@example.net>\r\n'
    b"Subject: =?utf-8?q?Caf=C3=A9_meeting?= on Friday\r\n"
    b"Date: Fri, 13 Nov 2026 09:30:00 +0100\r\n"
    b"X-Spam-Score: 7.5\r\n"
    b"\r\n"
    b"Let us meet at the usual place.\r\n"
)


def run(script: str, message: bytes = MESSAGE, envelope: Envelope | None = None) -> list[SieveAction]:
    compiled = compile_script(script)
    env = envelope or Envelope("alice+lists@example.org", "bob@example.net")
    return Interpreter(message, env, Host()).run(compiled).final_actions()


def errors(script: str) -> list[tuple[int, int, str]]:
    with pytest.raises(SieveError) as info:
        compile_script(script)
    return info.value.errors


# --- compiling ---------------------------------------------------------------------------------------------


def test_error_has_line_and_column() -> None:
    with pytest.raises(SieveError) as info:
        compile_script('require "fileinto";\n\nif header :contains "subject" "x" {\n    filenito "A";\n}\n')
    assert (info.value.line, info.value.column) == (4, 5)
    assert str(info.value).startswith("4:5: unknown command 'filenito'")


def test_every_problem_is_reported() -> None:
    found = errors('fileinto "A";\nif size 10 { keep; }\nredirect "not an address";\n')
    assert [line for line, _, _ in found] == [1, 2, 3]


@pytest.mark.parametrize(
    ("script", "fragment"),
    [
        ('require "frobnicate";', "unknown Sieve capability"),
        ('keep "x";', "requires 0 positional argument"),
        ('keep\nfileinto "x";', "missing semicolon"),
        ("if true keep;", "requires a command block"),
        ('if header :frob "a" "b" {}', "unknown tagged argument ':frob'"),
        ('if header :is :contains "a" "b" {}', "cannot take both"),
        ('if header "a" { keep; }', "requires 2 positional argument"),
        ('stop; require "fileinto";', "require commands can only be placed at top level"),
        ("if size :over 1 {} else {} else {}", "must follow an if"),
        ('"unterminated', "end of file before end of quoted string"),
        ("/* open comment", "end of file before end of bracket comment"),
        ("keep; }", "unexpected '}'"),
        ('require "variables"; set "1x" "y";', "invalid variable name"),
        ('require "date"; if date "date" "fortnight" "x" {}', "valid date part"),
        ('require "regex"; if header :regex "subject" "(a+)+$" {}', "nested repetition"),
    ],
)
def test_compile_errors(script: str, fragment: str) -> None:
    assert any(fragment in message for _, _, message in errors(script))


def test_extensions_can_be_restricted() -> None:
    with pytest.raises(SieveError):
        compile_script('require "vacation"; vacation "away";', extensions=["fileinto"])
    compile_script('require "fileinto"; fileinto "A";', extensions=["fileinto"])


@settings(max_examples=150, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(list('ifheader :is"x"{};[],()#\n\\*/0123456789KMG require fileinto stop')),
        max_size=120,
    )
)
def test_any_text_compiles_or_raises_sieve_error(text: str) -> None:
    try:
        compile_script(text)
    except SieveError as exc:
        assert exc.line >= 1 and exc.column >= 1


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_unicode_never_crashes_the_compiler(text: str) -> None:
    try:
        compile_script(text)
    except SieveError:
        pass


# --- running -----------------------------------------------------------------------------------------------


def test_implicit_keep() -> None:
    assert run("if false { discard; }") == [KeepAction()]


def test_discard_cancels_implicit_keep() -> None:
    assert run("discard;") == [DiscardAction(line=1)]


def test_header_is_decoded_before_matching() -> None:
    actions = run('require "fileinto"; if header :contains "subject" "Café" { fileinto "Cafe"; }')
    assert [a.folder for a in actions if isinstance(a, FileIntoAction)] == ["Cafe"]


def test_address_parts_and_subaddress() -> None:
    script = """require ["fileinto", "subaddress"];
if address :detail "from" "lists" { fileinto "Lists"; }
if address :domain :is "to" "example.net" { fileinto "Net"; }
if address :localpart :is "to" "carol" { fileinto "Carol"; }
"""
    assert [a.folder for a in run(script) if isinstance(a, FileIntoAction)] == ["Lists", "Net", "Carol"]


def test_envelope() -> None:
    script = 'require ["envelope", "fileinto"]; if envelope :localpart :is "to" "bob" { fileinto "Bob"; }'
    assert run(script) == [FileIntoAction("Bob", line=1)]


def test_matches_sets_variables() -> None:
    script = 'require ["variables", "fileinto"]; if header :matches "from" "*<*@*>" { fileinto "from-${3}"; }'
    assert run(script) == [FileIntoAction("from-example.org", line=1)]


def test_relational_numeric() -> None:
    script = """require ["relational", "comparator-i;ascii-numeric", "fileinto"];
if header :value "ge" :comparator "i;ascii-numeric" "x-spam-score" "7" { fileinto "Junk"; }"""
    assert run(script) == [FileIntoAction("Junk", line=2)]


def test_spamtest_reads_the_score_header() -> None:
    script = 'require ["spamtest", "relational", "comparator-i;ascii-numeric", "fileinto"]; if spamtest :value "ge" :comparator "i;ascii-numeric" "7" { fileinto "Junk"; }'
    assert run(script) == [FileIntoAction("Junk", line=1)]


def test_regex() -> None:
    script = 'require ["regex", "fileinto"]; if header :regex "subject" "^Caf[eé] meeting on (Mon|Fri)day$" { fileinto "M"; }'
    assert run(script) == [FileIntoAction("M", line=1)]


def test_date() -> None:
    script = 'require ["date", "fileinto"]; if date :zone "+0000" "date" "hour" "08" { fileinto "Early"; }'
    assert run(script) == [FileIntoAction("Early", line=1)]


def test_body() -> None:
    script = 'require ["body", "fileinto"]; if body :contains "usual place" { fileinto "Meet"; }'
    assert run(script) == [FileIntoAction("Meet", line=1)]


def test_imap4flags_on_keep() -> None:
    assert run('require "imap4flags"; addflag "\\\\Flagged"; addflag "$Work";') == [
        KeepAction(("\\Flagged", "$Work"))
    ]


def test_copy_keeps_implicit_keep() -> None:
    actions = run('require "copy"; redirect :copy "archive@example.org";')
    assert actions == [RedirectAction("archive@example.org", True, line=1), KeepAction()]


def test_duplicate_redirects_merge() -> None:
    actions = run('redirect "a@example.org"; redirect "A <a@example.org>";')
    assert actions == [RedirectAction("a@example.org", line=1)]


def test_editheader_changes_the_stored_message() -> None:
    compiled = compile_script(
        'require "editheader"; addheader "X-Filtered" "yes"; deleteheader "x-spam-score";'
    )
    result = Interpreter(MESSAGE, Envelope(), Host()).run(compiled)
    data = result.message.to_bytes()
    assert data.startswith(b"X-Filtered: yes\r\n")
    assert b"X-Spam-Score" not in data


def test_include_runs_a_personal_script() -> None:
    class Includes(Host):
        def include(self, name: str, personal: bool) -> str | None:
            return 'require "fileinto"; fileinto "Included";' if personal and name == "other" else None

    compiled = compile_script('require "include"; include "other";')
    result = Interpreter(MESSAGE, Envelope(), Includes()).run(compiled)
    assert result.final_actions() == [FileIntoAction("Included", line=1)]


# --- the script store --------------------------------------------------------------------------------------


def test_script_store(tmp_path: Path) -> None:
    store = ScriptStore(tmp_path, "Alice@Example.org")
    assert store.list() == [] and store.active() is None
    store.put("main", "keep;")
    store.put("other", "discard;")
    store.set_active("main")
    assert store.list() == [("main", True), ("other", False)]
    assert store.active() == ("main", "keep;")
    with pytest.raises(ActiveScript):
        store.delete("main")
    store.rename("main", "renamed")
    assert store.active() == ("renamed", "keep;")
    store.delete("other")
    with pytest.raises(NoSuchScript):
        store.get("other")
    assert store.size_used() == len("keep;")
    store.set_active(None)
    assert store.active() is None
    assert (tmp_path / "sieve" / "example.org" / "alice" / "renamed.sieve").is_file()
    for bad in ("../x", ".hidden", "a/b", "tab\there", ""):
        with pytest.raises(ScriptStoreError):
            store.put(bad, "keep;")
    # An address whose parts would name a folder outside data_dir/sieve/DOMAIN/USER/ is refused.
    for address in ("alice@..", "..@example.org", "alice@.", "a/b@example.org", "alice@x/..", "nobody", "@x"):
        with pytest.raises(ScriptStoreError):
            ScriptStore(tmp_path, address)


# --- kinmail sieve check -----------------------------------------------------------------------------------


def test_sieve_check_command(tmp_path: Path) -> None:
    good = tmp_path / "good.sieve"
    good.write_text('require "fileinto";\nif header :contains "subject" "x" { fileinto "X"; }\n')
    bad = tmp_path / "bad.sieve"
    bad.write_text('require "fileinto";\nif header :contains "subject" {\n  fileinto "X";\n}\nfrob;\n')
    ok = subprocess.run(
        [sys.executable, "-m", "kinmail", "sieve", "check", str(good)], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    failed = subprocess.run(
        [sys.executable, "-m", "kinmail", "sieve", "check", str(bad)], capture_output=True, text=True
    )
    assert failed.returncode == 1
    lines = failed.stdout.splitlines()
    assert lines[0].startswith("2:4: the header test requires 2 positional argument(s)")
    assert lines[1].startswith("5:1: unknown command 'frob'")
    assert "Traceback" not in failed.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "kinmail", "sieve", "check", str(tmp_path / "nope.sieve")],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 1 and "Traceback" not in missing.stderr


BROAD = """require ["fileinto", "body", "date", "relational", "comparator-i;ascii-numeric", "variables",
    "foreverypart", "mime", "extracttext", "editheader", "envelope", "subaddress", "regex", "spamtest",
    "duplicate", "imap4flags", "index"];
if address :all :comparator "i;ascii-casemap" :matches ["from", "to", "cc"] "*@*" { set "d" "${2}"; }
if address :detail :count "ge" :comparator "i;ascii-numeric" "to" "1" { addflag "$many"; }
if header :index 2 :last :contains "received" "by" { keep; }
if date :originalzone "date" "year" "2026" { fileinto "Y"; }
if body :text :contains "x" { fileinto "B"; }
if body :content "text/html" :contains "x" { fileinto "H"; }
if header :regex "subject" "^(re|fwd):" { fileinto "R"; }
if spamtest :value "ge" :comparator "i;ascii-numeric" "5" { fileinto "Junk"; }
if duplicate { discard; }
foreverypart {
    if header :mime :param "filename" :matches "content-disposition" "*.exe" { discard; }
    if header :mime :contenttype "content-type" "text/plain" { extracttext :first 100 "t"; }
}
deleteheader :matches "x-*" "*";
addheader :last "X-Seen" "${d}";
"""


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                b"From: a@b.example\r\n",
                b"From: =?utf-8?q?=C3=A9?= <@>\r\n",
                b"To: undisclosed-recipients:;\r\n",
                b'To: "x\\" y" <a+b@c>, d@e\r\n',
                b"Date: Thu, 31 Feb 2026 25:61:61 +9999\r\n",
                b"Date: garbage\r\n",
                b"Subject: Re: hi\r\n",
                b'Content-Type: multipart/mixed; boundary="q"\r\n',
                b"Content-Type: text/html; charset=unknown-8bit\r\n",
                b"Content-Transfer-Encoding: base64\r\n",
                b"Content-Disposition: attachment; filename*=utf-8''%E2%82%AC.exe\r\n",
                b"X-Spam-Score: -3e400\r\n",
                b"\r\n",
                b"--q\r\n",
                b"--q--\r\n",
                b"<html><b>x</b></html>\r\n",
                b"\xff\xfe\x00bad bytes\r\n",
                b" folded continuation\r\n",
                b"no colon line\r\n",
            ]
        ),
        max_size=30,
    )
)
def test_any_message_runs_without_crashing(parts: list[bytes]) -> None:
    from kinmail.sieve.errors import SieveRuntimeError

    compiled = compile_script(BROAD)
    try:
        result = Interpreter(b"".join(parts), Envelope("", "x+y@example.test"), Host()).run(compiled)
        result.final_actions()
        result.message.to_bytes()
    except SieveRuntimeError:
        pass


@pytest.mark.parametrize(
    "nesting",
    [
        b"".join(
            b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) for i in range(3000)
        ),
        b"Content-Type: message/rfc822\r\n\r\n" * 3000,
    ],
)
def test_mime_nested_past_the_parsers_depth_still_runs(nesting: bytes) -> None:
    """The email package recurses once per MIME level: a message nested thousands deep is seen as one part."""
    raw = b"Subject: deep\r\n" + nesting + b"Content-Type: text/plain\r\n\r\nhi\r\n"
    result = Interpreter(raw, Envelope("a@example.org", "x@example.test"), Host()).run(compile_script(BROAD))
    assert result.final_actions()


@pytest.mark.parametrize(
    ("value", "pattern", "expected"),
    [
        ("a@b@c", "*@*", ["a@b@c", "a", "b@c"]),
        ("hello", "h?l*", ["hello", "e", "lo"]),
        ("HeLLo", "h*L?", ["HeLLo", "eL", "o"]),
        ("one two three", "* * *", ["one two three", "one", "two", "three"]),
        ("aaaa", "*a*a", ["aaaa", "", "aa"]),
        ("a*b", "a\\*b", ["a*b"]),
        ("axb", "a\\*b", None),
        ("abc", "*x*y*", None),
        ("", "*", ["", ""]),
    ],
)
def test_matches_wildcards(value: str, pattern: str, expected: list[str] | None) -> None:
    from kinmail.sieve.strings import wildcard_match

    assert wildcard_match("i;ascii-casemap", value, pattern) == expected


def test_matches_with_many_stars_over_a_long_value() -> None:
    from kinmail.sieve.strings import wildcard_match

    # a backtracking regular expression would take hours here; the matcher is O(len(value) * len(pattern))
    assert wildcard_match("i;octet", "a" * 50_000, "*a*a*a*a*a*a*a*b") is None
    assert wildcard_match("i;octet", "a" * 50_000 + "b", "*a*a*a*a*a*a*a*b") is not None


def test_include_loader_checks_included_scripts_at_compile_time(tmp_path: Path) -> None:
    store = ScriptStore(tmp_path, "alice@example.org")
    store.put("lists", 'require "fileinto"; fileinto "Lists";')
    (tmp_path / "global").mkdir()
    (tmp_path / "global" / "policy.sieve").write_text("keep;")
    loader = store.include_loader(tmp_path / "global")
    compile_script('require "include"; include "lists"; include :global "policy";', include_loader=loader)
    with pytest.raises(SieveError) as info:
        compile_script('require "include"; include "missing";', include_loader=loader)
    assert "does not exist" in str(info.value)
    compile_script('require "include"; include :optional "missing";', include_loader=loader)
    store.put("loop", 'require "include"; include "loop";')
    with pytest.raises(SieveError) as info:
        compile_script('require "include"; include "loop";', include_loader=loader)
    assert any("circular include" in m for _, _, m in info.value.errors)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r"), max_size=60))
def test_quoted_strings_round_trip(text: str) -> None:
    quoted = text.replace("\\", "\\\\").replace('"', '\\"')
    compiled = compile_script(f'require "variables";\nset "x" "{quoted}";\n')
    interp = Interpreter(MESSAGE, Envelope(), Host())
    interp.run(compiled)
    assert interp.vars["x"] == text.replace("\n", "\r\n")
