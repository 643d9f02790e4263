{%- set uses_redis = broker == 'redis' or result_backend == 'redis' -%}
"""Worker configuration: every setting read from the environment, parsed and checked in one place.

`load_settings()` turns the environment into a `Settings` object and raises `ConfigError` naming the
variable when a value is malformed; `celery_settings()` turns `Settings` into Celery's setting names.
Each variable, its default and its meaning is listed in VARIABLES (and in {{ env_example }}).

Celery's settings reference: https://docs.celeryq.dev/en/stable/userguide/configuration.html
"""

from __future__ import annotations

import os
{%- if uses_redis %}
import ssl
{%- endif %}
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass{{ ', replace' if broker == 'redis' else '' }}
from typing import Any
from urllib.parse import urlsplit

from celery.schedules import ParseException, crontab
from kombu.utils.url import maybe_sanitize_url

from .routing import QUEUE_NAMES

BROKER = "{{ broker }}"
RESULT_BACKEND = "{{ result_backend }}"

BROKER_SCHEMES = {{ '("redis", "rediss", "sentinel")' if broker == 'redis' else '("amqp", "amqps", "pyamqp")' }}
RESULT_BACKEND_SCHEMES = {{ '("rpc",)' if result_backend == 'rpc' else '("redis", "rediss", "sentinel")' }}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# Longest delay between retries of a task that retries with exponential backoff (tasks.py), and
# never more than CELERY_TASK_MAX_DELAY: a delayed message is held unacknowledged by the worker.
RETRY_BACKOFF_MAX = 60
{%- if broker == 'redis' %}
# Redis: seconds added to the longest hold of a message for the default visibility timeout (clock
# differences between hosts), and seconds between the worker's sweeps for expired messages.
VISIBILITY_MARGIN = 15
RESTORE_SWEEP_INTERVAL = 5
{%- endif %}


class ConfigError(ValueError):
    """A configuration variable is missing a valid value. The message names the variable."""


@dataclass(frozen=True)
class Variable:
    name: str
    default: str
    meaning: str


VARIABLES: tuple[Variable, ...] = (
    Variable(
        "CELERY_BROKER_URL",
        "{{ 'redis://localhost:6379/0' if broker == 'redis' else 'amqp://guest:guest@localhost:5672//' }}",
        "Broker connection URL ({{ ', '.join(['redis://', 'rediss://', 'sentinel://'] if broker == 'redis' else ['amqp://', 'amqps://', 'pyamqp://']) }}).",
    ),
{%- if result_backend != 'none' %}
    Variable(
        "CELERY_RESULT_BACKEND",
        "{{ 'redis://localhost:6379/1' if result_backend == 'redis' else 'rpc://' }}",
        "Where results and progress are stored{{ '; a different Redis DB from the broker' if result_backend == 'redis' else '' }}.",
    ),
{%- endif %}
    Variable(
        "CELERY_WORKER_CONCURRENCY",
        "",
        "Pool processes per worker; empty means one per CPU.",
    ),
    Variable(
        "CELERY_WORKER_PREFETCH_MULTIPLIER",
        "1",
        "Messages reserved per pool process; 1 is fair for long tasks, raise it for many short ones.",
    ),
    Variable(
        "CELERY_TASK_ACKS_LATE",
        "true",
        "Acknowledge after the task ran, so a crash re-delivers it.",
    ),
    Variable(
        "CELERY_TASK_REJECT_ON_WORKER_LOST",
        "true",
        "Run a task again when its pool process dies, at most max_retries times.",
    ),
    Variable(
        "CELERY_TASK_TIME_LIMIT",
        "300",
        "Hard limit in seconds; the pool process is replaced.",
    ),
    Variable(
        "CELERY_TASK_SOFT_TIME_LIMIT",
        "240",
        "Soft limit in seconds; raises SoftTimeLimitExceeded inside the task. Below the hard limit.",
    ),
{%- if result_backend != 'none' %}
    Variable(
        "CELERY_RESULT_EXPIRES",
        "86400",
        "Seconds a stored result is kept.",
    ),
{%- endif %}
    Variable(
        "CELERY_WORKER_MAX_TASKS_PER_CHILD",
        "10000",
        "Replace a pool process after this many tasks (bounds leaks); empty means never.",
    ),
    Variable(
        "CELERY_WORKER_MAX_MEMORY_PER_CHILD",
        "",
        "Replace a pool process whose resident memory exceeds this many KiB; empty means no limit.",
    ),
{%- if broker == 'redis' %}
    Variable(
        "CELERY_TASK_MAX_DELAY",
        "300",
        "Longest countdown, ETA or retry delay in seconds; a longer one is refused when sent.",
    ),
    Variable(
        "CELERY_BROKER_VISIBILITY_TIMEOUT",
        "",
        "Seconds before Redis re-delivers an unacknowledged task; empty computes the smallest safe value.",
    ),
{%- endif %}
{%- if uses_redis %}
    Variable(
        "CELERY_REDIS_SENTINEL_MASTER",
        "",
        "Name of the master the Sentinels monitor; required with sentinel:// URLs.",
    ),
    Variable(
        "CELERY_REDIS_TLS_CA_FILE",
        "",
        "CA certificates (PEM) that sign the server's for rediss:// URLs; empty means the system's.",
    ),
    Variable(
        "CELERY_REDIS_TLS_CERT_FILE",
        "",
        "Client certificate (PEM) for rediss:// URLs, when the server asks for one.",
    ),
    Variable(
        "CELERY_REDIS_TLS_KEY_FILE",
        "",
        "Private key (PEM) of CELERY_REDIS_TLS_CERT_FILE; both or neither.",
    ),
{%- endif %}
    Variable(
        "CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT",
        "60",
        "Seconds a cold shutdown (SIGQUIT) waits for running tasks before requeueing them.",
    ),
    Variable(
        "CELERY_WORKER_QUEUES",
        "",
        "Queues this worker consumes, comma-separated without spaces; empty means all ({{ queue_names | join(',') }}).",
    ),
    Variable(
        "CELERY_WORKER_LOGLEVEL",
        "INFO",
        "Log level of worker and beat: DEBUG, INFO, WARNING, ERROR or CRITICAL.",
    ),
    Variable(
        "CELERY_WORKER_HEARTBEAT_FILE",
        "",
        "File the worker's event loop touches for liveness probes (health.py); empty means off.",
    ),
    Variable(
        "CELERY_BEAT_HEARTBEAT_FILE",
        "",
        "File beat's scheduler loop touches for liveness probes (health.py); empty means off.",
    ),
    Variable(
        "CELERY_HEARTBEAT_INTERVAL",
        "10",
        "Seconds between touches of the heartbeat files.",
    ),
    Variable(
        "CELERY_TIMEZONE",
        "{{ timezone }}",
        "IANA time zone of the beat schedule's crontab entries.",
    ),
    Variable(
        "CELERY_BEAT_SCHEDULE_FILENAME",
        "celerybeat-schedule",
        "Beat's state file; put it in a state directory, without a .db suffix.",
    ),
    Variable(
        "CELERY_BEAT_CLEANUP_INTERVAL",
        "{{ cleanup_interval }}",
        "Seconds between cleanup runs.",
    ),
    Variable(
        "CELERY_BEAT_REPORT_CRONTAB",
        "{{ report_crontab }}",
        "When generate_report runs: minute hour day-of-month month day-of-week.",
    ),
)
DEFAULTS = {variable.name: variable.default for variable in VARIABLES}


@dataclass(frozen=True)
class Settings:
    broker_url: str
    result_backend: str | None
    worker_concurrency: int | None
    prefetch_multiplier: int
    acks_late: bool
    reject_on_worker_lost: bool
    task_time_limit: int
    task_soft_time_limit: int
    result_expires: int | None
    max_tasks_per_child: int | None
    max_memory_per_child: int | None
    task_max_delay: int | None
    visibility_timeout: int
    redis_sentinel_master: str
    redis_tls_ca_file: str
    redis_tls_cert_file: str
    redis_tls_key_file: str
    soft_shutdown_timeout: float
    worker_queues: tuple[str, ...]
    log_level: str
    worker_heartbeat_file: str
    beat_heartbeat_file: str
    heartbeat_interval: int
    timezone: str
    beat_schedule_filename: str
    cleanup_interval: int
    report_crontab: str


class _Reader:
    """Reads variables from one environment mapping, falling back to VARIABLES' defaults."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def raw(self, name: str, strip: bool = True) -> str:
        value = self.environ.get(name, DEFAULTS[name])
        return value.strip() if strip else value

    def fail(self, name: str, allowed: str, shown: str | None = None) -> ConfigError:
        value = self.raw(name) if shown is None else shown
        return ConfigError(f"{name}={value!r} is invalid: {allowed}")

    def integer(self, name: str, minimum: int, optional: bool = False) -> int | None:
        value = self.raw(name)
        if optional and value == "":
            return None
        allowed = f"expected a whole number >= {minimum}" + (" or empty" if optional else "")
        try:
            number = int(value)
        except ValueError:
            raise self.fail(name, allowed) from None
        if number < minimum:
            raise self.fail(name, allowed)
        return number

    def required_integer(self, name: str, minimum: int) -> int:
        number = self.integer(name, minimum)
        assert number is not None
        return number

    def number(self, name: str, minimum: float) -> float:
        allowed = f"expected a number of seconds >= {minimum}"
        try:
            value = float(self.raw(name))
        except ValueError:
            raise self.fail(name, allowed) from None
        if not value >= minimum:  # also rejects nan
            raise self.fail(name, allowed)
        return value

    def boolean(self, name: str) -> bool:
        value = self.raw(name).lower()
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("0", "false", "no", "off"):
            return False
        raise self.fail(name, "expected true or false (also 1/0, yes/no, on/off)")

    def url(self, name: str, schemes: tuple[str, ...]) -> str:
        value = self.raw(name)
        scheme = urlsplit(value).scheme.lower() if "://" in value else ""
        if scheme not in schemes:
            allowed = "expected a URL starting with " + ", ".join(f"{s}://" for s in schemes)
            # The error line ends up in logs: never print the URL's password.
            raise self.fail(name, allowed, shown=maybe_sanitize_url(value))
        return value

    def checked(
        self, name: str, check: Callable[[str], object], allowed: str, strip: bool = True
    ) -> str:
        value = self.raw(name, strip)
        try:
            check(value)
        except ValueError:
            raise self.fail(name, allowed) from None
        return value


def _parse_crontab(expression: str) -> crontab:
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(expression)
    minute, hour, day_of_month, month_of_year, day_of_week = fields
    try:
        return crontab(
            minute=minute,
            hour=hour,
            day_of_month=day_of_month,
            month_of_year=month_of_year,
            day_of_week=day_of_week,
        )
    except ParseException as error:
        raise ValueError(expression) from error


def _check_timezone(value: str) -> None:
    try:
        zoneinfo.ZoneInfo(value)
    except zoneinfo.ZoneInfoNotFoundError as error:  # a KeyError
        raise ValueError(value) from error


def _parse_queues(value: str) -> tuple[str, ...]:
    # No spaces: celery's --queues, which reads this variable too, would take " x" as a new queue.
    names = tuple(value.split(",")) if value else ()
    unknown = [name for name in names if name not in QUEUE_NAMES]
    if unknown:
        raise ValueError(unknown)
    return names


# Read by beat alone. A process that only sends tasks (a web server importing tasks.py) keeps
# their defaults: a mistake in one of them stops beat and the workers, not the application.
BEAT_ONLY = (
    "CELERY_BEAT_HEARTBEAT_FILE",
    "CELERY_BEAT_SCHEDULE_FILENAME",
    "CELERY_BEAT_CLEANUP_INTERVAL",
    "CELERY_BEAT_REPORT_CRONTAB",
)


def load_settings(environ: Mapping[str, str] | None = None, beat: bool = True) -> Settings:
    """Read and check every variable; raise ConfigError naming the first malformed one.

    beat=False (senders): beat's own variables keep their defaults, unread (BEAT_ONLY).
    """
    environ = os.environ if environ is None else environ
    if not beat:
        environ = {name: value for name, value in environ.items() if name not in BEAT_ONLY}
    env = _Reader(environ)
    settings = Settings(
        broker_url=env.url("CELERY_BROKER_URL", BROKER_SCHEMES),
{%- if result_backend != 'none' %}
        result_backend=env.url("CELERY_RESULT_BACKEND", RESULT_BACKEND_SCHEMES),
{%- else %}
        result_backend=None,
{%- endif %}
        worker_concurrency=env.integer("CELERY_WORKER_CONCURRENCY", 1, optional=True),
        prefetch_multiplier=env.required_integer("CELERY_WORKER_PREFETCH_MULTIPLIER", 1),
        acks_late=env.boolean("CELERY_TASK_ACKS_LATE"),
        reject_on_worker_lost=env.boolean("CELERY_TASK_REJECT_ON_WORKER_LOST"),
        task_time_limit=env.required_integer("CELERY_TASK_TIME_LIMIT", 1),
        task_soft_time_limit=env.required_integer("CELERY_TASK_SOFT_TIME_LIMIT", 1),
{%- if result_backend != 'none' %}
        result_expires=env.required_integer("CELERY_RESULT_EXPIRES", 1),
{%- else %}
        result_expires=None,
{%- endif %}
        max_tasks_per_child=env.integer("CELERY_WORKER_MAX_TASKS_PER_CHILD", 1, optional=True),
        max_memory_per_child=env.integer("CELERY_WORKER_MAX_MEMORY_PER_CHILD", 1, optional=True),
{%- if broker == 'redis' %}
        task_max_delay=env.required_integer("CELERY_TASK_MAX_DELAY", 1),
        visibility_timeout=env.integer("CELERY_BROKER_VISIBILITY_TIMEOUT", 1, optional=True) or 0,
{%- else %}
        task_max_delay=None,  # RabbitMQ holds delayed messages per connection; no timeout involved.
        visibility_timeout=0,
{%- endif %}
{%- if uses_redis %}
        redis_sentinel_master=env.raw("CELERY_REDIS_SENTINEL_MASTER"),
        redis_tls_ca_file=env.checked("CELERY_REDIS_TLS_CA_FILE", _check_file, READABLE_FILE),
        redis_tls_cert_file=env.checked("CELERY_REDIS_TLS_CERT_FILE", _check_file, READABLE_FILE),
        redis_tls_key_file=env.checked("CELERY_REDIS_TLS_KEY_FILE", _check_file, READABLE_FILE),
{%- else %}
        redis_sentinel_master="",
        redis_tls_ca_file="",
        redis_tls_cert_file="",
        redis_tls_key_file="",
{%- endif %}
        soft_shutdown_timeout=env.number("CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT", 0),
        worker_queues=_parse_queues(
            env.checked(
                "CELERY_WORKER_QUEUES",
                _parse_queues,
                "expected some of " + ",".join(QUEUE_NAMES) + ", comma-separated, no spaces",
                strip=False,
            )
        ),
        log_level=env.checked(
            "CELERY_WORKER_LOGLEVEL",
            lambda value: LOG_LEVELS.index(value.upper()),
            "expected one of " + ", ".join(LOG_LEVELS),
        ).upper(),
        worker_heartbeat_file=env.raw("CELERY_WORKER_HEARTBEAT_FILE"),
        beat_heartbeat_file=env.raw("CELERY_BEAT_HEARTBEAT_FILE"),
        heartbeat_interval=env.required_integer("CELERY_HEARTBEAT_INTERVAL", 1),
        timezone=env.checked(
            "CELERY_TIMEZONE",
            _check_timezone,
            "expected an IANA time zone such as UTC",
        ),
        beat_schedule_filename=env.checked(
            "CELERY_BEAT_SCHEDULE_FILENAME",
            _check_schedule_filename,
            "expected a file path without a .db suffix (dbm may then pick a backend that is not installed)",
        ),
        cleanup_interval=env.required_integer("CELERY_BEAT_CLEANUP_INTERVAL", 1),
        report_crontab=env.checked(
            "CELERY_BEAT_REPORT_CRONTAB",
            _parse_crontab,
            "expected five valid crontab fields: minute (0-59) hour (0-23) day-of-month (1-31)"
            " month (1-12) day-of-week (0-6 or mon-sun)",
        ),
    )
{%- if broker == 'redis' %}
    if not settings.visibility_timeout:
        settings = replace(settings, visibility_timeout=shortest_visibility_timeout(settings))
{%- endif %}
    _check_consistency(settings)
    return settings
{%- if broker == 'redis' %}


def shortest_visibility_timeout(settings: Settings) -> int:
    """The longest a message can stay unacknowledged, plus a margin: a task delayed by up to
    CELERY_TASK_MAX_DELAY, then waiting for a free process (up to a hard time limit), then
    running (up to another). Redis must not deliver it again before that."""
    assert settings.task_max_delay is not None
    return settings.task_max_delay + 2 * settings.task_time_limit + VISIBILITY_MARGIN
{%- endif %}
{%- if uses_redis %}


READABLE_FILE = "expected the path of a readable file, or empty"


def _check_file(value: str) -> None:
    if value and not os.access(value, os.R_OK):
        raise ValueError(value)


def _scheme(url: str) -> str:
    return urlsplit(url).scheme.lower()


def redis_urls(settings: Settings) -> dict[str, str]:
    """The Redis URLs in use, by variable name."""
    urls = {
{%- if broker == 'redis' %}
        "CELERY_BROKER_URL": settings.broker_url,
{%- endif %}
{%- if result_backend == 'redis' %}
        "CELERY_RESULT_BACKEND": settings.result_backend or "",
{%- endif %}
    }
    schemes = ("redis", "rediss", "sentinel")
    return {name: url for name, url in urls.items() if _scheme(url) in schemes}


def redis_tls_options(settings: Settings) -> dict[str, Any]:
    """TLS options of rediss:// connections (kombu's and redis-py's names); the server's
    certificate is always verified."""
    options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    if settings.redis_tls_ca_file:
        options["ssl_ca_certs"] = settings.redis_tls_ca_file
    if settings.redis_tls_cert_file:
        options["ssl_certfile"] = settings.redis_tls_cert_file
        options["ssl_keyfile"] = settings.redis_tls_key_file
    return options


def _check_redis(settings: Settings) -> None:
    if bool(settings.redis_tls_cert_file) != bool(settings.redis_tls_key_file):
        raise ConfigError(
            f"CELERY_REDIS_TLS_KEY_FILE='{settings.redis_tls_key_file}' is invalid: "
            "CELERY_REDIS_TLS_CERT_FILE and CELERY_REDIS_TLS_KEY_FILE are set together or not at all"
        )
    sentinel = [name for name, url in redis_urls(settings).items() if _scheme(url) == "sentinel"]
    if sentinel and not settings.redis_sentinel_master:
        raise ConfigError(
            "CELERY_REDIS_SENTINEL_MASTER='' is invalid: expected the master's name (as in "
            f"`sentinel monitor <name> ...`), since {' and '.join(sentinel)} use sentinel://"
        )
{%- endif %}


def _check_schedule_filename(value: str) -> None:
    if not value or value.endswith(".db"):
        raise ValueError(value)


def _check_consistency(settings: Settings) -> None:
    if settings.task_soft_time_limit >= settings.task_time_limit:
        raise ConfigError(
            f"CELERY_TASK_SOFT_TIME_LIMIT='{settings.task_soft_time_limit}' is invalid: it must be "
            f"below CELERY_TASK_TIME_LIMIT ({settings.task_time_limit}), or it never fires"
        )
{%- if broker == 'redis' %}
    shortest = shortest_visibility_timeout(settings)
    if settings.visibility_timeout < shortest:
        raise ConfigError(
            f"CELERY_BROKER_VISIBILITY_TIMEOUT='{settings.visibility_timeout}' is invalid: it must "
            f"be at least {shortest} s (CELERY_TASK_MAX_DELAY + 2 x CELERY_TASK_TIME_LIMIT + "
            f"{VISIBILITY_MARGIN}), or Redis delivers delayed and running tasks a second time; "
            "leave it empty for that value"
        )
{%- endif %}
{%- if uses_redis %}
    _check_redis(settings)
{%- endif %}


def celery_settings(settings: Settings) -> dict[str, Any]:
    """Celery's settings for `settings`, with the reliability defaults this template stands for."""
    from .routing import DEFAULT_QUEUE, TASK_ROUTES, task_queues
    from .schedule import beat_schedule

    config: dict[str, Any] = {
        "broker_url": settings.broker_url,
        # Only JSON: a pickle message lets anyone who can write to the broker run code in the worker.
        # https://docs.celeryq.dev/en/stable/userguide/security.html#serializers
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_serializer": "json",
        "result_serializer": "json",
        "timezone": settings.timezone,
        "enable_utc": True,
        # Acknowledge after the task ran: a worker killed mid-task leaves the message to be delivered
        # again instead of losing it. Tasks must therefore be idempotent.
        # https://docs.celeryq.dev/en/stable/userguide/tasks.html#Task.acks_late
        "task_acks_late": settings.acks_late,
        # A task whose pool process died (OOM kill, segfault) runs again, but as a retry that counts
        # against max_retries: a task that always kills its process cannot loop forever (Celery 5.7).
        # https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-reject-on-worker-lost
        "task_reject_on_worker_lost": settings.reject_on_worker_lost,
        "task_retry_on_worker_lost": settings.reject_on_worker_lost,
        "task_time_limit": settings.task_time_limit,
        "task_soft_time_limit": settings.task_soft_time_limit,
        # STARTED only for the tasks that run long enough to be watched: tasks.py sets
        # track_started=True on them. Each STARTED is one more write to the result backend.
        "task_track_started": False,
        # No task events by default: each task would publish two to four event messages. Flower
        # switches them on in the workers while it runs (its enable_events option, on by default).
        # https://flower.readthedocs.io/en/latest/config.html#enable-events
        "task_send_sent_event": False,
        "worker_send_task_events": False,
        # One reserved message per process: long tasks are not stuck behind a busy process.
        # https://docs.celeryq.dev/en/stable/userguide/optimizing.html#prefetch-limits
        "worker_prefetch_multiplier": settings.prefetch_multiplier,
        "worker_max_tasks_per_child": settings.max_tasks_per_child,
        "worker_max_memory_per_child": settings.max_memory_per_child,
        # Wait for a broker that starts after the worker instead of exiting, and never give up
        # reconnecting: the process manager, not a retry counter, decides when to stop.
        # https://docs.celeryq.dev/en/stable/userguide/configuration.html#broker-connection-retry-on-startup
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        # RabbitMQ: on connection loss, cancel running late-ack tasks: the broker re-delivers them at
        # once, and letting them finish would run them twice. Redis: let them finish and ack through
        # the new connection (redis_transport.py); cancelled, they would wait for the visibility
        # timeout.
        # https://docs.celeryq.dev/en/stable/userguide/configuration.html#worker-cancel-long-running-tasks-on-connection-loss
        "worker_cancel_long_running_tasks_on_connection_loss": BROKER == "rabbitmq",
        # Cold shutdown (SIGQUIT) first gives running tasks this long to finish, then requeues them.
        # SIGTERM stays a warm shutdown that waits for running tasks.
        # https://docs.celeryq.dev/en/stable/userguide/workers.html#soft-shutdown
        "worker_soft_shutdown_timeout": settings.soft_shutdown_timeout,
        "worker_enable_soft_shutdown_on_idle": True,
        "task_queues": task_queues(),
        "task_default_queue": DEFAULT_QUEUE,
        "task_routes": TASK_ROUTES,
        "beat_schedule": beat_schedule(settings),
        "beat_schedule_filename": settings.beat_schedule_filename,
    }
    # One beat at a time (beat_lock.py): beat takes a lock in the broker on every loop and sends
    # only while it holds it; the loop comes at least once per interval, to renew the lock and
    # touch the heartbeat file.
    config["beat_scheduler"] = f"{__package__}.schedule:SingleBeatScheduler"
    config["beat_max_loop_interval"] = settings.heartbeat_interval
    if settings.worker_concurrency is not None:
        config["worker_concurrency"] = settings.worker_concurrency
{%- if broker == 'redis' %}
    # Redis re-delivers an unacknowledged message after the visibility timeout. It must exceed the
    # longest a message is held (delay, wait, run: shortest_visibility_timeout), or it runs twice.
    # https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/redis.html#visibility-timeout
    # kombu gives expired messages back when a worker sweeps for them: every 10th 10-second sweep by
    # default (up to 100 s late); every sweep, every 5 s, here (kombu/transport/redis.py).
    config["broker_transport_options"] = {
        "visibility_timeout": settings.visibility_timeout,
        "unacked_restore_interval": RESTORE_SWEEP_INTERVAL,
        "unacked_restore_throttle": 1,
    }
    # kombu's transport, with the fixes of redis_transport.py for a connection lost mid-task.
    transport = "SentinelTransport" if _scheme(settings.broker_url) == "sentinel" else "Transport"
    config["broker_transport"] = f"{__package__}.redis_transport:{transport}"
    if _scheme(settings.broker_url) == "sentinel":
        # https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/redis.html#configuration
        config["broker_transport_options"]["master_name"] = settings.redis_sentinel_master
    elif _scheme(settings.broker_url) == "rediss":
        # https://docs.celeryq.dev/en/stable/userguide/configuration.html#broker-use-ssl
        config["broker_use_ssl"] = redis_tls_options(settings)
    # Not a Celery setting: WorkerTask.apply_async (celery_app.py) refuses longer delays.
    config["workers_task_max_delay"] = settings.task_max_delay
{%- else %}
    # Quorum queues (routing.py) for the task queues and for any queue Celery creates; publisher
    # confirms make a publish return only once RabbitMQ has the message.
    # https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/rabbitmq.html#quorum-queues
    config["task_default_queue_type"] = "quorum"
    config["broker_transport_options"] = {"confirm_publish": True}
{%- endif %}
{%- if result_backend != 'none' %}
    config["result_backend"] = settings.result_backend
    config["result_expires"] = settings.result_expires
{%- if result_backend == 'redis' %}
    backend_scheme = _scheme(settings.result_backend or "")
    if backend_scheme == "sentinel":
        # https://docs.celeryq.dev/en/stable/userguide/configuration.html#redis-backend-settings
        config["result_backend_transport_options"] = {"master_name": settings.redis_sentinel_master}
    elif backend_scheme == "rediss":
        # https://docs.celeryq.dev/en/stable/userguide/configuration.html#redis-backend-use-ssl
        config["redis_backend_use_ssl"] = redis_tls_options(settings)
{%- endif %}
    # Store task name, args and worker with the result (Flower and debugging use them).
    config["result_extended"] = True
{%- else %}
    # No result backend: tasks are fire-and-forget; nothing is stored.
    config["task_ignore_result"] = True
{%- endif %}
    return config
