"""Security: Flower answers only with credentials (also to a real browser), no render ships a password,
secrets stay out of git and out of the answers file, and deployment files read them from env files.

What the deployment tests already prove is not repeated here (docs/security.md lists them): the
Dockerfile never copies .env and .dockerignore lists it, compose requires every secret with
${NAME:?} and reads .env as env_file, supervisord's programs read /etc/<name>/*.env through
with-env-file, and the Kubernetes manifests ship no Secret and take the secrets from one.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from .support.browser import headless_chromium, navigation_status, png_size, send_basic_auth
from .support.processes import ManagedProcess, wait_until
from .support.redis_server import free_port
from .support.render import DEFAULTS, RENDER_MATRIX, TEMPLATE_ROOT, Project, render
from .support.stack import RedisNamespaces, Stack
from .support.vcs import git

pytestmark = pytest.mark.timeout(180)

ARTIFACTS = TEMPLATE_ROOT / "artifacts"
SCREENSHOT = ARTIFACTS / "flower-dashboard.png"
# Flower's pages and the API that can revoke tasks and shut workers down.
PROTECTED = ("/", "/workers", "/tasks", "/broker", "/api/workers", "/api/tasks")
SECRET_NAME = re.compile(r"PASS|SECRET|TOKEN|AUTH|CREDENTIAL|PRIVATE", re.IGNORECASE)


# -- Flower with credentials and a live worker ----------------------------------------------------
@dataclass
class FlowerSite:
    stack: Stack
    worker: ManagedProcess
    flower: ManagedProcess
    base: str
    credentials: str

    @property
    def node(self) -> str:
        return self.stack.nodename(self.worker)


def http_get(url: str, credentials: str | None = None, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method)
    if credentials is not None:
        token = base64.b64encode(credentials.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read()


@pytest.fixture(scope="module")
def flower_site(
    render_project: Callable[..., Project],
    redis_namespaces: RedisNamespaces,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[FlowerSite]:
    """`python -m <package>.flower --port=<free>` with FLOWER_BASIC_AUTH, and a worker to monitor."""
    project = render_project(**DEFAULTS)
    stack = Stack(project, redis_namespaces.new(), tmp_path_factory.mktemp("flower"))
    try:
        worker = stack.worker("monitored")
        port = free_port()
        credentials = f"ops:{secrets.token_urlsafe(18)}"
        args = [stack.python, "-m", f"{project.package_path}.flower", f"--port={port}"]
        flower = stack.start(
            "flower", [*args, "--address=127.0.0.1"], FLOWER_BASIC_AUTH=credentials
        )
        base = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            assert flower.running(), flower.log()[-3000:]
            try:
                return http_get(f"{base}/healthcheck")[0] == 200
            except OSError:
                return False

        wait_until(healthy, 60, interval=0.5)
        yield FlowerSite(stack, worker, flower, base, credentials)
    finally:
        stack.close()


def test_flower_answers_only_with_the_configured_credentials(flower_site: FlowerSite) -> None:
    site = flower_site
    user, password = site.credentials.split(":", 1)
    for path in PROTECTED:
        url = site.base + path
        assert http_get(url)[0] == 401, f"{path} without credentials"
        assert http_get(url, f"{user}:not-the-password-1")[0] == 401, f"{path} wrong password"
        assert http_get(url, f"admin:{password}")[0] == 401, f"{path} wrong user"
    # Shutting a worker down through the API needs credentials too: the worker is still there.
    shutdown = f"{site.base}/api/worker/shutdown/{site.node}"
    assert http_get(shutdown, method="POST")[0] == 401
    assert site.stack.control_app.control.ping(destination=[site.node], timeout=2.0)

    status, _ = http_get(f"{site.base}/", site.credentials)
    assert status == 200

    def listed() -> bool:
        status, body = http_get(f"{site.base}/api/workers?refresh=1", site.credentials)
        assert status == 200, body[:500]
        return site.node in json.loads(body)

    wait_until(listed, 30, interval=1.0)
    # Probes and Prometheus get these without credentials (Flower's design, documented).
    assert http_get(f"{site.base}/healthcheck")[0] == 200
    # Neither Flower nor the worker writes the password to its log.
    assert password not in site.flower.log()
    assert password not in site.worker.log()


@pytest.mark.tool("browser")
def read_row(driver: Any, row_xpath: str, deadline: float) -> list[str]:
    """The cells of a table row. Flower redraws the table as worker events arrive (it switches
    them on in the worker when it starts), so a row found a moment ago may be gone: read again."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    while True:
        try:
            row = driver.find_element(By.XPATH, row_xpath)
            return [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
        except StaleElementReferenceException:
            assert time.monotonic() < deadline, "the workers table kept changing"
            time.sleep(0.25)


def test_headless_chromium_logs_in_to_flower_and_sees_the_worker(
    flower_site: FlowerSite, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    from selenium.webdriver.common.by import By

    site = flower_site
    workers = f"{site.base}/workers"
    with headless_chromium(tmp_path / "profile", tmp_path / "chromedriver.log") as driver:
        driver.get(workers)
        assert navigation_status(driver) == 401
        assert site.node not in driver.page_source

        send_basic_auth(driver, site.credentials)
        driver.get(workers)
        assert navigation_status(driver) == 200
        row_xpath = f"//table//tr[td[contains(normalize-space(.), '{site.node}')]]"
        deadline = time.monotonic() + 45
        reloaded = time.monotonic()
        while not driver.find_elements(By.XPATH, row_xpath):
            assert time.monotonic() < deadline, f"{site.node} not shown:\n{driver.page_source}"
            if time.monotonic() - reloaded > 5:  # the table refreshes itself; reload if it lags
                driver.refresh()
                reloaded = time.monotonic()
            time.sleep(0.25)
        cells = read_row(driver, row_xpath, deadline)
        assert cells[0] == site.node and "Online" in cells, cells
        assert driver.title.startswith("Workers")
        # The dashboard's own figures, read from the page a person sees.
        assert "Online workers" in driver.find_element(By.TAG_NAME, "body").text

        ARTIFACTS.mkdir(exist_ok=True)
        assert driver.save_screenshot(str(SCREENSHOT))
    shutil.copy(SCREENSHOT, tmp_path / SCREENSHOT.name)
    record_property("screenshot", str(SCREENSHOT))
    print(f"\nFlower dashboard screenshot: {SCREENSHOT}")
    width, height = png_size(SCREENSHOT)
    assert width == 1280 and height >= 500, (width, height)


# -- What the renders ship -------------------------------------------------------------------------
# A credential's value may only be a placeholder, a required variable (${NAME:?...}), a command that
# generates one ($(openssl rand ...)), a GitHub Actions expression (${{ github.token }}: the runner
# supplies it) or empty.
PLACEHOLDER = re.compile(
    r"""(?x) ^ (?: | <[^>]*> | user | USER | password | PASSWORD | pass | \$\{\w+:\?.* | .*\$\(.*
    | \$\{\{\s*(?:github\.token|secrets\.\w+)\s*\}?\}? ) $"""
)
REQUIRED_VARIABLE = re.compile(r"\$\{\w+:\?")
CREDENTIALS_IN_URL = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<user>[^\s:/@'\"]*):"
    r"(?P<password>\$\{[^}]*\}|[^\s@'\"/]*)@(?P<host>[^\s/:'\"]+)"
)
BASIC_AUTH = re.compile(
    r"(?:FLOWER_BASIC_AUTH|--basic-auth|basic_auth)[ \t]*[=: ][ \t]*[\"']?"
    r"(?P<value>\$\{[^}]*\}|[^\s\"'#]*)"
)
SECRET_ASSIGNMENT = re.compile(
    # NAME=value or NAME: value, not the ${NAME:?...} reference to a variable
    r"(?<![${])\b(?P<name>[A-Z][A-Z0-9_]*(?:PASSWORD|PASS|SECRET|TOKEN))"
    r"[ \t]*(?:=|:(?=[ \t]))[ \t]*[\"']?"
    r"(?P<value>\$\{[^}]*\}|[^\s\"'#]*)"
)
REQUIREPASS = re.compile(r"requirepass[\"',\s]+(?P<value>\$\{[^}]*\}|[^\s\"',\]]+)")
# RabbitMQ's built-in account: RabbitMQ refuses it from anything but localhost (loopback_users), so
# it is the broker's own local default, not a password this template ships (docs/security.md).
RABBITMQ_LOCAL_GUEST = re.compile(r"^(amqps?|pyamqp)$")


def shipped_credentials(text: str) -> list[str]:
    """Literal passwords in `text`: everything a credential is set to that is not a placeholder."""
    found = []
    for match in CREDENTIALS_IN_URL.finditer(text):
        user, password, host = match["user"], match["password"], match["host"]
        local_guest = (user, password) == ("guest", "guest") and host in ("localhost", "127.0.0.1")
        if local_guest and RABBITMQ_LOCAL_GUEST.match(match["scheme"]):
            continue
        if not PLACEHOLDER.match(password):
            found.append(match[0])
    for match in BASIC_AUTH.finditer(text):
        value = match["value"]
        if value.startswith("${"):  # one variable: required (${NAME:?...}), never a default
            literal = not REQUIRED_VARIABLE.match(value)
        else:  # user:password pairs
            pairs = [pair for pair in value.split(",") if pair]
            literal = any(not PLACEHOLDER.match(pair.partition(":")[2]) for pair in pairs)
        if literal:
            found.append(match[0])
    for pattern in (SECRET_ASSIGNMENT, REQUIREPASS):
        for match in pattern.finditer(text):
            if not PLACEHOLDER.match(match["value"]):
                found.append(match[0])
    found += re.findall(r"(?m)^kind:\s*Secret\s*$", text)
    return found


@pytest.mark.parametrize(
    "line",
    [
        "CELERY_BROKER_URL=redis://:hunter2hunter2@broker:6379/0",
        "CELERY_BROKER_URL=amqp://celery:celery@rabbit:5672//",
        "CELERY_BROKER_URL=amqp://guest:guest@rabbit.example:5672//",  # guest, but not local
        "FLOWER_BASIC_AUTH=admin:admin",
        "FLOWER_BASIC_AUTH=ops:long-enough-pw,user:password",
        "      FLOWER_BASIC_AUTH: ${FLOWER_BASIC_AUTH:-admin:changeme}",
        "command=celery flower --basic-auth=ops:s3cret-s3cret",
        "ExecStart=/opt/x/.venv/bin/celery flower --basic-auth ops:s3cret-s3cret",
        "RABBITMQ_DEFAULT_PASS: changeme",
        'command: ["redis-server", "--requirepass", "hunter2"]',
        "kind: Secret",
    ],
)
def test_scanner_catches_a_shipped_password(line: str) -> None:
    assert shipped_credentials(line), line


@pytest.mark.parametrize(
    "line",
    [
        "CELERY_BROKER_URL=amqp://guest:guest@localhost:5672//",
        "# amqp://USER:PASSWORD@HOST:5672/VHOST (amqps:// for TLS)",
        "--from-literal=CELERY_BROKER_URL='amqp://<user>:<password>@<rabbitmq-host>:5672/<vhost>'",
        "FLOWER_BASIC_AUTH=",
        "FLOWER_BASIC_AUTH=user:password, root:celery 0640",
        '#   echo "FLOWER_BASIC_AUTH=ops:$(openssl rand -hex 16)" >> .env',
        "  CELERY_BROKER_URL: amqp://celery:${RABBITMQ_PASSWORD:?set RABBITMQ_PASSWORD}@broker:5672//",
        "      RABBITMQ_DEFAULT_PASS: ${RABBITMQ_PASSWORD:?set RABBITMQ_PASSWORD in .env}",
        "          GH_TOKEN: ${{ github.token }}",
        "          GH_TOKEN: ${{ secrets.UPDATE_TOKEN }}",
    ],
)
def test_scanner_lets_placeholders_through(line: str) -> None:
    assert shipped_credentials(line) == [], line


def rendered_files(project: Project) -> Iterator[tuple[Path, str]]:
    for relative in project.files:
        path = project.path / relative
        yield path, path.read_text(errors="replace")


@pytest.mark.parametrize("name", list(RENDER_MATRIX))
def test_no_rendered_file_ships_a_password(
    name: str, render_project: Callable[..., Project]
) -> None:
    project = render_project(**RENDER_MATRIX[name])
    found = {
        str(path.relative_to(project.path)): hits
        for path, text in rendered_files(project)
        if (hits := shipped_credentials(text))
    }
    assert found == {}


def copier_questions() -> dict[str, dict[str, Any]]:
    """copier.yml's questions (its documents merged; the !include of names.yml left out)."""

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!include", lambda loader, node: {})
    documents = yaml.load_all((TEMPLATE_ROOT / "copier.yml").read_text(), Loader=Loader)
    merged: dict[str, Any] = {}
    for document in documents:
        merged.update(document or {})
    return {k: v for k, v in merged.items() if not k.startswith("_") and isinstance(v, dict)}


def test_a_question_about_a_secret_would_be_kept_out_of_the_answers_file() -> None:
    """Copier stores every answer but those of `secret: true` questions in .copier-answers.yml."""
    questions = copier_questions()
    assert {"project_name", "broker", "flower_port"} <= set(questions)
    secretish = [name for name in questions if SECRET_NAME.search(name)]
    assert [name for name in secretish if questions[name].get("secret") is not True] == []


@pytest.mark.parametrize("name", list(RENDER_MATRIX))
def test_answers_file_holds_only_non_secret_answers(
    name: str, render_project: Callable[..., Project]
) -> None:
    project = render_project(**RENDER_MATRIX[name])
    questions = copier_questions()
    text = (project.path / ".copier-answers.yml").read_text()
    stored = yaml.safe_load(text)
    assert set(stored) - set(questions) <= {"_commit", "_src_path"}, set(stored)
    for key in set(stored) & set(questions):
        assert not SECRET_NAME.search(key) and not questions[key].get("secret"), key
    assert "FLOWER_BASIC_AUTH" not in text and not re.search("password", text, re.IGNORECASE)
    assert shipped_credentials(text) == []


def test_secret_passed_as_data_is_written_nowhere(tmp_path: Path) -> None:
    """`copier copy --data FLOWER_BASIC_AUTH=...` (an automation's mistake) leaves no trace."""
    tokens = [secrets.token_hex(16) for _ in range(2)]
    project = render(
        tmp_path / "project",
        {"FLOWER_BASIC_AUTH": f"ops:{tokens[0]}", "flower_password": tokens[1]},
    )
    leaks = [
        str(path.relative_to(project.path))
        for path in project.path.rglob("*")
        if path.is_file() and any(token.encode() in path.read_bytes() for token in tokens)
    ]
    assert leaks == []


# -- Secrets out of git, and deployment files that read them from environment files ---------------
@pytest.mark.parametrize("name", ["defaults", "rabbitmq", "no-deploy"])
def test_env_file_is_git_ignored_in_a_new_project(
    name: str, render_project: Callable[..., Project], tmp_path: Path
) -> None:
    project = render_project(**RENDER_MATRIX[name])
    copy = tmp_path / "repo"
    shutil.copytree(project.path, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert ".env" in (copy / ".gitignore").read_text().splitlines()
    assert git(copy, "init", "-q", home=tmp_path).returncode == 0
    shutil.copy(copy / ".env.example", copy / ".env")
    with (copy / ".env").open("a") as env:
        env.write(f"FLOWER_BASIC_AUTH=ops:{secrets.token_hex(12)}\n")

    assert git(copy, "check-ignore", "-q", ".env", home=tmp_path).returncode == 0
    assert git(copy, "check-ignore", "-q", ".env.example", home=tmp_path).returncode == 1
    assert git(copy, "add", "-A", home=tmp_path).returncode == 0
    tracked = git(copy, "ls-files", home=tmp_path).stdout.splitlines()
    assert ".env.example" in tracked and ".env" not in tracked


SYSTEMD_SETS = ["defaults", "rabbitmq", "rabbitmq-redis-results", "existing-repo-systemd"]
SECRET_VARIABLES = ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "FLOWER_BASIC_AUTH")


@pytest.mark.parametrize("name", SYSTEMD_SETS)
def test_systemd_units_take_secrets_only_from_their_environment_file(
    name: str, render_project: Callable[..., Project]
) -> None:
    project = render_project(**RENDER_MATRIX[name])
    directory = project.path / "deploy" / "systemd"
    [flower_file] = directory.glob("*-flower.env")
    [env_file] = set(directory.glob("*.env")) - {flower_file}
    service = env_file.stem
    units = sorted(directory.glob("*.service"))
    assert len(units) == 4, units  # worker@, beat, Flower, metrics
    for unit in units:
        lines = unit.read_text().splitlines()
        files = [line.split("=", 1)[1] for line in lines if line.startswith("EnvironmentFile=")]
        assert files[0] == f"/etc/{service}/{env_file.name}", unit.name  # required, not "-"
        # Flower's own file (its password) is read by the Flower unit only.
        assert (f"/etc/{service}/flower.env" in files) == unit.name.endswith("-flower.service")
        for line in lines:
            if line.startswith(("Environment=", "ExecStart=", "ExecStartPre=")):
                assert not any(variable in line for variable in SECRET_VARIABLES), line
                assert "--broker" not in line and "--basic-auth" not in line, line
                assert "://" not in line, line

    # The shipped files set every secret variable, with no password: Flower's is empty on purpose,
    # and only in Flower's file.
    values = dict(
        line.split("=", 1) for line in env_file.read_text().splitlines() if re.match(r"\w+=", line)
    )
    flower = dict(
        line.split("=", 1)
        for line in flower_file.read_text().splitlines()
        if re.match(r"\w+=", line)
    )
    assert flower["FLOWER_BASIC_AUTH"] == "" and "FLOWER_BASIC_AUTH" not in values
    assert "CELERY_BROKER_URL" in values
    assert shipped_credentials(flower_file.read_text()) == []
    assert shipped_credentials(env_file.read_text()) == []
