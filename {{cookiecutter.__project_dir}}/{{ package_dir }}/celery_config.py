{%- set uses_redis = broker == 'redis' or result_backend == 'redis' -%}
"""Celery's settings for ours (config.py), with the reliability defaults this template stands for.

Celery's settings reference: https://docs.celeryq.dev/en/stable/userguide/configuration.html
"""

from __future__ import annotations

{% if uses_redis %}import ssl
{% endif %}from typing import Any

from .config import BROKER, Settings
from .routing import DEFAULT_QUEUE, TASK_ROUTES, task_queues
from .schedule import beat_schedule
{%- if broker == 'redis' %}

# Seconds between a worker's sweeps for expired unacknowledged messages (Redis).
RESTORE_SWEEP_INTERVAL = 5
{%- endif %}
{%- if result_backend == 'postgresql' %}

# Seconds to wait for the PostgreSQL server to accept a connection.
DATABASE_CONNECT_TIMEOUT = 10
{%- endif %}


def celery_settings(settings: Settings) -> dict[str, Any]:
    """Celery's settings for `settings`, with the reliability defaults this template stands for."""
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
        "task_acks_late": settings.task_acks_late,
        # A task whose pool process died (OOM kill, segfault) runs again, but as a retry that counts
        # against max_retries: a task that always kills its process cannot loop forever (Celery 5.7).
        # https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-reject-on-worker-lost
        "task_reject_on_worker_lost": settings.task_reject_on_worker_lost,
        "task_retry_on_worker_lost": settings.task_reject_on_worker_lost,
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
        "worker_prefetch_multiplier": settings.worker_prefetch_multiplier,
        "worker_max_tasks_per_child": settings.worker_max_tasks_per_child,
        "worker_max_memory_per_child": settings.worker_max_memory_per_child,
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
        "worker_soft_shutdown_timeout": settings.worker_soft_shutdown_timeout,
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
    # longest a message is held (delay, wait, run: least_visibility_timeout), or it runs twice.
    # https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/redis.html#visibility-timeout
    # kombu gives expired messages back when a worker sweeps for them: every 10th 10-second sweep by
    # default (up to 100 s late); every sweep, every 5 s, here (kombu/transport/redis.py).
    config["broker_transport_options"] = {
        "visibility_timeout": settings.broker_visibility_timeout,
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
    # Not a Celery setting: WorkerTask.apply_async (task_base.py) refuses longer delays.
    config["workers_task_max_delay"] = settings.task_max_delay
{%- else %}
    # Quorum queues (routing.py) for the task queues and for any queue Celery creates; publisher
    # confirms make a publish return only once RabbitMQ has the message.
    # https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/rabbitmq.html#quorum-queues
    config["task_default_queue_type"] = "quorum"
    config["broker_transport_options"] = {"confirm_publish": True}
    # Not a Celery setting: queues.py reads unacknowledged counts there when it is set.
    config["workers_rabbitmq_management_url"] = settings.rabbitmq_management_url
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
{%- elif result_backend == 'postgresql' %}
    # Celery's database backend (SQLAlchemy). Its tables, celery_taskmeta and celery_tasksetmeta,
    # are created on the first read or write of a result, not when a process starts: beat, Flower
    # and code that only sends tasks start (and keep scheduling) while PostgreSQL is away.
    # pool_pre_ping tests a pooled connection before using it, so one the server closed (a
    # restart, an idle timeout) is replaced instead of failing a task; pool_recycle replaces
    # connections older than an hour; connect_timeout bounds the wait for a server that does not
    # answer. Expired rows are deleted by celery.backend_cleanup, on the beat schedule (schedule.py).
    # https://docs.celeryq.dev/en/stable/userguide/configuration.html#database-backend-settings
    config["database_create_tables_at_setup"] = False
    config["database_engine_options"] = {
        "pool_pre_ping": True,
        "pool_recycle": 3600,
        "connect_args": {"connect_timeout": DATABASE_CONNECT_TIMEOUT},
    }
{%- endif %}
    # Store task name, args and worker with the result (Flower and debugging use them).
    config["result_extended"] = True
{%- else %}
    # No result backend: tasks are fire-and-forget; nothing is stored.
    config["task_ignore_result"] = True
{%- endif %}
    return config
{%- if uses_redis %}


def _scheme(url: str | None) -> str:
    return (url or "").partition("://")[0].lower()


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
{%- endif %}
