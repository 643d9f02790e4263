"""A private RabbitMQ node for one test: its own node name, ports, data directory and configuration.

The machine's RabbitMQ (127.0.0.1:5672) is shared by the whole session and never reconfigured; a
test that needs a server setting (here: a short `consumer_timeout`) starts a node of its own from
the same installation, as the `rabbitmq` user, and removes it afterwards. Its Erlang cookie lives
in its own HOME, so neither the node nor its rabbitmqctl touches the shared node's.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from .processes import ManagedProcess, wait_until
from .redis_server import free_port

# The server script itself: /usr/sbin/rabbitmq-server is a wrapper that changes to the shared
# node's directory.
SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
CTL = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")
USER = "rabbitmq"


def problem(paths: dict[str, str] | None = None) -> str | None:
    """Why a private node cannot run here, or None (the `usable` check of tools.TOOLS)."""
    if not SERVER.exists() or not CTL.exists():
        return f"{SERVER} not found"
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return f"no {USER} user"
    if os.geteuid() != 0:
        return f"starting a node as the {USER} user needs root"
    return None


class PrivateRabbitNode:
    """`rabbitmq.conf` gets `settings`; `channel_tick_ms` sets how often channels check their
    consumers' timeouts (RabbitMQ 3.10 checks on that tick, every 60 s by default)."""

    def __init__(self, settings: dict[str, str], channel_tick_ms: int = 60000) -> None:
        user = pwd.getpwnam(USER)
        # Not under pytest's tmp_path: that tree is root's alone (0700), and the node runs as rabbitmq.
        self.root = Path(tempfile.mkdtemp(prefix="ccw-rabbit-"))
        self.name = f"ccw{self.root.name.rsplit('-', 1)[-1].lower()}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        (self.root / "home").mkdir()
        lines = [f"listeners.tcp.local = 127.0.0.1:{self.port}", "log.console = false"]
        lines += [f"{key} = {value}" for key, value in settings.items()]
        (self.root / "rabbitmq.conf").write_text("\n".join(lines) + "\n")
        (self.root / "enabled_plugins").write_text("[].\n")
        (self.root / "rabbitmq-env.conf").write_text("# this node's: not /etc/rabbitmq's\n")
        for path in [self.root, *self.root.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid)
        self.env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(self.root / "home"),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONF_ENV_FILE": str(self.root / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_PID_FILE": str(self.root / "node.pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                "-kernel inet_dist_use_interface {127,0,0,1} "
                f"-rabbit channel_tick_interval {channel_tick_ms}"
            ),
        }
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def _as_user(self, *args: str) -> list[str]:
        assignments = [f"{key}={value}" for key, value in self.env.items()]
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        return [runuser, "-u", USER, "--", "env", "-i", *assignments, *args]

    def start(self, timeout: float = 90.0) -> PrivateRabbitNode:
        self.process = ManagedProcess(
            "rabbitmq-node", self._as_user(str(SERVER)), cwd=self.root, env={}, log_dir=self.root
        ).start()
        self.ctl("wait", self.env["RABBITMQ_PID_FILE"], "--timeout", str(int(timeout)))
        wait_until(lambda: self.ctl("await_startup") is not None, timeout)
        return self

    def ctl(self, *args: str, timeout: float = 120) -> str:
        """rabbitmqctl against this node; its output."""
        command = self._as_user(str(CTL), "-n", self.name, *args)
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            log = self.process.log()[-2000:] if self.process else ""
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stderr[-2000:]}\n{log}")
        return done.stdout

    def queues(self) -> dict[str, tuple[int, int]]:
        """Every queue of the default vhost: (ready, unacknowledged) messages."""
        out = self.ctl("list_queues", "-q", "--no-table-headers", "name", "messages_ready",
                       "messages_unacknowledged")  # fmt: skip
        rows = (line.split("\t") for line in out.splitlines() if line.strip())
        return {name: (int(ready), int(unacked)) for name, ready, unacked in rows}

    def ready(self, names: list[str]) -> dict[str, int]:
        """Ready messages of existing queues, by passive declare over AMQP: milliseconds, where
        rabbitmqctl starts an Erlang VM per call (seconds on a slow machine)."""
        from kombu import Connection

        counts = {}
        with Connection(self.url, connect_timeout=5) as connection:
            channel = connection.channel()
            for name in names:
                counts[name] = channel.queue_declare(name, passive=True).message_count
        return counts

    def stop(self) -> None:
        if self.process is not None:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.ctl("stop", self.env["RABBITMQ_PID_FILE"], timeout=60)
            self.process.stop()
        shutil.rmtree(self.root, ignore_errors=True)
