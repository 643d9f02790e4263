# shellcheck shell=bash
# Sourced by scripts/demo, scripts/test, bench/run and .ci/run: make .venv with a dependency group
# of pyproject.toml, `test` unless VENV_GROUP says otherwise (scripts/demo: `demo`, the few
# packages it runs; `test` includes them). Needs only Python >= 3.10; reinstalls when
# pyproject.toml changes.
python=${PYTHON:-python3}
group=${VENV_GROUP:-test}
installed() { [ -e ".venv/.installed-$1" ] && [ ! pyproject.toml -nt ".venv/.installed-$1" ]; }
if [ ! -x .venv/bin/python ] || ! { installed "$group" || installed test; }; then
    echo "Setting up .venv (pip install --group $group) ..." >&2
    [ -x .venv/bin/python ] || "$python" -m venv .venv
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=25.1"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --group "$group"
    touch ".venv/.installed-$group"
fi
