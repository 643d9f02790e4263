"""`WorkerTask`, the base class of every task of the app (celery_app.py), `DelayTooLong`, and
the time stamp each task message carries from its sender (SENT_AT, read by queues.py)."""

from __future__ import annotations

{% if broker == 'rabbitmq' %}import re
{% endif %}import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from celery import Task
from celery.signals import before_task_publish
from celery.utils.time import maybe_make_aware
{%- if broker == 'rabbitmq' %}

from .routing import QUEUE_NAMES

# The routing key of a delayed message: 28 binary digits of the delay, then the queue's key.
DELAY_PREFIX = re.compile(r"^(?:[01]\.){28}")
{%- endif %}

# Message header: when the sender published the message (Unix time). Celery's own headers say when
# a task may run (eta), not how long it has been waiting; `python -m {{ package_path }} queues` and
# the metrics exporter read this one for the age of a queue's oldest message.
SENT_AT = "sent_at"


@before_task_publish.connect
def stamp_sent_time(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is not None:
        headers[SENT_AT] = time.time()


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
