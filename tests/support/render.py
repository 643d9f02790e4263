"""Render the template with copier's Python API and describe the result."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import copier
import yaml

TEMPLATE_ROOT = Path(__file__).resolve().parents[2]

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
    "existing-repo": {"new_project": False},
    "python-3.12": {"python_version": "3.12"},
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
}


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
