"""Scale-out: two workers on two "hosts" share the work, and one host's network is cut mid-task.

The hosts are Linux network namespaces made by the test (tests/support/netns.py): a broker host with
a private redis-server on its own address, and hosts `a` and `b`, each with a veth link to the
broker's bridge. Each host runs the rendered project's worker (`ip netns exec <ns> celery ...
worker`), with `fault_probe` (tests/support/faults.py) recording every finished execution and the
node that ran it. Needs root and `ip` (the `netns` tool).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from .support.faults import Figures, Recorder, copy_with_tasks
from .support.faults_worker import idle, send_probes, unacked_count
from .support.netns import Network
from .support.processes import ManagedProcess, wait_until
from .support.redis_server import redis_server_binary, start_private_redis
from .support.render import DEFAULTS, Project
from .support.stack import Namespace, Stack

pytestmark = [pytest.mark.tool("netns"), pytest.mark.timeout(180)]

# The smallest limits the configuration accepts (whole seconds >= 1, soft below hard): the
# visibility timeout is then CELERY_TASK_MAX_DELAY + 2 x CELERY_TASK_TIME_LIMIT + 15 = 20 s.
LIMITS = {
    "CELERY_TASK_TIME_LIMIT": "2",
    "CELERY_TASK_SOFT_TIME_LIMIT": "1",
    "CELERY_TASK_MAX_DELAY": "1",
}
VISIBILITY_TIMEOUT = 20
SWEEP = 5  # the workers give expired messages back every 5 s (celery_config.py)
SENT = 30
SECONDS = 0.4  # each task: well below the 1 s soft limit


@pytest.fixture
def network() -> Iterator[Network]:
    """Namespaces broker, a and b; deleted at teardown (after the stack's processes stopped)."""
    network = Network.create(["a", "b"])
    yield network
    network.close()


@pytest.fixture
def broker_redis(network: Network, tmp_path: Path) -> Iterator[str]:
    """A private redis-server in the broker's namespace, on the broker's address: its base URL."""
    workdir = tmp_path / "redis"
    workdir.mkdir()
    process, port = start_private_redis(
        workdir,
        host=network.broker.address,
        prefix=network.broker.exec_prefix(),
        # No password on a network only the test's namespaces are on: protected mode off.
        extra_args=("--timeout", "0", "--protected-mode", "no"),
    )
    yield f"redis://{network.broker.address}:{port}"
    process.stop()


@pytest.fixture
def hosts_stack(
    network: Network,
    broker_redis: str,
    render_project: Callable[..., Project],
    tmp_path: Path,
) -> Iterator[Stack]:
    """The defaults render with fault_probe, on the broker host's Redis (databases 0 and 1)."""
    project = copy_with_tasks(render_project(**DEFAULTS), tmp_path / "project")
    namespace = Namespace(f"{broker_redis}/0", f"{broker_redis}/1")
    stack = Stack(project, namespace, tmp_path / "stack")
    stack.log_dir.mkdir()
    yield stack
    stack.close()  # before the network fixture deletes the namespaces


@pytest.fixture
def recorder(broker_redis: str) -> Iterator[Recorder]:
    """Where fault_probe records its executions: database 2 of the broker host's Redis."""
    recorder = Recorder(f"{broker_redis}/2")
    yield recorder
    recorder.close()


def held_keys(stack: Stack) -> set[str]:
    """The fault_probe keys of the messages in kombu's `unacked` hash (delivered, not acked)."""
    client = redis.Redis.from_url(stack.namespace.broker_url)
    try:
        held = client.hvals("unacked")
    finally:
        client.close()
    keys = set()
    for raw in held:
        message = json.loads(raw)[0]
        args = json.loads(base64.b64decode(message["body"]))[0]
        keys.add(str(args[0]))
    return keys


@pytest.mark.long
def test_two_hosts_share_the_work_and_a_cut_off_host_loses_at_most_the_message_it_was_taking(
    network: Network,
    hosts_stack: Stack,
    recorder: Recorder,
    fault_figures: Figures,
) -> None:
    """Both hosts run tasks; host a's link goes down while it runs some. Host b runs the rest at
    once and, after the visibility timeout, the tasks host a held: nothing is lost, and a task
    runs twice only if host a held it at the cut (finished there, its ack never arrived)."""
    stack = hosts_stack
    env = {**LIMITS, "FAULT_RECORDER_URL": recorder.url}
    workers: dict[str, ManagedProcess] = {}
    for name, host in network.hosts.items():
        prefix = host.exec_prefix()
        workers[name] = stack.worker(f"host-{name}", wait=False, prefix=prefix, **env)
    for worker in workers.values():
        stack.wait_ready(worker)
    node = {name: stack.nodename(worker) for name, worker in workers.items()}

    keys = [f"hosts-{i:02}" for i in range(SENT)]
    started = time.monotonic()
    task_ids = send_probes(stack, dict.fromkeys(keys, SECONDS), env)

    def ran_on_each(count: int) -> bool:
        nodes = [ran_on for _, ran_on in recorder.nodes()]
        return all(nodes.count(node[name]) >= count for name in workers)

    wait_until(lambda: ran_on_each(3), 30, interval=0.05)
    assert stack.queue_length("default") > 0, "the work ended before the cut: send more"
    network.cut("a")
    cut = time.monotonic()
    before = recorder.nodes()  # host a can write no more

    # Host b alone runs what was still queued; what host a held stays unacknowledged.
    wait_until(lambda: idle(stack, workers["b"]), 30, interval=0.25)
    rest_done = time.monotonic() - cut
    held = held_keys(stack)
    assert rest_done < VISIBILITY_TIMEOUT - 5, "too late to tell host a's messages from b's"
    assert held, "host a held no task when its link was cut"
    # kombu's Redis transport takes a message off the list (BRPOP) and only then, from the worker,
    # records it among the unacknowledged: a cut between the two loses that message, on its way to
    # host a or in host a's memory. One BRPOP at a time per worker: at most one message. Nothing
    # else can bring back what is now neither run, nor queued, nor held.
    in_window = set(keys) - set(recorder.finished()) - held
    assert stack.queue_length("default") == 0 and len(in_window) <= 1, (in_window, held)
    received_by_a = workers["a"].log()
    assert not [key for key in in_window if task_ids[key] in received_by_a], "a received it"

    executions = recorder.wait_for(set(keys) - in_window, VISIBILITY_TIMEOUT + 2 * SWEEP + 30)
    resume = time.monotonic() - cut
    wait_until(lambda: idle(stack, workers["b"]) and unacked_count(stack) == 0, 30)
    executions = recorder.finished()
    workers["a"].stop(timeout=1)  # cut off, it cannot finish a warm shutdown
    after = recorder.nodes()[len(before) :]

    server = Path(redis_server_binary()).name
    spread = {name: [n for _, n in before].count(node[name]) for name in workers}
    figure = fault_figures.add(
        f"host link cut mid-task, {len(held)} held there (2 hosts, {server})",
        set(keys),
        executions,
        resume_seconds=resume,
        note=f"network namespaces; before the cut a ran {spread['a']}, b {spread['b']}; b ran the"
        f" queued rest in {rest_done:.1f} s and a's held tasks after the {VISIBILITY_TIMEOUT} s"
        f" visibility timeout + a {SWEEP} s sweep; a duplicate: held by a, done, ack cut;"
        f" {time.monotonic() - started:.0f} s in all"
        + (
            f"; lost: {len(in_window)} taken off the list by host a at the cut" if in_window else ""
        ),
    )
    lost = set(keys) - set(executions)
    assert lost == in_window, f"lost {lost - in_window}\n{workers['b'].log()[-3000:]}"
    assert all(spread.values()), f"the work did not spread over both hosts: {spread}"
    assert {ran_on for _, ran_on in after} == {node["b"]}, f"after the cut: {after}"
    assert held <= {key for key, _ in after}, "a task host a held did not run again on host b"
    duplicated = {key for key in keys if executions.count(key) > 1}
    assert duplicated <= held, f"run twice without being held by the cut host: {duplicated - held}"
    assert figure.duplicated <= len(held)
    # Redis gives the held messages back once older than the visibility timeout (counted from their
    # delivery, before the cut), at a sweep of host b: not before, and at most a sweep late.
    assert VISIBILITY_TIMEOUT - 5 < resume <= VISIBILITY_TIMEOUT + 2 * SWEEP + 5, resume
