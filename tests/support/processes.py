"""Start and stop the rendered project's processes (worker, beat, ...) with no orphans left behind.

Each process runs in its own session, so stopping it can reach its whole process group (prefork pool
children included) even when the main process died first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


class ManagedProcess:
    def __init__(
        self,
        name: str,
        args: Sequence[str],
        *,
        cwd: Path,
        env: dict[str, str],
        log_dir: Path,
        umask: int = -1,
    ) -> None:
        self.name = name
        self.umask = umask  # -1: inherit, as subprocess.Popen does
        self.args = list(args)
        self.cwd = cwd
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        log = self.log_path.open("ab")
        try:
            self.popen = subprocess.Popen(
                self.args,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                umask=self.umask,
            )
        finally:
            log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was not started"
        return self.popen.pid

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal_main(self, signum: int) -> None:
        """Signal the main process only, as systemd's KillMode=mixed or supervisord does."""
        if self.running():
            os.kill(self.pid, signum)

    def wait(self, timeout: float) -> int | None:
        assert self.popen is not None
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the group, wait, then SIGKILL whatever is left of it."""
        if self.popen is None:
            return
        for signum, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.pid, signum)
            except ProcessLookupError:
                break
            if self.wait(wait) is not None and not group_alive(self.pid):
                break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)  # pool children that outlived their parent
        self.wait(5.0)


def scratch_tmpdir(directory: Path) -> str:
    """`directory`/tmp, made if needed: the TMPDIR of processes a test starts, so what they leave
    behind (a killed worker's pymp-* directory) stays below the test's directory, not in /tmp. A
    process that cannot write there (one running as nobody) gets /tmp from Python's tempfile."""
    tmp = directory / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return str(tmp)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.2) -> object:
    """Poll until predicate() is truthy; return its value or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        time.sleep(interval)
