"""How a stream time is written in text, everywhere: questions, answers and the LLM's prompts ("t=123s")."""
from __future__ import annotations

import re

TIME_WORD = re.compile(r"\bt\s*=\s*(\d+(?:\.\d+)?)\s*s\b")


def format_time(t: float) -> str:
    return f"t={round(t)}s"


def parse_time(s: str) -> float | None:
    """The seconds that `s`, a time and nothing else, writes; None if it is not one."""
    m = TIME_WORD.fullmatch(s.strip())
    return float(m.group(1)) if m else None
