"""Run a compose service of a rendered project as a local process, the way its container would run.

There is no Docker engine in the test environment, so this module applies the container rules to a
local process. The rules are Docker's and Compose's:

- The argument list is the service's entrypoint or the image's ENTRYPOINT, then the service's command
  or the image's CMD. A service entrypoint drops the image's CMD.
- The environment is the image's ENV, then env_file, then `environment:`. The later layer wins.
- `${VAR}`, `${VAR:-default}` and `${VAR:?error}` are interpolated from the project's `.env`.

Then the container's view is mapped onto this machine, as volumes and published ports would map it.
Image paths become directories of the test. Service host names in URLs become the test's private
broker namespace. The container port becomes a free local port. A URL that names any other host is
an error, so a stray localhost URL can never reach the machine's shared Redis.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from .render import Project
from .stack import Namespace

# The base image's PATH, which the Dockerfile's `ENV PATH=/opt/venv/bin:$PATH` extends. Locally the
# machine's PATH stands in for it, and /opt/venv maps to this interpreter's environment.
BASE_ENV = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "LANG": "C.UTF-8"}
VENV = "/opt/venv"


@dataclass
class Image:
    """What the runtime (last) stage of a Dockerfile gives a container."""

    stages: list[str] = field(default_factory=list)  # each FROM's image, ARGs resolved
    instructions: list[tuple[str, str]] = field(default_factory=list)  # of all stages
    env: dict[str, str] = field(default_factory=lambda: dict(BASE_ENV))
    cmd: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)  # the argv after HEALTHCHECK ... CMD
    user: str = "root"
    workdir: str = "/"
    stopsignal: str = "SIGTERM"


def _logical_lines(text: str) -> list[str]:
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    return lines


def _expand(value: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m[1] or m[2], ""), value)


def _exec_form(value: str, instruction: str) -> list[str]:
    assert value.startswith("["), f"{instruction} must use the exec form (JSON array): {value}"
    argv = json.loads(value)
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), value
    return argv


def parse_dockerfile(text: str) -> Image:
    args: dict[str, str] = {}
    image = Image()
    for line in _logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        image.instructions.append((keyword, rest))
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            args.setdefault(name, default)
        elif keyword == "FROM":  # a new stage starts from scratch, keeping the record of stages
            image = Image(image.stages, image.instructions)
            image.stages.append(_expand(rest.split()[0], args))
        elif keyword == "ENV":
            for pair in shlex.split(rest):
                name, _, value = pair.partition("=")
                image.env[name] = _expand(value, image.env)
        elif keyword == "CMD":
            image.cmd = _exec_form(rest, "CMD")
        elif keyword == "ENTRYPOINT":
            image.entrypoint = _exec_form(rest, "ENTRYPOINT")
        elif keyword == "HEALTHCHECK":
            _options, _, command = rest.partition(" CMD ")
            image.healthcheck = _exec_form(command.strip(), "HEALTHCHECK")
        elif keyword == "USER":
            image.user = rest
        elif keyword == "WORKDIR":
            image.workdir = rest
        elif keyword == "STOPSIGNAL":
            image.stopsignal = rest
    return image


def read_dotenv(text: str) -> dict[str, str]:
    """KEY=VALUE lines, comments and blank lines skipped, one level of quotes removed."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, value = line.partition("=")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[name.strip()] = value
    return values


class InterpolationError(ValueError):
    pass


def interpolate(value: Any, variables: dict[str, str]) -> Any:
    """Compose's ${...} interpolation of every string in a loaded compose document."""
    if isinstance(value, dict):
        return {key: interpolate(item, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, variables) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name, operator, word = match["name"], match["op"] or "", match["word"] or ""
        current = variables.get(name)
        unset = current is None or (operator.startswith(":") and current == "")
        if operator.endswith("?") and unset:
            raise InterpolationError(f"{name}: {word}")
        if operator.endswith("-") and unset:
            return word
        return current or ""

    pattern = r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<word>[^}]*))?\}"
    return re.sub(pattern, substitute, value)


@dataclass
class LocalContainer:
    """One compose service of a rendered project, mapped onto this machine."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    healthcheck: list[str]
    published: dict[int, int]  # container port -> local port


class ComposeProject:
    """compose.yaml, Dockerfile and a `.env` of a rendered project."""

    def __init__(self, project: Project, dotenv: dict[str, str]) -> None:
        self.project_dir = project.path
        self.image = parse_dockerfile(project.dockerfile.read_text())
        self.raw = yaml.safe_load(project.compose_file.read_text())
        self.dotenv = dotenv
        self.compose = interpolate(self.raw, dotenv)
        self.services: dict[str, Any] = self.compose["services"]

    def container_env(self, name: str) -> dict[str, str]:
        service = self.services[name]
        env = dict(self.image.env)
        for entry in service.get("env_file", []):
            entry = {"path": entry} if isinstance(entry, str) else entry
            # Our .env stands for the project's .env file; other files would have to exist.
            assert entry["path"] == ".env", entry
            env.update(self.dotenv)
        env.update({key: str(value) for key, value in service.get("environment", {}).items()})
        return env

    def container_argv(self, name: str) -> list[str]:
        service = self.services[name]
        entrypoint = service.get("entrypoint")
        command = service.get("command")
        for value in (entrypoint, command):
            assert value is None or isinstance(value, list), f"{name}: use the list form"
        if entrypoint is not None:
            return [*entrypoint, *(command or [])]
        return [*self.image.entrypoint, *(command if command is not None else self.image.cmd)]

    def container_healthcheck(self, name: str) -> list[str]:
        test = self.services[name].get("healthcheck", {}).get("test")
        if test is None:
            return list(self.image.healthcheck)
        assert isinstance(test, list) and test[0] == "CMD", f"{name}: use the exec form"
        return test[1:]

    def localize(
        self, name: str, namespace: Namespace, mounts: dict[str, Path], ports: dict[int, int]
    ) -> LocalContainer:
        """The service's process as it runs here: paths, service URLs and ports mapped."""
        paths = {VENV: Path(sys.prefix), **mounts}
        published = {}
        for spec in self.services[name].get("ports", []):
            container_port = int(str(spec).rsplit(":", 1)[-1])
            published[container_port] = ports[container_port]

        def local(text: str) -> str:
            for image_path, local_path in paths.items():
                text = re.sub(rf"(?<![\w/]){re.escape(image_path)}(?=/|$|:)", str(local_path), text)
            for container_port, local_port in published.items():
                text = re.sub(rf"(?<=[:=]){container_port}\b", str(local_port), text)
            return text

        env = {key: local(value) for key, value in self.container_env(name).items()}
        for key, value in env.items():
            if "://" in value:
                env[key] = self._local_url(key, value, namespace)
        return LocalContainer(
            argv=[local(arg) for arg in self.container_argv(name)],
            env=env,
            cwd=Path(local(self.image.workdir)),
            healthcheck=[local(arg) for arg in self.container_healthcheck(name)],
            published=published,
        )

    def _local_url(self, key: str, value: str, namespace: Namespace) -> str:
        host = urlsplit(value).hostname
        if host is None:  # rpc:// travels over the broker connection
            return value
        assert host in self.services, f"{key}={value} names {host!r}, not a compose service"
        local = {"CELERY_BROKER_URL": namespace.broker_url}
        local["CELERY_RESULT_BACKEND"] = namespace.result_backend
        assert urlsplit(local[key]).scheme == urlsplit(value).scheme, (key, value, local[key])
        return local[key]
