"""Bulk enqueue: many calls of one task, published in chunks instead of one round trip each.

    from {{ package_path }} import enqueue_many
    ids = enqueue_many(process_document, ((doc_id,) for doc_id in doc_ids))

Each message is the one `task.apply_async(args, kwargs)` publishes (Celery builds it: protocol 2,
headers, the task's route, JSON), so any worker runs it and `AsyncResult(id)` fetches its result.
Redis: one pipeline per chunk, each message written as kombu writes it. RabbitMQ: one channel in confirm mode;
each chunk is published, then RabbitMQ's confirmations are awaited, so a chunk counts as accepted
only when RabbitMQ has every message of it. Other transports (memory:// in tests): one by one.
`enqueue_stream` yields the ids chunk by chunk and holds one chunk in memory at a time;
`enqueue_many` collects them. `enqueue_chord` sends a chord's header this way: the calls, then
one `body` call with the list of their results, once every call finished (workflows.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import islice, repeat
from typing import Any, NamedTuple

from celery import Signature, Task
from celery.result import AsyncResult, GroupResult
from celery.utils.saferepr import saferepr
{%- if broker == 'redis' %}
from kombu.serialization import dumps
from kombu.transport.redis import Channel as RedisChannel
{%- endif %}
from kombu.utils.uuid import uuid

from .task_base import SENT_AT

CHUNK_SIZE = 1000
Call = tuple[Sequence[Any], Mapping[str, Any]]  # positional and keyword arguments of one call


class EnqueueError(RuntimeError):
    """A bulk failed mid-way (the broker, or an argument). The first `accepted` calls (their ids:
    `ids`) are queued; the chunk that failed may be partly queued; nothing after it was sent."""

    def __init__(self, task: str, accepted: int, ids: list[str], cause: BaseException) -> None:
        reason = repr(cause)
        root = cause
        while root.__cause__ is not None:
            root = root.__cause__
        if root is not cause:
            reason += f" from {root!r}"
        super().__init__(
            f"{task}: {accepted} call(s) accepted, then {reason}; the chunk being sent may be "
            "partly queued, nothing after it was sent"
        )
        self.accepted = accepted
        self.ids = ids


def enqueue_many(
    task: Task,  # type: ignore[type-arg]
    arguments: Iterable[Sequence[Any]],
    keyword_arguments: Iterable[Mapping[str, Any]] | None = None,
    *,
    chunk_size: int = CHUNK_SIZE,
) -> list[str]:
    """Send `task` once per item of `arguments` (tuples of positional arguments), with the matching
    item of `keyword_arguments` if given; return the task ids in order. Raises EnqueueError, with
    the ids accepted so far, when the broker fails mid-way."""
    ids: list[str] = []
    try:
        for task_id in enqueue_stream(task, arguments, keyword_arguments, chunk_size=chunk_size):
            ids.append(task_id)
    except EnqueueError as error:
        error.ids = ids
        raise
    return ids


def enqueue_stream(
    task: Task,  # type: ignore[type-arg]
    arguments: Iterable[Sequence[Any]],
    keyword_arguments: Iterable[Mapping[str, Any]] | None = None,
    *,
    chunk_size: int = CHUNK_SIZE,
) -> Iterator[str]:
    """enqueue_many, yielding each chunk's ids once the broker accepted the chunk."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r}: expected a whole number >= 1")
    if keyword_arguments is None:
        calls: Iterator[Call] = zip(arguments, repeat({}))
    else:  # a length mismatch raises ValueError, as an EnqueueError with what was accepted
        calls = zip(arguments, keyword_arguments, strict=True)
    accepted = 0
    with _sender(task) as send:
        while True:
            try:
                chunk = list(islice(calls, chunk_size))
                if not chunk:
                    return
                ids = send(chunk)
            except Exception as error:
                raise EnqueueError(task.name, accepted, [], error) from error
            accepted += len(ids)
            yield from ids


class ChordSent(NamedTuple):
    """What enqueue_chord sent: the body's result, and the calls' results (the chord's header).
    `result.parent` is left unset: `get()` would read every call's state on each wait interval
    (Celery checks the parents for errors), thousands of round trips a second for a big batch."""

    result: AsyncResult[Any]
    header: GroupResult


def enqueue_chord(
    task: Task,  # type: ignore[type-arg]
    arguments: Iterable[Sequence[Any]],
    body: Signature[Any],
    keyword_arguments: Iterable[Mapping[str, Any]] | None = None,
    *,
    chunk_size: int = CHUNK_SIZE,
) -> ChordSent:
    """`chord(task.s(*args, **kwargs) for each call)(body)`, the calls sent as enqueue_many sends
    them: `body` runs once, with the list of the calls' results in call order, after the last
    call finished; if a call fails, `body` fails with a ChordError naming it. Returns the body's
    AsyncResult and the calls' GroupResult (ChordSent). The result backend keeps one entry per
    call, so the calls are held in memory (not streamed). Raises EnqueueError as enqueue_many
    does; the body then never runs."""
    app = task.app
    app.backend.ensure_chords_allowed()  # rpc:// and no backend: NotImplementedError, Celery's words
    if keyword_arguments is None:
        calls: list[Call] = [(args, {}) for args in arguments]
    else:
        calls = list(zip(arguments, keyword_arguments, strict=True))
    body = body.clone()
    group_id = uuid()
    ids = [uuid() for _ in calls]
    body_result = body.freeze(group_id=group_id)
    header = GroupResult(group_id, [app.AsyncResult(task_id) for task_id in ids], app=app)
    if not calls:  # as Celery does for an empty header
        body.apply_async(([],))
        return ChordSent(body_result, header)
    # What Celery does before it sends a chord's header: the backend learns the group (Redis: its
    # size; key-value stores: the group's results; others: a chord_unlock task that polls it).
    app.backend.apply_chord((group_id, header.results), body)
    app.backend.set_chord_size(group_id, len(calls))
    options = {"group_id": group_id, "chord": body}
    sent = 0
    with _sender(task, options, iter(ids)) as send:
        while sent < len(calls):
            try:
                sent += len(send(calls[sent : sent + chunk_size]))
            except Exception as error:
                raise EnqueueError(task.name, sent, ids[:sent], error) from error
    return ChordSent(body_result, header)


def argument_repr(value: Any, maxsize: int, maxlevels: int) -> str:
    """Celery's saferepr(value, maxsize, maxlevels=...), the text of argsrepr and kwargsrepr. For
    short plain values (str without quote or backslash, numbers, None, shallow tuples, lists and
    dicts) it is repr(value), which is many times faster; the generated tests compare the two."""
    if _plain(value, maxlevels - 1):
        text = repr(value)
        if len(text) < maxsize // 2:  # far from saferepr's truncation
            return text
    return str(saferepr(value, maxsize, maxlevels=maxlevels))


def _plain(value: Any, depth: int) -> bool:
    kind = type(value)
    if kind is str:
        return value.isprintable() and "'" not in value and "\\" not in value
    if value is None or kind in (int, float, bool):
        return True
    if depth > 0 and kind in (tuple, list):
        return all(_plain(item, depth - 1) for item in value)
    if depth > 0 and kind is dict:
        return all(
            type(key) is str and _plain(key, 0) and _plain(item, depth - 1)
            for key, item in value.items()
        )
    return False


class _Capture:
    """Stands in for a producer in one apply_async call: records what Celery would publish."""

    def __init__(self, producer: Any) -> None:
        self.connection = producer.connection
        self.channel = producer.channel
        self.calls: list[tuple[Any, dict[str, Any]]] = []

    def publish(self, body: Any, **options: Any) -> None:
        self.calls.append((body, options))


class _Publisher:
    """Publishes calls of one task as apply_async would: Celery makes the first message (route,
    headers, properties); the others are that message with their own id and arguments."""

    def __init__(
        self,
        task: Task,  # type: ignore[type-arg]
        producer: Any,
        extra: Mapping[str, Any] | None = None,
        ids: Iterator[str] | None = None,
    ) -> None:
        self.task = task
        self.producer = producer
        self.extra = dict(extra or {})  # apply_async options, e.g. a chord's group and body
        self.grouped = "group_id" in self.extra  # members of a group carry their index in it
        self.next_id = ids.__next__ if ids is not None else uuid
        self.sent = 0
        self.options: dict[str, Any] = {}
        self.repr_size = (task.app.amqp.argsrepr_maxsize, task.app.amqp.kwargsrepr_maxsize)
        self.repr_levels = task.app.conf.task_repr_maxlevels
        # apply_async's check of the arguments against the task's signature (Task.typing).
        self.check = getattr(task, "__header__", None) if task.typing else None

    def learn(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        capture: Any = _Capture(self.producer)
        self.task.apply_async(tuple(args), dict(kwargs), producer=capture, **self.extra)
        # The task's message; a task-sent event, if any, is left out of a bulk.
        body, options = next(call for call in capture.calls if "task" in call[1]["headers"])
        self.embed = body[2]
        self.headers = dict(options["headers"])
        # Outside a task, Celery makes each task its own root.
        self.own_root = self.headers.get("root_id") == self.headers["id"]
        self.options = {**options, "retry": False}  # a failure ends the bulk, with a report

    def publish(self, chunk: list[Call]) -> list[str]:
        ids = []
        sent_at = time.time()  # one stamp per chunk (task_base.SENT_AT)
        for args, kwargs in chunk:
            if not self.options:
                self.learn(args, kwargs)
            elif self.check is not None:
                self.check(*args, **kwargs)
            task_id = self.next_id()
            headers = {
                **self.headers,
                "id": task_id,
                "root_id": task_id if self.own_root else self.headers.get("root_id"),
                "argsrepr": argument_repr(args, self.repr_size[0], self.repr_levels),
                "kwargsrepr": argument_repr(kwargs, self.repr_size[1], self.repr_levels),
                SENT_AT: sent_at,
            }
            if self.grouped:  # the order of results the chord's body gets
                headers["group_index"] = self.sent
            options = {**self.options, "headers": headers, "correlation_id": task_id}
            self.producer.publish((list(args), dict(kwargs), self.embed), **options)
            # The first publish declared the queue; copying it for every message costs a fifth.
            self.options["declare"] = None
            self.sent += 1
            ids.append(task_id)
        return ids


@contextmanager
def _quiet_results(task: Task) -> Iterator[None]:  # type: ignore[type-arg]
{%- if result_backend == 'redis' %}
    """The Redis result backend subscribes to each task's result channel as it is sent, and
    unsubscribes when its AsyncResult goes away: two round trips per task. `.get()` subscribes
    when it is called, so the bulk skips both (on this thread's backend only)."""
    from celery.backends.redis import RedisBackend

    backend: Any = task.app.backend
    if not isinstance(backend, RedisBackend):  # e.g. cache+memory:// in tests
        yield
        return
    backend = backend.__dict__  # this thread's backend object, not its class
    backend["on_task_call"] = _nothing
    backend["remove_pending_result"] = _nothing
    try:
        yield
    finally:
        del backend["on_task_call"], backend["remove_pending_result"]
{%- else %}
    """Nothing to quiet: this backend subscribes to nothing per task."""
    yield
{%- endif %}
{%- if result_backend == 'redis' %}


def _nothing(*args: Any) -> None:
    return None
{%- endif %}


@contextmanager
def _sender(
    task: Task,  # type: ignore[type-arg]
    extra: Mapping[str, Any] | None = None,
    ids: Iterator[str] | None = None,
) -> Iterator[Any]:
    with task.app.connection_for_write() as connection:
        amqp = connection.transport.driver_type == "amqp"
    sender = _confirming_sender if amqp else _batching_sender
    with sender(task, extra, ids) as send, _quiet_results(task):
        yield send


@contextmanager
def _batching_sender(
    task: Task,  # type: ignore[type-arg]
    extra: Mapping[str, Any] | None,
    ids: Iterator[str] | None,
) -> Iterator[Any]:
    """Redis: each chunk in one pipeline, executed when the chunk is complete."""
    with task.app.producer_or_acquire() as producer:
{%- if broker == 'redis' %}
        if _RedisWriter.usable(producer):
            writer = _RedisWriter(producer)
            direct = _Publisher(task, writer, extra, ids)

            def write(chunk: list[Call]) -> list[str]:
                with producer.batch(max_size=len(chunk) + 1):  # what goes through kombu
                    sent = direct.publish(chunk)
                writer.flush()
                return sent

            yield write
            return
{%- endif %}
        publisher = _Publisher(task, producer, extra, ids)

        def send(chunk: list[Call]) -> list[str]:
            with producer.batch(max_size=len(chunk) + 1):
                return publisher.publish(chunk)

        yield send


{%- if broker == 'redis' %}


class _RedisWriter:
    """Stands in for the producer of a Redis bulk and writes each message as kombu would, without
    kombu's path per message (Producer.publish, prepare, route through the exchange; 15 % more
    messages per second). kombu stores a message as one JSON document (base64 body, headers, properties) pushed on the
    queue's list. The bulk's first message goes through kombu, which shows that document and the
    queues it went to; every other one is the document with its own body, headers, correlation
    id and delivery tag, given to kombu's own Channel._put (priority list, encoding), whose
    commands run in one pipeline per chunk, without retries, as kombu's batches do."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer
        self.connection = producer.connection
        self.channel = producer.channel
        # Where kombu put the first message; empty: every message goes through kombu.
        self.queues: list[str] | None = None
        self.commands: list[tuple[str, tuple[Any, ...]]] = []

    @staticmethod
    def usable(producer: Any) -> bool:
        channel = producer.channel
        # supports_batch_publish: no retrying client, which could write a pipeline twice.
        safe = getattr(channel, "supports_batch_publish", False)
        return isinstance(channel, RedisChannel) and bool(safe)

    def add(self, name: str, *args: Any) -> None:  # kombu's _put writes through this
        self.commands.append((name, args))

    def publish(self, body: Any, **options: Any) -> None:
        if not self.queues:
            if self.queues is None:
                self.learn(body, options)
            else:
                self.producer.publish(body, **options)
            return
        _, _, data = dumps(body, serializer=self.serializer)
        encoded, _ = self.channel.encode_body(data, self.channel.body_encoding)
        properties = {
            **self.properties,
            "correlation_id": options["correlation_id"],
            "delivery_tag": self.channel._next_delivery_tag(),
        }
        message = {**self.message, "body": encoded, "headers": options["headers"]}
        message["properties"] = properties
        for queue in self.queues:
            self.channel._put(queue, message, _publish_batch=self)

    def learn(self, body: Any, options: dict[str, Any]) -> None:
        channel = self.channel
        put = channel._put
        seen: list[tuple[str, dict[str, Any]]] = []

        def record(queue: str, message: dict[str, Any], **kwargs: Any) -> Any:
            seen.append((queue, message))
            return put(queue, message, **kwargs)

        channel._put = record
        try:
            self.producer.publish(body, **options)
        finally:
            del channel._put  # the class's method again
        # A fanout exchange, or compression (a header per message): stay on kombu's path.
        if not seen or options.get("compression"):
            self.queues = []
            return
        self.queues = [queue for queue, _ in seen]
        first = seen[0][1]
        self.message = {k: v for k, v in first.items() if k not in ("body", "headers")}
        self.properties = dict(first["properties"])
        self.serializer = options.get("serializer")

    def flush(self) -> None:
        if not self.commands:
            return
        commands, self.commands = self.commands, []
        with (
            self.channel.conn_or_acquire() as client,
            client.pipeline(transaction=False) as pipeline,
        ):
            for name, args in commands:
                getattr(pipeline, name)(*args)
            pipeline.execute()
{%- endif %}


# Seconds to wait for RabbitMQ's confirmations of a chunk.
CONFIRM_TIMEOUT = 30


@contextmanager
def _confirming_sender(
    task: Task,  # type: ignore[type-arg]
    extra: Mapping[str, Any] | None,
    ids: Iterator[str] | None,
) -> Iterator[Any]:
    """RabbitMQ: a connection of its own without a wait per message; its channel in confirm
    mode; after each chunk, wait until RabbitMQ confirmed every message published on it so far
    (delivery tags count the messages of the channel: 1, 2, ...)."""
    app = task.app
    with app.connection_for_write(transport_options={"confirm_publish": False}) as connection:
        channel: Any = connection.channel()
        channel.confirm_select()
        state = {"published": 0, "confirmed": 0, "refused": 0}

        def on_ack(delivery_tag: int, multiple: bool) -> None:
            state["confirmed"] = max(state["confirmed"], delivery_tag)

        def on_nack(delivery_tag: int, multiple: bool, *rest: Any) -> None:
            state["refused"] = state["refused"] or delivery_tag

        channel.events["basic_ack"].add(on_ack)
        channel.events["basic_nack"].add(on_nack)
        publisher = _Publisher(task, app.amqp.Producer(channel), extra, ids)

        def send(chunk: list[Call]) -> list[str]:
            ids = publisher.publish(chunk)
            state["published"] += len(ids)  # a bulk publishes task messages only
            while state["confirmed"] < state["published"] and not state["refused"]:
                connection.drain_events(timeout=CONFIRM_TIMEOUT)
            if state["refused"]:
                raise RuntimeError(f"RabbitMQ refused delivery {state['refused']} (basic.nack)")
            return ids

        yield send
