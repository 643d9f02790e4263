"""`python -m {{ package_path }} <command>`: the workers' configuration, queues and state.

    config                 each variable's effective value and where it came from (default,
                           .env, environment); passwords in URLs masked
    config --env-example   {{ env_example }} as config.py's declarations make it
    queues                 per queue: messages ready, reserved by a worker, the oldest one's age
    status                 each worker that answers: its queues, running and reserved tasks
    purge QUEUE            delete the ready messages of QUEUE (asks first, unless --yes)
    metrics                serve the queues' metrics for Prometheus and KEDA (metrics.py);
                           --once prints them once

--json prints JSON instead of a table. On a terminal, tables are drawn with rich when it is
installed (the dev extra has it); piped, they are plain aligned columns for grep and awk. Exit status: 0; 1 on a configuration error (one line
naming the variable); 2 on bad usage, a refused purge or a port the exporter cannot bind; 3
when the broker cannot be reached; 4 when no worker answers `status`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from kombu.exceptions import OperationalError
from kombu.utils.url import maybe_sanitize_url

from . import env_file
from .config import VARIABLES, ConfigError, Settings, load_settings
from .routing import QUEUE_NAMES

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


def table(rows: list[dict[str, Any]]) -> str:
    """Rows of equal keys as aligned columns under their names."""
    names = list(rows[0]) if rows else []
    cells = [[_cell(row[name]) for name in names] for row in rows]
    widths = [max([len(name), *(len(line[i]) for line in cells)]) for i, name in enumerate(names)]
    lines = [names, *cells]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return "-" if value is None else str(value)


def show(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
    elif not (sys.stdout.isatty() and drawn(rows)):
        print(table(rows))


def drawn(rows: list[dict[str, Any]]) -> bool:
    """The rows as a rich table on the terminal; False when rich is not installed."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        return False
    names = list(rows[0]) if rows else []
    numeric = {name for name in names if all(isinstance(row[name], (int, float)) for row in rows)}
    grid = Table(*names, header_style="bold")
    for name, column in zip(names, grid.columns, strict=True):
        column.justify = "right" if name in numeric else "left"
    for row in rows:
        grid.add_row(*(_cell(row[name]) for name in names))
    Console().print(grid)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__package__}", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    config = commands.add_parser("config", help="the effective configuration")
    config.add_argument("--env-example", action="store_true", help="print the .env example")
    queues = commands.add_parser("queues", help="messages per queue")
    status = commands.add_parser("status", help="the workers that answer")
    status.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for answers")
    purge = commands.add_parser("purge", help="delete a queue's ready messages")
    purge.add_argument("queue", choices=QUEUE_NAMES)
    purge.add_argument("--yes", action="store_true", help="do not ask")
    for command in (config, queues, status, purge):
        command.add_argument("--json", action="store_true", help="print JSON")
    metrics = commands.add_parser("metrics", help="serve the queues' metrics")
    metrics.add_argument("--port", type=int, help="instead of CELERY_METRICS_PORT")
    metrics.add_argument("--address", help="instead of CELERY_METRICS_ADDRESS")
    metrics.add_argument("--once", action="store_true", help="print one reading and exit")
    args = parser.parse_args(argv)

    if args.command == "config" and args.env_example:
        print(env_example(), end="")
        return 0
    try:
        path = env_file.load_env_file()
        settings = load_settings(beat=False)
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 1
    if args.command == "config":
        rows = effective(settings)
        if args.json:
            print(json.dumps({"env_file": path and str(path), "variables": rows}, indent=2))
        else:
            print(f".env: {path or 'none'}")
            print(table(rows))
        return 0
    if args.command == "metrics":
        return export(args, settings)
    return operate(args, maybe_sanitize_url(settings.broker_url))


def export(args: argparse.Namespace, settings: Settings) -> int:
    """The metrics exporter: served until stopped, or one reading printed (--once)."""
    import logging

    from .celery_app import app
    from .metrics import Exporter, serve, text

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s: %(levelname)s] %(message)s")
    if args.once:
        exporter = Exporter(app, settings.metrics_interval)
        exporter.renew()
        print(text(exporter).decode(), end="")
        return 3 if exporter.reading.error else 0
    address = settings.metrics_address if args.address is None else args.address
    port = settings.metrics_port if args.port is None else args.port
    try:
        serve(app, address, port, settings.metrics_interval)
    except OSError as error:
        print(f"cannot serve metrics on {address}:{port}: {error}", file=sys.stderr)
        return 2
    return 0


def confirmed(question: str) -> bool:
    """A yes from the terminal; no answer (no terminal, end of input) is a no."""
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def operate(args: argparse.Namespace, broker: str) -> int:
    """queues, status and purge: they talk to the broker."""
    from .celery_app import app
    from .queues import purge, queue_depths, worker_status

    # kombu raises OperationalError when it cannot connect; a drop later, the transport's own.
    errors: tuple[type[BaseException], ...] = app.connection_for_read().connection_errors
    unreachable: tuple[type[BaseException], ...] = (OperationalError, OSError, *errors)
    try:
        if args.command == "queues":
            show([depth.as_dict() for depth in queue_depths(app)], args.json)
        elif args.command == "status":
            workers = worker_status(app, args.timeout)
            show(workers, args.json)
            if not workers:
                print(f"no worker answered within {args.timeout:g} s", file=sys.stderr)
                return 4
        else:
            if not args.yes and not confirmed(f"delete the ready messages of {args.queue}?"):
                print("nothing deleted (--yes deletes without asking)", file=sys.stderr)
                return 2
            deleted = purge(app, args.queue)
            show([{"queue": args.queue, "deleted": deleted}], args.json)
    except unreachable as error:
        print(f"cannot reach the broker at {broker}: {error}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
