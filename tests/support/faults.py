"""Fault-test tools: a recording task injected into a copy of a rendered project, and the figures.

The injected task, `fault_probe(key, seconds)`, records in a Redis list every time it finishes (one
entry per execution), so a test can count what was lost (sent but never finished) and what ran twice.
The recorder lives in its own database of the session's private Redis, apart from broker and results.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import redis

from .render import Project

FAULT_TASK = '''


# --- injected by the template's fault tests (tests/support/faults.py) ---
@shared_task(bind=True)
def fault_probe(
    self: Task[Any, Any],
    key: str,
    seconds: float = 0.0,
    stubborn: bool = False,
    retry_countdown: float | None = None,
) -> str:
    """Sleep `seconds`, then record one finished execution of `key`.

    stubborn: keep sleeping through SoftTimeLimitExceeded, so only the hard limit can stop it.
    retry_countdown: the first run retries itself with this countdown (recording "<key>:retried").
    """
    import os

    import redis as _redis
    from celery.exceptions import SoftTimeLimitExceeded

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        except SoftTimeLimitExceeded:
            if not stubborn:
                raise
    client = _redis.Redis.from_url(os.environ["FAULT_RECORDER_URL"])
    if retry_countdown is not None and not self.request.retries:
        client.rpush("fault:finished", f"{key}:retried")
        client.close()
        raise self.retry(countdown=retry_countdown)
    # One transaction: the execution, the worker that ran it (node name) and its pool process.
    record = client.pipeline().rpush("fault:finished", key)
    record.rpush("fault:nodes", f"{key} {self.request.hostname}")
    record.rpush("fault:pids", f"{key} {os.getpid()}").execute()
    client.close()
    return key
'''


def copy_with_tasks(project: Project, destination: Path, code: str = FAULT_TASK) -> Project:
    """A writable copy of a rendered project whose tasks module also has the tasks of `code`
    (`fault_probe` by default)."""
    shutil.copytree(project.path, destination)
    tasks = destination.joinpath(*project.package_path.split("."), "tasks.py")
    tasks.write_text(tasks.read_text() + code)
    return Project(destination, dict(project.answers))


class Recorder:
    """Reads the executions that `fault_probe` recorded."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = redis.Redis.from_url(url)

    def finished(self) -> list[str]:
        return [item.decode() for item in self.client.lrange("fault:finished", 0, -1)]

    def nodes(self) -> list[tuple[str, str]]:
        """(key, worker node name) of each finished execution, in the order they finished."""
        items = self.client.lrange("fault:nodes", 0, -1)
        return [(key, node) for key, node in (item.decode().split(" ", 1) for item in items)]

    def pids(self) -> dict[str, int]:
        """key: the pool process that ran it (its last execution)."""
        items = self.client.lrange("fault:pids", 0, -1)
        return {key: int(pid) for key, pid in (item.decode().split(" ", 1) for item in items)}

    def wait_for(self, keys: set[str], timeout: float) -> list[str]:
        """Wait until every key finished at least once (or timeout); return all executions."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self.finished()
            if keys <= set(done):
                return done
            time.sleep(0.25)
        return self.finished()

    def close(self) -> None:
        self.client.close()


@dataclass
class Figure:
    case: str
    sent: int
    lost: int
    duplicated: int
    resume_seconds: float | None = None
    note: str = ""


class Figures:
    """Rows appended to a JSON-lines file as tests run (xdist workers included); the session's
    controller prints them as one table at the end (conftest.py) and bench/faults reads the file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def add(
        self,
        case: str,
        sent: set[str],
        executions: list[str],
        resume_seconds: float | None = None,
        note: str = "",
    ) -> Figure:
        lost = len(sent - set(executions))
        duplicated = sum(executions.count(key) - 1 for key in sent if key in executions)
        figure = Figure(case, len(sent), lost, duplicated, resume_seconds, note)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as file:  # one short append per row: safe across processes
            file.write(json.dumps(asdict(figure)) + "\n")
        return figure

    def rows(self) -> list[Figure]:
        if not self.path.exists():
            return []
        return [Figure(**json.loads(line)) for line in self.path.read_text().splitlines() if line]

    def table(self) -> str:
        lines = [f"{'case':58} {'sent':>5} {'lost':>5} {'dup':>5} {'resume s':>9}  note"]
        for row in self.rows():
            resume = "-" if row.resume_seconds is None else f"{row.resume_seconds:.1f}"
            lines.append(
                f"{row.case[:58]:58} {row.sent:5} {row.lost:5} {row.duplicated:5} {resume:>9}"
                f"  {row.note}"
            )
        return "\n".join(lines)
