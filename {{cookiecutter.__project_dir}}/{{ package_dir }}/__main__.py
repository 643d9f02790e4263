"""`python -m {{ package_path }} <command>`: what the workers are configured with.

    config                 each variable's effective value and where it came from (default,
                           .env, environment); passwords in URLs masked
    config --json          the same as JSON
    config --env-example   {{ env_example }} as config.py's declarations make it

Exit status: 0, 1 on a configuration error (one line naming the variable), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from kombu.utils.url import maybe_sanitize_url

from . import env_file
from .config import VARIABLES, ConfigError, Settings, load_settings

HEADER = f"""\
# Every variable {__package__}.config reads, with its default; written by
# `python -m {__package__} config --env-example` from config.py's declarations.
# Copy to .env (git-ignored) and change what you need: worker, beat, Flower and code that sends
# tasks read .env in their working directory (or the file CELERY_ENV_FILE names); variables set
# in the environment win. Values with spaces are quoted, so `set -a; . ./.env; set +a` works too.
# A malformed value stops start-up with a line naming the variable.
"""


def env_example() -> str:
    lines = [HEADER.rstrip("\n")]
    group = None
    for variable in VARIABLES:
        if variable.group != group:
            group = variable.group
            lines.append("")
        value = f'"{variable.default}"' if " " in variable.default else variable.default
        lines += [f"# {variable.help}", f"{variable.name}={value}"]
    return "\n".join(lines) + "\n"


def effective(settings: Settings) -> list[dict[str, str]]:
    """Each variable: its name, the value in use (masked) and its source."""
    rows = []
    for variable in VARIABLES:
        value = getattr(settings, variable.name[len("CELERY_") :].lower())
        shown = ",".join(value) if isinstance(value, tuple) else "" if value is None else str(value)
        if variable.secret:
            shown = maybe_sanitize_url(shown)
        loaded = env_file.LOADED
        if variable.name in loaded and os.environ.get(variable.name) == loaded[variable.name]:
            source = ".env"
        elif variable.name in os.environ:
            source = "environment"
        else:
            source = "default"
        rows.append({"variable": variable.name, "value": shown, "source": source})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__package__}", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    config = commands.add_parser("config", help="the effective configuration")
    config.add_argument("--json", action="store_true", help="print JSON")
    config.add_argument("--env-example", action="store_true", help="print the .env example")
    args = parser.parse_args(argv)

    if args.env_example:
        print(env_example(), end="")
        return 0
    try:
        path = env_file.load_env_file()
        rows = effective(load_settings())
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"env_file": path and str(path), "variables": rows}, indent=2))
        return 0
    width = max(len(row["variable"]) for row in rows)
    print(f".env: {path or 'none'}")
    for row in rows:
        print(f"{row['variable']:<{width}}  {row['source']:<11}  {row['value']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
