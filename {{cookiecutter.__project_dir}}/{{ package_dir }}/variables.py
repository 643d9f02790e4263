"""How config.py declares a variable (`variable()`, `section()`, `Variable`), and the parsers that
turn a variable's text into its value or raise Invalid with what the variable allows."""

from __future__ import annotations

import os
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any
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


@dataclass(frozen=True)
class Variable:
    name: str
    default: str
    parse: Callable[[str], Any]
    help: str
    group: int  # .env.example puts a blank line between groups
    secret: bool  # a URL: its password is never shown
    beat: bool  # read by beat alone: processes that only send tasks keep the default


_group = [0]


def declared(settings: type) -> tuple[Variable, ...]:
    """The variables that the fields of `settings` (a dataclass) declare, in order."""
    return tuple(
        Variable(f"CELERY_{item.name.upper()}", *item.metadata["variable"])
        for item in fields(settings)
        if "variable" in item.metadata
    )


def variable(
    default: str,
    parse: Callable[[str], Any],
    help: str,
    *,
    secret: bool = False,
    beat: bool = False,
) -> Any:
    """Declares one field of Settings (its name is filled in from the field's)."""
    return field(metadata={"variable": (default, parse, help, _group[0], secret, beat)})


def section() -> None:
    """Starts the next group of variables (a blank line in .env.example)."""
    _group[0] += 1


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


def port(value: str) -> int:
    number = int(value) if value.isdigit() else 0
    if not 1 <= number <= 65535:
        raise Invalid("expected a TCP port from 1 to 65535")
    return number


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


def url(*schemes: str, empty: bool = False) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if empty and value == "":
            return value
        if "://" not in value or urlsplit(value).scheme.lower() not in schemes:
            allowed = "expected a URL starting with " + ", ".join(f"{s}://" for s in schemes)
            raise Invalid(allowed + (" or empty" if empty else ""), shown=maybe_sanitize_url(value))
        return value  # a refused one is shown without its password

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


def _crontab(value: str) -> bool:
    names = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
    fields = value.split()
    return len(fields) == 5 and bool(crontab(**dict(zip(names, fields, strict=True))))


crontab_fields = checked(
    _crontab,
    "expected five valid crontab fields: minute (0-59) hour (0-23) day-of-month (1-31)"
    " month (1-12) day-of-week (0-6 or mon-sun)",
)
time_zone = checked(zoneinfo.ZoneInfo, "expected an IANA time zone such as UTC")
schedule_file = checked(
    lambda name: name and not name.endswith(".db"),
    "expected a file path without a .db suffix (dbm may then pick a backend that is not installed)",
)


readable_file = checked(
    lambda path: not path or os.access(path, os.R_OK),
    "expected the path of a readable file, or empty",
)
