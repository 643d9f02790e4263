"""Write the lock files the generated Docker image installs from (one per dependency set).

    .venv/bin/pip install uv && .venv/bin/python scripts/update_locks.py [SET...]

The workers need celery (with the redis extra when Redis is the broker or the result backend),
kombu and flower, and with the PostgreSQL result backend SQLAlchemy and psycopg: four sets (the
SET names below; none given means all). For each, `uv pip compile --universal --generate-hashes` pins every
package with its hashes for Python 3.10 and later on every platform, and the result becomes the
template file whose name is the lock file of the renders that use that set. Run it before a
release, then run the suite: tests/test_install.py installs a render from its lock.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREE = ROOT / "{{cookiecutter.__project_dir}}"
LOWEST_PYTHON = "3.10"
POSTGRESQL = ["sqlalchemy>=2", "psycopg[binary]>=3.1"]  # copier.yml's backend_requirements
SETS = {
    "redis": ["celery[redis]>=5.7"],
    "amqp": ["celery>=5.7"],
    "redis-postgresql": ["celery[redis]>=5.7", *POSTGRESQL],
    "amqp-postgresql": ["celery>=5.7", *POSTGRESQL],
}
CONDITION = {
    "redis": "'docker' in deploy_targets and 'redis' in celery_requirement and not backend_requirements",
    "amqp": "'docker' in deploy_targets and 'redis' not in celery_requirement and not backend_requirements",
    "redis-postgresql": "'docker' in deploy_targets and 'redis' in celery_requirement and backend_requirements",
    "amqp-postgresql": "'docker' in deploy_targets and 'redis' not in celery_requirement and backend_requirements",
}
HEADER = """\
# Every package the workers' image installs, pinned with its hashes (the {{ dockerfile }} runs
# pip install --require-hashes --no-deps -r {{ lock_file }}), for Python 3.10 and later on
# every platform. Made from: {{ ([celery_requirement, 'kombu>=5.7', 'prometheus-client>=0.17'] + backend_requirements + ['flower>=2.0']) | join(', ') }}{{ ' (pyproject.toml and its flower extra)' if new_project else '' }}.
# After a change to those dependencies, make it again (pip install uv):
{%- if new_project %}
#   uv pip compile pyproject.toml --extra flower --universal --generate-hashes \\
#       --python-version 3.10 -o {{ lock_file }}
{%- else %}
#   printf '{{ ([celery_requirement, 'kombu>=5.7'] + backend_requirements + ['flower>=2.0']) | join('\\\\n') }}\\n' | uv pip compile - --universal \\
#       --generate-hashes --python-version 3.10 -o {{ lock_file }}
{%- endif %}
"""


def template_path(name: str) -> Path:
    return TREE / f"{{% if {CONDITION[name]} %}}{{{{ lock_file }}}}{{% endif %}}"


def compile_set(requirements: list[str]) -> str:
    with tempfile.TemporaryDirectory() as work:
        source = Path(work) / "requirements.in"
        source.write_text("\n".join([*requirements, "kombu>=5.7", "prometheus-client>=0.17", "flower>=2.0"]) + "\n")
        done = subprocess.run(
            [sys.executable, "-m", "uv", "pip", "compile", str(source), "--universal",
             "--generate-hashes", "--python-version", LOWEST_PYTHON, "--no-header", "--quiet",
             "--no-annotate"],
            capture_output=True, text=True, check=False, timeout=600,
            env={**os.environ, "UV_NATIVE_TLS": "1"},  # the system's certificates, as pip
        )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"uv pip compile {' '.join(requirements)}: {done.stderr.strip()}")
    return done.stdout


def main(names: list[str]) -> int:
    unknown = set(names) - set(SETS)
    if unknown:
        raise SystemExit(f"unknown set {', '.join(sorted(unknown))}; the sets: {', '.join(SETS)}")
    for name in names or SETS:
        path = template_path(name)
        path.write_text(HEADER + compile_set(SETS[name]))
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
