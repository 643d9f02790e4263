"""The Celery application, for `celery -A {{ package_path }}.celery_app worker|beat|flower`.

`create_celery_app(**overrides)` builds an app from the environment (config.py) plus any Celery
settings passed in (tests, scripts); the module-level `app` is what the celery command and task calls
use.
"""

from __future__ import annotations

import os
{%- if broker == 'rabbitmq' %}
import re
{%- endif %}
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from celery import Celery, Task, bootsteps
from celery.utils.time import maybe_make_aware
from celery.worker import state as worker_state
from celery.worker.consumer import Consumer

from .celery_config import celery_settings
from .config import ConfigError, Settings, load_settings
from .env_file import load_env_file
from .health import RECONNECTING, mark, touch
{%- if broker == 'rabbitmq' %}
from .routing import QUEUE_NAMES
{%- endif %}

APP_NAME = "{{ package_path }}"


def _runs_celery_command() -> bool:
    """`celery ... worker|beat|...`: beat's variables are checked too (`beat=True` in config.py); code
    that imports the tasks to send them does not depend on them."""
    program = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    return program.name == "celery" or program.parts[-2:] == ("celery", "__main__.py")


CHECK_BEAT = _runs_celery_command()


{%- if broker == 'rabbitmq' %}
# The routing key of a delayed message: 28 binary digits of the delay, then the queue's key.
DELAY_PREFIX = re.compile(r"^(?:[01]\.){28}")
{%- endif %}


class DelayTooLong(ValueError):
    """A countdown or ETA beyond CELERY_TASK_MAX_DELAY (the message names both)."""


class WorkerTask(Task):  # type: ignore[type-arg]
    """Base class of every task in this app."""

    # Delay before a task is run again after its pool process was lost (task_retry_on_worker_lost)
    # or after a bare self.retry(). Celery's 180 s default leaves crashed work idle for minutes.
    default_retry_delay = 10
{%- if broker == 'redis' %}

    def apply_async(self, *args: Any, **options: Any) -> Any:
        """Refuse a countdown or ETA beyond CELERY_TASK_MAX_DELAY before anything is sent: the
        worker holds a delayed message unacknowledged, and on Redis a message held past the
        visibility timeout (which follows the maximum) is delivered to a second worker as well.
        Retries go through here too; a refused retry rejects the task, with this message."""
        limit = self.app.conf.get("workers_task_max_delay")
        delay = None if limit is None else requested_delay(options, self.app.now)
        if limit is not None and delay is not None and delay > limit:
            raise DelayTooLong(
                f"{self.name}: a delay of {delay:.0f} s is beyond CELERY_TASK_MAX_DELAY ({limit} s);"
                " Redis would deliver the task a second time while the first worker still holds"
                " it. Raise CELERY_TASK_MAX_DELAY (the visibility timeout follows it), or schedule"
                " the work with beat."
            )
        return super().apply_async(*args, **options)
{%- else %}

    def apply_async(self, *args: Any, **options: Any) -> Any:
        """Round a delay under 1 s up to 1 s. RabbitMQ's delayed delivery (routing.py) counts whole
        seconds: Celery refuses 0 < countdown < 1 with ValueError, which in a retry drops the task."""
        if options.get("countdown") is not None or options.get("eta") is not None:
            delay = requested_delay(options, self.app.now)
            if delay is not None and 0 < delay < 1:
                options.pop("eta", None)
                options["countdown"] = 1
        return super().apply_async(*args, **options)

    def signature_from_request(self, request: Any = None, *args: Any, **options: Any) -> Any:
        """A retry goes back to the queue its message came from. Celery re-routes a delayed retry
        by task name, so a task sent with apply_async(queue=...) would retry on the default queue."""
        request = self.request if request is None else request
        if options.get("queue") is None:
            routing_key = (request.delivery_info or {}).get("routing_key") or ""
            queue = DELAY_PREFIX.sub("", routing_key)  # delayed: "<28 binary digits>.<queue>"
            if queue in QUEUE_NAMES:
                options["queue"] = queue
        return super().signature_from_request(request, *args, **options)
{%- endif %}


def requested_delay(options: dict[str, Any], now: Callable[[], datetime]) -> float | None:
    """Seconds from now until the task may run, from apply_async's countdown or eta."""
    if options.get("countdown") is not None:
        return float(options["countdown"])
    eta = options.get("eta")
    if eta is None:
        return None
    if isinstance(eta, str):
        eta = datetime.fromisoformat(eta)
    return (maybe_make_aware(eta) - now()).total_seconds()


def _shutting_down() -> bool:
    # Celery sets these to the exit code on a warm or cold shutdown; 0 counts, so compare by identity.
    flags = (worker_state.should_stop, worker_state.should_terminate)
    return any(flag is not None and flag is not False for flag in flags)


def heartbeat_step(settings: Settings) -> type[bootsteps.StartStopStep]:
    """A consumer step that touches CELERY_WORKER_HEARTBEAT_FILE from the worker's event loop."""
    path = settings.worker_heartbeat_file
    interval = settings.heartbeat_interval

    class WorkerHeartbeat(bootsteps.StartStopStep):
        requires = ("celery.worker.consumer.tasks:Tasks",)

        def start(self, parent: Consumer) -> None:
            mark(path)  # consuming from now on: ready
            self.timer = parent.timer.call_repeatedly(interval, touch, (path,), priority=10)

        def stop(self, parent: Consumer) -> None:
            timer = getattr(self, "timer", None)
            if timer is not None:
                timer.cancel()
            # On shutdown the file goes at once. A broker outage also stops the consumer: then the
            # file says RECONNECTING and goes stale; readiness fails at once, liveness only after
            # its --reconnect-grace (health.py).
            if _shutting_down():
                Path(path).unlink(missing_ok=True)
            else:
                mark(path, RECONNECTING)

    return WorkerHeartbeat


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
