"""bench/report.py on fake results (no benchmark is run), and bench/run's arguments and lint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from .support import tools
from .support.render import TEMPLATE_ROOT

REPORT = TEMPLATE_ROOT / "bench" / "report.py"
RUN = TEMPLATE_ROOT / "bench" / "run"

# What each script prints with --json (trimmed to what the report reads, and a little more).
THROUGHPUT = {
    "tasks": 2000,
    "repeat": 5,
    "cpus": 2,
    "load_average_before": 0.4,
    "python": "3.11.7",
    "celery": "celery 5.7.0",
    "kombu": "kombu 5.7.0",
    "redis_server": "Redis server v=7.0.15",
    "workers": {
        "rendered": {"median": 1050.0, "min": 1000.0, "max": 1100.0, "cpu_ms_per_task_median": 2.4},
        "baseline": {"median": 1000.0, "min": 950.0, "max": 1020.0, "cpu_ms_per_task_median": 3.0},
    },
    "ratio": 1.05,
}
LATENCY = [
    {"layout": "generated", "samples": 200, "start_p50_ms": 6.9, "start_p99_ms": 24.9},
    {"layout": "one worker", "samples": 10, "start_p50_ms": 1003.0, "start_p99_ms": 3024.0},
]
ENQUEUE = {
    "delay_loop_per_s": 527,
    "enqueue_many_per_s": 8476,
    "raw_pipeline_per_s": 75455,
    "ratio_to_loop": 16.1,
    "ratio_to_raw": 0.11,
    "message_bytes": 1079,
    "stream_peak_bytes": {"10000": 3_000_000, "100000": 3_100_000},
}
COLDSTART = {
    "rounds": 5,
    "cold_start_s": {"rendered": [2.3, 2.4, 2.2, 2.3, 2.5], "baseline": [2.0, 2.1, 2.0, 2.2, 2.1]},
    "median_s": {"rendered": 2.3, "baseline": 2.1},
    "ratio": 1.095,
    "memory_mb": {
        "rendered": {"rss": 165.0, "pss": 101.0},
        "baseline": {"rss": 160.0, "pss": 90.0},
    },
    "memory_ratio": 1.122,
}
COPYTIME = {
    "runs": 5,
    "seconds": [0.9, 0.8, 0.85, 0.95, 0.9],
    "median_s": 0.9,
    "floor_median_s": 0.45,
    "copier": "copier 9",
}
RESULTS: dict[str, Any] = {
    "throughput": THROUGHPUT,
    "latency": LATENCY,
    "enqueue": ENQUEUE,
    "coldstart": COLDSTART,
    "copytime": COPYTIME,
}


def write_results(directory: Path, results: dict[str, Any], failed: dict[str, str]) -> Path:
    """What bench/run leaves: NAME.json (stdout), NAME.err (stderr), NAME.status."""
    directory.mkdir()
    for name, data in results.items():
        if data is None:
            (directory / f"{name}.status").write_text(json.dumps({"missing": f"bench/{name}.py"}))
            continue
        # Copier's post-copy task prints to stdout before the JSON (bench/enqueue.py, latency.py).
        (directory / f"{name}.json").write_text(
            "created utils/__init__.py\n" + json.dumps(data, indent=2)
        )
        (directory / f"{name}.err").write_text(failed.get(name, f"{name}: progress\n"))
        status = {"rc": 1 if name in failed else 0, "seconds": 12, "load_average_before": 0.5}
        (directory / f"{name}.status").write_text(json.dumps({**status, "command": name}))
    return directory


def report(results: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "100"}
    return subprocess.run(
        [sys.executable, str(REPORT), str(results), "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def cells(table: str, metric: str) -> list[str]:
    """The table row that starts with `metric`, as its stripped cells after the metric's."""
    for line in table.splitlines():
        parts = [part.strip() for part in line.split("│")]
        if len(parts) > 2 and parts[1] == metric:
            return parts[2:-1]
    raise AssertionError(f"no row {metric!r} in:\n{table}")


def test_every_metric_gets_a_row_against_its_goal(tmp_path: Path) -> None:
    done = report(write_results(tmp_path / "results", RESULTS, {}), tmp_path / "out")
    assert done.returncode == 0, done.stderr
    table = done.stdout
    box = table[: table.index("┘") + 1].splitlines()
    assert max(map(len, box)) <= 100, table
    expected = {
        "throughput tasks/s, vs bare Celery": ["1,050", "1,000", "1.05x", "ratio >= 1.0", "yes"],
        "worker CPU ms/task, vs bare Celery": ["2.40", "3.00", "0.80x", "- (below 1: less)", "-"],
        "urgent p99 ms, vs one-worker layout": ["24.9", "3,024.0", "0.008x", "<= 100 ms", "yes"],
        "urgent p50 ms, vs one-worker layout": ["6.9", "1,003.0", "0.007x", "-", "-"],
        "enqueue_many /s, vs delay() loop": ["8,476", "527", "16.1x", "ratio >= 10", "yes"],
        "enqueue_many /s, vs raw pipeline": ["8,476", "75,455", "0.11x", "- (limit)", "-"],
        "stream peak MB, 100% vs 10%": ["3.1", "3.0", "1.03x", "ratio <= 1.2", "yes"],
        "cold start s, vs bare Celery": ["2.30", "2.10", "1.10x", "ratio <= 1.1", "yes"],
        "worker PSS MB, vs bare Celery": ["101.0", "90.0", "1.12x", "ratio <= 1.1", "no"],
        "copier copy s, vs a 1-file template": ["0.90", "0.45", "2.00x", "<= 1.0 s", "yes"],
    }
    for metric, row in expected.items():
        assert cells(table, metric) == row, metric
    assert "2 cores" in table and "Redis server v=7.0.15" in table and "celery 5.7.0" in table

    saved = json.loads((tmp_path / "out" / "bench-results.json").read_text())
    assert [row["metric"] for row in saved["rows"]] == list(expected)
    assert [row["met"] for row in saved["rows"]] == [
        True, None, True, None, True, None, True, True, False, True
    ]  # fmt: skip
    assert saved["benches"]["coldstart"]["result"] == COLDSTART
    assert saved["machine"]["redis_server"] == "Redis server v=7.0.15"


def test_the_chart_is_a_png(tmp_path: Path) -> None:
    tools.require("matplotlib")
    done = report(write_results(tmp_path / "results", RESULTS, {}), tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert f"chart: {tmp_path / 'out' / 'bench.png'}" in done.stdout
    assert (tmp_path / "out" / "bench.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_a_missing_bench_is_named_in_its_rows_and_is_no_failure(tmp_path: Path) -> None:
    results = write_results(tmp_path / "results", {**RESULTS, "coldstart": None}, {})
    done = report(results, tmp_path / "out")
    assert done.returncode == 0, done.stderr
    for metric in ("cold start s, vs bare Celery", "worker PSS MB, vs bare Celery"):
        assert cells(done.stdout, metric) == ["missing", "-", "-", "ratio <= 1.1", "-"]
    assert "coldstart: missing (bench/coldstart.py not found)" in done.stdout
    assert cells(done.stdout, "copier copy s, vs a 1-file template")[0] == "0.90"


def test_a_failed_bench_fails_the_run_with_its_stderr_tail(tmp_path: Path) -> None:
    stderr = "".join(f"line {n}\n" for n in range(100)) + "benchmark failed: worker exited\n"
    results = write_results(tmp_path / "results", RESULTS, {"throughput": stderr})
    done = report(results, tmp_path / "out")
    assert done.returncode == 1
    assert cells(done.stdout, "throughput tasks/s, vs bare Celery")[0] == "failed"
    assert cells(done.stdout, "urgent p99 ms, vs one-worker layout")[0] == "24.9"
    assert "throughput failed: exit status 1" in done.stderr
    assert "benchmark failed: worker exited" in done.stderr
    assert "line 99" in done.stderr and "line 10\n" not in done.stderr  # the tail only


def test_output_without_the_expected_json_is_a_failure(tmp_path: Path) -> None:
    results = write_results(tmp_path / "results", {"copytime": {"runs": 5}}, {})
    done = report(results, tmp_path / "out", "--benches", "copytime")
    assert done.returncode == 1
    assert cells(done.stdout, "copier copy s, vs a 1-file template")[0] == "failed"
    assert "KeyError" in done.stderr


def test_bench_run_refuses_an_unknown_bench_before_any_setup(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(RUN), "--only", "throughput,nosuch", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "unknown bench 'nosuch'" in done.stderr
    assert "Setting up .venv" not in done.stderr and list(tmp_path.iterdir()) == []


def test_bench_run_passes_shellcheck() -> None:
    checked = subprocess.run(
        [tools.executable("shellcheck"), "--external-sources", str(RUN)],
        cwd=TEMPLATE_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout
