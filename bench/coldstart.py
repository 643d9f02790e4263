"""Cold start and memory of the rendered project's worker against a bare Celery worker.

    .venv/bin/python bench/coldstart.py                 # about 1 minute on 2 cores
    .venv/bin/python bench/coldstart.py --repeat 9 --json

On a private redis-server (never 6379), the same two workers as bench/throughput.py: "rendered"
(`celery -A utils.workers.celery_app worker`, the generated configuration) and "baseline" (a bare
`Celery()` app with Celery's defaults), both prefork with the same `--concurrency`. Each round, for
each worker in turn (alternating the order), one `health_check` is queued before the worker
exists; the clock starts when the `celery` command is executed and stops when that task's result
is in the result backend: interpreter start, imports, configuration, broker connection, pool
start and the first task. Then the worker's memory is read (main process and pool processes):
the sum of RSS, and the sum of PSS, which shares the pages the pool processes inherit from the
main process among them instead of counting them once per process. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psutil
from celery import Celery

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import (
    BenchError,
    Contender,
    log_tail,
    prepare,
    signals_ignored,
    worker_env,
)

from tests.support.processes import ManagedProcess, wait_until


def worker_memory(process: ManagedProcess) -> dict[str, float]:
    """MB of the worker's main process and its pool processes: RSS summed and PSS summed."""
    main = psutil.Process(process.pid)
    rss = pss = 0
    for member in [main, *main.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            info = member.memory_full_info()
            rss += info.rss
            pss += info.pss
    return {"rss": round(rss / 2**20, 1), "pss": round(pss / 2**20, 1)}


def pool_size(process: ManagedProcess) -> int:
    return len(psutil.Process(process.pid).children(recursive=True))


def cold_start(
    contender: Contender, client: Celery, concurrency: int, workdir: Path, timeout: float
) -> tuple[float, dict[str, float]]:
    """Queue one task, exec the worker, time until its result is stored; then read its memory."""
    result = client.send_task(contender.task, queue=contender.queue)
    args = [sys.executable, "-m", "celery", "-A", contender.app_module, "worker", "--pool=prefork"]
    args += [f"--concurrency={concurrency}", "--loglevel=WARNING", "-n", f"{contender.label}@%h"]
    started = time.perf_counter()
    process = ManagedProcess(
        contender.label, args, cwd=workdir, env=worker_env(contender), log_dir=workdir
    ).start()
    try:
        try:
            value = result.get(timeout=timeout)
        except Exception as error:
            message = f"{contender.label}: first task: {error!r}\n{log_tail(process)}"
            raise BenchError(message) from None
        elapsed = time.perf_counter() - started
        if not (isinstance(value, dict) and value.get("status") == "ok"):
            raise BenchError(f"{contender.label}: unexpected result {value!r}")
        # Memory once every pool process is up and has settled after the first task.
        wait_until(lambda: pool_size(process) >= concurrency, timeout)
        time.sleep(1.0)  # nothing to poll: let the pool processes finish their start-up work
        memory = worker_memory(process)
    finally:
        process.stop()
    return elapsed, memory


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="rounds per worker (default 5)")
    parser.add_argument(
        "--concurrency", type=int, default=2, help="pool processes per worker (default 2)"
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds for one cold start (default 60)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    for name in ("repeat", "concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    load_before = os.getloadavg()[0]
    cpus = os.cpu_count() or 1
    times: dict[str, list[float]] = {}
    memory: dict[str, list[dict[str, float]]] = {}
    cleanup = contextlib.ExitStack()
    try:
        workdir, redis_version, contenders = prepare(cleanup, say)
        clients = {}
        for contender in contenders:
            client = Celery(
                f"bench-client-{contender.label}",
                broker=contender.broker_url,
                backend=contender.backend_url,
                set_as_current=False,
            )
            cleanup.callback(client.close)
            clients[contender.label] = client
            times[contender.label], memory[contender.label] = [], []
        # One start each first, not measured: the page cache holds every file both will read.
        for contender in contenders:
            cold_start(contender, clients[contender.label], args.concurrency, workdir, args.timeout)
        for round_number in range(1, args.repeat + 1):
            order = contenders if round_number % 2 else list(reversed(contenders))
            for contender in order:
                client = clients[contender.label]
                elapsed, used = cold_start(
                    contender, client, args.concurrency, workdir, args.timeout
                )
                times[contender.label].append(elapsed)
                memory[contender.label].append(used)
                say(
                    f"round {round_number}/{args.repeat} {contender.label:>8}: first task done "
                    f"{elapsed:.2f} s after exec; RSS {used['rss']:.1f} MB, PSS {used['pss']:.1f} MB"
                )
    finally:
        say("stopping redis-server")
        with signals_ignored():
            cleanup.close()
    median = {label: round(statistics.median(values), 3) for label, values in times.items()}
    memory_mb = {
        label: {key: round(statistics.median(m[key] for m in rows), 1) for key in ("rss", "pss")}
        for label, rows in memory.items()
    }
    return {
        "rounds": args.repeat,
        "concurrency": args.concurrency,
        "cold_start_s": {label: [round(v, 3) for v in values] for label, values in times.items()},
        "median_s": median,
        "ratio": round(median["rendered"] / median["baseline"], 3),
        "memory_mb": memory_mb,
        "memory_ratio": round(memory_mb["rendered"]["pss"] / memory_mb["baseline"]["pss"], 3),
        "rss_ratio": round(memory_mb["rendered"]["rss"] / memory_mb["baseline"]["rss"], 3),
        "celery": f"celery {version('celery')}",
        "redis_server": redis_version.split(" sha=")[0],
        "python": sys.version.split()[0],
        "cpus": cpus,
        "load_average_before": round(load_before, 2),
    }


def report(out: dict[str, Any]) -> None:
    print(
        f"Cold start (exec to first task's result) and memory, {out['rounds']} alternating "
        f"rounds, prefork -c {out['concurrency']}"
    )
    print(f"{'worker':>9} {'median s':>9} {'min':>6} {'max':>6} {'RSS MB':>8} {'PSS MB':>8}")
    for label in ("rendered", "baseline"):
        values = out["cold_start_s"][label]
        mem = out["memory_mb"][label]
        print(
            f"{label:>9} {out['median_s'][label]:>9.2f} {min(values):>6.2f} {max(values):>6.2f} "
            f"{mem['rss']:>8.1f} {mem['pss']:>8.1f}"
        )
    print(
        f"ratio rendered/baseline: cold start {out['ratio']:.2f} (goal <= 1.1), memory (PSS) "
        f"{out['memory_ratio']:.2f} (goal <= 1.1), RSS {out['rss_ratio']:.2f}; {out['celery']}, "
        f"{out['redis_server']}, Python {out['python']}, load {out['load_average_before']} on "
        f"{out['cpus']} CPUs before the run"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        out = run(args)
    except BenchError as error:
        print(f"coldstart: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        report(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
