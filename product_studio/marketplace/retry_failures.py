"""Retries that fail: recorded for the seller, and given up after a few tries.

A retry run that fails (a template gone from the library, a LoRA that cannot be reused, a lost worker) writes
``review/retry-error.json`` beside the seller's decisions: which cards, the error, how many tries. Every
``publish-approved`` run would otherwise start the same doomed retry again; after ``MAX_RETRY_ATTEMPTS``
tries of the same cards of the same run it stops, and the record tells the seller why. A new run of the SKU,
or another set of cards sent back, starts counting afresh; a retry that succeeds removes the record.
"""

from __future__ import annotations

from pydantic import ValidationError

from product_studio.layout import RETRY_ERROR, sku_key
from product_studio.manifest import Manifest, now, read_published
from product_studio.records import RetryFailure
from product_studio.storage import ObjectNotFound, Store

MAX_RETRY_ATTEMPTS = 3


def retry_failure(output: Store, manifest: Manifest, cards: list[str]) -> RetryFailure | None:
    """The failure recorded for these ``cards`` of ``manifest``'s run (None: none, or about others)."""
    try:
        record = RetryFailure.model_validate_json(
            output.read(sku_key(manifest.catalogue_id, manifest.sku, RETRY_ERROR), max_bytes=100_000)
        )
    except (ObjectNotFound, ValidationError):
        return None
    return record if record.run == manifest.run and record.cards == sorted(cards) else None


def record_retry_failure(output: Store, manifest: Manifest, cards: list[str], error: str) -> RetryFailure:
    """Count one more failed try of ``cards`` and write the record for the seller."""
    earlier = retry_failure(output, manifest, cards)
    attempts = (earlier.attempts if earlier else 0) + 1
    record = RetryFailure(
        run=manifest.run,
        cards=sorted(cards),
        attempts=attempts,
        error=error[:2000],
        at=now(),
        given_up=attempts >= MAX_RETRY_ATTEMPTS,
    )
    key = sku_key(manifest.catalogue_id, manifest.sku, RETRY_ERROR)
    output.write(key, record.model_dump_json(indent=2).encode(), "application/json")
    return record


def given_up(output: Store, catalogue_id: str, sku: str, cards: list[str]) -> RetryFailure | None:
    """The record of ``cards`` of the SKU's live run when their retry has been given up, else None."""
    manifest = read_published(output, catalogue_id, sku)
    record = retry_failure(output, manifest, cards) if manifest else None
    return record if record is not None and record.given_up else None


def clear_retry_failure(output: Store, catalogue_id: str, sku: str) -> None:
    """A retry succeeded: the old failure no longer holds."""
    output.delete(sku_key(catalogue_id, sku, RETRY_ERROR))
