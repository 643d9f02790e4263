"""Render the template with copier's Python API and describe the result."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import copier
import yaml

TEMPLATE_ROOT = Path(__file__).resolve().parents[2]
# The template tree (copier's _subdirectory; named for cookiecutter, which finds it by its name).
TEMPLATE_DIR_NAME = "{{cookiecutter.__project_dir}}"
TEMPLATE_DIR = TEMPLATE_ROOT / TEMPLATE_DIR_NAME

# Answer sets by name; each is rendered once per test session.
DEFAULTS: dict[str, Any] = {}
ACME = {"package_path": "acme.jobs", "project_name": "Acme Jobs"}
RABBITMQ = {"broker": "rabbitmq"}
RENDER_MATRIX: dict[str, dict[str, Any]] = {
    "defaults": DEFAULTS,
    "acme.jobs": ACME,
    "rabbitmq": RABBITMQ,
    "rabbitmq-redis-results": {"broker": "rabbitmq", "result_backend": "redis"},
    "no-results": {"result_backend": "none"},
    "rabbitmq-no-results": {"broker": "rabbitmq", "result_backend": "none"},
    "postgresql-results": {"result_backend": "postgresql"},
    "existing-repo": {"new_project": False},
    "python-3.10": {"python_version": "3.10"},  # the lowest; the default is 3.12
    "python-3.14": {"python_version": "3.14"},
    "one-queue": {"queues": "jobs"},
    "three-queues": {"queues": "bulk, default, urgent", "urgent_queue": "urgent"},
    "paris-weekdays": {
        "timezone": "Europe/Paris",
        "report_crontab": "0 6 * * mon-fri",
        "cleanup_interval": "600",
    },
    "deep-path": {"package_path": "company.platform.background.workers"},
    "named": {"project_name": "Document Service", "distribution_name": "document-service"},
    "no-deploy": {"deploy_targets": []},
    "docker-only": {"deploy_targets": ["docker"]},
    "existing-repo-systemd": {"new_project": False, "deploy_targets": ["systemd"]},
    "update-workflow": {"update_workflow": True},
}
# Sets whose Python code, pyproject.toml and env example are those of another set (tests/
# test_render.py checks that they are): the code checks and generated suites run on that one.
SAME_CODE_AS = {
    "no-deploy": "defaults",
    "docker-only": "defaults",
    "update-workflow": "defaults",
    "existing-repo-systemd": "existing-repo",
}
CODE_SETS = [name for name in RENDER_MATRIX if name not in SAME_CODE_AS]


@dataclass(frozen=True)
class Project:
    path: Path
    answers: dict[str, Any]
    # What the render wrote, relative to path: later runs in the project (tests, ruff, mypy, a
    # worker) add caches and bytecode, which are not the template's output.
    files: tuple[str, ...] = ()

    @property
    def package_path(self) -> str:
        return str(self.answers["package_path"])

    @property
    def package_dir(self) -> Path:
        return self.path.joinpath(*self.package_path.split("."))

    @property
    def broker(self) -> str:
        return str(self.answers["broker"])

    @property
    def result_backend(self) -> str:
        return str(self.answers["result_backend"])

    @property
    def task_prefix(self) -> str:
        return f"{self.package_path}.tasks"

    # The root files' names: their own in an existing repository (copier.yml's computed names).
    @property
    def env_example(self) -> Path:
        return self.path / (".env.example" if self.new_project else ".env.workers.example")

    @property
    def dockerfile(self) -> Path:
        return self.path / ("Dockerfile" if self.new_project else "Dockerfile.workers")

    @property
    def dockerignore(self) -> Path:
        return self.path / (
            ".dockerignore" if self.new_project else "Dockerfile.workers.dockerignore"
        )

    @property
    def compose_file(self) -> Path:
        return self.path / ("compose.yaml" if self.new_project else "compose.workers.yaml")

    @property
    def new_project(self) -> bool:
        return bool(self.answers["new_project"])


def render(
    dst: Path, answers: Mapping[str, Any], src: Path = TEMPLATE_ROOT, **options: Any
) -> Project:
    """copier copy --trust --defaults, from the template's working tree (or `src`)."""
    options.setdefault("vcs_ref", "HEAD")
    copier.run_copy(
        str(src), dst, data=dict(answers), defaults=True, unsafe=True, quiet=True, **options
    )
    recorded = yaml.safe_load((dst / ".copier-answers.yml").read_text())
    files = tuple(sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if not p.is_dir()))
    return Project(dst, {k: v for k, v in recorded.items() if not k.startswith("_")}, files)


def private_redis_env(project: Path, port: int) -> dict[str, str]:
    """This environment for a rendered project's processes (the scripts' demo and screenshot):
    no CELERY_* or FLOWER_* variable of the caller's, the broker and results on the private Redis
    at `port`, and the project importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "FLOWER_"))}
    return env | {
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{port}/0",
        "CELERY_RESULT_BACKEND": f"redis://127.0.0.1:{port}/1",
        "PYTHONPATH": str(project),
    }


def run_project_suite(
    path: Path, *tests: str, broker: str = "redis", write_bytecode: bool = False
) -> subprocess.CompletedProcess[str]:
    """The generated project's own tests, as its user runs them. The broker URL points at port 1,
    which refuses: a generated test that touched a broker would fail, never reach a real one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_")}
    if write_bytecode:  # as a user's machine does
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    refused = "redis://127.0.0.1:1/0" if broker == "redis" else "amqp://127.0.0.1:1//"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *(tests or ("tests",))],
        cwd=path,
        env={**env, "CELERY_BROKER_URL": refused},
        capture_output=True,
        text=True,
        timeout=300,
    )


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (created if needed), shared by every process of the machine."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# What the working tree holds that is not the template: never copied into a snapshot.
NOT_TEMPLATE = (".git", ".venv", "artifacts", "__pycache__", ".mypy_cache", ".ruff_cache")


class RenderCache:
    """Renders shared by every pytest-xdist worker of one run, under `directory`.

    The template's working tree is copied once (uncommitted changes included, no git); each answer
    set is rendered once from that copy, by whichever worker asks first, under a file lock, and the
    others read the description it left. Copier then runs no git command for these renders, which
    cost more CPU than the rendering itself. Tests must not modify a shared render.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)

    @property
    def template(self) -> Path:
        snapshot = self.directory / "template"
        with locked(self.directory / "template.lock"):
            if not (snapshot / "copier.yml").exists():
                ignore = shutil.ignore_patterns(*NOT_TEMPLATE)
                shutil.copytree(TEMPLATE_ROOT, snapshot, ignore=ignore, dirs_exist_ok=True)
        return snapshot

    def render(self, answers: Mapping[str, Any]) -> Project:
        key = json.dumps(answers, sort_keys=True, default=list)  # answers may hold lists
        name = hashlib.sha256(key.encode()).hexdigest()[:16]
        record = self.directory / f"{name}.json"
        with locked(self.directory / f"{name}.lock"):
            if not record.exists():
                project = render(self.directory / name, answers, src=self.template, vcs_ref=None)
                described = {"answers": project.answers, "files": list(project.files)}
                record.write_text(json.dumps(described))
        described = json.loads(record.read_text())
        return Project(self.directory / name, described["answers"], tuple(described["files"]))
