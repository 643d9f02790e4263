"""Bulk enqueue: enqueue_many against a delay() loop and against the raw Redis client.

    .venv/bin/python bench/enqueue.py                 # 20,000 tasks; about a minute
    .venv/bin/python bench/enqueue.py --tasks 50000 --stream 200000

On a private redis-server (never the one on 6379), with the rendered default project (its Redis
broker and result backend), in one process:

- `delay()` loop: `process_document.delay(...)` for --loop tasks, one round trip each (and the
  result backend's subscription per task), as application code usually sends;
- `enqueue_many`: the same calls for --tasks tasks, in chunks of 1000;
- raw client: the physical limit, redis-py pipelines of LPUSH of the very payloads enqueue_many
  wrote (read back from the queue), no Celery at all;
- memory: the peak of Python allocations (tracemalloc) while `enqueue_stream` sends --stream
  tasks from a generator, against the same for a tenth of them: flat means streamed.

Each rate is messages per second; the ratios are enqueue_many against the loop (goal >= 10x) and
against the raw client.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from tests.support.redis_server import start_private_redis  # noqa: E402
from tests.support.render import render  # noqa: E402

DOCUMENT = {"format": "text", "text": "one two three"}


def arguments(count: int) -> Any:
    return ((f"doc-{index}", DOCUMENT) for index in range(count))


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000, help="enqueue_many and raw client")
    parser.add_argument("--loop", type=int, default=2_000, help="delay() loop (slow: fewer)")
    parser.add_argument("--stream", type=int, default=100_000, help="tasks for the memory check")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    options = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ccw-bench-enqueue-"))
    server, port = start_private_redis(work)
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        project = render(work / "project", {})
        os.environ["CELERY_BROKER_URL"] = f"redis://127.0.0.1:{port}/0"
        os.environ["CELERY_RESULT_BACKEND"] = f"redis://127.0.0.1:{port}/1"
        sys.path.insert(0, str(project.path))
        from utils.workers import enqueue_many  # type: ignore[import-not-found]
        from utils.workers.bulk import enqueue_stream  # type: ignore[import-not-found]
        from utils.workers.tasks import process_document  # type: ignore[import-not-found]

        process_document.delay("warm-up", DOCUMENT)
        started = time.perf_counter()
        for args in arguments(options.loop):
            process_document.delay(*args)
        loop = rate(options.loop, time.perf_counter() - started)
        client.delete("default")

        started = time.perf_counter()
        ids = enqueue_many(process_document, arguments(options.tasks))
        bulk = rate(options.tasks, time.perf_counter() - started)
        assert len(ids) == options.tasks == client.llen("default")

        payloads = client.lrange("default", 0, -1)
        client.delete("default")
        started = time.perf_counter()
        for first in range(0, len(payloads), 1000):
            pipe = client.pipeline(transaction=False)
            for payload in payloads[first : first + 1000]:
                pipe.lpush("default", payload)
            pipe.execute()
        raw = rate(len(payloads), time.perf_counter() - started)
        size = sum(len(payload) for payload in payloads) / len(payloads)
        del payloads
        client.delete("default")

        peaks = {}
        for count in (options.stream // 10, options.stream):
            gc.collect()
            tracemalloc.start()
            sent = sum(1 for _ in enqueue_stream(process_document, arguments(count)))
            peaks[count] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert sent == count
            client.delete("default")

        figures = {
            "delay_loop_per_s": round(loop),
            "enqueue_many_per_s": round(bulk),
            "raw_pipeline_per_s": round(raw),
            "ratio_to_loop": round(bulk / loop, 1),
            "ratio_to_raw": round(bulk / raw, 2),
            "message_bytes": round(size),
            "stream_peak_bytes": {str(count): peak for count, peak in peaks.items()},
        }
        if options.json:
            print(json.dumps(figures))
            return
        small, large = sorted(peaks)
        rows = [
            ("delay() loop", f"{loop:,.0f}/s", f"{options.loop:,} tasks", ""),
            ("enqueue_many", f"{bulk:,.0f}/s", f"{options.tasks:,} tasks", "goal: >= 10x the loop"),
            ("raw redis-py pipeline", f"{raw:,.0f}/s", "same payloads", "the physical limit"),
            (
                "enqueue_many / loop",
                f"{bulk / loop:.1f}x",
                "",
                "PASS" if bulk >= 10 * loop else "MISS",
            ),
            ("enqueue_many / raw", f"{bulk / raw:.2f}x", "", ""),
            ("peak Python memory", f"{peaks[small] / 1e6:.1f} MB", f"{small:,} streamed", ""),
            ("peak Python memory", f"{peaks[large] / 1e6:.1f} MB", f"{large:,} streamed", ""),
        ]
        print(f"message size {size:,.0f} bytes; Redis on 127.0.0.1:{port}")
        for name, value, scale, note in rows:
            print(f"{name:24} {value:>12}  {scale:20} {note}")
    finally:
        client.close()
        server.stop()


if __name__ == "__main__":
    main()
