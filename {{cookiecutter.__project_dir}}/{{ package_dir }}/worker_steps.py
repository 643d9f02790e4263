"""Steps added to the worker's consumer: the heartbeat file that liveness and readiness probes
read (health.py), touched from the worker's event loop."""

from __future__ import annotations

from pathlib import Path

from celery import bootsteps
from celery.worker import state as worker_state
from celery.worker.consumer import Consumer

from .config import Settings
from .health import RECONNECTING, mark, touch


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
