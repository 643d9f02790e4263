"""Heartbeat files: a cheap liveness signal for process managers and Kubernetes probes.

The worker's event loop and beat's scheduler loop touch a file every CELERY_HEARTBEAT_INTERVAL
seconds when CELERY_WORKER_HEARTBEAT_FILE / CELERY_BEAT_HEARTBEAT_FILE name one. A stalled loop stops
touching it, so

    python -m {{ package_path }}.health /run/celery/worker.alive --max-age 30

fails. Unlike `celery inspect ping`, the check needs no broker round trip and imports no Celery: it
is cheap enough to run every few seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def touch(path: str | Path) -> None:
    Path(path).touch()


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
    args = parser.parse_args(argv)
    age = heartbeat_age(args.path)
    if age is None:
        print(f"unhealthy: {args.path} does not exist (process not started or stopped)")
        return 1
    if age > args.max_age:
        print(f"unhealthy: {args.path} last touched {age:.1f} s ago (> {args.max_age:g} s)")
        return 1
    print(f"healthy: {args.path} touched {age:.1f} s ago")
    return 0


if __name__ == "__main__":
    sys.exit(main())
