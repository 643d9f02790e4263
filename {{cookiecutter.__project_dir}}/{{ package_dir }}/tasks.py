"""Sample tasks. Any task may run more than once (acks_late re-delivers after a crash): keep tasks
idempotent, and pass JSON-serializable arguments only.

https://docs.celeryq.dev/en/stable/userguide/tasks.html
"""

from __future__ import annotations

import hashlib
import tempfile
import time
import zoneinfo
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.utils.log import get_task_logger

from .celery_app import app as _app  # configures the app that .delay() uses

logger = get_task_logger(__name__)

SUPPORTED_FORMATS = ("json", "text", "markdown")
# Longest delay between retries of a task that retries with exponential backoff: a delayed
# message is held unacknowledged, and never beyond CELERY_TASK_MAX_DELAY (WorkerTask refuses more).
RETRY_BACKOFF_MAX = 60
RETRY_DELAY_CAP = min(
    RETRY_BACKOFF_MAX, _app.conf.get("workers_task_max_delay") or RETRY_BACKOFF_MAX
)
REPORT_PERIODS = {"daily": timedelta(days=1), "weekly": timedelta(weeks=1)}
# Temporary files that tasks write; `cleanup` removes old ones.
SCRATCH_DIR = Path(tempfile.gettempdir()) / "{{ package_path }}"


class TransientError(Exception):
    """A failure worth retrying: a timeout, a 503, a dropped connection."""


@shared_task(bind=True)
def process_document(
    self: Task[Any, Any], document_id: str, options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Normalise a document's text and return its fingerprint and size."""
    options = options or {}
    document_format = options.get("format", "json")
    if document_format not in SUPPORTED_FORMATS:
        allowed = ", ".join(SUPPORTED_FORMATS)
        raise ValueError(f"format must be one of {allowed}, got {document_format!r}")
    text = " ".join(str(options.get("text", "")).split())
    logger.info("processing document %s (%s, %d chars)", document_id, document_format, len(text))
    return {
        "document_id": document_id,
        "format": document_format,
        "status": "processed",
        "words": len(text.split()),
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
        "worker": self.request.hostname,
    }


@shared_task(bind=True, track_started=True)  # long: STARTED tells a queued call from a running one
def analyze_content(
    self: Task[Any, Any], content: str, chunk_size: int = 50, step_delay: float = 0.0
) -> dict[str, Any]:
    """Count words chunk by chunk, reporting PROGRESS (progress, current, total, status) after each.
    The result repeats the last current and total (chunks), so progress stays known on SUCCESS.

    step_delay (seconds, at most 5) slows each chunk down so that progress can be watched.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    step_delay = min(max(step_delay, 0.0), 5.0)
    words = content.split()
    chunks = [words[i : i + chunk_size] for i in range(0, len(words), chunk_size)] or [[]]
    total = len(chunks)
    counts: Counter[str] = Counter()
    analyzed = done = 0
    try:
        for current, chunk in enumerate(chunks, start=1):
            counts.update(word.strip(".,;:!?\"'()").lower() for word in chunk)
            analyzed += len(chunk)
            if step_delay:
                time.sleep(step_delay)
            self.update_state(
                state="PROGRESS",
                meta={
                    "progress": int(current * 100 / total),
                    "current": current,
                    "total": total,
                    "status": f"Analyzed chunk {current}/{total}",
                },
            )
            done = current
    except SoftTimeLimitExceeded:
        # The hard limit is close: return what was counted instead of losing it all.
        logger.warning("analyze_content hit its soft time limit after %d words", analyzed)
    counts.pop("", None)
    return {
        "words": len(words),
        "analyzed_words": analyzed,
        "truncated": analyzed < len(words),
        "unique_words": len(counts),
        "characters": len(content),
        "top_words": [[word, count] for word, count in counts.most_common(5)],
        "current": done,
        "total": total,
    }


@shared_task(
    bind=True,
    autoretry_for=(TransientError,),
    max_retries=5,
    retry_backoff=1,  # 1, 2, 4, 8, 16 s ...
    retry_backoff_max=RETRY_DELAY_CAP,  # ... capped
    retry_jitter=True,  # spread retries of many tasks that failed together
)
def deliver_notification(
    self: Task[Any, Any], recipient: str, message: str, fail_times: int = 0
) -> dict[str, Any]:
    """Deliver a message, retrying transient errors with exponential backoff, at most 5 times.

    fail_times simulates that many transient failures before the delivery succeeds.
    """
    attempt = self.request.retries + 1
    if attempt <= fail_times:
        raise TransientError(f"simulated failure {attempt} of {fail_times} for {recipient}")
    logger.info("delivered %d characters to %s on attempt %d", len(message), recipient, attempt)
    return {"recipient": recipient, "delivered": True, "attempts": attempt}


@shared_task
def cleanup(max_age_seconds: int = 86400, directory: str | None = None) -> dict[str, Any]:
    """Remove files older than max_age_seconds from the scratch directory (scheduled by beat)."""
    root = Path(directory) if directory else SCRATCH_DIR
    cutoff = time.time() - max_age_seconds
    removed = kept = 0
    if root.is_dir():
        for path in root.iterdir():
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
            else:
                kept += 1
    logger.info("cleanup of %s removed %d files, kept %d", root, removed, kept)
    return {"directory": str(root), "removed": removed, "kept": kept}


@shared_task(bind=True)
def generate_report(self: Task[Any, Any], period: str = "daily") -> dict[str, Any]:
    """Build the report for the last full period, in the app's time zone (scheduled by beat)."""
    if period not in REPORT_PERIODS:
        raise ValueError(f"period must be one of {', '.join(REPORT_PERIODS)}, got {period!r}")
    zone = zoneinfo.ZoneInfo(str(self.app.conf.timezone or "UTC"))
    now = datetime.now(zone)
    window_end = now.replace(hour=0, minute=0, second=0, microsecond=0)
    window_start = window_end - REPORT_PERIODS[period]
    return {
        "period": period,
        "window_start": window_start.isoformat(),
        "window_end": window_end.isoformat(),
        "generated_at": now.isoformat(),
    }


@shared_task(bind=True)
def health_check(self: Task[Any, Any]) -> dict[str, Any]:
    """Prove that a worker consumes from the urgent queue and can reach the result backend."""
    return {
        "status": "ok",
        "worker": self.request.hostname,
        "checked_at": datetime.now(zoneinfo.ZoneInfo("UTC")).isoformat(),
    }
