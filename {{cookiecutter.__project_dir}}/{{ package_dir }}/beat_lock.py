"""One beat at a time: a lock in the broker that every beat takes before it sends anything.

Two `celery beat` processes (a second replica, a deploy that overlaps, a copy started by hand)
would send every periodic task twice. The scheduler (schedule.py) takes this lock on each loop:
the beat that holds it sends, any other waits and logs that it waits, and takes over when the
holder stops or dies.
{%- if broker == 'redis' %}

Redis: a key set with NX and an expiry, renewed on every loop. A beat that dies leaves the key to
expire after `ttl` seconds; one that stops deletes it at once. A beat that stalled past the expiry
finds the key gone or taken when it wakes, and sends nothing until it holds it again.
{%- else %}

RabbitMQ: an exclusive queue, which only one connection can declare; the broker drops it when
that connection closes, so a beat that stops or dies frees it at once. A beat that lost its
connection sends nothing until it holds the queue again. Each loop renews the lock with a
passive declare of the queue: a round trip that proves the connection (and so the lock) is
still ours and reads the broker's heartbeats (a connection that only sends counted them as
missed and dropped the lock every two heartbeats).
{%- endif %}
"""

from __future__ import annotations

{% if broker == 'rabbitmq' -%}
import contextlib
{% endif -%}
import logging
{%- if broker == 'redis' %}
import uuid
{%- endif %}
from typing import Any

from celery import Celery
{%- if broker == 'rabbitmq' %}
from kombu import Connection, Queue
{%- endif %}

logger = logging.getLogger(__name__)


def lock_name(app: Celery[Any]) -> str:
    """The lock's {{ 'key' if broker == 'redis' else 'queue' }} in the broker."""
    return f"{app.main}{{ ':' if broker == 'redis' else '.' }}beat-lock"
{%- if broker == 'redis' %}


# Renew only if we still hold it; delete only our own lock.
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class BeatLock:
    """The beat lock in the broker's Redis; `ttl` seconds without a renewal frees it."""

    def __init__(self, app: Celery[Any], ttl: float) -> None:
        self.app = app
        self.key = lock_name(app)
        self.token = uuid.uuid4().hex
        self.ttl_ms = int(ttl * 1000)
        self.held = False
        self._connection: Any = None

    def _client(self) -> Any:
        if self._connection is None:
            self._connection = self.app.connection_for_write()
        return self._connection.default_channel.client

    def acquire(self) -> bool:
        """Take or renew the lock; False while another beat holds it or the broker is away."""
        try:
            client = self._client()
            if self.held and client.eval(_RENEW, 1, self.key, self.token, self.ttl_ms):
                return True
            self.held = bool(client.set(self.key, self.token, nx=True, px=self.ttl_ms))
        except Exception as error:  # broker away: hold nothing, try again on the next loop
            logger.warning("beat lock %s: %s", self.key, error)
            self._reset()
        return self.held

    def release(self) -> None:
        if self.held:
            try:
                self._client().eval(_RELEASE, 1, self.key, self.token)
            except Exception as error:  # expires on its own
                logger.warning("beat lock %s not released: %s", self.key, error)
        self._reset()

    def _reset(self) -> None:
        self.held = False
        if self._connection is not None:
            self._connection.release()
            self._connection = None


def lock_held(app: Celery[Any]) -> bool:
    """Whether some beat holds the lock: it renews it on every loop, so a beat that stopped or
    stalled for the lock's ttl holds it no more (the metrics exporter's beat signal)."""
    with app.connection_for_read() as connection:
        channel: Any = connection.default_channel
        return bool(channel.client.exists(lock_name(app)))
{%- else %}


class BeatLock:
    """The beat lock as an exclusive queue; held while this beat's connection lives."""

    def __init__(self, app: Celery[Any], ttl: float) -> None:
        self.app = app
        self.queue = lock_name(app)
        # Heartbeats on the connection: a holder that stops calling acquire() loses the queue.
        self.heartbeat = max(2.0, ttl)
        self.held = False
        self._connection: Connection | None = None
        self._channel: Any = None

    def acquire(self) -> bool:
        """Take the lock or keep it alive; False while another beat holds it or the broker is away."""
        try:
            if self.held and self._connection is not None:
                self._channel.queue_declare(self.queue, passive=True)
                self._connection.heartbeat_check()
                return True
            self._connection = self.app.connection_for_write(heartbeat=self.heartbeat)
            self._channel = self._connection.channel()
            Queue(self.queue, exclusive=True, auto_delete=True).bind(self._channel).declare()
            self.held = True
        except Exception as error:  # RESOURCE_LOCKED (another beat), or broker away
            if "RESOURCE_LOCKED" not in str(error) and "locked queue" not in str(error):
                logger.warning("beat lock %s: %s", self.queue, error)
            self._reset()
        return self.held

    def release(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.held = False
        self._channel = None
        if self._connection is not None:
            with contextlib.suppress(Exception):  # already gone
                self._connection.close()
            self._connection = None


def lock_held(app: Celery[Any]) -> bool:
    """Whether some beat holds the lock: the queue lives as long as the holder's connection, which
    the broker drops after two missed heartbeats of a stopped or stalled beat (the metrics
    exporter's beat signal)."""
    with app.connection_for_read() as connection:
        channel: Any = connection.default_channel
        try:
            channel.queue_declare(lock_name(app), passive=True)
        except connection.channel_errors:  # NOT_FOUND: no beat holds it
            return False
        return True
{%- endif %}
