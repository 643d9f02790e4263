"""systemd: the units pass systemd-analyze, and each unit's ExecStart, run the way systemd runs it,
boots a worker, beat, Flower or the metrics exporter that works and stops warmly on SIGTERM to its
main process."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.result import AsyncResult

from .support.http import http_get, http_status, wait_for_http
from .support.processes import group_alive, wait_until
from .support.redis_server import free_port
from .support.render import Project
from .support.stack import HOSTNAME, Stack
from .support.supervisord import listening_addresses
from .support.systemd import (
    Machine,
    ServiceProcess,
    UnitFile,
    read_environment_file,
    systemd_escape,
    tool,
)

pytestmark = pytest.mark.timeout(180)

NAME = "acme-jobs"  # distribution_name, the prefix of every unit and of /etc/<name>/
ANSWERS = {
    "project_name": "Acme Jobs",
    "package_path": "acme.jobs",
    "deploy_targets": ("systemd",),  # a tuple: render_project's cache key must be hashable
}
WORKER, BEAT, FLOWER = f"{NAME}-worker@.service", f"{NAME}-beat.service", f"{NAME}-flower.service"
METRICS = f"{NAME}-metrics.service"
MAX_EXPOSURE = 2.0
STOP_TIMEOUT = 30.0


@dataclass(frozen=True)
class Installation:
    """The render copied to its install_dir, with .venv pointing at this test environment."""

    project: Project
    install_dir: Path

    @property
    def units(self) -> Path:
        return self.project.path / "deploy" / "systemd"

    def unit(self, file_name: str) -> UnitFile:
        return UnitFile.read(self.units / file_name)

    def files(self) -> list[str]:
        """Every path under install_dir, not following .venv."""
        found = []
        for directory, subdirectories, names in os.walk(self.install_dir):
            found += [os.path.join(directory, n) for n in subdirectories + names]
        return sorted(found)


@pytest.fixture(scope="module")
def installation(
    render_project: Callable[..., Project], tmp_path_factory: pytest.TempPathFactory
) -> Installation:
    # The units name install_dir/.venv/bin/celery, which systemd-analyze verify checks exists.
    install_dir = tmp_path_factory.mktemp("systemd") / "opt" / NAME
    project = render_project(**ANSWERS, install_dir=str(install_dir), flower_port=str(free_port()))
    shutil.copytree(project.path, install_dir, symlinks=True)
    (install_dir / ".venv").symlink_to(sys.prefix)
    return Installation(project, install_dir)


class Host:
    """One pretend machine: its /etc/<name>/<name>.env, its units' processes, a Celery client."""

    def __init__(self, installation: Installation, stack: Stack, root: Path) -> None:
        self.installation = installation
        self.stack = stack
        self.machine = Machine(root)
        self.client = Celery(
            "systemd-test-client",
            broker=stack.namespace.broker_url,
            backend=stack.namespace.result_backend,
            set_as_current=False,
        )
        self.install_env_file()
        self.install_env_file(f"{NAME}-flower.env", "flower.env")

    def install_env_file(
        self, shipped: str = f"{NAME}.env", installed: str = f"{NAME}.env", **values: str
    ) -> dict[str, str]:
        """A shipped env file, installed in /etc/<name>/ with `values` in place (and, for the
        main one, the private broker): what systemd reads."""
        text = (self.installation.units / shipped).read_text()
        if shipped == f"{NAME}.env":
            values = {
                "CELERY_BROKER_URL": self.stack.namespace.broker_url,
                "CELERY_RESULT_BACKEND": self.stack.namespace.result_backend,
                **values,
            }
        for key, value in values.items():
            line = re.compile(rf"^{key}=.*$", re.MULTILINE)
            text, count = line.subn(lambda _, key=key, value=value: f"{key}={value}", text)
            if not count:
                text += f"{key}={value}\n"
        path = self.machine.host_path(f"/etc/{NAME}/{installed}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o600)
        return read_environment_file(path)

    def start(self, unit_file: str, instance: str = "") -> ServiceProcess:
        command = self.machine.prepare(self.installation.unit(unit_file), instance)
        # Named like the worker's node (%i@%H), so Stack's ping and inspect helpers apply.
        process = ServiceProcess(instance or unit_file, command, self.stack.log_dir)
        self.stack.processes.append(process)  # stopped by stack_factory's teardown
        return process.start()

    def send(self, task: str, *args: Any, queue: str, **kwargs: Any) -> AsyncResult[Any]:
        return self.client.send_task(f"acme.jobs.tasks.{task}", args, kwargs, queue=queue)

    def stop(self, *processes: ServiceProcess) -> list[int | None]:
        """KillMode=mixed: SIGTERM to each main process only; the rest must exit by itself."""
        for process in processes:
            process.signal_main(signal.SIGTERM)
        codes = [process.wait(STOP_TIMEOUT) for process in processes]
        for process in processes:
            wait_until(lambda process=process: not group_alive(process.pid), 10)
        return codes


@pytest.fixture
def host(
    installation: Installation, stack_factory: Callable[[Project], Stack], tmp_path: Path
) -> Iterator[Host]:
    host = Host(installation, stack_factory(installation.project), tmp_path / "root")
    yield host
    host.client.close()


def queues(installation: Installation) -> tuple[str, str]:
    """The default queue and the urgent one, as answered."""
    answers = installation.project.answers
    return answers["queues"].split(",")[0], answers["urgent_queue"]


def analyze(*args: str, path: Path) -> str:
    done = subprocess.run(
        [tool("systemd-analyze"), *args, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"systemd-analyze {args} {path.name}:\n{done.stdout}{done.stderr}"
    return done.stdout + done.stderr


def unit_copies(project: Project, directory: Path) -> list[Path]:
    """The units as systemd would load them; the template under an instance name."""
    units = project.path / "deploy" / "systemd"
    directory.mkdir()
    copies = []
    for file_name, instance in (
        (WORKER, project.answers["urgent_queue"]),
        (BEAT, ""),
        (FLOWER, ""),
        (METRICS, ""),
    ):
        copy = directory / UnitFile.read(units / file_name).named(instance)
        shutil.copy(units / file_name, copy)
        copies.append(copy)
    return copies


def test_units_pass_systemd_analyze_verify(installation: Installation, tmp_path: Path) -> None:
    for unit in unit_copies(installation.project, tmp_path / "units"):
        # verify loads the unit and checks that ExecStart's binary exists (User= may not exist).
        output = analyze("verify", path=unit)
        assert output == "", f"{unit.name}:\n{output}"


@pytest.mark.parametrize("place", ["not-home", "home"])
def test_units_expose_at_most_2_0_to_systemd_analyze_security(
    place: str,
    installation: Installation,
    render_project: Callable[..., Project],
    tmp_path: Path,
) -> None:
    project = installation.project
    if place == "home":  # ProtectHome=read-only instead of yes
        project = render_project(**ANSWERS, install_dir=f"/home/deploy/{NAME}")
    scores = {}
    for unit in unit_copies(project, tmp_path / "units"):
        output = analyze("security", "--offline=yes", "--no-pager", path=unit)
        found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", output)
        assert found, output
        scores[unit.name] = float(found.group(1))
        # The score that the unit's comment announces is the measured one.
        claimed = re.search(r"rates its exposure\n# (\d+\.\d+) of 10", unit.read_text())
        assert claimed and float(claimed.group(1)) == scores[unit.name], unit.name
    install_dir = project.answers["install_dir"]
    print(
        f"\nsystemd-analyze security --offline=yes, install_dir={install_dir} (0 safe, 10 unsafe):"
    )
    for name, score in scores.items():
        print(f"  {name:<40} {score:.1f}")
    assert all(score <= MAX_EXPOSURE for score in scores.values()), scores


@pytest.mark.parametrize("file_name", [WORKER, BEAT, FLOWER, METRICS])
def test_unit_runs_celery_in_the_foreground_and_stops_it_warmly(
    installation: Installation, file_name: str
) -> None:
    unit = installation.unit(file_name)
    command, *args = (unit.get("ExecStart") or "").split()
    assert command.startswith(f"{installation.install_dir}/.venv/bin/")
    assert "multi" not in args and "--detach" not in args
    assert unit.get("Type") == "exec" and unit.get("KillMode") == "mixed"
    assert unit.get("User") not in (None, "root", "0") and unit.get("DynamicUser") is None
    assert unit.get("WorkingDirectory") == str(installation.install_dir)
    assert unit.get("Restart") == "on-failure"
    # Breaks cffi callbacks (and ctypes) in the libraries a worker imports.
    assert unit.get("MemoryDenyWriteExecute") is None
    if file_name == WORKER:
        env = read_environment_file(installation.units / f"{NAME}.env")
        timeout = re.fullmatch(r"(\d+)s?", unit.get("TimeoutStopSec") or "")
        assert timeout and int(timeout.group(1)) > int(env["CELERY_TASK_TIME_LIMIT"])


@pytest.mark.parametrize(
    "answers",
    [{"broker": "rabbitmq"}, {"result_backend": "none"}],
    ids=["rabbitmq-rpc", "redis-no-results"],
)
def test_shipped_env_file_is_valid_configuration_for_other_brokers(
    render_project: Callable[..., Project], answers: dict[str, str]
) -> None:
    """The redis/redis env file boots below; its other branches must at least load cleanly."""
    project = render_project(**ANSWERS, **answers)
    env = read_environment_file(project.path / "deploy" / "systemd" / f"{NAME}.env")
    check = "import acme.jobs.config as config; print(config.load_settings().broker_url)"
    done = subprocess.run(
        [sys.executable, "-c", check],
        cwd=project.path,
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("amqp://" if project.broker == "rabbitmq" else "redis://")
    assert ("CELERY_RESULT_BACKEND" in env) == (project.result_backend != "none")


def test_worker_instance_consumes_the_queue_set_it_names(host: Host) -> None:
    default_queue, urgent_queue = queues(host.installation)
    before = host.installation.files()
    # The per-instance file overrides the shared one for that instance only.
    host.machine.host_path(f"/etc/{NAME}/worker@{urgent_queue}.env").write_text(
        "CELERY_WORKER_CONCURRENCY=1\n"
    )
    urgent = host.start(WORKER, urgent_queue)
    host.stack.wait_ready(urgent)
    health = host.send("health_check", queue=urgent_queue)
    document = host.send("process_document", "doc-1", {"text": "a b"}, queue=default_queue)
    assert health.get(timeout=30)["status"] == "ok"
    assert host.stack.queue_length(default_queue) == 1, "the urgent instance took a default task"

    both = host.start(WORKER, systemd_escape(f"{default_queue},{urgent_queue}"))
    host.stack.wait_ready(both)
    assert document.get(timeout=30)["worker"] == f"{both.name}@{HOSTNAME}"
    nodes = [host.stack.nodename(urgent), host.stack.nodename(both)]
    stats = host.stack.control_app.control.inspect(destination=nodes, timeout=5.0).stats() or {}
    concurrency = {node: info["pool"]["max-concurrency"] for node, info in stats.items()}
    assert concurrency == {nodes[0]: 1, nodes[1]: 2}, "worker@<instance>.env did not apply"

    heartbeat = host.machine.runtime / NAME / f"worker@{urgent_queue}.heartbeat"
    python = f"{host.installation.install_dir}/.venv/bin/python"
    probe = subprocess.run(
        [python, "-m", "acme.jobs.health", str(heartbeat), "--max-age", "30"],
        cwd=host.installation.install_dir,
        # As the units run Python: no bytecode written into the (read-only) install directory.
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert probe.returncode == 0, probe.stdout + probe.stderr

    assert "acme.jobs.tasks.process_document" not in host.stack.task_counts(urgent)
    assert host.stop(urgent, both) == [0, 0], urgent.log()[-2000:] + both.log()[-2000:]
    assert not heartbeat.exists(), "a stopped worker must not look alive"
    assert host.installation.files() == before, "wrote into the read-only install directory"


def test_sigterm_to_the_main_process_lets_the_running_task_finish(host: Host) -> None:
    default_queue, _ = queues(host.installation)
    worker = host.start(WORKER, default_queue)
    host.stack.wait_ready(worker)
    text = "lorem ipsum dolor " * 40  # 5 chunks of 24 words, 0.5 s each
    analysis = host.send(
        "analyze_content", text, queue=default_queue, chunk_size=24, step_delay=0.5
    )
    wait_until(lambda: analysis.state == "PROGRESS", 30, interval=0.05)

    worker.signal_main(signal.SIGTERM)
    assert analysis.get(timeout=STOP_TIMEOUT)["words"] == 120
    assert worker.wait(STOP_TIMEOUT) == 0, worker.log()[-3000:]
    assert "Warm shutdown" in worker.log()
    # Nothing left for the SIGKILL that KillMode=mixed sends to the rest of the group.
    wait_until(lambda: not group_alive(worker.pid), 10)


def test_mistyped_worker_instance_stops_with_a_configuration_error(host: Host) -> None:
    worker = host.start(WORKER, "hihg_priority")
    assert worker.wait(STOP_TIMEOUT) == 1
    assert "configuration error: CELERY_WORKER_QUEUES='hihg_priority' is invalid" in worker.log()


def test_beat_keeps_its_schedule_in_the_state_directory(host: Host) -> None:
    default_queue, _ = queues(host.installation)
    before = host.installation.files()
    host.install_env_file(CELERY_BEAT_CLEANUP_INTERVAL="1")
    worker = host.start(WORKER, default_queue)
    host.stack.wait_ready(worker)
    beat = host.start(BEAT)

    def cleanups() -> bool:
        assert beat.running(), beat.log()[-3000:]
        return host.stack.task_counts(worker).get("acme.jobs.tasks.cleanup", 0) >= 2

    wait_until(cleanups, 45, interval=0.5)
    state = host.machine.state / NAME
    schedule = list(state.glob("beat-schedule*"))
    assert schedule, "beat wrote no schedule into StateDirectory="
    assert stat.S_IMODE(state.stat().st_mode) == 0o750
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in schedule), "UMask=0077"
    heartbeat = host.machine.runtime / NAME / "beat.heartbeat"
    assert time.time() - heartbeat.stat().st_mtime < 30

    assert host.stop(beat, worker) == [0, 0], beat.log()[-2000:] + worker.log()[-2000:]
    assert host.installation.files() == before, "wrote into the read-only install directory"


def test_flower_answers_its_healthcheck_and_requires_credentials(host: Host) -> None:
    password = secrets.token_urlsafe(18)
    host.install_env_file(f"{NAME}-flower.env", "flower.env", FLOWER_BASIC_AUTH=f"ops:{password}")
    flower = host.start(FLOWER)
    base = f"http://127.0.0.1:{host.installation.project.answers['flower_port']}"
    wait_for_http(f"{base}/healthcheck", flower)
    assert http_status(f"{base}/") == 401
    assert http_status(f"{base}/", "ops:not-the-password") == 401
    assert http_status(f"{base}/", f"ops:{password}") == 200
    assert host.stop(flower) == [0], flower.log()[-3000:]


def test_flower_refuses_to_start_with_the_shipped_env_file(host: Host) -> None:
    assert host.install_env_file(f"{NAME}-flower.env", "flower.env")["FLOWER_BASIC_AUTH"] == ""
    # The workers' and beat's file holds no Flower password at all.
    assert "FLOWER_BASIC_AUTH" not in host.install_env_file()
    flower = host.start(FLOWER)
    assert flower.wait(STOP_TIMEOUT) == 1
    assert "configuration error: FLOWER_BASIC_AUTH is not set" in flower.log()


def test_metrics_exporter_reads_the_broker_on_loopback_and_stops_on_sigterm(host: Host) -> None:
    unit = host.installation.unit(METRICS)
    # The broker URL only: the main env file, never Flower's password.
    assert unit.all("EnvironmentFile") == [f"/etc/{NAME}/{NAME}.env"]
    port = free_port()  # not 9808: tests run in parallel
    host.install_env_file(CELERY_METRICS_PORT=str(port), CELERY_METRICS_INTERVAL="1")
    exporter = host.start(METRICS)
    base = f"http://127.0.0.1:{port}"
    wait_for_http(f"{base}/healthz", exporter)
    status, text = http_get(f"{base}/metrics")
    assert status == 200 and "celery_broker_up 1.0" in text, text
    default_queue, _ = queues(host.installation)
    status, backlog = http_get(f"{base}/backlog?queues={default_queue}")
    assert status == 200 and json.loads(backlog)["backlog"] == 0, backlog
    assert listening_addresses(port) == {"127.0.0.1"}, "the unit's Environment= applies"
    assert host.stop(exporter) == [0], exporter.log()[-3000:]
