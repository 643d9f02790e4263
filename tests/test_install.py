"""Install: the rendered project's own pyproject.toml declares everything its worker needs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from .support.processes import ManagedProcess, wait_until
from .support.redis_server import free_port
from .support.render import DEFAULTS, RABBITMQ, Project
from .support.stack import Stack

pytestmark = pytest.mark.timeout(600)
# The install tests install with the interpreter at hand, whose version the project must accept
# (the default answer, 3.12, is above the 3.11 of Debian bookworm).
HERE = {"python_version": f"{sys.version_info.major}.{sys.version_info.minor}"}


# The lock files the install below does not run, and packages each must (not) bring.
OTHER_LOCKS = {
    "rabbitmq": (RABBITMQ, {"amqp"}, {"redis", "sqlalchemy"}),
    "postgresql-results": (
        {"result_backend": "postgresql"},
        {"redis", "sqlalchemy", "psycopg"},
        set(),
    ),
}


@pytest.mark.parametrize("name", list(OTHER_LOCKS))
def test_the_other_locks_are_complete_and_hashed(
    name: str, render_project: Callable[..., Project], tmp_path: Path
) -> None:
    """The other lock files (RabbitMQ with rpc results: no Redis; Redis with PostgreSQL results):
    pip resolves each with every dependency, and every one must be in the file with its hash
    (--require-hashes refuses a missing one), on this Python. The install below runs the Redis
    one."""
    answers, present, absent = OTHER_LOCKS[name]
    project = render_project(**answers, **HERE)
    lock = project.path / "requirements.lock"
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "-q",
         "--disable-pip-version-check", "--require-hashes", "-r", str(lock), "--report",
         str(report)],
        capture_output=True, text=True, timeout=480,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert {"celery", "kombu", "flower", *present} <= names and not absent & names


def test_worker_from_a_fresh_virtualenv_runs_tasks(
    render_project: Callable[..., Project],
    stack_factory: Callable[..., Stack],
    tmp_path: Path,
) -> None:
    """Installed as the Dockerfile's builder stage installs it: every package from the lock file
    with its hash and without resolving anything, then the project alone; `pip check` finds each
    dependency there, and the worker runs from the installed package."""
    project = render_project(**DEFAULTS, **HERE)
    lock = project.path / "requirements.lock"
    dockerfile = project.dockerfile.read_text()
    assert "RUN pip install --require-hashes --no-deps -r requirements.lock" in dockerfile
    assert 'RUN pip install --no-deps "/src[flower]"' in dockerfile
    pinned = [line for line in lock.read_text().splitlines() if "==" in line]
    assert any(line.startswith("celery==") for line in pinned)
    assert any(line.startswith("redis==") for line in pinned) == (project.broker == "redis")
    venv = tmp_path / "venv"
    # No pip inside: this environment's pip installs into it (--python), which spares a bootstrap.
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
    pip += ["--disable-pip-version-check", "-q"]
    for step in (
        ["install", "--require-hashes", "--no-deps", "-r", str(lock)],
        ["install", "--no-deps", f"{project.path}[flower]"],  # a regular, not editable, install
        ["check"],
    ):
        done = subprocess.run([*pip, *step], capture_output=True, text=True, timeout=480)
        assert done.returncode == 0, f"pip {step[0]}: {done.stdout[-2000:]}{done.stderr[-4000:]}"

    # The stack runs the venv's celery and python outside the project directory, without PYTHONPATH.
    stack = stack_factory(project, venv)
    worker = stack.worker()
    out = stack.probe("samples")
    assert out["process_document"]["worker"] == stack.nodename(worker)
    assert out["deliver_notification"]["attempts"] == 3
    assert out["analyze_content"]["words"] == 120
    # The operations command, as the console script the install made.
    script = venv / "bin" / f"{project.answers['distribution_name']}-workers"
    status = subprocess.run(
        [str(script), "status", "--json"],
        cwd=stack.cwd, env=stack.env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert [row["worker"] for row in json.loads(status.stdout)] == [stack.nodename(worker)]


# -- the generated README's commands, as a user pastes them ---------------------------------------
# The README's commands that keep running: started in the background, then checked.
RUNNING = {"worker": " worker ", "beat": " beat ", "flower": ".flower "}


def readme_run_commands(readme: str) -> list[str]:
    """The lines of the first bash block under "## Run"."""
    section = readme[readme.index("## Run") :]
    start = section.index("```bash\n") + len("```bash\n")
    return [line for line in section[start : section.index("```", start)].splitlines() if line]


@pytest.mark.long
def test_readme_commands_run_as_written(
    render_project: Callable[..., Project],
    stack_factory: Callable[..., Stack],
    tmp_path: Path,
) -> None:
    """Each command of the generated README's "Run" block, pasted as it is into bash in a copy of
    the project (with the virtualenv it makes active, as the README says): a real install of the
    project with its dev extra, .env made from the example, the config check, a worker, beat and
    Flower left running, and `inspect ping` answered. The broker URLs are the test's, set in the
    environment, which wins over .env (the documented way to override it)."""
    port = free_port()
    project = render_project(**DEFAULTS, **HERE, flower_port=str(port))
    work = tmp_path / "project"
    shutil.copytree(project.path, work)
    stack = stack_factory(project)
    env = stack.env()
    env.pop("PYTHONPATH")
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # `python`: a Python 3.10+
    commands = readme_run_commands((work / "README.md").read_text())
    assert [name for name, marker in RUNNING.items() if any(marker in c for c in commands)] == list(
        RUNNING
    )
    running: dict[str, ManagedProcess] = {}
    for command in commands:
        script = f"[ -e .venv ] && . .venv/bin/activate\n{command}"
        name = next((name for name, marker in RUNNING.items() if marker in command), None)
        if name is not None:
            running[name] = ManagedProcess(
                name, ["bash", "-c", script], cwd=work, env=env, log_dir=stack.log_dir
            )
            stack.processes.append(running[name])  # stopped with the stack
            running[name].start()
            if name == "worker":  # a user waits for its "ready" line before going on

                def worker_answers() -> bool:
                    assert running["worker"].running(), running["worker"].log()[-3000:]
                    return bool(stack.control_app.control.ping(timeout=1.0))

                wait_until(worker_answers, 90)
            continue
        done = subprocess.run(
            ["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=480
        )
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        if "config" in command.split():
            assert "CELERY_BROKER_URL" in done.stdout and "environment" in done.stdout
        if "inspect ping" in command:
            assert "pong" in done.stdout, done.stdout

    beat = running["beat"]
    wait_until(lambda: "beat: Starting" in beat.log() or not beat.running(), 60)
    assert beat.running(), beat.log()[-3000:]

    def flower_answers() -> bool:
        assert running["flower"].running(), running["flower"].log()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthcheck", timeout=5):
                return True
        except OSError:
            return False

    wait_until(flower_answers, 60, interval=0.5)
