"""Run the fault tests and print their figures: case, tasks sent, lost, duplicated, time to resume.

    .venv/bin/python bench/faults.py            # extra arguments go to pytest, e.g. -k rabbitmq

The tests break things on purpose against rendered projects and real brokers (tests/test_faults_*.py);
each case appends a row to artifacts/fault-figures.jsonl, which this script prints as one table.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.faults import Figures  # noqa: E402


def main(argv: list[str]) -> int:
    tests = sorted(
        str(path.relative_to(ROOT)) for path in (ROOT / "tests").glob("test_faults_*.py")
    )
    command = [sys.executable, "-m", "pytest", "-n", "auto", "-q", *tests, *argv]
    done = subprocess.run(command, cwd=ROOT, check=False)
    figures = Figures(ROOT / "artifacts" / "fault-figures.jsonl")
    print()
    print(figures.table())
    lost = sum(row.lost for row in figures.rows())
    print(f"\n{len(figures.rows())} cases, {lost} tasks lost; pytest exit status {done.returncode}")
    return done.returncode or (1 if lost else 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
