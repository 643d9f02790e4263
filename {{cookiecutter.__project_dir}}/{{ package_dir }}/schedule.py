"""Beat schedule: the periodic tasks, and the scheduler that lets one beat at a time send them.

Crontab entries run in CELERY_TIMEZONE. https://docs.celeryq.dev/en/stable/userguide/periodic-tasks.html
"""

from __future__ import annotations

import logging
from typing import Any

from celery.beat import PersistentScheduler
from celery.schedules import crontab

from .beat_lock import BeatLock
from .config import Settings, load_settings
from .health import touch
from .routing import TASKS

logger = logging.getLogger(__name__)


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    minute, hour, day_of_month, month_of_year, day_of_week = settings.beat_report_crontab.split()
    return {
        "cleanup": {
            "task": f"{TASKS}.cleanup",
            "schedule": float(settings.beat_cleanup_interval),
            # A run not started within one interval is dropped: the next one does the same work.
            "options": {"expires": float(settings.beat_cleanup_interval)},
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
{%- if result_backend == 'postgresql' %}
        # PostgreSQL keeps results until they are deleted: Celery's own task deletes those older
        # than CELERY_RESULT_EXPIRES, daily at 04:00 (what beat would add under this name).
        "celery.backend_cleanup": {
            "task": "celery.backend_cleanup",
            "schedule": crontab(minute="0", hour="4"),
            "options": {"expires": 12 * 3600.0},
        },
{%- endif %}
    }


class SingleBeatScheduler(PersistentScheduler):
    """Beat's default scheduler, sending only while it holds the beat lock (beat_lock.py), and
    touching CELERY_BEAT_HEARTBEAT_FILE (if set) on every loop, waiting or not (health.py)."""

    def setup_schedule(self) -> None:
        super().setup_schedule()
        settings = load_settings()
        self._heartbeat_file = settings.beat_heartbeat_file
        # Loops come every CELERY_HEARTBEAT_INTERVAL at most (beat_max_loop_interval); three
        # missed renewals free the lock for another beat.
        self._interval = float(settings.heartbeat_interval)
        self._lock = BeatLock(self.app, ttl=3 * self._interval)
        self._waiting = False

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if self._heartbeat_file:
            touch(self._heartbeat_file)
        if not self._lock.acquire():
            if not self._waiting:
                logger.warning("another beat is running: waiting for the beat lock to send tasks")
                self._waiting = True
            return self._interval
        if self._waiting:
            logger.warning("took the beat lock: sending periodic tasks")
            self._waiting = False
        return float(super().tick(*args, **kwargs))

    def close(self) -> None:
        super().close()
        self._lock.release()
