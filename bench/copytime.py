"""Wall time of `copier copy` of this template with the default answers, as a user runs it.

    .venv/bin/python bench/copytime.py                      # 5 runs, about 15 s
    .venv/bin/python bench/copytime.py --runs 9 --json

Each run is `copier copy --trust --defaults --vcs-ref HEAD <this repository> <new empty dir>`
with the copier of this Python environment, timed from exec to exit: copier's start-up, the clone
of the template (uncommitted changes included, with copier's DirtyLocalWarning), the questions'
defaults and validators, the rendering and the template's post-copy tasks. Goal: a median of at
most 1.0 s. Progress goes to stderr; the exit status is 1 with copier's output if a copy failed.

Runs alternate with copies of a floor: a Copier template of one question and one file in a git
repository of its own, copied the same way. The floor is copier's own cost on this machine
(start-up and imports, the clone, the answers file); the difference is what this template adds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 1.0


class CopyError(RuntimeError):
    """A copy failed; the message carries copier's output."""


def copier_executable() -> str:
    """The copier next to this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "copier"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("copier")
    if found is None:
        raise CopyError(f"no copier beside {sys.executable} nor on PATH (pip install --group test)")
    return found


def make_floor(directory: Path) -> Path:
    """A one-question, one-file Copier template (and its answers file), in a git repository."""
    template = directory / "template"
    template.mkdir(parents=True)
    (directory / "copier.yml").write_text(
        "_subdirectory: template\n_templates_suffix: ''\nname:\n  type: str\n  default: floor\n"
    )
    (template / "README.md").write_text("# {{ name }}\n")
    (template / "{{ _copier_conf.answers_file }}").write_text(
        "{{ _copier_answers | to_nice_yaml }}"
    )
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}  # fmt: skip
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "floor"]):
        subprocess.run(["git", *command], cwd=directory, env=env, check=True, timeout=30)
    return directory


def copy_once(copier: str, source: Path, destination: Path, timeout: float) -> float:
    command = [copier, "copy", "--trust", "--defaults", "--vcs-ref", "HEAD"]
    command += [str(source), str(destination)]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise CopyError(f"{' '.join(command)}: not done within {timeout:g} s") from None
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-3000:]
        raise CopyError(f"{' '.join(command)}: exit status {done.returncode}\n{output}")
    if not (destination / ".copier-answers.yml").is_file():
        raise CopyError(f"{' '.join(command)}: no .copier-answers.yml in {destination}")
    return elapsed


def run(runs: int, timeout: float) -> dict[str, Any]:
    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    copier = copier_executable()
    load_before = os.getloadavg()[0]
    seconds: list[float] = []
    floor: list[float] = []
    with tempfile.TemporaryDirectory(prefix="ccw-bench-copy-") as workdir:
        floor_template = make_floor(Path(workdir) / "floor-template")
        for number in range(1, runs + 1):
            order = [(REPO_ROOT, seconds), (floor_template, floor)]
            for source, times in order if number % 2 else reversed(order):
                destination = Path(workdir) / f"project{number}"
                times.append(copy_once(copier, source, destination, timeout))
                shutil.rmtree(destination, ignore_errors=True)
            say(f"copy {number}/{runs}: {seconds[-1]:.2f} s (floor {floor[-1]:.2f} s)")
    median = statistics.median(seconds)
    floor_median = statistics.median(floor)
    return {
        "runs": runs,
        "seconds": [round(value, 3) for value in seconds],
        "median_s": round(median, 3),
        "min_s": round(min(seconds), 3),
        "max_s": round(max(seconds), 3),
        "floor_seconds": [round(value, 3) for value in floor],
        "floor_median_s": round(floor_median, 3),
        "template_share_s": round(median - floor_median, 3),
        "goal_s": GOAL_S,
        "met": median <= GOAL_S,
        "command": "copier copy --trust --defaults --vcs-ref HEAD <repo> <new dir>",
        "copier": f"copier {version('copier')}",
        "python": platform.python_version(),
        "cpus": os.cpu_count() or 1,
        "load_average_before": round(load_before, 2),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="copies to time (default 5)")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds for one copy (default 120)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a summary")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        out = run(args.runs, args.timeout)
    except CopyError as error:
        print(f"copy benchmark failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("copy benchmark interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    verdict = "met" if out["met"] else "NOT met"
    print(
        f"copier copy, {out['runs']} runs: median {out['median_s']:.2f} s "
        f"(min {out['min_s']:.2f}, max {out['max_s']:.2f}); floor {out['floor_median_s']:.2f} s, "
        f"so the template adds {out['template_share_s']:.2f} s; goal <= {GOAL_S:.1f} s: {verdict}; "
        f"{out['copier']}, Python {out['python']}, load {out['load_average_before']} on "
        f"{out['cpus']} CPUs before the run"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
