"""Docker: the rendered Dockerfile and compose.yaml pass the field's validators, and every compose
service works when run as a local process, with its container's command and environment.

No Docker engine is needed. tests/support/docker.py applies the container rules to local processes.
"""

from __future__ import annotations

import json
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from .support import tools
from .support.docker import (
    BASE_ENV,
    ComposeProject,
    InterpolationError,
    LocalContainer,
    read_dotenv,
)
from .support.http import http_get, http_status
from .support.processes import ManagedProcess, wait_until
from .support.redis_server import free_port, redis_server_binary
from .support.render import DEFAULTS, RABBITMQ, RENDER_MATRIX, Project
from .support.stack import HOSTNAME, Stack

BIN = Path(sys.executable).parent
EXISTING_REPO = {
    "new_project": False,
    "deploy_targets": ("docker",),  # a tuple: render_project's cache key must be hashable
    "service_user": "jobs",
    "worker_processes": "3",
    "flower_port": "8081",
}
DOCKER_SETS = {"defaults": DEFAULTS, "rabbitmq": RABBITMQ, "existing-repo": EXISTING_REPO}
# The compose file differs per broker and result backend: validate every combination.
SCHEMA_SETS = {
    **DOCKER_SETS,
    "rabbitmq-redis-results": RENDER_MATRIX["rabbitmq-redis-results"],
    "no-results": RENDER_MATRIX["no-results"],
    "postgresql-results": RENDER_MATRIX["postgresql-results"],
}
SECRET_NAME = re.compile(r"PASS|AUTH|SECRET|TOKEN", re.IGNORECASE)
REQUIRED_VARIABLE = re.compile(r"\$\{\w+:\?[^}]+\}")
# The fixed UID/GID of the image's service user: volumes get the same owner on every host.
SERVICE_UID = "10001"
METRICS_PORT = 9808  # the exporter's default port (CELERY_METRICS_PORT)
# A client's call, run inside the rendered project with the test namespace's URLs.
RUN_ONE_TASK = """
import json
from %s.tasks import process_document
result = process_document.delay("doc-1", {"format": "text", "text": "hello  world"})
print(json.dumps(result.get(timeout=60)))
"""


@pytest.fixture(params=list(DOCKER_SETS))
def docker_project(
    request: pytest.FixtureRequest, render_project: Callable[..., Project]
) -> Project:
    return render_project(**DOCKER_SETS[request.param])


def dotenv_for(project: Project, **extra: str) -> dict[str, str]:
    """The `.env` a user writes: .env.example copied, plus the secrets compose.yaml asks for."""
    values = read_dotenv(project.env_example.read_text())
    values["FLOWER_BASIC_AUTH"] = f"ops:{secrets.token_hex(12)}"
    if project.broker == "rabbitmq":
        values["RABBITMQ_PASSWORD"] = secrets.token_hex(12)
    if project.result_backend == "postgresql":
        values["POSTGRES_PASSWORD"] = secrets.token_hex(12)
    return values | extra


def mounts_for(project: Project, tmp_path: Path) -> dict[str, Path]:
    """The image's writable directories, as test directories, and the project's code (/app)."""
    mounts = {"/run/celery": tmp_path / "run", "/var/lib/celery": tmp_path / "state"}
    for path in mounts.values():
        path.mkdir(parents=True, exist_ok=True)
    return mounts | {"/app": project.path}


def process_env(project: Project, container: LocalContainer, home: Path) -> dict[str, str]:
    env = BASE_ENV | {"HOME": str(home)} | container.env
    # The image has the package installed in its venv; here the render directory stands for it.
    env.setdefault("PYTHONPATH", str(project.path))
    return env


def start(stack: Stack, name: str, container: LocalContainer) -> ManagedProcess:
    env = process_env(stack.project, container, stack.log_dir)
    process = ManagedProcess(
        name, container.argv, cwd=container.cwd, env=env, log_dir=stack.log_dir
    )
    stack.processes.append(process)  # stopped by the stack_factory fixture
    return process.start()


def healthcheck(stack: Stack, container: LocalContainer) -> subprocess.CompletedProcess[str]:
    """The health command, run as `docker exec` would: the container's environment and directory."""
    return subprocess.run(
        container.healthcheck,
        cwd=container.cwd,
        env=process_env(stack.project, container, stack.log_dir),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


# -- the field's validators ----------------------------------------------------------------------
def test_hadolint_reports_nothing_at_warning_level(docker_project: Project) -> None:
    dockerfile = str(docker_project.dockerfile)
    done = subprocess.run(
        [
            tools.executable("hadolint"),
            "--format",
            "json",
            "--failure-threshold",
            "warning",
            dockerfile,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings = json.loads(done.stdout)
    serious = [f for f in findings if f["level"] in ("warning", "error")]
    assert not serious, json.dumps(serious, indent=1)
    assert done.returncode == 0, done.stderr


def test_compose_files_validate_against_the_compose_spec(
    render_project: Callable[..., Project],
) -> None:
    files = [str(render_project(**answers).compose_file) for answers in SCHEMA_SETS.values()]
    args = [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", *files]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok -- validation done" in done.stdout


# -- what the files say ----------------------------------------------------------------------------
def test_image_runs_celery_unprivileged_in_exec_form(docker_project: Project) -> None:
    project = docker_project
    compose = ComposeProject(project, dotenv_for(project))
    image = compose.image
    python_version = project.answers.get("python_version", "3.12")
    assert len(image.stages) >= 2, "a builder stage and a runtime stage"
    assert image.stages[-1] == f"python:{python_version}-slim"
    text = project.dockerfile.read_text()
    # Every dependency from the lock file, pinned and hashed (tests/test_install.py installs it).
    lock = "requirements.lock" if project.answers["new_project"] else "requirements.workers.lock"
    assert f"RUN pip install --require-hashes --no-deps -r {lock}" in text
    assert "flower==" in project.path.joinpath(lock).read_text()
    if project.answers["new_project"]:
        assert 'RUN pip install --no-deps "/src[flower]"' in text  # the project, nothing else
    else:
        assert image.env["PYTHONPATH"] == "/app"
    service_user = project.answers["service_user"]
    assert f"--uid {SERVICE_UID} --gid {service_user}" in text
    assert image.user == f"{SERVICE_UID}:{SERVICE_UID}"
    assert image.stopsignal == "SIGTERM"
    assert image.env["PYTHONDONTWRITEBYTECODE"] == image.env["PYTHONUNBUFFERED"] == "1"
    assert image.cmd == ["celery", "-A", f"{project.package_path}.celery_app", "worker"]
    assert not image.entrypoint
    heartbeat = image.env["CELERY_WORKER_HEARTBEAT_FILE"]
    assert image.healthcheck[:4] == ["python", "-m", f"{project.package_path}.health", heartbeat]


def test_compose_runs_one_beat_and_waits_for_a_healthy_broker(docker_project: Project) -> None:
    project = docker_project
    compose = ComposeProject(project, dotenv_for(project))
    services = compose.services
    assert set(services) >= {"broker", "worker", "beat", "flower", "metrics"}
    # One image for the Celery services, under the name the Dockerfile's build line uses.
    image = services["worker"]["image"]
    assert services["beat"]["image"] == services["flower"]["image"] == image
    assert services["metrics"]["image"] == image
    assert f"docker build -t {image} " in project.dockerfile.read_text()
    assert services["beat"]["deploy"]["replicas"] == 1
    assert services["worker"]["deploy"]["replicas"] >= 1
    for name in ("worker", "beat", "flower", "metrics"):
        assert services[name]["depends_on"]["broker"] == {"condition": "service_healthy"}
        assert services[name]["env_file"] == [{"path": ".env", "required": False}]
    # Every health check gates something: `up --wait` (the documented command) fails on an
    # unhealthy service, and beat starts only once every worker service is healthy.
    header = project.compose_file.read_text().split("\nx-", 1)[0]
    assert re.search(r"^#   docker compose .*up -d --build --wait$", header, re.MULTILINE), header
    workers = [name for name in services if name.startswith("worker")]
    assert workers == ["worker", "worker-urgent"]  # every set here has the default queues
    for name in workers:
        assert compose.container_healthcheck(name) == compose.image.healthcheck
        assert services[name]["healthcheck"]["start_interval"] == "5s"
        assert services["beat"]["depends_on"][name] == {"condition": "service_healthy"}
    for name in ("flower", "metrics"):  # the tools to look at a sick worker
        assert "worker" not in services[name]["depends_on"], name
    for name, service in services.items():
        assert "healthcheck" in service or name in workers, name
    broker = services["broker"]
    if project.broker == "redis":
        assert broker["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
        assert "noeviction" in broker["command"]
    else:
        assert broker["healthcheck"]["test"] == ["CMD", "rabbitmq-diagnostics", "-q", "ping"]

    # Warm shutdown must outlast the longest task, or docker stop kills it mid-run.
    time_limit = int(read_dotenv(project.env_example.read_text())["CELERY_TASK_TIME_LIMIT"])
    grace = services["worker"]["stop_grace_period"]
    assert grace.endswith("s") and int(grace[:-1]) >= time_limit, grace

    port = project.answers["flower_port"]
    assert services["flower"]["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert f"--port={port}" in services["flower"]["command"]
    # The exporter: on every interface of its container, published on the host's loopback only.
    assert services["metrics"]["command"] == [
        "python",
        "-m",
        project.package_path,
        "metrics",
        f"--port={METRICS_PORT}",
    ]
    assert services["metrics"]["ports"] == [f"127.0.0.1:{METRICS_PORT}:{METRICS_PORT}"]
    assert compose.container_env("metrics")["CELERY_METRICS_ADDRESS"] == "0.0.0.0"
    assert "FLOWER_BASIC_AUTH" not in services["metrics"]["environment"]
    concurrency = compose.container_env("worker")["CELERY_WORKER_CONCURRENCY"]
    assert concurrency == project.answers["worker_processes"]


def test_postgresql_results_get_a_healthy_database_with_a_volume(
    render_project: Callable[..., Project],
) -> None:
    """result_backend=postgresql: a postgres service with a health check and a volume, every
    Celery service waits for it to be healthy, and their URL has its password and database."""
    project = render_project(**RENDER_MATRIX["postgresql-results"])
    dotenv = dotenv_for(project)
    compose = ComposeProject(project, dotenv)
    services = compose.services
    database = services["postgres"]
    assert database["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert database["volumes"] == ["postgres-data:/var/lib/postgresql/data"]
    assert "postgres-data" in compose.raw["volumes"]
    assert database["environment"]["POSTGRES_PASSWORD"] == dotenv["POSTGRES_PASSWORD"]
    url = f"db+postgresql+psycopg://celery:{dotenv['POSTGRES_PASSWORD']}@postgres:5432/celery"
    for name in ("worker", "worker-urgent", "beat", "flower"):
        assert services[name]["depends_on"]["postgres"] == {"condition": "service_healthy"}
        assert compose.container_env(name)["CELERY_RESULT_BACKEND"] == url
    without = {k: v for k, v in dotenv.items() if k != "POSTGRES_PASSWORD"}
    with pytest.raises(InterpolationError, match="POSTGRES_PASSWORD"):
        ComposeProject(project, without)


def test_no_secret_in_the_image_or_the_files(docker_project: Project) -> None:
    project = docker_project
    compose = ComposeProject(project, dotenv_for(project))
    for keyword, rest in compose.image.instructions:
        if keyword in ("COPY", "ADD"):
            assert ".env" not in rest, f"{keyword} {rest}"
    ignored = project.dockerignore.read_text().splitlines()
    assert ".env" in ignored and ".env.*" in ignored and ".git" in ignored

    # Every secret is required from the environment: ${NAME:?message}, never a literal or a default.
    raw_text = project.compose_file.read_text()
    for reference in re.findall(r"\$\{\w*(?:PASS|AUTH|SECRET|TOKEN)\w*[^}]*\}", raw_text):
        assert REQUIRED_VARIABLE.fullmatch(reference), reference
    for name, service in compose.raw["services"].items():
        for key, value in service.get("environment", {}).items():
            if SECRET_NAME.search(key):
                assert REQUIRED_VARIABLE.fullmatch(value), f"{name}: {key}={value}"
            password = re.match(r"\w+://[^:/@]+:([^@]*)@", str(value))
            if password:
                assert REQUIRED_VARIABLE.fullmatch(password[1]), f"{name}: {key}={value}"
    for text in (raw_text, project.dockerfile.read_text()):
        assert "guest:guest" not in text and "basic-auth=" not in text and "basic_auth=" not in text

    # Compose refuses to start without the secrets (its ${NAME:?} rule).
    without = dotenv_for(project)
    del without["FLOWER_BASIC_AUTH"]
    with pytest.raises(InterpolationError, match="FLOWER_BASIC_AUTH"):
        ComposeProject(project, without)


# -- the services, run ------------------------------------------------------------------------------
@pytest.fixture
def redis_broker_service(
    render_project: Callable[..., Project], tmp_path: Path
) -> Iterator[tuple[dict[str, Any], int]]:
    """The compose file's broker service command, run by this machine's server on a free port."""
    project = render_project(**DEFAULTS)
    broker = ComposeProject(project, dotenv_for(project)).services["broker"]
    assert broker["command"][0] == "redis-server"
    # The container's port and data volume, mapped to a free local port and a test directory.
    port = free_port()
    args = [redis_server_binary(), *broker["command"][1:], "--port", str(port)]
    args += ["--bind", "127.0.0.1", "--dir", str(tmp_path)]
    process = ManagedProcess("broker", args, cwd=tmp_path, env=dict(BASE_ENV), log_dir=tmp_path)
    process.start()
    try:
        client = redis.Redis(host="127.0.0.1", port=port)

        def answers() -> bool:
            assert process.running(), process.log()
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_until(answers, 20)
        client.close()
        yield broker, port
    finally:
        process.stop()


@pytest.mark.timeout(60)
def test_redis_broker_service_runs_with_noeviction_and_persistence(
    redis_broker_service: tuple[dict[str, Any], int],
) -> None:
    _broker, port = redis_broker_service
    client = redis.Redis(host="127.0.0.1", port=port)
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    client.close()


@pytest.mark.timeout(60)
@pytest.mark.tool("redis-cli")
def test_redis_broker_healthcheck_answers_for_a_running_server(
    redis_broker_service: tuple[dict[str, Any], int],
) -> None:
    broker, port = redis_broker_service
    test = broker["healthcheck"]["test"]
    assert test[:2] == ["CMD", "redis-cli"], test
    args = [tools.executable("redis-cli"), "-p", str(port), *test[2:]]
    done = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "PONG"), done.stderr


@pytest.mark.timeout(60)
def test_rabbitmq_broker_healthcheck_answers_for_a_running_server(
    render_project: Callable[..., Project], rabbit_namespaces: Any
) -> None:
    project = render_project(**RABBITMQ)
    compose = ComposeProject(project, dotenv_for(project))
    test = compose.services["broker"]["healthcheck"]["test"]
    done = subprocess.run(test[1:], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.timeout(240)
def test_worker_and_beat_services_run_and_the_healthcheck_follows_the_worker(
    docker_project: Project, stack_factory: Callable[[Project], Stack], tmp_path: Path
) -> None:
    project = docker_project
    stack = stack_factory(project)
    # The .env a user copies from .env.example: its localhost URLs and empty heartbeat paths must
    # lose to compose's `environment:`. The 1 s cleanup interval lets beat be seen working.
    compose = ComposeProject(project, dotenv_for(project, CELERY_BEAT_CLEANUP_INTERVAL="1"))
    mounts = mounts_for(project, tmp_path)

    worker_container = compose.localize("worker", stack.namespace, mounts, {})
    # The image's CMD sets no node name: Celery's default is celery@<host name>.
    worker = start(stack, "celery", worker_container)
    stack.wait_ready(worker)
    client = [stack.python, "-c", RUN_ONE_TASK % project.package_path]
    done = subprocess.run(
        client, cwd=project.path, env=stack.env(), capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, done.stderr[-3000:] + worker.log()[-3000:]
    result = json.loads(done.stdout)
    assert (result["status"], result["words"], result["worker"]) == (
        "processed",
        2,
        stack.nodename(worker),
    )
    node = stack.nodename(worker)
    stats = stack.control_app.control.inspect(destination=[node], timeout=2.0).stats() or {}
    assert stats[node]["pool"]["max-concurrency"] == int(project.answers["worker_processes"])

    checked = healthcheck(stack, worker_container)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    beat_container = compose.localize("beat", stack.namespace, mounts, {})
    beat = start(stack, "beat", beat_container)
    cleanup = f"{project.task_prefix}.cleanup"

    def cleanups() -> bool:
        assert beat.running(), beat.log()[-3000:]
        return stack.task_counts(worker).get(cleanup, 0) >= 2

    wait_until(cleanups, 45, interval=0.5)
    state = [p.name for p in mounts["/var/lib/celery"].iterdir()]
    assert any(name.startswith("celerybeat-schedule") for name in state), state
    checked = healthcheck(stack, beat_container)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # docker stop: the image's STOPSIGNAL to the main process only, then a warm shutdown.
    worker.signal_main(signal.Signals[compose.image.stopsignal])
    assert worker.wait(60) == 0, worker.log()[-3000:]
    checked = healthcheck(stack, worker_container)
    assert checked.returncode != 0 and "does not exist" in checked.stdout, checked.stdout


def test_urgent_tasks_start_at_once_while_long_tasks_fill_the_worker_service(
    docker_project: Project, stack_factory: Callable[[Project], Stack], tmp_path: Path
) -> None:
    """worker and worker-urgent, each as compose runs it: health_check answers within a second
    while the worker's processes are busy with long tasks and more wait in the default queue."""
    project = docker_project
    stack = stack_factory(project)
    compose = ComposeProject(project, dotenv_for(project))
    assert compose.container_env("worker")["CELERY_WORKER_QUEUES"] == "default"
    assert compose.container_env("worker-urgent")["CELERY_WORKER_QUEUES"] == "high_priority"
    processes = {}
    for service in ("worker", "worker-urgent"):
        mounts = mounts_for(project, tmp_path / service)
        container = compose.localize(service, stack.namespace, mounts, {})
        # Each container has a host name of its own, so a node name of its own; here both run on
        # this host, so they get the names a container's host name would give.
        container.argv.append(f"--hostname={service}@{HOSTNAME}")
        processes[service] = start(stack, service, container)
    for process in processes.values():
        stack.wait_ready(process)
    measured = stack.probe("urgent_latency", long_tasks=4, seconds=8)
    assert measured["long_unfinished"] >= 2, measured
    assert max(measured["latencies"]) < 1.0, measured
    assert set(measured["workers"]) == {f"worker-urgent@{HOSTNAME}"}, measured


@pytest.mark.timeout(120)
def test_flower_service_answers_its_healthcheck_and_requires_credentials(
    docker_project: Project, stack_factory: Callable[[Project], Stack], tmp_path: Path
) -> None:
    project = docker_project
    stack = stack_factory(project)
    dotenv = dotenv_for(project)
    compose = ComposeProject(project, dotenv)
    port = int(project.answers["flower_port"])
    local_port = free_port()
    container = compose.localize(
        "flower", stack.namespace, mounts_for(project, tmp_path), {port: local_port}
    )
    assert container.published == {port: local_port}
    flower = start(stack, "flower", container)

    def healthy() -> bool:
        assert flower.running(), flower.log()[-3000:]
        return healthcheck(stack, container).returncode == 0

    wait_until(healthy, 60, interval=0.5)
    dashboard = f"http://127.0.0.1:{local_port}/"
    assert http_status(dashboard) == 401
    user = dotenv["FLOWER_BASIC_AUTH"].split(":")[0]
    assert http_status(dashboard, f"{user}:wrong-password-123") == 401
    assert http_status(dashboard, dotenv["FLOWER_BASIC_AUTH"]) == 200


@pytest.mark.timeout(120)
def test_metrics_service_answers_its_healthcheck_and_stops_on_sigterm(
    docker_project: Project, stack_factory: Callable[[Project], Stack], tmp_path: Path
) -> None:
    project = docker_project
    stack = stack_factory(project)
    compose = ComposeProject(project, dotenv_for(project, CELERY_METRICS_INTERVAL="1"))
    local_port = free_port()
    container = compose.localize(
        "metrics", stack.namespace, mounts_for(project, tmp_path), {METRICS_PORT: local_port}
    )
    assert container.published == {METRICS_PORT: local_port}
    exporter = start(stack, "metrics", container)

    def healthy() -> bool:
        assert exporter.running(), exporter.log()[-3000:]
        return healthcheck(stack, container).returncode == 0

    try:
        wait_until(healthy, 60, interval=0.5)
    except TimeoutError:  # say why: /healthz's body is the reading's error
        raise AssertionError(http_get(f"http://127.0.0.1:{local_port}/healthz")) from None
    status, text = http_get(f"http://127.0.0.1:{local_port}/metrics")
    assert status == 200 and "celery_broker_up 1.0" in text, text
    assert 'celery_queue_ready_messages{queue="default"} 0.0' in text, text
    # docker stop: the image's STOPSIGNAL to the main process; it exits 0 at once.
    exporter.signal_main(signal.Signals[compose.image.stopsignal])
    assert exporter.wait(30) == 0, exporter.log()[-3000:]
    assert healthcheck(stack, container).returncode != 0
