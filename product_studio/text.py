"""Text from sellers and storage keys made safe to show an operator: no control characters reach a terminal
or a log line as they are (escape sequences, carriage returns, NULs, bidirectional overrides)."""

from __future__ import annotations

import unicodedata


def _shown(c: str, keep: str) -> str:
    if c in keep or (c.isprintable() and unicodedata.category(c) != "Cf"):
        return c
    return c.encode("unicode_escape").decode()


def escape_controls(text: str, keep: str = "") -> str:
    """``text`` with every control or format character shown as its ``\\x..``/``\\u....`` escape, but those
    in ``keep`` (a command's own newlines and tabs)."""
    return "".join(_shown(c, keep) for c in text)


def printable(text: str, limit: int = 200) -> str:
    """Seller text (or a key) for one line of a terminal or a log: every control character escaped, newlines
    included, and at most ``limit`` characters."""
    return escape_controls(text[:limit]) + ("..." if len(text) > limit else "")
