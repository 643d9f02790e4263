"""A real supervisord running the rendered deploy/supervisord programs, for the supervisord tests.

The rendered `<name>.conf` is a conf.d-style file of [group:x] and [program:x] sections. The test
supplies what a server's supervisord.conf would: [supervisord], a unix socket for supervisorctl and
the XML-RPC interface, and an [include] of the rendered file. The rendered file is used unchanged
except for the system paths a test cannot use (/etc/<name>, /var/log/<name>, /var/lib/<name>), which
are moved into the test's directory, and, only when the machine forces it, the `user=` line (see
`runnable_as`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.xmlrpc import SupervisorTransport

from .processes import ManagedProcess, scratch_tmpdir, wait_until
from .render import Project

BIN = Path(sys.executable).parent
SUPERVISORD = str(BIN / "supervisord")
SUPERVISORCTL = str(BIN / "supervisorctl")
# The environment the celery programs need, from the interpreter running the tests.
TEST_ENV_PREFIX = BIN.parent


def group_name(answers: dict[str, Any]) -> str:
    """The group (and file) name the template derives: same rule as install_dir's default."""
    if answers["new_project"]:
        return str(answers["distribution_name"])
    return str(answers["package_path"]).split(".")[0]


def rendered_conf(project: Project) -> Path:
    return project.path / "deploy" / "supervisord" / f"{group_name(project.answers)}.conf"


def unprivileged_user() -> str:
    """The answer for service_user: `nobody` when the tests run as root, else the current user."""
    if os.geteuid() == 0:
        return "nobody"
    return pwd.getpwuid(os.geteuid()).pw_name


def runnable_as(user: str) -> bool:
    """Can `user` import celery and flower with the test interpreter?

    Not when the interpreter lives in a directory only root may enter (e.g. pyenv under /root,
    mode 0700): then the programs must run as root, which the test does by substituting `user=`.
    """
    if pwd.getpwnam(user).pw_uid == os.geteuid():
        return True
    account = pwd.getpwnam(user)
    try:
        done = subprocess.run(
            [sys.executable, "-c", "import celery, flower"],
            user=account.pw_uid,
            group=account.pw_gid,
            extra_groups=[],
            cwd="/",
            capture_output=True,
            timeout=60,
            check=False,
        )
    except PermissionError:  # the interpreter itself is out of reach
        return False
    return done.returncode == 0


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (Linux /proc), however deep."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields follow the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def alive(pid: int) -> bool:
    """True for a running process; a zombie (exited, not yet reaped) counts as gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def process_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def process_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    pairs = (item.decode(errors="replace").partition("=") for item in raw if item)
    return {key: value for key, _, value in pairs}


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a TCP socket listening on `port` (Linux /proc/net/tcp*)."""
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            address, _, hex_port = fields[1].partition(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                # The kernel prints each 32-bit word in host (little-endian) order.
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found.add(str(ipaddress.ip_address(words)))
    return found


@dataclass
class Installation:
    """A rendered project installed the way the conf expects: code and .venv in install_dir."""

    project: Project  # path == install_dir
    name: str
    user: str  # the user the programs run as
    substituted_user: bool  # True when the machine forced `user=` to be rewritten


def install(rendered: Project, install_dir: Path) -> Installation:
    """Copy a render to its install_dir answer, with .venv pointing at the test's environment."""
    assert str(install_dir) == rendered.answers["install_dir"], "render with this install_dir"
    shutil.copytree(rendered.path, install_dir, symlinks=True)
    (install_dir / ".venv").symlink_to(TEST_ENV_PREFIX, target_is_directory=True)
    user = str(rendered.answers["service_user"])
    substituted = not runnable_as(user)
    if substituted:
        user = pwd.getpwuid(os.geteuid()).pw_name
    project = Project(install_dir, rendered.answers)
    return Installation(project, group_name(rendered.answers), user, substituted)


class Supervisor:
    """supervisord, as root or the current user, with the rendered group included."""

    def __init__(self, installation: Installation, run_dir: Path) -> None:
        self.installation = installation
        self.name = installation.name
        self.run_dir = run_dir
        self.etc_dir = run_dir / "etc"  # /etc/<name>
        self.log_dir = run_dir / "log"  # /var/log/<name>
        self.state_dir = run_dir / "state"  # /var/lib/<name>
        self.socket = run_dir / "supervisor.sock"
        self.config = run_dir / "supervisord.conf"
        self.process: ManagedProcess | None = None
        self.seen: set[int] = set()  # every PID of the tree observed, for teardown
        account = pwd.getpwnam(installation.user)
        self.uid, self.gid = account.pw_uid, account.pw_gid

    # -- files a server's administrator would create ------------------------------------------
    def prepare(self, env_files: dict[str, str], edits: dict[str, str] | None = None) -> Supervisor:
        """Write the env files (root:<group> 0640), the directories, and the configuration.

        `edits` replaces text in the rendered configuration: only for a test's control experiment.
        """
        for directory in (self.run_dir, self.etc_dir, self.log_dir, self.state_dir):
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o755)
        os.chown(self.state_dir, self.uid, self.gid)  # beat writes its state here
        for filename, text in env_files.items():
            path = self.etc_dir / filename
            path.write_text(text)
            os.chown(path, os.geteuid(), self.gid)
            path.chmod(0o640)
        conf = rendered_conf(self.installation.project).read_text()
        for system_dir, test_dir in (
            (f"/etc/{self.name}", self.etc_dir),
            (f"/var/log/{self.name}", self.log_dir),
            (f"/var/lib/{self.name}", self.state_dir),
        ):
            assert system_dir in conf, f"{system_dir} is not in the rendered configuration"
            conf = conf.replace(system_dir, str(test_dir))
        if self.installation.substituted_user:
            rendered_user = self.installation.project.answers["service_user"]
            conf = conf.replace(f"\nuser={rendered_user}\n", f"\nuser={self.installation.user}\n")
        for old, new in (edits or {}).items():
            assert old in conf, f"{old!r} is not in the rendered configuration"
            conf = conf.replace(old, new)
        included = self.run_dir / f"{self.name}.conf"
        included.write_text(conf)
        self.config.write_text(
            f"""[unix_http_server]
file={self.socket}
chmod=0700

[supervisord]
nodaemon=true
logfile={self.run_dir}/supervisord.log
pidfile={self.run_dir}/supervisord.pid
childlogdir={self.run_dir}
user={pwd.getpwuid(os.geteuid()).pw_name}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{self.socket}

[include]
files={included}
"""
        )
        return self

    # -- supervisord ---------------------------------------------------------------------------
    def start(self) -> Supervisor:
        # A bare environment: the programs must get their configuration from the env files.
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
        env["TMPDIR"] = scratch_tmpdir(self.run_dir)
        self.process = ManagedProcess(
            "supervisord",
            [SUPERVISORD, "-c", str(self.config)],
            cwd=self.run_dir,
            env=env,
            log_dir=self.run_dir,
        ).start()
        wait_until(self._answers, 30)
        return self

    def _answers(self) -> bool:
        assert self.process is not None and self.process.running(), self.log()
        try:
            return self.rpc().supervisor.getState()["statename"] == "RUNNING"
        except OSError:
            return False

    def rpc(self) -> Any:
        transport = SupervisorTransport(None, None, f"unix://{self.socket}")
        return xmlrpc.client.ServerProxy("http://localhost", transport=transport)

    def ctl(self, *args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
        """supervisorctl, as an administrator runs it."""
        return subprocess.run(
            [SUPERVISORCTL, "-c", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def full_name(self, process: str) -> str:
        return f"{self.name}:{process}"

    def info(self, process: str) -> dict[str, Any]:
        return dict(self.rpc().supervisor.getProcessInfo(self.full_name(process)))

    def wait_running(self, *processes: str, timeout: float = 60) -> None:
        def running() -> bool:
            states = {p: self.info(p)["statename"] for p in processes}
            if "FATAL" in states.values():
                raise AssertionError(f"{states}\n{self.log()}")
            return set(states.values()) == {"RUNNING"}

        try:
            wait_until(running, timeout, interval=0.25)
        except TimeoutError:
            raise AssertionError(f"not RUNNING within {timeout} s\n{self.log()}") from None

    def log(self, process: str | None = None) -> str:
        path = self.run_dir / "supervisord.log"
        if process is not None:
            path = self.log_dir / f"{process}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def tree(self) -> set[int]:
        """supervisord and every process below it."""
        assert self.process is not None
        found = {self.process.pid} | descendants(self.process.pid)
        self.seen |= found
        return found

    def shutdown(self, timeout: float = 60) -> set[int]:
        """`supervisorctl shutdown`; return the PIDs of the tree that are still alive after it."""
        assert self.process is not None
        before = self.tree()
        self.ctl("shutdown", timeout=timeout)
        self.process.wait(timeout)
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: not any(alive(pid) for pid in before), 10)
        return {pid for pid in before if alive(pid)}

    def close(self) -> None:
        """Teardown: whatever is still running, stop it (the programs run in their own groups)."""
        if self.process is None:
            return
        if self.process.running():
            self.tree()
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                self.ctl("shutdown", timeout=30)
            self.process.wait(30)
        left = {pid for pid in self.seen if alive(pid)}
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.stop()
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in left) and time.monotonic() < deadline:
            time.sleep(0.1)
