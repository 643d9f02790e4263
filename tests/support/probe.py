"""The client side of the boot tests, run inside a rendered project the way user code runs.

    python probe.py <package_path> <command> '<json kwargs>'

Imports the rendered package (so its routing and serializer settings apply), drives its tasks through
the broker, and prints one JSON object on stdout.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any


def samples(tasks: ModuleType, client: ModuleType, timeout: float = 60) -> dict[str, Any]:
    """Run every sample task once; record the progress states analyze_content reports."""
    out: dict[str, Any] = {}
    document = tasks.process_document.delay(
        "doc-1", {"format": "text", "text": " hello  new world "}
    )
    out["process_document"] = document.get(timeout=timeout)

    analysis = tasks.analyze_content.delay(
        "lorem ipsum dolor " * 40, chunk_size=24, step_delay=0.25
    )
    seen: list[list[Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = client.get_progress(analysis)
        row = [progress.state, progress.progress, progress.current, progress.total, progress.status]
        if not seen or seen[-1] != row:
            seen.append(row)
        if progress.ready:
            break
        time.sleep(0.05)
    out["analyze_content"] = analysis.get(timeout=timeout)
    out["analyze_content_progress"] = seen

    retried = tasks.deliver_notification.delay("ops@example.com", "disk full", fail_times=2)
    out["deliver_notification"] = retried.get(timeout=timeout)

    with tempfile.TemporaryDirectory() as scratch:
        stale = Path(scratch, "stale.tmp")
        stale.write_text("old")
        a_day_ago = time.time() - 86400
        os.utime(stale, (a_day_ago, a_day_ago))
        Path(scratch, "fresh.tmp").write_text("new")
        cleaned = tasks.cleanup.delay(max_age_seconds=3600, directory=scratch)
        out["cleanup"] = cleaned.get(timeout=timeout)
        out["cleanup_left"] = sorted(os.listdir(scratch))

    out["generate_report"] = tasks.generate_report.delay("daily").get(timeout=timeout)
    out["health_check"] = tasks.health_check.delay().get(timeout=timeout)

    pending = [tasks.health_check.delay(), tasks.process_document.delay("doc-2")]
    out["gathered"] = asyncio.run(
        client.gather_results(pending, timeout=timeout, poll_interval=0.1)
    )
    return out


def roundtrip(tasks: ModuleType, client: ModuleType, timeout: float = 60) -> dict[str, Any]:
    """One task through the broker to a worker, its result back through the backend."""
    document = tasks.process_document.delay("doc-1", {"format": "text", "text": "over the wire"})
    return {"process_document": document.get(timeout=timeout)}


def send(
    tasks: ModuleType, client: ModuleType, task: str, count: int = 1, args: list[Any] | None = None
) -> dict[str, Any]:
    """Publish `count` calls of a sample task without waiting; report where they were routed."""
    sent = [getattr(tasks, task).apply_async(args or []) for _ in range(count)]
    return {"ids": [result.id for result in sent]}


def call(tasks: ModuleType, client: ModuleType, task: str, args: list[Any] | None = None) -> Any:
    """One call of a task of the tasks module (a sample task, or one a test added), its result."""
    return getattr(tasks, task).delay(*(args or [])).get(timeout=60)


def urgent_latency(
    tasks: ModuleType,
    client: ModuleType,
    long_tasks: int = 4,
    seconds: int = 8,
    samples: int = 5,
    timeout: float = 60,
) -> dict[str, Any]:
    """Fill the default queue with `long_tasks` analyze_content calls of about `seconds` each,
    wait until one runs, then send health_check `samples` times, one after the other: the
    seconds from each send to its result (an upper bound of the time to start), who ran it, and
    how many long tasks were still unfinished at the end (the default queue stayed saturated)."""
    longs = [tasks.analyze_content.delay("w " * seconds, 1, 1.0) for _ in range(long_tasks)]
    deadline = time.monotonic() + timeout
    while not any(result.state == "PROGRESS" for result in longs):
        if time.monotonic() > deadline:
            raise TimeoutError("no long task started")
        time.sleep(0.05)
    latencies, starts, workers = [], [], []
    for _ in range(samples):
        sent, sent_at = time.monotonic(), time.time()
        value = tasks.health_check.delay().get(timeout=timeout, interval=0.01)
        latencies.append(time.monotonic() - sent)
        # health_check reports when it ran: send to start, on this machine's one clock.
        starts.append(datetime.fromisoformat(value["checked_at"]).timestamp() - sent_at)
        workers.append(value["worker"])
    unfinished = sum(1 for result in longs if not result.ready())
    return {
        "latencies": latencies,
        "starts": starts,
        "workers": workers,
        "long_unfinished": unfinished,
    }


def loop_lag(tasks: ModuleType, client: ModuleType, words: int = 20, timeout: float = 60) -> Any:
    """Await analyze_content (`words` chunks of 0.1 s) with client.wait_for_result while a ticker
    measures how late the event loop wakes it (every 10 ms); sent from the loop's own thread, as
    async code does. The largest lag, the states seen, and the result."""

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        lags: list[float] = []
        done = asyncio.Event()

        awaiting = asyncio.Event()

        async def ticker() -> None:
            while not done.is_set():
                start = loop.time()
                await asyncio.sleep(0.01)
                if awaiting.is_set():  # not the send: its first connection blocks, as delay() does
                    lags.append(loop.time() - start - 0.01)

        ticking = asyncio.create_task(ticker())
        result = tasks.analyze_content.delay("w " * words, 1, 0.1)
        awaiting.set()
        states: list[str] = []
        value = await client.wait_for_result(
            result, timeout=timeout, poll_interval=0.1, on_progress=lambda p: states.append(p.state)
        )
        done.set()
        await ticking
        return {"max_lag": max(lags), "ticks": len(lags), "states": states, "words": value["words"]}

    return asyncio.run(main())


def _raw(app: Any, queue: str) -> dict[str, Any]:
    """The next message of `queue`, taken off it as a worker would see it."""
    with app.connection_for_read() as connection:
        bound = app.amqp.queues[queue].bind(connection.default_channel)
        message = bound.get(no_ack=True, accept=["json"])
        assert message is not None, f"no message in {queue}"
        return {
            "headers": dict(message.headers),
            "properties": {
                k: v
                for k, v in message.properties.items()
                if k not in ("delivery_info", "application_headers")  # headers: above
            },
            "routing_key": message.delivery_info.get("routing_key"),
            "body": message.decode(),
            "content_type": message.content_type,
        }


def bulk_messages(tasks: ModuleType, client: ModuleType, queue: str) -> dict[str, Any]:
    """With no worker running: one process_document through apply_async and one through
    enqueue_many; both messages as they sit in `queue`."""
    package = importlib.import_module(tasks.__name__.rsplit(".", 1)[0])
    document = {"format": "text", "text": "same words"}
    single = tasks.process_document.apply_async(("doc-1", document)).id
    (bulk,) = package.enqueue_many(tasks.process_document, [("doc-2",)], [{"options": document}])
    app = tasks.process_document.app
    return {"ids": [single, bulk], "messages": [_raw(app, queue), _raw(app, queue)]}


def bulk_run(
    tasks: ModuleType,
    client: ModuleType,
    count: int,
    chunk_size: int,
    fail_at: int = -1,
    results: bool = True,
) -> dict[str, Any]:
    """enqueue_many of `count` process_document calls; their results in order (unless not
    `results`). fail_at: the argument iterator raises there (a failure mid-way)."""
    package = importlib.import_module(tasks.__name__.rsplit(".", 1)[0])
    from celery.result import AsyncResult

    def arguments() -> Any:
        for index in range(count):
            if index == fail_at:
                raise RuntimeError(f"no argument {index}")
            yield (f"doc-{index}", {"format": "text", "text": "one two three"})

    started = time.perf_counter()
    try:
        ids = package.enqueue_many(tasks.process_document, arguments(), chunk_size=chunk_size)
        error = None
    except Exception as failure:
        ids, error = failure.ids, {"type": type(failure).__name__, "accepted": failure.accepted,
                                   "message": str(failure)}  # fmt: skip
    sent = time.perf_counter() - started
    documents = [
        AsyncResult(task_id).get(timeout=120)["document_id"] for task_id in (ids if results else [])
    ]
    return {"ids": ids, "documents": documents, "error": error, "seconds": sent}


def workflows(
    tasks: ModuleType, client: ModuleType, batch: int, bulk: int, chunk: int, fail_at: int
) -> dict[str, Any]:
    """The sample workflows: the pipeline (and one whose first step fails), the chord of `batch`
    documents (and one whose document `fail_at` fails), `bulk` documents sent in chunks of
    `chunk` with enqueue_chord (enqueue_summary's call with a chunk size), and `batch` documents
    with the same failure sent with enqueue_summary."""
    package = tasks.__name__.rsplit(".", 1)[0]
    flows = importlib.import_module(package + ".workflows")
    bulk_module = importlib.import_module(package + ".bulk")
    from celery import chain

    def documents(count: int, failing: int = -1) -> list[Any]:
        return [
            (f"doc-{index}", {"format": "pdf" if index == failing else "text",
                              "text": f"word{index} common  words"})
            for index in range(count)
        ]  # fmt: skip

    def outcome(result: Any, timeout: float = 120) -> dict[str, Any]:
        try:
            return {"state": "SUCCESS", "value": result.get(timeout=timeout)}
        except Exception as error:  # the chord's ChordError, or a failed member's own error
            deadline = time.monotonic() + timeout
            while not result.ready() and time.monotonic() < deadline:
                time.sleep(0.05)
            stored = result.result
            return {"state": result.state, "raised": type(error).__name__,
                    "error": type(stored).__name__, "message": str(stored)}  # fmt: skip

    def members(header: Any) -> list[str]:
        return [member.state for member in header.results]

    out: dict[str, Any] = {}
    begun = time.perf_counter()

    def mark(step: str) -> None:
        print(f"{time.perf_counter() - begun:7.2f} s {step}", file=sys.stderr, flush=True)

    piped = flows.document_pipeline("doc-p", "to be or not to be").apply_async()
    out["pipeline"] = outcome(piped)
    out["pipeline_first"] = piped.parent.get(timeout=30)["words"]
    broken = chain(tasks.analyze_content.si("x", chunk_size=0), flows.describe_analysis.s("doc-b"))
    broken_result = broken.apply_async()
    out["pipeline_failed"] = outcome(broken_result.parent)
    out["pipeline_failed_second"] = outcome(broken_result)  # marked failed, never run

    for name, count, failing in (("chord", batch, -1), ("chord_failed", batch, fail_at)):
        result = flows.summarize_batch(documents(count, failing)).apply_async()
        out[name] = outcome(result)
        out[name + "_members"] = members(result.parent)
        mark(name)
    started = time.perf_counter()
    summary = flows.summarize_documents.s()
    sent = bulk_module.enqueue_chord(
        tasks.process_document, documents(bulk), summary, chunk_size=chunk
    )
    out["bulk_sent_seconds"] = time.perf_counter() - started
    out["bulk"] = outcome(sent.result, timeout=600)
    out["bulk_seconds"] = time.perf_counter() - started
    out["bulk_ids"] = len({member.id for member in sent.header.results})
    mark("bulk")
    sent = flows.enqueue_summary(documents(batch, fail_at))
    out["bulk_failed"] = outcome(sent.result)
    out["bulk_failed_members"] = members(sent.header)
    out["failed_id"] = sent.header.results[fail_at].id
    return out


def expire_results(tasks: ModuleType, client: ModuleType, timeout: float = 60) -> dict[str, Any]:
    """Database result backends, after `samples` (one process for both): a failure stored and
    read back; then two results, the first made older than result_expires (its date_done moved
    back in the backend's table), and celery.backend_cleanup sent through the worker, as beat
    sends it."""
    from datetime import timedelta

    from sqlalchemy import update

    ran = samples(tasks, client, timeout)
    app = tasks.process_document.app
    failed = tasks.process_document.delay("doc-bad", {"format": "pdf"})
    failed.get(timeout=timeout, propagate=False)
    progress = client.get_progress(failed)
    old, fresh = tasks.health_check.delay(), tasks.health_check.delay()
    old.get(timeout=timeout), fresh.get(timeout=timeout)
    table = app.backend.task_cls
    age = timedelta(seconds=app.conf.result_expires + 3600)
    session = app.backend.ResultSession()
    try:
        moved = update(table).where(table.task_id == old.id)
        session.execute(moved.values(date_done=table.date_done - age))
        session.commit()
    finally:
        session.close()
    cleanup = app.send_task("celery.backend_cleanup")
    cleanup.get(timeout=timeout)
    return {
        "samples": ran,
        "failed": {"id": failed.id, "state": progress.state, "status": progress.status},
        "old": old.id,
        "fresh": fresh.id,
        "cleanup": cleanup.id,
    }


COMMANDS = {
    "workflows": workflows,
    "samples": samples,
    "roundtrip": roundtrip,
    "send": send,
    "call": call,
    "bulk_messages": bulk_messages,
    "bulk_run": bulk_run,
    "urgent_latency": urgent_latency,
    "loop_lag": loop_lag,
    "expire_results": expire_results,
}


def main() -> None:
    package, command = sys.argv[1], sys.argv[2]
    kwargs = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    tasks = importlib.import_module(f"{package}.tasks")
    client = importlib.import_module(f"{package}.client")
    print(json.dumps(COMMANDS[command](tasks, client, **kwargs)))


if __name__ == "__main__":
    main()
