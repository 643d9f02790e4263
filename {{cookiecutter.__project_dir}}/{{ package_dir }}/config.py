{%- set uses_redis = broker == 'redis' or result_backend == 'redis' -%}
"""Worker configuration, declared once: each field of `Settings` is the environment variable
CELERY_<FIELD NAME>, with its default, its parser (variables.py: the values allowed) and its help.
`load_settings()` reads them and raises ConfigError, one line naming the variable, on a malformed
value; `python -m {{ package_path }} config` shows them and writes {{ env_example }} (a test keeps
the file equal). `.env` files: env_file.py. Celery's settings for these: celery_config.py.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass{{ ', replace' if broker == 'redis' else '' }}

from . import variables as parse
from .routing import QUEUE_NAMES
from .variables import Invalid, Variable, section, variable

BROKER = "{{ broker }}"
{%- if broker == 'redis' %}
VISIBILITY_MARGIN = 15  # s above a message's longest hold, for clocks that differ between hosts
{%- endif %}


class ConfigError(ValueError):
    """A configuration variable is missing a valid value. The message names the variable."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    broker_url: str = variable(
        "{{ 'redis://localhost:6379/0' if broker == 'redis' else 'amqp://guest:guest@localhost:5672//' }}",
        parse.url({{ '"redis", "rediss", "sentinel"' if broker == 'redis' else '"amqp", "amqps", "pyamqp"' }}),
        "Broker connection URL ({{ 'redis://, rediss://, sentinel://' if broker == 'redis' else 'amqp://, amqps://, pyamqp://' }}).",
        secret=True,
    )
{%- if result_backend == 'postgresql' %}
    result_backend: str | None = variable(
        "db+postgresql+psycopg://celery@localhost:5432/celery",
        parse.url("db+postgresql+psycopg"),
        "Where results and progress are stored: db+postgresql+psycopg://user:password@host:port/db.",
        secret=True,
    )
{%- elif result_backend != 'none' %}
    result_backend: str | None = variable(
        "{{ 'redis://localhost:6379/1' if result_backend == 'redis' else 'rpc://' }}",
        parse.url({{ '"redis", "rediss", "sentinel"' if result_backend == 'redis' else '"rpc"' }}),
        "Where results and progress are stored{{ '; a different Redis DB from the broker' if result_backend == 'redis' else '' }}.",
        secret=True,
    )
{%- else %}
    result_backend: str | None = None  # result_backend=none: tasks are fire-and-forget
{%- endif %}
    section()
    worker_concurrency: int | None = variable(
        "", parse.whole(empty=True), "Pool processes per worker; empty means one per CPU."
    )
    worker_prefetch_multiplier: int = variable(
        "1",
        parse.whole(),
        "Messages reserved per pool process; 1 is fair for long tasks, raise it for many short ones.",
    )
    task_acks_late: bool = variable(
        "true", parse.boolean, "Acknowledge after the task ran, so a crash re-delivers it."
    )
    task_reject_on_worker_lost: bool = variable(
        "true",
        parse.boolean,
        "Run a task again when its pool process dies, at most max_retries times.",
    )
    task_time_limit: int = variable(
        "300", parse.whole(), "Hard limit in seconds; the pool process is replaced."
    )
    task_soft_time_limit: int = variable(
        "240",
        parse.whole(),
        "Soft limit in seconds; raises SoftTimeLimitExceeded inside the task. Below the hard limit.",
    )
{%- if result_backend != 'none' %}
    result_expires: int | None = variable(
        "86400", parse.whole(), "Seconds a stored result is kept."
    )
{%- else %}
    result_expires: int | None = None
{%- endif %}
    worker_max_tasks_per_child: int | None = variable(
        "10000",
        parse.whole(empty=True),
        "Replace a pool process after this many tasks (bounds leaks); empty means never.",
    )
    worker_max_memory_per_child: int | None = variable(
        "",
        parse.whole(empty=True),
        "Replace a pool process whose resident memory exceeds this many KiB; empty means no limit.",
    )
{%- if broker == 'redis' %}
    task_max_delay: int | None = variable(
        "300",
        parse.whole(),
        "Longest countdown, ETA or retry delay in seconds; a longer one is refused when sent.",
    )
    broker_visibility_timeout: int = variable(
        "",
        parse.whole(empty=True),
        "Seconds before Redis re-delivers an unacknowledged task; empty computes the smallest safe value.",
    )
{%- else %}
    task_max_delay: int | None = None  # RabbitMQ holds delayed messages itself
    broker_visibility_timeout: int = 0  # and has no visibility timeout
{%- endif %}
{%- if uses_redis %}
    redis_sentinel_master: str = variable(
        "", parse.text, "Name of the master the Sentinels monitor; required with sentinel:// URLs."
    )
    redis_tls_ca_file: str = variable(
        "",
        parse.readable_file,
        "CA certificates (PEM) that sign the server's for rediss:// URLs; empty means the system's.",
    )
    redis_tls_cert_file: str = variable(
        "",
        parse.readable_file,
        "Client certificate (PEM) for rediss:// URLs, when the server asks for one.",
    )
    redis_tls_key_file: str = variable(
        "", parse.readable_file, "Private key (PEM) of CELERY_REDIS_TLS_CERT_FILE; both or neither."
    )
{%- else %}
    redis_sentinel_master: str = ""
    redis_tls_ca_file: str = ""
    redis_tls_cert_file: str = ""
    redis_tls_key_file: str = ""
{%- endif %}
    worker_soft_shutdown_timeout: float = variable(
        "60",
        parse.seconds,
        "Seconds a cold shutdown (SIGQUIT) waits for running tasks before requeueing them.",
    )
    worker_queues: tuple[str, ...] = variable(
        "",
        parse.queues,
        f"Queues this worker consumes, comma-separated without spaces; empty means all ({','.join(QUEUE_NAMES)}).",
    )
    worker_loglevel: str = variable(
        "INFO",
        parse.log_level,
        "Log level of worker and beat: DEBUG, INFO, WARNING, ERROR or CRITICAL.",
    )
    section()
    worker_heartbeat_file: str = variable(
        "",
        parse.text,
        "File the worker's event loop touches for liveness probes (health.py); empty means off.",
    )
    beat_heartbeat_file: str = variable(
        "",
        parse.text,
        "File beat's scheduler loop touches for liveness probes (health.py); empty means off.",
        beat=True,
    )
    heartbeat_interval: int = variable(
        "10", parse.whole(), "Seconds between touches of the heartbeat files."
    )
    section()
    timezone: str = variable(
        "{{ timezone }}", parse.time_zone, "IANA time zone of the beat schedule's crontab entries."
    )
    beat_schedule_filename: str = variable(
        "celerybeat-schedule",
        parse.schedule_file,
        "Beat's state file; put it in a state directory, without a .db suffix.",
        beat=True,
    )
    beat_cleanup_interval: int = variable(
        "{{ cleanup_interval }}", parse.whole(), "Seconds between cleanup runs.", beat=True
    )
    beat_report_crontab: str = variable(
        "{{ report_crontab }}",
        parse.crontab_fields,
        "When generate_report runs: minute hour day-of-month month day-of-week.",
        beat=True,
    )
    section()
    metrics_address: str = variable(
        "127.0.0.1",
        parse.text,
        "Address the metrics exporter listens on (`metrics` command); 0.0.0.0 in a container.",
    )
    metrics_port: int = variable(
        "9808", parse.port, "Port of the metrics exporter: /metrics, /backlog, /healthz."
    )
    metrics_interval: int = variable(
        "15", parse.whole(), "Seconds between the metrics exporter's readings of the broker."
    )
{%- if broker == 'rabbitmq' %}
    rabbitmq_management_url: str = variable(
        "",
        parse.url("http", "https", empty=True),
        "RabbitMQ's management API, e.g. http://user:password@host:15672; gives `queues` and the exporter unacknowledged counts.",
        secret=True,
    )
{%- endif %}


VARIABLES: tuple[Variable, ...] = parse.declared(Settings)


def load_settings(environ: Mapping[str, str] | None = None, beat: bool = True) -> Settings:
    """Read and check every variable; raise ConfigError naming the first malformed one.
    beat=False (processes that only send tasks): beat's own variables keep their defaults."""
    environ = os.environ if environ is None else environ
    values = {}
    for item in VARIABLES:
        value = environ.get(item.name, item.default) if beat or not item.beat else item.default
        value = value if item.parse is parse.queues else value.strip()
        try:
            values[item.name[len("CELERY_") :].lower()] = item.parse(value)
        except Invalid as error:
            shown = value if error.shown is None else error.shown
            raise ConfigError(f"{item.name}={shown!r} is invalid: {error.allowed}") from None
    settings = Settings(**values)
{%- if broker == 'redis' %}
    if settings.broker_visibility_timeout is None:
        settings = replace(settings, broker_visibility_timeout=least_visibility_timeout(settings))
{%- endif %}
    _check_together(settings)
    return settings
{%- if broker == 'redis' %}


def least_visibility_timeout(settings: Settings) -> int:
    """The longest a message can stay unacknowledged, plus a margin: a task delayed by up to
    CELERY_TASK_MAX_DELAY, then waiting for a free process (up to a hard time limit), then
    running (up to another). Redis must not deliver it again before that."""
    assert settings.task_max_delay is not None
    return settings.task_max_delay + 2 * settings.task_time_limit + VISIBILITY_MARGIN
{%- endif %}


def _check_together(settings: Settings) -> None:
    """The rules that involve two variables."""
{%- if uses_redis %}
    urls = [("CELERY_BROKER_URL", settings.broker_url)]
    urls.append(("CELERY_RESULT_BACKEND", settings.result_backend or ""))
    sentinel = [name for name, url in urls if url.startswith("sentinel:")]
{%- endif %}
    refusals = [
        (
            settings.task_soft_time_limit >= settings.task_time_limit,
            f"CELERY_TASK_SOFT_TIME_LIMIT='{settings.task_soft_time_limit}' is invalid: it must be "
            f"below CELERY_TASK_TIME_LIMIT ({settings.task_time_limit}), or it never fires",
        ),
{%- if broker == 'redis' %}
        (
            settings.broker_visibility_timeout < least_visibility_timeout(settings),
            f"CELERY_BROKER_VISIBILITY_TIMEOUT='{settings.broker_visibility_timeout}' is invalid: "
            f"it must be at least {least_visibility_timeout(settings)} s (CELERY_TASK_MAX_DELAY + "
            f"2 x CELERY_TASK_TIME_LIMIT + {VISIBILITY_MARGIN}), or Redis delivers delayed and "
            "running tasks a second time; leave it empty for that value",
        ),
{%- endif %}
{%- if uses_redis %}
        (
            bool(settings.redis_tls_cert_file) != bool(settings.redis_tls_key_file),
            f"CELERY_REDIS_TLS_KEY_FILE='{settings.redis_tls_key_file}' is invalid: CELERY_REDIS_"
            "TLS_CERT_FILE and CELERY_REDIS_TLS_KEY_FILE are set together or not at all",
        ),
{%- endif %}
{%- if uses_redis %}
        (
            bool(sentinel) and not settings.redis_sentinel_master,
            "CELERY_REDIS_SENTINEL_MASTER='' is invalid: expected the master's name (as in "
            f"`sentinel monitor <name> ...`), since {' and '.join(sentinel)} use sentinel://",
        ),
{%- endif %}
    ]
    for refused, message in refusals:
        if refused:
            raise ConfigError(message)
