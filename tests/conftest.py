"""Shared fixtures: a private Redis per session, isolated broker namespaces, cached renders."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_redis import factories

from .support.faults import Figures
from .support.redis_server import redis_server_binary
from .support.render import Project, render
from .support.stack import RabbitNamespaces, RedisNamespaces, Stack

REDIS_DATABASES = 512  # one pair per stack; the fault and deploy tests use many


# Never the shared 6379: pytest-redis starts redis-server on a free port for this session.
private_redis = factories.redis_proc(
    executable=redis_server_binary(), host="127.0.0.1", port=None, db_count=REDIS_DATABASES
)


@pytest.fixture(scope="session")
def redis_namespaces(private_redis: Any) -> RedisNamespaces:
    return RedisNamespaces(private_redis.host, private_redis.port, REDIS_DATABASES)


@pytest.fixture(scope="session")
def rabbit_namespaces() -> RabbitNamespaces:
    namespaces = RabbitNamespaces()
    problem = None
    if namespaces.rabbitmqctl is None:
        problem = "rabbitmqctl is not installed"
    else:
        status = subprocess.run(
            [namespaces.rabbitmqctl, "status"], capture_output=True, timeout=60, check=False
        )
        if status.returncode != 0:
            problem = "RabbitMQ is not running"
    if problem:
        # CI has RabbitMQ: there a missing server is a failure, never a silent skip.
        if os.environ.get("CCW_REQUIRE_RABBITMQ") == "1":
            pytest.fail(f"{problem}, and CCW_REQUIRE_RABBITMQ=1")
        pytest.skip(f"{problem}: RabbitMQ tests need the machine's server on 127.0.0.1:5672")
    return namespaces


@pytest.fixture(scope="session")
def render_project(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Project]:
    """Render an answer set once per session; tests must not modify the result."""
    cache: dict[str, Project] = {}

    def _render(**answers: Any) -> Project:
        key = json.dumps(answers, sort_keys=True, default=list)  # answers may hold lists
        if key not in cache:
            cache[key] = render(tmp_path_factory.mktemp("project"), answers)
        return cache[key]

    return _render


@pytest.fixture
def stack_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """Build stacks for rendered projects; every process they start is stopped at teardown."""
    stacks: list[Stack] = []

    def _make(project: Project, venv: Path | None = None) -> Stack:
        if project.broker == "rabbitmq":
            backend = "rpc://"
            if project.result_backend == "redis":
                backend = request.getfixturevalue("redis_namespaces").new().result_backend
            namespace = request.getfixturevalue("rabbit_namespaces").new(result_backend=backend)
        else:
            namespace = request.getfixturevalue("redis_namespaces").new()
        stack = Stack(project, namespace, tmp_path / f"stack{len(stacks)}", venv)
        stack.log_dir.mkdir()
        stacks.append(stack)
        return stack

    yield _make
    for stack in stacks:
        stack.close()


ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
FIGURES = Figures(ARTIFACTS / "fault-figures.jsonl")


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
