"""Urgent latency under load: how long an urgent task waits while long tasks fill the default queue.

    .venv/bin/python bench/latency.py                   # about 2 minutes on 2 cores
    .venv/bin/python bench/latency.py --samples 500 --json

On a private redis-server (never 6379), with the rendered default project, two layouts in one
run, each with long `analyze_content` tasks filling the default queue and then `health_check`
sent one after the other (the client waits for each result before the next send):

- **generated** (1.2): what every deployment target runs: a main worker on every queue but the
  urgent one (`-Q default`, 2 processes) and an urgent worker on `high_priority` (1 process);
- **one worker** (1.1 outside systemd): a single worker on every queue (2 processes).

Send to start is the health check's own `checked_at` minus the send time (one machine, one clock);
send to result adds the run and the result's way back. The one-worker layout waits behind a long
task for every sample, so it takes fewer samples with shorter long tasks.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.redis_server import start_private_redis  # noqa: E402
from tests.support.render import render  # noqa: E402
from tests.support.stack import Namespace, Stack  # noqa: E402


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def measure(
    stack: Stack, layout: str, samples: int, long_tasks: int, seconds: int
) -> dict[str, Any]:
    if layout == "generated":
        stack.worker("main", queues="default")
        stack.worker("urgent", queues="high_priority", concurrency=1)
    else:
        stack.worker("all")
    out = stack.probe(
        "urgent_latency",
        timeout=600,
        long_tasks=long_tasks,
        seconds=seconds,
        samples=samples,
    )
    starts = out["starts"]
    return {
        "layout": layout,
        "samples": samples,
        "start_p50_ms": round(statistics.median(starts) * 1000, 1),
        "start_p99_ms": round(percentile(starts, 0.99) * 1000, 1),
        "start_max_ms": round(max(starts) * 1000, 1),
        "result_p50_ms": round(statistics.median(out["latencies"]) * 1000, 1),
        "long_unfinished": out["long_unfinished"],
        "workers": sorted(set(out["workers"])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ccw-bench-latency-"))
    server, port = start_private_redis(work, extra_args=["--databases", "8"])
    project = render(work / "project", {})
    rows = []
    try:
        layouts = [("generated", options.samples, 6, 30), ("one worker", 10, 12, 3)]
        for index, (layout, samples, long_tasks, seconds) in enumerate(layouts):
            url = f"redis://127.0.0.1:{port}/{2 * index}"
            backend = f"redis://127.0.0.1:{port}/{2 * index + 1}"
            log_dir = work / f"stack{index}"
            log_dir.mkdir()
            stack = Stack(project, Namespace(url, backend), log_dir)
            try:
                rows.append(measure(stack, layout, samples, long_tasks, seconds))
            finally:
                stack.close()
    finally:
        server.stop()
    if options.json:
        print(json.dumps(rows))
        return
    print(
        f"{'layout':12} {'samples':>7} {'start p50':>10} {'p99':>9} {'max':>9} {'result p50':>11}"
    )
    for row in rows:
        print(
            f"{row['layout']:12} {row['samples']:7} {row['start_p50_ms']:8.1f}ms"
            f" {row['start_p99_ms']:7.1f}ms {row['start_max_ms']:7.1f}ms"
            f" {row['result_p50_ms']:9.1f}ms  long tasks unfinished: {row['long_unfinished']}"
        )
    generated = rows[0]
    verdict = "PASS" if generated["start_p99_ms"] <= 100 else "MISS"
    print(f"goal: p99 send to start <= 100 ms with the generated layout: {verdict}")


if __name__ == "__main__":
    main()
