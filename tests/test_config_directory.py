"""The directory: the users file (kinmail and Dovecot passwd-file lines), the aliases file with Postfix
virtual(5) semantics (exact alias, then user+tag, then catch-all; a catch-all never hides a real user), and
every problem reported as `users:LINE` / `aliases:LINE`."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kinmail.config.aliases import parse_aliases
from kinmail.config.directory import Directory, Recipient
from kinmail.config.load import load_config
from kinmail.config.users import format_size, parse_size, parse_users
from kinmail.core.errors import ConfigError

ALICE_HASH = "{PLAIN}alice-pw"
SHA512 = "{SHA512-CRYPT}$6$AkpHqlfX6Xc0K7II$n71nEgLJiiR43j6paVTLe/HhFmFqTR.pkVesTvfH/7u7ypgaCUDWXhFAvjpGIBWKKdKbBZXCdWCPkNwdXAA6m."

USERS = f"""\
# our people
alice@example.test:{ALICE_HASH}:quota=2G
Bob@Example.TEST:{{PLAIN}}bob-pw
carol@example.test:{SHA512}:1000:1000::/home/carol::userdb_quota_rule=*:storage=500M
dave@example.net::
"""

ALIASES = """\
# aliases
postmaster@example.test   alice@example.test
team@example.test         alice@example.test, bob@example.test
                          friend@remote.example
Alice@example.test        alice@example.test, alice@phone.example
bob+lists@example.test    carol@example.test
sales@example.test        team@example.test
@example.net              bob@example.test
abuse                     carol@example.test
old@example.test          @example.net
"""


def _write(tmp_path: Path, users: str, aliases: str | None, extra: str = "") -> Path:
    (tmp_path / "kinmail.toml").write_text(
        f'domains = ["example.test", "example.net"]\ndata_dir = "data"\n{extra}'
    )
    (tmp_path / "users").write_text(users)
    if aliases is not None:
        (tmp_path / "aliases").write_text(aliases)
    return tmp_path / "kinmail.toml"


def _load(tmp_path: Path, users: str = USERS, aliases: str | None = ALIASES, extra: str = "") -> Directory:
    return Directory.load(load_config(_write(tmp_path, users, aliases, extra)))


def _problems(tmp_path: Path, users: str = USERS, aliases: str | None = ALIASES) -> list[str]:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, users, aliases)
    return [str(p) for p in info.value.problems]


def _where(directory: Directory, address: str) -> list[tuple[str, bool, str | None]] | None:
    found = directory.resolve(address)
    return None if found is None else [(r.address, r.local, r.tag) for r in found]


def test_users_file_in_both_forms(tmp_path: Path) -> None:
    directory = _load(tmp_path)
    assert [u.address for u in directory.users] == [
        "alice@example.test",
        "bob@example.test",
        "carol@example.test",
        "dave@example.net",
    ]
    alice = directory.users.get("ALICE@example.test")
    assert alice is not None and alice.quota == 2 * 1024**3 and alice.password == ALICE_HASH
    carol = directory.users.get("carol@example.test")
    assert carol is not None and carol.quota == 500 * 1024**2 and carol.password == SHA512
    dave = directory.users.get("dave@example.net")
    assert dave is not None and dave.password == "" and dave.quota is None
    assert len(directory.users) == 4 and "BOB@example.test" in directory.users


def test_postfix_virtual_semantics(tmp_path: Path) -> None:
    d = _load(tmp_path)
    # A real user; an alias on the user's own address that keeps a copy and forwards.
    assert _where(d, "alice@example.test") == [
        ("alice@example.test", True, None),
        ("alice@phone.example", False, None),
    ]
    # user+tag: the user, tag kept; an exact alias for the +tag form wins over it.
    assert _where(d, "Bob+Shop@Example.test") == [("bob@example.test", True, "shop")]
    assert _where(d, "bob+lists@example.test") == [("carol@example.test", True, None)]
    # Several targets, continuation line, remote forward, recursion through another alias.
    assert _where(d, "sales@example.test") == [
        ("alice@example.test", True, None),
        ("alice@phone.example", False, None),
        ("bob@example.test", True, None),
        ("friend@remote.example", False, None),
    ]
    # An alias found without the tag passes the tag on to local recipients.
    assert _where(d, "postmaster+dmarc@example.test") == [
        ("alice@example.test", True, "dmarc"),
        ("alice@phone.example", False, None),
    ]
    # Catch-all for the domain, but never in front of a real user of that domain.
    assert _where(d, "anything@example.net") == [("bob@example.test", True, None)]
    assert _where(d, "dave@example.net") == [("dave@example.net", True, None)]
    # A bare local part as key is that user at each of our domains.
    assert _where(d, "abuse@example.net") == [("carol@example.test", True, None)]
    assert _where(d, "abuse@example.test") == [("carol@example.test", True, None)]
    # `@otherdomain` as a target is the same user at the other domain (virtual(5)).
    assert _where(d, "old@example.test") == [("bob@example.test", True, None)]
    # Nobody at one of our domains; somebody elsewhere.
    assert d.resolve("nobody@example.test") is None
    assert d.resolve("not an address") is None
    assert d.resolve("Someone@Remote.example") == [
        Recipient("someone@remote.example", local=False, original="someone@remote.example")
    ]
    assert {r.original for r in d.resolve("SALES@example.test") or []} == {"sales@example.test"}


def test_sender_addresses(tmp_path: Path) -> None:
    d = _load(tmp_path)
    assert d.sender_addresses("alice@example.test") == {
        "alice@example.test",
        "postmaster@example.test",
        "team@example.test",
        "sales@example.test",
    }
    assert d.sender_addresses("Carol@example.test") == {
        "carol@example.test",
        "bob+lists@example.test",
        "abuse@example.test",
        "abuse@example.net",
    }
    assert d.is_local_domain("EXAMPLE.net") and not d.is_local_domain("example.org")
    allowed = d.sender_addresses("alice@example.test")
    assert "Team+Newsletter@Example.test" in allowed and "alice+x@example.test" in allowed
    assert "bob@example.test" not in allowed and "bob+alice@example.test" not in allowed and 5 not in allowed


def test_recipient_delimiter_comes_from_the_config(tmp_path: Path) -> None:
    d = _load(tmp_path, extra='[delivery]\nrecipient_delimiter = "-"\n')
    assert _where(d, "bob-news@example.test") == [("bob@example.test", True, "news")]
    assert d.resolve("bob+news@example.test") is None


def test_missing_aliases_file_is_an_empty_table(tmp_path: Path) -> None:
    d = _load(tmp_path, aliases=None)
    assert len(d.aliases) == 0
    assert _where(d, "alice@example.test") == [("alice@example.test", True, None)]


def test_users_file_problems(tmp_path: Path) -> None:
    users = f"""\
alice@example.test:{ALICE_HASH}
no-colon-here
bob@elsewhere.example:{{PLAIN}}x
carol@example.test:{{MD4}}abc
ALICE@example.test:{{PLAIN}}again
not an address:{{PLAIN}}x
erin@example.test:{{PLAIN}}x:quota=lots
frank@example.test:{{SSHA512}}@@@
"""
    assert _problems(tmp_path, users, "") == [
        "users:2: expected address:password[:extra fields]",
        "users:3: domain 'elsewhere.example' of bob@elsewhere.example is not in domains",
        "users:4: unknown password scheme {MD4}",
        "users:5: duplicate user alice@example.test (first on line 1)",
        "users:6: 'not an address' is not an address of the form user@domain",
        "users:7: 'lots' is not a size such as 500M or 2G",
        "users:8: malformed b64 data: Only base64 data is allowed",
    ]


def test_missing_users_file(tmp_path: Path) -> None:
    _write(tmp_path, "", "")
    (tmp_path / "users").unlink()
    with pytest.raises(ConfigError) as info:
        Directory.load(load_config(tmp_path / "kinmail.toml"))
    assert str(info.value) == f"{tmp_path / 'users'}: file not found"


def test_aliases_file_problems(tmp_path: Path) -> None:
    aliases = """\
postmaster@example.test alice@example.test
lonely@example.test
team@example.test nobody@example.test, alice@example.test
x@elsewhere.example alice@example.test
ping@example.test pong@example.test
pong@example.test ping@example.test
self@example.test self@example.test
postmaster@example.test bob@example.test
bad@example.test alice
"""
    assert _problems(tmp_path, USERS, aliases) == [
        "aliases:2: lonely@example.test: no target address",
        "aliases:4: domain 'elsewhere.example' of x@elsewhere.example is not in domains",
        "aliases:8: duplicate alias postmaster@example.test (first on line 1)",
        "aliases:9: target 'alice' must be a full address (user@domain)",
        "aliases:3: target nobody@example.test points nowhere (no such user or alias)",
        "aliases:5: alias loop: ping@example.test → pong@example.test → ping@example.test",
        "aliases:6: alias loop: pong@example.test → ping@example.test → pong@example.test",
        "aliases:7: target self@example.test points nowhere (no such user or alias)",
    ]


def test_problems_of_both_files_come_together(tmp_path: Path) -> None:
    problems = _problems(tmp_path, USERS + "x@nowhere.example:{PLAIN}x\n", ALIASES + "y@example.test\n")
    assert [p.split(": ")[0] for p in problems] == ["users:6", "aliases:11"]


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("2G", 2 * 1024**3),
        ("500M", 500 * 1024**2),
        ("1.5g", 1536 * 1024**2),
        ("10MB", 10 * 1024**2),
        ("1024", 1024),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size
    assert parse_size(format_size(size)) == size


@settings(max_examples=80, deadline=None)
@given(st.text(max_size=300), st.text(max_size=300))
def test_users_and_aliases_parsers_never_crash(users: str, aliases: str) -> None:
    domains = frozenset({"example.test"})
    found, problems = parse_users(users, "users", domains)
    assert all(u.domain in domains for u in found)
    assert all(p.location.startswith("users:") for p in problems)
    entries, problems = parse_aliases(aliases, "aliases", domains)
    assert all(p.location.startswith("aliases:") for p in problems)
    assert all(e.targets for e in entries)


LOCAL = st.text(alphabet="abcdefgh", min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(LOCAL, st.lists(LOCAL, min_size=1, max_size=3)), max_size=8),
    st.sets(LOCAL, max_size=4),
)
def test_resolve_terminates_and_gives_only_users_or_forwards(
    tmp_path_factory: pytest.TempPathFactory, aliases: list[tuple[str, list[str]]], users: set[str]
) -> None:
    folder = tmp_path_factory.mktemp("d")
    user_text = "".join(f"{u}@example.test:{{PLAIN}}x\n" for u in sorted(users))
    alias_text = "".join(
        f"{s}@example.test {', '.join(t + '@example.test' for t in ts)}\n" for s, ts in dict(aliases).items()
    )
    _write(folder, user_text, alias_text)
    directory, _problems = Directory.from_texts(load_config(folder / "kinmail.toml"), user_text, alias_text)
    for local in {s for s, _ in aliases} | users | {"zz"}:
        for recipient in directory.resolve(f"{local}@example.test") or []:
            assert recipient.local and recipient.address in directory.users


def test_internationalised_domains_match_in_either_spelling(tmp_path: Path) -> None:
    (tmp_path / "kinmail.toml").write_text('domains = ["Bücher.example"]\ndata_dir = "data"\n')
    (tmp_path / "users").write_text("anna@BÜCHER.example:{PLAIN}x\n")
    (tmp_path / "aliases").write_text("info@xn--bcher-kva.example anna@bücher.example\n")
    d = Directory.load(load_config(tmp_path / "kinmail.toml"))
    assert d.domains == {"xn--bcher-kva.example"}
    assert [u.address for u in d.users] == ["anna@xn--bcher-kva.example"]
    assert _where(d, "Info@Bücher.example") == [("anna@xn--bcher-kva.example", True, None)]
    assert d.is_local_domain("BÜCHER.example.") and "anna@bücher.example" in d.users
