"""Install: the rendered project's own pyproject.toml declares everything its worker needs."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from .support.render import DEFAULTS, Project
from .support.stack import Stack

pytestmark = pytest.mark.timeout(600)


def test_worker_from_a_fresh_virtualenv_runs_tasks(
    render_project: Callable[..., Project],
    stack_factory: Callable[..., Stack],
    tmp_path: Path,
) -> None:
    project = render_project(**DEFAULTS)
    venv = tmp_path / "venv"
    # No pip inside: this environment's pip installs into it (--python), which spares a bootstrap.
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
    pip += ["--disable-pip-version-check", "-q"]
    # A non-editable install of the project directory: only the declared dependencies are present.
    done = subprocess.run(
        [*pip, "install", str(project.path)], capture_output=True, text=True, timeout=480
    )
    assert done.returncode == 0, done.stderr[-4000:]
    check = subprocess.run([*pip, "check"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr

    # The stack runs the venv's celery and python outside the project directory, without PYTHONPATH.
    stack = stack_factory(project, venv)
    worker = stack.worker()
    out = stack.probe("samples")
    assert out["process_document"]["worker"] == stack.nodename(worker)
    assert out["deliver_notification"]["attempts"] == 3
    assert out["analyze_content"]["words"] == 120
