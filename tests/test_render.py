"""Render: every answer set renders to clean, linted, type-checked code; bad answers write nothing."""

from __future__ import annotations

import hashlib
import os
import re
import runpy
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from .support.render import (
    CODE_SETS,
    RENDER_MATRIX,
    SAME_CODE_AS,
    TEMPLATE_DIR_NAME,
    TEMPLATE_ROOT,
    Project,
    RenderCache,
    locked,
    render,
    run_project_suite,
)

BIN = Path(sys.executable).parent
COPIER_COPY = [str(BIN / "copier"), "copy", "--trust", "--defaults", "--vcs-ref", "HEAD"]
# Strict checks applied to existing-repo renders too, which carry no pyproject.toml of their own.
RUFF_RULES = "E4,E7,E9,F,W,I,B,UP,SIM,RUF"
COMPUTED = {"reserved_top_level_names", "known_timezones", "python_keywords", "queue_names"}
COMPUTED |= {"package_dir", "tests_dir", "celery_requirement", "backend_requirements"}
COMPUTED |= {"service_name", "image_name", "k8s_name"}


NEW_PROJECT_SETS = [
    name for name, answers in RENDER_MATRIX.items() if answers.get("new_project", True)
]


@pytest.fixture(params=list(RENDER_MATRIX))
def project(request: pytest.FixtureRequest, render_project: Callable[..., Project]) -> Project:
    return render_project(**RENDER_MATRIX[request.param])


@pytest.fixture(params=CODE_SETS)
def code_project(request: pytest.FixtureRequest, render_project: Callable[..., Project]) -> Project:
    """One render per distinct code (SAME_CODE_AS): what ruff, mypy and the generated suite see."""
    return render_project(**RENDER_MATRIX[request.param])


def code_digest(project: Project) -> str:
    """The rendered Python files, pyproject.toml and the env example, by path and content."""
    digest = hashlib.sha256()
    for relative in project.files:
        if relative.endswith((".py", "pyproject.toml", ".example")):
            digest.update(relative.encode() + b"\0" + (project.path / relative).read_bytes())
    return digest.hexdigest()


@pytest.mark.parametrize("name", list(SAME_CODE_AS))
def test_sets_left_out_of_the_code_checks_render_the_code_of_a_checked_one(
    name: str, render_project: Callable[..., Project]
) -> None:
    """A set that SAME_CODE_AS leaves out of ruff, mypy and the generated suite renders, byte for
    byte, the code of the set that runs them: should that change, this fails (move the set to
    CODE_SETS)."""
    twin = SAME_CODE_AS[name]
    assert twin in CODE_SETS
    left_out = render_project(**RENDER_MATRIX[name])
    assert code_digest(left_out) == code_digest(render_project(**RENDER_MATRIX[twin]))


@pytest.fixture(params=NEW_PROJECT_SETS)
def new_project(request: pytest.FixtureRequest, render_project: Callable[..., Project]) -> Project:
    return render_project(**RENDER_MATRIX[request.param])


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_")} | env
    return subprocess.run(
        args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300, check=False
    )


def test_no_template_syntax_is_left(project: Project) -> None:
    assert project.files
    for relative in project.files:
        assert "{{" not in relative and not relative.endswith(".jinja"), relative
        # GitHub Actions expressions, ${{ ... }}, are the workflow's own syntax; so are the alert
        # rules' {{ $labels.queue }} (Prometheus) and a panel's legend "{{queue}}" (Grafana).
        text = (project.path / relative).read_text().replace("${{", "$")
        text = re.sub(r"\{\{ \$[a-z][\w.]*(?: \| \w+)? \}\}", "", text)
        text = re.sub(r'"legendFormat": "(?:\{\{\w+\}\}|[^"{])*"', "", text)
        for marker in ("{{", "{%", "{#"):
            assert marker not in text, f"{relative} contains {marker!r}"


BYTECODE = ("__pycache__/stray.cpython-311.pyc", "stray.pyc", "stray.pyo")


def test_bytecode_next_to_the_template_is_never_rendered(tmp_path: Path) -> None:
    """A user's machine writes bytecode (no PYTHONDONTWRITEBYTECODE): none of it reaches a project."""
    template = tmp_path / "template"
    ignore = shutil.ignore_patterns(".git", ".venv", "artifacts", "__pycache__")
    shutil.copytree(TEMPLATE_ROOT, template, ignore=ignore)
    tree = template / TEMPLATE_DIR_NAME
    directories = [d for d in tree.rglob("*") if d.is_dir()]
    for directory in [tree, *directories]:
        for name in BYTECODE:
            (directory / name).parent.mkdir(exist_ok=True)
            (directory / name).write_bytes(b"\xa7\r\r\n")  # not text, as real bytecode
    project = render(tmp_path / "project", {}, src=template, vcs_ref=None)
    carried = [f for f in project.files if "__pycache__" in f or f.endswith((".pyc", ".pyo"))]
    assert carried == []
    assert "utils/workers/celery_app.py" in project.files


# Modules used other than by an import of the package: entry points (`python -m`, `celery -A`),
# modules the app names in its settings (included tasks, the Redis transport), the package, and
# client.py, the helpers for code that sends tasks (the generated tests use them).
ENTRY_MODULES = {"__init__", "__main__", "celery_app", "flower", "health", "tasks", "workflows"}
ENTRY_MODULES |= {"redis_transport", "client"}


def package_imports(project: Project) -> dict[str, set[str]]:
    """Each module of the generated package and the package modules it imports (relative,
    at any depth of the file: also those imported inside a function)."""
    modules = {path.stem: path.read_text() for path in project.package_dir.glob("*.py")}
    graph = {}
    for name, text in modules.items():
        found = re.findall(r"^\s*from \.(\w*) import (?:\(([^)]*)\)|([\w, ]+))", text, re.MULTILINE)
        targets = set()
        for module, listed, inline in found:
            names = listed or inline
            # `from . import env_file` names the module itself
            targets |= {module} if module else {n.strip() for n in names.split(",")}
        graph[name] = targets & set(modules)
    return graph


def test_module_graph_has_no_circle_and_no_unused_module(project: Project) -> None:
    """One concern per module: no module imports itself through others, every module is used
    (imported, or an entry point), and celery_app.py is the wiring in one screen."""
    graph = package_imports(project)
    visiting: list[str] = []

    def visit(module: str) -> None:
        assert module not in visiting, " -> ".join([*visiting, module])
        visiting.append(module)
        for target in sorted(graph[module]):
            visit(target)
        visiting.pop()

    for module in graph:
        visit(module)
    imported = set().union(*graph.values())
    assert set(graph) - imported - ENTRY_MODULES == set()
    assert len((project.package_dir / "celery_app.py").read_text().splitlines()) <= 90


def test_layout_follows_the_answers(project: Project) -> None:
    answers = project.answers
    for module in ("celery_app", "config", "routing", "schedule", "tasks", "health", "flower"):
        assert (project.package_dir / f"{module}.py").is_file(), module
    # No results, no result helpers.
    has_client = (project.package_dir / "client.py").is_file()
    assert has_client == (project.result_backend != "none")
    parts = project.package_path.split(".")
    for depth in range(1, len(parts)):
        assert project.path.joinpath(*parts[:depth], "__init__.py").is_file()
    assert project.env_example.is_file()
    if not project.new_project:  # never a name that the user's own files may have
        assert not (project.path / ".env.example").exists()
    for name in ("pyproject.toml", "README.md", ".gitignore"):
        assert (project.path / name).exists() == answers["new_project"], name
    assert not COMPUTED & answers.keys(), "computed values must not be stored"
    assert {"package_path", "broker", "result_backend", "queues", "timezone"} <= answers.keys()


def test_deployment_files_follow_the_targets(project: Project) -> None:
    targets = set(project.answers.get("deploy_targets", []))
    deploy = project.path / "deploy"
    for target in ("supervisord", "systemd", "kubernetes"):
        assert (deploy / target).is_dir() == (target in targets), target
    assert project.dockerfile.exists() == ("docker" in targets)
    empty = [p for p in project.path.rglob("*") if p.is_dir() and not any(p.iterdir())]
    assert not empty, f"empty directories: {empty}"


def test_dependencies_match_broker_and_backend(new_project: Project) -> None:
    project = new_project
    pyproject = tomllib.loads((project.path / "pyproject.toml").read_text())
    needs_redis = "redis" in (project.broker, project.result_backend)
    expected = [
        "celery[redis]>=5.7" if needs_redis else "celery>=5.7",
        "kombu>=5.7",
        "prometheus-client>=0.17",
    ]
    if project.result_backend == "postgresql":
        expected += ["sqlalchemy>=2", "psycopg[binary]>=3.1"]
    assert pyproject["project"]["dependencies"] == expected
    assert pyproject["project"]["requires-python"] == f">={project.answers['python_version']}"
    dev = " ".join(pyproject["project"]["optional-dependencies"]["dev"])
    for tool in ("watchdog", "flower", "pytest", "ruff", "mypy", "celery-types", "rich"):
        assert tool in dev


def test_ruff_and_mypy_pass(code_project: Project, render_cache: RenderCache) -> None:
    project = code_project
    top = project.package_path.split(".")[0]
    if project.answers["new_project"]:
        checks = [[str(BIN / "ruff"), "check", "."], [str(BIN / "ruff"), "format", "--check", "."]]
        checks.append([str(BIN / "mypy")])
    else:
        style = ["--line-length", "100"]
        checks = [
            [str(BIN / "ruff"), "check", "--select", RUFF_RULES, *style, "."],
            [str(BIN / "ruff"), "format", "--check", *style, "."],
            [str(BIN / "mypy"), "--strict", top, "tests"],
        ]
    # One mypy cache per run, beside the shared renders: stubs of celery and the standard library
    # are checked once, not once per render and xdist worker (mypy writes its cache atomically).
    # With it, another render's check takes 0.7 s against 5.7 s cold, so the first check of each
    # target Python and set of options fills it under a lock while the others wait, instead of
    # all starting cold at once.
    cache = render_cache.directory.parent / "mypy-cache"
    # An existing repository has no python_version answer: mypy checks for this interpreter.
    target = project.answers.get("python_version", "this-python")
    kind = f"{target}-{'project' if project.answers['new_project'] else 'strict'}"
    filled = cache.parent / f"mypy-{kind}.filled"

    def check(args: list[str]) -> None:
        done = run(args, project.path)
        assert done.returncode == 0, f"{' '.join(args[:3])}:\n{done.stdout}{done.stderr}"

    for args in checks:
        if args[0].endswith("mypy"):
            args += ["--cache-dir", str(cache)]
            with locked(cache.parent / f"mypy-{kind}.lock"):
                if not filled.exists():
                    check(args)
                    filled.touch()
                    continue
        check(args)


def test_generated_test_suite_passes(code_project: Project) -> None:
    project = code_project
    done = run_project_suite(project.path, broker=project.broker)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout


CONFIGURATION_DOC = TEMPLATE_ROOT / "docs" / "configuration.md"
# The tables of the variables config.py reads (not the one of the celery command's options).
VARIABLE_TABLE_HEADER = "| variable | default | allowed |"


def documented_variables() -> dict[str, str]:
    """Each CELERY_* variable named in the first column of a variable table, with its row."""
    rows: dict[str, str] = {}
    in_table = False
    for line in CONFIGURATION_DOC.read_text().splitlines():
        if line.startswith(VARIABLE_TABLE_HEADER):
            in_table = True
        elif not line.startswith("|"):
            in_table = False
        elif in_table:
            for name in re.findall(r"`(CELERY_\w+)`", line.split("|")[1]):
                rows[name] = line
    return rows


def declared_variables(project: Project) -> dict[str, str]:
    """The rendered .env.example's variables and defaults (the file is the declarations' output)."""
    lines = project.env_example.read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if line[:1] not in ("", "#"))
    return {name: value.strip('"') for name, value in pairs}


def test_configuration_reference_agrees_with_the_declarations(
    render_project: Callable[..., Project],
) -> None:
    """docs/configuration.md has a row for each variable of each broker and result backend, which
    shows its default, and names no variable that no render declares."""
    rows = documented_variables()
    declared: set[str] = set()
    sets = ("defaults", "rabbitmq", "rabbitmq-redis-results", "no-results", "postgresql-results")
    for name in sets:
        variables = declared_variables(render_project(**RENDER_MATRIX[name]))
        declared |= set(variables)
        for variable, default in variables.items():
            assert variable in rows, f"{name}: {variable} has no row in {CONFIGURATION_DOC.name}"
            shown = f"`{default}`" if default else "empty"
            assert shown in rows[variable], f"{name}: the row of {variable} does not show {shown}"
    assert set(rows) == declared


# Hosts and paths of links that lead nowhere: placeholders a user would have to replace.
PLACEHOLDER_LINK = re.compile(
    r"https?://(?:[\w.-]*\bexample\.(?:com|org)|github\.com/(?:copier-celery-workers|your-?\w*|"
    r"user|owner|org)/)",
    re.IGNORECASE,
)


def test_no_rendered_file_links_to_a_placeholder(project: Project) -> None:
    """Every link in a render leads somewhere real (the README once linked to a repository of
    this template that does not exist)."""
    assert PLACEHOLDER_LINK.match("https://github.com/copier-celery-workers/copier-celery-workers")
    found = {}
    for relative in project.files:
        text = (project.path / relative).read_text(errors="replace")
        links = re.findall(r"https?://[^\s)>`\]\"']+", text)
        bad = [link for link in links if PLACEHOLDER_LINK.match(link)]
        if bad:
            found[relative] = bad
    assert found == {}


def test_python_3_12_is_the_default_for_the_project_and_its_image(
    render_project: Callable[..., Project],
) -> None:
    project = render_project(**RENDER_MATRIX["defaults"])
    assert project.answers["python_version"] == "3.12"
    assert 'requires-python = ">=3.12"' in (project.path / "pyproject.toml").read_text()
    assert "ARG PYTHON_VERSION=3.12\n" in project.dockerfile.read_text()


@pytest.mark.parametrize("answers", ["defaults", "python-3.10"])
def test_readme_names_the_python_it_needs_before_the_install(
    answers: str, render_project: Callable[..., Project]
) -> None:
    """An older Python is refused by pip, after many minutes of searching with an old pip (23.2 on
    Python 3.11 tried every ruff release): the README says which Python, before the install."""
    project = render_project(**RENDER_MATRIX[answers])
    readme = (project.path / "README.md").read_text()
    needs = f"It needs Python {project.answers['python_version']} or newer (`python --version`)"
    assert needs in readme
    assert readme.index(needs) < readme.index("pip install -e '.[dev]'")


def test_every_question_help_fits_an_80_column_terminal() -> None:
    """copier prints a question's help after "🎤 ": lines of 76 characters or fewer are not cut."""
    config = runpy.run_path(str(TEMPLATE_ROOT / "hooks" / "copier_context.py"))["load_config"](
        TEMPLATE_ROOT
    )
    helps = {
        name: str(spec["help"])
        for name, spec in config.items()
        if isinstance(spec, dict) and "help" in spec
    }
    assert len(helps) >= 15
    too_long = {name: text for name, text in helps.items() if max(map(len, text.splitlines())) > 76}
    assert not too_long


# field, value, words the message must contain (besides "<field>:")
INVALID_ANSWERS: list[tuple[str, Any, str]] = [
    ("project_name", "   ", "must not be empty"),
    ("package_path", "", "must not be empty"),
    ("package_path", "acme.class", "is a Python keyword"),
    ("package_path", "acme.False", "is a Python keyword"),  # YAML once read it as a boolean
    ("package_path", "acme-jobs.workers", "is not a Python identifier"),
    ("package_path", "acme jobs", "is not a Python identifier"),
    ("package_path", "1acme.jobs", "is not a Python identifier"),
    ("package_path", "acme..jobs", "empty part"),
    ("package_path", ".acme", "empty part"),
    ("package_path", "acme.", "empty part"),
    ("package_path", "celery.jobs", "would shadow the standard-library or Celery module"),
    ("package_path", "kombu", "would shadow"),
    ("package_path", "redis.workers", "would shadow"),
    ("package_path", "json.workers", "would shadow"),
    ("package_path", "asyncio", "would shadow"),
    ("distribution_name", "My Project!", "not a valid distribution name"),
    ("queues", "", "must name at least one queue"),
    ("queues", "default,default", "names a queue twice"),
    ("queues", "default,,urgent", "is not a valid queue name"),
    ("queues", "bulk jobs", "is not a valid queue name"),
    ("queues", "default,-x", "is not a valid queue name"),
    ("urgent_queue", "nope", "is not one of the queues"),
    ("timezone", "Mars/Olympus", "is not an IANA time zone"),
    ("timezone", "utc", 'names are case-sensitive: did you mean "UTC"?'),
    ("timezone", "europe/paris", 'did you mean "Europe/Paris"?'),
    ("cleanup_interval", "0", "whole number of seconds from 1 to 604800"),
    ("cleanup_interval", "soon", "whole number of seconds"),
    ("cleanup_interval", "-5", "whole number of seconds"),
    ("cleanup_interval", "9999999", "whole number of seconds"),
    ("report_crontab", "every morning", "needs exactly five fields"),
    ("report_crontab", "* * *", "needs exactly five fields"),
    ("report_crontab", "61 * * * *", 'field 1 ("61") is out of range (0-59)'),
    ("report_crontab", "0 25 * * *", 'field 2 ("25") is out of range (0-23)'),
    ("report_crontab", "0 6 * * funday", 'field 5 ("funday") is not a number, range, list, step'),
    ("report_crontab", "0 6 0 * *", 'field 3 ("0") is out of range (1-31)'),
    ("report_crontab", "0 6 * 0 *", 'field 4 ("0") is out of range (1-12)'),
    ("report_crontab", "0 6 * * 7", 'field 5 ("7") is out of range (0-6)'),
    ("report_crontab", "0 6-30 * * *", 'field 2 ("6-30") is out of range (0-23)'),
    ("report_crontab", "99 99 * * *", 'field 1 ("99") is out of range'),  # the first error
    ("report_crontab", "*/0 * * * *", 'field 1 ("*/0") has a step of 0'),
    ("report_crontab", "0 6 31 2 *", "never fires: month 2 has no day 31"),
    ("result_backend", "rpc", "rpc needs broker=rabbitmq"),
    ("service_user", "root", "must not run as root"),
    ("service_user", "Celery User", "is not a valid user name"),
    ("install_dir", "opt/app", "is not allowed; give an absolute path"),
    ("install_dir", "/opt/../etc", "is not allowed; give an absolute path"),
    ("install_dir", "/opt/my app", "is not allowed; give an absolute path"),
    ("worker_processes", "0", "whole number from 1 to 256"),
    ("worker_processes", "many", "whole number from 1 to 256"),
    ("flower_port", "80", "from 1024 to 65535"),
    ("flower_port", "70000", "from 1024 to 65535"),
    ("deploy_targets", ["heroku"], "deploy_targets"),
    ("python_version", "2.7", "python_version"),
    ("broker", "kafka", "broker"),
]


@pytest.mark.parametrize(("field", "value", "words"), INVALID_ANSWERS)
def test_invalid_answer_is_rejected_and_nothing_written(
    field: str, value: Any, words: str, tmp_path: Path, template_snapshot: Path
) -> None:
    fresh = tmp_path / "fresh"
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    for dst in (fresh, existing):
        with pytest.raises(ValueError) as error:
            render(dst, {field: value}, src=template_snapshot, vcs_ref=None)
        message = str(error.value)
        assert field in message and words in message, message
    assert not fresh.exists()
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]
    assert (existing / "keep.txt").read_text() == "mine"


def test_rabbitmq_queue_named_after_another_with_a_dot_is_rejected(
    tmp_path: Path, template_snapshot: Path
) -> None:
    """Delayed delivery binds each queue to "#.<name>": "reports.bulk" would also get "bulk"'s."""
    answers = {"broker": "rabbitmq", "queues": "default,bulk,reports.bulk"}
    with pytest.raises(ValueError, match=re.escape('"reports.bulk" ends with ".bulk"')):
        render(tmp_path / "p", answers, src=template_snapshot, vcs_ref=None)
    assert not (tmp_path / "p").exists()
    render(tmp_path / "redis", {**answers, "broker": "redis"}, src=template_snapshot, vcs_ref=None)


def next_steps(output: str) -> list[str]:
    """The commands of the message after a copy, comments cut off."""
    steps = output[output.index("Next steps:") :].splitlines()[1:]
    return [line.split("  #")[0].strip() for line in steps if line.startswith("    ")]


def first_steps_of_a_new_project(path: Path) -> list[str]:
    return [
        f"cd {path}",
        "python -m venv .venv && . .venv/bin/activate && pip install -e '.[dev]'",
        "cp .env.example .env",
        "python -m utils.workers config",
        "python -m pytest tests/utils_workers",
    ]


def test_cli_prints_next_steps_that_can_be_pasted(tmp_path: Path) -> None:
    """cd, virtualenv and install, .env, the check of the configuration and the tests; then the
    worker, beat and Flower with its login, one command per line, nothing to edit."""
    dst = tmp_path / "my-project"
    done = run([*COPIER_COPY, str(TEMPLATE_ROOT), str(dst)], tmp_path)
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert output.count("created utils/__init__.py") == 1
    commands = next_steps(output)
    assert commands[:5] == first_steps_of_a_new_project(dst)
    assert commands[5:] == [
        "celery -A utils.workers.celery_app worker --loglevel=INFO",
        "celery -A utils.workers.celery_app beat --loglevel=INFO",
        'echo "FLOWER_BASIC_AUTH=ops:$(openssl rand -hex 16)" >> .env',
        "python -m utils.workers.flower --port=5555",
    ]


def test_cli_rejects_bad_answer_with_the_validator_message(tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    done = run(
        [*COPIER_COPY, "--data", "package_path=acme-jobs", str(TEMPLATE_ROOT), str(dst)],
        tmp_path,
    )
    assert done.returncode != 0
    assert 'package_path: "acme-jobs" in "acme-jobs" is not a Python identifier' in done.stderr
    assert not dst.exists()


# An existing repository's own files, named as ours would be in a new project.
USER_FILES = {
    "pyproject.toml": '[project]\nname = "app"\n',
    "README.md": "# My app\n",
    ".gitignore": "node_modules/\n",
    ".env.example": "DATABASE_URL=postgres://localhost/app\n",
    "Dockerfile": 'FROM python:3.12-slim\nCMD ["python", "-m", "app"]\n',
    ".dockerignore": "node_modules\n",
    "compose.yaml": "services:\n  web:\n    build: .\n",
    "utils/__init__.py": '"""My utilities."""\n',
    "tests/conftest.py": "# my fixtures\n",
    ".github/workflows/ci.yml": "name: CI\non: push\n",
}


def write_user_files(root: Path) -> None:
    for name, text in USER_FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_existing_repository_keeps_its_files(tmp_path: Path) -> None:
    """Every file of the repository stays byte-identical, nothing asks to overwrite (stdin is
    closed and --overwrite is not given), ours get names of their own, and our tests pass."""
    dst = tmp_path / "app"
    write_user_files(dst)
    data = ["new_project=false", 'deploy_targets=["docker", "systemd"]', "update_workflow=true"]
    args = [*COPIER_COPY, *(f"--data={item}" for item in data), str(TEMPLATE_ROOT), str(dst)]
    done = subprocess.run(
        args, cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    for name, text in USER_FILES.items():
        assert (dst / name).read_text() == text, f"{name} was changed"
    for ours in (".env.workers.example", "Dockerfile.workers", "compose.workers.yaml"):
        assert (dst / ours).is_file(), ours
    assert (dst / "Dockerfile.workers.dockerignore").is_file()
    assert (dst / ".github" / "workflows" / "template-update.yml").is_file()
    assert (dst / "utils" / "workers" / "celery_app.py").is_file()
    output = done.stdout + done.stderr
    for requirement in ("celery[redis]>=5.7", "kombu>=5.7", "prometheus-client>=0.17"):
        assert requirement in output, requirement
    assert "none of your files was changed" in output
    assert "cp .env.workers.example .env" in output
    assert '".env" to your .gitignore' in output
    suite = run_project_suite(dst, "tests/utils_workers")
    assert suite.returncode == 0, suite.stdout[-3000:]
