"""What the broker holds per queue, and the workers as they answer: `python -m {{ package_path }}
queues|status|purge` (__main__.py).

{%- if broker == 'redis' %}
Redis keeps a queue in several lists, one per priority step (kombu's `<queue>\x06\x16<priority>`
beside `<queue>`), and the messages that workers took but have not acknowledged in one hash,
`unacked`, with the time each was taken in `unacked_index`: ready is the sum of the lists,
reserved the entries of that hash whose routing key is the queue. The oldest ready message is the
last of each list; its age comes from the time stamp its sender put in it (task_base.SENT_AT).
{%- else %}
RabbitMQ reports a queue's ready messages and consumers to a passive declare. Messages delivered
but not acknowledged are not reported over AMQP: with CELERY_RABBITMQ_MANAGEMENT_URL set, the
counts come from the management API instead, unacknowledged ones included. Neither says how old a
queue's messages are (quorum queues report no head message time stamp).
{%- endif %}
"""

from __future__ import annotations

import json
{% if broker == 'redis' %}import time
{% else %}from base64 import b64encode
{% endif %}from dataclasses import asdict, dataclass
from typing import Any
{%- if broker == 'rabbitmq' %}
from urllib.error import HTTPError
from urllib.parse import quote, unquote, urlsplit
from urllib.request import Request, urlopen
{%- endif %}

from celery import Celery

from .routing import QUEUE_NAMES
{%- if broker == 'redis' %}
from .task_base import SENT_AT
{%- endif %}

# Whether a reading carries the messages' ages (Redis) or not (RabbitMQ).
KNOWS_AGES = {{ broker == 'redis' }}


@dataclass(frozen=True)
class QueueDepth:
    queue: str
    ready: int  # waiting for a worker
    reserved: int | None  # taken by a worker, not acknowledged yet (None: the broker does not say)
    oldest_ready_seconds: float | None  # since the oldest waiting message was sent (None: empty)
    oldest_reserved_seconds: float | None  # how long the oldest reserved message has been held
    consumers: int | None  # RabbitMQ: consumers of the queue (None on Redis)

    @property
    def backlog(self) -> int:
        """What is left to do: ready and reserved messages."""
        return self.ready + (self.reserved or 0)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def queue_depths(app: Celery[Any]) -> list[QueueDepth]:
    """Each queue of routing.py, read from the broker. Raises the connection's error when the
    broker cannot be reached."""
    with app.connection_for_read() as connection:
        connection.ensure_connection(max_retries=1)
        channel: Any = connection.default_channel
{%- if broker == 'redis' %}
        client = channel.client
        steps = channel.priority_steps
        lists = [channel._q_for_pri(name, step) for name in QUEUE_NAMES for step in steps]
        with client.pipeline() as pipeline:
            for key in lists:
                pipeline.llen(key)
                pipeline.lindex(key, -1)  # kombu pushes on the left and takes from the right
            replies = pipeline.execute()
        lengths, tails = replies[0::2], replies[1::2]
        reserved: dict[str, int] = dict.fromkeys(QUEUE_NAMES, 0)
        taken_at: dict[str, float] = {}
        held = client.hgetall(channel.unacked_key)
        index = dict(client.zrange(channel.unacked_index_key, 0, -1, withscores=True))
        for tag, entry in held.items():
            queue = json.loads(entry)[2]  # [message, exchange, routing key]: the queue's name
            if queue in reserved:
                reserved[queue] += 1
                when = float(index.get(tag, time.time()))
                taken_at[queue] = min(taken_at.get(queue, when), when)
        now = time.time()
        depths = []
        for number, name in enumerate(QUEUE_NAMES):
            mine = slice(number * len(steps), (number + 1) * len(steps))
            sent = [_sent_at(tail) for tail in tails[mine] if tail is not None]
            oldest = min((when for when in sent if when is not None), default=None)
            depths.append(
                QueueDepth(
                    queue=name,
                    ready=sum(lengths[mine]),
                    reserved=reserved[name],
                    oldest_ready_seconds=_age(now, oldest),
                    oldest_reserved_seconds=_age(now, taken_at.get(name)),
                    consumers=None,
                )
            )
        return depths


def _sent_at(payload: bytes | str) -> float | None:
    """The sender's time stamp of a message as kombu stores it (None: sent without one)."""
    try:
        message = json.loads(payload)
    except ValueError:  # not kombu's JSON document
        return None
    headers = message.get("headers") if isinstance(message, dict) else None
    when = headers.get(SENT_AT) if isinstance(headers, dict) else None
    return float(when) if isinstance(when, (int, float)) else None


def _age(now: float, since: float | None) -> float | None:
    return None if since is None else round(max(0.0, now - since), 1)
{%- else %}
        management = app.conf.get("workers_rabbitmq_management_url")
        if management:
            return [_managed_depth(management, connection.virtual_host, n) for n in QUEUE_NAMES]
        depths = []
        for name in QUEUE_NAMES:
            try:
                _, ready, consumers = channel.queue_declare(name, passive=True)
            except connection.channel_errors:  # NOT_FOUND: no worker or sender declared it yet
                ready, consumers = 0, 0
                channel = connection.channel()  # the broker closed the one that asked
            depths.append(QueueDepth(name, ready, None, None, None, consumers))
        return depths


def _managed_depth(base: str, vhost: str, name: str) -> QueueDepth:
    """A queue as the management API reports it (its figures are up to 5 s old: RabbitMQ's
    collect_statistics_interval). Raises ManagementError when the API cannot be read."""
    parts = urlsplit(base)
    address = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path.rstrip('/')}"
    request = Request(f"{address}/api/queues/{quote(vhost, safe='')}/{quote(name, safe='')}")
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    token = b64encode(f"{user}:{password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    try:
        with urlopen(request, timeout=10) as response:
            queue = json.load(response)
    except HTTPError as error:
        if error.code == 404:  # not declared yet
            return QueueDepth(name, 0, 0, None, None, 0)
        answer = f"RabbitMQ's management API answered {error.code} for {name}"
        raise ManagementError(answer) from None
    except (OSError, ValueError) as error:
        raise ManagementError(f"cannot read RabbitMQ's management API: {error}") from None
    return QueueDepth(
        queue=name,
        ready=int(queue.get("messages_ready", 0)),
        reserved=int(queue.get("messages_unacknowledged", 0)),
        oldest_ready_seconds=None,
        oldest_reserved_seconds=None,
        consumers=int(queue.get("consumers", 0)),
    )


class ManagementError(OSError):
    """CELERY_RABBITMQ_MANAGEMENT_URL is set, and the API there did not answer as expected."""
{%- endif %}


def purge(app: Celery[Any], queue: str) -> int:
    """Delete the ready messages of `queue` (reserved ones stay with their workers); returns how
    many were deleted."""
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1)
        channel: Any = connection.default_channel
        return int(channel.queue_purge(queue) or 0)


def worker_status(app: Celery[Any], timeout: float) -> list[dict[str, Any]]:
    """Each worker that answers within `timeout` seconds: its queues, running and reserved tasks."""
    # How many workers will answer is unknown, so the first broadcast waits the whole timeout;
    # the next two ask those workers by name and return as soon as each has answered.
    queues = app.control.inspect(timeout=timeout).active_queues() or {}
    if not queues:
        return []
    known = app.control.inspect(timeout=timeout, destination=list(queues), limit=len(queues))
    active = known.active() or {}
    reserved = known.reserved() or {}
    return [
        {
            "worker": name,
            "queues": sorted(queue["name"] for queue in queues[name]),
            "active": len(active.get(name, [])),
            "reserved": len(reserved.get(name, [])),
        }
        for name in sorted(queues)
    ]
