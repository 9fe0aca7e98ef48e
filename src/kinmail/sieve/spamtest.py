"""spamtest, spamtestplus and virustest (RFC 5235): the score a message carries, read from a header that the
spam and virus checks add, scaled to the RFC's ranges.

The header and its scale come from the Host (`spam_config` / `virus_config`, each a `ScoreConfig`; delivery
fills them from `[sieve]` in kinmail.toml): by default `X-Spam-Score: 5.3` on a 0..`spamtest_max` scale and
`X-Virus-Score: 1`..`5`.
Called by `kinmail.sieve.interp_ext`; nothing kept on disk.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from kinmail.sieve.syntax import Node

if TYPE_CHECKING:
    from kinmail.sieve.interp import Interpreter


class ScoreConfig:
    """How to read one score: `header` ("Name" or "Name: regex with one group"), `kind` ("score",
    "strlen" or "text"), the maximum (`max_value`, or `max_header` to read it from the message), and for
    "text" the values that map to each score."""

    def __init__(
        self,
        header: str = "",
        kind: str = "score",
        max_value: float | None = None,
        max_header: str = "",
        text_values: dict[int, str] | None = None,
    ) -> None:
        self.header = header
        self.kind = kind
        self.max_value = max_value
        self.max_header = max_header
        self.text_values = text_values or {}


def _read(it: Interpreter, spec: str) -> str | None:
    name, colon, pattern = spec.partition(":")
    values = it.message.header(name.strip())
    if not values:
        return None
    value = values[0]
    if colon and pattern.strip():
        m = re.search(pattern.strip(), value)
        if m is None:
            return None
        return m.group(1) if m.groups() else m.group(0)
    return value.strip()


def _number(text: str) -> float | None:
    m = re.match(r"^\s*(-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))", text)
    return float(m.group(1)) if m else None


def value(it: Interpreter, node: Node) -> str:
    """The test's value as a string: "0" (not tested) or 1..10 (spamtest), 0..100 (:percent), 1..5 (virustest)."""
    virus = node.name == "virustest"
    cfg: ScoreConfig = it.host.virus_config if virus else it.host.spam_config
    percent = "percent" in node.tags
    if not cfg.header:
        return "0"
    raw = _read(it, cfg.header)
    if raw is None:
        return "0"
    if cfg.kind == "text":
        matched = [score for score, text in sorted(cfg.text_values.items()) if raw.strip() == text]
        if not matched:
            return "0"
        score = matched[0]
        if not percent:
            return str(score)
        top = 5 if virus else 10
        ratio = (score - 1) / (top - 1)
    else:
        if cfg.kind == "strlen":
            score_f = float(len(raw))
        else:
            num = _number(raw)
            if num is None:
                return "0"
            score_f = num
        maximum = cfg.max_value
        if cfg.max_header:
            mtext = _read(it, cfg.max_header)
            maximum = _number(mtext) if mtext is not None else None
        if maximum is None or maximum <= 0:
            return "0"
        ratio = min(max(score_f, 0.0), maximum) / maximum
    if percent:
        return str(int(ratio * 100 + 0.5))
    if virus:
        return str(1 + int(ratio * 4 + 1e-9))
    return str(1 + int(ratio * 9 + 1e-9))
