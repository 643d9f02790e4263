"""Configuration: safe defaults, one clear error per malformed variable, {{ env_example }} equal to
what the declarations make, `.env` read without export, and the `config` command."""

from __future__ import annotations

import json
import os
import secrets
{% if broker == 'redis' or result_backend == 'redis' -%}
import ssl
{% endif -%}
import sys
from pathlib import Path
from urllib.parse import urlunsplit

import pytest

from {{ package_path }} import env_file
from {{ package_path }}.__main__ import env_example, main, show
from {{ package_path }}.celery_config import celery_settings
from {{ package_path }}.config import VARIABLES, ConfigError, load_settings
from {{ package_path }}.env_file import load_env_file

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / "{{ env_example }}"


def test_defaults_are_safe() -> None:
    settings = load_settings({})
    config = celery_settings(settings)
    assert config["accept_content"] == ["json"]
    assert config["task_acks_late"] is True
    assert config["task_reject_on_worker_lost"] is True
    assert config["task_retry_on_worker_lost"] is True
    assert config["worker_prefetch_multiplier"] == 1
    assert config["broker_connection_retry_on_startup"] is True
{%- if broker == 'redis' %}
    # A task running through a lost connection finishes and acks (redis_transport.py).
    assert config["worker_cancel_long_running_tasks_on_connection_loss"] is False
    assert config["broker_transport"].endswith(".redis_transport:Transport")
{%- else %}
    assert config["worker_cancel_long_running_tasks_on_connection_loss"] is True
{%- endif %}
    assert settings.task_soft_time_limit < settings.task_time_limit
{%- if broker == 'redis' %}
    # Redis: the visibility timeout covers the longest hold (delay + wait + run) and no more.
    assert settings.task_max_delay == 300
    options = config["broker_transport_options"]
    assert options["visibility_timeout"] == 300 + 2 * settings.task_time_limit + 15
    assert options["unacked_restore_throttle"] == 1
    assert config["workers_task_max_delay"] == 300


def test_visibility_timeout_below_the_longest_hold_is_refused() -> None:
    environ = {"CELERY_TASK_MAX_DELAY": "60", "CELERY_TASK_TIME_LIMIT": "20"}
    environ["CELERY_TASK_SOFT_TIME_LIMIT"] = "15"
    assert load_settings(environ).broker_visibility_timeout == 60 + 40 + 15
    with pytest.raises(ConfigError, match="must be at least 115 s"):
        load_settings({**environ, "CELERY_BROKER_VISIBILITY_TIMEOUT": "114"})
    longer = load_settings({**environ, "CELERY_BROKER_VISIBILITY_TIMEOUT": "7200"})
    assert longer.broker_visibility_timeout == 7200
{%- endif %}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CELERY_WORKER_CONCURRENCY", "four"),
        ("CELERY_WORKER_PREFETCH_MULTIPLIER", "0"),
        ("CELERY_TASK_ACKS_LATE", "maybe"),
        ("CELERY_TASK_TIME_LIMIT", "-5"),
        ("CELERY_TASK_SOFT_TIME_LIMIT", "900"),
        ("CELERY_WORKER_LOGLEVEL", "LOUD"),
        ("CELERY_BROKER_URL", "{{ 'amqp://localhost' if broker == 'redis' else 'redis://localhost' }}"),
{%- if result_backend == 'postgresql' %}
        ("CELERY_RESULT_BACKEND", "postgresql://celery@localhost/celery"),
{%- endif %}
        ("CELERY_WORKER_QUEUES", "no_such_queue"),
        ("CELERY_TIMEZONE", "Mars/Olympus"),
        ("CELERY_BEAT_SCHEDULE_FILENAME", "beat.db"),
        ("CELERY_BEAT_REPORT_CRONTAB", "every morning"),
    ],
)
def test_malformed_variable_is_named(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings({name: value})
    assert str(error.value).startswith(f"{name}=")
    assert "\n" not in str(error.value)


def test_env_example_is_what_the_declarations_make() -> None:
    """Every variable of config.py, in order, with its default and its help on the line above, and
    no other variable; comment lines of your own may sit between them. After a change to
    config.py: python -m {{ package_path }} config --env-example > {{ env_example }}"""

    def variables(text: str) -> list[tuple[str, str]]:
        lines = text.splitlines()
        return [(lines[i - 1], line) for i, line in enumerate(lines) if line[:1] not in ("", "#")]

    text = ENV_EXAMPLE.read_text()
    assert variables(text) == variables(env_example())
    if set(text.splitlines()) <= set(env_example().splitlines()):  # no line of your own
        assert text == env_example()
    lines = text.splitlines()
    pairs = (line.split("=", 1) for line in lines if line and not line.startswith("#"))
    example = {name: value.strip('"') for name, value in pairs}
    assert example == {variable.name: variable.default for variable in VARIABLES}
    assert load_settings(example) == load_settings({})  # every default is valid


@pytest.fixture
def environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """An empty working directory, and an os.environ without the workers' variables that the
    test may change: what .env loading adds goes with it."""
    monkeypatch.chdir(tmp_path)
    names = {variable.name for variable in VARIABLES} | {"CELERY_ENV_FILE"}
    copy = {name: value for name, value in os.environ.items() if name not in names}
    monkeypatch.setattr(os, "environ", copy)
    monkeypatch.setattr(env_file, "LOADED", {})
    return copy


def test_env_file_is_read_and_the_environment_wins(environ: dict[str, str], tmp_path: Path) -> None:
    Path(".env").write_text(
        "# a comment\n"
        "export CELERY_TASK_TIME_LIMIT=120\n"
        'CELERY_TASK_SOFT_TIME_LIMIT="100"\n'
        "CELERY_WORKER_CONCURRENCY=3  # inline comment\n"
    )
    environ["CELERY_WORKER_CONCURRENCY"] = "5"
    assert load_env_file() == Path(".env")
    assert load_env_file() == Path(".env")  # again: the same values, still from .env
    settings = load_settings()
    assert (settings.task_time_limit, settings.task_soft_time_limit) == (120, 100)
    assert settings.worker_concurrency == 5  # the environment wins over .env

    other = tmp_path / "workers.env"
    other.write_text("CELERY_TASK_TIME_LIMIT=290\n")
    elsewhere = {"CELERY_ENV_FILE": str(other)}
    assert load_env_file(elsewhere) == other
    assert load_settings(elsewhere).task_time_limit == 290
    assert load_env_file({"CELERY_ENV_FILE": ""}) is None  # empty: no file
    with pytest.raises(ConfigError, match=r"CELERY_ENV_FILE='/nowhere/\.env' is invalid"):
        load_env_file({"CELERY_ENV_FILE": "/nowhere/.env"})
    Path(".env").write_text("CELERY_TASK_TIME_LIMIT\n")
    with pytest.raises(ConfigError, match=r"\.env, line 1: expected NAME=value"):
        load_env_file({})


def test_config_command_shows_values_sources_and_no_password(
    environ: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    password = secrets.token_hex(8)
    url = urlunsplit(("{{ broker if broker == 'redis' else 'amqp' }}", f"{{ '' if broker == 'redis' else 'celery' }}:{password}@broker.internal", "/0", "", ""))
    Path(".env").write_text(f"CELERY_BROKER_URL={url}\nCELERY_TASK_TIME_LIMIT=120\n")
    environ["CELERY_TASK_TIME_LIMIT"] = "290"
    assert main(["config", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    rows = {row["variable"]: row for row in shown["variables"]}
    assert shown["env_file"] == ".env"
    assert rows["CELERY_BROKER_URL"]["source"] == ".env"
    assert password not in rows["CELERY_BROKER_URL"]["value"]
    assert "broker.internal" in rows["CELERY_BROKER_URL"]["value"]
    time_limit = rows["CELERY_TASK_TIME_LIMIT"]
    assert (time_limit["value"], time_limit["source"]) == ("290", "environment")
    assert rows["CELERY_WORKER_LOGLEVEL"] == {
        "variable": "CELERY_WORKER_LOGLEVEL",
        "value": "INFO",
        "source": "default",
    }
    assert main(["config"]) == 0
    assert password not in capsys.readouterr().out
    environ["CELERY_TASK_TIME_LIMIT"] = "soon"
    assert main(["config"]) == 1
    assert capsys.readouterr().err.startswith("configuration error: CELERY_TASK_TIME_LIMIT=")


def test_tables_are_drawn_on_a_terminal_and_plain_when_piped(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [{"queue": "default", "ready": 12, "reserved": None}]
    show(rows, as_json=False)  # captured: not a terminal
    assert capsys.readouterr().out.splitlines() == ["queue    ready  reserved", "default  12     -"]
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    show(rows, as_json=False)
    drawn = capsys.readouterr().out
    assert drawn.startswith("┏") and "queue" in drawn and "│ default │    12 │ -" in drawn

{%- if broker == 'redis' or result_backend == 'redis' %}
{%- set redis_variable = 'CELERY_BROKER_URL' if broker == 'redis' else 'CELERY_RESULT_BACKEND' %}


def test_redis_over_tls_verifies_the_server(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    environ = {
{%- if broker != 'redis' %}
        "CELERY_BROKER_URL": "amqp://localhost//",
{%- endif %}
        "{{ redis_variable }}": "rediss://redis.example:6380/0",
        "CELERY_REDIS_TLS_CA_FILE": str(ca),
    }
    config = celery_settings(load_settings(environ))
    options = config["{{ 'broker_use_ssl' if broker == 'redis' else 'redis_backend_use_ssl' }}"]
    assert options == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": str(ca)}
    unreadable = r"CELERY_REDIS_TLS_CA_FILE='/nowhere/ca\.pem' is invalid"
    with pytest.raises(ConfigError, match=unreadable):
        load_settings({**environ, "CELERY_REDIS_TLS_CA_FILE": "/nowhere/ca.pem"})
    with pytest.raises(ConfigError, match="CELERY_REDIS_TLS_KEY_FILE='' is invalid"):
        load_settings({**environ, "CELERY_REDIS_TLS_CERT_FILE": str(ca)})


def test_sentinel_urls_need_the_master_name() -> None:
    environ = {
{%- if broker != 'redis' %}
        "CELERY_BROKER_URL": "amqp://localhost//",
{%- endif %}
        "{{ redis_variable }}": "sentinel://10.0.0.1:26379;sentinel://10.0.0.2:26379/0",
    }
    with pytest.raises(ConfigError, match="CELERY_REDIS_SENTINEL_MASTER='' is invalid"):
        load_settings(environ)
    config = celery_settings(load_settings({**environ, "CELERY_REDIS_SENTINEL_MASTER": "main"}))
{%- if broker == 'redis' %}
    assert config["broker_transport_options"]["master_name"] == "main"
    assert config["broker_transport"].endswith(".redis_transport:SentinelTransport")
{%- else %}
    assert config["result_backend_transport_options"] == {"master_name": "main"}
{%- endif %}
{%- endif %}

{%- if result_backend == 'postgresql' %}


def test_results_go_to_postgresql_through_psycopg_3() -> None:
    """Only SQLAlchemy's psycopg 3 dialect is installed: another URL is refused at start, with the
    form expected and without the password; beat deletes the expired results."""
    config = celery_settings(load_settings({}))
    assert config["result_backend"].startswith("db+postgresql+psycopg://")
    assert config["database_engine_options"]["pool_pre_ping"] is True
    for scheme in ("postgresql", "db+postgresql"):  # the second would ask for psycopg2
        with pytest.raises(ConfigError, match=r"db\+postgresql\+psycopg://") as error:
            load_settings({"CELERY_RESULT_BACKEND": f"{scheme}://celery:PASSWORD@db/celery"})
        assert str(error.value).startswith("CELERY_RESULT_BACKEND=")
        assert "PASSWORD" not in str(error.value)
    assert config["beat_schedule"]["celery.backend_cleanup"]["task"] == "celery.backend_cleanup"
{%- endif %}


def test_worker_queues_must_be_declared_and_unspaced() -> None:
    first = "{{ queue_names[0] }}"
    assert load_settings({"CELERY_WORKER_QUEUES": first}).worker_queues == (first,)
    with pytest.raises(ConfigError, match="CELERY_WORKER_QUEUES="):
        load_settings({"CELERY_WORKER_QUEUES": f" {first}"})


def test_another_app_does_not_take_over_the_tasks() -> None:
    """create_celery_app() in a script or test does not change where the tasks' .delay() goes."""
    from {{ package_path }}.celery_app import app, create_celery_app
    from {{ package_path }}.tasks import process_document

    other = create_celery_app(broker_url="memory://")
    assert other is not app
    assert process_document.app is app
    # The URL given decides the transport (config.py's Redis transport only for Redis URLs).
    with other.connection_for_write() as connection:
        assert connection.transport.driver_type == "memory"


def test_a_sender_does_not_depend_on_beats_variables() -> None:
    """A web server importing the tasks starts whatever beat's variables say; beat refuses."""
    environ = {"CELERY_BEAT_REPORT_CRONTAB": "every morning"}
    with pytest.raises(ConfigError, match="CELERY_BEAT_REPORT_CRONTAB="):
        load_settings(environ)
    default = load_settings({}).beat_report_crontab
    assert load_settings(environ, beat=False).beat_report_crontab == default
