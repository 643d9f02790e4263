"""A worker (in-process threads, memory broker) runs the tasks{% if result_backend != 'none' %}; the client helpers read them{% endif %}."""

from __future__ import annotations
{% if result_backend != 'none' %}
import asyncio
{%- endif %}
from typing import Any

from celery import Celery
from celery.worker import WorkController

{% if result_backend != 'none' -%}
from {{ package_path }}.client import (
    TaskProgress,
    gather_results,
    get_progress,
    wait_for_result,
)
{% endif -%}
from {{ package_path }}.tasks import (
    analyze_content,
    health_check,
    process_document,
)

TIMEOUT = 30


def test_worker_runs_tasks_and_reports_progress(
    worker_app: Celery[Any], worker: WorkController
) -> None:
    document = process_document.delay("doc-7", {"text": "a b c"})
    assert document.get(timeout=TIMEOUT)["words"] == 3
{%- if result_backend != 'none' %}

    seen: list[TaskProgress] = []
    analysis = analyze_content.delay("word " * 40, chunk_size=10, step_delay=0.2)
    result = asyncio.run(
        wait_for_result(analysis, timeout=TIMEOUT, poll_interval=0.05, on_progress=seen.append)
    )
    assert result["words"] == 40
    assert any(progress.state == "PROGRESS" and progress.total == 4 for progress in seen)
    finished = get_progress(analysis)
    assert (finished.state, finished.progress, finished.current, finished.total) == (
        "SUCCESS",
        100,
        4,
        4,
    )


def test_gather_results_awaits_several_tasks(
    worker_app: Celery[Any], worker: WorkController
) -> None:
    checks = [health_check.delay() for _ in range(3)]
    results = asyncio.run(gather_results(checks, timeout=TIMEOUT))
    assert [result["status"] for result in results] == ["ok", "ok", "ok"]
{%- else %}
    # This project stores no results; the test app keeps them in memory only to check the work.
    assert analyze_content.delay("word " * 40).get(timeout=TIMEOUT)["words"] == 40
    assert health_check.delay().get(timeout=TIMEOUT)["status"] == "ok"
{%- endif %}
