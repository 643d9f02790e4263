"""Development: scripts/dev-worker restarts the worker with the new code when a .py file changes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from celery import Celery

from .support import tools
from .support.processes import ManagedProcess, wait_until
from .support.render import RENDER_MATRIX, Project
from .support.stack import HOSTNAME, Stack
from .support.supervisord import alive, descendants

BIN = Path(sys.executable).parent
NODE = f"dev@{HOSTNAME}"
# Bound on "edit saved" to "the new code answers": debounce (1 s) + warm shutdown + a new worker boot.
RELOAD_TIMEOUT = 45.0

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize("answer_set", ["defaults", "existing-repo", "deep-path"])
def test_dev_worker_is_rendered_executable_for_every_project(
    answer_set: str, render_project: Callable[..., Project]
) -> None:
    project = render_project(**RENDER_MATRIX[answer_set])
    script = project.path / "scripts" / "dev-worker"
    assert os.access(script, os.X_OK), f"{script} is not executable"
    done = subprocess.run(
        [tools.executable("shellcheck"), str(script)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout
    text = script.read_text()
    top = project.package_path.split(".")[0]
    assert f"--directory={top} " in text and (project.path / top).is_dir()
    assert f"celery -A {project.package_path}.celery_app worker" in text


@pytest.fixture
def dev_worker(
    render_project: Callable[..., Project],
    stack_factory: Callable[[Project], Stack],
    tmp_path: Path,
) -> Iterator[tuple[ManagedProcess, Stack]]:
    """scripts/dev-worker of a copy of the default render, on a private broker."""
    rendered = render_project()
    project = Project(tmp_path / "project", rendered.answers)
    shutil.copytree(rendered.path, project.path)
    stack = stack_factory(project)
    env = stack.env()
    env.pop("PYTHONPATH")  # the script must find the package itself, as for a developer
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"  # watchmedo and celery of the dev extra
    script = project.path / "scripts" / "dev-worker"
    # Started from another directory: the script changes to the project itself.
    process = ManagedProcess(
        "dev-worker",
        [str(script), "-n", "dev@%h", "--concurrency=1"],
        cwd=tmp_path,
        env=env,
        log_dir=stack.log_dir,
    ).start()
    seen: set[int] = set()
    try:
        yield process, stack
    finally:
        # watchmedo runs the worker in a session of its own: the group kill below misses it.
        if process.running():
            seen |= descendants(process.pid)
        process.stop()
        for pid in seen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def worker_pid(stack: Stack) -> int | None:
    stats = stack.control_app.control.inspect(destination=[NODE], timeout=1.0).stats() or {}
    pid = stats.get(NODE, {}).get("pid")
    return int(pid) if pid else None


def health_check(stack: Stack, client: Celery) -> dict[str, object]:
    sent = stack.probe("send", task="health_check")["ids"][0]
    return dict(client.AsyncResult(sent).get(timeout=30))


def test_code_change_restarts_the_worker_with_the_new_code(
    dev_worker: tuple[ManagedProcess, Stack],
) -> None:
    process, stack = dev_worker
    client = Celery("dev-test", broker=stack.namespace.broker_url, set_as_current=False)
    client.conf.result_backend = stack.namespace.result_backend

    def first_worker() -> int | None:
        assert process.running(), process.log()[-3000:]
        return worker_pid(stack)

    old_pid = int(wait_until(first_worker, 60, interval=0.5))  # type: ignore[arg-type]
    assert old_pid in descendants(process.pid), "the worker is not watchmedo's child"
    old_tree = {old_pid} | descendants(old_pid)
    before = health_check(stack, client)
    assert before["status"] == "ok" and "reloaded" not in before

    tasks = stack.project.package_dir / "tasks.py"
    code = tasks.read_text()
    marker = '        "status": "ok",\n'
    assert code.count(marker) == 1, "health_check's return value changed: update this test"
    tasks.write_text(code.replace(marker, marker + '        "reloaded": True,\n'))
    changed_at = time.monotonic()

    def new_worker() -> int | None:
        assert process.running(), process.log()[-3000:]
        pid = worker_pid(stack)
        return pid if pid and pid != old_pid else None

    new_pid = int(wait_until(new_worker, RELOAD_TIMEOUT, interval=0.25))  # type: ignore[arg-type]
    after = health_check(stack, client)
    reloaded_in = time.monotonic() - changed_at
    assert after["reloaded"] is True and after["worker"] == NODE
    assert reloaded_in < RELOAD_TIMEOUT
    assert new_pid in descendants(process.pid)
    # The old worker and its pool processes are gone, not left running beside the new one.
    assert not [pid for pid in old_tree if alive(pid)], "old worker processes still alive"
    print(f"dev-worker: new code served {reloaded_in:.1f} s after the file was saved")
    client.close()

    # Stopping the command (Ctrl+C or SIGTERM) stops its worker too.
    tree = descendants(process.pid)
    process.signal_main(signal.SIGTERM)
    assert process.wait(30) is not None, "watchmedo did not exit"
    wait_until(lambda: not any(alive(pid) for pid in tree), 15)
