"""Property tests of the map parsers: any text either parses or raises ConfigError (never anything else),
tables written out and read back give the same lookups, and cidr lookups agree with `ipaddress`."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from kinmail.config.mapparse import logical_lines, parse_cidr, parse_indexed, parse_inline, parse_regexp
from kinmail.config.maps import address_keys, open_map
from kinmail.core.errors import ConfigError

KEY = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEF0123456789.-_@+", min_size=1, max_size=20)
VALUE = (
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789 .-_:", min_size=1, max_size=30)
    .map(str.strip)
    .filter(bool)
)


@given(st.text(max_size=300))
def test_parsers_raise_only_config_error(text: str) -> None:
    for parse in (parse_indexed, parse_regexp, parse_cidr):
        try:
            table = parse(text, "t")
        except ConfigError as exc:
            assert exc.problems and all(p.location.startswith("t:") for p in exc.problems)
            continue
        if hasattr(table, "lookup"):
            table.lookup("192.0.2.1")
            table.lookup("user@example.org")


@given(st.text(max_size=200))
def test_inline_parser_raises_only_config_error(text: str) -> None:
    try:
        parse_inline(text, "inline")
    except ConfigError:
        pass


@given(st.dictionaries(KEY, VALUE, max_size=15))
def test_texthash_round_trip(entries: dict[str, str]) -> None:
    folded: dict[str, str] = {}
    for key, value in entries.items():
        folded.setdefault(key.lower(), value)
    text = "".join(f"{key} {value}\n" for key, value in folded.items())
    assert parse_indexed(text, "t") == folded


@given(st.dictionaries(KEY, VALUE, max_size=10))
def test_inline_round_trip(entries: dict[str, str]) -> None:
    folded: dict[str, str] = {}
    for key, value in entries.items():
        folded.setdefault(key.lower(), value)
    spec = "{ " + ", ".join(f"{{ {key} = {value} }}" for key, value in folded.items()) + " }"
    assert parse_inline(spec, "inline") == folded


@given(st.lists(st.text(max_size=30), max_size=12))
def test_logical_lines_keep_every_content_line(lines: list[str]) -> None:
    lines = [line.replace("\r", " ").replace("\n", " ").replace("\x0b", " ").replace("\x0c", " ")
             .replace("\x1c", " ").replace("\x1d", " ").replace("\x1e", " ").replace("\x85", " ")
             .replace("\u2028", " ").replace("\u2029", " ") for line in lines]  # fmt: skip
    text = "\n".join(lines)
    joined = " ".join(body for _number, body in logical_lines(text))
    expected = " ".join(line.strip() for line in lines if line.strip() and not line.strip().startswith("#"))
    assert joined == expected


networks = st.one_of(
    st.builds(
        ipaddress.IPv4Network, st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)), st.just(False)
    ),
    st.builds(
        ipaddress.IPv6Network, st.tuples(st.integers(0, 2**128 - 1), st.integers(0, 128)), st.just(False)
    ),
)
addresses = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6))


@settings(max_examples=60)
@given(st.lists(networks, min_size=1, max_size=8), st.lists(addresses, min_size=1, max_size=8))
def test_cidr_first_match_agrees_with_ipaddress(
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
    probes: list[ipaddress.IPv4Address | ipaddress.IPv6Address],
) -> None:
    text = "".join(f"{net} rule{index}\n" for index, net in enumerate(nets))
    table = parse_cidr(text, "t")
    for probe in [*probes, *(net.network_address for net in nets)]:
        if isinstance(probe, ipaddress.IPv6Address) and probe.ipv4_mapped is not None:
            continue
        expected = next(
            (f"rule{i}" for i, net in enumerate(nets) if net.version == probe.version and probe in net), None
        )
        assert table.lookup(str(probe)) == expected


@given(
    KEY.filter(lambda k: "@" not in k), KEY.filter(lambda k: "@" not in k), st.sampled_from(["+", "-", "+-"])
)
def test_address_keys_start_with_the_whole_address_and_end_with_the_domain(
    local: str, domain: str, delimiter: str
) -> None:
    address = f"{local}@{domain}"
    keys = address_keys(address, delimiter)
    assert keys[0] == address
    assert keys[-1] == f"@{domain}"
    assert len(keys) == len(set(keys))


def test_open_map_with_odd_specs(tmp_path: Path) -> None:
    for spec in ("static:", "inline:{}", "regexp:{}", "cidr:{ }"):
        open_map(spec, tmp_path)
