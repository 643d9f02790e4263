"""supervisord: the rendered deploy/supervisord files run worker, beat, Flower and the metrics
exporter under a real supervisord.

Each boot test starts supervisord with the rendered group included (tests/support/supervisord.py),
drives it with supervisorctl and the XML-RPC interface, and ends with `supervisorctl shutdown`
leaving no process behind.
"""

from __future__ import annotations

import configparser
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import timezone
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from .support import tools
from .support.http import http_get, http_status
from .support.processes import wait_until
from .support.redis_server import free_port
from .support.render import Project
from .support.stack import HOSTNAME, Stack
from .support.supervisord import (
    Installation,
    Supervisor,
    alive,
    descendants,
    group_name,
    install,
    listening_addresses,
    process_environ,
    process_uid,
    rendered_conf,
    unprivileged_user,
)

WORKER = "worker-0"
URGENT = "urgent-0"
PROGRAMS = (WORKER, URGENT, "beat", "flower")  # celery's own processes
METRICS = "metrics"
SUPERVISORD_ONLY = ("supervisord",)  # a tuple: render_project's cache key must be hashable

pytestmark = pytest.mark.timeout(240)


# -- the rendered files ----------------------------------------------------------------------------


@pytest.fixture(
    params=[
        {},
        {"new_project": False, "package_path": "acme.jobs", "service_user": "jobs"},
    ],
    ids=["defaults", "existing-repo"],
)
def rendered(request: pytest.FixtureRequest, render_project: Callable[..., Project]) -> Project:
    return render_project(deploy_targets=SUPERVISORD_ONLY, **request.param)


def test_rendered_programs_stop_gracefully_and_hold_no_secrets(rendered: Project) -> None:
    answers = rendered.answers
    name = group_name(answers)
    conf_path = rendered_conf(rendered)
    parser = configparser.RawConfigParser(strict=True)
    parser.read(conf_path)
    programs = [f"{name}-{p}" for p in ("worker", "urgent", "beat", "flower", "metrics")]
    assert parser.sections() == [f"group:{name}"] + [f"program:{p}" for p in programs]
    assert parser.get(f"group:{name}", "programs").split(",") == programs

    time_limit = int(_env_example(rendered)["CELERY_TASK_TIME_LIMIT"])
    for program in programs:
        section = parser[f"program:{program}"]
        assert section["user"] == answers["service_user"]
        assert section["directory"] == answers["install_dir"]
        assert (section["stopsignal"], section["stopasgroup"], section["killasgroup"]) == (
            "TERM",
            "false",
            "true",
        )
        assert section["autorestart"] == "true" and int(section["startsecs"]) >= 1
        command = section["command"].split()
        assert command[0] == f"{answers['install_dir']}/deploy/supervisord/with-env-file"
        assert command[1] == f"/etc/{name}/celery.env" and "--" in command
        assert section["stdout_logfile"].startswith(f"/var/log/{name}/")
    worker = parser[f"program:{name}-worker"]
    assert int(worker["stopwaitsecs"]) > time_limit
    assert f"--concurrency={answers['worker_processes']}" in worker["command"]
    # The urgent queue on a worker of its own; the main worker takes every other queue.
    assert worker["command"].endswith(" --queues=default")
    urgent = parser[f"program:{name}-urgent"]
    assert urgent["command"].endswith(" --queues=high_priority")
    assert int(urgent["stopwaitsecs"]) > time_limit
    assert int(parser[f"program:{name}-beat"]["numprocs"]) == 1
    flower = parser[f"program:{name}-flower"]["command"]
    assert f"-m {answers['package_path']}.flower --port={answers['flower_port']}" in flower
    assert f"/etc/{name}/flower.env" in flower
    metrics = parser[f"program:{name}-metrics"]
    assert metrics["command"].endswith(f" -m {answers['package_path']} metrics")
    assert "flower.env" not in metrics["command"], "the exporter needs the broker URL only"
    assert 'CELERY_METRICS_ADDRESS="127.0.0.1"' in metrics["environment"]

    values = " ".join(value for section in parser.values() for value in section.values())
    for secret in ("redis://", "amqp://", "FLOWER_BASIC_AUTH", "CELERY_BROKER_URL"):
        assert secret not in values, f"{secret} belongs in an env file, not in the configuration"


def test_start_script_passes_shellcheck_and_is_executable(rendered: Project) -> None:
    script = rendered.path / "deploy" / "supervisord" / "with-env-file"
    assert os.access(script, os.X_OK)
    done = subprocess.run(
        [tools.executable("shellcheck"), str(script)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout


def test_start_script_exports_env_files_and_execs(
    render_project: Callable[..., Project], tmp_path: Path
) -> None:
    script = (
        render_project(deploy_targets=SUPERVISORD_ONLY).path / "deploy/supervisord/with-env-file"
    )
    (tmp_path / "celery.env").write_text('A=from-celery\nSPACED="30 7 * * *"\n# comment\n\nB=1\n')
    (tmp_path / "flower.env").write_text("B=2\n")
    # The command prints its own PID: equal to the script's, since exec replaced the shell.
    show = 'echo "$$|$A|$SPACED|$B"'
    process = subprocess.Popen(
        [script, "celery.env", str(tmp_path / "flower.env"), "--", "/bin/sh", "-c", show],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        text=True,
    )
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert out.strip() == f"{process.pid}|from-celery|30 7 * * *|2"

    missing = subprocess.run(
        [script, str(tmp_path / "absent.env"), "--", "true"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert missing.returncode == 1 and "cannot read" in missing.stderr
    no_command = subprocess.run(
        [script, "celery.env"], cwd=tmp_path, capture_output=True, timeout=30
    )
    assert no_command.returncode == 2


def _env_example(project: Project) -> dict[str, str]:
    lines = project.env_example.read_text().splitlines()
    pairs = (line.partition("=") for line in lines if line and not line.startswith("#"))
    return {key: value for key, _, value in pairs}


# -- a running supervisord ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def installation(render_project: Callable[..., Project]) -> Iterator[Installation]:
    """The default render installed in a world-readable directory (pytest's are mode 0700)."""
    base = Path(tempfile.mkdtemp(prefix="ccw-supervisord-"))
    try:
        base.chmod(0o755)
        install_dir = base / "app"
        rendered = render_project(
            deploy_targets=SUPERVISORD_ONLY,
            service_user=unprivileged_user(),
            install_dir=str(install_dir),
            flower_port=str(free_port()),
        )
        installed = install(rendered, install_dir)
        if installed.substituted_user:
            warnings.warn(
                f"supervisord programs run as {installed.user}, not "
                f"{rendered.answers['service_user']}: the test interpreter {sys.executable} is "
                "not usable by that user on this machine",
                stacklevel=1,
            )
        yield installed
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def stack(installation: Installation, stack_factory: Callable[[Project], Stack]) -> Iterator[Stack]:
    yield stack_factory(installation.project)


@pytest.fixture
def flower_auth() -> str:
    return f"ops:{secrets.token_hex(8)}"


@pytest.fixture
def supervisor(
    request: pytest.FixtureRequest, installation: Installation, stack: Stack, flower_auth: str
) -> Iterator[Supervisor]:
    """supervisord running the group on this test's private broker, stopped at teardown.

    Indirect parametrization passes edits of the rendered configuration (control experiments).
    """
    run_dir = installation.project.path.parent / f"run-{secrets.token_hex(3)}"
    # celery.env is .env.example as an administrator would copy it, with this test's broker. Its
    # empty CELERY_WORKER_CONCURRENCY and relative CELERY_BEAT_SCHEDULE_FILENAME must not win.
    changes = {
        "CELERY_BROKER_URL": stack.namespace.broker_url,
        "CELERY_RESULT_BACKEND": stack.namespace.result_backend,
        "CELERY_BEAT_CLEANUP_INTERVAL": "1",  # beat sends cleanup every second
        "CELERY_METRICS_PORT": str(free_port()),  # not 9808: tests run in parallel
    }
    celery_env = []
    for line in installation.project.env_example.read_text().splitlines():
        key = line.partition("=")[0]
        celery_env.append(f"{key}={changes[key]}" if key in changes else line)
    supervisor = Supervisor(installation, run_dir)
    supervisor.prepare(
        {
            "celery.env": "\n".join(celery_env) + "\n",
            "flower.env": f"FLOWER_BASIC_AUTH={flower_auth}\n",
        },
        edits=getattr(request, "param", None),
    )
    try:
        yield supervisor.start()
    finally:
        supervisor.close()


def results_client(stack: Stack) -> Celery:
    app = Celery("supervisord-test", broker=stack.namespace.broker_url, set_as_current=False)
    app.conf.result_backend = stack.namespace.result_backend
    return app


def worker_node() -> str:
    return f"{WORKER}@{HOSTNAME}"


def wait_for_worker(stack: Stack, timeout: float = 60) -> float:
    """Seconds until worker-0 answers ping."""
    started = time.monotonic()
    wait_until(
        lambda: stack.control_app.control.ping(destination=[worker_node()], timeout=1.0),
        timeout,
        interval=0.25,
    )
    return time.monotonic() - started


def assert_clean_shutdown(supervisor: Supervisor) -> None:
    left = supervisor.shutdown()
    assert not left, f"processes left after supervisorctl shutdown: {sorted(left)}"
    assert supervisor.process is not None and supervisor.process.wait(5) == 0


def received(stack: Stack, task: str) -> int:
    """How many `task` messages worker-0 has received (Celery's `inspect stats`)."""
    node = worker_node()
    stats = stack.control_app.control.inspect(destination=[node], timeout=2.0).stats() or {}
    return int(stats.get(node, {}).get("total", {}).get(task, 0))


def test_group_runs_worker_beat_flower_and_metrics(
    installation: Installation, supervisor: Supervisor, stack: Stack, flower_auth: str
) -> None:
    supervisor.wait_running(*PROGRAMS, METRICS)
    wait_for_worker(stack)
    project = installation.project
    uid = supervisor.uid
    pids = {program: supervisor.info(program)["pid"] for program in PROGRAMS}
    for program, pid in pids.items():
        assert process_uid(pid) == uid, f"{program} runs as uid {process_uid(pid)}"
    # exec all the way down: the PID supervisord signals runs the venv's celery, not a shell.
    # Flower's too: its start script found .venv/bin/celery first on the conf's PATH.
    venv_celery = f"{project.path}/.venv/bin/celery"
    for program, pid in pids.items():
        command = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        subcommand = "worker" if program == URGENT else program.split("-")[0]
        assert command[1] == venv_celery and subcommand in command, (program, command)
    # Secrets come from the env files, and Flower's password only reaches Flower.
    worker_env = process_environ(pids[WORKER])
    assert worker_env["CELERY_BROKER_URL"] == stack.namespace.broker_url
    assert "FLOWER_BASIC_AUTH" not in worker_env
    assert process_environ(pids["flower"])["FLOWER_BASIC_AUTH"] == flower_auth

    # The conf's --concurrency (the worker_processes answer) beats the env file's empty value.
    stats = stack.control_app.control.inspect(destination=[worker_node()], timeout=2.0).stats()
    concurrency = stats[worker_node()]["pool"]["max-concurrency"]
    assert concurrency == int(project.answers["worker_processes"])

    out = stack.probe("samples")
    assert out["process_document"]["worker"] == worker_node()
    assert out["analyze_content"]["words"] == 120
    assert out["deliver_notification"]["attempts"] == 3
    assert out["health_check"]["status"] == "ok"

    cleanup = f"{project.task_prefix}.cleanup"
    wait_until(lambda: received(stack, cleanup) >= 2, 30, interval=0.5)
    assert "Sending due task cleanup" in supervisor.log("beat")
    assert any(supervisor.state_dir.glob("celerybeat-schedule*")), "no beat state"

    port = project.answers["flower_port"]
    flower = f"http://127.0.0.1:{port}"
    assert wait_until(lambda: http_get(f"{flower}/healthcheck") == (200, "OK"), 30)
    assert http_status(f"{flower}/api/workers") == 401
    assert http_status(f"{flower}/api/workers", flower_auth) == 200
    assert listening_addresses(int(port)) == {"127.0.0.1"}, "Flower must listen on loopback only"

    # The exporter: the package's python, celery.env only, on loopback, reading the broker.
    pid = supervisor.info(METRICS)["pid"]
    assert process_uid(pid) == uid
    command = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    assert command[1:4] == ["-m", project.answers["package_path"], "metrics"], command
    metrics_env = process_environ(pid)
    assert metrics_env["CELERY_BROKER_URL"] == stack.namespace.broker_url
    assert "FLOWER_BASIC_AUTH" not in metrics_env
    metrics_port = metrics_env["CELERY_METRICS_PORT"]
    assert wait_until(lambda: http_status(f"http://127.0.0.1:{metrics_port}/healthz") == 200, 30)
    scraped = http_get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert scraped[0] == 200 and "celery_broker_up 1.0" in scraped[1], scraped
    assert listening_addresses(int(metrics_port)) == {"127.0.0.1"}

    assert_clean_shutdown(supervisor)
    # Stopped with the group by its SIGTERM, and exited 0: supervisord saw a clean stop.
    assert f"stopped: {METRICS} (exit status 0)" in supervisor.log()


def test_urgent_tasks_start_at_once_while_long_tasks_fill_the_worker(
    supervisor: Supervisor, stack: Stack
) -> None:
    """The urgent queue's own program: health_check answers within a second while the main
    worker's processes are busy with long tasks and more wait in the default queue."""
    supervisor.wait_running(WORKER, URGENT)
    wait_for_worker(stack)
    measured = stack.probe("urgent_latency", long_tasks=4, seconds=8)
    assert measured["long_unfinished"] >= 2, measured
    assert set(measured["workers"]) == {f"{URGENT}@{HOSTNAME}"}, measured
    assert max(measured["latencies"]) < 1.0, measured


CHUNKS, STEP_DELAY = 6, 1.0  # analyze_content then runs about 6 s


def start_long_task(supervisor: Supervisor, stack: Stack, client: Celery) -> Any:
    """Send analyze_content and return its result once the worker is running it."""
    supervisor.wait_running(WORKER)
    wait_for_worker(stack)
    args = ["w " * CHUNKS, 1, STEP_DELAY]
    sent = stack.probe("send", task="analyze_content", args=args)["ids"][0]
    result = client.AsyncResult(sent)
    wait_until(lambda: result.state == "PROGRESS", 30, interval=0.1)
    return result


def test_stop_lets_the_running_task_finish(supervisor: Supervisor, stack: Stack) -> None:
    client = results_client(stack)
    result = start_long_task(supervisor, stack, client)

    stop_started = time.time()
    done = supervisor.ctl("stop", supervisor.full_name(WORKER))
    stop_took = time.time() - stop_started
    assert done.returncode == 0, done.stdout + done.stderr

    assert result.get(timeout=10) == {
        "words": CHUNKS,
        "analyzed_words": CHUNKS,
        "truncated": False,  # ran to the end: the stop did not cut it short
        "unique_words": 1,
        "characters": 2 * CHUNKS,
        "top_words": [["w", CHUNKS]],
        "current": CHUNKS,  # chunks of one word
        "total": CHUNKS,
    }
    assert result.state == "SUCCESS"
    date_done = result.date_done
    if date_done.tzinfo is None:  # Celery stores UTC
        date_done = date_done.replace(tzinfo=timezone.utc)
    finished = date_done.timestamp()
    # The task finished while the stop was in progress, and the stop waited for it.
    assert stop_started < finished <= stop_started + stop_took + 0.5, (stop_took, finished)
    info = supervisor.info(WORKER)
    assert (info["statename"], info["exitstatus"]) == ("STOPPED", 0), info
    assert "SIGKILL" not in supervisor.log()
    assert "Warm shutdown" in supervisor.log(WORKER)
    print(
        f"graceful stop: the {CHUNKS * STEP_DELAY:.0f} s task finished"
        f" {finished - stop_started:.1f} s after supervisorctl stop;"
        f" the worker had exited after {stop_took:.1f} s"
    )
    client.close()

    assert_clean_shutdown(supervisor)


@pytest.mark.parametrize(
    "supervisor",
    [{"stopasgroup=false": "stopasgroup=true"}],
    ids=["stopasgroup=true"],
    indirect=True,
)
def test_control_stopasgroup_true_kills_the_running_task(
    supervisor: Supervisor, stack: Stack
) -> None:
    """Why the rendered stopasgroup=false matters: with true, the same stop kills the task."""
    client = results_client(stack)
    result = start_long_task(supervisor, stack, client)

    stop_started = time.monotonic()
    done = supervisor.ctl("stop", supervisor.full_name(WORKER))
    stop_took = time.monotonic() - stop_started
    assert done.returncode == 0, done.stdout + done.stderr

    # The pool process got SIGTERM too and died at once; the task never finished.
    assert stop_took < CHUNKS * STEP_DELAY
    assert "exited with 'signal 15 (SIGTERM)'" in supervisor.log(WORKER)
    assert result.state != "SUCCESS"
    print(
        f"stopasgroup=true: the worker exited after {stop_took:.1f} s, the task is {result.state}"
    )
    client.close()

    assert_clean_shutdown(supervisor)


def test_killed_worker_is_restarted_and_consumes_again(
    supervisor: Supervisor, stack: Stack
) -> None:
    supervisor.wait_running(WORKER)
    wait_for_worker(stack)
    old_pid = supervisor.info(WORKER)["pid"]
    pool = descendants(old_pid)
    assert pool, "the prefork pool has no processes"

    killed_at = time.monotonic()
    os.kill(old_pid, signal.SIGKILL)
    new_pid = wait_until(lambda: _new_pid(supervisor, old_pid), 30, interval=0.1)
    respawned = time.monotonic() - killed_at
    answered = wait_for_worker(stack) + respawned
    client = results_client(stack)
    sent = stack.probe("send", task="process_document", args=["doc-after-the-kill"])["ids"][0]
    assert client.AsyncResult(sent).get(timeout=30)["worker"] == worker_node()
    consumed = time.monotonic() - killed_at
    client.close()

    assert new_pid != old_pid and not alive(old_pid)
    # Celery gives pool processes PR_SET_PDEATHSIG: they die with their main process.
    wait_until(lambda: not any(alive(pid) for pid in pool), 10)
    supervisor.wait_running(WORKER)
    assert f"exited: {WORKER} (terminated by SIGKILL; not expected)" in supervisor.log()
    print(
        f"kill -9: respawned after {respawned:.2f} s, answered ping after {answered:.1f} s,"
        f" ran a task after {consumed:.1f} s"
    )

    assert_clean_shutdown(supervisor)


def _new_pid(supervisor: Supervisor, old_pid: int) -> int | None:
    info = supervisor.info(WORKER)
    pid = info["pid"]
    return pid if pid and pid != old_pid else None
