"""Task logic, run in-process with apply(); results go to the in-memory store, not a broker."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
{% if broker == 'redis' %}
from {{ package_path }}.celery_app import DelayTooLong
{%- endif %}
from {{ package_path }}.tasks import (
    analyze_content,
    cleanup,
    deliver_notification,
    generate_report,
    health_check,
    process_document,
)

pytestmark = pytest.mark.usefixtures("worker_app")


def test_process_document_normalises_and_fingerprints() -> None:
    options = {"format": "text", "text": "  hello   world "}
    result = process_document.apply(args=("doc-1", options)).get()
    assert result["document_id"] == "doc-1"
    assert result["words"] == 2
    assert len(result["sha256"]) == 64


def test_process_document_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="format must be one of"):
        process_document.apply(args=("doc-1", {"format": "pdf"})).get()


def test_analyze_content_counts_words() -> None:
    text = "the cat and the hat. The end"
    result = analyze_content.apply(args=(text,), kwargs={"chunk_size": 2}).get()
    assert result["words"] == 7
    assert result["top_words"][0] == ["the", 3]


{%- if broker == 'redis' %}


def test_a_delay_beyond_the_maximum_is_refused_before_anything_is_sent() -> None:
    """Redis would deliver a task held past the visibility timeout to a second worker."""
    with pytest.raises(DelayTooLong, match=r"beyond CELERY_TASK_MAX_DELAY \(300 s\)"):
        process_document.apply_async(("doc-1",), countdown=301)
    later = datetime.now().astimezone() + timedelta(seconds=400)  # aware, local time
    with pytest.raises(DelayTooLong, match="a delay of 400 s"):
        process_document.apply_async(("doc-1",), eta=later)
{%- endif %}


def test_deliver_notification_retries_transient_errors() -> None:
    args = ("ops@example.com", "hi")
    result = deliver_notification.apply(args=args, kwargs={"fail_times": 2}).get()
    assert result == {"recipient": "ops@example.com", "delivered": True, "attempts": 3}


def test_cleanup_removes_only_old_files(tmp_path: Path) -> None:
    old, new = tmp_path / "old.tmp", tmp_path / "new.tmp"
    old.write_text("x")
    new.write_text("y")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    result = cleanup.apply(kwargs={"max_age_seconds": 60, "directory": str(tmp_path)}).get()
    assert (result["removed"], result["kept"]) == (1, 1)
    assert new.exists() and not old.exists()


def test_generate_report_covers_the_last_full_day() -> None:
    report = generate_report.apply(args=("daily",)).get()
    keys = ("window_start", "window_end", "generated_at")
    start, end, generated = (datetime.fromisoformat(report[key]) for key in keys)
    assert end - start == timedelta(days=1)
    assert (end.hour, end.minute, end.second) == (0, 0, 0)
    assert start < end <= generated


def test_health_check_reports_ok() -> None:
    assert health_check.apply().get()["status"] == "ok"
