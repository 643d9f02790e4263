"""Beat schedule: the periodic tasks. Run exactly one beat process per broker.

Crontab entries run in CELERY_TIMEZONE. https://docs.celeryq.dev/en/stable/userguide/periodic-tasks.html
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celery.beat import PersistentScheduler
from celery.schedules import crontab

from .health import touch
from .routing import TASKS

if TYPE_CHECKING:
    from .config import Settings


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    minute, hour, day_of_month, month_of_year, day_of_week = settings.report_crontab.split()
    return {
        "cleanup": {
            "task": f"{TASKS}.cleanup",
            "schedule": float(settings.cleanup_interval),
            # A run not started within one interval is dropped: the next one does the same work.
            "options": {"expires": float(settings.cleanup_interval)},
        },
        "daily-report": {
            "task": f"{TASKS}.generate_report",
            "schedule": crontab(
                minute=minute,
                hour=hour,
                day_of_month=day_of_month,
                month_of_year=month_of_year,
                day_of_week=day_of_week,
            ),
            "args": ("daily",),
        },
    }


class HeartbeatScheduler(PersistentScheduler):
    """Beat's default scheduler, touching CELERY_BEAT_HEARTBEAT_FILE on every loop (health.py)."""

    def tick(self, *args: Any, **kwargs: Any) -> float:
        from .config import load_settings

        interval = float(super().tick(*args, **kwargs))
        path = getattr(self, "_heartbeat_file", None)
        if path is None:
            path = self._heartbeat_file = load_settings().beat_heartbeat_file
        if path:
            touch(path)
        return interval
