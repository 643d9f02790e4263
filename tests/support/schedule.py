"""The order of the tests for `--dist worksteal`: the longest first, the work even across workers.

xdist's worksteal gives worker k the k-th contiguous slice of the collected items, slices of equal
count (len(pending) // workers left, in turn), and an idle worker takes the tail half of the
longest queue. The run ends when the last worker does, so each slice gets about the same expected
time (the longest tests placed first, each on the slice with the least time so far), and within
a slice the longest come first: what is stolen at the end is short work.

The expected times are the durations (setup, call and teardown) of an earlier full run,
tests/data/durations.json, written by `./scripts/test --store-durations`. A test not in it counts
as the median of its file's known tests, or 1 s; a `long` test as at least a minute.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

DURATIONS = Path(__file__).resolve().parents[1] / "data" / "durations.json"
LONG = 60.0
UNKNOWN = 1.0


class Item(Protocol):
    @property
    def nodeid(self) -> str: ...

    def get_closest_marker(self, name: str) -> Any: ...


T = TypeVar("T", bound=Item)


def load(path: Path = DURATIONS) -> dict[str, float]:
    try:
        return {str(k): float(v) for k, v in json.loads(path.read_text()).items()}
    except FileNotFoundError:
        return {}


def expected(items: Sequence[Item], known: dict[str, float]) -> list[float]:
    by_file: dict[str, list[float]] = defaultdict(list)
    for nodeid, seconds in known.items():
        by_file[nodeid.split("::")[0]].append(seconds)
    medians = {name: statistics.median(times) for name, times in by_file.items()}
    times = []
    for item in items:
        seconds = known.get(item.nodeid, medians.get(item.nodeid.split("::")[0], UNKNOWN))
        times.append(max(seconds, LONG) if item.get_closest_marker("long") else seconds)
    return times


def slice_sizes(count: int, workers: int) -> list[int]:
    """How worksteal splits `count` items: each worker in turn gets what is left // workers left."""
    sizes = []
    for index in range(workers):
        size = count // (workers - index)
        sizes.append(size)
        count -= size
    return sizes


def arrange(items: Sequence[T], workers: int, known: dict[str, float]) -> list[T]:
    """`items` reordered into `workers` slices of balanced expected time (a stable order: every
    xdist worker computes the same one, as xdist requires)."""
    times = expected(items, known)
    if workers < 2:
        order = sorted(range(len(items)), key=lambda i: -times[i])
        return [items[i] for i in order]
    sizes = slice_sizes(len(items), workers)
    slices: list[list[int]] = [[] for _ in sizes]
    totals = [0.0] * workers
    for index in sorted(range(len(items)), key=lambda i: -times[i]):
        open_slices = [k for k in range(workers) if len(slices[k]) < sizes[k]]
        target = min(open_slices, key=lambda k: (totals[k], k))
        slices[target].append(index)
        totals[target] += times[index]
    return [items[i] for part in slices for i in part]


def store(durations: dict[str, float], path: Path = DURATIONS) -> None:
    """Write the durations of a run, one test per line, sorted: a readable diff when it changes."""
    rounded = {nodeid: round(seconds, 1) for nodeid, seconds in sorted(durations.items())}
    path.write_text(json.dumps(rounded, indent=0, sort_keys=True) + "\n")
