"""`kinmail dns [DOMAIN]...`: the DNS records to publish for our domains (MX, SPF, DKIM, DMARC, TLS-RPT,
MTA-STS, autoconfig, SRV) and the server's own A/AAAA and PTR, as a table or, with `--zone`, as zone-file lines;
with `--check`, whether each is published as it should be.

Reads the configuration and the DKIM key files (`<config dir>/dkim/`); looks up the server's host name through
the configured resolver to show its addresses and the PTR each needs. Writes nothing.
"""

from __future__ import annotations

import asyncio

import click
from rich.console import Console
from rich.table import Table

from kinmail.core.errors import UsageError
from kinmail.dns.records import (
    CheckResult,
    CheckStatus,
    Record,
    check_records,
    domain_records,
    server_records,
)
from kinmail.dns.resolver import DnsError, Resolver


async def _server_addresses(hostname: str, nameservers: list[str], timeout: float) -> list[str]:
    resolver = Resolver(nameservers, timeout)
    try:
        return await asyncio.wait_for(resolver.addresses(hostname), timeout * 2 + 1)
    except (DnsError, TimeoutError, ValueError):
        return []


@click.command("dns")
@click.argument("domains", nargs=-1)
@click.option("--zone", is_flag=True, help="Print zone-file lines (hints as ; comments) instead of a table.")
@click.option(
    "--ttl", default=3600, show_default=True, type=click.IntRange(60, 86400), help="TTL for --zone."
)
@click.option(
    "--check", is_flag=True, help="Look each record up and say whether it is published as it should be."
)
@click.pass_obj
def dns_command(obj: object, domains: tuple[str, ...], zone: bool, ttl: int, check: bool) -> None:
    """The DNS records to publish for DOMAIN (default: every domain): MX, SPF, DKIM, DMARC, MTA-STS,
    autoconfig, and a PTR hint for the server's address. --check compares them with what DNS answers."""
    from kinmail.config.load import load_config

    loaded = load_config(obj.config_path)  # type: ignore[attr-defined]
    config = loaded.config
    ours = [d.lower() for d in config.domains]
    wanted = [d.rstrip(".").lower() for d in domains] or ours
    unknown = [d for d in wanted if d not in ours]
    if unknown:
        raise UsageError(f"not one of our domains: {', '.join(unknown)} (see `kinmail domain list`)")
    if not wanted:
        raise UsageError("no domains configured yet: add one with `kinmail domain add NAME`")
    keys_dir = loaded.dir / "dkim"
    addresses = asyncio.run(_server_addresses(config.hostname, config.dns.nameservers, config.dns.timeout))
    sections: list[tuple[str, list[Record]]] = [
        (domain, domain_records(domain, config.hostname, keys_dir)) for domain in wanted
    ]
    sections.append((f"the server {config.hostname}", server_records(config.hostname, addresses)))
    missing = [d for d, records in sections[:-1] if not any(r.purpose.startswith("DKIM") for r in records)]
    if check:
        resolver = Resolver(config.dns.nameservers, config.dns.timeout)
        checked = [(title, asyncio.run(check_records(resolver, records))) for title, records in sections]
        _print_checks(checked)
    elif zone:
        _print_zone(sections, ttl)
    else:
        _print_tables(sections)
    for domain in missing:
        click.echo(
            f"kinmail: {domain} has no DKIM keys in {keys_dir / domain}; `kinmail domain add {domain}` makes them",
            err=True,
        )


def _print_zone(sections: list[tuple[str, list[Record]]], ttl: int) -> None:
    for title, records in sections:
        click.echo(f"; --- {title}")
        for record in records:
            if record.hint:
                click.echo(f"; {record.purpose}")
            click.echo(record.zone_line(ttl))
        click.echo("")


def _print_tables(sections: list[tuple[str, list[Record]]]) -> None:
    console = Console(soft_wrap=False)
    if not console.is_terminal:
        console = Console(soft_wrap=False, width=140)
    for title, records in sections:
        table = Table(title=f"DNS records for {title}", show_lines=True, title_justify="left")
        table.add_column("Name", overflow="fold")
        table.add_column("Type")
        table.add_column("Value", overflow="fold")
        table.add_column("Why", overflow="fold")
        for record in records:
            why = ("(hint) " if record.hint else "") + record.purpose
            table.add_row(record.name + ".", record.rtype, record.zone_value(), why)
        console.print(table)


_STYLE = {
    CheckStatus.OK: "green",
    CheckStatus.MISSING: "red",
    CheckStatus.DIFFERENT: "yellow",
    CheckStatus.UNKNOWN: "magenta",
}


def _print_checks(sections: list[tuple[str, list[CheckResult]]]) -> None:
    console = Console(soft_wrap=False)
    if not console.is_terminal:
        console = Console(soft_wrap=False, width=140)
    bad = 0
    for title, results in sections:
        table = Table(title=f"DNS check for {title}", show_lines=True, title_justify="left")
        table.add_column("Status")
        table.add_column("Name", overflow="fold")
        table.add_column("Type")
        table.add_column("Expected", overflow="fold")
        table.add_column("Found", overflow="fold")
        for result in results:
            record = result.record
            bad += result.status is not CheckStatus.OK
            table.add_row(
                f"[{_STYLE[result.status]}]{result.status.value}[/]",
                record.name + ".",
                record.rtype,
                record.zone_value(),
                "\n".join(result.found) or "-",
            )
        console.print(table)
    click.echo(
        "every record is published as it should be"
        if not bad
        else f"{bad} record(s) missing or different: `kinmail dns --zone` prints what to publish"
    )


def register(group: click.Group) -> None:
    group.add_command(dns_command)
