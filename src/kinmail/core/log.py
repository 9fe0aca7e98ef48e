"""Logging: one line per event in logfmt, with stable keys (`cid`, `queue_id`, `from`, `rcpt`, `status`...).

Call `get_logger(__name__)` and `log.info("event", cid=..., key=value)`. `setup_logging` is called once by
`kinmail serve`; it also writes the mail log in `data_dir/log/` that `kinmail report` reads. Passwords never
go into a log call.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

TRACE = 5
logging.addLevelName(TRACE, "TRACE")


_NEEDS_QUOTES = re.compile(r'[ ="\\\n\t]')
_needs_quotes = _NEEDS_QUOTES.search
_PREFIXES: dict[str, str] = {}  # key -> "key=" (a trailing _ dropped: from_ for the reserved word)


def _quote(value: object) -> str:
    if type(value) is int:
        return str(value)
    text = str(value)
    if text == "" or _needs_quotes(text):
        text = (
            '"'
            + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
            + '"'
        )
    return text


def logfmt(**fields: object) -> str:
    """Render key=value pairs; None values are left out."""
    parts = []
    for key, value in fields.items():
        if value is None:
            continue
        prefix = _PREFIXES.get(key)
        if prefix is None:
            prefix = _PREFIXES[key] = key.rstrip("_") + "="
        parts.append(prefix + _quote(value))
    return " ".join(parts)


class EventLogger:
    """A thin wrapper that turns `log.info("smtp.accept", cid=..)` into a logfmt line."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def _log(self, level: int, event: str, fields: dict[str, Any], exc_info: bool = False) -> None:
        logger = self._logger
        if logger.isEnabledFor(level):
            sink = _sink
            if sink is not None:
                if not exc_info and sink.serves(logger):
                    sink.write(level, logfmt(event=event, **fields))
                    return
                sink.flush()  # what waits goes out before this line
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


_stamp: tuple[int, str] = (-1, "")  # (second, its text), replaced whole: threads format at once


def _line(created: float, level: str, message: str) -> str:
    """`ts=... level=... MESSAGE`."""
    global _stamp
    second = int(created)
    stamp = _stamp
    if stamp[0] != second:
        stamp = _stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"ts={stamp[1]}.{int((created - second) * 1000):03d}Z level={level} {message}"


class _Formatter(logging.Formatter):
    """`_line` for a record; the line is made once per record, however many handlers write it."""

    def format(self, record: logging.LogRecord) -> str:
        line: str | None = record.__dict__.get("_kinmail_line")
        if line is not None:
            return line
        line = _line(record.created, record.levelname.lower(), record.getMessage())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        record.__dict__["_kinmail_line"] = line
        return line


class _Sink:
    """The outputs `setup_logging` made, written to straight: a line is made once and goes to each of them
    without a `LogRecord` and the logging module's handler calls (half of a line's cost; five lines a message
    in the SMTP server). Used only while the root logger has exactly these handlers and the logger asked and
    its parents have none of their own, so that anything else (a test's capture, another handler) gets records
    as usual.

    On the event loop's thread the lines of one turn of the loop are gathered and written together when the
    callbacks of that turn are done, one write to each output instead of one per line (a login and its logout
    made four writes). A warning or worse, and any line from another thread, is written at once with whatever
    is waiting, so the order of lines is kept and nothing that matters waits; what is left when the process
    ends is written by `flush` at exit."""

    def __init__(self, handlers: list[logging.StreamHandler[Any]]) -> None:
        self.handlers = handlers
        self._pending: list[str] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop a `flush` is waiting on, if one is

    def serves(self, logger: logging.Logger) -> bool:
        root = logging.root
        if root.handlers != self.handlers or root.filters:
            return False
        node: logging.Logger | None = logger
        while node is not None and node is not root:  # its parents ("kinmail.queue", "kinmail") too
            if node.handlers or node.filters or not node.propagate:
                return False
            node = node.parent
        return True

    def write(self, level: int, message: str) -> None:
        text = (
            _line(time.time(), _LEVEL_NAMES.get(level) or logging.getLevelName(level).lower(), message) + "\n"
        )
        loop = _running_loop() if level < logging.WARNING else None
        with self._lock:
            self._pending.append(text)
            if loop is not None:
                if self._loop is loop:
                    return  # the flush of this turn is already asked for
                if self._loop is None:
                    self._loop = loop
                    loop.call_soon(self.flush)
                    return
        self.flush()  # another thread, a warning, or a loop that is not the one waited on (a test's second)

    def flush(self) -> None:
        """Write the waiting lines to each output and flush it."""
        with self._lock:
            self._loop = None
            if not self._pending:
                return
            text = "".join(self._pending)
            self._pending.clear()
            for handler in self.handlers:
                handler.acquire()  # the lock `Handler.handle` takes: lines from both ways never mix
                try:
                    stream = handler.stream
                    if stream is not None:
                        stream.write(text)
                        stream.flush()
                except (OSError, ValueError):
                    pass  # a full disk, a closed stream: the lines are lost, not the server
                finally:
                    handler.release()


def _flush_sink() -> None:
    if _sink is not None:
        _sink.flush()


_LEVEL_NAMES = {TRACE: "trace", 10: "debug", 20: "info", 30: "warning", 40: "error", 50: "critical"}
_sink: _Sink | None = None
_running_loop = asyncio.events._get_running_loop  # None off the loop's thread; the C function, no exception


def setup_logging(level: str = "info", log_dir: Path | None = None) -> None:
    """Send logfmt lines to stderr and, when `log_dir` is given, to `log_dir/mail.log`."""
    global _sink
    if _sink is None:
        atexit.register(_flush_sink)  # runs before the logging module's own shutdown closes the handlers
    else:
        _sink.flush()
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
    handlers: list[logging.StreamHandler[Any]] = [stream]
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_dir / "mail.log", encoding="utf-8")
        file_handler.setFormatter(formatter)
        root.addHandler(file_handler)
        handlers.append(file_handler)
    _sink = _Sink(handlers)
