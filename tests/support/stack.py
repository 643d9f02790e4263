"""A running stack: one isolated broker namespace plus the rendered project's processes using it."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kombu.pools
from amqp.exceptions import ChannelError
from celery import Celery
from kombu import Connection

from . import rabbitmq_management
from .processes import ManagedProcess, scratch_tmpdir, wait_until
from .redis_server import start_private_redis
from .render import Project

CELERY = str(Path(sys.executable).with_name("celery"))
PROBE = str(Path(__file__).with_name("probe.py"))
HOSTNAME = socket.gethostname()
BOOT_TIMEOUT = 60.0


@dataclass
class Namespace:
    """Broker and result-backend URLs that no other stack in this session uses."""

    broker_url: str
    result_backend: str
    cleanup: list[Callable[[], object]] = field(default_factory=list)

    def close(self) -> None:
        for step in self.cleanup:
            step()


class RedisNamespaces:
    """Hands out a fresh pair of databases (broker, results) of a private Redis."""

    def __init__(self, host: str, port: int, db_count: int, server: str = "redis-server") -> None:
        self.host, self.port = host, port
        self.server = server  # the binary's name: redis-server or valkey-server
        self._pairs = iter(range(0, db_count - 1, 2))

    def new(self) -> Namespace:
        broker_db = next(self._pairs, None)
        if broker_db is None:
            raise RuntimeError(
                "no free Redis database pair left: raise REDIS_DATABASES in conftest"
            )
        base = f"redis://{self.host}:{self.port}"
        return Namespace(f"{base}/{broker_db}", f"{base}/{broker_db + 1}")


class PrivateRedisServers:
    """The session's private servers, one per binary, started when first asked for; each is on a
    free port of 127.0.0.1, keeps nothing on disk and has `databases` databases (a pair a stack)."""

    def __init__(self, workdir: Path, databases: int) -> None:
        self.workdir, self.databases = workdir, databases
        self._servers: dict[str, tuple[ManagedProcess, RedisNamespaces]] = {}

    def namespaces(self, binary: str) -> RedisNamespaces:
        if binary not in self._servers:
            workdir = self.workdir / f"redis{len(self._servers)}"
            workdir.mkdir(parents=True)
            # Control connections stay idle for long: the server must never drop a client.
            options = ("--databases", str(self.databases), "--timeout", "0")
            process, port = start_private_redis(workdir, extra_args=options, binary=binary)
            name = Path(binary).name
            self._servers[binary] = (
                process,
                RedisNamespaces("127.0.0.1", port, self.databases, name),
            )
        return self._servers[binary][1]

    def close(self) -> None:
        for process, _ in self._servers.values():
            process.stop()


class RabbitNamespaces:
    """A throw-away vhost of the machine's RabbitMQ per stack, deleted afterwards: through the
    management API when it answers (rabbitmq_management.py), else with rabbitmqctl."""

    _counter = itertools.count()

    def __init__(
        self, rabbitmqctl: str, host: str = "127.0.0.1", port: int = 5672, api: bool = False
    ) -> None:
        self.host, self.port = host, port
        self.rabbitmqctl = rabbitmqctl
        self.api = api

    def new(self, result_backend: str = "rpc://") -> Namespace:
        vhost = f"ccw-test-{os.getpid()}-{next(self._counter)}-{uuid.uuid4().hex[:6]}"
        broker = f"amqp://guest:guest@{self.host}:{self.port}/{vhost}"
        if self.api:
            rabbitmq_management.add_vhost(vhost)
            return Namespace(
                broker, result_backend, [lambda: rabbitmq_management.delete_vhost(vhost)]
            )
        for command in (
            [self.rabbitmqctl, "add_vhost", vhost],
            [self.rabbitmqctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
        ):
            subprocess.run(command, capture_output=True, timeout=60, check=True)
        delete = [self.rabbitmqctl, "delete_vhost", vhost]
        return Namespace(
            broker,
            result_backend,
            [lambda: subprocess.run(delete, capture_output=True, timeout=60, check=False)],
        )


class Stack:
    """Processes of one rendered project on one namespace.

    By default they run from the project directory with this interpreter; with `venv`, they run that
    environment's celery and python from `log_dir`, so only the installed package can be imported.
    """

    def __init__(
        self, project: Project, namespace: Namespace, log_dir: Path, venv: Path | None = None
    ) -> None:
        self.project = project
        self.namespace = namespace
        self.log_dir = log_dir
        self.venv = venv
        self.python = str(venv / "bin" / "python") if venv else sys.executable
        self.celery = str(venv / "bin" / "celery") if venv else CELERY
        self.cwd = log_dir if venv else project.path
        self.processes: list[ManagedProcess] = []
        # Variables every process of the stack gets (worker, beat, probe), before per-call ones.
        self.extra_env: dict[str, str] = {}
        self.control_app = self._control_app()

    def _control_app(self) -> Celery:
        return Celery("test-control", broker=self.namespace.broker_url, set_as_current=False)

    def reset_control(self) -> None:
        """A new control app, and no pooled connection: those died with the broker's (kombu keeps
        one pool per URL for the whole process, and Celery's broadcasts do not retry)."""
        self.control_app.close()
        kombu.pools.reset()
        self.control_app = self._control_app()

    # -- environment --------------------------------------------------------------------------
    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_")}
        env.pop("PYTHONPATH", None)
        if self.venv is None:
            env["PYTHONPATH"] = str(self.project.path)
        env.update(PYTHONUNBUFFERED="1", TMPDIR=scratch_tmpdir(self.log_dir))
        env["CELERY_BROKER_URL"] = self.namespace.broker_url
        if self.project.result_backend != "none":
            env["CELERY_RESULT_BACKEND"] = self.namespace.result_backend
        env.update(self.extra_env)
        env.update(extra)
        return env

    # -- processes ----------------------------------------------------------------------------
    def start(self, name: str, args: list[str], **extra_env: str) -> ManagedProcess:
        process = ManagedProcess(
            name, args, cwd=self.cwd, env=self.env(**extra_env), log_dir=self.log_dir
        )
        self.processes.append(process)
        return process.start()

    def worker(
        self,
        name: str = "w1",
        queues: str | None = None,
        wait: bool = True,
        concurrency: int = 2,
        prefix: Sequence[str] = (),
        **extra_env: str,
    ) -> ManagedProcess:
        """`celery -A <package>.celery_app worker --loglevel=INFO`, as the reference shows it.

        `prefix` runs it through another command that execs it, e.g. `ip netns exec <ns>`."""
        args = [*prefix, self.celery, "-A", f"{self.project.package_path}.celery_app", "worker"]
        args += ["--loglevel=INFO", "-n", f"{name}@%h", f"--concurrency={concurrency}"]
        if queues:
            args += ["-Q", queues]
        process = self.start(name, args, **extra_env)
        if wait:
            self.wait_ready(process)
        return process

    def beat(self, name: str = "beat", **extra_env: str) -> ManagedProcess:
        args = [self.celery, "-A", f"{self.project.package_path}.celery_app", "beat"]
        args.append("--loglevel=INFO")
        return self.start(name, args, **extra_env)

    def nodename(self, process: ManagedProcess) -> str:
        return f"{process.name}@{HOSTNAME}"

    def wait_ready(self, process: ManagedProcess, timeout: float = BOOT_TIMEOUT) -> None:
        node = self.nodename(process)

        def answered() -> bool:
            if not process.running():
                raise AssertionError(f"{process.name} exited:\n{process.log()[-3000:]}")
            return bool(self.control_app.control.ping(destination=[node], timeout=1.0))

        try:
            wait_until(answered, timeout, interval=0.5)
        except TimeoutError:
            raise AssertionError(f"{node} did not answer ping:\n{process.log()[-3000:]}") from None

    def task_counts(self, process: ManagedProcess) -> dict[str, int]:
        """Tasks the worker has received, by name (Celery's own `inspect stats`)."""
        node = self.nodename(process)
        stats = self.control_app.control.inspect(destination=[node], timeout=2.0).stats() or {}
        return dict(stats.get(node, {}).get("total", {}))

    def active_tasks(self, process: ManagedProcess) -> list[dict[str, Any]]:
        """Tasks the worker runs now (Celery's own `inspect active`)."""
        node = self.nodename(process)
        active = self.control_app.control.inspect(destination=[node], timeout=2.0).active() or {}
        return list(active.get(node, []))

    def queue_length(self, queue: str) -> int:
        with Connection(self.namespace.broker_url) as connection:
            channel = connection.default_channel
            try:
                return int(channel.queue_declare(queue=queue, passive=True).message_count)
            except ChannelError:
                if self.project.broker == "redis":
                    return 0  # Redis drops the key of an empty list: the queue is empty.
                raise

    # -- client ---------------------------------------------------------------------------------
    def probe(self, command: str, timeout: float = 120, **kwargs: Any) -> Any:
        args = [self.python, PROBE, self.project.package_path, command, json.dumps(kwargs)]
        done = subprocess.run(
            args,
            cwd=self.cwd,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            logs = "\n".join(f"--- {p.name}\n{p.log()[-2000:]}" for p in self.processes)
            raise AssertionError(f"probe {command} failed:\n{done.stderr[-4000:]}\n{logs}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def close(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.control_app.close()
        self.namespace.close()
