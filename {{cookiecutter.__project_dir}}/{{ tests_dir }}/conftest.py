"""Fixtures for the workers' tests. No broker needed: the in-process worker uses memory://."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from celery.worker import WorkController

from {{ package_path }} import (
    app as configured_app,
)
from {{ package_path }}.celery_app import (
    create_celery_app,
)


@pytest.fixture
def worker_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[Celery[Any]]:
    """An app with this package's settings and tasks, on an in-memory broker and result store."""
    app = create_celery_app(
        broker_url="memory://",
        result_backend="cache+memory://",
        task_ignore_result=False,
        # The memory transport polls; a short interval keeps round trips and shutdown quick.
        broker_transport_options={"polling_interval": 0.05},
    )
    # result.get() looks for the result every 0.5 s (its `interval`), and the in-memory store
    # answers at once: looking every 10 ms makes a round trip take milliseconds, not half a
    # second (the suite: 4.7 s against 7 s). The backend is this thread's, the one that waits.
    backend: Any = app.backend  # celery-types does not declare its wait_for
    wait_for = backend.wait_for

    def wait_for_soon(
        task_id: str, timeout: float | None = None, interval: float = 0.5, **options: Any
    ) -> Any:
        return wait_for(task_id, timeout, min(interval, 0.01), **options)

    monkeypatch.setattr(backend, "wait_for", wait_for_soon)
    app.set_current()  # the tasks' .delay() sends through it during the test
    yield app
    configured_app.set_current()


@pytest.fixture
def worker(worker_app: Celery[Any]) -> Iterator[WorkController]:
    """A worker thread consuming every queue of `worker_app`."""
    with start_worker(
        worker_app,
        pool="threads",
        concurrency=2,
        perform_ping_check=False,
        shutdown_timeout=10,
    ) as controller:
        yield controller
        # Stop it now: left to itself, the test worker first waits out its 2 s broker poll.
        # The broadcast reaches this worker only: the memory broker lives in this process.
        worker_app.control.shutdown(reply=False)
