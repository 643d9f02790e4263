"""Heartbeat files: a cheap liveness signal for process managers and Kubernetes probes.

The worker's event loop and beat's scheduler loop touch a file every CELERY_HEARTBEAT_INTERVAL
seconds when CELERY_WORKER_HEARTBEAT_FILE / CELERY_BEAT_HEARTBEAT_FILE name one. A stalled loop stops
touching it, so

    python -m {{ package_path }}.health /run/celery/worker.alive --max-age 30

fails. Unlike `celery inspect ping`, the check needs no broker round trip and imports no Celery: it
is cheap enough to run every few seconds.

When the worker loses the broker, it writes RECONNECTING into its file and stops touching it until
it is connected again. A liveness check given --reconnect-grace N passes for N seconds after that:
an outage is no reason to restart every worker (they reconnect on their own), a stalled loop is.
Readiness checks leave the option out: a worker without broker is not ready.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

RECONNECTING = "reconnecting"


def touch(path: str | Path) -> None:
    Path(path).touch()


def mark(path: str | Path, state: str = "") -> None:
    """Write `state` (RECONNECTING, or "" for consuming) into the file; its time is now."""
    Path(path).write_text(state)


def heartbeat_age(path: str | Path) -> float | None:
    """Seconds since the file was last touched; None if it does not exist."""
    try:
        return time.time() - Path(path).stat().st_mtime
    except FileNotFoundError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Exit 0 if a heartbeat file is fresh, 1 if not.")
    parser.add_argument("path", help="heartbeat file written by the worker or beat")
    parser.add_argument("--max-age", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument(
        "--reconnect-grace",
        type=float,
        default=0.0,
        help="seconds a worker reconnecting to its broker counts as healthy (liveness only)",
    )
    args = parser.parse_args(argv)
    age = heartbeat_age(args.path)
    if age is None:
        print(f"unhealthy: {args.path} does not exist (process not started or stopped)")
        return 1
    grace = args.reconnect_grace
    if grace and age > args.max_age and _reconnecting(args.path):
        verdict = "healthy" if age <= grace else "unhealthy"
        print(f"{verdict}: reconnecting to the broker for {age:.1f} s (grace {grace:g} s)")
        return 0 if age <= grace else 1
    if age > args.max_age:
        print(f"unhealthy: {args.path} last touched {age:.1f} s ago (> {args.max_age:g} s)")
        return 1
    print(f"healthy: {args.path} touched {age:.1f} s ago")
    return 0


def _reconnecting(path: str) -> bool:
    try:
        return Path(path).read_text().strip() == RECONNECTING
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
