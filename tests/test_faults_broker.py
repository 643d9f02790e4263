"""Broker faults and poison messages: the rendered worker survives a broker that goes away, and
discards messages it must never run.

- Redis broker (its own redis-server, AOF fsynced on every write), stopped with SIGTERM or SIGKILL
  and started again while a publisher sends a task every 0.1 s: no accepted task is lost, and the
  worker consumes again.
- The same with a task running at that instant, and with Redis up but its connections killed: the
  task runs once and the worker serves on (the generated redis_transport.py; kombu 5.7 alone
  crashed the worker, or ran the task twice).
- A backlog accepted before a SIGKILL comes back from the AOF, and a worker started while Redis is
  down waits for it (broker_connection_retry_on_startup) and consumes it.
- RabbitMQ (the machine's shared server, never restarted): the server closes every connection of
  the stack's vhost, with the worker idle or running a task; it reconnects and loses nothing.
- Poison messages written straight to the queue with kombu (pickle, malformed JSON, an unregistered
  task), on both brokers: logged and discarded, never run, not left in the queue, and the next valid
  task runs.

The recorder of `fault_probe` lives on the session's private Redis, never on a restarted broker.
"""

from __future__ import annotations

import pickle
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from .support import tools
from .support.faults import Figures, Recorder, copy_with_tasks
from .support.faults_broker import (
    Publisher,
    RestartableRedis,
    close_vhost_connections,
    malformed_json_message,
    pickle_message,
    ping_from_new_process,
    publish_raw,
    rabbit_queue_messages,
    unacked_count,
    unknown_task_message,
    vhost_connections,
    vhost_of,
    wait_for_growth,
    wait_for_new_work,
)
from .support.faults_worker import send_calls
from .support.processes import ManagedProcess, wait_until
from .support.rabbitmq_node import PrivateRabbitNode
from .support.render import DEFAULTS, RABBITMQ, Project
from .support.stack import Namespace, RabbitNamespaces, RedisNamespaces, Stack

pytestmark = pytest.mark.timeout(180)

# Short limits and delays keep the visibility timeout short: 1 + 2 x 30 + 15 = 76 s (config.py).
WORKER_ENV = {"CELERY_TASK_TIME_LIMIT": "30", "CELERY_TASK_SOFT_TIME_LIMIT": "25"}
REDIS_WORKER_ENV = {**WORKER_ENV, "CELERY_TASK_MAX_DELAY": "1"}
OUTAGE_SECONDS = 1.0
RESUME_TIMEOUT = 60.0
DRAIN_TIMEOUT = 30.0
CONNECTION_LOST = "Connection to broker lost"  # the consumer's line before it reconnects


@pytest.fixture(scope="module")
def redis_project(
    render_project: Callable[..., Project], tmp_path_factory: pytest.TempPathFactory
) -> Project:
    return copy_with_tasks(render_project(**DEFAULTS), tmp_path_factory.mktemp("fb") / "p")


@pytest.fixture(scope="module")
def rabbit_project(
    render_project: Callable[..., Project], tmp_path_factory: pytest.TempPathFactory
) -> Project:
    return copy_with_tasks(render_project(**RABBITMQ), tmp_path_factory.mktemp("fb") / "p")


@pytest.fixture
def recorder(redis_namespaces: RedisNamespaces) -> Iterator[Recorder]:
    """fault_probe's recorder, on a database of the session's private Redis."""
    recorder = Recorder(redis_namespaces.new().broker_url)
    yield recorder
    recorder.close()


@pytest.fixture
def own_broker(
    tmp_path: Path, redis_namespaces: RedisNamespaces, redis_project: Project, redis_server: str
) -> Iterator[tuple[RestartableRedis, Stack]]:
    """A restartable Redis broker (not started yet; each server kind in turn) and a stack on it;
    results stay on the session's private Redis. Teardown stops the stack's processes with the
    broker up, then Redis."""
    broker = RestartableRedis(tmp_path / "broker", binary=redis_server)
    namespace = Namespace(broker.url(0), redis_namespaces.new().result_backend)
    stack = Stack(redis_project, namespace, tmp_path / "stack")
    stack.log_dir.mkdir()
    yield broker, stack
    if not broker.running():
        broker.start()  # a worker stops at once with its broker up, instead of retrying
    stack.close()
    broker.close()


def assert_none_lost(
    figure: Any, accepted: set[str], executions: list[str], processes: list[ManagedProcess]
) -> None:
    missing = sorted(accepted - set(executions))
    logs = "\n".join(f"--- {p.name}\n{p.log()[-3000:]}" for p in processes)
    assert figure.lost == 0, f"lost {missing[:20]} of {len(accepted)} accepted\n{logs}"


def wait_done_or_exited(recorder: Recorder, keys: set[str], worker: ManagedProcess) -> list[str]:
    """Wait until every key finished, or the worker exited (then waiting longer is pointless)."""
    wait_until(lambda: keys <= set(recorder.finished()) or not worker.running(), DRAIN_TIMEOUT)
    return recorder.finished()


def wait_for_key_or_exit(
    recorder: Recorder, key: str, worker: ManagedProcess, since: float
) -> float | None:
    """Seconds from `since` until `key` finished; None if the worker exited first."""
    wait_until(lambda: key in recorder.finished() or not worker.running(), DRAIN_TIMEOUT, 0.02)
    return time.monotonic() - since if key in recorder.finished() else None


# --- Redis broker restarts --------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_redis_broker_restart_loses_no_accepted_task(
    signum: int,
    own_broker: tuple[RestartableRedis, Stack],
    recorder: Recorder,
    fault_figures: Figures,
) -> None:
    broker, stack = own_broker
    broker.start()
    worker = stack.worker(FAULT_RECORDER_URL=recorder.url, **REDIS_WORKER_ENV)
    publisher = Publisher(stack, prefix=f"restart-{signal.Signals(signum).name.lower()}")
    # The stream runs: tasks are accepted and finished before the broker goes.
    wait_until(lambda: len(recorder.finished()) >= 5, 30, interval=0.05)

    # The worker is idle at the instant Redis goes (a task in flight then is the next test's case,
    # made deterministic there): pause the stream, let it drain, and resume it right after the kill.
    recorder.wait_for(set(publisher.pause()), DRAIN_TIMEOUT)
    wait_until(lambda: unacked_count(broker.url(0)) == 0, 10, interval=0.02)
    broker.kill(signum)
    publisher.resume()
    time.sleep(OUTAGE_SECONDS)  # publishes are refused meanwhile; the worker retries its connection
    up = broker.start()
    before = len(recorder.finished())
    resume, _ = wait_for_growth(recorder, up, before, RESUME_TIMEOUT)

    # Keep streaming a little after the worker came back, then drain.
    publisher.wait_accepted(len(publisher.accepted()) + 10)
    accepted = publisher.stop()
    executions = recorder.wait_for(accepted, DRAIN_TIMEOUT)
    figure = fault_figures.add(
        f"{broker.server} broker {signal.Signals(signum).name} + restart (AOF always)",
        accepted,
        executions,
        resume_seconds=resume,
        note=f"stream every 0.1 s, idle at the kill; {publisher.refused()} publishes refused",
    )

    assert publisher.refused() > 0, "the publisher never saw the broker down"
    assert CONNECTION_LOST in worker.log()
    assert worker.running(), worker.log()[-3000:]
    assert_none_lost(figure, accepted, executions, [worker, publisher.process])
    assert stack.queue_length("default") == 0
    assert wait_until(lambda: unacked_count(broker.url(0)) == 0, 10)


def kill_client_connections(broker_url: str) -> int:
    """Close every client connection of a Redis that stays up (a proxy or network fault)."""
    client = redis.Redis.from_url(broker_url)
    try:
        return int(client.client_kill_filter(_type="normal", skipme=True))
    finally:
        client.close()


@pytest.mark.parametrize("fault", ["restart", "connections-killed"])
def test_a_task_running_through_a_lost_redis_connection_runs_once_and_the_worker_goes_on(
    fault: str,
    own_broker: tuple[RestartableRedis, Stack],
    recorder: Recorder,
    fault_figures: Figures,
) -> None:
    """A 3 s task runs, held unacknowledged (acks_late), while Redis restarts (SIGTERM, 1 s down)
    or, Redis up, its connections are killed. With kombu 5.7 alone the worker exited
    ("Unrecoverable error: AttributeError ... 'hostname'") on a restart, and ran the task twice
    when Redis stayed up; redis_transport.py keeps the message while the task runs and acks it
    through the new connection: one execution, the worker serves on, nothing left unacked."""
    broker, stack = own_broker
    broker.start()
    worker = stack.worker(FAULT_RECORDER_URL=recorder.url, **REDIS_WORKER_ENV)
    stack.probe("send", task="fault_probe", args=["running", 3.0])
    wait_until(lambda: unacked_count(broker.url(0)) == 1, 30, interval=0.05)

    if fault == "restart":
        broker.kill(signal.SIGTERM)
        time.sleep(OUTAGE_SECONDS)  # an outage of a known length, not a condition
        up = broker.start()
    else:
        assert kill_client_connections(broker.url(0)) >= 1
        up = time.monotonic()
    stack.probe("send", task="fault_probe", args=["after", 0.0])
    resume = wait_for_key_or_exit(recorder, "after", worker, up)
    wait_done_or_exited(recorder, {"running", "after"}, worker)
    stack.reset_control()
    # A copy given back to the queue at the loss would be received by now: let it finish too.
    wait_until(lambda: not worker.running() or not stack.active_tasks(worker), 30)
    executions = recorder.finished()
    figure = fault_figures.add(
        f"{broker.server} broker "
        + ("SIGTERM + restart" if fault == "restart" else "up, its connections killed")
        + ", a task running",
        {"running", "after"},
        executions,
        resume_seconds=resume,
        note="worker alive, running task acked after the reconnect"
        if worker.running()
        else "worker EXITED",
    )

    assert worker.running(), worker.log()[-3000:]
    assert_none_lost(figure, {"running", "after"}, executions, [worker])
    assert figure.duplicated == 0, (executions, worker.log()[-3000:])
    received = stack.task_counts(worker).get(f"{stack.project.package_path}.tasks.fault_probe")
    assert received == 2, f"the worker received {received} fault_probe messages"
    assert unacked_count(broker.url(0)) == 0, "a message is left for the visibility timeout"
    assert stack.queue_length("default") == 0


def test_worker_started_while_the_redis_broker_is_down_gets_the_persisted_backlog(
    own_broker: tuple[RestartableRedis, Stack],
    recorder: Recorder,
    fault_figures: Figures,
) -> None:
    broker, stack = own_broker
    broker.start()
    # A backlog accepted while no worker runs, then Redis is SIGKILLed: only the AOF (fsync always)
    # keeps it, since nothing is written at exit.
    backlog_publisher = Publisher(stack, prefix="backlog")
    backlog_publisher.wait_accepted(20)
    backlog = backlog_publisher.stop()
    assert stack.queue_length("default") == len(backlog)
    broker.kill(signal.SIGKILL)

    worker = stack.worker(wait=False, FAULT_RECORDER_URL=recorder.url, **REDIS_WORKER_ENV)
    publisher = Publisher(stack, prefix="late-broker")
    # The worker is up and retrying, not exited: broker_connection_retry_on_startup.
    # kombu names the transport class, not the URL's scheme (config.py's broker_transport).
    retrying = f"Cannot connect to {stack.project.package_path}.redis_transport:Transport://"
    wait_until(lambda: retrying in worker.log(), 30, interval=0.1)
    wait_until(lambda: publisher.refused() >= 3, 30, interval=0.1)
    assert worker.running(), worker.log()[-3000:]
    assert recorder.finished() == []

    up = broker.start()
    resume, _ = wait_for_growth(recorder, up, 0, RESUME_TIMEOUT)
    publisher.wait_accepted(len(publisher.accepted()) + 10)
    accepted = backlog | publisher.stop()
    executions = recorder.wait_for(accepted, DRAIN_TIMEOUT)
    figure = fault_figures.add(
        f"{broker.server} SIGKILL with a backlog; worker started while it is down",
        accepted,
        executions,
        resume_seconds=resume,
        note=f"{len(backlog)} queued before the kill; resume: broker up -> first task done",
    )

    assert_none_lost(figure, accepted, executions, [worker, publisher.process])
    stack.wait_ready(worker, timeout=10)
    assert stack.queue_length("default") == 0


# --- RabbitMQ: connections closed by the server ----------------------------------------------


def test_rabbitmq_connections_closed_by_the_server_lose_no_accepted_task(
    rabbit_project: Project,
    stack_factory: Callable[[Project], Stack],
    rabbit_namespaces: RabbitNamespaces,
    recorder: Recorder,
    fault_figures: Figures,
) -> None:
    # The machine's RabbitMQ is shared: close only this stack's connections, never restart it.
    rabbitmqctl = rabbit_namespaces.rabbitmqctl
    assert rabbitmqctl is not None
    stack = stack_factory(rabbit_project)
    vhost = vhost_of(stack.namespace.broker_url)
    worker = stack.worker(FAULT_RECORDER_URL=recorder.url, **WORKER_ENV)
    publisher = Publisher(stack, prefix="rabbit-close")
    wait_until(lambda: len(recorder.finished()) >= 5, 30, interval=0.05)

    closed = close_vhost_connections(rabbitmqctl, vhost)
    # Keys accepted from now on went through new connections.
    cut, first = time.monotonic(), len(publisher.accepted())
    resume = wait_for_new_work(recorder, publisher, cut, first, RESUME_TIMEOUT)
    publisher.wait_accepted(len(publisher.accepted()) + 10)
    accepted = publisher.stop()
    executions = recorder.wait_for(accepted, DRAIN_TIMEOUT)
    figure = fault_figures.add(
        "rabbitmq: server closes the vhost's connections",
        accepted,
        executions,
        resume_seconds=resume,
        note=f"{closed} connections closed; resume: close -> first task sent after it done",
    )

    assert closed >= 2, "expected the worker's and the publisher's connections"
    assert CONNECTION_LOST in worker.log()
    assert worker.running(), worker.log()[-3000:]
    assert_none_lost(figure, accepted, executions, [worker, publisher.process])
    assert vhost_connections(rabbitmqctl, vhost), "the worker did not reconnect"
    # The worker's control (pidbox) consumer is back too. The test process's pooled connection was
    # closed with the others, so the ping comes from a new process.
    assert ping_from_new_process(stack, stack.nodename(worker)), worker.log()[-3000:]
    assert stack.queue_length("default") == 0


def test_rabbitmq_connections_closed_while_a_task_runs(
    rabbit_project: Project,
    stack_factory: Callable[[Project], Stack],
    rabbit_namespaces: RabbitNamespaces,
    recorder: Recorder,
    fault_figures: Figures,
) -> None:
    rabbitmqctl = rabbit_namespaces.rabbitmqctl
    assert rabbitmqctl is not None
    stack = stack_factory(rabbit_project)
    worker = stack.worker(FAULT_RECORDER_URL=recorder.url, **WORKER_ENV)
    stack.probe("send", task="fault_probe", args=["running", 3.0])
    wait_until(lambda: "fault_probe[" in worker.log(), 30, interval=0.05)  # received: running

    close_vhost_connections(rabbitmqctl, vhost_of(stack.namespace.broker_url))
    cut = time.monotonic()
    stack.probe("send", task="fault_probe", args=["after", 0.0])
    resume = wait_for_key_or_exit(recorder, "after", worker, cut)
    executions = wait_done_or_exited(recorder, {"running", "after"}, worker)
    figure = fault_figures.add(
        "rabbitmq: connections closed, a task running",
        {"running", "after"},
        executions,
        resume_seconds=resume,
        note="running task terminated at the loss, re-delivered; resume incl. client start",
    )

    assert CONNECTION_LOST in worker.log()
    assert worker.running(), worker.log()[-3000:]
    assert_none_lost(figure, {"running", "after"}, executions, [worker])


# --- poison messages --------------------------------------------------------------------------

# What the worker logs for each poison, and what Celery does with the message (consumer.py):
# pickle -> ContentDisallowed -> on_invalid_task -> reject(requeue=False);
# malformed JSON -> DecodeError -> on_decode_error -> ack; unknown task -> on_unknown_task ->
# reject(requeue=False) and a NotRegistered failure stored for its id. Either way it is gone.
POISON_LOG = {
    "pickle": "Received invalid task message: Refusing to deserialize untrusted content of type "
    "pickle (application/x-python-serialize)",
    "malformed-json": "Can't decode message body: DecodeError(JSONDecodeError(",
    "unknown-task": "Received unregistered task of type 'no.such.task'",
}


# --- enqueue_many refused by the broker mid-way ------------------------------------------------


def test_enqueue_many_reports_what_redis_accepted_before_it_refused(
    own_broker: tuple[RestartableRedis, Stack],
) -> None:
    """Redis out of memory (maxmemory, noeviction) in the middle of a bulk of 20,000: enqueue_many
    raises EnqueueError with the calls of the chunks Redis took whole; those are queued, and at
    most one chunk more is partly queued."""
    broker, stack = own_broker
    broker.start()
    client = redis.Redis.from_url(broker.url(0))
    try:
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", str(used + 1_500_000))
        client.config_set("maxmemory-policy", "noeviction")
        out = stack.probe("bulk_run", count=20_000, chunk_size=500, results=False)
        queued = int(client.llen("default"))
    finally:
        client.close()
    error = out["error"]
    assert error is not None and error["type"] == "EnqueueError", out
    assert "OutOfMemoryError" in error["message"], error
    accepted = error["accepted"]
    assert accepted > 0 and accepted % 500 == 0 and len(out["ids"]) == accepted
    assert accepted <= queued < accepted + 500, (accepted, queued)


def test_enqueue_many_reports_what_rabbitmq_confirmed_before_it_refused(
    rabbit_project: Project,
    stack_factory: Callable[[Project], Stack],
    rabbit_namespaces: RabbitNamespaces,
) -> None:
    """A queue limited to 250 messages that refuses more (max-length, reject-publish): a bulk
    of 1,000 in chunks of 100 stops at the chunk RabbitMQ nacks in part (the third, or the
    fourth: a quorum queue enforces its limit a little late); EnqueueError reports the calls of
    the chunks before it, all of them queued, and nothing after that chunk was sent."""
    stack = stack_factory(rabbit_project)
    rabbitmqctl = rabbit_namespaces.rabbitmqctl
    assert rabbitmqctl is not None
    vhost = vhost_of(stack.namespace.broker_url)
    policy = '{"max-length": 250, "overflow": "reject-publish"}'
    subprocess.run(
        [rabbitmqctl, "set_policy", "-p", vhost, "--apply-to", "queues", "limit", "^default$",
         policy],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    out = stack.probe("bulk_run", count=1_000, chunk_size=100, results=False)
    error = out["error"]
    assert error is not None and error["type"] == "EnqueueError", out
    assert "basic.nack" in error["message"], error
    accepted = error["accepted"]
    assert accepted == len(out["ids"]), error
    # Quorum queues enforce the limit loosely (251 to 253 queued in most runs, the nack then in
    # the third chunk; once 300, the nack in the fourth) and report their length some seconds
    # late: every accepted call is queued, with part of the nacked chunk and nothing after it.
    assert accepted in (200, 300), error
    url = stack.namespace.broker_url

    def queued() -> int:
        return rabbit_queue_messages(rabbitmqctl, url, "default")

    wait_until(lambda: queued() >= max(accepted, 250), 30, interval=1)
    assert queued() < accepted + 100


# --- RabbitMQ: delays longer than the consumer timeout ----------------------------------------

CONSUMER_TIMEOUT_MS = 2000
URGENT = "high_priority"


@pytest.fixture
def short_timeout_stack(rabbit_project: Project, tmp_path: Path) -> Iterator[tuple[Any, Stack]]:
    """A private RabbitMQ node whose consumer_timeout is 2 s, checked every 0.5 s (3.10 checks on
    the channel tick, every 60 s by default), and a stack on it. The stack stops first."""
    tools.require("rabbitmq-node")
    node = PrivateRabbitNode({"consumer_timeout": str(CONSUMER_TIMEOUT_MS)}, channel_tick_ms=500)
    try:
        node.start()
        stack = Stack(rabbit_project, Namespace(node.url, "rpc://"), tmp_path / "stack")
        stack.log_dir.mkdir()
        yield node, stack
        stack.close()
    finally:
        node.stop()


def test_rabbitmq_delays_longer_than_the_consumer_timeout_run_once(
    short_timeout_stack: tuple[Any, Stack], recorder: Recorder, fault_figures: Figures
) -> None:
    """A countdown of 6 s, three times RabbitMQ's consumer_timeout, waits in RabbitMQ's delayed
    delivery queues, not unacknowledged in the worker: it runs once, the channel stays open (before
    1.2 RabbitMQ closed it with PRECONDITION_FAILED and the worker exited). A retry with a
    countdown returns to the queue it came from, and a countdown under 1 s still runs."""
    node, stack = short_timeout_stack
    worker = stack.worker(queues=URGENT, FAULT_RECORDER_URL=recorder.url, **WORKER_ENV)
    probe = "fault_probe"
    on_urgent = {"queue": URGENT}
    calls = [
        {"task": probe, "args": ["delayed"], "options": {**on_urgent, "countdown": 6}},
        {"task": probe, "args": ["sub-second"], "options": {**on_urgent, "countdown": 0.5}},
        {
            "task": probe,
            "args": ["retried"],
            "kwargs": {"retry_countdown": 4},
            "options": on_urgent,  # only on this queue: a retry sent elsewhere would never run
        },
    ]
    delay_queues = [name for name in node.queues() if name.startswith("celery_delayed_")]
    assert delay_queues, "the worker declared no delayed delivery queues"
    sent = time.monotonic()
    send_calls(stack, calls, {"FAULT_RECORDER_URL": recorder.url, **WORKER_ENV})

    # Where the 6 s countdown waits is sampled over AMQP (fast) on every poll; the unacked
    # counts of every queue by rabbitmqctl (an Erlang VM per call) once a second, twice within
    # any consumer_timeout that a held message would have to outlast.
    delayed: set[str] = set()
    samples: list[dict[str, tuple[int, int]]] = []
    next_sample = time.monotonic()

    def done_while_sampling() -> bool:
        nonlocal next_sample
        delayed.update(name for name, ready in node.ready(delay_queues).items() if ready)
        if "delayed" in recorder.finished():
            return True
        if time.monotonic() >= next_sample:
            next_sample = time.monotonic() + CONSUMER_TIMEOUT_MS / 2000
            samples.append(node.queues())
        return False

    wait_until(done_while_sampling, 30, interval=0.2)
    ran_after = time.monotonic() - sent
    keys = {"delayed", "sub-second", "retried:retried", "retried"}
    executions = recorder.wait_for(keys, DRAIN_TIMEOUT)
    figure = fault_figures.add(
        f"rabbitmq: countdown 6 s, consumer_timeout {CONSUMER_TIMEOUT_MS / 1000:.0f} s "
        "(private node)",
        keys,
        executions,
        note=f"ran after {ran_after:.1f} s, once; 0 unacked while delayed; retry and 0.5 s too",
    )

    assert figure.lost == 0 and figure.duplicated == 0, (executions, worker.log()[-3000:])
    assert ran_after >= 5, f"the countdown was not honoured: ran after {ran_after:.1f} s"
    assert all(unacked == 0 for queues in samples for _, unacked in queues.values()), samples
    assert samples, "no rabbitmqctl sample was taken while the countdown waited"
    assert delayed, "the countdown was never seen in RabbitMQ's delayed delivery queues"
    log = worker.log()
    assert "PRECONDITION_FAILED" not in log and CONNECTION_LOST not in log, log[-3000:]
    assert worker.running(), log[-3000:]


def messages_left(stack: Stack, rabbit_namespaces: Any) -> int:
    """Messages of the default queue still held by the broker: ready plus delivered-unacked."""
    if stack.project.broker == "redis":
        return stack.queue_length("default") + unacked_count(stack.namespace.broker_url)
    return rabbit_queue_messages(rabbit_namespaces.rabbitmqctl, stack.namespace.broker_url)


@pytest.mark.parametrize("kind", list(POISON_LOG))
@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_poison_message_is_discarded_and_the_worker_goes_on(
    broker: str,
    kind: str,
    request: pytest.FixtureRequest,
    stack_factory: Callable[[Project], Stack],
    recorder: Recorder,
    fault_figures: Figures,
    tmp_path: Path,
) -> None:
    project: Project = request.getfixturevalue(f"{broker.replace('rabbitmq', 'rabbit')}_project")
    rabbit = request.getfixturevalue("rabbit_namespaces") if broker == "rabbitmq" else None
    stack = stack_factory(project)
    fault_probe = f"{project.task_prefix}.fault_probe"
    marker = tmp_path / "pickle-payload-ran"
    poison_key = f"poison-{kind}"
    if kind == "pickle":
        message = pickle_message(fault_probe, marker)
        # The payload does what it claims when unpickled: a worker that loaded it would leave it.
        pickle.loads(message["body"])[0][0].close()
        assert marker.exists()
        marker.unlink()
    elif kind == "malformed-json":
        message = malformed_json_message(fault_probe, poison_key)
    else:
        message = unknown_task_message(poison_key)
    env = REDIS_WORKER_ENV if broker == "redis" else WORKER_ENV
    worker = stack.worker(FAULT_RECORDER_URL=recorder.url, **env)

    task_id = publish_raw(stack.namespace.broker_url, "default", message)
    wait_until(lambda: POISON_LOG[kind] in worker.log(), 30, interval=0.1)
    seen = time.monotonic()
    valid = [f"after-{kind}-{n}" for n in range(2)]
    for key in valid:
        stack.probe("send", task="fault_probe", args=[key, 0.0])
    executions = recorder.wait_for(set(valid), 30)
    figure = fault_figures.add(
        f"poison message: {kind} ({broker})",
        set(valid),
        executions,
        resume_seconds=time.monotonic() - seen,
        note="sent = valid tasks after the poison (2 client starts); poison discarded, never run",
    )

    assert figure.lost == 0, worker.log()[-3000:]
    assert poison_key not in executions
    assert not marker.exists(), "the pickle payload was deserialized in the worker"
    assert worker.running()
    # Nothing left behind: not queued, not held as unacknowledged for a later re-delivery.
    try:
        wait_until(lambda: messages_left(stack, rabbit) == 0, 10, interval=0.1)
    except TimeoutError:
        raise AssertionError(f"{messages_left(stack, rabbit)} messages left in default") from None
    if kind == "unknown-task" and project.result_backend == "redis":
        results = redis.Redis.from_url(stack.namespace.result_backend)
        stored = results.get(f"celery-task-meta-{task_id}")
        results.close()
        assert stored is not None and b'"FAILURE"' in stored and b"NotRegistered" in stored
