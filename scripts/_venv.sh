# shellcheck shell=bash
# Sourced by scripts/demo, scripts/test, bench/run and .ci/run: make .venv with a dependency group
# of pyproject.toml, `test` unless VENV_GROUP says otherwise (scripts/demo: `demo`, the few
# packages it runs; .ci/run: `bench`). Each group includes the one before: demo, test, bench.
# Needs only Python >= 3.10 (and pip, which brings uv); reinstalls when pyproject.toml changes.
python=${PYTHON:-python3}
group=${VENV_GROUP:-test}
case $group in
    demo) enough="demo test bench" ;;
    test) enough="test bench" ;;
    *) enough=$group ;;
esac
installed=no
for done_group in $enough; do
    if [ -e ".venv/.installed-$done_group" ] && [ ! pyproject.toml -nt ".venv/.installed-$done_group" ]; then
        installed=yes
    fi
done
if [ ! -x .venv/bin/python ] || [ "$installed" = no ]; then
    echo "Setting up .venv (the $group dependency group) ..." >&2
    # Without pip: ensurepip takes 4 s (pip and setuptools from their wheels, byte-compiled); the
    # group brings pip (the demo group lists it), and the fallback below runs ensurepip.
    [ -x .venv/bin/python ] || "$python" -m venv --without-pip .venv
    # uv installs the group in a quarter of pip's time (14 s against 52 s for bench); pip where
    # uv has no wheel for the machine, or where uv fails. uv comes into .venv by the pip of
    # $python (`--python`, pip >= 22.3) or by .venv's own. uv trusts the system's certificates
    # as pip does (UV_NATIVE_TLS): behind a proxy that re-signs TLS with its own authority, uv's
    # built-in roots refuse PyPI while pip works.
    quiet=(--quiet --disable-pip-version-check)
    if { [ -x .venv/bin/uv ] \
            || "$python" -m pip --python .venv/bin/python install "${quiet[@]}" "uv>=0.8" 2>/dev/null \
            || { .venv/bin/python -m ensurepip >/dev/null 2>&1 \
                && .venv/bin/python -m pip install "${quiet[@]}" "uv>=0.8" 2>/dev/null; }; } \
        && UV_NATIVE_TLS=1 .venv/bin/uv pip install --quiet --python .venv/bin/python --group "$group"; then
        :
    else
        echo "uv could not install the $group group; installing it with pip ..." >&2
        .venv/bin/python -m pip --version >/dev/null 2>&1 || .venv/bin/python -m ensurepip >/dev/null
        .venv/bin/python -m pip install "${quiet[@]}" --upgrade "pip>=25.1"
        .venv/bin/python -m pip install "${quiet[@]}" --group "$group"
    fi
    touch ".venv/.installed-$group"
fi
