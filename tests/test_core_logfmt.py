"""`kinmail.core.log`'s logfmt lines and `kinmail.core.maildate`: what the mail log and the headers we add say."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import time
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from kinmail.core.log import get_logger, logfmt, setup_logging
from kinmail.core.maildate import now_rfc5322

PAIR = re.compile(r'([a-z_]+)=("(?:[^"\\]|\\.)*"|[^ ]*)')


def unquote(text: str) -> str:
    if not text.startswith('"'):
        return text
    out, i = [], 1
    while i < len(text) - 1:
        if text[i] == "\\":
            out.append({"n": "\n", "t": "\t"}.get(text[i + 1], text[i + 1]))
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


@given(st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), st.one_of(st.integers(), st.text())))
def test_every_value_reads_back_from_its_line(fields: dict[str, object]) -> None:
    line = logfmt(**fields)
    parsed = {m.group(1): unquote(m.group(2)) for m in PAIR.finditer(line)}
    assert parsed == {k: str(v) for k, v in fields.items()}


def test_none_is_left_out_and_a_trailing_underscore_dropped() -> None:
    assert (
        logfmt(from_="a@b.test", rcpt=None, size=3, note="two words")
        == 'from=a@b.test size=3 note="two words"'
    )


def test_a_line_is_written_once_to_each_place_with_its_traceback(tmp_path: Path) -> None:
    setup_logging("info", tmp_path)
    try:
        log = get_logger("kinmail.test")
        log.debug("not.shown")
        log.info("smtp.queued", queue_id="Q1", size=2048)
        try:
            raise ValueError("bad")
        except ValueError:
            log.exception("smtp.crash", cid="c1")
        for handler in logging.getLogger().handlers:
            handler.flush()
        lines = (tmp_path / "mail.log").read_text().splitlines()
    finally:
        for handler in list(logging.getLogger().handlers):
            logging.getLogger().removeHandler(handler)
            handler.close()
    assert re.fullmatch(
        r"ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=info event=smtp.queued queue_id=Q1 size=2048",
        lines[0],
    )
    assert " level=error event=smtp.crash cid=c1" in lines[1]
    assert lines[2] == "Traceback (most recent call last):" and lines[-1] == "ValueError: bad"
    assert not any("not.shown" in line for line in lines)


def test_the_date_is_now_in_rfc5322_form() -> None:
    before = time.time()
    text = now_rfc5322()
    parsed = email.utils.parsedate_to_datetime(text).timestamp()
    assert int(before) - 1 <= parsed <= time.time()
    assert re.fullmatch(r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}", text)


def test_lines_written_straight_read_as_those_made_from_records(tmp_path: Path) -> None:
    """The direct path (`_Sink`) and a record through the handlers give the same line; a handler added to the
    root or to a parent logger (a test's capture) gets every line as a record again."""
    setup_logging("info", tmp_path)
    root = logging.getLogger()
    captured: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record)

    try:
        log = get_logger("kinmail.queue.test")
        log.info("queue.enqueued", queue_id="Q7", from_="a@b.test", size=12)  # straight
        log.warning("queue.slow", note="two words")
        capture = Capture()
        logging.getLogger("kinmail.queue").addHandler(capture)
        log.info("queue.enqueued", queue_id="Q8", from_="a@b.test", size=12)  # as a record
        logging.getLogger("kinmail.queue").removeHandler(capture)
        root.addHandler(capture)
        log.info("queue.removed", queue_id="Q9")
        root.removeHandler(capture)
        for handler in root.handlers:
            handler.flush()
        lines = (tmp_path / "mail.log").read_text().splitlines()
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
    stamp = r"ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z "
    assert re.fullmatch(stamp + "level=info event=queue.enqueued queue_id=Q7 from=a@b.test size=12", lines[0])
    assert re.fullmatch(stamp + 'level=warning event=queue.slow note="two words"', lines[1])
    assert re.fullmatch(stamp + "level=info event=queue.enqueued queue_id=Q8 from=a@b.test size=12", lines[2])
    assert re.fullmatch(stamp + "level=info event=queue.removed queue_id=Q9", lines[3])
    assert [r.getMessage() for r in captured] == [
        "event=queue.enqueued queue_id=Q8 from=a@b.test size=12",
        "event=queue.removed queue_id=Q9",
    ]


def test_lines_of_one_turn_of_the_loop_are_written_together_and_in_order(tmp_path: Path) -> None:
    """On the loop, info lines wait for the end of the turn and go out in one write; a warning, or a line from
    another thread, goes out at once with whatever was waiting; nothing is left behind."""
    setup_logging("info", tmp_path)
    root = logging.getLogger()
    path = tmp_path / "mail.log"
    log = get_logger("kinmail.test")
    seen: dict[str, list[str]] = {}

    def events() -> list[str]:
        return re.findall(r"event=(\S+)", path.read_text())

    async def main() -> None:
        log.info("one")
        log.info("two")
        seen["in the turn"] = events()
        await asyncio.sleep(0)
        seen["after it"] = events()
        log.info("three")
        log.warning("four")
        seen["after a warning"] = events()
        log.info("five")
        await asyncio.to_thread(log.info, "six")
        seen["after a thread's line"] = events()
        log.info("seven")  # the loop ends before its turn is over: written at the next line, or at exit

    try:
        asyncio.run(main())
        log.info("eight")  # off the loop: at once, after what waited
        seen["off the loop"] = events()
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
    assert seen == {
        "in the turn": [],
        "after it": ["one", "two"],
        "after a warning": ["one", "two", "three", "four"],
        "after a thread's line": ["one", "two", "three", "four", "five", "six"],
        "off the loop": ["one", "two", "three", "four", "five", "six", "seven", "eight"],
    }
