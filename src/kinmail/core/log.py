"""Logging: one line per event in logfmt, with stable keys (`cid`, `queue_id`, `from`, `rcpt`, `status`...).

Call `get_logger(__name__)` and `log.info("event", cid=..., key=value)`. `setup_logging` is called once by
`kinmail serve`; it also writes the mail log in `data_dir/log/` that `kinmail report` reads. Passwords never
go into a log call.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

TRACE = 5
logging.addLevelName(TRACE, "TRACE")


_NEEDS_QUOTES = re.compile(r'[ ="\\\n\t]')


def _quote(value: object) -> str:
    if type(value) is int:
        return str(value)
    text = str(value)
    if text == "" or _NEEDS_QUOTES.search(text):
        text = (
            '"'
            + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
            + '"'
        )
    return text


def logfmt(**fields: object) -> str:
    """Render key=value pairs; None values are left out."""
    return " ".join(
        f"{key.rstrip('_')}={_quote(value)}" for key, value in fields.items() if value is not None
    )


class EventLogger:
    """A thin wrapper that turns `log.info("smtp.accept", cid=..)` into a logfmt line."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def _log(self, level: int, event: str, fields: dict[str, Any], exc_info: bool = False) -> None:
        logger = self._logger
        if logger.isEnabledFor(level):
            # the record made here, not by `Logger.log`: that one walks the stack for the caller's file and
            # line, which no line of ours shows, and cost a third of each line's time
            record = logger.makeRecord(
                logger.name,
                level,
                "",
                0,
                logfmt(event=event, **fields),
                (),
                sys.exc_info() if exc_info else None,
            )
            logger.handle(record)

    def trace(self, event: str, **fields: Any) -> None:
        self._log(TRACE, event, fields)

    def debug(self, event: str, **fields: Any) -> None:
        self._log(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log(logging.ERROR, event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        """Log at ERROR with the traceback of the exception being handled."""
        self._log(logging.ERROR, event, fields, exc_info=True)

    def is_enabled(self, level: int) -> bool:
        return self._logger.isEnabledFor(level)


def get_logger(name: str) -> EventLogger:
    return EventLogger(logging.getLogger(name))


class _Formatter(logging.Formatter):
    """`ts=... level=... MESSAGE`; the line is made once per record, however many handlers write it."""

    _stamp: tuple[int, str] = (-1, "")  # (second, its text), replaced whole: threads format at once

    def format(self, record: logging.LogRecord) -> str:
        line: str | None = record.__dict__.get("_kinmail_line")
        if line is not None:
            return line
        second = int(record.created)
        stamp = self._stamp
        if stamp[0] != second:
            stamp = self._stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        line = (
            f"ts={stamp[1]}.{int(record.msecs):03d}Z level={record.levelname.lower()} {record.getMessage()}"
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        record.__dict__["_kinmail_line"] = line
        return line


def setup_logging(level: str = "info", log_dir: Path | None = None) -> None:
    """Send logfmt lines to stderr and, when `log_dir` is given, to `log_dir/mail.log`."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    numeric = TRACE if level.lower() == "trace" else getattr(logging, level.upper(), logging.INFO)
    root.setLevel(numeric)
    # no line shows the thread or the process: a record need not look them up
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    formatter = _Formatter()
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(formatter)
    root.addHandler(stream)
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_dir / "mail.log", encoding="utf-8")
        file_handler.setFormatter(formatter)
        root.addHandler(file_handler)
