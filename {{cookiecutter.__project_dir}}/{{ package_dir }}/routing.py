"""Queues and routing: which queues exist and which tasks go where.

Workers pick queues with -Q or CELERY_WORKER_QUEUES; a task routed to a queue is consumed only by
workers listening on it. https://docs.celeryq.dev/en/stable/userguide/routing.html
"""

from __future__ import annotations

from kombu import Exchange, Queue

QUEUE_NAMES: tuple[str, ...] = ({{ queue_names | map('tojson') | join(', ') }}{{ ',' if queue_names | length == 1 else '' }})
DEFAULT_QUEUE = "{{ queue_names[0] }}"
URGENT_QUEUE = "{{ urgent_queue }}"
TASKS = "{{ package_path }}.tasks"

# Short tasks that must not wait behind long document jobs.
TASK_ROUTES: dict[str, dict[str, str]] = {
    f"{TASKS}.health_check": {"queue": URGENT_QUEUE},
}


def task_queues() -> tuple[Queue, ...]:
{%- if broker == 'rabbitmq' %}
    """One topic exchange per queue, `<queue>-topic`, routing key = queue name."""
    # Quorum queues are replicated and survive a node loss; explicitly declared queues do not take
    # task_default_queue_type, so the type is set here.
    # https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/rabbitmq.html#quorum-queues
    # Topic exchanges, because Celery's native delayed delivery skips direct ones: a countdown,
    # ETA or retry delay then waits in RabbitMQ's celery_delayed_* queues, not unacknowledged in a
    # worker until RabbitMQ's consumer_timeout closes its channel. The names differ from the
    # direct exchanges of 1.x (a type cannot change), so old and new workers can run side by side.
    # https://docs.celeryq.dev/projects/kombu/en/main/reference/kombu.transport.native_delayed_delivery.html
    arguments = {"x-queue-type": "quorum"}
    return tuple(
        Queue(
            name,
            Exchange(f"{name}-topic", type="topic"),
            routing_key=name,
            queue_arguments=arguments,
        )
        for name in QUEUE_NAMES
    )
{%- else %}
    """One direct exchange per queue, routing key = queue name: Celery's default layout, explicit."""
    return tuple(
        Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUE_NAMES
    )
{%- endif %}
