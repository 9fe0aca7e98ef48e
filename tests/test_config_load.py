"""Loading kinmail.toml: every kind of mistake is reported, all at once, as `kinmail.toml:LINE` (syntax) or
`kinmail.toml:section.key` (schema) with a plain reason; relative paths resolve against the config folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kinmail.config.load import load_config, parse_config
from kinmail.config.reference import sections, toml_value, top_level_keys
from kinmail.core.errors import ConfigError


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return [str(p) for p in info.value.problems]


def test_empty_file_is_all_defaults() -> None:
    config = parse_config("")
    assert config.listen.smtp == ["[::]:25"]
    assert config.smtpd.mynetworks == ["127.0.0.0/8", "[::1]/128"]
    assert config.delivery.recipient_delimiter == "+"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('hostname = "a"\ndomains = [\n"x",\n', "kinmail.toml:2: "),  # where the unclosed array starts
        ("hostname = \n", "kinmail.toml:1: Invalid value"),
        ("a = 1\n\n[smtpd]\nhelo_required = true\nhelo_required = false\n", "kinmail.toml:5: "),
        ("[smtpd]\n[smtpd]\n", "kinmail.toml:2: "),
        ('hostname = "unterminated\n', "kinmail.toml:1: "),
    ],
)
def test_toml_syntax_errors_name_the_line(text: str, expected: str) -> None:
    problems = _problems(text)
    assert len(problems) == 1
    assert problems[0].startswith(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hostnme = 'x'", "kinmail.toml:hostnme: unknown key (did you mean 'hostname'?)"),
        (
            "[smtpd]\nhelo_requird = true",
            "kinmail.toml:smtpd.helo_requird: unknown key (did you mean 'helo_required'?)",
        ),
        ("[smtp]\nx = 1", "kinmail.toml:smtp: unknown section"),
        (
            "[smtpd]\nhelo_required = 'yes'",
            "kinmail.toml:smtpd.helo_required: expected true or false, got a string",
        ),
        (
            "[smtpd]\nmessage_size_limit = '10M'",
            "kinmail.toml:smtpd.message_size_limit: expected an integer, got a string",
        ),
        (
            "[smtpd]\nmessage_size_limit = 1.5",
            "kinmail.toml:smtpd.message_size_limit: expected an integer, got a number",
        ),
        (
            "[smtpd]\nmessage_size_limit = -1",
            "kinmail.toml:smtpd.message_size_limit: input should be greater than or equal to 0, got -1",
        ),
        ("hostname = 5", "kinmail.toml:hostname: expected a string, got an integer"),
        ("domains = 'example.org'", "kinmail.toml:domains: expected a list, got a string"),
        ("listen = ['x']", "kinmail.toml:listen: expected a table ([section]), got a list"),
        ("[listen]\nsmtp = ['127.0.0.1']", "kinmail.toml:listen.smtp: item 1: '127.0.0.1' has no :port"),
        (
            "[listen]\nsmtp = ['[::]:25', '::1:25']",
            "kinmail.toml:listen.smtp: item 2: '::1:25': write IPv6 addresses in brackets, as [::1]:25",
        ),
        (
            "[listen]\nimap = ['127.0.0.1:99999']",
            "kinmail.toml:listen.imap: item 1: '127.0.0.1:99999': port must be a number from 1 to 65535",
        ),
        (
            "[listen]\nimap = ['bad host:143']",
            "kinmail.toml:listen.imap: item 1: 'bad host' is neither an IP address nor a host name",
        ),
        (
            "[listen]\nsmtp = ['127.0.0.1:2525']\nimap = ['127.0.0.1:2525']",
            "kinmail.toml:listen: 127.0.0.1:2525 is given to both smtp and imap",
        ),
        (
            "[smtpd]\nmynetworks = ['10.1.2.3/8']",
            "kinmail.toml:smtpd.mynetworks: item 1: '10.1.2.3/8' has host bits set; did you mean '10.0.0.0/8'?",
        ),
        (
            "[smtpd]\nmynetworks = ['10.0.0.0/33']",
            "kinmail.toml:smtpd.mynetworks: item 1: '10.0.0.0/33' is not a network such as 192.168.0.0/16 or [2001:db8::]/32",
        ),
        (
            "[smtpd]\nmynetworks = ['example.org']",
            "kinmail.toml:smtpd.mynetworks: item 1: 'example.org' is not a network",
        ),
        ("domains = ['example.org', 'EXAMPLE.org']", "kinmail.toml:domains: 'example.org' is listed twice"),
        ("domains = ['exa mple.org']", "kinmail.toml:domains: item 1: 'exa mple.org' is not a domain name"),
        ("hostname = 'mail_server'", "kinmail.toml:hostname: 'mail_server' is not a domain name"),
        (
            "log_level = 'loud'",
            'kinmail.toml:log_level: \'loud\' is not one of "trace", "debug", "info", "warning", "error"',
        ),
        (
            "[imap]\nplaintext_auth_without_tls = 'yes'",
            'kinmail.toml:imap.plaintext_auth_without_tls: \'yes\' is not one of "never", "loopback", "always"',
        ),
        (
            "[delivery]\nmaximal_queue_lifetime = '5 days'",
            "kinmail.toml:delivery.maximal_queue_lifetime: '5 days' is not a duration such as 30s, 5m, 4h, 5d",
        ),
        (
            "[delivery]\nrelayhost = '[smtp.example.org]:submission'",
            "kinmail.toml:delivery.relayhost: '[smtp.example.org]:submission' is not [host] or [host]:port",
        ),
        (
            "[delivery]\nrecipient_delimiter = '@'",
            "kinmail.toml:delivery.recipient_delimiter: '@': use one or a few characters",
        ),
        (
            "[dns]\nnameservers = ['dns.example']",
            "kinmail.toml:dns.nameservers: item 1: 'dns.example': a name server must be an IP address",
        ),
        (
            "[web]\nbase_url = 'mail.example.org'",
            "kinmail.toml:web.base_url: 'mail.example.org' is not an http:// or https:// URL",
        ),
    ],
)
def test_schema_errors_name_section_and_key(text: str, expected: str) -> None:
    problems = _problems(text)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems[0]


def test_every_problem_is_reported_at_once() -> None:
    problems = _problems(
        """
hostname = "ok.example.org"
bogus = 1
[smtpd]
helo_required = "no"
mynetworks = ["1.2.3.4/8"]
[listen]
smtp = ["nope"]
[auth]
throttle_window = 0
"""
    )
    locations = sorted(p.split(": ", 1)[0] for p in problems)
    assert locations == [
        "kinmail.toml:auth.throttle_window",
        "kinmail.toml:bogus",
        "kinmail.toml:listen.smtp",
        "kinmail.toml:smtpd.helo_required",
        "kinmail.toml:smtpd.mynetworks",
    ]


def test_valid_values_are_accepted_and_normalised() -> None:
    config = parse_config(
        """
hostname = "Mail.Example.ORG."
domains = ["Example.ORG", "example.net"]
[listen]
smtp = ["[::]:25", "0.0.0.0:25", ":2525", "mail.example.org:25"]
[smtpd]
mynetworks = ["192.168.0.0/16", "[2001:db8::]/32", "10.0.0.1", "::1"]
[delivery]
relayhost = "[smtp.example.org]:587"
[dns]
nameservers = ["127.0.0.1:5353", "192.0.2.53", "[::1]:53"]
timeout = 2
"""
    )
    assert config.hostname == "mail.example.org"
    assert config.domains == ["example.org", "example.net"]
    assert config.dns.timeout == 2.0


def test_paths_resolve_against_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "kinmail.toml").write_text('data_dir = "var/data"\n[tls]\ncert = "/abs/cert.pem"\n')
    monkeypatch.chdir(tmp_path)
    loaded = load_config(Path("etc/kinmail.toml"))
    assert loaded.path == folder / "kinmail.toml"
    assert loaded.dir == folder
    assert loaded.data_dir == folder / "var" / "data"
    assert loaded.resolve(loaded.config.tls.cert) == Path("/abs/cert.pem")
    assert loaded.resolve(loaded.config.users_file) == folder / "users"


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.toml")
    assert "missing.toml: cannot read: No such file or directory" in str(info.value)
    path = tmp_path / "kinmail.toml"
    path.write_bytes(b'hostname = "a"\n# caf\xe9\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == "kinmail.toml:2: not valid UTF-8"


@pytest.mark.parametrize("text", ["a = " + "[" * 100_000, "a = " + "{b = " * 5_000])
def test_absurdly_nested_values_are_a_problem_not_a_crash(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert str(info.value) == "kinmail.toml: arrays or tables nested too deeply"


SCALARS = st.one_of(
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=3),
    st.dictionaries(st.text(min_size=1, max_size=5), SCALARS, max_size=2),
)
KEYS = [(None, name) for name, _ in top_level_keys()] + [
    (section, key) for section, model in sections() for key in model.model_fields
]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), max_size=6))
def test_any_values_give_a_config_or_located_problems(
    pairs: list[tuple[tuple[str | None, str], object]],
) -> None:
    tables: dict[str | None, dict[str, object]] = {}
    for (section, key), value in pairs:
        tables.setdefault(section, {})[key] = value
    lines = [f"{key} = {toml_value(value)}" for key, value in tables.pop(None, {}).items()]
    for section, values in tables.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in values.items())
    try:
        parse_config("\n".join(lines) + "\n")
    except ConfigError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.location.startswith("kinmail.toml:") and problem.message


@given(st.text(max_size=200))
def test_any_text_gives_a_config_or_located_problems(text: str) -> None:
    try:
        parse_config(text)
    except ConfigError as exc:
        assert all(p.location.startswith("kinmail.toml:") for p in exc.problems)
