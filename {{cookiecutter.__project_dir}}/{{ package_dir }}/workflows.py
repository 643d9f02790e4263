"""Workflows: a pipeline of steps (a chain) and a batch with one summary (a chord).

Which one to use:
- Steps that need the previous step's result: a chain (`document_pipeline`). Each step runs when
  the one before it succeeded, with that result as its first argument; a failure ends the chain.
- Many independent calls, then one result made from all of them: a chord (`summarize_batch` for
  up to a few hundred calls, `enqueue_summary` for thousands: it publishes the calls in bulk,
  and its result does not make `.get()` check every call on each wait).
- Many independent calls and no combined result: `enqueue_many` (bulk.py), no chord.
{%- if result_backend != 'redis' %}

A chord needs a result backend that keeps the calls' results for the summary: Redis does;
{%- if result_backend == 'rpc' %} rpc:// sends each result to its caller only, so Celery refuses
chords on it (NotImplementedError).
{%- elif result_backend == 'postgresql' %} PostgreSQL keeps them too, but Celery has no native
join there: each chord is watched by a celery.chord_unlock task that polls the database every
second until every call is done.
{%- else %} this project stores no results, so Celery refuses chords (NotImplementedError).
{%- endif %} The chord helpers are left out; chains work on any backend.
{%- endif %}

https://docs.celeryq.dev/en/stable/userguide/canvas.html
"""

from __future__ import annotations

{% if result_backend == 'redis' -%}
import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
{% endif -%}
from typing import Any

{% if result_backend == 'redis' -%}
from celery import Signature, chain, chord, shared_task

from .bulk import ChordSent, enqueue_chord
from .tasks import analyze_content, process_document
{%- else -%}
from celery import Signature, chain, shared_task

from .tasks import analyze_content
{%- endif %}


@shared_task
def describe_analysis(analysis: dict[str, Any], document_id: str) -> dict[str, Any]:
    """The pipeline's second step: analyze_content's result as a short record of the document."""
    top = ", ".join(word for word, _ in analysis["top_words"][:3]) or "none"
    return {
        "document_id": document_id,
        "words": analysis["words"],
        "unique_words": analysis["unique_words"],
        "summary": f"{analysis['words']} words, most frequent: {top}",
    }


def document_pipeline(document_id: str, text: str) -> Signature[Any]:
    """analyze_content(text), then describe_analysis(its result, document_id). Send it with
    `.apply_async()`; the AsyncResult is the last step's, its `.parent` the first step's."""
    return chain(analyze_content.si(text), describe_analysis.s(document_id))
{%- if result_backend == 'redis' %}


@shared_task
def summarize_documents(results: list[dict[str, Any]]) -> dict[str, Any]:
    """A chord's summary: process_document's results, in the order the documents were sent."""
    batch = hashlib.sha256()
    for result in results:
        batch.update(bytes.fromhex(result["sha256"]))
    return {
        "documents": len(results),
        "words": sum(result["words"] for result in results),
        "formats": dict(Counter(result["format"] for result in results)),
        "batch_sha256": batch.hexdigest(),  # of the documents' fingerprints, in order
    }


Document = tuple[str, Mapping[str, Any] | None]  # process_document's (document_id, options)


def summarize_batch(documents: Iterable[Document]) -> Signature[Any]:
    """process_document for each document, in parallel, then summarize_documents with the list
    of their results. Send it with `.apply_async()`. If a document fails, the others still run
    and the summary fails with a ChordError; `.get()` raises that, or the document's own error
    if it already knows of it (the summary's `.parent` holds the documents' results)."""
    header = [process_document.s(document_id, options) for document_id, options in documents]
    return chord(header, summarize_documents.s())


def enqueue_summary(documents: Iterable[Document]) -> ChordSent:
    """summarize_batch for thousands of documents, sent now: the process_document calls are
    published in bulk (many times faster than a chord sends them). Returns the summary's
    AsyncResult (`.result`) and the documents' GroupResult (`.header`)."""
    return enqueue_chord(process_document, documents, summarize_documents.s())
{%- endif %}
