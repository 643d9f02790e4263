# shellcheck shell=bash
# Sourced by scripts/demo and scripts/test: make .venv with the template's dev/test dependencies.
# Needs only Python >= 3.10; reinstalls when pyproject.toml changes.
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ] || [ pyproject.toml -nt .venv/.installed ]; then
    echo "Setting up .venv (pip install --group test) ..." >&2
    "$python" -m venv .venv
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=25.1"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --group test
    touch .venv/.installed
fi
