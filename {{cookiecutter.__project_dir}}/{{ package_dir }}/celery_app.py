"""The Celery application, for `celery -A {{ package_path }}.celery_app worker|beat|flower`.

`create_celery_app(**overrides)` builds an app from the environment (.env: env_file.py; variables:
config.py; Celery's settings for them: celery_config.py) plus any Celery settings passed in (tests,
scripts); every task's base class is task_base.WorkerTask, and the worker gets the heartbeat step
of worker_steps.py. The module-level `app` is what the celery command and task calls use.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from celery import Celery

from .celery_config import celery_settings
from .config import ConfigError, load_settings
from .env_file import load_env_file
from .task_base import DelayTooLong, WorkerTask
from .worker_steps import heartbeat_step

__all__ = ["APP_NAME", "DelayTooLong", "WorkerTask", "app", "create_celery_app"]

APP_NAME = "{{ package_path }}"


def _runs_celery_command() -> bool:
    """`celery ... worker|beat|...`: beat's variables are checked too (`beat=True` in config.py); code
    that imports the tasks to send them does not depend on them."""
    program = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    return program.name == "celery" or program.parts[-2:] == ("celery", "__main__.py")


CHECK_BEAT = _runs_celery_command()


def create_celery_app(**overrides: Any) -> Celery[WorkerTask]:
    """Create a configured app; `overrides` are Celery settings, e.g. broker_url="memory://".

    The new app does not become Celery's current app: `.delay()` on the tasks keeps using the
    module-level `app` below. Call `set_current()` on the new one to send through it instead
    (the generated tests do, for their in-memory broker).
    """
    settings = load_settings(beat=CHECK_BEAT)
    app = Celery(
        APP_NAME,
        task_cls=WorkerTask,
        include=[f"{APP_NAME}.tasks", f"{APP_NAME}.workflows"],
        set_as_current=False,
    )
    app.conf.update(celery_settings(settings))
    if settings.worker_heartbeat_file:
        app.steps["consumer"].add(heartbeat_step(settings))
    # Celery prefers CELERY_BROKER_URL / CELERY_RESULT_BACKEND from the environment over
    # broker_url / result_backend; the read/write URLs and the backend class come before both.
    if "broker_url" in overrides:
        overrides.setdefault("broker_read_url", overrides["broker_url"])
        overrides.setdefault("broker_write_url", overrides["broker_url"])
{%- if broker == 'redis' %}
        # The URL's own transport (memory:// in tests), not config.py's Redis one.
        overrides.setdefault("broker_transport", None)
{%- endif %}
    if "result_backend" in overrides:
        app.backend_cls = overrides["result_backend"]
    app.conf.update(overrides)
    return app


try:
    load_env_file()  # .env (or CELERY_ENV_FILE) into the environment; variables already set win
    _settings = load_settings(beat=CHECK_BEAT)
    app = create_celery_app()
    app.set_current()  # what `.delay()` on the tasks and the celery command use
    app.set_default()
except ConfigError as error:
    # One line naming the variable, instead of a traceback, and nothing starts half-configured.
    raise SystemExit(f"configuration error: {error}") from None

# The celery command reads CELERY_WORKER_LOGLEVEL / CELERY_BEAT_LOGLEVEL as --loglevel, after it
# imported this module: without them it would log at WARNING, whatever the documented default says.
os.environ.setdefault("CELERY_WORKER_LOGLEVEL", _settings.worker_loglevel)
os.environ.setdefault("CELERY_BEAT_LOGLEVEL", _settings.worker_loglevel)
