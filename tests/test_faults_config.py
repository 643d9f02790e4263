"""Bad runtime configuration: a malformed variable stops the real `celery worker` and `celery beat`.

Each case starts the documented command, `celery -A <package>.celery_app worker` (or `beat`), with one
malformed variable and checks that the process:

- exits with code 1 within START_BOUND seconds (a half-configured worker would instead retry its
  broker forever: broker_connection_max_retries is None);
- prints exactly one line, on stderr, that names the variable and its value and says what is allowed,
  with no traceback and nothing on stdout;
- started nothing: it forked no process (an audit hook loaded through sitecustomize logs every fork,
  spawn and exec of the process), no process of its group is left, it wrote nothing in its working
  directory or state directory, it never bound a queue or its remote-control mailbox on the broker
  namespace, and no worker there answers ping.

A control test runs the same command with valid values at the edges (soft limit one second below the
hard limit, the shortest allowed visibility timeout) and shows that each of these instruments does
see a worker and beat that started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from amqp.exceptions import ChannelError

from .support.processes import group_alive, wait_until
from .support.render import DEFAULTS, RABBITMQ, Project
from .support.stack import RedisNamespaces, Stack

pytestmark = pytest.mark.timeout(120)

# A refused start takes about 0.5 s on an idle machine; the bound leaves room for a loaded CI box.
START_BOUND = 20.0
# A worker on the namespace would answer a broadcast ping over loopback within milliseconds.
PING_TIMEOUT = 0.3
UNREACHABLE = "127.0.0.1:1"  # refuses connections: a URL that slipped through would reach nothing

# Loaded by every Python process of a refused start (PYTHONPATH): logs that the hook ran in that
# process, then every fork, spawn and exec it makes. Pool processes come from os.fork (billiard).
FORK_HOOK = """\
import os
import sys

_LOG = os.environ.get("CCW_FORK_LOG")
_EVENTS = ("os.fork", "os.forkpty", "os.posix_spawn", "os.exec", "os.system", "subprocess.Popen")


def _write(line):
    fd = os.open(_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (line + "\\n").encode())
    finally:
        os.close(fd)


def _hook(event, args):
    if event in _EVENTS:
        _write(f"{event} {os.getpid()}")


if _LOG:
    _write(f"loaded {os.getpid()}")
    sys.addaudithook(_hook)
"""


@dataclass(frozen=True)
class Case:
    id: str
    variable: str  # the variable the error line must name
    env: dict[str, str]

    @property
    def value(self) -> str:
        return self.env[self.variable]


def bad(case_id: str, variable: str, value: str, **others: str) -> Case:
    """A case where `variable` is malformed (`others`: valid values it is checked against)."""
    return Case(case_id, variable, {**others, variable: value})


WORKER_CASES = [
    bad("concurrency-not-a-number", "CELERY_WORKER_CONCURRENCY", "four"),
    bad("negative-time-limit", "CELERY_TASK_TIME_LIMIT", "-5"),
    bad("unknown-loglevel", "CELERY_WORKER_LOGLEVEL", "VERBOSE"),
    bad("broker-url-of-another-broker", "CELERY_BROKER_URL", f"amqp://{UNREACHABLE}//"),
    bad("result-backend-of-another-kind", "CELERY_RESULT_BACKEND", "db+sqlite:///results.sqlite"),
    bad(
        "soft-limit-not-below-hard-limit",
        "CELERY_TASK_SOFT_TIME_LIMIT",
        "30",
        CELERY_TASK_TIME_LIMIT="30",
    ),
    # The default hard limit is 300 s: Redis would deliver a task still running a second time.
    bad("visibility-timeout-not-above-the-time-limit", "CELERY_BROKER_VISIBILITY_TIMEOUT", "300"),
    # A task delayed by the default 300 s, waiting and running under a 30 s hard limit: 375 s.
    bad(
        "visibility-timeout-below-delay-wait-and-run",
        "CELERY_BROKER_VISIBILITY_TIMEOUT",
        "374",
        CELERY_TASK_TIME_LIMIT="30",
        CELERY_TASK_SOFT_TIME_LIMIT="20",
    ),
    bad("max-delay-zero", "CELERY_TASK_MAX_DELAY", "0"),
    bad("unknown-queue", "CELERY_WORKER_QUEUES", "default,hihg_priority"),
    bad("queue-list-with-a-space", "CELERY_WORKER_QUEUES", "default, high_priority"),
    bad("prefetch-zero", "CELERY_WORKER_PREFETCH_MULTIPLIER", "0"),
    bad("acks-late-not-a-boolean", "CELERY_TASK_ACKS_LATE", "sometimes"),
    bad("soft-shutdown-not-a-number", "CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT", "nan"),
    bad("memory-limit-with-a-unit", "CELERY_WORKER_MAX_MEMORY_PER_CHILD", "512MB"),
]
# Beat's variables: beat must refuse them, and so must the worker, which reads the same settings.
BEAT_CASES = [
    bad("crontab-minute-out-of-range", "CELERY_BEAT_REPORT_CRONTAB", "61 7 * * *"),
    bad("crontab-with-four-fields", "CELERY_BEAT_REPORT_CRONTAB", "30 7 * *"),
    bad("crontab-day-name-typo", "CELERY_BEAT_REPORT_CRONTAB", "0 6 * * mon-fry"),
    bad("cleanup-interval-zero", "CELERY_BEAT_CLEANUP_INTERVAL", "0"),
    bad("unknown-time-zone", "CELERY_TIMEZONE", "Mars/Olympus_Mons"),
    # Relative, so a beat that started anyway would write it into its working directory.
    bad("schedule-file-with-db-suffix", "CELERY_BEAT_SCHEDULE_FILENAME", "beat-schedule.db"),
    bad("heartbeat-interval-zero", "CELERY_HEARTBEAT_INTERVAL", "0"),
]
BEAT_RUNS = [(command, case) for case in BEAT_CASES for command in ("beat", "worker")]


@dataclass
class Start:
    """What one start of `celery ... worker|beat` did, seen from outside and through the hook."""

    command: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    pid: int
    group_left: bool
    hook_log: list[str]
    cwd: Path
    state_dir: Path
    written: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return (
            f"celery {self.command}: exit {self.returncode} after {self.seconds:.1f} s\n"
            f"--- stderr\n{self.stderr[-3000:]}--- stdout\n{self.stdout[-2000:]}"
            f"--- hook\n{self.hook_log}"
        )


def instrumented_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """PYTHONPATH entry holding the fork hook, and the file it logs to."""
    hook_dir = tmp_path / "hook"
    hook_dir.mkdir(parents=True)
    (hook_dir / "sitecustomize.py").write_text(FORK_HOOK)
    log = hook_dir / "forks.log"
    return {"CCW_FORK_LOG": str(log)}, hook_dir


def start_once(stack: Stack, command: str, env: dict[str, str], tmp_path: Path) -> Start:
    """Run the documented command to its end (at most START_BOUND s) with `env` added."""
    hook_env, hook_dir = instrumented_env(tmp_path)
    cwd = tmp_path / "cwd"
    state_dir = tmp_path / "state"
    cwd.mkdir()
    state_dir.mkdir()
    full_env = stack.env(
        PYTHONPATH=os.pathsep.join([str(stack.project.path), str(hook_dir)]),
        # Beat's state goes to a directory of this test (a relative value lands in cwd).
        CELERY_BEAT_SCHEDULE_FILENAME=str(state_dir / "beat-schedule"),
        **hook_env,
    )
    full_env.update(env)
    args = [stack.celery, "-A", f"{stack.project.package_path}.celery_app", command]
    began = time.monotonic()
    popen = subprocess.Popen(
        args,
        cwd=cwd,
        env=full_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = popen.communicate(timeout=START_BOUND)
    except subprocess.TimeoutExpired:
        os.killpg(popen.pid, signal.SIGKILL)
        stdout, stderr = popen.communicate(timeout=10)
        pytest.fail(
            f"celery {command} with {env} was still running after {START_BOUND} s "
            f"(started half-configured?):\n{stderr[-3000:]}"
        )
    seconds = time.monotonic() - began
    group_left = group_alive(popen.pid)
    if group_left:
        os.killpg(popen.pid, signal.SIGKILL)  # no orphan, whatever the assertions say
    log = Path(hook_env["CCW_FORK_LOG"])
    start = Start(
        command=command,
        returncode=popen.returncode,
        stdout=stdout,
        stderr=stderr,
        seconds=seconds,
        pid=popen.pid,
        group_left=group_left,
        hook_log=log.read_text().splitlines() if log.exists() else [],
        cwd=cwd,
        state_dir=state_dir,
    )
    start.written = sorted(
        str(path.relative_to(tmp_path)) for d in (cwd, state_dir) for path in d.rglob("*")
    )
    return start


def worker_traces(broker_url: str) -> list[str]:
    """Keys a started Redis worker leaves on its broker: its queue and mailbox bindings."""
    client = redis.Redis.from_url(broker_url)
    try:
        return sorted(
            key.decode()
            for pattern in ("_kombu.binding.*", "_kombu.binding_permanent.*")
            for key in client.scan_iter(match=pattern)
            if b"reply.celery.pidbox" not in key  # a ping client's own reply binding
        )
    finally:
        client.close()


def assert_refused(start: Start, case: Case) -> None:
    """One line naming the variable, exit 1, in bounded time, and nothing started."""
    where = start.describe()
    assert start.returncode == 1, where
    assert start.seconds < START_BOUND, where
    assert start.stdout == "", where
    assert "Traceback" not in start.stderr, where
    lines = [line for line in start.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, where
    prefix = f"configuration error: {case.variable}={case.value!r} is invalid: "
    assert lines[0].startswith(prefix), where
    assert len(lines[0]) > len(prefix) + 10, f"no explanation of what is allowed: {lines[0]}"
    # Nothing started: the hook ran in this very process and saw no fork, spawn or exec.
    assert start.hook_log == [f"loaded {start.pid}"], where
    assert not start.group_left, f"a process of the group outlived celery {start.command}"
    assert start.written == [], f"celery {start.command} wrote {start.written}"


# -- Redis render: one namespace for every refused start ------------------------------------------
@pytest.fixture(scope="module")
def refusal_stack(
    render_project: Callable[..., Project],
    redis_namespaces: RedisNamespaces,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """The defaults render on a namespace shared by this module's refused starts.

    Shared to spare the session's 32 database pairs: a refused start leaves nothing on it, which
    each case checks.
    """
    stack = Stack(
        render_project(**DEFAULTS), redis_namespaces.new(), tmp_path_factory.mktemp("refusals")
    )
    yield stack
    stack.close()


@pytest.mark.parametrize("case", WORKER_CASES, ids=[case.id for case in WORKER_CASES])
def test_worker_refuses_a_malformed_variable_at_start_up(
    case: Case, refusal_stack: Stack, tmp_path: Path
) -> None:
    start = start_once(refusal_stack, "worker", case.env, tmp_path)
    assert_refused(start, case)
    assert worker_traces(refusal_stack.namespace.broker_url) == []
    assert refusal_stack.control_app.control.ping(timeout=PING_TIMEOUT) == []


@pytest.mark.parametrize(
    ("command", "case"), BEAT_RUNS, ids=[f"{command}-{case.id}" for command, case in BEAT_RUNS]
)
def test_beat_variable_is_refused_by_beat_and_worker(
    command: str, case: Case, refusal_stack: Stack, tmp_path: Path
) -> None:
    start = start_once(refusal_stack, command, case.env, tmp_path)
    assert_refused(start, case)
    assert worker_traces(refusal_stack.namespace.broker_url) == []
    if command == "worker":  # beat never answers ping, valid or not
        assert refusal_stack.control_app.control.ping(timeout=PING_TIMEOUT) == []


def test_a_sender_sends_whatever_beats_variables_say(
    render_project: Callable[..., Project], stack_factory: Callable[[Project], Stack]
) -> None:
    """Code that imports the tasks to send them (a web server, a script) is not stopped by a bad
    beat-only variable, which beat and the worker refuse (above): the task reaches a worker."""
    stack = stack_factory(render_project(**DEFAULTS))
    worker = stack.worker()
    package = stack.project.package_path
    send = f"from {package}.tasks import health_check; print(health_check.delay().get(timeout=30))"
    # Beat's own variables (config.BEAT_ONLY); the time zone and heartbeat interval are shared.
    bad = {
        c.variable: c.env[c.variable] for c in BEAT_CASES if c.variable.startswith("CELERY_BEAT_")
    }
    assert len(bad) == 3, bad
    done = subprocess.run(
        [stack.python, "-c", send],
        cwd=stack.cwd,
        env=stack.env(**bad),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert stack.nodename(worker) in done.stdout


def test_refused_url_is_named_without_its_password(refusal_stack: Stack, tmp_path: Path) -> None:
    password = "Leaky-Passw0rd-42"
    url = f"amqp://ops:{password}@{UNREACHABLE}//"
    start = start_once(refusal_stack, "worker", {"CELERY_BROKER_URL": url}, tmp_path)
    assert start.returncode == 1, start.describe()
    assert "CELERY_BROKER_URL" in start.stderr, start.describe()
    # The line goes to journald, supervisord's or the container's log: no password in it.
    assert password not in start.stderr, start.describe()


def test_valid_values_at_the_limits_start_and_the_instruments_see_it(
    render_project: Callable[..., Project],
    stack_factory: Callable[[Project], Stack],
    tmp_path: Path,
) -> None:
    """The control: what the refusal tests check for is there when worker and beat do start."""
    stack = stack_factory(render_project(**DEFAULTS))
    hook_env, hook_dir = instrumented_env(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    edges = {
        "CELERY_TASK_TIME_LIMIT": "30",
        "CELERY_TASK_SOFT_TIME_LIMIT": "29",  # one second below the hard limit
        "CELERY_TASK_MAX_DELAY": "1",
        "CELERY_BROKER_VISIBILITY_TIMEOUT": "76",  # the shortest allowed: 1 + 2 x 30 + 15
        "CELERY_WORKER_QUEUES": "default,high_priority",
        "CELERY_WORKER_LOGLEVEL": "warning",  # any case
        "CELERY_WORKER_CONCURRENCY": "2",
        "CELERY_BEAT_REPORT_CRONTAB": "0 6 * * mon-fri",
        "CELERY_BEAT_SCHEDULE_FILENAME": str(state / "beat-schedule"),
        "PYTHONPATH": os.pathsep.join([str(stack.project.path), str(hook_dir)]),
        **hook_env,
    }
    app = f"{stack.project.package_path}.celery_app"
    assert worker_traces(stack.namespace.broker_url) == []
    worker = stack.start(
        "control", [stack.celery, "-A", app, "worker", "-n", "control@%h"], **edges
    )
    stack.wait_ready(worker)  # answers ping
    traces = worker_traces(stack.namespace.broker_url)
    for key in ("celery.pidbox", "default", "high_priority"):
        assert f"_kombu.binding.{key}" in traces, traces
    forks = Path(hook_env["CCW_FORK_LOG"]).read_text().splitlines()
    assert f"loaded {worker.pid}" in forks
    assert forks.count(f"os.fork {worker.pid}") >= 2, forks  # the two pool processes

    beat = stack.start("beat", [stack.celery, "-A", app, "beat"], **edges)

    def beat_wrote_its_state() -> bool:
        assert beat.running(), beat.log()[-3000:]
        return any(state.iterdir())

    wait_until(beat_wrote_its_state, 30, interval=0.2)


# -- RabbitMQ render ----------------------------------------------------------------------------
def test_rabbitmq_worker_refuses_a_redis_url_and_an_unknown_queue(
    render_project: Callable[..., Project],
    stack_factory: Callable[[Project], Stack],
    tmp_path: Path,
) -> None:
    stack = stack_factory(render_project(**RABBITMQ))
    cases = [
        bad("redis-url", "CELERY_BROKER_URL", f"redis://{UNREACHABLE}/0"),
        bad("unknown-queue", "CELERY_WORKER_QUEUES", "urgent"),
        bad("negative-time-limit", "CELERY_TASK_TIME_LIMIT", "-1"),
    ]
    for case in cases:
        start = start_once(stack, "worker", case.env, tmp_path / case.id)
        assert_refused(start, case)
        with pytest.raises(ChannelError):  # 404: the vhost has no default queue
            stack.queue_length("default")
    assert stack.control_app.control.ping(timeout=PING_TIMEOUT) == []

    # The control, on the same vhost: a valid start declares the queue and answers ping.
    stack.worker("control")
    assert stack.queue_length("default") == 0
