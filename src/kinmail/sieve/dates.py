"""Date parts for the date and currentdate tests (RFC 5260 §4-5): parsing RFC 5322 dates, converting zones,
and rendering `year`, `julian`, `iso8601`, `std11`, `weekday`...

Pure functions called by `kinmail.sieve.interp_ext`; nothing kept on disk.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re

_ZONE = re.compile(r"^([+-])([0-9]{2})([0-9]{2})$")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
MJD_EPOCH = dt.date(1858, 11, 17)


def parse_date(value: str) -> dt.datetime | None:
    """An RFC 5322 date-time as an aware datetime, or None."""
    value = value.strip()
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_tz(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None
    year, month, day, hour, minute, second = parsed[:6]
    offset = parsed[9] or 0
    try:
        return dt.datetime(
            year, month, day, hour, minute, min(second, 59), tzinfo=dt.timezone(dt.timedelta(seconds=offset))
        )
    except (ValueError, OverflowError):
        return None


def parse_zone(zone: str) -> dt.timezone | None:
    m = _ZONE.match(zone)
    if m is None:
        return None
    hours, minutes = int(m.group(2)), int(m.group(3))
    if minutes > 59:
        return None
    delta = dt.timedelta(hours=hours, minutes=minutes)
    return dt.timezone(-delta if m.group(1) == "-" else delta)


def to_zone(when: dt.datetime, zone: str | None, now: dt.datetime) -> dt.datetime | None:
    """`when` in `zone` (`+hhmm`), or in the local zone (that of `now`) when None; None for a bad zone."""
    if zone is None:
        tz = now.tzinfo or dt.UTC
        return when.astimezone(tz)
    parsed = parse_zone(zone)
    if parsed is None:
        return None
    return when.astimezone(parsed)


def zone_text(when: dt.datetime) -> str:
    offset = when.utcoffset() or dt.timedelta(0)
    total = int(offset.total_seconds()) // 60
    sign = "-" if total < 0 else "+"
    total = abs(total)
    return f"{sign}{total // 60:02d}{total % 60:02d}"


def date_part(when: dt.datetime, part: str) -> str | None:
    if part == "year":
        return f"{when.year:04d}"
    if part == "month":
        return f"{when.month:02d}"
    if part == "day":
        return f"{when.day:02d}"
    if part == "date":
        return f"{when.year:04d}-{when.month:02d}-{when.day:02d}"
    if part == "julian":
        return str((when.date() - MJD_EPOCH).days)
    if part == "hour":
        return f"{when.hour:02d}"
    if part == "minute":
        return f"{when.minute:02d}"
    if part == "second":
        return f"{when.second:02d}"
    if part == "time":
        return f"{when.hour:02d}:{when.minute:02d}:{when.second:02d}"
    if part == "iso8601":
        z = zone_text(when)
        return when.strftime("%Y-%m-%dT%H:%M:%S") + f"{z[:3]}:{z[3:]}"
    if part == "std11":
        return (
            f"{_DAYS[when.weekday()]}, {when.day:02d} {_MONTHS[when.month - 1]} {when.year:04d} "
            f"{when.hour:02d}:{when.minute:02d}:{when.second:02d} {zone_text(when)}"
        )
    if part == "zone":
        return zone_text(when)
    if part == "weekday":
        return str((when.weekday() + 1) % 7)
    return None
