"""Start Flower, but only with credentials: `python -m {{ package_path }}.flower [flower options]`.

Without --basic-auth, Flower serves its dashboard, and an API that can revoke and terminate tasks, to
anyone who reaches the port. There is no default password to fall back on: FLOWER_BASIC_AUTH must
hold user:password pairs (comma-separated), e.g. from an environment file kept out of git. Flower
reads FLOWER_BASIC_AUTH, FLOWER_PORT and its other FLOWER_* variables itself (also from .env,
which env_file.py puts into the environment first); /healthcheck and
/metrics stay reachable without credentials for probes and Prometheus.
https://flower.readthedocs.io/en/latest/auth.html
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from .config import ConfigError
from .env_file import load_env_file

MIN_PASSWORD_LENGTH = 12
APP = "{{ package_path }}.celery_app"


def credentials_problem(value: str) -> str | None:
    """Why FLOWER_BASIC_AUTH is not acceptable, or None if it is."""
    if not value.strip():
        return "is not set; give user:password (no default password is shipped)"
    for pair in value.split(","):
        user, _, password = pair.partition(":")
        if not user or not password:
            return "must be user:password pairs separated by commas"
        if len(password) < MIN_PASSWORD_LENGTH:
            return f"has a password shorter than {MIN_PASSWORD_LENGTH} characters for user {user!r}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    try:
        load_env_file()  # .env's FLOWER_* and CELERY_* reach Flower through the environment
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 1
    problem = credentials_problem(os.environ.get("FLOWER_BASIC_AUTH", ""))
    if problem:
        print(f"configuration error: FLOWER_BASIC_AUTH {problem}", file=sys.stderr)
        return 1
    options = list(sys.argv[1:] if argv is None else argv)
    # The celery next to this interpreter (the venv's), not whichever comes first on PATH.
    beside = Path(sys.executable).with_name("celery")
    celery = str(beside) if beside.exists() else shutil.which("celery")
    command = [celery] if celery else [sys.executable, "-m", "celery"]
    os.execv(command[0], [*command, "-A", APP, "flower", *options])
    return 0  # not reached: exec replaces this process, so signals go straight to Flower


if __name__ == "__main__":
    sys.exit(main())
