"""Tools for tests/test_faults_worker.py: send many calls at once, look inside a running worker.

Run as a script inside a rendered project (cwd and environment of a Stack), it imports the project's
tasks module, so routing, serializer and broker settings are the project's own, and publishes calls:

    python faults_worker.py <package_path> '[{"task": "fault_probe", "args": [...]}, ...]'

It prints {"ids": [...]}: one process for a whole batch instead of one probe process per call.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .processes import ManagedProcess
    from .stack import Stack


def send_calls(
    stack: Stack, calls: list[dict[str, Any]], env: dict[str, str], timeout: float = 60
) -> list[str]:
    """Publish `calls` ({"task", "args", "kwargs", "options"}: apply_async's) through the
    project's own app; return task ids.

    `env` should be the worker's: Celery 5.7 copies the sender's task_time_limit and
    task_soft_time_limit into each message, and the worker applies those before its own.
    """
    args = [stack.python, __file__, stack.project.package_path, json.dumps(calls)]
    done = subprocess.run(
        args,
        cwd=stack.cwd,
        env=stack.env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"sending {len(calls)} calls failed:\n{done.stderr[-4000:]}")
    ids: list[str] = json.loads(done.stdout.strip().splitlines()[-1])["ids"]
    return ids


def send_probes(
    stack: Stack, probes: dict[str, float], env: dict[str, str], stubborn: bool = False
) -> dict[str, str]:
    """`fault_probe(key, seconds, stubborn)` for each {key: seconds}, in order; {key: task id}."""
    calls = [{"task": "fault_probe", "args": [key, s, stubborn]} for key, s in probes.items()]
    return dict(zip(probes, send_calls(stack, calls, env), strict=True))


def pool_pids(worker: ManagedProcess) -> set[int]:
    """PIDs of the worker's prefork pool processes (children of the main process)."""
    import psutil

    try:
        return {child.pid for child in psutil.Process(worker.pid).children()}
    except psutil.NoSuchProcess:
        return set()


def worker_tasks(stack: Stack, worker: ManagedProcess, kind: str) -> list[dict[str, Any]]:
    """`celery inspect active|reserved|scheduled` for one worker (Celery's remote control)."""
    node = stack.nodename(worker)
    # A connection per call: never one left idle between two calls.
    with stack.control_app.connection_for_write() as connection:
        control = stack.control_app.control
        inspect = control.inspect(destination=[node], timeout=2.0, connection=connection)
        replies = getattr(inspect, kind)() or {}
    if node not in replies:
        raise AssertionError(f"{node} did not answer inspect {kind}:\n{worker.log()[-2000:]}")
    return list(replies[node])


def running_probe(stack: Stack, worker: ManagedProcess, key: str) -> dict[str, Any] | None:
    """The active request of `fault_probe(key, ...)` (it has the pool process's worker_pid)."""
    for request in worker_tasks(stack, worker, "active"):
        if request["name"].endswith(".fault_probe") and request["args"][:1] == [key]:
            return request
    return None


def idle(stack: Stack, worker: ManagedProcess) -> bool:
    """Nothing queued on the default queue and nothing running, reserved or waiting for an ETA."""
    if stack.queue_length("default"):
        return False
    return not any(
        worker_tasks(stack, worker, kind) for kind in ("active", "reserved", "scheduled")
    )


def unacked_count(stack: Stack) -> int:
    """Redis only: messages delivered but not acknowledged (kombu's `unacked` hash)."""
    import redis

    client = redis.Redis.from_url(stack.namespace.broker_url)
    try:
        return int(client.hlen("unacked"))
    finally:
        client.close()


def main() -> None:
    package, calls = sys.argv[1], json.loads(sys.argv[2])
    tasks = importlib.import_module(f"{package}.tasks")
    sent = [
        getattr(tasks, call["task"]).apply_async(
            call.get("args", []), call.get("kwargs", {}), **call.get("options", {})
        )
        for call in calls
    ]
    print(json.dumps({"ids": [result.id for result in sent]}))


if __name__ == "__main__":
    main()
