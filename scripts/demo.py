"""Demo: render the template with default answers, then run its worker and beat for real.

Starts a private redis-server on a free port, renders the project into a scratch directory, boots
`celery -A utils.workers.celery_app worker` and `... beat`, runs every sample task while showing its
progress, waits for beat to schedule the cleanup task, and stops everything. Run it with scripts/demo.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

from copier.errors import DirtyLocalWarning
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.processes import ManagedProcess, wait_until  # noqa: E402
from tests.support.redis_server import scratch_with_private_redis  # noqa: E402
from tests.support.render import private_redis_env, render  # noqa: E402

CELERY = str(Path(sys.executable).with_name("celery"))
APP = "utils.workers.celery_app"
# At most 80 columns, so nothing wraps in a standard terminal; long values end in "…".
console = Console(width=min(80, Console().width))


def start(name: str, args: list[str], cwd: Path, env: dict[str, str]) -> ManagedProcess:
    console.print(f"[bold]$[/] {' '.join(args)}", highlight=False)
    return ManagedProcess(name, args, cwd=cwd, env=env, log_dir=cwd).start()


def run_samples(project: Path) -> None:
    sys.path.insert(0, str(project))
    from utils.workers import app
    from utils.workers.client import get_progress
    from utils.workers.tasks import (
        analyze_content,
        cleanup,
        deliver_notification,
        generate_report,
        health_check,
        process_document,
    )

    wait_until(lambda: app.control.ping(timeout=1.0), 60, interval=0.5)
    console.print("[green]worker answers ping[/]")

    analysis = analyze_content.delay(
        "the quick brown fox jumps over the lazy dog " * 30, step_delay=0.4
    )
    with Progress(
        TextColumn("analyze_content"), BarColumn(), TextColumn("{task.description}")
    ) as bar:
        row = bar.add_task("queued", total=100)
        while not (progress := get_progress(analysis)).ready:
            bar.update(
                row, completed=progress.progress, description=f"{progress.state} {progress.status}"
            )
            time.sleep(0.1)
        bar.update(row, completed=100, description=progress.status)

    console.print("deliver_notification fails twice on purpose, then succeeds on its retry;")
    console.print("health_check goes to the high_priority queue.")
    calls = {
        "process_document": process_document.delay(
            "doc-1", {"format": "text", "text": "Hello, world"}
        ),
        "analyze_content": analysis,
        "deliver_notification": deliver_notification.delay(
            "ops@example.com", "disk almost full", fail_times=2
        ),
        "cleanup": cleanup.delay(max_age_seconds=3600),
        "generate_report": generate_report.delay("daily"),
        "health_check": health_check.delay(),
    }
    table = Table("task", "state", "result")
    # What is left of the console for the result: the longest name and state, the borders and
    # the padding (two columns a cell, four bars).
    room = console.width - max(map(len, calls)) - len("SUCCESS") - 3 * 2 - 4
    for name, result in calls.items():
        value = str(result.get(timeout=60))
        table.add_row(name, result.state, value if len(value) <= room else value[: room - 1] + "…")
    console.print(table)

    def cleanups() -> int:
        stats = app.control.inspect(timeout=1.0).stats() or {}
        return sum(s.get("total", {}).get("utils.workers.tasks.cleanup", 0) for s in stats.values())

    console.print("waiting for beat to schedule cleanup (every 3 s) ...")
    runs = wait_until(lambda: cleanups() >= 2 and cleanups(), 45, interval=1.0)
    console.print(f"[green]beat scheduled cleanup; the worker ran it {runs} times[/]")


def main() -> int:
    # A working tree with uncommitted changes renders as it is; no need to say so in a demo.
    warnings.filterwarnings("ignore", category=DirtyLocalWarning)
    started = time.monotonic()
    with scratch_with_private_redis("ccw-demo-") as (scratch, port, processes):
        console.print(f"private {Path(processes[0].args[0]).name} on 127.0.0.1:{port}")
        try:
            console.print("[bold]$[/] copier copy --trust --defaults <template> project")
            project = render(scratch / "project", {}).path
            env = private_redis_env(project, port) | {
                "CELERY_BEAT_CLEANUP_INTERVAL": "3",
                "CELERY_BEAT_SCHEDULE_FILENAME": str(scratch / "celerybeat-schedule"),
            }
            os.environ.update(env)  # the in-process client imports the rendered package
            processes.append(
                start("worker", [CELERY, "-A", APP, "worker", "--loglevel=INFO"], project, env)
            )
            processes.append(
                start("beat", [CELERY, "-A", APP, "beat", "--loglevel=INFO"], project, env)
            )
            run_samples(project)
        except Exception:
            for process in processes[1:]:
                console.print(
                    f"--- {process.name} log (tail)\n{process.log()[-2000:]}", highlight=False
                )
            raise
    console.print("stopped worker, beat and redis")
    console.print(f"[bold green]demo finished in {time.monotonic() - started:.1f} s[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
