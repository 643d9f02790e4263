"""The sample workflows (workflows.py) through the in-process worker."""

from __future__ import annotations

{% if result_backend == 'redis' -%}
import hashlib
import time

import pytest
from celery.exceptions import ChordError
{% endif -%}
from celery.result import AsyncResult{% if result_backend == 'redis' %}, GroupResult{% endif %}
from celery.worker import WorkController

from {{ package_path }}.workflows import (
    document_pipeline,
{%- if result_backend == 'redis' %}
    enqueue_summary,
    summarize_batch,
{%- endif %}
)


def test_the_pipeline_passes_each_result_to_the_next_step(worker: WorkController) -> None:
    result = document_pipeline("doc-1", "to be or not to be").apply_async()
    assert result.get(timeout=30) == {
        "document_id": "doc-1",
        "words": 6,
        "unique_words": 4,
        "summary": "6 words, most frequent: to, be, or",
    }
    first = result.parent
    assert isinstance(first, AsyncResult) and first.get(timeout=30)["words"] == 6
{%- if result_backend == 'redis' %}


def documents(count: int, failing: int = -1) -> list[tuple[str, dict[str, str]]]:
    return [
        (f"doc-{i}", {"format": "pdf" if i == failing else "text", "text": f"word{i} more"})
        for i in range(count)
    ]


def fingerprint(count: int) -> str:
    batch = hashlib.sha256()
    for i in range(count):
        batch.update(hashlib.sha256(f"word{i} more".encode()).digest())
    return batch.hexdigest()


def test_a_batch_is_summarised_once_in_document_order(worker: WorkController) -> None:
    expected = {
        "documents": 12,
        "words": 24,
        "formats": {"text": 12},
        "batch_sha256": fingerprint(12),
    }
    assert summarize_batch(documents(12)).apply_async().get(timeout=30) == expected
    sent = enqueue_summary(documents(12))
    assert sent.result.get(timeout=30) == expected
    assert [member.get(timeout=30)["document_id"] for member in sent.header] == [
        f"doc-{i}" for i in range(12)
    ]


def test_a_failed_document_fails_the_summary_and_names_it(worker: WorkController) -> None:
    chord_result = summarize_batch(documents(6, failing=2)).apply_async()
    sent = enqueue_summary(documents(6, failing=2))
    for result, header in ((chord_result, chord_result.parent), sent):
        # get() raises the document's own error if it already knows of it, else the ChordError.
        with pytest.raises((ValueError, ChordError), match="pdf"):
            result.get(timeout=30)
        wait = time.monotonic() + 30
        while not result.ready() and time.monotonic() < wait:
            time.sleep(0.05)
        assert isinstance(result.result, ChordError) and "pdf" in str(result.result)
        assert isinstance(header, GroupResult) and header.results is not None
        states = [member.state for member in header.results]
        assert states == ["SUCCESS", "SUCCESS", "FAILURE", "SUCCESS", "SUCCESS", "SUCCESS"]


def test_an_empty_batch_is_summarised_at_once(worker: WorkController) -> None:
    summary = enqueue_summary([]).result.get(timeout=30)
    assert summary["documents"] == 0 and summary["words"] == 0
{%- endif %}
