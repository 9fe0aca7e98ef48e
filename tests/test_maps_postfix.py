"""Maps behave as Postfix's manual pages say, checked on the examples those pages give: regexp_table(5)
(first match, `if`/`endif`, `!/re/`, `$1` substitution, case-insensitive by default), cidr_table(5) (first
match, IPv4 and IPv6), access(5) and virtual(5) search orders for indexed tables, inline: and static: from
DATABASE_README; a changed map file is re-read, a broken one keeps the old table."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from kinmail.config.maps import (
    FileMap,
    access_address_keys,
    access_ip_keys,
    access_lookup_address,
    access_lookup_domain,
    access_lookup_ip,
    address_keys,
    lookup_address,
    open_map,
)
from kinmail.core.errors import ConfigError

# regexp_table(5), EXAMPLE SMTPD ACCESS MAP
REGEXP_EXAMPLE = r"""# Disallow sender-specified routing. This is a must if you relay mail
# for other domains.
/[%!@].*[%!@]/       550 Sender-specified routing rejected

# Postmaster is OK, that way they can talk to us about how to fix
# their problem.
/^postmaster@/       OK

# Protect your outgoing majordomo exploders
if !/^owner-/
/^(.*)-outgoing@(.*)$/  550 Use ${1}@${2} instead
endif
"""

# cidr_table(5), EXAMPLE SMTPD ACCESS MAP
CIDR_EXAMPLE = """# Rule order matters. Put more specific allowlist entries
# before more general denylist entries.
192.168.1.1             OK
192.168.0.0/16          REJECT
2001:db8::1             OK
2001:db8::/32           REJECT
"""


def _file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_regexp_table_manual_example(tmp_path: Path) -> None:
    _file(tmp_path, "access.re", REGEXP_EXAMPLE)
    table = open_map("regexp:access.re", tmp_path)
    assert table.lookup("user%other@example.org") == "550 Sender-specified routing rejected"
    assert table.lookup("Postmaster@example.org") == "OK"  # case-insensitive by default
    assert table.lookup("list-outgoing@example.org") == "550 Use list@example.org instead"
    assert table.lookup("owner-list-outgoing@example.org") is None  # inside `if !/^owner-/`
    assert table.lookup("alice@example.org") is None


def test_regexp_first_match_wins_and_flags(tmp_path: Path) -> None:
    _file(
        tmp_path,
        "t.re",
        r"""/^abc/i        case-sensitive ${0}
/^ABC/         first
/^ABC/         second
!/@/           no-at
/^(a)(b)?(c)/  [$1|$2|$(3)|$$]
/x{2}|[[:digit:]]{3}/ posix
if /^nest/
if /deep$/
/./ nested-deep
endif
/./ nested
endif
""",
    )
    table = open_map("regexp:t.re", tmp_path)
    assert table.lookup("abc@x") == "case-sensitive abc"  # `i` toggles case sensitivity on; $0: whole match
    assert table.lookup("ABC@x") == "first"
    assert table.lookup("plain") == "no-at"
    assert table.lookup("ac@x") == "[a||c|$]"
    assert table.lookup("a123@x") == "posix"
    assert table.lookup("nest-deep@x") == "nested"
    assert table.lookup("nest@deep") == "nested-deep"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("/abc/ OK\n/unclosed OK\n", "t.re:2: no closing '/' after the pattern"),
        ("/a(/ OK\n", "t.re:1: bad regular expression"),
        ("/a/\n", "t.re:1: no result after the pattern"),
        ("/a/q OK\n", "t.re:1: unknown flag 'q' after the pattern"),
        ("/(a)/ $2\n", "t.re:1: $2: the pattern has only 1 group(s)"),
        ("!/(a)/ $1\n", "t.re:1: $n substitution is not available with a negated pattern"),
        ("if /a/\n/b/ OK\n", "t.re:1: if without endif"),
        ("endif\n", "t.re:1: endif without if"),
        ("abc OK\n", "t.re:1: pattern must start with a delimiter such as '/', not 'a'"),
    ],
)
def test_regexp_problems_name_the_line(tmp_path: Path, text: str, problem: str) -> None:
    _file(tmp_path, "t.re", text)
    with pytest.raises(ConfigError) as info:
        open_map("regexp:t.re", tmp_path)
    assert str(info.value).startswith(problem)


def test_cidr_table_manual_example(tmp_path: Path) -> None:
    _file(tmp_path, "client.cidr", CIDR_EXAMPLE)
    table = open_map("cidr:client.cidr", tmp_path)
    assert table.lookup("192.168.1.1") == "OK"
    assert table.lookup("192.168.1.2") == "REJECT"
    assert table.lookup("192.168.255.255") == "REJECT"
    assert table.lookup("10.0.0.1") is None
    assert table.lookup("2001:db8::1") == "OK"
    assert table.lookup("2001:0db8:0000::0001") == "OK"  # compared as binary, leading zeros do not matter
    assert table.lookup("2001:db8:ffff::1") == "REJECT"
    assert table.lookup("2001:db9::1") is None
    assert table.lookup("::ffff:192.168.1.1") == "OK"  # an IPv4-mapped client is the IPv4 address
    assert table.lookup("[192.168.7.7]") == "REJECT"
    assert table.lookup("not an address") is None


def test_cidr_order_negation_and_if(tmp_path: Path) -> None:
    _file(
        tmp_path,
        "t.cidr",
        """0.0.0.0/0   first
192.0.2.0/24 never reached
""",
    )
    assert open_map("cidr:t.cidr", tmp_path).lookup("192.0.2.1") == "first"
    _file(
        tmp_path,
        "u.cidr",
        """if 10.0.0.0/8
if !10.1.0.0/16
10.0.0.0/8 outer
endif
endif
![::1] not-loopback
[::1]/128 loopback
""",
    )
    table = open_map("cidr:u.cidr", tmp_path)
    assert table.lookup("10.2.3.4") == "outer"
    assert table.lookup("10.1.3.4") == "not-loopback"
    assert table.lookup("::1") == "loopback"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (
            "192.168.1.1/16 REJECT",
            "non-null host address bits in '192.168.1.1/16', perhaps you should use '192.168.0.0/16' instead",
        ),
        ("192.168.01.1 OK", "leading zeros in an IPv4 address"),
        ("2001:db8::/129 OK", "is not an address or network/prefix"),
        ("example.org OK", "is not an address or network/prefix"),
        ("10.0.0.0/8", "no result after the network"),
        ("endif", "endif without if"),
        ("if 10.0.0.0/8\n10.1.0.0/16 OK", "if without endif"),
        ("if 10.0.0.0/8 OK", "unexpected text after the if pattern: 'OK'"),
    ],
)
def test_cidr_problems(tmp_path: Path, line: str, problem: str) -> None:
    _file(tmp_path, "t.cidr", "# comment\n" + line + "\n")
    with pytest.raises(ConfigError) as info:
        open_map("cidr:t.cidr", tmp_path)
    assert str(info.value).startswith("t.cidr:2: ") and problem in str(info.value)


def test_access_example_with_an_indexed_table(tmp_path: Path) -> None:
    # access(5) EXAMPLE: permit 1.2.3.4, reject the rest of 1.2.3.0/24.
    _file(tmp_path, "access", "1.2.3   REJECT\n1.2.3.4 OK\n")
    table = open_map("texthash:access", tmp_path)
    assert access_lookup_ip(table, "1.2.3.4") == "OK"
    assert access_lookup_ip(table, "1.2.3.5") == "REJECT"
    assert access_lookup_ip(table, "1.2.4.1") is None
    assert access_ip_keys("1.2.3.4") == ["1.2.3.4", "1.2.3", "1.2", "1"]
    assert access_ip_keys("2001:db8::1") == ["2001:db8::1", "2001:db8:", "2001:db8", "2001"]


def test_access_address_and_domain_search_order(tmp_path: Path) -> None:
    # access(5) EMAIL ADDRESS EXTENSION: user+foo@domain, user@domain, domain, user+foo@, user@.
    assert access_address_keys("user+foo@mail.example.org") == [
        "user+foo@mail.example.org",
        "user@mail.example.org",
        "mail.example.org",
        "example.org",
        "org",
        "user+foo@",
        "user@",
    ]
    assert access_address_keys("") == ["<>"]
    _file(
        tmp_path,
        "senders",
        "example.org REJECT domain\nuser@ OK user part\nspammer@example.org DISCARD\n<> DUNNO bounces\n",
    )
    table = open_map("senders", tmp_path)  # a plain file name is texthash
    assert access_lookup_address(table, "spammer+x@example.org") == "DISCARD"
    assert access_lookup_address(table, "other@sub.example.org") == "REJECT domain"  # parent domain matches
    assert access_lookup_address(table, "user@example.net") == "OK user part"
    assert access_lookup_address(table, "") == "DUNNO bounces"
    assert access_lookup_domain(table, "smtp.EXAMPLE.org") == "REJECT domain"
    assert access_lookup_domain(table, "example.net") is None


def test_virtual_search_order_for_indexed_tables(tmp_path: Path) -> None:
    # virtual(5) ADDRESS EXTENSION: user+foo@domain, user@domain, user+foo, user, @domain.
    assert address_keys("user+foo@example.org") == [
        "user+foo@example.org",
        "user@example.org",
        "user+foo",
        "user",
        "@example.org",
    ]
    assert address_keys("user@example.org") == ["user@example.org", "user", "@example.org"]
    assert address_keys("a-b@x.org", "-") == ["a-b@x.org", "a@x.org", "a-b", "a", "@x.org"]
    entries = {
        "user+foo@example.org": "exact",
        "user@example.org": "address",
        "user+foo": "local+ext",
        "user": "local",
        "@example.org": "catch-all",
    }
    for drop in [None, *entries]:
        kept = {
            k: v
            for k, v in entries.items()
            if k != drop and (drop is None or list(entries).index(k) > list(entries).index(drop))
        }
        table = open_map("inline:{" + ", ".join(f"{{{k}={v}}}" for k, v in kept.items()) + "}", tmp_path)
        expected = next(iter(kept.values()), None)
        assert lookup_address(table, "User+Foo@Example.org") == expected


def test_pattern_tables_only_see_the_whole_key(tmp_path: Path) -> None:
    # regexp_table(5) TABLE SEARCH ORDER: no partial keys for pattern tables.
    _file(tmp_path, "t.re", "/^example\\.org$/ domain-only\n/^user@$/ user-part\n")
    table = open_map("regexp:t.re", tmp_path)
    assert access_lookup_address(table, "user@example.org") is None
    assert access_lookup_domain(table, "example.org") == "domain-only"
    assert lookup_address(table, "user@example.org") is None


def test_inline_and_static_as_database_readme_writes_them(tmp_path: Path) -> None:
    table = open_map("inline:{ key=value, { key2 = text with whitespace or comma, here } ,KEY3=x}", tmp_path)
    assert table.lookup("key") == "value"
    assert table.lookup("KEY2") == "text with whitespace or comma, here"
    assert table.lookup("key3") == "x"
    assert table.lookup("key4") is None
    assert open_map("static:foobar", tmp_path).lookup("anything") == "foobar"
    assert open_map("static:{ text with whitespace }", tmp_path).lookup("x") == "text with whitespace"
    rules = open_map("cidr:{ {192.0.2.0/24 REJECT spam}, {0.0.0.0/0 OK} }", tmp_path)
    assert rules.lookup("192.0.2.9") == "REJECT spam" and rules.lookup("198.51.100.1") == "OK"
    regexp = open_map("regexp:{ {/^a/ A}, {/b$/ B} }", tmp_path)
    assert regexp.lookup("ab") == "A" and regexp.lookup("xb") == "B"
    with pytest.raises(ConfigError, match="unknown map type 'proxy'"):
        open_map("proxy:ldap:/etc/ldap.cf", tmp_path)
    for bad in ("inline:{ a=1", "inline:{ novalue }", "inline:a=1", "static:{x", "bogus", "texthash:"):
        with pytest.raises(ConfigError):
            open_map(bad, tmp_path)


def test_texthash_format(tmp_path: Path) -> None:
    _file(
        tmp_path,
        "t",
        "# comment\n  # indented comment\nKey1   value one\n  continued\n\nkey2\tv2\nkey3 v3 # not a comment\n",
    )
    table = open_map("texthash:t", tmp_path)
    assert table.lookup("KEY1") == "value one continued"
    assert table.lookup("key2") == "v2"
    assert table.lookup("key3") == "v3 # not a comment"  # postmap: only whole lines are comments
    assert open_map("hash:t", tmp_path).lookup("key2") == "v2"  # migrated hash: specs read the source file
    _file(tmp_path, "bad", "a 1\nlonely\na 2\n")
    with pytest.raises(ConfigError) as info:
        open_map("bad", tmp_path)
    assert [str(p) for p in info.value.problems] == [
        "bad:2: expected format: key whitespace value",
        "bad:3: duplicate key 'a' (first on line 1)",
    ]
    with pytest.raises(ConfigError) as info:
        open_map("texthash:missing", tmp_path)
    assert "cannot read map" in str(info.value)


def test_changed_file_is_reread_and_a_broken_one_keeps_the_old_table(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [100.0]
    path = _file(tmp_path, "client.cidr", "192.0.2.0/24 REJECT\n")
    table = FileMap("cidr:client.cidr", "cidr", path, clock=lambda: now[0])
    assert table.lookup("192.0.2.1") == "REJECT"

    path.write_text("192.0.2.0/24 OK\n")
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 10**9))
    now[0] += 0.5
    assert table.lookup("192.0.2.1") == "REJECT"  # looked at no more than once a second
    now[0] += 0.6
    assert table.lookup("192.0.2.1") == "OK"

    path.write_text("192.0.2.0/24 OK\nthis is not cidr\n")
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 2 * 10**9))
    now[0] += 1.1
    with caplog.at_level(logging.WARNING):
        assert table.lookup("192.0.2.1") == "OK"
    assert "event=map.reload_failed" in caplog.text and "client.cidr:2" in caplog.text

    path.unlink()
    now[0] += 1.1
    assert table.lookup("192.0.2.1") == "OK"
