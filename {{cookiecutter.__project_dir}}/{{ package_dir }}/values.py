"""Parsers of configuration values (config.py): each turns a variable's text into its value, or
raises Invalid with what the variable allows."""

from __future__ import annotations

import os
from collections.abc import Callable
from urllib.parse import urlsplit

from celery.schedules import ParseException, crontab
from kombu.utils.url import maybe_sanitize_url

from .routing import QUEUE_NAMES

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# What a check raises for a value it refuses (zoneinfo: a KeyError; crontab: ParseException).
REFUSALS = (ValueError, LookupError, ParseException)


class Invalid(ValueError):
    """A parser's refusal: what is allowed, and what to show instead of a secret value."""

    def __init__(self, allowed: str, shown: str | None = None) -> None:
        super().__init__(allowed)
        self.allowed, self.shown = allowed, shown


def whole(minimum: int = 1, empty: bool = False) -> Callable[[str], int | None]:
    allowed = f"expected a whole number >= {minimum}" + (" or empty" if empty else "")

    def parse(value: str) -> int | None:
        if empty and value == "":
            return None
        try:
            number = int(value)
        except ValueError:
            number = minimum - 1
        if number < minimum:
            raise Invalid(allowed)
        return number

    return parse


def seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number >= 0:  # also refuses nan
        raise Invalid("expected a number of seconds >= 0")
    return number


def boolean(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise Invalid("expected true or false (also 1/0, yes/no, on/off)")


def url(*schemes: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if "://" not in value or urlsplit(value).scheme.lower() not in schemes:
            allowed = "expected a URL starting with " + ", ".join(f"{s}://" for s in schemes)
            raise Invalid(allowed, shown=maybe_sanitize_url(value))  # never print a password
        return value

    return parse


def checked(test: Callable[[str], object], allowed: str) -> Callable[[str], str]:
    """The value as it is, if `test` accepts it (returns true, or raises nothing else)."""

    def parse(value: str) -> str:
        try:
            passed = test(value)
        except REFUSALS:
            passed = False
        if not passed:
            raise Invalid(allowed)
        return value

    return parse


def text(value: str) -> str:
    return value


def log_level(value: str) -> str:
    if value.upper() not in LOG_LEVELS:
        raise Invalid("expected one of " + ", ".join(LOG_LEVELS))
    return value.upper()


def queues(value: str) -> tuple[str, ...]:
    # No spaces: celery's --queues, which reads this variable too, would take " x" as a new queue.
    names = tuple(value.split(",")) if value else ()
    if any(name not in QUEUE_NAMES for name in names):
        raise Invalid(f"expected some of {','.join(QUEUE_NAMES)}, comma-separated, no spaces")
    return names


def crontab_fields(value: str) -> bool:
    names = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
    fields = value.split()
    return len(fields) == 5 and bool(crontab(**dict(zip(names, fields, strict=True))))


readable_file = checked(
    lambda path: not path or os.access(path, os.R_OK),
    "expected the path of a readable file, or empty",
)
