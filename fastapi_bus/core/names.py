"""Event names and topic patterns: what a valid name is, and which names a pattern matches."""

from __future__ import annotations

import re
from functools import lru_cache

from fastapi_bus.core.exceptions import ConfigurationError

__all__ = ["is_pattern", "pattern_matches", "validate_event_name", "validate_pattern"]

_WORD = r"[A-Za-z0-9_\-:]+"
_NAME_RE = re.compile(rf"{_WORD}(\.{_WORD})*")
_PATTERN_RE = re.compile(rf"({_WORD}|\*|#)(\.({_WORD}|\*|#))*")


def validate_event_name(name: str, *, what: str = "event name") -> str:
    """Check that ``name`` is a valid event name (dot-separated words) and return it."""
    if not isinstance(name, str) or len(name.encode()) > 255 or not _NAME_RE.fullmatch(name):
        raise ConfigurationError(
            f"invalid {what} {name!r}: use dot-separated words of letters, digits, '_', '-' "
            "or ':' (at most 255 bytes), such as 'OrderPlaced' or 'orders.placed'"
        )
    return name


def validate_pattern(pattern: str) -> str:
    """Check an event name or topic pattern (``*`` = one word, ``#`` = zero or more)."""
    if not isinstance(pattern, str) or len(pattern.encode()) > 255:
        raise ConfigurationError(f"invalid event pattern {pattern!r}")
    if not _PATTERN_RE.fullmatch(pattern):
        raise ConfigurationError(
            f"invalid event pattern {pattern!r}: use dot-separated words, where a word may be "
            "'*' (exactly one word) or '#' (zero or more words), such as 'orders.*'"
        )
    return pattern


def is_pattern(name: str) -> bool:
    """True if ``name`` contains a wildcard word."""
    return any(word in ("*", "#") for word in name.split("."))


@lru_cache(maxsize=4096)
def _compile(pattern: str) -> re.Pattern[str]:
    parts: list[str] = []
    for index, word in enumerate(pattern.split(".")):
        sep = r"\." if index else ""
        if word == "#":
            # Zero or more words, together with the separator before them.
            parts.append(rf"(?:{sep}[^.]+)*" if index else r"(?:[^.]+(?:\.[^.]+)*)?")
        elif word == "*":
            parts.append(rf"{sep}[^.]+")
        else:
            parts.append(sep + re.escape(word))
    regex = "".join(parts)
    # A leading '#' that matched nothing must not leave a dangling separator.
    regex = regex.replace(r"(?:[^.]+(?:\.[^.]+)*)?\.", r"(?:[^.]+\.)*", 1)
    return re.compile(regex)


def pattern_matches(pattern: str, name: str) -> bool:
    """True if the event ``name`` matches the topic ``pattern``, as RabbitMQ's topic exchange
    decides it."""
    if pattern == name:
        return True
    return _compile(pattern).fullmatch(name) is not None
